# Shared by scripts/*.sh: prerequisites, the build, the worker image.
# shellcheck shell=bash

# cargo from rustup when the PATH lacks it.
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"

# Reuse a target directory outside the clone when there is one (CI clones
# afresh; the build takes minutes on 2 cores).
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d /var/tmp/cc-target ]; then
    export CARGO_TARGET_DIR=/var/tmp/cc-target
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$(pwd)/target}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

source "$(dirname "${BASH_SOURCE[0]}")/runsc.sh"

# Debian packages the image build and the tests need.
ensure_packages() {
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v git >/dev/null || missing+=(git)
    command -v openssl >/dev/null || missing+=(openssl)  # the TLS test's certificate
    command -v docker >/dev/null || missing+=(docker.io)
    command -v pip3 >/dev/null || command -v pip >/dev/null || missing+=(python3-pip)
    command -v tmux >/dev/null || missing+=(tmux)  # the CLI's attach test
    command -v iptables >/dev/null || missing+=(iptables)  # sessions' host firewall
    command -v promtool >/dev/null || missing+=(prometheus)  # promtool: the /metrics format check
    command -v chromedriver >/dev/null || missing+=(chromium chromium-driver)  # the web console's browser test
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "missing packages: ${missing[*]} — install them (apt-get install ${missing[*]}) and run again" >&2
            exit 1
        fi
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if ! docker info >/dev/null 2>&1; then
        echo "Docker is not running or not reachable: start the Docker daemon and run again" >&2
        exit 1
    fi
}

# A private PostgreSQL for the store tests (exports
# CLAUDECLUSTER_TEST_DATABASE_URL; stopped when this shell exits).
ensure_postgres() {
    # shellcheck source=scripts/postgres.sh
    source scripts/postgres.sh
}

# A real single-node Kubernetes 1.20 built from Debian's source package
# (exports CLAUDECLUSTER_TEST_KUBECONFIG, _KUBE_NODE, _KUBE_NAMESPACE,
# _KUBE_HOST_IP, _KUBE_POD_CIDR; stopped when this shell exits).
# Starts the test cluster (stopped when the calling shell exits) and sets
# KUBE_BENCH_ARGS: `claudecluster bench`'s flags for it.
ensure_kubernetes() {
    # shellcheck source=scripts/kubernetes.sh
    source "$(dirname "${BASH_SOURCE[0]}")/kubernetes.sh"
    KUBE_BENCH_ARGS=(
        --kubeconfig "$CLAUDECLUSTER_TEST_KUBECONFIG"
        --kube-namespace "$CLAUDECLUSTER_TEST_KUBE_NAMESPACE"
        --kube-node "$CLAUDECLUSTER_TEST_KUBE_NODE"
        --kube-host-ip "$CLAUDECLUSTER_TEST_KUBE_HOST_IP"
    )
}

# The Python SDK's test environment: a virtualenv at /var/tmp/cc-python-sdk
# with ./clients/python installed by pip (websockets from PyPI). Made anew
# when clients/python/pyproject.toml changes; the package is reinstalled
# when its sources do. Exports CLAUDECLUSTER_TEST_PYTHON, which the SDK's
# end-to-end wrapper (crates/testkit/tests/e2e/python_sdk.rs) requires.
ensure_python_sdk() {
    local root venv=/var/tmp/cc-python-sdk key sources
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    key="$(sha256sum "$root/clients/python/pyproject.toml" | cut -d' ' -f1)"
    if [ "$(cat "$venv/.pyproject-sha256" 2>/dev/null)" != "$key" ] \
        || ! "$venv/bin/python" -c '' 2>/dev/null; then
        if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
            [ "$(id -u)" -eq 0 ] || { echo "python3's venv module is missing: apt-get install python3-venv" >&2; exit 1; }
            log "installing python3-venv"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        fi
        log "making the Python SDK's virtualenv in $venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
        echo "$key" >"$venv/.pyproject-sha256"
    fi
    # What pip leaves in the source tree (build/, *.egg-info) is not a source.
    sources="$(cd "$root/clients/python" && find pyproject.toml README.md src -type f \
        -not -path '*.egg-info/*' -not -path '*/__pycache__/*' -print0 \
        | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$venv/.sources-sha256" 2>/dev/null)" != "$sources" ]; then
        log "installing the Python SDK (pip install ./clients/python) into $venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$root/clients/python"
        echo "$sources" >"$venv/.sources-sha256"
    fi
    export CLAUDECLUSTER_TEST_PYTHON="$venv/bin/python"
}

build_workspace() {
    log "building the workspace"
    cargo build --workspace --bins --quiet
}

# Builds (or finds, in seconds) the worker image; prints its content tag.
build_image() {
    log "building the worker image"
    "$TARGET_DIR/debug/claudecluster" image build
}
