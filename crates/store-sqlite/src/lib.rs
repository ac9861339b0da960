//! The embedded default store: sessions and their event logs in one SQLite
//! file, `<data_dir>/claudecluster.db`.
//!
//! Owns the database file, its schema and migrations (see `schema`), and the
//! mapping between [`SessionRecord`] / [`ServerMessage`] and rows. Only our
//! own compact record is stored — one column per field, times as unix
//! milliseconds (truncated toward the past), states as
//! [`SessionState::as_str`]; events as the JSON of the [`ServerMessage`]
//! with its `type` tag beside it in `kind`.
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
//! - Whatever cannot be decoded (unknown state, bad id, unparsable event,
//!   negative counter, unknown record version) is reported as
//!   [`StoreError::Corrupt`], never papered over.
//!
//! rusqlite is synchronous: the one connection sits behind a mutex and
//! every operation runs on tokio's blocking pool holding it, so no async
//! task ever blocks on SQLite and the mutex is never held across an await.

mod audit;
mod identity;
mod schema;

pub use identity::EraseReport;

use cc_core::{SessionId, SessionRecord, Store, StoreError};
use cc_wire::api::{EgressMode, ServerMessage, SessionLimits, SessionState};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    move |e| StoreError::Backend(format!("{what}: {e}"))
}

// --- encoding --------------------------------------------------------------

/// A session record as its columns (everything except `id`).
struct SessionRow {
    container_id: Option<String>,
    state: &'static str,
    reason: Option<String>,
    repo_url: String,
    branch: Option<String>,
    memory_bytes: i64,
    cpu: f64,
    timeout_secs: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
    expires_at_ms: i64,
    last_seq: i64,
    agent_seq: i64,
    owner: String,
    usage: String,
    egress: String,
    idle_timeout_secs: Option<i64>,
}

impl SessionRow {
    fn encode(rec: &SessionRecord) -> Result<Self, StoreError> {
        Ok(Self {
            container_id: rec.container_id.clone(),
            state: rec.state.as_str(),
            reason: rec.reason.clone(),
            repo_url: rec.repo_url.clone(),
            branch: rec.branch.clone(),
            memory_bytes: to_i64("memory_bytes", rec.limits.memory_bytes)?,
            cpu: rec.limits.cpu,
            timeout_secs: to_i64("timeout_secs", rec.limits.timeout_secs)?,
            created_at_ms: to_ms("created_at", rec.created_at)?,
            updated_at_ms: to_ms("updated_at", rec.updated_at)?,
            expires_at_ms: to_ms("expires_at", rec.expires_at)?,
            last_seq: to_i64("last_seq", rec.last_seq)?,
            agent_seq: to_i64("agent_seq", rec.agent_seq)?,
            owner: rec.owner.clone(),
            usage: encode_usage(&rec.usage)?,
            egress: rec.limits.egress.as_str().to_owned(),
            idle_timeout_secs: rec
                .limits
                .idle_timeout_secs
                .map(|s| to_i64("idle_timeout_secs", s))
                .transpose()?,
        })
    }
}

/// A session's usage as the `usage` column holds it.
fn encode_usage(u: &cc_core::SessionUsage) -> Result<String, StoreError> {
    let totals = serde_json::to_value(u.totals)
        .map_err(|e| StoreError::Backend(format!("encode usage: {e}")))?;
    Ok(serde_json::json!({
        "totals": totals,
        "processCostUsd": u.process_cost_usd,
        "oomKills": u.oom_kills,
    })
    .to_string())
}

/// The stored usage; a spend that is negative (as a forged cost left it
/// before spend was measured by the gateway) reads as 0, so it cannot keep
/// a budget open.
fn decode_usage(s: &str) -> Result<cc_core::SessionUsage, String> {
    if s.is_empty() {
        return Ok(cc_core::SessionUsage::default());
    }
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| format!("usage: {e}"))?;
    let mut totals: cc_wire::api::UsageTotals =
        serde_json::from_value(v["totals"].clone()).map_err(|e| format!("usage: {e}"))?;
    let sound = |c: f64| if c.is_finite() && c >= 0.0 { c } else { 0.0 };
    totals.cost_usd = sound(totals.cost_usd);
    Ok(cc_core::SessionUsage {
        totals,
        process_cost_usd: sound(v["processCostUsd"].as_f64().unwrap_or(0.0)),
        oom_kills: v["oomKills"].as_u64().unwrap_or(0),
    })
}

