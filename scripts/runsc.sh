# gVisor for the tests: Debian's runsc, registered with the local Docker
# Engine as the runtime `runsc` (sourced by scripts/lib.sh).
# shellcheck shell=bash
#
# Docker learns runtimes from the `runtimes` key of /etc/docker/daemon.json
# and reloads that key on SIGHUP, without restarting the engine or its
# containers. The key is merged into the file (never overwriting it), and
# `restore_docker_runtimes` puts the file back as it was.

DOCKER_DAEMON_JSON=/etc/docker/daemon.json
# gVisor's own netstack cannot start on these machines; `--network=host`
# uses the network namespace Docker made for the container, so per-session
# networks still apply. No `--oci-seccomp`: gVisor's kernel answers the
# session's calls itself (ptrace, io_uring, keyrings are gVisor's own
# emulations, not the host's), and with the profile loaded inside the
# sandbox too, Claude Code's runtime (Bun) aborts at start here.
RUNSC_ARGS='["--platform=ptrace", "--network=host"]'

docker_knows_runsc() {
    docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'
}

reload_docker() {
    local pid
    pid="$(pidof dockerd || true)"
    if [ -z "$pid" ]; then
        echo "dockerd is not running here: cannot reload its runtimes" >&2
        return 1
    fi
    kill -HUP "$pid"
}

# Installs runsc and registers it; sets RUNSC_BACKUP when the file was
# changed, so restore_docker_runtimes can undo it.
ensure_runsc() {
    if docker_knows_runsc; then
        return 0
    fi
    if ! command -v runsc >/dev/null; then
        log "installing runsc (gVisor)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runsc >/dev/null
    fi
    log "registering runsc with Docker"
    RUNSC_BACKUP="$(mktemp)"
    if [ -f "$DOCKER_DAEMON_JSON" ]; then
        cp -p "$DOCKER_DAEMON_JSON" "$RUNSC_BACKUP"
    else
        : >"$RUNSC_BACKUP"
        mkdir -p "$(dirname "$DOCKER_DAEMON_JSON")"
    fi
    python3 - "$DOCKER_DAEMON_JSON" "$(command -v runsc)" "$RUNSC_ARGS" <<'PY'
import json, os, sys
path, runsc, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
config = {}
if os.path.exists(path) and os.path.getsize(path) > 0:
    with open(path) as f:
        config = json.load(f)
config.setdefault("runtimes", {})["runsc"] = {"path": runsc, "runtimeArgs": args}
with open(path + ".cc-new", "w") as f:
    json.dump(config, f, indent=2)
os.replace(path + ".cc-new", path)
PY
    reload_docker
    for _ in $(seq 1 50); do
        docker_knows_runsc && return 0
        sleep 0.2
    done
    echo "Docker did not pick up the runsc runtime after a reload; see $DOCKER_DAEMON_JSON" >&2
    return 1
}

# Puts daemon.json back as ensure_runsc found it. Docker keeps the runtimes
# it knows when a reloaded file has no `runtimes` key, so the runtime is
# first dropped with an empty key, then the original file returns.
restore_docker_runtimes() {
    [ -n "${RUNSC_BACKUP:-}" ] || return 0
    python3 - "$DOCKER_DAEMON_JSON" <<'PY'
import json, sys
path = sys.argv[1]
with open(path) as f:
    config = json.load(f)
config.get("runtimes", {}).pop("runsc", None)
with open(path, "w") as f:
    json.dump(config, f, indent=2)
PY
    reload_docker || true
    sleep 1
    if [ -s "$RUNSC_BACKUP" ]; then
        cp -p "$RUNSC_BACKUP" "$DOCKER_DAEMON_JSON"
    else
        rm -f "$DOCKER_DAEMON_JSON"
    fi
    reload_docker || true
    rm -f "$RUNSC_BACKUP"
    RUNSC_BACKUP=
}
