//! [`AuditStore`] on PostgreSQL: the `audit_log` table.
//!
//! The table is append-only by trigger: deletes, truncation and changes to
//! any hashed column raise an error; only the personal fields (actor,
//! source IP, nonce) may be changed, which is how
//! [`AuditStore::redact_audit_actor`] erases a user. An append takes an
//! exclusive lock on the table (readers go on) before reading the chain's
//! tail, so concurrent appends from any connection or replica never fork
//! the chain.

use crate::{pg_error, Params, PostgresStore};
use cc_core::audit::{AuditEvent, AuditFilter, AuditRecord, AuditStore, GENESIS_HASH, REDACTED};
use cc_core::StoreError;
use tokio_postgres::Row;

const COLUMNS: &str = "seq, time, actor, source_ip, action, session_id, outcome, detail, \
     nonce, personal_digest, prev_hash, hash";

fn decode(r: &Row) -> Result<AuditRecord, StoreError> {
    let seq: i64 = r.get(0);
    if seq < 1 {
        return Err(StoreError::Corrupt(format!("audit record with seq {seq}")));
    }
    Ok(AuditRecord {
        seq: seq as u64,
        event: AuditEvent {
            time: r.get(1),
            actor: r.get(2),
            source_ip: r.get(3),
            action: r.get(4),
            session_id: r.get(5),
            outcome: r.get(6),
            detail: r.get(7),
        },
        nonce: r.get(8),
        personal_digest: r.get(9),
        prev_hash: r.get(10),
        hash: r.get(11),
    })
}

impl AuditStore for PostgresStore {
    async fn append_audit(&self, event: AuditEvent) -> Result<AuditRecord, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = conn
            .transaction()
            .await
            .map_err(pg_error("begin audit append"))?;
        // EXCLUSIVE: one appender at a time; plain reads are not blocked.
        tx.batch_execute("LOCK TABLE audit_log IN EXCLUSIVE MODE")
            .await
            .map_err(pg_error("lock the audit log"))?;
        let tail = tx
            .query_opt(
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(pg_error("read audit tail"))?;
        let (prev_seq, prev_hash) = match tail {
            Some(r) => (r.get::<_, i64>(0), r.get::<_, String>(1)),
            None => (0, GENESIS_HASH.to_owned()),
        };
        let rec = AuditRecord::chain(prev_seq.max(0) as u64, &prev_hash, event);
        let seq = rec.seq as i64;
        tx.execute(
            &format!(
                "INSERT INTO audit_log ({COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ),
            &[
                &seq,
                &rec.event.time,
                &rec.event.actor,
                &rec.event.source_ip,
                &rec.event.action,
                &rec.event.session_id,
                &rec.event.outcome,
                &rec.event.detail,
                &rec.nonce,
                &rec.personal_digest,
                &rec.prev_hash,
                &rec.hash,
            ],
        )
        .await
        .map_err(pg_error("insert audit record"))?;
        tx.commit().await.map_err(pg_error("commit audit record"))?;
        Ok(rec)
    }

    async fn audit_records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let since = i64::try_from(filter.since).unwrap_or(i64::MAX);
        let limit = if filter.limit == 0 {
            i64::MAX
        } else {
            i64::try_from(filter.limit).unwrap_or(i64::MAX)
        };
        let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq > $1");
        let mut args: Params<'_> = vec![&since];
        if let Some(a) = &filter.actor {
            args.push(a);
            sql += &format!(" AND actor = ${}", args.len());
        }
        if let Some(a) = &filter.action {
            args.push(a);
            if a.ends_with('.') {
                // A prefix, compared as text (no pattern characters).
                sql += &format!(" AND starts_with(action, ${})", args.len());
            } else {
                sql += &format!(" AND action = ${}", args.len());
            }
        }
        if let Some(s) = &filter.session_id {
            args.push(s);
            sql += &format!(" AND session_id = ${}", args.len());
        }
        args.push(&limit);
        sql += &format!(" ORDER BY seq LIMIT ${}", args.len());
        let conn = self.pool.get().await?;
        let rows = conn
            .query(&sql, &args)
            .await
            .map_err(pg_error("read audit"))?;
        rows.iter().map(decode).collect()
    }

    async fn redact_audit_actor(&self, user: &str) -> Result<u64, StoreError> {
        let conn = self.pool.get().await?;
        conn.execute(
            "UPDATE audit_log SET actor = $2, source_ip = NULL, nonce = NULL WHERE actor = $1",
            &[&user, &REDACTED],
        )
        .await
        .map_err(pg_error("redact audit"))
    }
}
