#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/corpus/<target>/, from real payloads: the trigger and message fixtures in
tests/fixtures/ and the Azure REST API examples in ../shared/fixtures/azure-rest-api-specs/. A seed set, not a grown
corpus: a fuzz run (tests/fuzz.sh) grows its corpus outside the repository. Rerun after a fixture changes:

    python3 fuzz/seed-corpus.py

Deterministic (fixed random seed), so a rerun with unchanged fixtures changes nothing.
"""

import base64
import json
import pathlib
import random
import re
import shutil

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SPECS = ROOT.parent / "shared" / "fixtures" / "azure-rest-api-specs"
CORPUS = ROOT / "fuzz" / "corpus"
rng = random.Random(20261128)


def fixture(name):
    return json.loads((FIXTURES / name).read_text())


def compact(value):
    return json.dumps(value, separators=(",", ":"))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


seeds = {}


def seed(target, name, content):
    seeds.setdefault(target, {})[name] = content.encode() if isinstance(content, str) else content


# The envelope: every trigger fixture as the host POSTs it.
for path in sorted((FIXTURES / "triggers").glob("*.json")):
    seed("envelope", path.name, path.read_bytes())

# Trigger payloads: the binding values from the fixtures, as sent and JSON-encoded once more (the host does both).
for name in ["http-post.json", "http-get-encoded.json"]:
    req = fixture("triggers/" + name)["Data"]["req"]
    seed("http_request", name, compact(req))
    seed("http_request", "encoded-" + name, compact(compact(req)))
for name in ["timer.json", "timer-first-run.json"]:
    timer = fixture("triggers/" + name)["Data"]["timer"]
    seed("timer", name, compact(timer))
    seed("timer", "encoded-" + name, compact(compact(timer)))
metadata = fixture("triggers/service-bus.json")["Metadata"]
seed("service_bus", "service-bus.json", compact(metadata))
seed("service_bus", "legacy-names.json", compact({
    "MessageId": "m", "DeliveryCount": "3", "SequenceNumber": " 9 ", "Label": "ResourceCreated",
    "UserProperties": compact({"schemaVersion": 1}),
}))
for name in ["event-grid-write.json", "event-grid-validation.json", "cloud-events-delete.json"]:
    event = fixture("triggers/" + name)["Data"]["event"]
    seed("grid_event", name, compact(event))
    seed("grid_event", "encoded-" + name, compact(compact(event)))
    if isinstance(event, list):
        seed("grid_event", "single-" + name, compact(event[0]))

# Service Bus message bodies: the fixtures, and one of each other command kind.
seed("command", "activation-key-requested.json", compact(fixture("messages/activation-key-requested.json")))
resource_created = json.loads(fixture("triggers/service-bus.json")["Data"]["message"])
seed("command", "resource-created.json", compact(resource_created))
device = resource_created["device"]
vault = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/sample-resource-group/providers/Microsoft.KeyVault/vaults/sample-vault"
seed("command", "reconcile-vault.json", compact({
    "schemaVersion": 1, "kind": "ReconcileVault", "device": device, "findings": ["LockMissing", "CikMissing"],
    "sweepId": "6b4b0b3a-93a1-4c40-9a4e-d1d2c0b7d7a1"}))
seed("command", "vault-deleted.json", compact({"schemaVersion": 1, "kind": "VaultDeleted", "vault": vault, "cause": "e2"}))
seed("command", "resource-deleted.json", compact({"schemaVersion": 1, "kind": "ResourceDeleted", "device": device, "cause": "e3"}))

# Resource ids and vault names: every id and vault name in the REST API examples, and the fixtures'.
ids, names = set(), set()
for path in sorted(SPECS.rglob("examples/*.json")):
    text = path.read_text()
    ids.update(re.findall(r'"(/subscriptions/[^"?]*)"', text))
    if "keyvault/resource-manager" in str(path):
        names.update(re.findall(r'"(?:name|vaultName)": *"([^"]*)"', text))
ids.update([device, vault])
for i, rid in enumerate(sorted(ids)):
    seed("resource_id", f"spec-{i:02}", rid)
seed("resource_id", "trailing-slash-and-case", device.upper().replace("SUBSCRIPTIONS", "subscriptions") + "/")
names.update(["testedgedevice-kv", "ase-testedgedevice-3f2c9a", "a--b", "1vault", "ab", "vault-", "a" * 25, "vault_1"])
for i, name in enumerate(sorted(names)):
    seed("vault_name", f"name-{i:02}", name)

# Activation keys: well-formed tokens whose tag is wrong (what a forger can make), and malformed ones.
header = compact({"alg": "A256GCM", "vaultUri": "https://ase-testedgedevice-3f2c9a.vault.azure.net/",
                  "secretName": "ase-cik-0f8fad5b-d9cb-469f-a165-70867728950e",
                  "secretVersion": "4387e9f3d6e14c459867679a90fd0f79"}).encode()
for i, length in enumerate([16, 300]):
    token = ".".join(["ase-ak1", b64url(header), b64url(rng.randbytes(12)), b64url(rng.randbytes(length))])
    seed("activation_key", f"forged-{i}", token)
seed("activation_key", "other-version", "ase-ak2.a.b.c")
seed("activation_key", "bad-header", "ase-ak1.!!.b.c")
seed("activation_key", "cik-secret-value", base64.b64encode(rng.randbytes(32)).decode())

# Edit scripts for the genuine key (4 bytes each: operation, position, byte); none: it must open.
seed("activation_key_tamper", "unaltered", b"")
seed("activation_key_tamper", "leading-space", bytes([1, 0, 0, 0x20]))
for region, at in [("header", 20), ("nonce", 290), ("ciphertext", 400)]:
    seed("activation_key_tamper", f"flip-{region}", bytes([0, at >> 8, at & 0xFF, 1]))
seed("activation_key_tamper", "truncate", bytes([2, 0xFF, 0xFF, 0]) * 3)

shutil.rmtree(CORPUS, ignore_errors=True)
for target, files in seeds.items():
    (CORPUS / target).mkdir(parents=True)
    for name, content in files.items():
        (CORPUS / target / name).write_bytes(content)
print(", ".join(f"{target}: {len(files)}" for target, files in seeds.items()))
