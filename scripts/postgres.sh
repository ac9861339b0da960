#!/usr/bin/env bash
# A private PostgreSQL cluster for the tests: Debian's `postgresql`
# (installed when missing), a fresh cluster in a temporary directory on a
# free loopback port, started with initdb + pg_ctl as the `postgres` user,
# never the system service, so an existing cluster is never touched.
# Exports CLAUDECLUSTER_TEST_DATABASE_URL (a database made for the run).
#
# Sourced (scripts/lib.sh's ensure_postgres): the cluster is stopped and its
# directory removed when the sourcing shell exits. Run directly: prints the
# variable to export and how to stop the cluster.
# shellcheck shell=bash

start_private_postgres() {
    if [ -n "${CLAUDECLUSTER_TEST_DATABASE_URL:-}" ]; then
        return 0
    fi
    if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "PostgreSQL is missing: apt-get install postgresql, then run again" >&2
            return 1
        fi
        echo "installing postgresql" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    local bin dir port as=()
    bin="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    dir="$(mktemp -d /tmp/cc-postgres.XXXXXX)"
    if [ "$(id -u)" -eq 0 ]; then
        # initdb refuses to run as root.
        chown postgres: "$dir"
        as=(runuser -u postgres --)
    fi
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; return 1; }
    # fsync off: a test cluster that is thrown away needs no durability.
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -s \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start \
        || { cat "$dir/server.log" >&2; return 1; }
    "${as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres claudecluster_test
    export CLAUDECLUSTER_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/claudecluster_test"
    CC_POSTGRES_STOP="${as[*]} $bin/pg_ctl -D $dir/data -m fast -s stop; rm -rf $dir"
    echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)" >&2
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    start_private_postgres
    echo "export CLAUDECLUSTER_TEST_DATABASE_URL=$CLAUDECLUSTER_TEST_DATABASE_URL"
    echo "# stop it with: $CC_POSTGRES_STOP"
else
    start_private_postgres || return 1
    if [ -n "${CC_POSTGRES_STOP:-}" ]; then
        # Stops the cluster once the shell that sourced this exits (a
        # watcher rather than an EXIT trap, which the caller may set too).
        (
            while kill -0 "$$" 2>/dev/null; do sleep 1; done
            eval "$CC_POSTGRES_STOP"
        ) >/dev/null 2>&1 &
        disown
    fi
fi
