//! The embedded default store: sessions and their event logs in one SQLite
//! file, `<data_dir>/claudecluster.db`.
//!
//! Owns the database file, its schema and migrations (see `schema`). Rows
//! are encoded by [`cc_core::store_codec`], shared with every backend: only
//! our own compact record is stored — one column per field, times as unix
//! milliseconds (truncated toward the past), states as their names; events
//! as the JSON of the [`ServerMessage`] with its `type` tag beside it in
//! `kind`.
//!
//! Invariants:
//! - A session's events are exactly `1..=last_seq`, without gaps or
//!   duplicates. [`Store::append_events`] checks that its batch continues
//!   `last_seq` contiguously and moves the cursor (`last_seq`, and
//!   `agent_seq` when given) in the same transaction as the inserts, so the
//!   cursor and the log never disagree; a bad batch writes nothing.
//! - The cursor is owned by `append_events`: [`Store::update_session`]
//!   overwrites every other field but never `last_seq` / `agent_seq`, so a
//!   stale record cannot move the log's cursor backwards.
//! - [`Store::record_change`] does both in one transaction: a state
//!   change's events and the record (state, usage totals) are written
//!   together or not at all.
//! - Whatever cannot be decoded (unknown state, bad id, unparsable event,
//!   negative counter, unknown record version) is reported as
//!   [`StoreError::Corrupt`], never papered over.
//! - Leases (see `lease` and `cc_core::lease`): [`Store::insert_session`]
//!   writes the record's lease (expiring [`LEASE_TTL`] after the insert
//!   when it names a holder); [`Store::update_session`] and
//!   [`Store::record_change`] never write the lease columns and refuse,
//!   with [`StoreError::Fenced`] and writing nothing, a record whose fence
//!   is older than the stored one. Time is this process's clock.
//! - Errors are classified at the seam: a missing session is
//!   [`StoreError::NotFound`]; a duplicate key or a batch that does not
//!   continue the log is [`StoreError::Conflict`] (see [`classify`]).
//!
//! The backend-neutral behaviour is proven by the `cc-store-conformance`
//! suite, which this crate's tests run.
//!
//! rusqlite is synchronous: the one connection sits behind a mutex and
//! every operation runs on tokio's blocking pool holding it, so no async
//! task ever blocks on SQLite and the mutex is never held across an await.

mod audit;
mod idempotency;
mod identity;
mod lease;
mod schema;
mod webhook;

pub use cc_core::identity::EraseReport;

use cc_core::lease::LEASE_TTL;
use cc_core::store_codec::{
    decode_event, encode_event, to_i64, to_ms, EventRow, RawSession, SessionRow, RECORD_VERSION,
    SESSION_COLUMNS,
};
use cc_core::{SessionId, SessionRecord, Store, StoreError};
use cc_wire::api::{ServerMessage, SessionState};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "claudecluster.db";

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite [`Store`]. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating) `<data_dir>/claudecluster.db`: creates the data
    /// directory (mode 0700 on unix), enables WAL, a busy timeout and
    /// foreign keys, and runs pending migrations.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        create_data_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let conn = Connection::open(&path)
            .map_err(|e| StoreError::Backend(format!("open {}: {e}", path.display())))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(backend("enable WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "{} refused WAL mode (journal_mode is {mode})",
                path.display()
            )));
        }
        Self::setup(conn)
    }

    /// A private in-memory database (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(backend("open in-memory database"))?;
        Self::setup(conn)
    }

    fn setup(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(backend("set busy timeout"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(backend("enable foreign keys"))?;
        schema::migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `op` on the blocking pool with the connection locked.
    async fn run<T, F>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic elsewhere while holding the lock leaves the connection
            // usable (an open transaction was rolled back when it dropped).
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            op(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("{what}: store task failed: {e}")))?
    }
}

#[cfg(unix)]
fn create_data_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::Backend(format!("create data dir {}: {e}", dir.display())))
}

#[cfg(not(unix))]
fn create_data_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Backend(format!("create data dir {}: {e}", dir.display())))
}

/// Wraps a rusqlite error with what we were doing.
pub(crate) fn backend(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| classify(what, e)
}

/// Classifies a rusqlite error at the seam: a duplicate key is a
/// [`StoreError::Conflict`], a row naming a missing parent (a foreign key)
/// is [`StoreError::NotFound`], anything else [`StoreError::Backend`].
pub(crate) fn classify(what: &str, e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi;
    if let rusqlite::Error::SqliteFailure(ref err, _) = e {
        match err.extended_code {
            ffi::SQLITE_CONSTRAINT_PRIMARYKEY | ffi::SQLITE_CONSTRAINT_UNIQUE => {
                return StoreError::Conflict(format!("{what}: already stored"));
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                return StoreError::NotFound(format!("{what}: no such session"));
            }
            _ => {}
        }
    }
    StoreError::Backend(format!("{what}: {e}"))
}

