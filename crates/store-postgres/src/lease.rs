//! [`Leases`] on PostgreSQL: the lease columns of `sessions`, the
//! `replicas` heartbeat table and `job_locks`, shared by every replica.
//!
//! Time is the database's clock ([`NOW_MS`]), never a replica's, so
//! replicas with skewed clocks agree on who holds what. A lease is valid
//! while `lease_expires_ms > now`; a missing expiry (a session stored
//! before leases) or a missing holder counts as unowned. Releasing sets the
//! expiry to 0, so the lease is expired at once, keeps its holder and fence
//! for the record, and is no longer renewed by the holder's heartbeats.
//!
//! Every operation is one statement (so one round trip and its own
//! transaction). A claim is one `UPDATE … WHERE … RETURNING`: two claims
//! of one session serialise on its row lock, and the second re-checks the
//! `WHERE` against the first's commit, so exactly one wins. A job lock is
//! one `INSERT … ON CONFLICT DO UPDATE … WHERE`, atomic the same way.

use crate::{classify, pg_error, ttl_ms, PostgresStore, NOW_MS};
use cc_core::lease::{Heartbeat, Leases, Replica};
use cc_core::{SessionId, StoreError};
use std::time::Duration;

use cc_core::store_codec::lease::{decode_held, encode_held, fence, session_id, AWAKE, LIVE};

impl Leases for PostgresStore {
    async fn heartbeat(&self, beat: &Heartbeat<'_>) -> Result<Vec<(SessionId, u64)>, StoreError> {
        let held = encode_held(beat.held)?;
        let ttl = ttl_ms(beat.ttl);
        let conn = self.pool.get().await?;
        // The replica's row and its leases in one statement: the CTE's
        // upsert runs whether or not it is referenced. A released lease
        // (expiry 0) stays released.
        let rows = conn
            .query(
                &format!(
                    "WITH beat AS ( \
                       INSERT INTO replicas (id, url, held, expires_ms) \
                       VALUES ($1, $2, $3, {NOW_MS} + $4::BIGINT) \
                       ON CONFLICT (id) DO UPDATE SET url = excluded.url, \
                       held = excluded.held, expires_ms = excluded.expires_ms) \
                     UPDATE sessions SET lease_expires_ms = {NOW_MS} + $4::BIGINT \
                     WHERE lease_holder = $1 AND {AWAKE} \
                     AND (lease_expires_ms IS NULL OR lease_expires_ms <> 0) \
                     RETURNING id, lease_fence"
                ),
                &[&beat.replica.id, &beat.replica.url, &held, &ttl],
            )
            .await
            .map_err(pg_error("heartbeat"))?;
        rows.iter()
            .map(|r| {
                let id: &str = r.get(0);
                Ok((session_id("heartbeat", id)?, fence(id, r.get(1))?))
            })
            .collect()
    }

    async fn claim(
        &self,
        id: &SessionId,
        replica: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let ttl = ttl_ms(ttl);
        let conn = self.pool.get().await?;
        // The right-hand sides read the row as it was, so the fence rises
        // exactly when the holder changes.
        let row = conn
            .query_opt(
                &format!(
                    "UPDATE sessions SET \
                     lease_fence = CASE WHEN lease_holder = $2 THEN lease_fence \
                                        ELSE lease_fence + 1 END, \
                     lease_holder = $2, lease_expires_ms = {NOW_MS} + $3::BIGINT \
                     WHERE id = $1 AND {LIVE} \
                     AND (lease_holder IS NULL OR lease_expires_ms IS NULL \
                          OR lease_expires_ms <= {NOW_MS} OR lease_holder = $2) \
                     RETURNING lease_fence"
                ),
                &[&id.as_str(), &replica, &ttl],
            )
            .await
            .map_err(|e| classify(&format!("claim session {id}"), &e))?;
        row.map(|r| fence(id.as_str(), r.get(0))).transpose()
    }

    async fn release(&self, id: &SessionId, replica: &str) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        conn.execute(
            "UPDATE sessions SET lease_expires_ms = 0 WHERE id = $1 AND lease_holder = $2",
            &[&id.as_str(), &replica],
        )
        .await
        .map_err(|e| classify(&format!("release session {id}"), &e))?;
        Ok(())
    }

    async fn unowned(&self) -> Result<Vec<SessionId>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT id FROM sessions WHERE {AWAKE} \
                     AND (lease_holder IS NULL OR lease_expires_ms IS NULL \
                          OR lease_expires_ms <= {NOW_MS}) \
                     ORDER BY created_at_ms, ord"
                ),
                &[],
            )
            .await
            .map_err(pg_error("list unowned sessions"))?;
        rows.iter()
            .map(|r| session_id("unowned sessions", r.get(0)))
            .collect()
    }

    async fn holder(&self, id: &SessionId) -> Result<Option<Replica>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                &format!(
                    "SELECT r.id, r.url FROM sessions s JOIN replicas r ON r.id = s.lease_holder \
                     WHERE s.id = $1 AND s.lease_expires_ms > {NOW_MS}"
                ),
                &[&id.as_str()],
            )
            .await
            .map_err(|e| classify(&format!("read the holder of {id}"), &e))?;
        Ok(row.map(|r| Replica {
            id: r.get(0),
            url: r.get(1),
        }))
    }

    async fn replicas(&self) -> Result<Vec<Replica>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!("SELECT id, url FROM replicas WHERE expires_ms > {NOW_MS} ORDER BY id"),
                &[],
            )
            .await
            .map_err(pg_error("read replicas"))?;
        Ok(rows
            .iter()
            .map(|r| Replica {
                id: r.get(0),
                url: r.get(1),
            })
            .collect())
    }

    async fn held_by_replicas(&self) -> Result<Vec<SessionId>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!("SELECT id, held FROM replicas WHERE expires_ms > {NOW_MS}"),
                &[],
            )
            .await
            .map_err(pg_error("read held resources"))?;
        let mut all = std::collections::BTreeSet::new();
        for r in &rows {
            let (replica, held): (&str, &str) = (r.get(0), r.get(1));
            decode_held(replica, held, &mut all)?;
        }
        Ok(all.into_iter().collect())
    }

    async fn lock_job(&self, job: &str, replica: &str, ttl: Duration) -> Result<bool, StoreError> {
        let ttl = ttl_ms(ttl);
        let conn = self.pool.get().await?;
        // No row comes back when another replica's lock still holds.
        let row = conn
            .query_opt(
                &format!(
                    "INSERT INTO job_locks AS j (job, holder, expires_ms) \
                     VALUES ($1, $2, {NOW_MS} + $3::BIGINT) \
                     ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, \
                     expires_ms = excluded.expires_ms \
                     WHERE j.expires_ms <= {NOW_MS} OR j.holder = excluded.holder \
                     RETURNING holder"
                ),
                &[&job, &replica, &ttl],
            )
            .await
            .map_err(|e| classify(&format!("take job lock {job}"), &e))?;
        Ok(row.is_some())
    }

    async fn unlock_job(&self, job: &str, replica: &str) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        conn.execute(
            "DELETE FROM job_locks WHERE job = $1 AND holder = $2",
            &[&job, &replica],
        )
        .await
        .map_err(|e| classify(&format!("release job lock {job}"), &e))?;
        Ok(())
    }

    fn event_feed(&self) -> Option<tokio::sync::broadcast::Receiver<SessionId>> {
        Some(self.feed.subscribe())
    }
}
