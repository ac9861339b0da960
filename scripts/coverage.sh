#!/usr/bin/env bash
# Test coverage of the workspace: cargo-llvm-cov with Debian's LLVM tools of
# the same major version as rustc's LLVM (the raw profile format changes
# between LLVM versions, so an older llvm-profdata cannot read them).
# Writes $TARGET_DIR/coverage.json (the summary `claudecluster bench
# --coverage` reads) and prints the per-file table.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_packages
major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
if ! command -v "llvm-profdata-$major" >/dev/null; then
    log "installing llvm-$major (llvm-profdata, llvm-cov)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "llvm-$major" >/dev/null
fi
export LLVM_COV="/usr/bin/llvm-cov-$major" LLVM_PROFDATA="/usr/bin/llvm-profdata-$major"
command -v cargo-llvm-cov >/dev/null || cargo install cargo-llvm-cov --locked
build_workspace
CLAUDECLUSTER_TEST_IMAGE="$(build_image)"
export CLAUDECLUSTER_TEST_IMAGE
log "running the tests with coverage instrumentation"
cargo llvm-cov --workspace --no-report
# Children started with a cleared environment (sessiond's tests) lose
# LLVM_PROFILE_FILE and write their profiles where they run: count them too.
find crates -name 'default_*.profraw' -exec mv -t "$TARGET_DIR/llvm-cov-target/" {} +
cargo llvm-cov report --json --summary-only --output-path "$TARGET_DIR/coverage.json"
cargo llvm-cov report --summary-only
