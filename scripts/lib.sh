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

build_workspace() {
    log "building the workspace"
    cargo build --workspace --bins --quiet
}

# Builds (or finds, in seconds) the worker image; prints its content tag.
build_image() {
    log "building the worker image"
    "$TARGET_DIR/debug/claudecluster" image build
}
