//! [`IdempotencyStore`] on SQLite: the `idempotency_keys` table. A claim
//! is one immediate transaction under the connection's lock (drop what no
//! longer holds a key, insert, or read the holder), so two claims of one
//! key never both win.

use crate::{backend, SqliteStore};
use cc_core::idempotency::{Claim, ClaimOutcome, IdempotencyStore};
use cc_core::store_codec::idempotency::{cutoffs, dead, entry};
use cc_core::store_codec::to_ms;
use cc_core::{SessionId, StoreError};
use rusqlite::{params, TransactionBehavior};

impl IdempotencyStore for SqliteStore {
    async fn claim_idempotency_key(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        let claim = claim.clone();
        let at = to_ms("claim time", claim.at)?;
        let (expired, abandoned) = cutoffs(claim.at)?;
        self.run("claim idempotency key", move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend("begin claim"))?;
            // Every user's dead keys, not only this one: the table stays
            // as small as the last day's creates.
            tx.execute(
                &format!("DELETE FROM idempotency_keys WHERE {}", dead("?1", "?2")),
                params![expired, abandoned],
            )
            .map_err(backend("drop dead idempotency keys"))?;
            let inserted = tx
                .execute(
                    "INSERT INTO idempotency_keys (user, key, request_hash, session_id, created_at_ms) \
                     VALUES (?1, ?2, ?3, NULL, ?4) ON CONFLICT DO NOTHING",
                    params![claim.user, claim.key, claim.request_hash, at],
                )
                .map_err(backend("insert idempotency key"))?;
            let outcome = if inserted == 1 {
                ClaimOutcome::Claimed
            } else {
                let (hash, session, created): (String, Option<String>, i64) = tx
                    .query_row(
                        "SELECT request_hash, session_id, created_at_ms FROM idempotency_keys \
                         WHERE user = ?1 AND key = ?2",
                        params![claim.user, claim.key],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .map_err(backend("read idempotency key"))?;
                ClaimOutcome::Existing(entry(&claim.key, hash, session, created)?)
            };
            tx.commit().map_err(backend("commit claim"))?;
            Ok(outcome)
        })
        .await
    }

    async fn complete_idempotency_key(
        &self,
        user: &str,
        key: &str,
        session: &SessionId,
    ) -> Result<(), StoreError> {
        let (user, key, session) = (user.to_owned(), key.to_owned(), session.to_string());
        self.run("complete idempotency key", move |conn| {
            conn.execute(
                "UPDATE idempotency_keys SET session_id = ?3 \
                 WHERE user = ?1 AND key = ?2 AND session_id IS NULL",
                params![user, key, session],
            )
            .map_err(backend("complete idempotency key"))?;
            Ok(())
        })
        .await
    }

    async fn release_idempotency_key(&self, user: &str, key: &str) -> Result<(), StoreError> {
        let (user, key) = (user.to_owned(), key.to_owned());
        self.run("release idempotency key", move |conn| {
            conn.execute(
                "DELETE FROM idempotency_keys WHERE user = ?1 AND key = ?2 AND session_id IS NULL",
                params![user, key],
            )
            .map_err(backend("release idempotency key"))?;
            Ok(())
        })
        .await
    }

    async fn delete_user_idempotency_keys(&self, user: &str) -> Result<u64, StoreError> {
        let user = user.to_owned();
        self.run("delete idempotency keys", move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM idempotency_keys WHERE user = ?1",
                    params![user],
                )
                .map_err(backend("delete idempotency keys"))?;
            Ok(n as u64)
        })
        .await
    }
}