fn to_i64(field: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v)
        .map_err(|_| StoreError::Backend(format!("{field} {v} is beyond what the store holds")))
}

/// Unix milliseconds, truncated toward the past.
fn to_ms(field: &str, t: SystemTime) -> Result<i64, StoreError> {
    let ms = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).ok(),
        Err(before) => {
            let d = before.duration();
            let whole = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
            i64::try_from(whole).ok().map(|m| -m)
        }
    };
    ms.ok_or_else(|| StoreError::Backend(format!("{field} is beyond what the store holds")))
}

fn from_ms(ms: i64) -> Option<SystemTime> {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    }
}

/// A `sessions` row as read, before validation.
struct RawSession {
    id: String,
    record_version: i64,
    container_id: Option<String>,
    state: String,
    reason: Option<String>,
    repo_url: String,
    branch: Option<String>,
    memory_bytes: i64,
    cpu: f64,
    timeout_secs: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
    expires_at_ms: i64,
    last_seq: i64,
    agent_seq: i64,
    owner: String,
    usage: String,
    egress: String,
    idle_timeout_secs: Option<i64>,
}

const SESSION_COLUMNS: &str = "id, record_version, container_id, state, reason, repo_url, \
     branch, memory_bytes, cpu, timeout_secs, created_at_ms, updated_at_ms, expires_at_ms, \
     last_seq, agent_seq, owner, usage, egress, idle_timeout_secs";

impl RawSession {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
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
        })
    }

    fn decode(self) -> Result<SessionRecord, StoreError> {
        let name = self.id;
        let corrupt = |what: String| StoreError::Corrupt(format!("session {name}: {what}"));
        if self.record_version != schema::RECORD_VERSION {
            return Err(corrupt(format!(
                "record version {} is not {}",
                self.record_version,
                schema::RECORD_VERSION
            )));
        }
        let id = SessionId::parse(&name).ok_or_else(|| corrupt("malformed id".into()))?;
        let state = SessionState::parse(&self.state)
            .ok_or_else(|| corrupt(format!("unknown state {:?}", self.state)))?;
        let count = |field: &str, v: i64| {
            u64::try_from(v).map_err(|_| corrupt(format!("negative {field} {v}")))
        };
        let time = |field: &str, ms: i64| {
            from_ms(ms).ok_or_else(|| corrupt(format!("{field} {ms} ms is out of range")))
        };
        Ok(SessionRecord {
            id,
            container_id: self.container_id,
            state,
            reason: self.reason,
            repo_url: self.repo_url,
            branch: self.branch,
            limits: SessionLimits {
                memory_bytes: count("memory_bytes", self.memory_bytes)?,
                cpu: self.cpu,
                timeout_secs: count("timeout_secs", self.timeout_secs)?,
                egress: EgressMode::parse(&self.egress)
                    .ok_or_else(|| corrupt(format!("unknown egress mode {:?}", self.egress)))?,
                idle_timeout_secs: self
                    .idle_timeout_secs
                    .map(|s| count("idle_timeout_secs", s))
                    .transpose()?,
            },
            created_at: time("created_at", self.created_at_ms)?,
            updated_at: time("updated_at", self.updated_at_ms)?,
            expires_at: time("expires_at", self.expires_at_ms)?,
            last_seq: count("last_seq", self.last_seq)?,
            agent_seq: count("agent_seq", self.agent_seq)?,
            owner: self.owner,
            usage: decode_usage(&self.usage).map_err(corrupt)?,
        })
    }
}

/// An event ready to insert: `(seq, kind, payload)`.
struct EventRow {
    seq: u64,
    kind: String,
    payload: String,
}

fn encode_event(id: &SessionId, ev: &ServerMessage) -> Result<EventRow, StoreError> {
    let value = serde_json::to_value(ev)
        .map_err(|e| StoreError::Backend(format!("encode event for session {id}: {e}")))?;
    let kind = value
        .get("type")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| {
            StoreError::Backend(format!("event for session {id} encodes without a type tag"))
        })?
        .to_owned();
    Ok(EventRow {
        seq: ev.seq(),
        kind,
        payload: value.to_string(),
    })
}

