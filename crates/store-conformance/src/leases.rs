//! The [`Leases`] cases: who owns a live session, how ownership moves when
//! a holder stops renewing, and how a stale owner's writes are fenced off
//! (see `cc_core::lease`). Each case takes a fresh, empty store and uses
//! the traits only. Expiry is exercised with leases of [`SHORT`] and a
//! sleep of [`PAST_SHORT`], since the store's clock is not ours to pause.

use crate::sessions::record;
use cc_core::lease::{Heartbeat, Lease, Leases, Replica, LEASE_TTL};
use cc_core::{SessionId, SessionRecord, Store, StoreError};
use cc_wire::api::{ServerMessage, SessionState};
use std::sync::Arc;
use std::time::Duration;

/// A lease that runs out within the case.
const SHORT: Duration = Duration::from_millis(50);
/// Long enough after [`SHORT`] for any store's clock to see it expired
/// (PostgreSQL's clock is another process's: a margin for scheduling).
const PAST_SHORT: Duration = Duration::from_millis(150);
/// How long a case waits for the event feed to wake.
const FEED_WAIT: Duration = Duration::from_secs(10);

fn replica(n: u32) -> Replica {
    Replica {
        id: format!("replica-{n}"),
        url: format!("http://10.0.0.{n}:8080"),
    }
}

/// A live session inserted by `holder` (when given) under `fence`.
async fn created<S: Store>(store: &S, holder: Option<&Replica>, fence: u64) -> SessionRecord {
    let mut rec = record(SessionState::Ready, 1_700_000_000_000);
    rec.lease = Lease {
        holder: holder.map(|r| r.id.clone()),
        fence,
    };
    store.insert_session(&rec).await.expect("insert");
    rec
}

async fn beat<S: Leases>(
    store: &S,
    who: &Replica,
    held: &[SessionId],
    ttl: Duration,
) -> Vec<(SessionId, u64)> {
    let mut got = store
        .heartbeat(&Heartbeat {
            replica: who,
            held,
            ttl,
        })
        .await
        .expect("heartbeat");
    got.sort();
    got
}

async fn stored<S: Store>(store: &S, id: &SessionId) -> SessionRecord {
    store
        .get_session(id)
        .await
        .expect("get_session")
        .expect("session exists")
}

fn status(seq: u64) -> ServerMessage {
    ServerMessage::Status {
        seq,
        state: SessionState::Busy,
        timestamp: 1_714_564_800_000,
        reason: None,
    }
}

pub async fn a_created_session_is_held_by_its_creator<S: Store + Leases>(store: S) {
    let (a, b) = (replica(1), replica(2));
    beat(&store, &a, &[], LEASE_TTL).await;
    let rec = created(&store, Some(&a), 1).await;
    assert_eq!(
        stored(&store, &rec.id).await.lease,
        Lease {
            holder: Some(a.id.clone()),
            fence: 1
        },
        "the record reads back with the lease it was inserted with"
    );
    assert_eq!(
        store.holder(&rec.id).await.expect("holder"),
        Some(a.clone())
    );
    assert!(!store.unowned().await.expect("unowned").contains(&rec.id));
    assert_eq!(
        store.claim(&rec.id, &b.id, LEASE_TTL).await.expect("claim"),
        None,
        "another replica's valid lease cannot be claimed"
    );
    assert_eq!(
        store.claim(&rec.id, &a.id, LEASE_TTL).await.expect("claim"),
        Some(1),
        "the holder's own claim keeps its fence"
    );
    assert_eq!(beat(&store, &a, &[], LEASE_TTL).await, [(rec.id, 1)]);
}

