//! [`AuditStore`] on SQLite: the `audit_log` table.
//!
//! The table is append-only by trigger: deletes and changes to any hashed
//! column abort; only the personal fields (actor, source IP, nonce) may be
//! changed, which is how [`AuditStore::redact_audit_actor`] erases a user.
//! Reading the chain's tail and inserting the next record happen in one
//! immediate transaction, so concurrent appends never fork the chain.

use crate::{backend, SqliteStore};
use cc_core::audit::{AuditEvent, AuditFilter, AuditRecord, AuditStore, GENESIS_HASH, REDACTED};
use cc_core::StoreError;
use rusqlite::{params, types::Value, OptionalExtension, Row, TransactionBehavior};

const COLUMNS: &str = "seq, time, actor, source_ip, action, session_id, outcome, detail, \
     nonce, personal_digest, prev_hash, hash";

fn from_row(r: &Row<'_>) -> rusqlite::Result<(i64, AuditRecord)> {
    let seq: i64 = r.get(0)?;
    Ok((
        seq,
        AuditRecord {
            seq: seq.max(0) as u64,
            event: AuditEvent {
                time: r.get(1)?,
                actor: r.get(2)?,
                source_ip: r.get(3)?,
                action: r.get(4)?,
                session_id: r.get(5)?,
                outcome: r.get(6)?,
                detail: r.get(7)?,
            },
            nonce: r.get(8)?,
            personal_digest: r.get(9)?,
            prev_hash: r.get(10)?,
            hash: r.get(11)?,
        },
    ))
}

fn check((seq, rec): (i64, AuditRecord)) -> Result<AuditRecord, StoreError> {
    if seq < 1 {
        return Err(StoreError::Corrupt(format!("audit record with seq {seq}")));
    }
    Ok(rec)
}

impl AuditStore for SqliteStore {
    async fn append_audit(&self, event: AuditEvent) -> Result<AuditRecord, StoreError> {
        self.run("append audit", move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend("begin audit append"))?;
            let tail: Option<(i64, String)> = tx
                .query_row(
                    "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(backend("read audit tail"))?;
            let (prev_seq, prev_hash) = tail.unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
            let rec = AuditRecord::chain(prev_seq.max(0) as u64, &prev_hash, event);
            tx.execute(
                &format!(
                    "INSERT INTO audit_log ({COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ),
                params![
                    rec.seq as i64,
                    rec.event.time,
                    rec.event.actor,
                    rec.event.source_ip,
                    rec.event.action,
                    rec.event.session_id,
                    rec.event.outcome,
                    rec.event.detail,
                    rec.nonce,
                    rec.personal_digest,
                    rec.prev_hash,
                    rec.hash,
                ],
            )
            .map_err(backend("insert audit record"))?;
            tx.commit().map_err(backend("commit audit record"))?;
            Ok(rec)
        })
        .await
    }

    async fn audit_records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let f = filter.clone();
        let rows = self
            .run("read audit", move |conn| {
                let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq > ?1");
                let mut args: Vec<Value> =
                    vec![Value::Integer(i64::try_from(f.since).unwrap_or(i64::MAX))];
                if let Some(a) = f.actor {
                    args.push(Value::Text(a));
                    sql += &format!(" AND actor = ?{}", args.len());
                }
                if let Some(a) = f.action {
                    if a.ends_with('.') {
                        args.push(Value::Text(format!("{}%", a.replace(['%', '_'], ""))));
                        sql += &format!(" AND action LIKE ?{}", args.len());
                    } else {
                        args.push(Value::Text(a));
                        sql += &format!(" AND action = ?{}", args.len());
                    }
                }
                if let Some(s) = f.session_id {
                    args.push(Value::Text(s));
                    sql += &format!(" AND session_id = ?{}", args.len());
                }
                let limit = if f.limit == 0 {
                    i64::MAX
                } else {
                    f.limit as i64
                };
                args.push(Value::Integer(limit));
                sql += &format!(" ORDER BY seq LIMIT ?{}", args.len());
                conn.prepare(&sql)
                    .and_then(|mut st| {
                        st.query_map(rusqlite::params_from_iter(args), from_row)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(backend("read audit"))
            })
            .await?;
        rows.into_iter().map(check).collect()
    }

    async fn redact_audit_actor(&self, user: &str) -> Result<u64, StoreError> {
        let user = user.to_owned();
        self.run("redact audit", move |conn| {
            let n = conn
                .execute(
                    "UPDATE audit_log SET actor = ?2, source_ip = NULL, nonce = NULL \
                     WHERE actor = ?1",
                    params![user, REDACTED],
                )
                .map_err(backend("redact audit"))?;
            Ok(n as u64)
        })
        .await
    }
}
