//! The fault matrix: for each Azure call on each lifecycle path, local-azure injects latency, a 429 with
//! `Retry-After`, a 503, or a dropped connection into that call. Each message is redelivered the way Service Bus
//! would (up to `MAX_DELIVERY_COUNT`), and every run must end in the correct Azure state with exactly one vault and
//! one CIK. A fault that never clears must end in `KeyVaultSyncFailed` with a critical alert, never silently.
//!
//! The matrix (path × call × fault → deliveries needed) is printed; `docs/RELIABILITY.md` keeps a copy.

use edgevault::messages::{Command, MAX_DELIVERY_COUNT};
use edgevault::resource_id::ResourceId;
use edgevault::vault_name::VaultName;
use edgevault_tests::scenario::{World, operation_id, world};
use serde_json::{Value, json};

/// A fault's name and the local-azure fault action that produces it.
type Fault = (&'static str, fn() -> Value);

const FAULTS: &[Fault] = &[
    ("latency 300 ms", || json!({"type": "latency", "ms": 300})),
    ("429 Retry-After 1", || json!({"type": "throttle", "retryAfterSeconds": 1})),
    ("503", || json!({"type": "error", "status": 503, "code": "ServiceUnavailable"})),
    ("dropped connection", || json!({"type": "drop"})),
];

const PROVISION_CALLS: &[(&str, &str)] = &[
    ("identity", "token"),
    ("arm", "Microsoft.DataBoxEdge/dataBoxEdgeDevices/read"),
    ("arm", "Microsoft.DataBoxEdge/dataBoxEdgeDevices/getExtendedInformation/action"),
    ("arm", "Microsoft.DataBoxEdge/dataBoxEdgeDevices/updateExtendedInformation/action"),
    ("arm", "Microsoft.KeyVault/vaults/read"),
    // No deleted-vault read: the vault is created straight away, and only Azure's 409 for a name held by a
    // soft-deleted vault leads to that read (tests/lifecycle.rs covers that path).
    ("arm", "Microsoft.KeyVault/vaults/write"),
    // No lock read here: a vault this activation just created cannot have one, so it is not looked up.
    ("arm", "Microsoft.Authorization/locks/write"),
    ("keyvault", "secrets/get"),
    ("keyvault", "secrets/set"),
];

const CREATION_CALLS: &[(&str, &str)] = &[
    ("arm", "Microsoft.DataBoxEdge/dataBoxEdgeDevices/read"),
    ("arm", "Microsoft.DataBoxEdge/dataBoxEdgeDevices/getExtendedInformation/action"),
    ("arm", "Microsoft.DataBoxEdge/dataBoxEdgeDevices/write"),
];

const RECOVERY_CALLS: &[(&str, &str)] = &[
    ("arm", "Microsoft.KeyVault/vaults/read"),
    ("arm", "Microsoft.Authorization/locks/read"),
    ("arm", "Microsoft.KeyVault/deletedVaults/read"),
    ("arm", "Microsoft.KeyVault/vaults/write"),
    ("arm", "Microsoft.Authorization/locks/write"),
    ("keyvault", "secrets/get"),
    // No extended-information write here: a recovered vault with its CIK intact leaves the link as it was.
];

fn inject(w: &World, service: &str, operation: &str, action: Value, count: Option<u32>) {
    let mut rule = json!({"service": service, "operation": operation, "action": action});
    if let Some(count) = count {
        rule["count"] = count.into();
    }
    w.la.admin_post("/admin/faults", rule).unwrap();
}

/// Removes every rule, after checking each one fired: a rule whose operation name matched nothing would make its
/// cell pass without testing anything.
fn clear(w: &World) {
    let rules = w.la.admin_get("/admin/faults").unwrap();
    for rule in rules["value"].as_array().unwrap() {
        assert!(rule["fired"].as_u64().unwrap_or(0) > 0, "this fault never fired: {rule}");
    }
    w.la.admin_delete("/admin/faults").unwrap();
}

/// Delivers `command` until the worker succeeds, as Service Bus redelivers an abandoned message; returns the
/// number of deliveries it took, or `None` if it never succeeded.
fn deliver_until_done(w: &World, function: &str, command: &Command) -> Option<u32> {
    (1..=MAX_DELIVERY_COUNT).find(|&delivery| w.deliver(function, command, delivery).0 == 200)
}

fn owned_vaults(w: &World, device: &ResourceId) -> usize {
    let (_, vaults) = w.arm("GET", &format!("{}/providers/Microsoft.KeyVault/vaults", w.la.resource_group_id()), None);
    vaults["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["tags"]["edgevault-device"] == device.to_string().as_str())
        .count()
}

fn cik_versions(w: &World, info: &Value) -> usize {
    w.la.cik_versions(&w.operator, info).unwrap()
}

fn request(device: &ResourceId) -> Command {
    Command::from(edgevault::messages::ActivationKeyRequested {
        device: device.clone(),
        operation_id: operation_id(device),
        vault_name: Some(VaultName::default_for(device, 0)),
    })
}

struct Matrix(Vec<String>);

impl Matrix {
    fn record(&mut self, path: &str, call: &str, fault: &str, deliveries: Option<u32>) {
        let outcome = match deliveries {
            Some(1) => "correct state, 1 delivery".to_string(),
            Some(n) => format!("correct state, {n} deliveries"),
            None => "FAILED".to_string(),
        };
        self.0.push(format!("| {path} | `{call}` | {fault} | {outcome} |"));
    }

    fn print(&self) {
        println!("| path | Azure call | fault | outcome |\n| --- | --- | --- | --- |");
        for row in &self.0 {
            println!("{row}");
        }
    }
}

#[test]
fn every_transient_fault_on_every_call_ends_in_the_correct_state() {
    let mut w = world(&[]);
    let mut matrix = Matrix(Vec::new());
    let mut n = 0;
    let mut device = |w: &edgevault_tests::scenario::World| {
        n += 1;
        w.create_device(&format!("ase-fault-{n}"))
    };

    for &(service, operation) in CREATION_CALLS {
        for (fault, action) in FAULTS {
            let id = device(&w);
            inject(&w, service, operation, action(), Some(1));
            let done = deliver_until_done(
                &w,
                "ResourceCreated",
                &Command::from(edgevault::messages::ResourceCreated { device: id.clone(), cause: "e".into() }),
            );
            clear(&w);
            assert!(done.is_some(), "creation with {fault} on {operation}");
            assert!(w.arm("GET", &id.to_string(), None).1["identity"]["principalId"].is_string());
            matrix.record("creation", operation, fault, done);
        }
    }

    for &(service, operation) in PROVISION_CALLS {
        for (fault, action) in FAULTS {
            if service == "identity" {
                // Tokens are cached for their lifetime: only a handler that holds none fetches one to fault.
                w.restart_handler();
            }
            let id = device(&w);
            w.deliver(
                "ResourceCreated",
                &Command::from(edgevault::messages::ResourceCreated { device: id.clone(), cause: "e".into() }),
                1,
            );
            inject(&w, service, operation, action(), Some(1));
            let done = deliver_until_done(&w, "ActivationKeyRequested", &request(&id));
            clear(&w);
            let info = w.extended_info(&id);
            assert!(done.is_some(), "activation with {fault} on {operation}: {info}");
            assert_eq!(info["keyVaultSyncStatus"], "KeyVaultSynced", "{fault} on {operation}");
            assert_eq!(owned_vaults(&w, &id), 1, "one vault after {fault} on {operation}");
            assert_eq!(cik_versions(&w, &info), 1, "one CIK after {fault} on {operation}");
            matrix.record("activation", operation, fault, done);
        }
    }

    for &(service, operation) in RECOVERY_CALLS {
        for (fault, action) in FAULTS {
            let id = device(&w);
            let before = w.provision(&id);
            let vault = before["clientSecretStoreId"].as_str().unwrap().to_string();
            assert_eq!(
                w.arm(
                    "DELETE",
                    &format!("{vault}/providers/Microsoft.Authorization/locks/edgevault-do-not-delete"),
                    None
                )
                .0,
                200
            );
            assert!(matches!(w.arm("DELETE", &vault, None).0, 200 | 204));
            inject(&w, service, operation, action(), Some(1));
            let command =
                Command::from(edgevault::messages::VaultDeleted { vault: vault.parse().unwrap(), cause: "e".into() });
            let done = deliver_until_done(&w, "VaultDeleted", &command);
            clear(&w);
            let after = w.extended_info(&id);
            assert!(done.is_some(), "recovery with {fault} on {operation}");
            assert_eq!(w.arm("GET", &vault, None).0, 200, "vault back after {fault} on {operation}");
            assert_eq!(
                after["channelIntegrityKeyVersion"], before["channelIntegrityKeyVersion"],
                "{fault} on {operation}"
            );
            assert_eq!(after["keyVaultSyncStatus"], "KeyVaultSynced");
            matrix.record("vault deleted", operation, fault, done);
        }
    }
    matrix.print();
}

#[test]
fn a_fault_that_never_clears_ends_dead_lettered_with_an_alert_and_sync_failed() {
    let w = world(&[]);
    let id = w.create_device("ase-doomed");
    w.deliver(
        "ResourceCreated",
        &Command::from(edgevault::messages::ResourceCreated { device: id.clone(), cause: "e".into() }),
        1,
    );
    inject(&w, "arm", "Microsoft.KeyVault/vaults/write", json!({"type": "error", "status": 503}), None);
    let statuses: Vec<u16> =
        (1..=MAX_DELIVERY_COUNT).map(|d| w.deliver("ActivationKeyRequested", &request(&id), d).0).collect();
    clear(&w);
    assert!(statuses.iter().all(|s| *s >= 500), "every delivery fails, so Service Bus dead-letters it: {statuses:?}");
    assert_eq!(w.extended_info(&id)["keyVaultSyncStatus"], "KeyVaultSyncFailed", "the last delivery marks the device");
    let res = w.api("GET", None, Some(&operation_id(&id)));
    assert_eq!(res["body"]["status"], "failed", "{res}");
    let alerts = w.la.admin_get("/admin/servicebus/queues/edgevault/alerts/messages").unwrap();
    let critical = alerts["value"].as_array().unwrap().iter().any(|m| {
        let alert: Value = serde_json::from_str(m["body"].as_str().unwrap_or("null")).unwrap_or_default();
        alert["severity"] == "Critical" && alert["device"] == id.to_string().as_str()
    });
    assert!(critical, "a critical alert names the device: {alerts}");
    assert_eq!(owned_vaults(&w, &id), 0, "nothing half-made is left behind");
}
