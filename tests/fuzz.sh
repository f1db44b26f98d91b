#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ (one per parser at the edge) for a bounded time and fails if any crashes.
#
#   FUZZ_SECONDS  seconds per target (default 20)
#   FUZZ_JOBS     targets run at once (default: one per core; each target is one libFuzzer process)
#   FUZZ_TARGETS  space-separated subset (default: all of `cargo fuzz list`)
#   FUZZ_BUILD_ONLY  non-empty: build the targets and stop
#
# Each target starts from its committed seed set, fuzz/corpus/<target>/, and writes what it finds to a corpus under
# the target directory, so the repository only ever holds the seeds. A crash is saved under fuzz/artifacts/<target>/
# (git-ignored) and reported with the command that replays it.
#
# cargo-fuzz needs a nightly compiler's -Z flags (-Zsanitizer); RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
# The sanitizer is off: the parsers are safe Rust, where AddressSanitizer finds little that Rust's own checks
# (overflow checks and debug assertions stay on) do not, and it costs a bounded run about seven in eight of its
# executions (measured on the envelope target: 16 k/s with it, 116 k/s without).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
jobs="${FUZZ_JOBS:-$(nproc)}"
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
export RUSTC_BOOTSTRAP=1 CARGO_INCREMENTAL=0
flags=(--release --sanitizer none --target-dir "$target/fuzz")

bash tests/tools/install-cargo-fuzz.sh
export PATH="$target/tools/cargo-fuzz/bin:$PATH"

read -r -a targets <<<"${FUZZ_TARGETS:-$(cd fuzz && cargo fuzz list | tr '\n' ' ')}"
echo "== building ${#targets[@]} fuzz targets"
started=$(date +%s)
(cd fuzz && cargo fuzz build "${flags[@]}")
echo "built in $(($(date +%s) - started)) s"
# `cargo xtask test` builds the targets beside the cargo tests first (FUZZ_BUILD_ONLY=1), then runs this again.
if [ -n "${FUZZ_BUILD_ONLY:-}" ]; then exit 0; fi

logs="$target/fuzz-logs"
rm -rf "$logs"
mkdir -p "$logs"
run_one() {
  local name=$1 start
  start=$(date +%s)
  mkdir -p "$target/fuzz-corpus/$name"
  # The first corpus directory receives new inputs; the seed directory after it is only read.
  set +e
  (cd fuzz && cargo fuzz run "${flags[@]}" "$name" "$target/fuzz-corpus/$name" "corpus/$name" -- \
    -max_total_time="$seconds" -print_final_stats=1 -dict=edge.dict -timeout=10 -rss_limit_mb=1024) \
    >"$logs/$name.log" 2>&1
  echo $? >"$logs/$name.rc"
  set -e
  echo $(($(date +%s) - start)) >"$logs/$name.seconds"
}

echo "== fuzzing each target for $seconds s, $jobs at a time"
for name in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run_one "$name" &
done
wait

failed=0
printf '\n%-24s %8s %14s %8s\n' target seconds executions crashes
for name in "${targets[@]}"; do
  log="$logs/$name.log"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
  crashes=0
  if [ -n "$artifact" ] || [ "$(cat "$logs/$name.rc")" != 0 ]; then crashes=1; fi
  printf '%-24s %8s %14s %8s\n' "$name" "$(cat "$logs/$name.seconds")" "${execs:-?}" "$crashes"
  if [ "$crashes" != 0 ]; then
    failed=1
    {
      echo
      echo "!! $name failed; last lines of $log:"
      tail -n 40 "$log"
      if [ -n "$artifact" ]; then
        # cargo-fuzz names it relative to fuzz/ or absolutely, depending on its version.
        case "$artifact" in /*) ;; *) artifact="$PWD/fuzz/${artifact#./}" ;; esac
        echo "reproducer: $artifact"
        echo "replay:     (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $name $artifact)"
      fi
    } >&2
  fi
done
exit "$failed"
