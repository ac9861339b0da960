//! The database schema and its migrations.
//!
//! `schema_version` holds one row per applied migration; migration `n`
//! (1-based) is `MIGRATIONS[n - 1]`. Migrations only ever get appended, and
//! all pending ones run in a single transaction under a transaction-level
//! advisory lock, so replicas starting together migrate once and a database
//! is always at exactly one known version. A database from a newer build is
//! refused rather than guessed at.
//!
//! Columns mirror the SQLite store's (see `cc_core::store_codec`), as
//! `BIGINT` / `DOUBLE PRECISION` / `TEXT` / `BYTEA`; `ord` columns
//! (identity) break ties the way SQLite's `rowid` does.

use crate::pg_error;
use cc_core::StoreError;
use tokio_postgres::{Client, Transaction};

/// Key of the advisory lock migrations hold (any constant shared by every
/// build; "ccschema" in ASCII).
const MIGRATION_LOCK: i64 = 0x6363_7363_6865_6d61;

const V1: &str = "
CREATE TABLE sessions (
    id                TEXT PRIMARY KEY,
    ord               BIGINT GENERATED ALWAYS AS IDENTITY,
    record_version    BIGINT NOT NULL,
    container_id      TEXT,
    state             TEXT NOT NULL,
    reason            TEXT,
    repo_url          TEXT NOT NULL,
    branch            TEXT,
    memory_bytes      BIGINT NOT NULL,
    cpu               DOUBLE PRECISION NOT NULL,
    timeout_secs      BIGINT NOT NULL,
    created_at_ms     BIGINT NOT NULL,
    updated_at_ms     BIGINT NOT NULL,
    expires_at_ms     BIGINT NOT NULL,
    last_seq          BIGINT NOT NULL,
    agent_seq         BIGINT NOT NULL,
    owner             TEXT NOT NULL,
    usage             TEXT NOT NULL,
    egress            TEXT NOT NULL,
    idle_timeout_secs BIGINT
);
CREATE INDEX sessions_state ON sessions(state);
CREATE INDEX sessions_owner ON sessions(owner);
CREATE TABLE events (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE TABLE session_secrets (
    session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    sealed     BYTEA NOT NULL
);
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    ord           BIGINT GENERATED ALWAYS AS IDENTITY,
    user_name     TEXT NOT NULL,
    role          TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    label         TEXT,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens(user_name);
CREATE TABLE audit_log (
    seq             BIGINT PRIMARY KEY,
    time            TEXT NOT NULL,
    actor           TEXT NOT NULL,
    source_ip       TEXT,
    action          TEXT NOT NULL,
    session_id      TEXT,
    outcome         TEXT NOT NULL,
    detail          TEXT,
    nonce           TEXT,
    personal_digest TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE INDEX audit_actor ON audit_log(actor);
CREATE INDEX audit_session ON audit_log(session_id);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_rewrite
    BEFORE UPDATE OF seq, time, action, session_id, outcome, detail, personal_digest, prev_hash, hash
    ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
";

/// Version 2: leases (see `cc_core::lease`). Each session's owner replica,
/// fencing number and lease expiry (unix ms by the database's clock); the
/// replicas' heartbeats (`held`: a JSON array of session IDs); cluster-wide
/// job locks. Sessions stored before read as unowned (no holder, fence 0,
/// no expiry).
const V2: &str = "
ALTER TABLE sessions ADD COLUMN lease_holder TEXT;
ALTER TABLE sessions ADD COLUMN lease_fence BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN lease_expires_ms BIGINT;
CREATE INDEX sessions_lease_holder ON sessions(lease_holder);
CREATE TABLE replicas (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    held       TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE TABLE job_locks (
    job        TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
";

/// Version 3: idempotency keys on create (see `cc_core::idempotency`):
/// per user, the request's hash and the session it made (NULL while the
/// create runs).
const V3: &str = "
CREATE TABLE idempotency_keys (
    user_name     TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    session_id    TEXT,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_name, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at_ms);
";

/// Version 4: webhooks (see `cc_core::webhook`): the endpoints (their
/// secrets sealed) and the delivery queue, `seq` its order.
const V4: &str = "
CREATE TABLE webhook_endpoints (
    id            TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    all_sessions  BOOLEAN NOT NULL,
    url           TEXT NOT NULL,
    events        TEXT NOT NULL,
    description   TEXT,
    sealed_secret BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE webhook_deliveries (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    session_id      TEXT NOT NULL,
    kind            TEXT NOT NULL,
    body            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at_ms   BIGINT NOT NULL,
    next_attempt_ms BIGINT,
    finished_at_ms  BIGINT,
    locked_by       TEXT,
    locked_until_ms BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(state, next_attempt_ms);
CREATE INDEX webhook_deliveries_order ON webhook_deliveries(endpoint_id, session_id, seq);
";

const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Brings the database up to [`SCHEMA_VERSION`]. On failure the
/// transaction is rolled back before returning, so the migration lock is
/// never left held by a connection that is about to be dropped.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(pg_error("begin migration"))?;
    match apply(&tx).await {
        Ok(()) => tx.commit().await.map_err(pg_error("commit migration")),
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn apply(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error("lock for migration"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY NOT NULL)",
    )
    .await
    .map_err(pg_error("create schema_version"))?;
    let current: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await
        .map_err(pg_error("read schema version"))?
        .get(0);
    let current = usize::try_from(current).map_err(|_| {
        StoreError::Corrupt(format!("schema_version holds a negative version {current}"))
    })?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the database is at schema version {current}, newer than this build \
             supports ({SCHEMA_VERSION}); upgrade ClaudeCluster"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = index as i64 + 1;
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError::Backend(format!("migration to version {version}: {e}")))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(pg_error("record schema version"))?;
    }
    Ok(())
}
