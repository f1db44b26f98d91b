#!/usr/bin/env bash
# kill (procps): the end-to-end tests signal the handler and the Functions host's processes with it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_command kill procps --version
