#!/usr/bin/env bash
# The fuzz target (fuzz/, a workspace of its own), built in the crate's target folder, run on the
# checked-in seeds: real blocks recorded by micromegas-tracing (fuzz/seeds/decode_block). Each
# seed must decode without a panic: the target keeps building and working (what CI runs).
#
# FUZZ_SECONDS=N: a coverage-guided run of N seconds from the seeds instead, with the
# instrumented build of fuzz/README.md on stable Rust (a release build of its own, under
# $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu: 17 min cold on 2 cores, hence not in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/datafusion-async-events-target}"
if [ "${FUZZ_SECONDS:-0}" -gt 0 ]; then
  (cd fuzz && RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions" \
    cargo build -q --release --bins --target x86_64-unknown-linux-gnu)
  CORPUS=$(mktemp -d /tmp/async-events-fuzz.XXXXXX)
  trap 'rm -rf "$CORPUS"' EXIT
  cp fuzz/seeds/decode_block/* "$CORPUS"/
  "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/decode_block" "$CORPUS" \
    -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 2>&1 | tail -n 6
else
  cargo build -q --manifest-path fuzz/Cargo.toml --bin decode_block
  "$CARGO_TARGET_DIR/debug/decode_block" fuzz/seeds/decode_block/* 2>&1 | tail -n 2
fi