pub async fn a_session_without_a_holder_is_unowned_and_claimable<S: Store + Leases>(store: S) {
    let a = replica(1);
    let rec = created(&store, None, 0).await;
    assert_eq!(
        store.unowned().await.expect("unowned"),
        std::slice::from_ref(&rec.id)
    );
    assert_eq!(store.holder(&rec.id).await.expect("holder"), None);
    assert_eq!(
        store.claim(&rec.id, &a.id, LEASE_TTL).await.expect("claim"),
        Some(1)
    );
    assert!(store.unowned().await.expect("unowned").is_empty());
    assert_eq!(
        stored(&store, &rec.id).await.lease,
        Lease {
            holder: Some(a.id.clone()),
            fence: 1
        }
    );
    assert_eq!(
        store
            .claim(&SessionId::generate(), &a.id, LEASE_TTL)
            .await
            .expect("claim"),
        None,
        "an unknown session cannot be claimed"
    );
}

pub async fn heartbeat_renews_and_reports_held_sessions<S: Store + Leases>(store: S) {
    let (a, b) = (replica(1), replica(2));
    let first = created(&store, Some(&a), 1).await;
    let second = created(&store, Some(&a), 4).await;
    let theirs = created(&store, Some(&b), 1).await;
    let mut ended = record(SessionState::Terminated, 1_700_000_000_000);
    ended.lease = Lease {
        holder: Some(a.id.clone()),
        fence: 2,
    };
    store.insert_session(&ended).await.expect("insert ended");

    let warm = [SessionId::generate(), SessionId::generate()];
    let mut expected = vec![(first.id.clone(), 1), (second.id.clone(), 4)];
    expected.sort();
    assert_eq!(beat(&store, &a, &warm, LEASE_TTL).await, expected);
    let mut held = warm.to_vec();
    held.sort();
    assert_eq!(store.held_by_replicas().await.expect("held"), held);
    assert_eq!(
        store.holder(&first.id).await.expect("holder"),
        Some(a.clone())
    );
    assert_eq!(
        store.holder(&theirs.id).await.expect("holder"),
        None,
        "b never beat"
    );

    // A lease that ran out is renewed by its holder's next heartbeat while
    // nobody else has claimed it.
    assert_eq!(
        store.claim(&first.id, &a.id, SHORT).await.expect("claim"),
        Some(1)
    );
    tokio::time::sleep(PAST_SHORT).await;
    assert!(store.unowned().await.expect("unowned").contains(&first.id));
    assert_eq!(store.holder(&first.id).await.expect("holder"), None);
    assert_eq!(beat(&store, &a, &[], LEASE_TTL).await, expected);
    assert!(!store.unowned().await.expect("unowned").contains(&first.id));

    // The heartbeat records the replica's current URL and held resources.
    let moved = Replica {
        url: "http://10.0.9.9:8080".into(),
        ..a.clone()
    };
    beat(&store, &moved, &warm[..1], LEASE_TTL).await;
    assert_eq!(store.holder(&first.id).await.expect("holder"), Some(moved));
    assert_eq!(store.held_by_replicas().await.expect("held"), warm[..1]);
}

pub async fn an_expired_lease_moves_with_a_higher_fence<S: Store + Leases>(store: S) {
    let (a, b) = (replica(1), replica(2));
    beat(&store, &a, &[], LEASE_TTL).await;
    beat(&store, &b, &[], LEASE_TTL).await;
    let rec = created(&store, Some(&a), 3).await;
    assert_eq!(
        store.claim(&rec.id, &a.id, SHORT).await.expect("claim"),
        Some(3)
    );
    tokio::time::sleep(PAST_SHORT).await;

    assert_eq!(
        store.unowned().await.expect("unowned"),
        std::slice::from_ref(&rec.id)
    );
    assert_eq!(
        store
            .claim(&rec.id, &b.id, LEASE_TTL)
            .await
            .expect("takeover"),
        Some(4),
        "a takeover is a new fence"
    );
    assert_eq!(
        store.holder(&rec.id).await.expect("holder"),
        Some(b.clone())
    );
    assert!(
        beat(&store, &a, &[], LEASE_TTL).await.is_empty(),
        "the old holder's heartbeat no longer returns the session"
    );
    assert_eq!(
        beat(&store, &b, &[], LEASE_TTL).await,
        [(rec.id.clone(), 4)]
    );
    assert_eq!(
        store
            .claim(&rec.id, &a.id, LEASE_TTL)
            .await
            .expect("claim back"),
        None
    );
    assert_eq!(
        stored(&store, &rec.id).await.lease,
        Lease {
            holder: Some(b.id.clone()),
            fence: 4
        }
    );
}

