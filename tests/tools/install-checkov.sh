#!/usr/bin/env bash
# checkov (and pycep, its Bicep parser) for infra/check.sh, pinned, in a venv under target/tools/checkov.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
python_tool checkov "checkov==3.2.533"
