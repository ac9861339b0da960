//! [`Leases`] on SQLite: the lease columns of `sessions`, the `replicas`
//! heartbeat table and `job_locks`.
//!
//! One process owns the database file, so the store's clock is this
//! process's ([`now_ms`]) and there is no event feed. A lease is valid while
//! `lease_expires_ms > now`; a missing expiry (a session stored before
//! leases) or a missing holder counts as unowned. Releasing sets the expiry
//! to 0, so the lease is expired at once, keeps its holder and fence for
//! the record, and is no longer renewed by the holder's heartbeats. Every
//! claim is one `UPDATE … RETURNING` under the connection's lock, so two
//! claims of one session never both win.

use crate::{backend, now_ms, ttl_ms, SqliteStore};
use cc_core::lease::{Heartbeat, Leases, Replica};
use cc_core::{SessionId, StoreError};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use std::time::Duration;

use cc_core::store_codec::lease::{decode_held, encode_held, fence, session_id, AWAKE, LIVE};

impl Leases for SqliteStore {
    async fn heartbeat(&self, beat: &Heartbeat<'_>) -> Result<Vec<(SessionId, u64)>, StoreError> {
        let replica = beat.replica.clone();
        let held = encode_held(beat.held)?;
        let ttl = ttl_ms(beat.ttl);
        let rows = self
            .run("heartbeat", move |conn| {
                let until = now_ms().saturating_add(ttl);
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(backend("begin heartbeat"))?;
                tx.execute(
                    "INSERT INTO replicas (id, url, held, expires_ms) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT(id) DO UPDATE SET url = excluded.url, held = excluded.held, \
                     expires_ms = excluded.expires_ms",
                    params![replica.id, replica.url, held, until],
                )
                .map_err(backend("record the replica"))?;
                // A released lease (expiry 0) stays released.
                let rows = tx
                    .prepare_cached(&format!(
                        "UPDATE sessions SET lease_expires_ms = ?2 \
                         WHERE lease_holder = ?1 AND {AWAKE} \
                         AND (lease_expires_ms IS NULL OR lease_expires_ms <> 0) \
                         RETURNING id, lease_fence"
                    ))
                    .and_then(|mut st| {
                        st.query_map(params![replica.id, until], |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(backend("renew leases"))?;
                tx.commit().map_err(backend("commit heartbeat"))?;
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(|(id, f)| Ok((session_id("heartbeat", &id)?, fence(&id, f)?)))
            .collect()
    }

    async fn claim(
        &self,
        id: &SessionId,
        replica: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let key = id.clone();
        let replica = replica.to_owned();
        let ttl = ttl_ms(ttl);
        let got = self
            .run("claim a session", move |conn| {
                let now = now_ms();
                // The right-hand sides read the row as it was, so the fence
                // rises exactly when the holder changes.
                conn.prepare_cached(&format!(
                    "UPDATE sessions SET \
                     lease_fence = CASE WHEN lease_holder = ?2 THEN lease_fence \
                                        ELSE lease_fence + 1 END, \
                     lease_holder = ?2, lease_expires_ms = ?3 \
                     WHERE id = ?1 AND {LIVE} \
                     AND (lease_holder IS NULL OR lease_expires_ms IS NULL \
                          OR lease_expires_ms <= ?4 OR lease_holder = ?2) \
                     RETURNING lease_fence"
                ))
                .and_then(|mut st| {
                    st.query_row(
                        params![key.as_str(), replica, now.saturating_add(ttl), now],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()
                })
                .map_err(|e| StoreError::Backend(format!("claim session {key}: {e}")))
            })
            .await?;
        got.map(|f| fence(id.as_str(), f)).transpose()
    }

    async fn release(&self, id: &SessionId, replica: &str) -> Result<(), StoreError> {
        let key = id.clone();
        let replica = replica.to_owned();
        self.run("release a session", move |conn| {
            conn.execute(
                "UPDATE sessions SET lease_expires_ms = 0 \
                 WHERE id = ?1 AND lease_holder = ?2",
                params![key.as_str(), replica],
            )
            .map(drop)
            .map_err(|e| StoreError::Backend(format!("release session {key}: {e}")))
        })
        .await
    }

    async fn unowned(&self) -> Result<Vec<SessionId>, StoreError> {
        let ids = self
            .run("list unowned sessions", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT id FROM sessions WHERE {AWAKE} \
                     AND (lease_holder IS NULL OR lease_expires_ms IS NULL \
                          OR lease_expires_ms <= ?1) \
                     ORDER BY created_at_ms, rowid"
                ))
                .and_then(|mut st| {
                    st.query_map([now_ms()], |r| r.get::<_, String>(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(backend("list unowned sessions"))
            })
            .await?;
        ids.iter()
            .map(|id| session_id("unowned sessions", id))
            .collect()
    }

    async fn holder(&self, id: &SessionId) -> Result<Option<Replica>, StoreError> {
        let key = id.clone();
        self.run("read a session's holder", move |conn| {
            conn.prepare_cached(
                "SELECT r.id, r.url FROM sessions s JOIN replicas r ON r.id = s.lease_holder \
                 WHERE s.id = ?1 AND s.lease_expires_ms > ?2",
            )
            .and_then(|mut st| {
                st.query_row(params![key.as_str(), now_ms()], |r| {
                    Ok(Replica {
                        id: r.get(0)?,
                        url: r.get(1)?,
                    })
                })
                .optional()
            })
            .map_err(|e| StoreError::Backend(format!("read the holder of {key}: {e}")))
        })
        .await
    }

    async fn replicas(&self) -> Result<Vec<Replica>, StoreError> {
        self.run("read replicas", move |conn| {
            conn.prepare_cached("SELECT id, url FROM replicas WHERE expires_ms > ?1 ORDER BY id")
                .and_then(|mut st| {
                    st.query_map([now_ms()], |r| {
                        Ok(Replica {
                            id: r.get(0)?,
                            url: r.get(1)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(backend("read replicas"))
        })
        .await
    }

    async fn held_by_replicas(&self) -> Result<Vec<SessionId>, StoreError> {
        let rows = self
            .run("read held resources", move |conn| {
                conn.prepare_cached("SELECT id, held FROM replicas WHERE expires_ms > ?1")
                    .and_then(|mut st| {
                        st.query_map([now_ms()], |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(backend("read held resources"))
            })
            .await?;
        let mut all = std::collections::BTreeSet::new();
        for (replica, held) in rows {
            decode_held(&replica, &held, &mut all)?;
        }
        Ok(all.into_iter().collect())
    }

    async fn lock_job(&self, job: &str, replica: &str, ttl: Duration) -> Result<bool, StoreError> {
        let job = job.to_owned();
        let replica = replica.to_owned();
        let ttl = ttl_ms(ttl);
        self.run("take a job lock", move |conn| {
            let now = now_ms();
            // No row comes back when another replica's lock still holds.
            conn.prepare_cached(
                "INSERT INTO job_locks (job, holder, expires_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(job) DO UPDATE SET holder = excluded.holder, \
                 expires_ms = excluded.expires_ms \
                 WHERE job_locks.expires_ms <= ?4 OR job_locks.holder = excluded.holder \
                 RETURNING holder",
            )
            .and_then(|mut st| {
                st.query_row(params![job, replica, now.saturating_add(ttl), now], |_| {
                    Ok(())
                })
                .optional()
            })
            .map(|row| row.is_some())
            .map_err(|e| StoreError::Backend(format!("take job lock {job}: {e}")))
        })
        .await
    }

    async fn unlock_job(&self, job: &str, replica: &str) -> Result<(), StoreError> {
        let job = job.to_owned();
        let replica = replica.to_owned();
        self.run("release a job lock", move |conn| {
            conn.execute(
                "DELETE FROM job_locks WHERE job = ?1 AND holder = ?2",
                params![job, replica],
            )
            .map(drop)
            .map_err(|e| StoreError::Backend(format!("release job lock {job}: {e}")))
        })
        .await
    }

    fn event_feed(&self) -> Option<tokio::sync::broadcast::Receiver<SessionId>> {
        None
    }
}
