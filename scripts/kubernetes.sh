#!/usr/bin/env bash
# A real single-node Kubernetes for the tests, built from Debian's archive
# alone (no registry is reachable here): the `kubernetes` source package's
# kube-apiserver and kubelet (with its dockershim), Debian's etcd and CNI
# plugins, and a pause image built locally FROM scratch. No scheduler and no
# controller-manager run: pods need `spec.nodeName`, and the test namespace's
# `default` ServiceAccount (with its token) is made here.
#
# The binaries are built once (~6 min on 2 cores, under `nice`) and cached
# by source version and patch hash in /var/tmp/cc-kube/<version>-p<hash>/bin;
# each start is fresh state in /var/tmp/cc-kube/run (wiped at start, its
# logs kept after a stop). One cluster at a time on a machine.
#
# Exports CLAUDECLUSTER_TEST_KUBECONFIG (admin token + CA, server
# https://<host ip>:<port>), CLAUDECLUSTER_TEST_KUBE_NODE,
# CLAUDECLUSTER_TEST_KUBE_NAMESPACE, CLAUDECLUSTER_TEST_KUBE_HOST_IP (the
# host's address on the pod bridge: a host process on 0.0.0.0 is reached
# there from pods), CLAUDECLUSTER_TEST_KUBE_POD_CIDR and
# CLAUDECLUSTER_TEST_KUBE_API (the API server's host:port, on that address:
# Pods reach it there). The test namespace holds the ServiceAccounts
# `default` and `claudecluster` (the orchestrator's), each with its token.
#
# Sourced (scripts/lib.sh's ensure_kubernetes): the cluster is stopped when
# the sourcing shell exits. Run directly: starts the cluster and prints the
# variables to export; `scripts/kubernetes.sh stop` stops it, and
# `scripts/kubernetes.sh build` only builds (or finds) the binaries.
#
# A stop deletes every pod, stops kubelet, kube-apiserver and etcd, removes
# the Docker containers this run's kubelet made (and no other), the pod
# bridge, the dirs the kubelet made outside its root, and puts back the
# sysctls the kubelet changes.
# shellcheck shell=bash

CC_KUBE_SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
CC_KUBE_CHECKOUT="$(cd "$(dirname "$CC_KUBE_SCRIPT")/.." && pwd)"
CC_KUBE_HOME="${CC_KUBE_HOME:-/var/tmp/cc-kube}"
CC_KUBE_RUN="$CC_KUBE_HOME/run"
CC_KUBE_NAMESPACE=claudecluster-test
CC_KUBE_NODE=claudecluster-kube-node
CC_KUBE_BRIDGE=ccbr-kube
CC_KUBE_SERVICE_CIDR=10.96.77.0/24
CC_KUBE_GO=/usr/lib/go-1.19/bin
CC_KUBE_REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
CC_KUBE_APT_SOURCES=/etc/apt/sources.list.d/cc-kube-deb-src.sources
# Sysctls kubelet 1.20 sets on start (setupKernelTunables), plus the one the
# CNI bridge plugin sets (ip_forward, for its gateway); saved and put back.
CC_KUBE_SYSCTLS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward"
# Dirs kubelet 1.20 writes whatever its --root-dir; removed on stop when
# they were not there before the start.
CC_KUBE_HOST_DIRS="/var/lib/kubelet /var/log/pods /var/log/containers"

declare -F log >/dev/null || log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

