#!/usr/bin/env bash
# The benchmark suite (`claudecluster bench`) on an optimised build, with the
# worker image built from it. Arguments go to `claudecluster bench`:
#   scripts/bench.sh                 # the whole suite, < 15 minutes
#   scripts/bench.sh --quick         # the small CI profile
#   scripts/bench.sh --out bench.json --sessions 150
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_packages
# Two replicas on PostgreSQL are measured too (a private server on loopback,
# stopped at the end), and sessions as Pods on the single-node test cluster
# (scripts/kubernetes.sh: built once, ~6 min, then cached; stopped at the
# end).
ensure_postgres
ensure_kubernetes
log "building the workspace (release)"
cargo build --workspace --bins --release --quiet
log "building the worker image"
image="$("$TARGET_DIR/release/claudecluster" image build)"
log "benchmarking with $image"
"$TARGET_DIR/release/claudecluster" bench --image "$image" \
    --database-url "$CLAUDECLUSTER_TEST_DATABASE_URL" "${KUBE_BENCH_ARGS[@]}" "$@"