pub async fn a_write_with_an_old_fence_is_refused_and_writes_nothing<S: Store + Leases>(store: S) {
    let (a, b) = (replica(1), replica(2));
    let rec = created(&store, Some(&a), 1).await;
    store
        .append_events(&rec.id, &[status(1)], None)
        .await
        .expect("append");
    assert_eq!(
        store.claim(&rec.id, &a.id, SHORT).await.expect("claim"),
        Some(1)
    );
    tokio::time::sleep(PAST_SHORT).await;
    let fence = store
        .claim(&rec.id, &b.id, LEASE_TTL)
        .await
        .expect("takeover");
    assert_eq!(fence, Some(2));
    let before = stored(&store, &rec.id).await;

    // The old holder, unaware, writes with the fence it was given.
    let mut stale = rec.clone();
    stale.state = SessionState::Error;
    stale.reason = Some("stale".into());
    let res = store.update_session(&stale).await;
    assert!(matches!(res, Err(StoreError::Fenced(_))), "{res:?}");
    let res = store.record_change(&stale, &[status(2)], Some(9)).await;
    assert!(matches!(res, Err(StoreError::Fenced(_))), "{res:?}");
    assert_eq!(
        stored(&store, &rec.id).await,
        before,
        "the record is unchanged"
    );
    assert_eq!(
        store.events(&rec.id, 0, 10).await.expect("events"),
        [status(1)],
        "no event written"
    );

    // The new holder's writes go through, and never move the lease.
    let mut next = before.clone();
    next.lease = Lease {
        holder: Some("someone-else".into()),
        fence: 2,
    };
    next.state = SessionState::Busy;
    store
        .update_session(&next)
        .await
        .expect("update with the new fence");
    next.state = SessionState::Ready;
    store
        .record_change(&next, &[status(2)], Some(9))
        .await
        .expect("record_change with the new fence");
    let after = stored(&store, &rec.id).await;
    assert_eq!(after.state, SessionState::Ready);
    assert_eq!((after.last_seq, after.agent_seq), (2, 9));
    assert_eq!(
        after.lease,
        Lease {
            holder: Some(b.id.clone()),
            fence: 2
        },
        "writes never move the lease"
    );
    // A missing session is still not found, whatever the fence.
    let stranger = record(SessionState::Ready, 1_700_000_000_000);
    assert!(matches!(
        store.update_session(&stranger).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn release_makes_a_session_claimable_at_once<S: Store + Leases>(store: S) {
    let (a, b, c) = (replica(1), replica(2), replica(3));
    beat(&store, &a, &[], LEASE_TTL).await;
    let rec = created(&store, Some(&a), 5).await;
    store
        .release(&rec.id, &b.id)
        .await
        .expect("release by another");
    assert_eq!(
        store.holder(&rec.id).await.expect("holder"),
        Some(a.clone())
    );
    assert_eq!(
        store.claim(&rec.id, &c.id, LEASE_TTL).await.expect("claim"),
        None
    );

    store.release(&rec.id, &a.id).await.expect("release");
    assert_eq!(
        store.unowned().await.expect("unowned"),
        std::slice::from_ref(&rec.id)
    );
    assert_eq!(store.holder(&rec.id).await.expect("holder"), None);
    assert!(
        beat(&store, &a, &[], LEASE_TTL).await.is_empty(),
        "a released lease is not renewed"
    );
    assert_eq!(
        stored(&store, &rec.id).await.lease,
        Lease {
            holder: Some(a.id.clone()),
            fence: 5
        },
        "release keeps the holder and fence for the record"
    );
    assert_eq!(
        store.claim(&rec.id, &b.id, LEASE_TTL).await.expect("claim"),
        Some(6)
    );
}

pub async fn ended_sessions_are_never_unowned_or_claimable<S: Store + Leases>(store: S) {
    let a = replica(1);
    let mut ids = Vec::new();
    for state in [SessionState::Terminated, SessionState::Error] {
        let rec = record(state, 1_700_000_000_000);
        store.insert_session(&rec).await.expect("insert");
        ids.push(rec.id);
    }
    // A session that ends while held.
    let held = created(&store, Some(&a), 1).await;
    let mut ended = held.clone();
    ended.state = SessionState::Terminated;
    store.update_session(&ended).await.expect("end it");
    ids.push(held.id);

    assert!(store.unowned().await.expect("unowned").is_empty());
    assert!(beat(&store, &a, &[], LEASE_TTL).await.is_empty());
    for id in &ids {
        assert_eq!(
            store.claim(id, &a.id, LEASE_TTL).await.expect("claim"),
            None
        );
    }
}

/// Nobody runs a sleeping session: its lease is neither renewed nor taken
/// over, and it stays listed as live; whoever wakes (or ends) it claims
/// it, with a higher fence.
pub async fn a_sleeping_session_is_claimed_only_to_wake_it<S: Store + Leases>(store: S) {
    let (a, b) = (replica(1), replica(2));
    beat(&store, &a, &[], LEASE_TTL).await;
    let rec = created(&store, Some(&a), 3).await;
    let mut asleep = rec.clone();
    asleep.state = SessionState::Sleeping;
    store.update_session(&asleep).await.expect("to sleep");
    store.release(&rec.id, &a.id).await.expect("release");
    assert!(
        beat(&store, &a, &[], LEASE_TTL).await.is_empty(),
        "a sleeping session's lease is not renewed"
    );
    assert!(
        store.unowned().await.expect("unowned").is_empty(),
        "nobody takes a sleeping session over"
    );
    let live = store.list_sessions(true).await.expect("list");
    assert!(live.iter().any(|r| r.id == rec.id), "still live");
    assert_eq!(
        store.claim(&rec.id, &b.id, LEASE_TTL).await.expect("claim"),
        Some(4),
        "the waker claims it"
    );
    assert_eq!(
        store.claim(&rec.id, &a.id, LEASE_TTL).await.expect("claim"),
        None,
        "and holds it"
    );
    // Awake again under the waker: renewed by its heartbeat.
    let mut awake = stored(&store, &rec.id).await;
    awake.state = SessionState::Starting;
    store.update_session(&awake).await.expect("wake");
    assert_eq!(
        beat(&store, &b, &[], LEASE_TTL).await,
        vec![(rec.id.clone(), 4)]
    );
}

pub async fn concurrent_claims_have_one_winner<S: Store + Leases>(store: S) {
    const CLAIMANTS: u32 = 8;
    const ROUNDS: usize = 5;
    let store = Arc::new(store);
    let old = replica(99);
    for _ in 0..ROUNDS {
        let rec = created(&*store, Some(&old), 7).await;
        assert_eq!(
            store.claim(&rec.id, &old.id, SHORT).await.expect("claim"),
            Some(7)
        );
        tokio::time::sleep(PAST_SHORT).await;
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..CLAIMANTS {
            let store = Arc::clone(&store);
            let id = rec.id.clone();
            tasks.spawn(async move {
                let me = replica(n).id;
                let got = store.claim(&id, &me, LEASE_TTL).await.expect("claim");
                got.map(|fence| (me, fence))
            });
        }
        let mut winners = Vec::new();
        while let Some(res) = tasks.join_next().await {
            winners.extend(res.expect("task"));
        }
        assert_eq!(winners.len(), 1, "exactly one claim wins: {winners:?}");
        let (winner, fence) = winners.remove(0);
        assert_eq!(fence, 8);
        assert_eq!(
            stored(&*store, &rec.id).await.lease,
            Lease {
                holder: Some(winner),
                fence: 8
            }
        );
    }
}

pub async fn a_job_lock_is_exclusive_until_it_expires<S: Leases>(store: S) {
    let (a, b) = (replica(1), replica(2));
    assert!(store
        .lock_job("sweep", &a.id, LEASE_TTL)
        .await
        .expect("lock"));
    assert!(!store
        .lock_job("sweep", &b.id, LEASE_TTL)
        .await
        .expect("lock"));
    assert!(store
        .lock_job("other", &b.id, LEASE_TTL)
        .await
        .expect("lock"));
    // Renewed for a short while only, then left to expire.
    assert!(
        store.lock_job("sweep", &a.id, SHORT).await.expect("renew"),
        "the holder renews its own lock"
    );
    tokio::time::sleep(PAST_SHORT).await;
    assert!(store
        .lock_job("sweep", &b.id, LEASE_TTL)
        .await
        .expect("lock"));
    assert!(!store
        .lock_job("sweep", &a.id, LEASE_TTL)
        .await
        .expect("lock"));
    assert!(!store
        .lock_job("other", &a.id, LEASE_TTL)
        .await
        .expect("lock"));
    // Released by its holder, it is free at once; another cannot release it.
    store.unlock_job("other", &a.id).await.expect("unlock");
    assert!(
        !store
            .lock_job("other", &a.id, LEASE_TTL)
            .await
            .expect("lock"),
        "only its holder releases a lock"
    );
    store.unlock_job("other", &b.id).await.expect("unlock");
    assert!(
        store
            .lock_job("other", &a.id, LEASE_TTL)
            .await
            .expect("lock"),
        "a released lock is free at once"
    );
}

pub async fn held_by_replicas_leaves_out_expired_replicas<S: Store + Leases>(store: S) {
    let (a, b) = (replica(1), replica(2));
    let mut kept = [SessionId::generate(), SessionId::generate()];
    kept.sort();
    let gone = [SessionId::generate()];
    beat(&store, &a, &kept, LEASE_TTL).await;
    beat(&store, &b, &gone, LEASE_TTL).await;
    let mut all = [kept.as_slice(), gone.as_slice()].concat();
    all.sort();
    assert_eq!(store.held_by_replicas().await.expect("held"), all);
    let mut both = vec![a.clone(), b.clone()];
    both.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(store.replicas().await.expect("replicas"), both);
    // b's last heartbeat is short, and b stops.
    beat(&store, &b, &gone, SHORT).await;
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(store.held_by_replicas().await.expect("held"), kept);
    assert_eq!(store.replicas().await.expect("replicas"), vec![a]);
}

/// Only for stores with a feed (PostgreSQL); others skip it.
pub async fn the_event_feed_wakes_on_appends<S: Store + Leases>(store: S) {
    let Some(mut feed) = store.event_feed() else {
        return;
    };
    let rec = created(&store, None, 0).await;
    store
        .append_events(&rec.id, &[status(1)], None)
        .await
        .expect("append");
    wait_for(&mut feed, &rec.id).await;
    let mut next = rec.clone();
    next.state = SessionState::Busy;
    store
        .record_change(&next, &[status(2)], None)
        .await
        .expect("record_change");
    wait_for(&mut feed, &rec.id).await;
}

/// Waits for `id` on the feed, skipping other sessions' wake-ups (other
/// tests may share the database).
pub async fn wait_for(feed: &mut tokio::sync::broadcast::Receiver<SessionId>, id: &SessionId) {
    use tokio::sync::broadcast::error::RecvError;
    let wait = async {
        loop {
            match feed.recv().await {
                Ok(got) if got == *id => return,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("the event feed closed"),
            }
        }
    };
    tokio::time::timeout(FEED_WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("no wake-up for {id} within {FEED_WAIT:?}"));
}
