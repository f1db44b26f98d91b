#!/usr/bin/env bash
# strace: tests/loopback.rs runs the handler under it to record every network call it makes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_command strace strace -V
