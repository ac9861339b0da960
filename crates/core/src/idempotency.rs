//! Idempotency keys on session create: a client that retries a create
//! (a timeout, a dropped connection, a CI job run twice) with the same
//! `Idempotency-Key` gets the session the first request made, never a
//! second one.
//!
//! A key belongs to one user and lives [`KEY_TTL`]. The first request
//! *claims* it (a row with the request's hash and no session yet), creates
//! the session, then *completes* the claim with the session's ID; a create
//! that fails *releases* the claim, so a retry tries afresh. Invariants
//! (proven by the store conformance suite on every backend):
//! - Of concurrent claims of one key, exactly one gets
//!   [`ClaimOutcome::Claimed`]; the others see the winner's entry.
//! - A key older than [`KEY_TTL`] is gone: the next claim wins afresh.
//! - A claim never completed within [`CLAIM_ABANDONED_AFTER`] (its replica
//!   died mid-create) is abandoned: the next claim wins afresh.
//!
//! What the entry is matched against is a hash of the request
//! ([`request_hash`]), never the request itself: the body carries the
//! user's Anthropic key.

use crate::error::StoreError;
use crate::ids::SessionId;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::time::{Duration, SystemTime};

/// How long a key answers with its first session.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long an uncompleted claim holds before another request may take
/// the key over: far beyond any create (which returns once the runtime
/// accepted the session), so only a claim whose replica died expires.
pub const CLAIM_ABANDONED_AFTER: Duration = Duration::from_secs(300);
/// Longest key accepted (Stripe's and E2B's limit).
pub const MAX_KEY_LEN: usize = 255;

/// A claim of `key` for `user`'s request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub user: String,
    pub key: String,
    /// [`request_hash`] of the request body.
    pub request_hash: String,
    /// The claimant's clock: the claim's age and the key's expiry are
    /// measured against it.
    pub at: SystemTime,
}

/// A key's stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub request_hash: String,
    /// The session the first request created; `None` while it is still
    /// being created.
    pub session: Option<SessionId>,
    pub created_at: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key is this request's: create, then complete or release.
    Claimed,
    /// Another request holds the key (completed or still creating).
    Existing(KeyEntry),
}

/// Where idempotency keys persist.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims the key unless a live entry holds it (one younger than
    /// [`KEY_TTL`], and, while uncompleted, younger than
    /// [`CLAIM_ABANDONED_AFTER`]); expired and abandoned entries are
    /// replaced. Atomic: concurrent claims have one winner.
    fn claim_idempotency_key(
        &self,
        claim: &Claim,
    ) -> impl Future<Output = Result<ClaimOutcome, StoreError>> + Send;
    /// Records the session the claimed key's request created.
    fn complete_idempotency_key(
        &self,
        user: &str,
        key: &str,
        session: &SessionId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Drops an uncompleted claim (its create failed); a completed entry
    /// stays.
    fn release_idempotency_key(
        &self,
        user: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Deletes every key of `user` (erasure). Returns how many.
    fn delete_user_idempotency_keys(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Checks a client's key: 1 to [`MAX_KEY_LEN`] visible ASCII characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} characters long"
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("Idempotency-Key may hold only visible ASCII characters".into());
    }
    Ok(())
}

/// The hex SHA-256 of a request's canonical bytes (the caller's
/// serialisation of the parsed request, so formatting and field order in
/// the client's JSON do not matter).
pub fn request_hash(canonical: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"claudecluster create v1\0");
    h.update(canonical);
    crate::identity::hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(check_key("ci-run-1842/create").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(check_key("two words").is_err());
        assert!(check_key("caf\u{e9}").is_err());
    }

    #[test]
    fn hashes_differ_by_body_and_hide_it() {
        let a = request_hash(br#"{"claudeApiKey":"sk-ant-1"}"#);
        let b = request_hash(br#"{"claudeApiKey":"sk-ant-2"}"#);
        assert_ne!(a, b);
        assert_eq!(a, request_hash(br#"{"claudeApiKey":"sk-ant-1"}"#));
        assert_eq!(a.len(), 64);
        assert!(!a.contains("sk-ant"));
    }
}
