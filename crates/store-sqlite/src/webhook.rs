//! [`WebhookStore`] on SQLite: `webhook_endpoints` and the delivery queue
//! `webhook_deliveries` (its `seq` the queue order). A claim is one
//! immediate transaction under the connection's lock, so two attempts
//! never hold one delivery.

use crate::{backend, SqliteStore};
use cc_core::store_codec::to_ms;
use cc_core::store_codec::webhook::{
    attempt_columns, claimable, decode_delivery, decode_endpoint, delivery_columns_of,
    encode_endpoint, RawDelivery, RawEndpoint, DELIVERY_COLUMNS, ENDPOINT_COLUMNS,
};
use cc_core::webhook::{Attempt, Delivery, Due, Endpoint, NewDelivery, WebhookStore};
use cc_core::StoreError;
use rusqlite::{params, Row, TransactionBehavior};
use std::time::{Duration, SystemTime};

fn raw_endpoint(r: &Row<'_>) -> rusqlite::Result<RawEndpoint> {
    Ok(RawEndpoint {
        id: r.get(0)?,
        owner: r.get(1)?,
        all_sessions: r.get(2)?,
        url: r.get(3)?,
        events: r.get(4)?,
        description: r.get(5)?,
        sealed_secret: r.get(6)?,
        created_at_ms: r.get(7)?,
    })
}

