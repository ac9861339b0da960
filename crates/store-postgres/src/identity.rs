//! [`IdentityStore`] on PostgreSQL: the `api_tokens` table (hashes only).

use crate::{pg_error, PostgresStore};
use cc_core::identity::{ApiTokenRecord, IdentityStore, Role};
use cc_core::store_codec::{from_ms, to_ms};
use cc_core::StoreError;
use std::time::SystemTime;
use tokio_postgres::Row;

const COLUMNS: &str = "id, user_name, role, hash, label, created_at_ms, revoked_at_ms";

fn decode(r: &Row) -> Result<ApiTokenRecord, StoreError> {
    let id: String = r.get(0);
    let corrupt = |what: &str| StoreError::Corrupt(format!("api token {id}: {what}"));
    let role: &str = r.get(2);
    let created: i64 = r.get(5);
    let revoked: Option<i64> = r.get(6);
    Ok(ApiTokenRecord {
        role: Role::parse(role).ok_or_else(|| corrupt("unknown role"))?,
        created_at: from_ms(created).ok_or_else(|| corrupt("created_at out of range"))?,
        revoked_at: revoked
            .map(|ms| from_ms(ms).ok_or_else(|| corrupt("revoked_at out of range")))
            .transpose()?,
        user: r.get(1),
        hash: r.get(3),
        label: r.get(4),
        id,
    })
}

impl IdentityStore for PostgresStore {
    async fn insert_token(&self, rec: &ApiTokenRecord) -> Result<(), StoreError> {
        let created = to_ms("created_at", rec.created_at)?;
        let revoked = rec.revoked_at.map(|t| to_ms("revoked_at", t)).transpose()?;
        let conn = self.pool.get().await?;
        conn.execute(
            &format!("INSERT INTO api_tokens ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
            &[
                &rec.id,
                &rec.user,
                &rec.role.as_str(),
                &rec.hash,
                &rec.label,
                &created,
                &revoked,
            ],
        )
        .await
        .map_err(pg_error("insert token"))?;
        Ok(())
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                &format!("SELECT {COLUMNS} FROM api_tokens WHERE hash = $1"),
                &[&hash],
            )
            .await
            .map_err(pg_error("find token"))?;
        row.as_ref().map(decode).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!("SELECT {COLUMNS} FROM api_tokens ORDER BY created_at_ms, ord"),
                &[],
            )
            .await
            .map_err(pg_error("list tokens"))?;
        rows.iter().map(decode).collect()
    }

    async fn revoke_token(&self, id: &str, at: SystemTime) -> Result<bool, StoreError> {
        let at = to_ms("revoked_at", at)?;
        let conn = self.pool.get().await?;
        let n = conn
            .execute(
                "UPDATE api_tokens SET revoked_at_ms = $2 \
                 WHERE id = $1 AND revoked_at_ms IS NULL",
                &[&id, &at],
            )
            .await
            .map_err(pg_error("revoke token"))?;
        Ok(n > 0)
    }

    async fn active_tokens(&self) -> Result<u64, StoreError> {
        let conn = self.pool.get().await?;
        let n: i64 = conn
            .query_one(
                "SELECT COUNT(*) FROM api_tokens WHERE revoked_at_ms IS NULL",
                &[],
            )
            .await
            .map_err(pg_error("count tokens"))?
            .get(0);
        Ok(n.max(0) as u64)
    }

    async fn delete_user_tokens(&self, user: &str) -> Result<u64, StoreError> {
        let conn = self.pool.get().await?;
        conn.execute("DELETE FROM api_tokens WHERE user_name = $1", &[&user])
            .await
            .map_err(pg_error("delete user tokens"))
    }
}
