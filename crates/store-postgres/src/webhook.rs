//! [`WebhookStore`] on PostgreSQL: `webhook_endpoints` and the delivery
//! queue `webhook_deliveries` (its `seq` the queue order). A claim locks
//! its rows (`FOR UPDATE SKIP LOCKED`), so replicas claiming at once never
//! hold one delivery both.

use crate::{pg_error, PostgresStore};
use cc_core::store_codec::to_ms;
use cc_core::store_codec::webhook::{
    attempt_columns, claimable, decode_delivery, decode_endpoint, delivery_columns_of,
    encode_endpoint, RawDelivery, RawEndpoint, DELIVERY_COLUMNS, ENDPOINT_COLUMNS,
};
use cc_core::webhook::{Attempt, Delivery, Due, Endpoint, NewDelivery, WebhookStore};
use cc_core::StoreError;
use std::time::{Duration, SystemTime};
use tokio_postgres::Row;

fn raw_endpoint(r: &Row) -> RawEndpoint {
    RawEndpoint {
        id: r.get(0),
        owner: r.get(1),
        all_sessions: r.get(2),
        url: r.get(3),
        events: r.get(4),
        description: r.get(5),
        sealed_secret: r.get(6),
        created_at_ms: r.get(7),
    }
}

/// A delivery's row from [`DELIVERY_COLUMNS`] starting at column `at`.
fn raw_delivery(r: &Row, at: usize) -> RawDelivery {
    RawDelivery {
        id: r.get(at),
        endpoint_id: r.get(at + 1),
        session_id: r.get(at + 2),
        kind: r.get(at + 3),
        state: r.get(at + 4),
        attempts: r.get::<_, i32>(at + 5).into(),
        last_status: r.get::<_, Option<i32>>(at + 6).map(i64::from),
        last_error: r.get(at + 7),
        created_at_ms: r.get(at + 8),
        next_attempt_ms: r.get(at + 9),
        finished_at_ms: r.get(at + 10),
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl WebhookStore for PostgresStore {
    async fn insert_endpoint(&self, e: &Endpoint) -> Result<(), StoreError> {
        let r = encode_endpoint(e)?;
        let conn = self.pool.get().await?;
        conn.execute(
            &format!(
                "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            &[
                &r.id,
                &r.owner,
                &r.all_sessions,
                &r.url,
                &r.events,
                &r.description,
                &r.sealed_secret,
                &r.created_at_ms,
            ],
        )
        .await
        .map_err(pg_error("insert webhook"))?;
        Ok(())
    }

    async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let conn = self.pool.get().await?;
        conn.query(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at_ms, id"),
            &[],
        )
        .await
        .map_err(pg_error("list webhooks"))?
        .iter()
        .map(|r| decode_endpoint(raw_endpoint(r)))
        .collect()
    }

    async fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        let conn = self.pool.get().await?;
        let n = conn
            .execute("DELETE FROM webhook_endpoints WHERE id = $1", &[&id])
            .await
            .map_err(pg_error("delete webhook"))?;
        Ok(n == 1)
    }

    async fn enqueue_deliveries(&self, deliveries: &[NewDelivery]) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = conn
            .transaction()
            .await
            .map_err(pg_error("begin queueing"))?;
        for d in deliveries {
            let created = to_ms("created_at", d.created_at)?;
            tx.execute(
                "INSERT INTO webhook_deliveries (id, endpoint_id, session_id, kind, body, \
                 state, attempts, created_at_ms, next_attempt_ms) \
                 VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)",
                &[
                    &d.id,
                    &d.endpoint_id,
                    &d.session.as_str(),
                    &d.kind.as_str(),
                    &d.body,
                    &created,
                ],
            )
            .await
            .map_err(pg_error("queue delivery"))?;
        }
        tx.commit().await.map_err(pg_error("commit queueing"))
    }

    async fn claim_due(
        &self,
        holder: &str,
        now: SystemTime,
        lock_for: Duration,
        limit: usize,
    ) -> Result<Vec<Due>, StoreError> {
        let now = to_ms("now", now)?;
        let until = now.saturating_add(ms(lock_for));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let cols = delivery_columns_of("d");
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!(
                    "WITH due AS ( \
                         SELECT d.seq FROM webhook_deliveries d WHERE {} \
                         ORDER BY d.seq LIMIT $2 FOR UPDATE OF d SKIP LOCKED), \
                     locked AS ( \
                         UPDATE webhook_deliveries d \
                         SET locked_by = $3, locked_until_ms = $4, attempts = d.attempts + 1 \
                         FROM due WHERE d.seq = due.seq RETURNING d.*) \
                     SELECT d.body, w.url, w.sealed_secret, {cols} FROM locked d \
                     JOIN webhook_endpoints w ON w.id = d.endpoint_id ORDER BY d.seq",
                    claimable("$1")
                ),
                &[&now, &limit, &holder, &until],
            )
            .await
            .map_err(pg_error("claim deliveries"))?;
        rows.iter()
            .map(|r| {
                Ok(Due {
                    body: r.get(0),
                    url: r.get(1),
                    sealed_secret: r.get(2),
                    delivery: decode_delivery(raw_delivery(r, 3))?,
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
        let status = status.and_then(|s| i32::try_from(s).ok());
        let conn = self.pool.get().await?;
        let n = conn
            .execute(
                "UPDATE webhook_deliveries SET state = $3, last_status = $4, last_error = $5, \
                 next_attempt_ms = $6, finished_at_ms = $7, locked_by = NULL, \
                 locked_until_ms = NULL \
                 WHERE id = $1 AND locked_by = $2 AND state = 'pending'",
                &[&id, &holder, &state, &status, &error, &next, &finished],
            )
            .await
            .map_err(pg_error("record attempt"))?;
        Ok(n == 1)
    }

    async fn deliveries(
        &self,
        endpoint_id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.pool.get().await?;
        conn.query(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                 WHERE endpoint_id = $1 ORDER BY seq DESC LIMIT $2"
            ),
            &[&endpoint_id, &limit],
        )
        .await
        .map_err(pg_error("list deliveries"))?
        .iter()
        .map(|r| decode_delivery(raw_delivery(r, 0)))
        .collect()
    }

    async fn purge_deliveries(&self, before: SystemTime) -> Result<u64, StoreError> {
        let before = to_ms("purge time", before)?;
        let conn = self.pool.get().await?;
        conn.execute(
            "DELETE FROM webhook_deliveries WHERE state != 'pending' AND finished_at_ms < $1",
            &[&before],
        )
        .await
        .map_err(pg_error("purge deliveries"))
    }

    async fn delete_user_endpoints(&self, user: &str) -> Result<u64, StoreError> {
        let conn = self.pool.get().await?;
        conn.execute("DELETE FROM webhook_endpoints WHERE owner = $1", &[&user])
            .await
            .map_err(pg_error("delete webhooks"))
    }
}
