#!/bin/sh
# First start: a cluster whose only password-less access is the local
# socket of the `postgres` user; the `claudecluster` role logs in over
# loopback TCP with POSTGRES_PASSWORD (scram-sha-256).
set -eu
bin=/usr/lib/postgresql/15/bin
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    "$bin/initdb" -D "$PGDATA" --auth-local=peer --auth-host=scram-sha-256 -U postgres >/dev/null
    "$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    psql -v ON_ERROR_STOP=1 -v pw="$POSTGRES_PASSWORD" -d postgres >/dev/null <<'SQL'
CREATE ROLE claudecluster LOGIN PASSWORD :'pw';
CREATE DATABASE claudecluster OWNER claudecluster;
SQL
    "$bin/pg_ctl" -D "$PGDATA" -w stop >/dev/null
fi
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses=127.0.0.1 -c port=5432
