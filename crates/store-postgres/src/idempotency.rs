//! [`IdempotencyStore`] on PostgreSQL: the `idempotency_keys` table. A
//! claim is one transaction: drop the key's entry if it no longer holds
//! the key, insert (`ON CONFLICT DO NOTHING`, which waits for a concurrent
//! inserter of the same key to commit or roll back), or read the holder;
//! so of concurrent claims, across replicas, one wins.

use crate::{pg_error, PostgresStore};
use cc_core::idempotency::{Claim, ClaimOutcome, IdempotencyStore};
use cc_core::store_codec::idempotency::{cutoffs, dead, entry};
use cc_core::store_codec::to_ms;
use cc_core::{SessionId, StoreError};

/// Rounds of insert-or-read: the holder read after a conflict can vanish
/// in between (a failed create released it), and the next round then
/// inserts.
const CLAIM_ROUNDS: usize = 5;

impl IdempotencyStore for PostgresStore {
    async fn claim_idempotency_key(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        let at = to_ms("claim time", claim.at)?;
        let (expired, abandoned) = cutoffs(claim.at)?;
        let mut conn = self.pool.get().await?;
        for _ in 0..CLAIM_ROUNDS {
            let tx = conn.transaction().await.map_err(pg_error("begin claim"))?;
            tx.execute(
                &format!(
                    "DELETE FROM idempotency_keys WHERE user_name = $1 AND key = $2 AND {}",
                    dead("$3", "$4")
                ),
                &[&claim.user, &claim.key, &expired, &abandoned],
            )
            .await
            .map_err(pg_error("drop a dead idempotency key"))?;
            let inserted = tx
                .execute(
                    "INSERT INTO idempotency_keys \
                     (user_name, key, request_hash, session_id, created_at_ms) \
                     VALUES ($1, $2, $3, NULL, $4) ON CONFLICT DO NOTHING",
                    &[&claim.user, &claim.key, &claim.request_hash, &at],
                )
                .await
                .map_err(pg_error("insert idempotency key"))?;
            let outcome = if inserted == 1 {
                Some(ClaimOutcome::Claimed)
            } else {
                tx.query_opt(
                    "SELECT request_hash, session_id, created_at_ms FROM idempotency_keys \
                     WHERE user_name = $1 AND key = $2",
                    &[&claim.user, &claim.key],
                )
                .await
                .map_err(pg_error("read idempotency key"))?
                .map(|r| entry(&claim.key, r.get(0), r.get(1), r.get(2)))
                .transpose()?
                .map(ClaimOutcome::Existing)
            };
            tx.commit().await.map_err(pg_error("commit claim"))?;
            if let Some(outcome) = outcome {
                // Every user's dead keys, so the table stays as small as
                // the last day's creates. Best effort: two replicas
                // sweeping at once may deadlock, and the next claim
                // sweeps again; the claim's answer stands either way.
                let _swept = conn
                    .execute(
                        &format!("DELETE FROM idempotency_keys WHERE {}", dead("$1", "$2")),
                        &[&expired, &abandoned],
                    )
                    .await;
                return Ok(outcome);
            }
        }
        Err(StoreError::Conflict(format!(
            "idempotency key {:?} changed hands {CLAIM_ROUNDS} times during one claim",
            claim.key
        )))
    }

    async fn complete_idempotency_key(
        &self,
        user: &str,
        key: &str,
        session: &SessionId,
    ) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        conn.execute(
            "UPDATE idempotency_keys SET session_id = $3 \
             WHERE user_name = $1 AND key = $2 AND session_id IS NULL",
            &[&user, &key, &session.as_str()],
        )
        .await
        .map_err(pg_error("complete idempotency key"))?;
        Ok(())
    }

    async fn release_idempotency_key(&self, user: &str, key: &str) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        conn.execute(
            "DELETE FROM idempotency_keys \
             WHERE user_name = $1 AND key = $2 AND session_id IS NULL",
            &[&user, &key],
        )
        .await
        .map_err(pg_error("release idempotency key"))?;
        Ok(())
    }

    async fn delete_user_idempotency_keys(&self, user: &str) -> Result<u64, StoreError> {
        let conn = self.pool.get().await?;
        conn.execute(
            "DELETE FROM idempotency_keys WHERE user_name = $1",
            &[&user],
        )
        .await
        .map_err(pg_error("delete idempotency keys"))
    }
}
