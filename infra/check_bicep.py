"""What `bicep build` would catch, without the Bicep CLI (its installers download a native binary).

Run by infra/check.sh inside its venv. Checks, failing with a non-zero exit on any problem:
- every .bicep file under infra/ parses (pycep, the parser checkov uses);
- every module reference points at an existing file, passes only parameters the module declares, passes every
  parameter the module requires (no default), is given a `scope` when the module targets another scope than its
  parent, and every `<module>.outputs.<name>` used exists in that module;
- every .bicepparam file uses main.bicep, sets only declared parameters and every required one.
"""

from __future__ import annotations

import pathlib
import re
import sys

from pycep import BicepParser

INFRA = pathlib.Path(__file__).resolve().parent
problems: list[str] = []
parser = BicepParser()
parsed: dict[pathlib.Path, dict] = {}


def rel(path: pathlib.Path) -> str:
    return str(path.relative_to(INFRA.parent))


for path in sorted(INFRA.rglob("*.bicep")):
    try:
        parsed[path] = parser.parse(text=path.read_text())
        print(f"ok      {rel(path)}")
    except Exception as err:  # lark reports the line and column
        problems.append(f"{rel(path)}: does not parse: {err}")

if not parsed and not problems:
    problems.append("no .bicep files under infra/")


def target_scope(doc: dict) -> str:
    return ((doc.get("globals") or {}).get("scope") or {}).get("value", "resourceGroup")


def required_params(doc: dict) -> set[str]:
    return {name for name, p in (doc.get("parameters") or {}).items() if p.get("default") is None}


def unwrap(config: dict) -> dict:
    # Loops and conditions nest the module body one level down.
    while isinstance(config, dict) and ("loop_type" in config or "condition" in config) and "config" in config:
        config = config["config"]
    return config


for path, doc in parsed.items():
    text = path.read_text()
    for name, module in (doc.get("modules") or {}).items():
        target = (path.parent / module["detail"]["path"]).resolve()
        where = f"{rel(path)}: module {name}"
        if target not in parsed:
            problems.append(f"{where}: {module['detail']['path']} is missing or does not parse")
            continue
        child = parsed[target]
        config = unwrap(module["config"])
        passed = set((config.get("params") or {}).keys())
        declared = set((child.get("parameters") or {}).keys())
        for extra in sorted(passed - declared):
            problems.append(f"{where}: passes `{extra}`, which {rel(target)} does not declare")
        for missing in sorted(required_params(child) - passed):
            problems.append(f"{where}: does not pass required parameter `{missing}` of {rel(target)}")
        if target_scope(child) != target_scope(doc) and "scope" not in config:
            problems.append(f"{where}: {rel(target)} targets {target_scope(child)}, so the module needs a scope")
        outputs = set((child.get("outputs") or {}).keys())
        for used in sorted(set(re.findall(rf"\b{re.escape(name)}(?:\[[^\]]+\])?\.outputs\.(\w+)", text))):
            if used not in outputs:
                problems.append(f"{where}: uses output `{used}`, which {rel(target)} does not declare")
    if rel(path).endswith("main.bicep"):
        print(f"ok      module wiring")

main = parsed.get(INFRA / "main.bicep")
for path in sorted(INFRA.rglob("*.bicepparam")):
    text = path.read_text()
    if main is None:
        break
    declared = set(main["parameters"].keys())
    if not re.search(r"^using '\./main\.bicep'", text, re.MULTILINE):
        problems.append(f"{rel(path)}: does not say `using './main.bicep'`")
    set_here = set(re.findall(r"^param (\w+) =", text, re.MULTILINE))
    for extra in sorted(set_here - declared):
        problems.append(f"{rel(path)}: sets `{extra}`, which main.bicep does not declare")
    for missing in sorted(required_params(main) - set_here):
        problems.append(f"{rel(path)}: does not set required parameter `{missing}`")
    print(f"ok      {rel(path)}" if not any(p.startswith(rel(path)) for p in problems) else f"FAILED  {rel(path)}")

for problem in problems:
    print(f"FAILED  {problem}")
sys.exit(1 if problems else 0)
