#!/usr/bin/env bash
# CI check of infra/: every .bicep file parses, and checkov's Bicep checks pass (a check may only be skipped by a
# `checkov:skip=<ID>:<reason>` comment on the resource, with the reason written out).
#
# Parsing and module wiring: infra/check_bicep.py. Runs on a fresh machine with access to PyPI:
# tests/tools/install-checkov.sh puts the pinned checkov into target/tools/checkov (reused on later runs; python3
# with venv comes from apt when missing, as root). The Bicep CLI is not used: its installers download a native
# binary; pycep (checkov's own Bicep parser) does the parsing instead.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash tests/tools/install-checkov.sh
venv="$(realpath -m "${CARGO_TARGET_DIR:-target}")/tools/checkov"

echo "== parsing Bicep and checking module wiring"
"$venv/bin/python" infra/check_bicep.py

echo "== checkov (bicep)"
"$venv/bin/checkov" --directory infra --framework bicep --quiet --compact --skip-download --output cli
