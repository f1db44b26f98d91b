#!/usr/bin/env bash
# schemathesis for tests/api-fuzz.sh, pinned, in a venv under target/tools/schemathesis.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
python_tool schemathesis "schemathesis==4.32.5"
