#!/usr/bin/env bash
# The test command: installs what the tests need, builds, checks formatting
# and lints, builds the worker image and runs every test (unit, store,
# in-process HTTP, real Docker, and end to end with the real Claude Code).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_packages
ensure_postgres
ensure_python_sdk
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
    --database-url "$CLAUDECLUSTER_TEST_DATABASE_URL" --out "$TARGET_DIR/bench-quick.json"
log "running the tests against $CLAUDECLUSTER_TEST_IMAGE"
results="$(mktemp)"
trap 'restore_docker_runtimes; rm -f "$results"' EXIT
# --all-targets: the crates have no doc tests, and their empty runs would
# otherwise close the output.
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$results"
# The real image build, `#[ignore]`d in plain `cargo test` (it needs root,
# debootstrap and the network); here the base image and caches are warm.
log "the real worker image build (cc-runtime-docker, --ignored)"
cargo test -p cc-runtime-docker --test image --no-fail-fast -- --ignored \
    --exact builds_then_skips_a_working_image 2>&1 | tee -a "$results"
# gVisor end to end: the session, seed-client and isolation tests once more
# with every session container under runsc (registered for this run only).
ensure_runsc
log "end-to-end session and isolation tests under gVisor (runsc)"
CLAUDECLUSTER_TEST_CONTAINER_RUNTIME=runsc cargo test -p cc-testkit --test e2e --no-fail-fast \
    -- session:: seed:: isolation:: 2>&1 | tee -a "$results"
# Kubernetes: the runtime's conformance suite, a Pod that cannot start and
# a whole session through `serve --runtime kubernetes`, on a real
# single-node cluster (kube-apiserver and kubelet 1.20 built from Debian's
# source package, cached in /var/tmp/cc-kube; stopped when this script
# exits); then the manifests and the session Pod against current schemas
# and the restricted Pod Security Standard, offline.
ensure_kubernetes
log "Kubernetes runtime tests on the real cluster"
cargo test -p cc-runtime-kubernetes --test cluster --no-fail-fast -- --ignored 2>&1 | tee -a "$results"
# One at a time: the single node has 2 CPUs to grant, and each session Pod
# asks for one.
cargo test -p claudecluster --test it --no-fail-fast -- --ignored --test-threads 1 kubernetes:: 2>&1 | tee -a "$results"
log "Kubernetes figures (claudecluster bench --quick --kubernetes-only)"
"$TARGET_DIR/debug/claudecluster" bench --quick --kubernetes-only \
    --image "$CLAUDECLUSTER_TEST_IMAGE" --out "$TARGET_DIR/bench-kube.json" "${KUBE_BENCH_ARGS[@]}"
scripts/kube-manifests.sh
# The API contract: docs/openapi.json drift is a cargo test (cc-server);
# here Schemathesis fuzzes a live server from that document.
scripts/schemathesis.sh
# One closing line for the whole run (pipefail already failed the script
# if any test failed).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