kube_die() {
    echo "kubernetes.sh: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- packages

kube_apt_install() {
    [ $# -gt 0 ] || return 0
    if [ "$(id -u)" -ne 0 ]; then
        kube_die "missing packages: $* — install them (apt-get install $*) and run again"
    fi
    log "installing $*"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# What running the cluster needs.
kube_ensure_run_packages() {
    local missing=()
    command -v etcd >/dev/null || missing+=(etcd-server)
    [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] \
        || missing+=(containernetworking-plugins)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v curl >/dev/null || missing+=(curl)
    command -v nsenter >/dev/null || missing+=(util-linux)
    command -v ip >/dev/null || missing+=(iproute2)
    # The tests read deploy/kubernetes's manifests with it.
    python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
    kube_apt_install "${missing[@]}"
    docker info >/dev/null 2>&1 \
        || kube_die "Docker is not running or not reachable: start the Docker daemon and run again"
}

# What building the binaries needs.
kube_ensure_build_packages() {
    local missing=()
    [ -x "$CC_KUBE_GO/go" ] || missing+=(golang-1.19-go)
    command -v make >/dev/null || missing+=(make)
    command -v gcc >/dev/null || missing+=(gcc)
    command -v rsync >/dev/null || missing+=(rsync)
    command -v jq >/dev/null || missing+=(jq)
    command -v dpkg-source >/dev/null || missing+=(dpkg-dev)
    [ -f "$CC_KUBE_REFLECT2/go_above_118.go" ] || missing+=(golang-github-modern-go-reflect2-dev)
    kube_apt_install "${missing[@]}"
}

# A deb-src entry for each deb one of /etc/apt/sources.list.d/debian.sources
# (or /etc/apt/sources.list), in a sources file of its own; left alone when
# apt already has deb-src entries of its own. Prints "changed" when written.
kube_ensure_deb_src() {
    local others
    others="$(grep -rlsE '^[[:space:]]*(Types:.*deb-src|deb-src[[:space:]])' /etc/apt/sources.list /etc/apt/sources.list.d/ \
        | grep -vxF "$CC_KUBE_APT_SOURCES" || true)"
    [ -z "$others" ] || return 0
    local want
    want="$(python3 - <<'PY'
import os, re
out = []
path = "/etc/apt/sources.list.d/debian.sources"
if os.path.exists(path):
    for stanza in re.split(r"\n\s*\n", open(path).read().strip()):
        lines = [l for l in stanza.splitlines() if not l.lstrip().startswith("#")]
        types = [l for l in lines if l.startswith("Types:")]
        if types and "deb" in types[0].split()[1:]:
            out.append("\n".join("Types: deb-src" if l.startswith("Types:") else l for l in lines))
    print("\n\n".join(out))
elif os.path.exists("/etc/apt/sources.list"):
    for line in open("/etc/apt/sources.list"):
        if line.startswith("deb "):
            out.append("deb-src " + line[4:].rstrip())
    print("\n".join(out))
PY
)"
    [ -n "$want" ] || kube_die "found no Debian 'deb' entry in /etc/apt to derive a deb-src entry from"
    if [ "$(cat "$CC_KUBE_APT_SOURCES" 2>/dev/null)" != "$want" ]; then
        [ "$(id -u)" -eq 0 ] || kube_die "need a deb-src entry for the kubernetes source package: run as root"
        log "adding deb-src entries in $CC_KUBE_APT_SOURCES"
        printf '%s\n' "$want" >"$CC_KUBE_APT_SOURCES"
        echo changed
    fi
}

# The Debian source version of `kubernetes` (e.g. 1.20.5+really1.20.2-1.1+deb12u1).
kube_source_version() {
    local changed versions
    changed="$(kube_ensure_deb_src)"
    # apt-cache fails (exit 100) until the new deb-src lists are fetched:
    # an empty answer here, which the update below fills.
    versions="$( (apt-cache showsrc kubernetes 2>/dev/null || true) | awk '/^Version:/ {print $2}')"
    if [ -n "$changed" ] || [ -z "$versions" ]; then
        apt-get update -qq >&2
        versions="$( (apt-cache showsrc kubernetes 2>/dev/null || true) | awk '/^Version:/ {print $2}')"
    fi
    [ -n "$versions" ] || kube_die "apt knows no source package 'kubernetes' (deb-src entries: $CC_KUBE_APT_SOURCES)"
    local best="" v
    for v in $versions; do
        if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then best="$v"; fi
    done
    echo "$best"
}

# ------------------------------------------------------------------- build

# Replaces exactly one occurrence of a literal text in a file.
kube_patch_text() {
    python3 - "$@" <<'PY'
import sys
path, old, new = sys.argv[1:4]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"kubernetes.sh: expected one {old!r} in {path}, found {text.count(old)}: the source changed")
open(path, "w").write(text.replace(old, new))
PY
}

# The source fixes (their text is hashed into the cache dir's name).
kube_patch_source() {
    local src="$1" vendored="$1/vendor/github.com/modern-go/reflect2"
    # 1. The vendored reflect2 1.0.1 crashes the apiserver on every JSON
    #    POST when built with Go >= 1.18: Debian's 1.0.2 instead.
    [ -d "$vendored" ] || kube_die "no $vendored in the source"
    rm -f "$vendored"/*.go "$vendored"/*.s
    cp "$CC_KUBE_REFLECT2"/*.go "$CC_KUBE_REFLECT2"/*.s "$vendored"/
    # 2. These machines refuse a negative oom_score_adj (runc fails with
    #    "can't get final child's PID from pipe"): 0 for the pause container
    #    and for Guaranteed pods.
    kube_patch_text "$src/pkg/kubelet/dockershim/docker_sandbox.go" \
        'defaultSandboxOOMAdj int = -998' 'defaultSandboxOOMAdj int = 0'
    kube_patch_text "$src/pkg/kubelet/qos/policy.go" \
        'guaranteedOOMScoreAdj int = -997' 'guaranteedOOMScoreAdj int = 0'
    # 3. dockershim sets the Docker daemon's and containerd's oom_score_adj
    #    every 5 minutes: the engine is not ours to change.
    kube_patch_text "$src/pkg/kubelet/dockershim/cm/container_manager_linux.go" \
        'func (m *containerManager) doWork() {' \
        'func (m *containerManager) doWork() {
	return // claudecluster: never touch the Docker daemon processes'
}

kube_patch_hash() {
    {
        declare -f kube_patch_source kube_patch_text
        dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev 2>/dev/null || true
    } | sha256sum | cut -c1-10
}

# Prints the binary dir for this source version, building it when missing.
kube_ensure_binaries() {
    local version hash dir
    version="$(kube_source_version)"
    hash="$(kube_patch_hash)"
    dir="$CC_KUBE_HOME/$version-p$hash"
    if [ -x "$dir/bin/kube-apiserver" ] && [ -x "$dir/bin/kubelet" ] && [ -x "$dir/bin/pause" ]; then
        echo "$dir"
        return 0
    fi
    kube_ensure_build_packages
    # The reflect2 package may have just been installed: the hash names it.
    hash="$(kube_patch_hash)"
    dir="$CC_KUBE_HOME/$version-p$hash"
    mkdir -p "$CC_KUBE_HOME"
    exec 7>"$CC_KUBE_HOME/build.lock"
    flock 7
    if [ -x "$dir/bin/kube-apiserver" ] && [ -x "$dir/bin/kubelet" ] && [ -x "$dir/bin/pause" ]; then
        exec 7>&-
        echo "$dir"
        return 0
    fi
    local build="$CC_KUBE_HOME/build" started=$SECONDS
    log "building Kubernetes $version (kube-apiserver, kubelet, pause) in $build: ~6 min on 2 cores, once"
    rm -rf "$build"
    mkdir -p "$build/src-pkg" "$CC_KUBE_HOME/gocache"
    # apt's sandbox user must be able to write the download dir.
    chown _apt "$build/src-pkg" 2>/dev/null || true
    (cd "$build/src-pkg" && apt-get source --download-only -qq "kubernetes=$version") >"$build/source.log" 2>&1 \
        || { tail -n 20 "$build/source.log" >&2; kube_die "could not download the kubernetes $version source package"; }
    dpkg-source -x "$build"/src-pkg/kubernetes_*.dsc "$build/src" >>"$build/source.log" 2>&1 \
        || { tail -n 20 "$build/source.log" >&2; kube_die "could not unpack the kubernetes source package"; }
    kube_patch_source "$build/src"
    # hack/lib/golang.sh puts GOCACHE in _output/local/go/cache: there, the
    # private cache under $CC_KUBE_HOME.
    mkdir -p "$build/src/_output/local/go"
    ln -s "$CC_KUBE_HOME/gocache" "$build/src/_output/local/go/cache"
    if ! (
        cd "$build/src"
        export PATH="$CC_KUBE_GO:$PATH" GOCACHE="$CC_KUBE_HOME/gocache" GOFLAGS=-mod=vendor GOPROXY=off \
            HOME="$build/home" KUBE_VERBOSE=1
        nice -n 15 make WHAT="cmd/kube-apiserver cmd/kubelet"
        nice -n 15 gcc -Os -Wall -static -DVERSION="v$version" -o _output/bin/pause build/pause/linux/pause.c
    ) >"$build/build.log" 2>&1; then
        tail -n 40 "$build/build.log" >&2
        kube_die "building Kubernetes failed: the log is $build/build.log"
    fi
    rm -rf "$dir.new"
    mkdir -p "$dir.new/bin"
    cp "$build"/src/_output/bin/{kube-apiserver,kubelet,pause} "$dir.new/bin/"
    rm -rf "$dir"
    mv "$dir.new" "$dir"
    rm -rf "$build"
    exec 7>&-
    log "built Kubernetes $version in $((SECONDS - started)) s: $dir/bin"
    echo "$dir"
}

# --------------------------------------------------------------- helpers

kube_free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# The first 10.244.N.0/24 (N from 77) that no route, address or Docker
# network on this machine overlaps.
kube_pick_pod_cidr() {
    local docker_subnets
    # shellcheck disable=SC2046  # one argument per network id
    docker_subnets="$(docker network inspect $(docker network ls -q) \
        --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}' 2>/dev/null || true)"
    python3 - "$docker_subnets" <<'PY'
import ipaddress, json, subprocess, sys
used = []
for word in sys.argv[1].split():
    try:
        used.append(ipaddress.ip_network(word, strict=False))
    except ValueError:
        pass
for route in json.loads(subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"],
                                       capture_output=True, text=True).stdout or "[]"):
    dst = route.get("dst", "")
    if dst and dst != "default":
        try:
            used.append(ipaddress.ip_network(dst, strict=False))
        except ValueError:
            pass
for link in json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True).stdout or "[]"):
    for a in link.get("addr_info", []):
        used.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
for n in list(range(77, 256)) + list(range(0, 77)):
    net = ipaddress.ip_network(f"10.244.{n}.0/24")
    if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
        print(net)
        break
else:
    sys.exit("kubernetes.sh: every 10.244.N.0/24 collides with a route here")
PY
}

# A process that runs (a zombie does not: orphans wait for pid 1 to reap them).
kube_proc_live() {
    local state
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

kube_pid_alive() {
    local pid
    pid="$(cat "$1" 2>/dev/null)" || return 1
    [ -n "$pid" ] && kube_proc_live "$pid"
}

# Starts a daemon in its own session, its output in $CC_KUBE_RUN/<name>.log,
# its pid in $CC_KUBE_RUN/<name>.pid; the lock fds stay closed for it.
kube_daemon() {
    local name="$1"
    shift
    # shellcheck disable=SC2016  # expanded by the inner bash
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$CC_KUBE_RUN/$name.pid" "$@" \
        </dev/null >"$CC_KUBE_RUN/$name.log" 2>&1 7>&- 8>&- &
    for _ in $(seq 1 50); do
        [ -s "$CC_KUBE_RUN/$name.pid" ] && return 0
        sleep 0.1
    done
    kube_die "$name did not start"
}

kube_fail_with_log() {
    local name="$1"
    shift
    echo "---- last lines of $CC_KUBE_RUN/$name.log ----" >&2
    # Go's fatal logs end with every goroutine's stack: the lines before.
    awk '/^goroutine [0-9]+ \[/ {exit} {print}' "$CC_KUBE_RUN/$name.log" 2>/dev/null | tail -n 30 >&2 || true
    echo "----" >&2
    kube_die "$*"
}

# Stops the process of $CC_KUBE_RUN/NAME.pid (when it still runs BINARY):
# TERM, then KILL after a grace time.
kube_kill() {
    local name="$1" binary="$2" grace="${3:-10}" file="$CC_KUBE_RUN/$1.pid" pid
    pid="$(cat "$file" 2>/dev/null)" || return 0
    rm -f "$file"
    [ -n "$pid" ] && kube_proc_live "$pid" || return 0
    [ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")" = "$binary" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((grace * 10))); do
        kube_proc_live "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kube_proc_live "$pid" || return 0
        sleep 0.1
    done
}

# The API server's URL: on the pod bridge's host address, where Pods reach
# it too (an orchestrator in a Pod; no kube-proxy routes the `kubernetes`
# Service here).
kube_api_url() {
    echo "https://$(cat "$CC_KUBE_RUN/apiserver.host"):$(cat "$CC_KUBE_RUN/apiserver.port")"
}

# The API as the admin: kube_api METHOD PATH [JSON body]; prints the body,
# fails on an HTTP error.
kube_api() {
    local method="$1" path="$2" body="${3:-}" args=()
    [ -z "$body" ] || args=(-H 'Content-Type: application/json' --data-binary "$body")
    curl -sS --fail-with-body --max-time 20 --cacert "$CC_KUBE_RUN/pki/ca.crt" \
        -H "Authorization: Bearer $(cat "$CC_KUBE_RUN/admin.token")" \
        -X "$method" "${args[@]}" "$(kube_api_url)$path"
}

kube_api_up() {
    [ -f "$CC_KUBE_RUN/apiserver.host" ] && [ -f "$CC_KUBE_RUN/apiserver.port" ] && kube_pid_alive "$CC_KUBE_RUN/apiserver.pid" \
        && [ "$(kube_api GET /readyz 2>/dev/null)" = ok ]
}

# ------------------------------------------------------------------- start

kube_certs() {
    local pki="$CC_KUBE_RUN/pki" node_ip="$1" service_ip="$2"
    mkdir -p "$pki"
    (
        cd "$pki"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
            -keyout ca.key -out ca.crt -subj /CN=claudecluster-kube-ca \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
        # cert NAME SUBJECT EXTENSIONS
        cert() {
            openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout "$1.key" -subj "$2" \
                | openssl x509 -req -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -out "$1.crt" \
                    -extfile <(printf '%s\n' "basicConstraints=CA:FALSE" "$3")
        }
        cert apiserver /CN=kube-apiserver \
            "subjectAltName=IP:127.0.0.1,IP:$node_ip,IP:$service_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
        cert apiserver-kubelet-client /CN=kube-apiserver-kubelet-client "extendedKeyUsage=clientAuth"
        cert kubelet "/CN=$CC_KUBE_NODE" "subjectAltName=IP:$node_ip,DNS:$CC_KUBE_NODE
extendedKeyUsage=serverAuth"
        cert kubelet-client "/O=system:nodes/CN=system:node:$CC_KUBE_NODE" "extendedKeyUsage=clientAuth"
        openssl genrsa -out sa.key 2048
        openssl rsa -in sa.key -pubout -out sa.pub
    ) >"$CC_KUBE_RUN/pki.log" 2>&1 || kube_fail_with_log pki "could not make the certificates"
    chmod 600 "$pki"/*.key
}

kube_kubeconfig() {
    local file="$1" user="$2"
    {
        echo "apiVersion: v1"
        echo "kind: Config"
        echo "clusters:"
        echo "- name: claudecluster"
        echo "  cluster:"
        echo "    server: $(kube_api_url)"
        echo "    certificate-authority-data: $(base64 -w0 "$CC_KUBE_RUN/pki/ca.crt")"
        echo "users:"
        echo "- name: user"
        echo "  user:"
        printf '%s\n' "$user"
        echo "contexts:"
        echo "- name: claudecluster"
        echo "  context:"
        echo "    cluster: claudecluster"
        echo "    user: user"
        echo "    namespace: $CC_KUBE_NAMESPACE"
        echo "current-context: claudecluster"
    } >"$file"
    chmod 600 "$file"
}

kube_start_etcd() {
    local client="$1" peer="$2"
    kube_daemon etcd etcd --name claudecluster --data-dir "$CC_KUBE_RUN/etcd" \
        --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "claudecluster=http://127.0.0.1:$peer" --initial-cluster-state new
    for _ in $(seq 1 150); do
        kube_pid_alive "$CC_KUBE_RUN/etcd.pid" || kube_fail_with_log etcd "etcd exited at start"
        curl -sf --max-time 2 "http://127.0.0.1:$client/health" 2>/dev/null | grep -q '"health":"true"' && return 0
        sleep 0.2
    done
    kube_fail_with_log etcd "etcd did not become healthy in 30 s"
}

kube_start_apiserver() {
    local bin="$1" etcd_port="$2" host="$3" port="$4" pki="$CC_KUBE_RUN/pki"
    echo "$host" >"$CC_KUBE_RUN/apiserver.host"
    echo "$port" >"$CC_KUBE_RUN/apiserver.port"
    openssl rand -hex 24 >"$CC_KUBE_RUN/admin.token"
    echo "$(cat "$CC_KUBE_RUN/admin.token"),admin,admin,\"system:masters\"" >"$CC_KUBE_RUN/tokens.csv"
    chmod 600 "$CC_KUBE_RUN/admin.token" "$CC_KUBE_RUN/tokens.csv"
    mkdir -p "$CC_KUBE_RUN/apiserver"
    kube_daemon apiserver "$bin/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$etcd_port" \
        --bind-address="$host" --secure-port="$port" --insecure-port=0 --advertise-address="$host" \
        --cert-dir="$CC_KUBE_RUN/apiserver" \
        --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
        --client-ca-file="$pki/ca.crt" \
        --token-auth-file="$CC_KUBE_RUN/tokens.csv" \
        --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
        --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --api-audiences=https://kubernetes.default.svc.cluster.local \
        --service-cluster-ip-range="$CC_KUBE_SERVICE_CIDR" \
        --endpoint-reconciler-type=none \
        --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority="$pki/ca.crt" \
        --kubelet-preferred-address-types=InternalIP \
        --profiling=false --v=1
    for _ in $(seq 1 300); do
        kube_pid_alive "$CC_KUBE_RUN/apiserver.pid" || kube_fail_with_log apiserver "kube-apiserver exited at start"
        [ "$(kube_api GET /readyz 2>/dev/null)" = ok ] && return 0
        sleep 0.2
    done
    kube_fail_with_log apiserver "kube-apiserver did not answer /readyz in 60 s"
}

# The pod bridge, made before the kubelet so that it can serve on (and
# register as its node IP) the bridge's address; the CNI bridge plugin
# finds it with that address and attaches the pods.
kube_bridge() {
    local host_ip="$1" cidr="$2"
    if ip link show "$CC_KUBE_BRIDGE" >/dev/null 2>&1; then
        log "removing a stale $CC_KUBE_BRIDGE bridge"
        ip link del "$CC_KUBE_BRIDGE"
    fi
    ip link add "$CC_KUBE_BRIDGE" type bridge
    ip addr add "$host_ip/${cidr#*/}" dev "$CC_KUBE_BRIDGE"
    ip link set "$CC_KUBE_BRIDGE" up
    # Pod to Pod on the bridge (an orchestrator Pod to its sessions' Pods):
    # bridged frames pass the FORWARD chain (br_netfilter), whose policy
    # Docker sets to DROP; kube-proxy would admit them, and none runs here.
    iptables -I FORWARD -i "$CC_KUBE_BRIDGE" -o "$CC_KUBE_BRIDGE" -j ACCEPT \
        -m comment --comment claudecluster-kube-test
}