fn decode_event(id: &SessionId, seq: i64, payload: &str) -> Result<ServerMessage, StoreError> {
    let corrupt = |e: serde_json::Error| {
        StoreError::Corrupt(format!("session {id} event {seq}: unparsable payload: {e}"))
    };
    let value: serde_json::Value = serde_json::from_str(payload).map_err(corrupt)?;
    let ev: ServerMessage = serde_json::from_value(legacy_event(value)).map_err(corrupt)?;
    if i64::try_from(ev.seq()).ok() != Some(seq) {
        return Err(StoreError::Corrupt(format!(
            "session {id} event {seq}: payload carries seq {}",
            ev.seq()
        )));
    }
    Ok(ev)
}

/// Events written before the stream took the seed's `{type, data}`
/// envelope held their fields beside `type`, with RFC 3339 timestamps; they
/// are read as the envelope they would be now. Current payloads pass as
/// they are.
fn legacy_event(mut value: serde_json::Value) -> serde_json::Value {
    let Some(obj) = value.as_object_mut() else {
        return value;
    };
    if obj.contains_key("data") {
        return value;
    }
    let ty = obj.remove("type").unwrap_or_default();
    if let Some(ts) = obj.get("timestamp").and_then(|t| t.as_str()) {
        let ms = cc_core::rfc3339_to_ms(ts).unwrap_or(0);
        obj.insert("timestamp".into(), ms.into());
    }
    serde_json::json!({ "type": ty, "data": std::mem::take(obj) })
}

// --- the store -------------------------------------------------------------

impl Store for SqliteStore {
    async fn insert_session(&self, rec: &SessionRecord) -> Result<(), StoreError> {
        let id = rec.id.clone();
        let row = SessionRow::encode(rec)?;
        self.run("insert session", move |conn| {
            let sql = format!(
                "INSERT INTO sessions ({SESSION_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
            );
            conn.prepare_cached(&sql)
                .and_then(|mut st| {
                    st.execute(params![
                        id.as_str(),
                        schema::RECORD_VERSION,
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
                    ])
                })
                .map_err(|e| StoreError::Backend(format!("insert session {id}: {e}")))?;
            Ok(())
        })
        .await
    }

