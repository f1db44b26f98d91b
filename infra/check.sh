#!/usr/bin/env bash
# CI check of infra/: every .bicep file parses, and checkov's Bicep checks pass (a check may only be skipped by a
# `checkov:skip=<ID>:<reason>` comment on the resource, with the reason written out).
#
# Parsing and module wiring: infra/check_bicep.py. Runs on a fresh machine with python3 (3.9+) and access to PyPI: the tools go into target/infra-venv (reused on later
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

echo "== parsing Bicep and checking module wiring"
"$venv/bin/python" infra/check_bicep.py

echo "== checkov (bicep)"
"$venv/bin/checkov" --directory infra --framework bicep --quiet --compact --skip-download --output cli