kube_pause_image() {
    local bin="$1" tag="$2"
    docker image inspect "$tag" >/dev/null 2>&1 && return 0
    log "building the pause image $tag"
    local ctx
    ctx="$(mktemp -d)"
    cp "$bin/pause" "$ctx/pause"
    printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >"$CC_KUBE_RUN/pause-image.log" 2>&1 \
        || { rm -rf "$ctx"; kube_fail_with_log pause-image "could not build the pause image"; }
    rm -rf "$ctx"
}

kube_start_kubelet() {
    local bin="$1" port="$2" host_ip="$3" cidr="$4" pause="$5" k="$CC_KUBE_RUN/kubelet" pki="$CC_KUBE_RUN/pki"
    mkdir -p "$k" "$CC_KUBE_RUN/seccomp" "$CC_KUBE_RUN/cni/net.d" "$CC_KUBE_RUN/cni/cache" "$CC_KUBE_RUN/cni/ipam" \
        "$CC_KUBE_RUN/dockershim" "$CC_KUBE_RUN/volume-plugins"
    cp "$CC_KUBE_CHECKOUT/deploy/seccomp/claudecluster.json" "$CC_KUBE_RUN/seccomp/"
    local gateway="$host_ip"
    cat >"$CC_KUBE_RUN/cni/net.d/10-claudecluster.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "claudecluster-kube",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CC_KUBE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CC_KUBE_RUN/cni/ipam",
        "ranges": [[{"subnet": "$cidr", "gateway": "$gateway"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
    kube_kubeconfig "$CC_KUBE_RUN/kubelet.kubeconfig" "    client-certificate: $pki/kubelet-client.crt
    client-key: $pki/kubelet-client.key"
    kube_daemon kubelet "$bin/kubelet" \
        --kubeconfig="$CC_KUBE_RUN/kubelet.kubeconfig" \
        --hostname-override="$CC_KUBE_NODE" --node-ip="$host_ip" \
        --address="$host_ip" --port="$port" --read-only-port=0 --healthz-port=0 \
        --root-dir="$k" --cert-dir="$k/pki" --volume-plugin-dir="$CC_KUBE_RUN/volume-plugins" \
        --tls-cert-file="$pki/kubelet.crt" --tls-private-key-file="$pki/kubelet.key" \
        --client-ca-file="$pki/ca.crt" --anonymous-auth=false --authorization-mode=AlwaysAllow \
        --container-runtime=docker \
        --container-runtime-endpoint="unix://$CC_KUBE_RUN/dockershim.sock" \
        --image-service-endpoint="unix://$CC_KUBE_RUN/dockershim.sock" \
        --experimental-dockershim-root-directory="$CC_KUBE_RUN/dockershim" \
        --pod-infra-container-image="$pause" \
        --network-plugin=cni --cni-bin-dir=/usr/lib/cni --cni-conf-dir="$CC_KUBE_RUN/cni/net.d" \
        --cni-cache-dir="$CC_KUBE_RUN/cni/cache" --hairpin-mode=none \
        --cgroup-driver=cgroupfs --cgroups-per-qos=false --enforce-node-allocatable= \
        --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
        --eviction-hard='memory.available<100Mi,nodefs.available<1%,imagefs.available<1%' \
        --fail-swap-on=false --make-iptables-util-chains=false --oom-score-adj=0 \
        --seccomp-profile-root="$CC_KUBE_RUN/seccomp" \
        --serialize-image-pulls=false --v=1
    for _ in $(seq 1 450); do
        kube_pid_alive "$CC_KUBE_RUN/kubelet.pid" || kube_fail_with_log kubelet "the kubelet exited at start"
        if kube_api GET "/api/v1/nodes/$CC_KUBE_NODE" 2>/dev/null | python3 -c '
import json, sys
node = json.load(sys.stdin)
ready = [c for c in node.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
sys.exit(0 if ready and ready[0]["status"] == "True" else 1)' 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    kube_fail_with_log kubelet "node $CC_KUBE_NODE was not Ready in 90 s"
}

# The test namespace and its ServiceAccounts `default` and `claudecluster`
# (an orchestrator in a Pod), each with its token secret (the token
# controller of a controller-manager would make them; the ServiceAccount
# admission plugin of 1.20 refuses pods whose account has no token).
kube_namespace() {
    kube_api POST /api/v1/namespaces \
        "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$CC_KUBE_NAMESPACE\"}}" >/dev/null
    kube_service_account default
    kube_service_account claudecluster
}

# kube_service_account NAME: the account in the test namespace and its
# token, a legacy service-account JWT signed with our key.
kube_service_account() {
    local ns="$CC_KUBE_NAMESPACE" name="$1" sa_uid secret
    sa_uid="$(kube_api POST "/api/v1/namespaces/$ns/serviceaccounts" \
        "{\"apiVersion\":\"v1\",\"kind\":\"ServiceAccount\",\"metadata\":{\"name\":\"$name\"},\"secrets\":[{\"name\":\"$name-token\"}]}" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["metadata"]["uid"])')"
    secret="$(python3 - "$ns" "$name" "$sa_uid" "$CC_KUBE_RUN/pki/sa.key" "$CC_KUBE_RUN/pki/ca.crt" <<'PY'
import base64, json, subprocess, sys
ns, name, uid, key, ca = sys.argv[1:6]
b64u = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
header = b64u(json.dumps({"alg": "RS256", "kid": ""}).encode())
claims = b64u(json.dumps({
    "iss": "kubernetes/serviceaccount",
    "kubernetes.io/serviceaccount/namespace": ns,
    "kubernetes.io/serviceaccount/secret.name": f"{name}-token",
    "kubernetes.io/serviceaccount/service-account.name": name,
    "kubernetes.io/serviceaccount/service-account.uid": uid,
    "sub": f"system:serviceaccount:{ns}:{name}",
}).encode())
signed = f"{header}.{claims}".encode()
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signed, capture_output=True, check=True).stdout
token = f"{header}.{claims}.{b64u(sig)}"
b64 = lambda b: base64.b64encode(b).decode()
print(json.dumps({
    "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
    "metadata": {"name": f"{name}-token", "annotations": {
        "kubernetes.io/service-account.name": name, "kubernetes.io/service-account.uid": uid}},
    "data": {"token": b64(token.encode()), "ca.crt": b64(open(ca, "rb").read()), "namespace": b64(ns.encode())},
}))
PY
)"
    kube_api POST "/api/v1/namespaces/$ns/secrets" "$secret" >/dev/null
}

kube_write_env() {
    local host_ip="$1" cidr="$2" owner="$3"
    cat >"$CC_KUBE_RUN/env" <<EOF
export CLAUDECLUSTER_TEST_KUBECONFIG=$CC_KUBE_RUN/admin.kubeconfig
export CLAUDECLUSTER_TEST_KUBE_NODE=$CC_KUBE_NODE
export CLAUDECLUSTER_TEST_KUBE_NAMESPACE=$CC_KUBE_NAMESPACE
export CLAUDECLUSTER_TEST_KUBE_HOST_IP=$host_ip
export CLAUDECLUSTER_TEST_KUBE_POD_CIDR=$cidr
export CLAUDECLUSTER_TEST_KUBE_API=$host_ip:$(cat "$CC_KUBE_RUN/apiserver.port")
EOF
    echo "$owner" >"$CC_KUBE_RUN/owner"
}

kube_undo_failed_start() {
    local rc=$?
    [ "$rc" -ne 0 ] || return 0
    echo "kubernetes.sh: the start failed; stopping what had started (logs in $CC_KUBE_RUN)" >&2
    kube_stop_locked quiet
}

# Starts a fresh cluster (owner: the pid of the shell whose exit stops it,
# or "direct"). Reuses one started directly that is up; refuses to take
# over one that another live shell owns.
kube_start() {
    local owner="$1"
    mkdir -p "$CC_KUBE_HOME"
    exec 8>"$CC_KUBE_HOME/run.lock"
    flock 8
    if kube_api_up && [ -f "$CC_KUBE_RUN/env" ]; then
        local current
        current="$(cat "$CC_KUBE_RUN/owner" 2>/dev/null || echo direct)"
        if [ "$current" = direct ] || [ "$current" = "$owner" ]; then
            log "Kubernetes is already up (started by $current): reusing it"
            return 0
        fi
        if kube_proc_live "$current"; then
            kube_die "a cluster owned by shell $current is running in $CC_KUBE_RUN: it stops when that shell exits (or: $CC_KUBE_SCRIPT stop)"
        fi
    fi
    # Whatever a previous run left (its owner gone, or half started).
    kube_stop_locked quiet

    kube_ensure_run_packages
    local dir version
    dir="$(kube_ensure_binaries)"
    version="$(basename "$dir")"
    version="${version%-p*}"
    local started=$SECONDS
    [ -f "$CC_KUBE_CHECKOUT/deploy/seccomp/claudecluster.json" ] \
        || kube_die "no deploy/seccomp/claudecluster.json in $CC_KUBE_CHECKOUT"

    rm -rf "$CC_KUBE_RUN"
    mkdir -p "$CC_KUBE_RUN"
    chmod 700 "$CC_KUBE_RUN"
    # What the stop puts back, recorded before anything changes.
    local s d
    for s in $CC_KUBE_SYSCTLS; do
        echo "$s=$(sysctl -n "$s")"
    done >"$CC_KUBE_RUN/sysctls"
    for d in $CC_KUBE_HOST_DIRS; do
        [ -e "$d" ] || echo "$d"
    done >"$CC_KUBE_RUN/created-dirs"
    # From here on, a failure undoes the start.
    trap kube_undo_failed_start EXIT

    local cidr host_ip etcd_client etcd_peer api_port kubelet_port
    cidr="$(kube_pick_pod_cidr)"
    host_ip="$(python3 -c 'import ipaddress, sys; print(next(ipaddress.ip_network(sys.argv[1]).hosts()))' "$cidr")"
    echo "$CC_KUBE_BRIDGE" >"$CC_KUBE_RUN/bridge"
    read -r etcd_client etcd_peer api_port kubelet_port <<<"$(kube_free_ports 4)"
    local service_ip
    service_ip="$(python3 -c 'import ipaddress, sys; print(next(ipaddress.ip_network(sys.argv[1]).hosts()))' "$CC_KUBE_SERVICE_CIDR")"

    log "starting Kubernetes $version (etcd, kube-apiserver, kubelet; pods on $CC_KUBE_BRIDGE $cidr)"
    kube_certs "$host_ip" "$service_ip"
    kube_start_etcd "$etcd_client" "$etcd_peer"
    kube_bridge "$host_ip" "$cidr"
    kube_start_apiserver "$dir/bin" "$etcd_client" "$host_ip" "$api_port"
    kube_kubeconfig "$CC_KUBE_RUN/admin.kubeconfig" "    token: $(cat "$CC_KUBE_RUN/admin.token")"
    local pause
    pause="claudecluster-kube-pause:$(printf '%s' "$version" | tr -c 'A-Za-z0-9_.-' '_')"
    kube_pause_image "$dir/bin" "$pause"
    kube_start_kubelet "$dir/bin" "$kubelet_port" "$host_ip" "$cidr" "$pause"
    kube_namespace
    kube_write_env "$host_ip" "$cidr" "$owner"
    trap - EXIT
    log "Kubernetes up in $((SECONDS - started)) s: node $CC_KUBE_NODE Ready, API $(kube_api_url) (logs in $CC_KUBE_RUN)"
}

# -------------------------------------------------------------------- stop

# The Docker containers this run's kubelet made: the sandboxes dockershim
# checkpointed in this run's dir, the containers with a mount from this
# run's dir, and every container of the pods (by uid) these belong to or
# whose dirs are in this run's kubelet root. Never any other container.
# With `running`: only those still running.
kube_our_containers() {
    local only_running="${1:-}"
    local ids
    ids="$(docker ps -aq --no-trunc --filter label=io.kubernetes.pod.uid 2>/dev/null || true)"
    [ -n "$ids" ] || return 0
    # shellcheck disable=SC2086
    docker inspect $ids 2>/dev/null | python3 -c '
import json, os, sys
run = sys.argv[1]
containers = json.load(sys.stdin)
def listdir(p):
    try:
        return set(os.listdir(p))
    except OSError:
        return set()
sandboxes = listdir(os.path.join(run, "dockershim", "sandbox"))
uids = listdir(os.path.join(run, "kubelet", "pods"))
for c in containers:
    labels = c["Config"].get("Labels") or {}
    mine = c["Id"] in sandboxes or labels.get("io.kubernetes.sandbox.id") in sandboxes \
        or any((m.get("Source") or "").startswith(run + "/") for m in c.get("Mounts") or [])
    if mine:
        uids.add(labels.get("io.kubernetes.pod.uid"))
for c in containers:
    labels = c["Config"].get("Labels") or {}
    if c["Name"].lstrip("/").startswith("k8s_") and labels.get("io.kubernetes.pod.uid") in uids \
            and (not sys.argv[2] or c["State"]["Running"]):
        print(c["Id"])
' "$CC_KUBE_RUN" "$only_running"
}

# Unmounts whatever is mounted below a dir, the deepest first.
kube_umount_under() {
    local m
    awk -v dir="$1/" 'index($2, dir) == 1 {print $2}' /proc/mounts | sort -r | while IFS= read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
}

kube_stop_locked() {
    local quiet="${1:-}"
    [ -d "$CC_KUBE_RUN" ] || return 0
    [ -n "$quiet" ] || log "stopping Kubernetes ($CC_KUBE_RUN)"
    # Every pod, deleted through the API while the kubelet runs, so that it
    # stops their containers itself.
    if kube_api_up && kube_pid_alive "$CC_KUBE_RUN/kubelet.pid"; then
        local namespaces ns
        namespaces="$(kube_api GET /api/v1/namespaces 2>/dev/null \
            | python3 -c 'import json, sys; print(" ".join(n["metadata"]["name"] for n in json.load(sys.stdin)["items"]))' 2>/dev/null || true)"
        for ns in $namespaces; do
            kube_api DELETE "/api/v1/namespaces/$ns/pods?gracePeriodSeconds=1" >/dev/null 2>&1 || true
        done
        # Until their containers have stopped (the pod objects themselves
        # go only after the kubelet's status sync, up to 10 s later).
        for _ in $(seq 1 30); do
            [ -n "$(kube_our_containers running)" ] || break
            sleep 0.5
        done
    fi
    kube_kill kubelet kubelet 15
    # What the kubelet left (dead containers wait for its garbage collector).
    local ours
    ours="$(kube_our_containers)"
    if [ -n "$ours" ]; then
        # shellcheck disable=SC2086
        docker rm -f $ours >/dev/null 2>&1 || true
    fi
    kube_kill apiserver kube-apiserver 10
    kube_kill etcd etcd 10
    # Secret and emptyDir volumes are mounts under the kubelet's root.
    kube_umount_under "$CC_KUBE_RUN"
    if [ -f "$CC_KUBE_RUN/bridge" ]; then
        local bridge
        bridge="$(cat "$CC_KUBE_RUN/bridge")"
        ! ip link show "$bridge" >/dev/null 2>&1 || ip link del "$bridge" 2>/dev/null || true
        while iptables -D FORWARD -i "$bridge" -o "$bridge" -j ACCEPT \
            -m comment --comment claudecluster-kube-test 2>/dev/null; do :; done
        rm -f "$CC_KUBE_RUN/bridge"
    fi
    if [ -f "$CC_KUBE_RUN/sysctls" ]; then
        local line
        while IFS= read -r line; do
            [ "$(sysctl -n "${line%%=*}" 2>/dev/null)" = "${line#*=}" ] || sysctl -q -w "$line" >/dev/null 2>&1 || true
        done <"$CC_KUBE_RUN/sysctls"
        rm -f "$CC_KUBE_RUN/sysctls"
    fi
    if [ -f "$CC_KUBE_RUN/created-dirs" ]; then
        local d
        while IFS= read -r d; do
            [ -n "$d" ] || continue
            kube_umount_under "$d"
            rm -rf "$d"
        done <"$CC_KUBE_RUN/created-dirs"
        rm -f "$CC_KUBE_RUN/created-dirs"
    fi
    rm -f "$CC_KUBE_RUN/env" "$CC_KUBE_RUN/owner"
    [ -n "$quiet" ] || log "Kubernetes stopped (logs kept in $CC_KUBE_RUN)"
}

# Stops the cluster; with OWNER, only if that shell started it (a watcher
# must not stop a cluster started since by someone else).
kube_stop() {
    local owner="${1:-}"
    mkdir -p "$CC_KUBE_HOME"
    exec 8>"$CC_KUBE_HOME/run.lock"
    flock 8
    if [ -n "$owner" ] && [ "$(cat "$CC_KUBE_RUN/owner" 2>/dev/null)" != "$owner" ]; then
        return 0
    fi
    kube_stop_locked
}

# ------------------------------------------------------------ entry points

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -eEuo pipefail
    shopt -s inherit_errexit
    trap 'echo "kubernetes.sh: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
    case "${1:-start}" in
        start)
            kube_start direct
            cat "$CC_KUBE_RUN/env"
            echo "# stop it with: $CC_KUBE_SCRIPT stop"
            ;;
        __start)  # from a sourcing shell: scripts/lib.sh's ensure_kubernetes
            kube_start "$2"
            ;;
        build)  # only the binaries (and their cache)
            kube_ensure_binaries
            ;;
        stop)
            kube_stop
            ;;
        __stop)  # the watcher of a sourcing shell that has exited
            kube_stop "$2"
            ;;
        *)
            echo "usage: $0 [start|stop|build]" >&2
            exit 2
            ;;
    esac
else
    # Up already in this shell: nothing to do. Set by someone else (a
    # cluster of one's own): used as it is.
    if [ -n "${CLAUDECLUSTER_TEST_KUBECONFIG:-}" ] \
        && { [ "${CC_KUBE_OWNED:-}" != 1 ] || kube_api_up; }; then
        return 0
    fi
    bash "$CC_KUBE_SCRIPT" __start "$$" || return 1
    # shellcheck source=/dev/null
    source "$CC_KUBE_RUN/env" || return 1
    CC_KUBE_OWNED=1
    if [ "$(cat "$CC_KUBE_RUN/owner")" = "$$" ]; then
        # Stops the cluster once the shell that sourced this exits (a
        # watcher rather than an EXIT trap, which the caller may set too).
        (
            set +e
            while kube_proc_live "$$"; do sleep 1; done
            bash "$CC_KUBE_SCRIPT" __stop "$$"
        ) >>"$CC_KUBE_HOME/stop.log" 2>&1 </dev/null 7>&- 8>&- &
        disown
    fi
fi