// --- rows ------------------------------------------------------------------

/// Reads a `sessions` row (columns in [`SESSION_COLUMNS`] order).
fn raw_session(r: &Row<'_>) -> rusqlite::Result<RawSession> {
    Ok(RawSession {
        id: r.get(0)?,
        record_version: r.get(1)?,
        container_id: r.get(2)?,
        state: r.get(3)?,
        reason: r.get(4)?,
        repo_url: r.get(5)?,
        branch: r.get(6)?,
        memory_bytes: r.get(7)?,
        cpu: r.get(8)?,
        timeout_secs: r.get(9)?,
        created_at_ms: r.get(10)?,
        updated_at_ms: r.get(11)?,
        expires_at_ms: r.get(12)?,
        last_seq: r.get(13)?,
        agent_seq: r.get(14)?,
        owner: r.get(15)?,
        usage: r.get(16)?,
        egress: r.get(17)?,
        idle_timeout_secs: r.get(18)?,
        lease_holder: r.get(19)?,
        lease_fence: r.get(20)?,
    })
}

// --- the store -------------------------------------------------------------

/// Overwrites every field of the session's row but the log cursor and the
/// lease (see the crate docs), unless the stored fence is newer than the
/// record's; inside whatever transaction `conn` is in.
fn write_record(conn: &Connection, id: &SessionId, row: &SessionRow) -> Result<(), StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE sessions SET record_version = ?2, container_id = ?3, state = ?4, \
             reason = ?5, repo_url = ?6, branch = ?7, memory_bytes = ?8, cpu = ?9, \
             timeout_secs = ?10, created_at_ms = ?11, updated_at_ms = ?12, \
             expires_at_ms = ?13, owner = ?14, usage = ?15, egress = ?16, \
             idle_timeout_secs = ?17 \
             WHERE id = ?1 AND lease_fence <= ?18",
        )
        .and_then(|mut st| {
            st.execute(params![
                id.as_str(),
                RECORD_VERSION,
                row.container_id,
                row.state,
                row.reason,
                row.repo_url,
                row.branch,
                row.memory_bytes,
                row.cpu,
                row.timeout_secs,
                row.created_at_ms,
                row.updated_at_ms,
                row.expires_at_ms,
                row.owner,
                row.usage,
                row.egress,
                row.idle_timeout_secs,
                row.lease_fence,
            ])
        })
        .map_err(|e| StoreError::Backend(format!("update session {id}: {e}")))?;
    if changed == 0 {
        let stored: Option<i64> = conn
            .query_row(
                "SELECT lease_fence FROM sessions WHERE id = ?1",
                [id.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| StoreError::Backend(format!("update session {id}: {e}")))?;
        return Err(refused(id, row.lease_fence, stored));
    }
    Ok(())
}

/// Why a session write changed no row: the session is missing, or the
/// stored fence (`stored`) is newer than the writer's (`mine`).
fn refused(id: &SessionId, mine: i64, stored: Option<i64>) -> StoreError {
    match stored {
        None => StoreError::NotFound(format!("update session {id}: no such session")),
        Some(stored) => StoreError::Fenced(format!(
            "update session {id}: fence {mine} is older than the stored {stored}; \
             nothing was written"
        )),
    }
}

/// The store's clock as unix milliseconds: this process's, as one
/// machine owns the database file.
pub(crate) fn now_ms() -> i64 {
    to_ms("now", SystemTime::now()).unwrap_or(i64::MAX)
}

