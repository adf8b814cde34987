#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time; fails on any crash.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 15 s, every target)
# Only stable Rust is needed: cargo fuzz's nightly flags are allowed through
# RUSTC_BOOTSTRAP=1. New inputs go to fuzz/target/corpus/<target>; the checked-in
# seeds in fuzz/corpus/<target> are only read. A crash leaves its input in
# fuzz/artifacts/<target>/ (replay: cargo fuzz run --fuzz-dir fuzz TARGET FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
shift || true
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# No sanitizer: the targets drive safe code, and coverage is what finds bugs here.
# Debug assertions on: an integer overflow is a crash.
flags=(--fuzz-dir fuzz --sanitizer none --debug-assertions)
cargo fuzz build "${flags[@]}"
# The seed writer is not a target; checked so it keeps up with the types it builds.
(cd fuzz && cargo check --locked --quiet --example write-corpus)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
for target in "${targets[@]}"; do
  work=fuzz/target/corpus/$target
  mkdir -p "$work"
  echo "fuzz $target: ${seconds} s"
  log=fuzz/target/fuzz-$target.log
  if ! cargo fuzz run "${flags[@]}" "$target" "$work" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz $target: crashed (input in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec)|cov: ' "$log" | tail -3
done
