//! [`IdentityStore`] on SQLite: the `api_tokens` table (hashes only).

use crate::{backend, from_ms, to_ms, SqliteStore};
use cc_core::identity::{ApiTokenRecord, IdentityStore, Role};
use cc_core::StoreError;
use rusqlite::{params, OptionalExtension, Row};
use std::time::SystemTime;

const COLUMNS: &str = "id, user, role, hash, label, created_at_ms, revoked_at_ms";

type RawToken = (
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    Option<i64>,
);

fn raw(r: &Row<'_>) -> rusqlite::Result<RawToken> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn decode(
    (id, user, role, hash, label, created, revoked): RawToken,
) -> Result<ApiTokenRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("api token {id}: {what}"));
    Ok(ApiTokenRecord {
        role: Role::parse(&role).ok_or_else(|| corrupt("unknown role"))?,
        created_at: from_ms(created).ok_or_else(|| corrupt("created_at out of range"))?,
        revoked_at: revoked
            .map(|ms| from_ms(ms).ok_or_else(|| corrupt("revoked_at out of range")))
            .transpose()?,
        id,
        user,
        hash,
        label,
    })
}

impl IdentityStore for SqliteStore {
    async fn insert_token(&self, rec: &ApiTokenRecord) -> Result<(), StoreError> {
        let rec = rec.clone();
        let created = to_ms("created_at", rec.created_at)?;
        let revoked = rec.revoked_at.map(|t| to_ms("revoked_at", t)).transpose()?;
        self.run("insert token", move |conn| {
            conn.execute(
                &format!("INSERT INTO api_tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    rec.id,
                    rec.user,
                    rec.role.as_str(),
                    rec.hash,
                    rec.label,
                    created,
                    revoked
                ],
            )
            .map_err(backend("insert token"))?;
            Ok(())
        })
        .await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        let hash = hash.to_owned();
        let row = self
            .run("find token", move |conn| {
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM api_tokens WHERE hash = ?1"))
                    .and_then(|mut st| st.query_row([hash], raw).optional())
                    .map_err(backend("find token"))
            })
            .await?;
        row.map(decode).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
        let rows = self
            .run("list tokens", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM api_tokens ORDER BY created_at_ms, rowid"
                ))
                .and_then(|mut st| st.query_map([], raw)?.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(backend("list tokens"))
            })
            .await?;
        rows.into_iter().map(decode).collect()
    }

    async fn revoke_token(&self, id: &str, at: SystemTime) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let at = to_ms("revoked_at", at)?;
        self.run("revoke token", move |conn| {
            let n = conn
                .execute(
                    "UPDATE api_tokens SET revoked_at_ms = ?2 \
                     WHERE id = ?1 AND revoked_at_ms IS NULL",
                    params![id, at],
                )
                .map_err(backend("revoke token"))?;
            Ok(n > 0)
        })
        .await
    }

    async fn active_tokens(&self) -> Result<u64, StoreError> {
        self.run("count tokens", move |conn| {
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM api_tokens WHERE revoked_at_ms IS NULL",
                    [],
                    |r| r.get(0),
                )
                .map_err(backend("count tokens"))?;
            Ok(n.max(0) as u64)
        })
        .await
    }
}

impl SqliteStore {
    /// Deletes every token of `user` (erase-user): the rows go, so the
    /// name does not stay behind and the tokens stop working.
    pub async fn delete_user_tokens(&self, user: &str) -> Result<u64, StoreError> {
        let user = user.to_owned();
        self.run("delete user tokens", move |conn| {
            let n = conn
                .execute("DELETE FROM api_tokens WHERE user = ?1", params![user])
                .map_err(backend("delete user tokens"))?;
            Ok(n as u64)
        })
        .await
    }
}

/// What [`SqliteStore::erase_user`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EraseReport {
    pub sessions: u64,
    pub tokens: u64,
}

impl SqliteStore {
    /// Deletes every ended session of `user` with its event log, and
    /// their tokens. Refuses while the user has
    /// a live session: end it first, so no container outlives its record.
    pub async fn erase_user(&self, user: &str) -> Result<EraseReport, StoreError> {
        let owner = user.to_owned();
        let sessions = self
            .run("erase user sessions", move |conn| {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
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
                    return Err(StoreError::Backend(format!(
                        "{owner} has {live} live sessions; delete them first"
                    )));
                }
                tx.execute(
                    "DELETE FROM events WHERE session_id IN \
                     (SELECT id FROM sessions WHERE owner = ?1)",
                    [&owner],
                )
                .map_err(backend("delete events"))?;
                let n = tx
                    .execute("DELETE FROM sessions WHERE owner = ?1", [&owner])
                    .map_err(backend("delete sessions"))?;
                tx.commit().map_err(backend("commit erase"))?;
                Ok(n as u64)
            })
            .await?;
        let tokens = self.delete_user_tokens(user).await?;
        Ok(EraseReport { sessions, tokens })
    }

    /// Deletes the event logs of sessions that ended (`terminated` or
    /// `error`) before `cutoff`; the session records stay. Returns the
    /// number of events deleted.
    pub async fn purge_logs_before(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
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
}
