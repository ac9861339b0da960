//! The PostgreSQL store: sessions and their event logs, API tokens, the
//! audit log and sealed secrets in one database that several orchestrator
//! replicas can share (`serve --database-url postgres://…`).
//!
//! Owns its schema and migrations (see `schema`) and a small connection
//! pool (see `pool`). Rows are encoded by [`cc_core::store_codec`], the
//! same encoding as the SQLite store, so both hold the same values.
//!
//! Invariants (the same as the SQLite store's, proven by the shared
//! `cc-store-conformance` suite):
//! - A session's events are exactly `1..=last_seq`, without gaps or
//!   duplicates. [`Store::append_events`] locks the session's row
//!   (`SELECT … FOR UPDATE`), checks that its batch continues `last_seq`
//!   contiguously, and moves the cursor in the same transaction as the
//!   inserts; a bad batch is a [`StoreError::Conflict`] and writes nothing.
//!   Concurrent appends to one session, from any number of connections or
//!   replicas, are serialised by that row lock.
//! - The cursor is owned by `append_events`: [`Store::update_session`]
//!   never moves `last_seq` / `agent_seq`.
//! - The audit log is append-only by trigger (no delete, no truncate, no
//!   change to a hashed column) and its chain never forks: reading the tail
//!   and inserting the next record happen under an exclusive table lock.
//! - Errors are classified at the seam: a missing session is
//!   [`StoreError::NotFound`], a duplicate key or a clash with what is
//!   stored [`StoreError::Conflict`]; messages never carry the database URL
//!   or its password, nor the values of a violated key.
//!
//! - Leases (see `lease` and `cc_core::lease`): [`Store::insert_session`]
//!   writes the record's lease (expiring [`LEASE_TTL`] after the insert by
//!   the database's clock when it names a holder);
//!   [`Store::update_session`] and [`Store::record_change`] never write the
//!   lease columns and refuse, with [`StoreError::Fenced`] and writing
//!   nothing, a record whose fence is older than the stored one.
//! - Every append of events notifies channel `cc_events` with the
//!   session's ID at commit; each store listens on its own connection and
//!   hands the IDs to its event feed (see `feed`).

mod audit;
mod feed;
mod idempotency;
mod identity;
mod lease;
mod pool;
mod schema;
mod webhook;

use cc_core::lease::LEASE_TTL;
use cc_core::store_codec::{
    decode_event, encode_event, to_i64, to_ms, EventRow, RawSession, SessionRow, RECORD_VERSION,
    SESSION_COLUMNS,
};
use cc_core::{SessionId, SessionRecord, Store, StoreError};
use cc_wire::api::{ServerMessage, SessionState};
use pool::Pool;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

pub use tokio_postgres::Config;

