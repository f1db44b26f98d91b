#!/usr/bin/env bash
# curl: xtask/tests/demo_keep.rs runs the commands `cargo xtask demo --keep` prints, which call the API with curl.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_command curl curl --version
