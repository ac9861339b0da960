//! [`IdentityStore`] on SQLite: the `api_tokens` table (hashes only).

use crate::{backend, SqliteStore};
use cc_core::identity::{ApiTokenRecord, IdentityStore, Role};
use cc_core::store_codec::{from_ms, to_ms};
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

    async fn delete_user_tokens(&self, user: &str) -> Result<u64, StoreError> {
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