    async fn update_session(&self, rec: &SessionRecord) -> Result<(), StoreError> {
        let id = rec.id.clone();
        let row = SessionRow::encode(rec)?;
        self.run("update session", move |conn| {
            // last_seq / agent_seq belong to append_events (see the crate docs).
            let changed = conn
                .prepare_cached(
                    "UPDATE sessions SET record_version = ?2, container_id = ?3, state = ?4, \
                     reason = ?5, repo_url = ?6, branch = ?7, memory_bytes = ?8, cpu = ?9, \
                     timeout_secs = ?10, created_at_ms = ?11, updated_at_ms = ?12, \
                     expires_at_ms = ?13, owner = ?14, usage = ?15, egress = ?16, \
                     idle_timeout_secs = ?17 \
                     WHERE id = ?1",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        id.as_str(),
                        schema::RECORD_VERSION,
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
                    ])
                })
                .map_err(|e| StoreError::Backend(format!("update session {id}: {e}")))?;
            if changed == 0 {
                return Err(StoreError::Backend(format!(
                    "update session {id}: no such session"
                )));
            }
            Ok(())
        })
        .await
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let id = id.clone();
        let raw = self
            .run("get session", move |conn| {
                let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1");
                conn.prepare_cached(&sql)
                    .and_then(|mut st| st.query_row([id.as_str()], RawSession::from_row).optional())
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
                        st.query_map([], RawSession::from_row)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(backend("list sessions"))
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
            let fail = |what: &str| StoreError::Backend(format!("append events to {id}: {what}"));
            let sql_fail = |e: rusqlite::Error| fail(&e.to_string());
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_fail)?;
            let last: Option<i64> = tx
                .query_row(
                    "SELECT last_seq FROM sessions WHERE id = ?1",
                    [id.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_fail)?;
            let last = last.ok_or_else(|| fail("no such session"))?;
            let last = u64::try_from(last).map_err(|_| {
                StoreError::Corrupt(format!("session {id}: negative last_seq {last}"))
            })?;
            let mut expected = last + 1;
            for row in &rows {
                if row.seq != expected {
                    return Err(fail(&format!(
                        "event seq {} where {expected} was expected (last_seq {last}); \
                         nothing was written",
                        row.seq
                    )));
                }
                expected += 1;
            }
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO events (session_id, seq, kind, payload) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(sql_fail)?;
                for row in &rows {
                    let seq = to_i64("seq", row.seq)?;
                    insert
                        .execute(params![id.as_str(), seq, row.kind, row.payload])
                        .map_err(|e| fail(&format!("insert event {seq}: {e}")))?;
                }
            }
            let new_last = to_i64("last_seq", expected - 1)?;
            tx.execute(
                "UPDATE sessions SET last_seq = ?2, agent_seq = COALESCE(?3, agent_seq) \
                 WHERE id = ?1",
                params![id.as_str(), new_last, agent_seq],
            )
            .map_err(sql_fail)?;
            tx.commit().map_err(sql_fail)
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
            .map_err(|e| StoreError::Backend(format!("store sealed secrets of {key}: {e}")))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millisecond_conversion_truncates_toward_the_past() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let ms = to_ms("t", t).unwrap();
        assert_eq!(ms, 1_700_000_000_123);
        assert_eq!(
            from_ms(ms),
            Some(UNIX_EPOCH + Duration::from_millis(ms as u64))
        );

        let before = UNIX_EPOCH - Duration::new(1, 500_000);
        let ms = to_ms("t", before).unwrap();
        assert_eq!(ms, -1_001);
        assert_eq!(from_ms(ms), Some(UNIX_EPOCH - Duration::from_millis(1_001)));
        assert_eq!(to_ms("t", UNIX_EPOCH).unwrap(), 0);
    }

    #[test]
    fn a_stored_negative_spend_reads_as_nothing_spent() {
        let mut u = cc_core::SessionUsage::default();
        u.totals.cost_usd = 0.25;
        u.oom_kills = 2;
        assert_eq!(decode_usage(&encode_usage(&u).unwrap()).unwrap(), u);
        u.totals.cost_usd = -999.95;
        u.process_cost_usd = -1000.0;
        let back = decode_usage(&encode_usage(&u).unwrap()).unwrap();
        assert_eq!((back.totals.cost_usd, back.process_cost_usd), (0.0, 0.0));
    }

    #[test]
    fn counters_beyond_i64_are_refused() {
        assert!(to_i64("x", u64::MAX).is_err());
        assert_eq!(to_i64("x", 7).unwrap(), 7);
    }

    #[test]
    fn event_kind_is_the_type_tag() {
        let id = SessionId::generate();
        let ev = ServerMessage::Status {
            seq: 3,
            state: SessionState::Ready,
            timestamp: 1_704_067_200_000,
            reason: None,
        };
        let row = encode_event(&id, &ev).unwrap();
        assert_eq!(row.kind, "status");
        assert_eq!(row.seq, 3);
        assert_eq!(decode_event(&id, 3, &row.payload).unwrap(), ev);
        assert!(matches!(
            decode_event(&id, 4, &row.payload),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn events_stored_before_the_envelope_read_as_the_envelope() {
        let id = SessionId::generate();
        let old =
            r#"{"type":"status","seq":3,"state":"ready","timestamp":"2024-01-01T00:00:00.000Z"}"#;
        assert_eq!(
            decode_event(&id, 3, old).unwrap(),
            ServerMessage::Status {
                seq: 3,
                state: SessionState::Ready,
                timestamp: 1_704_067_200_000,
                reason: None,
            }
        );
        let old = r#"{"type":"output","seq":4,"text":"hi","timestamp":"2024-01-01T00:00:00.001Z","event":{"type":"assistant"}}"#;
        assert_eq!(
            decode_event(&id, 4, old).unwrap(),
            ServerMessage::Output {
                seq: 4,
                text: "hi".into(),
                timestamp: 1_704_067_200_001,
                event: Some(serde_json::json!({"type": "assistant"})),
            }
        );
        assert!(matches!(
            decode_event(&id, 5, r#"{"type":"status","seq":5}"#),
            Err(StoreError::Corrupt(_))
        ));
    }
}
