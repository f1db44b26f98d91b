#!/usr/bin/env bash
# CI check of infra/: every .bicep file parses, and checkov's Bicep checks pass (a check may only be skipped by a
# `checkov:skip=<ID>:<reason>` comment on the resource, with the reason written out).
#
# Runs on a fresh machine with python3 (3.9+) and access to PyPI: the tools go into target/infra-venv (reused on later
# runs). The Bicep CLI is not used: its installers download a native binary; pycep (checkov's own Bicep parser) does
# the parsing instead.
set -euo pipefail

CHECKOV_VERSION=3.2.533

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
venv="target/infra-venv"

mkdir -p target
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('checkov') != '$CHECKOV_VERSION')" 2>/dev/null; then
  echo "installing checkov $CHECKOV_VERSION into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi

echo "== parsing Bicep"
"$venv/bin/python" - <<'PY'
import pathlib
import sys

from pycep import BicepParser

files = sorted(pathlib.Path("infra").rglob("*.bicep"))
if not files:
    sys.exit("no .bicep files under infra/")
parser = BicepParser()
failed = 0
for path in files:
    try:
        parser.parse(text=path.read_text())
        print(f"ok      {path}")
    except Exception as err:  # pycep raises lark errors with the line and column
        failed += 1
        print(f"FAILED  {path}: {err}")
# .bicepparam files: pycep has no grammar for them; check they name main.bicep and set only its parameters.
main = pathlib.Path("infra/main.bicep").read_text()
declared = {line.split()[1] for line in main.splitlines() if line.startswith("param ")}
for path in sorted(pathlib.Path("infra").rglob("*.bicepparam")):
    text = path.read_text()
    problems = []
    if "using './main.bicep'" not in text:
        problems.append("does not start with using './main.bicep'")
    for line in text.splitlines():
        if line.startswith("param "):
            name = line.split()[1]
            if name not in declared:
                problems.append(f"sets unknown parameter {name}")
    if problems:
        failed += 1
        print(f"FAILED  {path}: {'; '.join(problems)}")
    else:
        print(f"ok      {path}")
sys.exit(1 if failed else 0)
PY

echo "== checkov (bicep)"
"$venv/bin/checkov" --directory infra --framework bicep --quiet --compact --skip-download --output cli