/// Connections one store opens at most. Each request holds one for the
/// length of its statement or transaction; a handful covers the API's
/// concurrency without crowding PostgreSQL's default of 100 connections
/// when several replicas share it.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// The PostgreSQL [`Store`]. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Arc<Pool>,
    feed: Arc<feed::Feed>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`,
    /// or a `key=value` connection string) and runs pending migrations.
    /// A bad URL or an unreachable database is an error that never
    /// repeats the URL (it may hold a password).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let config: Config = url.parse().map_err(|e| {
            StoreError::Backend(format!("the database URL is not a PostgreSQL URL: {e}"))
        })?;
        Self::connect_with(config, DEFAULT_POOL_SIZE).await
    }

    /// Connects with a parsed configuration (e.g. one that sets
    /// `search_path` through `options`) and at most `pool_size`
    /// connections, and runs pending migrations.
    pub async fn connect_with(config: Config, pool_size: usize) -> Result<Self, StoreError> {
        let pool = Pool::new(config.clone(), pool_size);
        {
            let mut conn = pool.get().await?;
            schema::migrate(&mut conn).await?;
        }
        let feed = feed::Feed::start(config).await?;
        Ok(Self {
            pool: Arc::new(pool),
            feed: Arc::new(feed),
        })
    }
}

/// Wraps a PostgreSQL error with what we were doing, classified (see
/// [`classify`]).
pub(crate) fn pg_error(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| classify(what, &e)
}

/// Classifies a PostgreSQL error at the seam: a unique violation is a
/// [`StoreError::Conflict`], a foreign-key violation (a row naming a missing
/// session) [`StoreError::NotFound`], a serialization failure or deadlock a
/// `Conflict` (retrying may succeed), a database that cannot be reached
/// [`StoreError::Unavailable`], anything else [`StoreError::Backend`].
/// Only the server's primary message is kept:
/// its detail can quote the values of a violated key.
pub(crate) fn classify(what: &str, e: &tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        // A closed connection or an IO error: the database went away or the
        // network broke (the connection is not reused). Anything else the
        // client says (a value that does not convert) is ours.
        let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
        return if e.is_closed() || io {
            StoreError::Unavailable(format!("{what}: {e}"))
        } else {
            StoreError::Backend(format!("{what}: {e}"))
        };
    };
    let code = db.code();
    // Connection exceptions (class 08), the server shutting down or not yet
    // accepting (57P01..57P03), no connection slot left (53300).
    let unreachable = code.code().starts_with("08")
        || ["57P01", "57P02", "57P03", "53300"].contains(&code.code());
    if unreachable {
        StoreError::Unavailable(format!("{what}: {}", db.message()))
    } else if *code == SqlState::UNIQUE_VIOLATION {
        StoreError::Conflict(format!("{what}: already stored"))
    } else if *code == SqlState::FOREIGN_KEY_VIOLATION {
        StoreError::NotFound(format!("{what}: no such session"))
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
    {
        StoreError::Conflict(format!("{what}: {}", db.message()))
    } else {
        StoreError::Backend(format!("{what}: {}", db.message()))
    }
}

fn raw_session(r: &Row) -> Result<RawSession, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::Corrupt(format!("session row: {e}"));
    Ok(RawSession {
        id: r.try_get(0).map_err(get)?,
        record_version: r.try_get(1).map_err(get)?,
        container_id: r.try_get(2).map_err(get)?,
        state: r.try_get(3).map_err(get)?,
        reason: r.try_get(4).map_err(get)?,
        repo_url: r.try_get(5).map_err(get)?,
        branch: r.try_get(6).map_err(get)?,
        memory_bytes: r.try_get(7).map_err(get)?,
        cpu: r.try_get(8).map_err(get)?,
        timeout_secs: r.try_get(9).map_err(get)?,
        created_at_ms: r.try_get(10).map_err(get)?,
        updated_at_ms: r.try_get(11).map_err(get)?,
        expires_at_ms: r.try_get(12).map_err(get)?,
        last_seq: r.try_get(13).map_err(get)?,
        agent_seq: r.try_get(14).map_err(get)?,
        owner: r.try_get(15).map_err(get)?,
        usage: r.try_get(16).map_err(get)?,
        egress: r.try_get(17).map_err(get)?,
        idle_timeout_secs: r.try_get(18).map_err(get)?,
        lease_holder: r.try_get(19).map_err(get)?,
        lease_fence: r.try_get(20).map_err(get)?,
    })
}

fn decode_sessions(rows: Vec<Row>) -> Result<Vec<SessionRecord>, StoreError> {
    rows.iter()
        .map(|r| raw_session(r).and_then(RawSession::decode))
        .collect()
}

/// Overwrites every field of the session's row but the log cursor, which
/// only [`append_rows`] moves, and the lease, which only the lease
/// operations move (see the crate docs); refused when the stored fence is
/// newer than the record's.
async fn write_record(
    client: &impl tokio_postgres::GenericClient,
    id: &SessionId,
    row: &SessionRow,
) -> Result<(), StoreError> {
    let what = format!("update session {id}");
    let changed = client
        .execute(
            "UPDATE sessions SET record_version = $2, container_id = $3, state = $4, \
             reason = $5, repo_url = $6, branch = $7, memory_bytes = $8, cpu = $9, \
             timeout_secs = $10, created_at_ms = $11, updated_at_ms = $12, \
             expires_at_ms = $13, owner = $14, usage = $15, egress = $16, \
             idle_timeout_secs = $17 WHERE id = $1 AND lease_fence <= $18",
            &[
                &id.as_str(),
                &RECORD_VERSION,
                &row.container_id,
                &row.state,
                &row.reason,
                &row.repo_url,
                &row.branch,
                &row.memory_bytes,
                &row.cpu,
                &row.timeout_secs,
                &row.created_at_ms,
                &row.updated_at_ms,
                &row.expires_at_ms,
                &row.owner,
                &row.usage,
                &row.egress,
                &row.idle_timeout_secs,
                &row.lease_fence,
            ],
        )
        .await
        .map_err(|e| classify(&what, &e))?;
    if changed == 0 {
        let stored: Option<i64> = client
            .query_opt(
                "SELECT lease_fence FROM sessions WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(|e| classify(&what, &e))?
            .map(|r| r.get(0));
        return Err(match stored {
            None => StoreError::NotFound(format!("{what}: no such session")),
            Some(stored) => StoreError::Fenced(format!(
                "{what}: fence {} is older than the stored {stored}; nothing was written",
                row.lease_fence
            )),
        });
    }
    Ok(())
}

/// The database's clock as unix milliseconds (SQL): every replica judges
/// expiry by it, never by its own.
pub(crate) const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// A lease length in milliseconds, saturating (a lease of 290 million
/// years is as good as forever, and leaves room to add the clock).
pub(crate) fn ttl_ms(ttl: std::time::Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Appends `rows`, which must continue the session's log, and moves its
/// cursor; inside the caller's transaction.
async fn append_rows(
    tx: &tokio_postgres::Transaction<'_>,
    id: &SessionId,
    rows: &[EventRow],
    agent_seq: Option<i64>,
) -> Result<(), StoreError> {
    let what = format!("append events to {id}");
    let fail = |e: tokio_postgres::Error| classify(&what, &e);
    // The row lock serialises appends to this session across connections
    // and replicas until the commit.
    let last: i64 = tx
        .query_opt(
            "SELECT last_seq FROM sessions WHERE id = $1 FOR UPDATE",
            &[&id.as_str()],
        )
        .await
        .map_err(fail)?
        .ok_or_else(|| StoreError::NotFound(format!("{what}: no such session")))?
        .get(0);
    let last = u64::try_from(last)
        .map_err(|_| StoreError::Corrupt(format!("session {id}: negative last_seq {last}")))?;
    let mut expected = last + 1;
    for row in rows {
        if row.seq != expected {
            return Err(StoreError::Conflict(format!(
                "{what}: event seq {} where {expected} was expected (last_seq {last}); \
                 nothing was written",
                row.seq
            )));
        }
        expected += 1;
    }
    if !rows.is_empty() {
        // One statement for the batch: the arrays unnest into rows.
        let seqs = rows
            .iter()
            .map(|r| to_i64("seq", r.seq))
            .collect::<Result<Vec<_>, _>>()?;
        let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
        let payloads: Vec<&str> = rows.iter().map(|r| r.payload.as_str()).collect();
        tx.execute(
            "INSERT INTO events (session_id, seq, kind, payload) \
             SELECT $1::TEXT, * FROM unnest($2::BIGINT[], $3::TEXT[], $4::TEXT[])",
            &[&id.as_str(), &seqs, &kinds, &payloads],
        )
        .await
        .map_err(fail)?;
        // Wakes every replica's event feed, at commit (never for a batch
        // that is rolled back).
        tx.execute("SELECT pg_notify('cc_events', $1)", &[&id.as_str()])
            .await
            .map_err(fail)?;
    }
    let new_last = to_i64("last_seq", expected - 1)?;
    tx.execute(
        "UPDATE sessions SET last_seq = $2, agent_seq = COALESCE($3, agent_seq) \
         WHERE id = $1",
        &[&id.as_str(), &new_last, &agent_seq],
    )
    .await
    .map_err(fail)?;
    Ok(())
}

impl Store for PostgresStore {
    async fn insert_session(&self, rec: &SessionRecord) -> Result<(), StoreError> {
        let row = SessionRow::encode(rec)?;
        let what = format!("insert session {}", rec.id);
        // A replica creating a session holds its lease from the insert.
        let lease_ttl = row.lease_holder.as_ref().map(|_| ttl_ms(LEASE_TTL));
        let conn = self.pool.get().await?;
        conn.execute(
            &format!(
                "INSERT INTO sessions ({SESSION_COLUMNS}, lease_expires_ms) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                 $18, $19, $20, $21, {NOW_MS} + $22::BIGINT)"
            ),
            &[
                &rec.id.as_str(),
                &RECORD_VERSION,
                &row.container_id,
                &row.state,
                &row.reason,
                &row.repo_url,
                &row.branch,
                &row.memory_bytes,
                &row.cpu,
                &row.timeout_secs,
                &row.created_at_ms,
                &row.updated_at_ms,
                &row.expires_at_ms,
                &row.last_seq,
                &row.agent_seq,
                &row.owner,
                &row.usage,
                &row.egress,
                &row.idle_timeout_secs,
                &row.lease_holder,
                &row.lease_fence,
                &lease_ttl,
            ],
        )
        .await
        .map_err(|e| classify(&what, &e))?;
        Ok(())
    }

    async fn update_session(&self, rec: &SessionRecord) -> Result<(), StoreError> {
        let row = SessionRow::encode(rec)?;
        let conn = self.pool.get().await?;
        write_record(&*conn, &rec.id, &row).await
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"),
                &[&id.as_str()],
            )
            .await
            .map_err(|e| classify(&format!("get session {id}"), &e))?;
        row.map(|r| raw_session(&r).and_then(RawSession::decode))
            .transpose()
    }

    async fn list_sessions(&self, live_only: bool) -> Result<Vec<SessionRecord>, StoreError> {
        let filter = if live_only {
            "WHERE state NOT IN ('terminated', 'error')"
        } else {
            ""
        };
        let conn = self.pool.get().await?;
        // ord breaks ties between sessions created the same millisecond.
        let rows = conn
            .query(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions {filter} \
                     ORDER BY created_at_ms DESC, ord DESC"
                ),
                &[],
            )
            .await
            .map_err(pg_error("list sessions"))?;
        decode_sessions(rows)
    }

    async fn sessions_in_state(
        &self,
        state: SessionState,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE state = $1 \
                     ORDER BY created_at_ms DESC, ord DESC"
                ),
                &[&state.as_str()],
            )
            .await
            .map_err(pg_error("list sessions by state"))?;
        decode_sessions(rows)
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
        let what = format!("append events to {id}");
        let fail = |e: tokio_postgres::Error| classify(&what, &e);
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await.map_err(fail)?;
        append_rows(&tx, id, &rows, agent_seq).await?;
        tx.commit().await.map_err(fail)
    }

    async fn record_change(
        &self,
        rec: &SessionRecord,
        events: &[ServerMessage],
        agent_seq: Option<u64>,
    ) -> Result<(), StoreError> {
        let row = SessionRow::encode(rec)?;
        let rows = events
            .iter()
            .map(|ev| encode_event(&rec.id, ev))
            .collect::<Result<Vec<_>, _>>()?;
        let agent_seq = agent_seq.map(|s| to_i64("agent_seq", s)).transpose()?;
        let what = format!("record a state change of {}", rec.id);
        let fail = |e: tokio_postgres::Error| classify(&what, &e);
        let mut conn = self.pool.get().await?;
        // One transaction: the events and the record together, or neither.
        let tx = conn.transaction().await.map_err(fail)?;
        // The record first: a fenced or missing session refuses the change
        // before any event is looked at.
        write_record(&tx, &rec.id, &row).await?;
        append_rows(&tx, &rec.id, &rows, agent_seq).await?;
        tx.commit().await.map_err(fail)
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
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT seq, payload FROM events WHERE session_id = $1 AND seq > $2 \
                 ORDER BY seq LIMIT $3",
                &[&id.as_str(), &since, &limit],
            )
            .await
            .map_err(|e| classify(&format!("read events of {id}"), &e))?;
        rows.iter()
            .map(|r| decode_event(id, r.get(0), r.get(1)))
            .collect()
    }

    async fn put_sealed_secrets(&self, id: &SessionId, sealed: &[u8]) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        conn.execute(
            "INSERT INTO session_secrets (session_id, sealed) VALUES ($1, $2) \
             ON CONFLICT (session_id) DO UPDATE SET sealed = excluded.sealed",
            &[&id.as_str(), &sealed],
        )
        .await
        .map_err(|e| classify(&format!("store sealed secrets of {id}"), &e))?;
        Ok(())
    }

    async fn sealed_secrets(&self, id: &SessionId) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT sealed FROM session_secrets WHERE session_id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(|e| classify(&format!("read sealed secrets of {id}"), &e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn delete_sealed_secrets(&self, id: &SessionId) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        conn.execute(
            "DELETE FROM session_secrets WHERE session_id = $1",
            &[&id.as_str()],
        )
        .await
        .map_err(|e| classify(&format!("delete sealed secrets of {id}"), &e))?;
        Ok(())
    }

    async fn purge_logs_before(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
        let cutoff = to_ms("cutoff", cutoff)?;
        let conn = self.pool.get().await?;
        conn.execute(
            "DELETE FROM events WHERE session_id IN \
             (SELECT id FROM sessions WHERE state IN ('terminated', 'error') \
              AND updated_at_ms < $1)",
            &[&cutoff],
        )
        .await
        .map_err(pg_error("purge logs"))
    }

    async fn erase_owner_sessions(&self, owner: &str) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await.map_err(pg_error("begin erase"))?;
        // Locks the owner's sessions, so none turns live while we erase.
        let live: i64 = tx
            .query(
                "SELECT state FROM sessions WHERE owner = $1 FOR UPDATE",
                &[&owner],
            )
            .await
            .map_err(pg_error("lock the owner's sessions"))?
            .iter()
            .filter(|r| !matches!(r.get::<_, &str>(0), "terminated" | "error"))
            .count() as i64;
        if live > 0 {
            return Err(StoreError::Conflict(format!(
                "{owner} has {live} live sessions; delete them first"
            )));
        }
        // Events and secrets go with their session (ON DELETE CASCADE).
        let n = tx
            .execute("DELETE FROM sessions WHERE owner = $1", &[&owner])
            .await
            .map_err(pg_error("delete sessions"))?;
        tx.commit().await.map_err(pg_error("commit erase"))?;
        Ok(n)
    }
}

/// Parameters of a statement built at run time.
pub(crate) type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;
