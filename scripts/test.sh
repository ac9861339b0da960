#!/usr/bin/env bash
# The test command: installs what the tests need, builds, checks formatting
# and lints, builds the worker image and runs every test (unit, store,
# in-process HTTP, real Docker, and end to end with the real Claude Code).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_packages
log "checking formatting"
cargo fmt --all --check
log "linting"
cargo clippy --workspace --all-targets --quiet -- -D warnings
build_workspace
CLAUDECLUSTER_TEST_IMAGE="$(build_image)"
export CLAUDECLUSTER_TEST_IMAGE
# The benchmarks' small profile: fails on real errors, never on timings.
log "benchmark smoke run (claudecluster bench --quick)"
"$TARGET_DIR/debug/claudecluster" bench --quick --image "$CLAUDECLUSTER_TEST_IMAGE" \
    --out "$TARGET_DIR/bench-quick.json"
log "running the tests against $CLAUDECLUSTER_TEST_IMAGE"
cargo test --workspace --no-fail-fast
# The API contract: docs/openapi.json drift is a cargo test (cc-server);
# here Schemathesis fuzzes a live server from that document.
scripts/schemathesis.sh
