//! `Idempotency-Key` on `POST /api/v1/sessions/create` (see
//! `cc_core::idempotency`): the same key and body from the same user within
//! a day answer with the session the first request created; another body
//! under the key is `422 idempotency_key_reused`; concurrent requests with
//! one key create one session (the later ones wait for the first).

use super::ApiError;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use cc_core::idempotency::{check_key, Claim, ClaimOutcome, IdempotencyStore};
use cc_core::SessionId;
use std::time::{Duration, SystemTime};

pub(super) const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// Set (to `true`) on an answer that repeats an earlier request's session.
pub(super) const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long a request waits for a concurrent one holding its key to
/// finish its create.
const WAIT_FOR_HOLDER: Duration = Duration::from_secs(60);
const POLL_HOLDER: Duration = Duration::from_millis(50);

/// The request's key, if it sent one.
pub(super) fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(&HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", m);
    if values.next().is_some() {
        return Err(invalid(
            "send one Idempotency-Key header, not several".into(),
        ));
    }
    let key = value
        .to_str()
        .map_err(|_| invalid("Idempotency-Key may hold only visible ASCII characters".into()))?;
    check_key(key).map_err(invalid)?;
    Ok(Some(key.to_owned()))
}

/// What to do with a keyed create.
pub(super) enum Begin {
    /// This request holds the key: create, then [`finish`].
    Create,
    /// An earlier request with this key and body made this session.
    Replay(SessionId),
}

/// Claims `key` for `user`'s request, or finds the session an earlier
/// request with it made (waiting while that request is still creating).
pub(super) async fn begin<S: IdempotencyStore>(
    store: &S,
    user: &str,
    key: &str,
    request_hash: &str,
) -> Result<Begin, ApiError> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_HOLDER;
    loop {
        let claim = Claim {
            user: user.to_owned(),
            key: key.to_owned(),
            request_hash: request_hash.to_owned(),
            at: SystemTime::now(),
        };
        let entry = match store.claim_idempotency_key(&claim).await? {
            ClaimOutcome::Claimed => return Ok(Begin::Create),
            ClaimOutcome::Existing(entry) => entry,
        };
        if entry.request_hash != request_hash {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body in the last \
                 24 hours; send a new key for a new session",
            ));
        }
        if let Some(id) = entry.session {
            return Ok(Begin::Replay(id));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "another request with this Idempotency-Key is still creating its session; \
                 retry shortly",
            ));
        }
        tokio::time::sleep(POLL_HOLDER).await;
    }
}

/// Completes the claim with the created session, or releases it when the
/// create failed so a retry with the key tries afresh. A store error here
/// leaves the claim to expire ([`cc_core::idempotency::CLAIM_ABANDONED_AFTER`])
/// and is logged: the create's own answer stands.
pub(super) async fn finish<S: IdempotencyStore>(
    store: &S,
    user: &str,
    key: &str,
    created: Option<&SessionId>,
) {
    let done = match created {
        Some(id) => store.complete_idempotency_key(user, key, id).await,
        None => store.release_idempotency_key(user, key).await,
    };
    if let Err(e) = done {
        tracing::warn!(error = %e, user, "recording the outcome of an idempotent create");
    }
}
