#!/usr/bin/env bash
# cargo-fuzz for tests/fuzz.sh, pinned, built from crates.io into target/tools/cargo-fuzz.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
version=0.13.2
root="$tools/cargo-fuzz"
if ! "$root/bin/cargo-fuzz" --version 2>/dev/null | grep -qx "cargo-fuzz $version"; then
  echo "$installer: cargo install cargo-fuzz@$version (a few minutes, once)"
  cargo install --quiet --locked --root "$root" "cargo-fuzz@$version" \
    || fail "\`cargo install --locked --root $root cargo-fuzz@$version\` failed (above); it needs crates.io"
fi
echo "cargo-fuzz: $("$root/bin/cargo-fuzz" --version) in $root"
