//! The [`IdempotencyStore`] cases: one winner per key, the winner's
//! session for everyone after, expiry, abandonment, release and erasure.

use cc_core::idempotency::{
    Claim, ClaimOutcome, IdempotencyStore, KeyEntry, CLAIM_ABANDONED_AFTER, KEY_TTL,
};
use cc_core::SessionId;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn claim(user: &str, key: &str, hash: &str, at: SystemTime) -> Claim {
    Claim {
        user: user.into(),
        key: key.into(),
        request_hash: hash.into(),
        at,
    }
}

fn existing(outcome: ClaimOutcome) -> KeyEntry {
    match outcome {
        ClaimOutcome::Existing(e) => e,
        ClaimOutcome::Claimed => panic!("the key was claimed afresh"),
    }
}

/// A whole-millisecond time (what the stores keep).
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_800_000_000_000)
}

pub async fn a_key_answers_with_its_first_session<S: IdempotencyStore>(store: S) {
    let c = claim("alice", "k1", "h1", t0());
    assert_eq!(
        store.claim_idempotency_key(&c).await.expect("claim"),
        ClaimOutcome::Claimed
    );
    // Still creating: the next request sees the claim, with no session.
    let later = claim("alice", "k1", "h1", t0() + Duration::from_secs(1));
    let e = existing(store.claim_idempotency_key(&later).await.expect("claim"));
    assert_eq!(
        e,
        KeyEntry {
            request_hash: "h1".into(),
            session: None,
            created_at: t0(),
        }
    );
    let id = SessionId::generate();
    store
        .complete_idempotency_key("alice", "k1", &id)
        .await
        .expect("complete");
    let e = existing(store.claim_idempotency_key(&later).await.expect("claim"));
    assert_eq!(e.session.as_ref(), Some(&id));
    // Another body under the same key sees the first body's hash.
    let other = claim("alice", "k1", "h2", t0() + Duration::from_secs(2));
    let e = existing(store.claim_idempotency_key(&other).await.expect("claim"));
    assert_eq!((e.request_hash.as_str(), e.session), ("h1", Some(id)));
    // Keys are per user, and per key.
    for c in [
        claim("bob", "k1", "h1", t0()),
        claim("alice", "k2", "h1", t0()),
    ] {
        assert_eq!(
            store.claim_idempotency_key(&c).await.expect("claim"),
            ClaimOutcome::Claimed,
            "{c:?}"
        );
    }
}

pub async fn a_released_claim_is_claimed_again_and_a_completed_one_stays<S: IdempotencyStore>(
    store: S,
) {
    let c = claim("alice", "k", "h", t0());
    assert_eq!(
        store.claim_idempotency_key(&c).await.expect("claim"),
        ClaimOutcome::Claimed
    );
    store
        .release_idempotency_key("alice", "k")
        .await
        .expect("release");
    assert_eq!(
        store.claim_idempotency_key(&c).await.expect("claim"),
        ClaimOutcome::Claimed
    );
    let id = SessionId::generate();
    store
        .complete_idempotency_key("alice", "k", &id)
        .await
        .expect("complete");
    // Neither a release nor a second completion moves a completed key.
    store
        .release_idempotency_key("alice", "k")
        .await
        .expect("release");
    store
        .complete_idempotency_key("alice", "k", &SessionId::generate())
        .await
        .expect("complete again");
    let e = existing(store.claim_idempotency_key(&c).await.expect("claim"));
    assert_eq!(e.session, Some(id));
}

pub async fn keys_expire_and_abandoned_claims_are_taken_over<S: IdempotencyStore>(store: S) {
    let done = claim("alice", "done", "h", t0());
    let stuck = claim("alice", "stuck", "h", t0());
    for c in [&done, &stuck] {
        assert_eq!(
            store.claim_idempotency_key(c).await.expect("claim"),
            ClaimOutcome::Claimed
        );
    }
    let id = SessionId::generate();
    store
        .complete_idempotency_key("alice", "done", &id)
        .await
        .expect("complete");
    // Just before abandonment, the uncompleted claim still holds.
    let at = |d: Duration| t0() + d;
    let early = at(CLAIM_ABANDONED_AFTER - Duration::from_millis(1));
    assert_eq!(
        existing(
            store
                .claim_idempotency_key(&claim("alice", "stuck", "h2", early))
                .await
                .expect("claim")
        )
        .request_hash,
        "h"
    );
    // A claimant whose clock is behind the entry's sees it hold.
    let behind = t0() - Duration::from_secs(5);
    assert_eq!(
        existing(
            store
                .claim_idempotency_key(&claim("alice", "stuck", "h3", behind))
                .await
                .expect("claim")
        )
        .request_hash,
        "h"
    );
    // Past it, the uncompleted claim is taken over; the completed key holds.
    let late = at(CLAIM_ABANDONED_AFTER);
    assert_eq!(
        store
            .claim_idempotency_key(&claim("alice", "stuck", "h2", late))
            .await
            .expect("claim"),
        ClaimOutcome::Claimed
    );
    let e = existing(
        store
            .claim_idempotency_key(&claim("alice", "done", "h", late))
            .await
            .expect("claim"),
    );
    assert_eq!(e.session, Some(id));
    // A day on, the completed key is gone too.
    assert_eq!(
        store
            .claim_idempotency_key(&claim("alice", "done", "h3", at(KEY_TTL)))
            .await
            .expect("claim"),
        ClaimOutcome::Claimed
    );
}

pub async fn concurrent_claims_of_a_key_have_one_winner<S: IdempotencyStore>(store: S) {
    const CLAIMANTS: usize = 8;
    const ROUNDS: usize = 5;
    let store = Arc::new(store);
    for round in 0..ROUNDS {
        let key = format!("k{round}");
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..CLAIMANTS {
            let store = Arc::clone(&store);
            let c = claim("alice", &key, &format!("h{n}"), t0());
            tasks.spawn(async move {
                let outcome = store.claim_idempotency_key(&c).await.expect("claim");
                (c.request_hash, outcome)
            });
        }
        let mut winners = Vec::new();
        let mut seen = Vec::new();
        while let Some(res) = tasks.join_next().await {
            match res.expect("task") {
                (hash, ClaimOutcome::Claimed) => winners.push(hash),
                (_, ClaimOutcome::Existing(e)) => seen.push(e.request_hash),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one claim wins: {winners:?}");
        assert!(
            seen.iter().all(|h| *h == winners[0]),
            "every loser sees the winner's entry: {winners:?} {seen:?}"
        );
    }
}

pub async fn a_users_keys_are_deleted<S: IdempotencyStore>(store: S) {
    for (user, key) in [("alice", "a"), ("alice", "b"), ("bob", "a")] {
        store
            .claim_idempotency_key(&claim(user, key, "h", t0()))
            .await
            .expect("claim");
    }
    assert_eq!(
        store
            .delete_user_idempotency_keys("alice")
            .await
            .expect("delete"),
        2
    );
    assert_eq!(
        store
            .claim_idempotency_key(&claim("alice", "a", "h2", t0()))
            .await
            .expect("claim"),
        ClaimOutcome::Claimed
    );
    assert!(matches!(
        store
            .claim_idempotency_key(&claim("bob", "a", "h2", t0()))
            .await
            .expect("claim"),
        ClaimOutcome::Existing(_)
    ));
}