/// A delivery's row from [`DELIVERY_COLUMNS`] starting at column `at`.
fn raw_delivery(r: &Row<'_>, at: usize) -> rusqlite::Result<RawDelivery> {
    Ok(RawDelivery {
        id: r.get(at)?,
        endpoint_id: r.get(at + 1)?,
        session_id: r.get(at + 2)?,
        kind: r.get(at + 3)?,
        state: r.get(at + 4)?,
        attempts: r.get(at + 5)?,
        last_status: r.get(at + 6)?,
        last_error: r.get(at + 7)?,
        created_at_ms: r.get(at + 8)?,
        next_attempt_ms: r.get(at + 9)?,
        finished_at_ms: r.get(at + 10)?,
    })
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl WebhookStore for SqliteStore {
    async fn insert_endpoint(&self, e: &Endpoint) -> Result<(), StoreError> {
        let r = encode_endpoint(e)?;
        self.run("insert webhook", move |conn| {
            conn.execute(
                &format!(
                    "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    r.id,
                    r.owner,
                    r.all_sessions,
                    r.url,
                    r.events,
                    r.description,
                    r.sealed_secret,
                    r.created_at_ms
                ],
            )
            .map_err(backend("insert webhook"))?;
            Ok(())
        })
        .await
    }

    async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let rows = self
            .run("list webhooks", |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at_ms, id"
                ))
                .and_then(|mut st| {
                    st.query_map([], raw_endpoint)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(backend("list webhooks"))
            })
            .await?;
        rows.into_iter().map(decode_endpoint).collect()
    }

    async fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.run("delete webhook", move |conn| {
            let n = conn
                .execute("DELETE FROM webhook_endpoints WHERE id = ?1", [id])
                .map_err(backend("delete webhook"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn enqueue_deliveries(&self, deliveries: &[NewDelivery]) -> Result<(), StoreError> {
        let rows = deliveries
            .iter()
            .map(|d| {
                Ok((
                    d.id.clone(),
                    d.endpoint_id.clone(),
                    d.session.to_string(),
                    d.kind.as_str(),
                    d.body.clone(),
                    to_ms("created_at", d.created_at)?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.run("queue deliveries", move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend("begin queueing"))?;
            for (id, endpoint, session, kind, body, created) in rows {
                tx.execute(
                    "INSERT INTO webhook_deliveries (id, endpoint_id, session_id, kind, body, \
                     state, attempts, created_at_ms, next_attempt_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6)",
                    params![id, endpoint, session, kind, body, created],
                )
                .map_err(backend("queue delivery"))?;
            }
            tx.commit().map_err(backend("commit queueing"))
        })
        .await
    }

    async fn claim_due(
        &self,
        holder: &str,
        now: SystemTime,
        lock_for: Duration,
        limit: usize,
    ) -> Result<Vec<Due>, StoreError> {
        let holder = holder.to_owned();
        let now = to_ms("now", now)?;
        let until = now.saturating_add(ms(lock_for));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .run("claim deliveries", move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(backend("begin claim"))?;
                let seqs: Vec<i64> = tx
                    .prepare_cached(&format!(
                        "SELECT d.seq FROM webhook_deliveries d WHERE {} ORDER BY d.seq LIMIT ?2",
                        claimable("?1")
                    ))
                    .and_then(|mut st| {
                        st.query_map(params![now, limit], |r| r.get(0))?
                            .collect::<Result<_, _>>()
                    })
                    .map_err(backend("find due deliveries"))?;
                let mut rows = Vec::with_capacity(seqs.len());
                {
                    let mut lock = tx
                        .prepare_cached(
                            "UPDATE webhook_deliveries SET locked_by = ?2, locked_until_ms = ?3, \
                             attempts = attempts + 1 WHERE seq = ?1",
                        )
                        .map_err(backend("lock delivery"))?;
                    let mut read = tx
                        .prepare_cached(&format!(
                            "SELECT d.body, w.url, w.sealed_secret, {} \
                             FROM webhook_deliveries d \
                             JOIN webhook_endpoints w ON w.id = d.endpoint_id \
                             WHERE d.seq = ?1",
                            delivery_columns_of("d")
                        ))
                        .map_err(backend("read delivery"))?;
                    for seq in seqs {
                        lock.execute(params![seq, holder, until])
                            .map_err(backend("lock delivery"))?;
                        let row = read
                            .query_row([seq], |r| {
                                Ok((
                                    r.get::<_, String>(0)?,
                                    r.get::<_, String>(1)?,
                                    r.get::<_, Vec<u8>>(2)?,
                                    raw_delivery(r, 3)?,
                                ))
                            })
                            .map_err(backend("read delivery"))?;
                        rows.push(row);
                    }
                }
                tx.commit().map_err(backend("commit claim"))?;
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(|(body, url, sealed_secret, raw)| {
                Ok(Due {
                    delivery: decode_delivery(raw)?,
                    body,
                    url,
                    sealed_secret,
                })
            })
            .collect()
    }

    async fn record_attempt(
        &self,
        id: &str,
        holder: &str,
        attempt: &Attempt,
        at: SystemTime,
    ) -> Result<bool, StoreError> {
        let (state, status, error, next, finished) = attempt_columns(attempt, at)?;
        let (id, holder) = (id.to_owned(), holder.to_owned());
        self.run("record attempt", move |conn| {
            let n = conn
                .execute(
                    "UPDATE webhook_deliveries SET state = ?3, last_status = ?4, last_error = ?5, \
                     next_attempt_ms = ?6, finished_at_ms = ?7, locked_by = NULL, \
                     locked_until_ms = NULL \
                     WHERE id = ?1 AND locked_by = ?2 AND state = 'pending'",
                    params![id, holder, state, status, error, next, finished],
                )
                .map_err(backend("record attempt"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn deliveries(
        &self,
        endpoint_id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let endpoint = endpoint_id.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .run("list deliveries", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                     WHERE endpoint_id = ?1 ORDER BY seq DESC LIMIT ?2"
                ))
                .and_then(|mut st| {
                    st.query_map(params![endpoint, limit], |r| raw_delivery(r, 0))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(backend("list deliveries"))
            })
            .await?;
        rows.into_iter().map(decode_delivery).collect()
    }

    async fn purge_deliveries(&self, before: SystemTime) -> Result<u64, StoreError> {
        let before = to_ms("purge time", before)?;
        self.run("purge deliveries", move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM webhook_deliveries \
                     WHERE state != 'pending' AND finished_at_ms < ?1",
                    [before],
                )
                .map_err(backend("purge deliveries"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn delete_user_endpoints(&self, user: &str) -> Result<u64, StoreError> {
        let user = user.to_owned();
        self.run("delete webhooks", move |conn| {
            let n = conn
                .execute("DELETE FROM webhook_endpoints WHERE owner = ?1", [user])
                .map_err(backend("delete webhooks"))?;
            Ok(n as u64)
        })
        .await
    }
}