/// A lease length in milliseconds, saturating (a lease of 290 million
/// years is as good as forever).
pub(crate) fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Checks that `rows` continue the session's `last_seq` contiguously,
/// inserts them and moves the cursor; inside the caller's transaction, so
/// an error writes nothing once the caller drops it.
fn append_rows(
    tx: &Connection,
    id: &SessionId,
    rows: &[EventRow],
    agent_seq: Option<i64>,
) -> Result<(), StoreError> {
    let sql_fail = |e: rusqlite::Error| classify(&format!("append events to {id}"), e);
    let last: Option<i64> = tx
        .query_row(
            "SELECT last_seq FROM sessions WHERE id = ?1",
            [id.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_fail)?;
    let last = last
        .ok_or_else(|| StoreError::NotFound(format!("append events to {id}: no such session")))?;
    let last = u64::try_from(last)
        .map_err(|_| StoreError::Corrupt(format!("session {id}: negative last_seq {last}")))?;
    let mut expected = last + 1;
    for row in rows {
        if row.seq != expected {
            return Err(StoreError::Conflict(format!(
                "append events to {id}: event seq {} where {expected} was expected \
                 (last_seq {last}); nothing was written",
                row.seq
            )));
        }
        expected += 1;
    }
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO events (session_id, seq, kind, payload) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(sql_fail)?;
    for row in rows {
        let seq = to_i64("seq", row.seq)?;
        insert
            .execute(params![id.as_str(), seq, row.kind, row.payload])
            .map_err(|e| classify(&format!("append events to {id}: insert event {seq}"), e))?;
    }
    let new_last = to_i64("last_seq", expected - 1)?;
    tx.execute(
        "UPDATE sessions SET last_seq = ?2, agent_seq = COALESCE(?3, agent_seq) \
         WHERE id = ?1",
        params![id.as_str(), new_last, agent_seq],
    )
    .map_err(sql_fail)?;
    Ok(())
}

impl Store for SqliteStore {
    async fn insert_session(&self, rec: &SessionRecord) -> Result<(), StoreError> {
        let id = rec.id.clone();
        let row = SessionRow::encode(rec)?;
        self.run("insert session", move |conn| {
            // A replica creating a session holds its lease from the insert.
            let lease_expires = row
                .lease_holder
                .as_ref()
                .map(|_| now_ms().saturating_add(ttl_ms(LEASE_TTL)));
            let sql = format!(
                "INSERT INTO sessions ({SESSION_COLUMNS}, lease_expires_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                 ?17, ?18, ?19, ?20, ?21, ?22)"
            );
            conn.prepare_cached(&sql)
                .and_then(|mut st| {
                    st.execute(params![
                        id.as_str(),
                        RECORD_VERSION,
                        row.container_id,
                        row.state,
                        row.reason,
                        row.repo_url,
                        row.branch,
                        row.memory_bytes,
                        row.cpu,
                        row.timeout_secs,
                        row.created_at_ms,
                        row.updated_at_ms,
                        row.expires_at_ms,
                        row.last_seq,
                        row.agent_seq,
                        row.owner,
                        row.usage,
                        row.egress,
                        row.idle_timeout_secs,
                        row.lease_holder,
                        row.lease_fence,
                        lease_expires,
                    ])
                })
                .map_err(|e| classify(&format!("insert session {id}"), e))?;
            Ok(())
        })
        .await
    }

    async fn update_session(&self, rec: &SessionRecord) -> Result<(), StoreError> {
        let id = rec.id.clone();
        let row = SessionRow::encode(rec)?;
        self.run("update session", move |conn| write_record(conn, &id, &row))
            .await
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let id = id.clone();
        let raw = self
            .run("get session", move |conn| {
                let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1");
                conn.prepare_cached(&sql)
                    .and_then(|mut st| st.query_row([id.as_str()], raw_session).optional())
                    .map_err(|e| StoreError::Backend(format!("get session {id}: {e}")))
            })
            .await?;
        raw.map(RawSession::decode).transpose()
    }

    async fn list_sessions(&self, live_only: bool) -> Result<Vec<SessionRecord>, StoreError> {
        let raws = self
            .run("list sessions", move |conn| {
                let filter = if live_only {
                    "WHERE state NOT IN ('terminated', 'error')"
                } else {
                    ""
                };
                // rowid breaks ties between sessions created the same millisecond.
                let sql = format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions {filter} \
                     ORDER BY created_at_ms DESC, rowid DESC"
                );
                conn.prepare_cached(&sql)
                    .and_then(|mut st| {
                        st.query_map([], raw_session)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(backend("list sessions"))
            })
            .await?;
        raws.into_iter().map(RawSession::decode).collect()
    }

    async fn sessions_in_state(
        &self,
        state: SessionState,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let raws = self
            .run("list sessions by state", move |conn| {
                let sql = format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE state = ?1 \
                     ORDER BY created_at_ms DESC, rowid DESC"
                );
                conn.prepare_cached(&sql)
                    .and_then(|mut st| {
                        st.query_map([state.as_str()], raw_session)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(backend("list sessions by state"))
            })
            .await?;
        raws.into_iter().map(RawSession::decode).collect()
    }

    async fn append_events(
        &self,
        id: &SessionId,
        events: &[ServerMessage],
        agent_seq: Option<u64>,
    ) -> Result<(), StoreError> {
        let rows = events
            .iter()
            .map(|ev| encode_event(id, ev))
            .collect::<Result<Vec<_>, _>>()?;
        let agent_seq = agent_seq.map(|s| to_i64("agent_seq", s)).transpose()?;
        let id = id.clone();
        self.run("append events", move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| StoreError::Backend(format!("append events to {id}: {e}")))?;
            append_rows(&tx, &id, &rows, agent_seq)?;
            tx.commit()
                .map_err(|e| StoreError::Backend(format!("append events to {id}: {e}")))
        })
        .await
    }

    async fn record_change(
        &self,
        rec: &SessionRecord,
        events: &[ServerMessage],
        agent_seq: Option<u64>,
    ) -> Result<(), StoreError> {
        let id = rec.id.clone();
        let row = SessionRow::encode(rec)?;
        let rows = events
            .iter()
            .map(|ev| encode_event(&id, ev))
            .collect::<Result<Vec<_>, _>>()?;
        let agent_seq = agent_seq.map(|s| to_i64("agent_seq", s)).transpose()?;
        self.run("record a state change", move |conn| {
            let fail = |e: rusqlite::Error| {
                StoreError::Backend(format!("record a state change of {id}: {e}"))
            };
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            // The record first: a fenced or missing session refuses the
            // change before any event is looked at.
            write_record(&tx, &id, &row)?;
            append_rows(&tx, &id, &rows, agent_seq)?;
            tx.commit().map_err(fail)
        })
        .await
    }

    async fn events(
        &self,
        id: &SessionId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<ServerMessage>, StoreError> {
        // No stored seq exceeds i64::MAX, so a larger `since` matches nothing.
        let Ok(since) = i64::try_from(since) else {
            return Ok(Vec::new());
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let key = id.clone();
        let rows = self
            .run("read events", move |conn| {
                conn.prepare_cached(
                    "SELECT seq, payload FROM events \
                     WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )
                .and_then(|mut st| {
                    st.query_map(params![key.as_str(), since, limit], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(|e| StoreError::Backend(format!("read events of {key}: {e}")))
            })
            .await?;
        rows.iter()
            .map(|(seq, payload)| decode_event(id, *seq, payload))
            .collect()
    }

    async fn put_sealed_secrets(&self, id: &SessionId, sealed: &[u8]) -> Result<(), StoreError> {
        let key = id.clone();
        let sealed = sealed.to_vec();
        self.run("store sealed secrets", move |conn| {
            conn.execute(
                "INSERT INTO session_secrets (session_id, sealed) VALUES (?1, ?2) \
                 ON CONFLICT(session_id) DO UPDATE SET sealed = excluded.sealed",
                params![key.as_str(), sealed],
            )
            .map(drop)
            .map_err(|e| classify(&format!("store sealed secrets of {key}"), e))
        })
        .await
    }

    async fn sealed_secrets(&self, id: &SessionId) -> Result<Option<Vec<u8>>, StoreError> {
        let key = id.clone();
        self.run("read sealed secrets", move |conn| {
            conn.query_row(
                "SELECT sealed FROM session_secrets WHERE session_id = ?1",
                [key.as_str()],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
            .map_err(|e| StoreError::Backend(format!("read sealed secrets of {key}: {e}")))
        })
        .await
    }

    async fn delete_sealed_secrets(&self, id: &SessionId) -> Result<(), StoreError> {
        let key = id.clone();
        self.run("delete sealed secrets", move |conn| {
            conn.execute(
                "DELETE FROM session_secrets WHERE session_id = ?1",
                [key.as_str()],
            )
            .map(drop)
            .map_err(|e| StoreError::Backend(format!("delete sealed secrets of {key}: {e}")))
        })
        .await
    }

    async fn purge_logs_before(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
        let cutoff = to_ms("cutoff", cutoff)?;
        self.run("purge logs", move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM events WHERE session_id IN \
                     (SELECT id FROM sessions WHERE state IN ('terminated', 'error') \
                      AND updated_at_ms < ?1)",
                    [cutoff],
                )
                .map_err(backend("purge logs"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn erase_owner_sessions(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.run("erase sessions", move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend("begin erase"))?;
            let live: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM sessions WHERE owner = ?1 \
                     AND state NOT IN ('terminated', 'error')",
                    [&owner],
                    |r| r.get(0),
                )
                .map_err(backend("count live sessions"))?;
            if live > 0 {
                return Err(StoreError::Conflict(format!(
                    "{owner} has {live} live sessions; delete them first"
                )));
            }
            // Events and secrets go with their session (ON DELETE CASCADE).
            let n = tx
                .execute("DELETE FROM sessions WHERE owner = ?1", [&owner])
                .map_err(backend("delete sessions"))?;
            tx.commit().map_err(backend("commit erase"))?;
            Ok(n as u64)
        })
        .await
    }
}
