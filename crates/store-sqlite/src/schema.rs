//! The database schema and its migrations.
//!
//! `schema_version` holds one row per applied migration; migration `n`
//! (1-based) is `MIGRATIONS[n - 1]`. Migrations only ever get appended, and
//! all pending ones run in a single transaction, so a database is always at
//! exactly one known version. A database from a newer build is refused
//! rather than guessed at.

use crate::backend;
use cc_core::StoreError;
use rusqlite::{Connection, TransactionBehavior};

const V1: &str = "
CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    record_version INTEGER NOT NULL,
    container_id   TEXT,
    state          TEXT NOT NULL,
    reason         TEXT,
    repo_url       TEXT NOT NULL,
    branch         TEXT,
    memory_bytes   INTEGER NOT NULL,
    cpu            REAL NOT NULL,
    timeout_secs   INTEGER NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL,
    last_seq       INTEGER NOT NULL,
    agent_seq      INTEGER NOT NULL
);
CREATE INDEX sessions_state ON sessions(state);
CREATE TABLE events (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
";

/// Access control and audit (issue 4): session owners, API tokens (hashes
/// only) and the hash-chained, append-only audit log.
const V2: &str = "
ALTER TABLE sessions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
CREATE INDEX sessions_owner ON sessions(owner);
CREATE TABLE api_tokens (
    id             TEXT PRIMARY KEY,
    user           TEXT NOT NULL,
    role           TEXT NOT NULL,
    hash           TEXT NOT NULL UNIQUE,
    label          TEXT,
    created_at_ms  INTEGER NOT NULL,
    revoked_at_ms  INTEGER
);
CREATE TABLE audit_log (
    seq             INTEGER PRIMARY KEY,
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
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_rewrite
BEFORE UPDATE OF seq, time, action, session_id, outcome, detail, personal_digest, prev_hash, hash
ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

/// The agent's control surface (issue 8): each session's cost and token
/// totals, as JSON (`{"totals": UsageTotals, "processCostUsd": f64}`; empty
/// for rows written before it).
const V3: &str = "
ALTER TABLE sessions ADD COLUMN usage TEXT NOT NULL DEFAULT '';
";

/// Session lifecycle (issue 5): a live session's secrets, sealed by the
/// core (ChaCha20-Poly1305 under the server key), so a restarted
/// orchestrator can adopt it; deleted when the session ends.
const V4: &str = "
CREATE TABLE session_secrets (
    session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    sealed     BLOB NOT NULL
) WITHOUT ROWID;
";

/// Version 5: each session's egress mode (`none | allowlist | open`).
const V5: &str = "
ALTER TABLE sessions ADD COLUMN egress TEXT NOT NULL DEFAULT 'allowlist';
";

/// Version 6: each session's idle timeout in seconds (`0`: never). NULL
/// for sessions stored before: they follow the server's `--idle-timeout`.
const V6: &str = "
ALTER TABLE sessions ADD COLUMN idle_timeout_secs INTEGER;
";

/// Version 7: leases (see `cc_core::lease`). Each session's owner replica,
/// fencing number and lease expiry (unix ms by the store's clock); the
/// replicas' heartbeats (`held`: a JSON array of session IDs); cluster-wide
/// job locks. Sessions stored before
/// read as unowned (no holder, fence 0, no expiry).
const V7: &str = "
ALTER TABLE sessions ADD COLUMN lease_holder TEXT;
ALTER TABLE sessions ADD COLUMN lease_fence INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN lease_expires_ms INTEGER;
CREATE INDEX sessions_lease_holder ON sessions(lease_holder);
CREATE TABLE replicas (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    held       TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE job_locks (
    job        TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 8: idempotency keys on create (see `cc_core::idempotency`):
/// per user, the request's hash and the session it made (NULL while the
/// create runs).
const V8: &str = "
CREATE TABLE idempotency_keys (
    user          TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    session_id    TEXT,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (user, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at_ms);
";

/// Version 9: webhooks (see `cc_core::webhook`): the endpoints (their
/// secrets sealed) and the delivery queue, `seq` its order.
const V9: &str = "
CREATE TABLE webhook_endpoints (
    id            TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    all_sessions  INTEGER NOT NULL,
    url           TEXT NOT NULL,
    events        TEXT NOT NULL,
    description   TEXT,
    sealed_secret BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE webhook_deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    session_id      TEXT NOT NULL,
    kind            TEXT NOT NULL,
    body            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at_ms   INTEGER NOT NULL,
    next_attempt_ms INTEGER,
    finished_at_ms  INTEGER,
    locked_by       TEXT,
    locked_until_ms INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(state, next_attempt_ms);
CREATE INDEX webhook_deliveries_order ON webhook_deliveries(endpoint_id, session_id, seq);
";

const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Brings the database up to [`SCHEMA_VERSION`].
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend("begin migration"))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY NOT NULL)",
    )
    .map_err(backend("create schema_version"))?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(backend("read schema version"))?;
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
        let version = index + 1;
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Backend(format!("migration to version {version}: {e}")))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [version as i64],
        )
        .map_err(backend("record schema version"))?;
    }
    tx.commit().map_err(backend("commit migration"))
}
