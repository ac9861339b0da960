#!/usr/bin/env bash
# Fuzzes the live API from its own OpenAPI document with Schemathesis
# (from PyPI): fails on any 5xx and on any response that does not match
# the document. Run by scripts/test.sh (hence by .ci/run); needs the
# workspace built and CLAUDECLUSTER_TEST_IMAGE (the server checks its image).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if ! command -v st >/dev/null && ! command -v schemathesis >/dev/null; then
    log "installing schemathesis from PyPI"
    pip3 install --quiet schemathesis 2>/dev/null || pip install --quiet schemathesis
fi
ST="$(command -v st || command -v schemathesis)"

work="$(mktemp -d)"
token="st-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
prefix="cc-st-$$-"
cleanup() {
    if [ -n "${server:-}" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    # Whatever a generated request managed to start (normally nothing).
    docker ps -aq --filter "name=^${prefix}" | xargs -r docker rm -f >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

log "starting a server for schemathesis"
# The rate limit is lifted: a fuzzer is a flood by design.
"$TARGET_DIR/debug/claudecluster" serve \
    --listen 127.0.0.1:0 --data-dir "$work/data" \
    --image "${CLAUDECLUSTER_TEST_IMAGE:-claudecluster-worker:latest}" \
    --resource-prefix "$prefix" --host-firewall false \
    --admin-token "$token" --rate-limit 1000000/1000000 \
    >"$work/stdout" 2>"$work/stderr" &
server=$!
for _ in $(seq 1 100); do
    grep -q '^listening on ' "$work/stdout" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$work/stderr" >&2; exit 1; }
    sleep 0.1
done
base="$(sed -n 's/^listening on //p' "$work/stdout" | head -n1)"
[ -n "$base" ] || { echo "the server did not start" >&2; cat "$work/stderr" >&2; exit 1; }

log "schemathesis against $base"
# From the scratch directory: schemathesis keeps its state in ./.schemathesis.
cd "$work"
"$ST" run "$base/api/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,response_schema_conformance \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-25}" \
    --request-timeout 30
