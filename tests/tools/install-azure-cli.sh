#!/usr/bin/env bash
# Installs the Azure CLI (azure-cli==2.91.0 from PyPI) into target/tools/azure-cli, a Python venv, for the tests that
# drive the unmodified CLI against local-azure (local-azure/tests/azure_cli.rs, tests/runbook/). Idempotent: a venv
# that already has this version is left as it is. Prints only progress; exits non-zero with the reason on failure.
#
# The CLI finds no extension index offline, so nothing else is installed: the `databoxedge` extension is not on
# PyPI (it is published as a wheel on the CLI's own extension index), and the tests use `az resource` / `az rest`
# for Data Box Edge devices instead (docs/FIDELITY.md says why).
set -euo pipefail

AZURE_CLI_VERSION=2.91.0

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/target/tools/azure-cli"

fail() {
  echo "install-azure-cli: $*" >&2
  exit 1
}

installed() {
  [[ -x "$venv/bin/az" ]] &&
    "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('azure-cli') != '$AZURE_CLI_VERSION')" 2>/dev/null
}

if installed; then
  echo "azure-cli $AZURE_CLI_VERSION already in $venv"
  exit 0
fi

command -v python3 >/dev/null || fail "python3 is needed (3.10 or later) to create the venv"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  fail "python3 $(python3 -c 'import platform; print(platform.python_version())') is too old: azure-cli $AZURE_CLI_VERSION needs 3.10 or later"

mkdir -p "$(dirname "$venv")"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "creating venv $venv"
  python3 -m venv "$venv" || fail "python3 -m venv failed (on Debian: apt-get install python3-venv)"
fi
echo "installing azure-cli $AZURE_CLI_VERSION into $venv (from PyPI; a few minutes the first time)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null ||
  fail "could not upgrade pip in $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "azure-cli==$AZURE_CLI_VERSION" ||
  fail "pip could not install azure-cli==$AZURE_CLI_VERSION from PyPI"
installed || fail "azure-cli $AZURE_CLI_VERSION is not importable from $venv after the install"
echo "azure-cli $AZURE_CLI_VERSION installed: $venv/bin/az"
