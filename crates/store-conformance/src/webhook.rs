//! The [`WebhookStore`] cases: endpoints kept and deleted with their
//! deliveries, the queue's order per session and endpoint, locks that keep
//! one attempt per delivery, retries, giving up, purging and erasure.

use cc_core::webhook::{
    Attempt, Delivery, DeliveryState, Endpoint, EventKind, NewDelivery, WebhookStore,
};
use cc_core::SessionId;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LOCK: Duration = Duration::from_secs(30);

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn endpoint(id: &str, owner: &str) -> Endpoint {
    Endpoint {
        id: id.into(),
        owner: owner.into(),
        all_sessions: false,
        url: format!("https://hooks.example/{id}"),
        events: vec![EventKind::SessionReady, EventKind::TurnFinished],
        description: Some("ci".into()),
        sealed_secret: vec![1, 2, 3],
        created_at: t(0),
    }
}

fn delivery(n: u32, endpoint: &str, session: &SessionId) -> NewDelivery {
    NewDelivery {
        id: format!("whd_{endpoint}_{n}"),
        endpoint_id: endpoint.into(),
        session: session.clone(),
        kind: EventKind::TurnFinished,
        body: format!(r#"{{"n":{n}}}"#),
        created_at: t(0),
    }
}

async fn claim_ids<S: WebhookStore>(store: &S, holder: &str, now: SystemTime) -> Vec<String> {
    store
        .claim_due(holder, now, LOCK, 100)
        .await
        .expect("claim")
        .into_iter()
        .map(|d| d.delivery.id)
        .collect()
}

async fn record<S: WebhookStore>(store: &S, id: &str, holder: &str, a: Attempt) -> bool {
    store
        .record_attempt(id, holder, &a, t(1))
        .await
        .expect("record")
}

async fn log<S: WebhookStore>(store: &S, endpoint: &str) -> Vec<Delivery> {
    store.deliveries(endpoint, 100).await.expect("deliveries")
}

pub async fn endpoints_are_kept_and_deleted_with_their_deliveries<S: WebhookStore>(store: S) {
    let (a, b) = (endpoint("wh_a", "alice"), endpoint("wh_b", "bob"));
    let mut b = b;
    b.all_sessions = true;
    b.events = vec![];
    b.description = None;
    b.created_at = t(5);
    store.insert_endpoint(&b).await.expect("insert");
    store.insert_endpoint(&a).await.expect("insert");
    assert_eq!(
        store.endpoints().await.expect("list"),
        vec![a.clone(), b.clone()]
    );
    assert!(matches!(
        store.insert_endpoint(&a).await,
        Err(cc_core::StoreError::Conflict(_))
    ));
    let s = SessionId::generate();
    store
        .enqueue_deliveries(&[delivery(1, "wh_a", &s), delivery(1, "wh_b", &s)])
        .await
        .expect("queue");
    assert!(store.delete_endpoint("wh_a").await.expect("delete"));
    assert!(!store.delete_endpoint("wh_a").await.expect("delete again"));
    assert!(log(&store, "wh_a").await.is_empty());
    assert_eq!(claim_ids(&store, "r1", t(0)).await, vec!["whd_wh_b_1"]);
    // Erasure takes a user's endpoints.
    assert_eq!(store.delete_user_endpoints("bob").await.expect("erase"), 1);
    assert!(store.endpoints().await.expect("list").is_empty());
}

pub async fn deliveries_go_out_in_order_per_session_and_endpoint<S: WebhookStore>(store: S) {
    for id in ["wh_a", "wh_b"] {
        store
            .insert_endpoint(&endpoint(id, "alice"))
            .await
            .expect("insert");
    }
    let (s1, s2) = (SessionId::generate(), SessionId::generate());
    store
        .enqueue_deliveries(&[
            delivery(1, "wh_a", &s1),
            delivery(2, "wh_a", &s1),
            delivery(3, "wh_a", &s2),
            delivery(4, "wh_b", &s1),
        ])
        .await
        .expect("queue");
    // The oldest of each session and endpoint, in queue order.
    let first = claim_ids(&store, "r1", t(0)).await;
    assert_eq!(first, vec!["whd_wh_a_1", "whd_wh_a_3", "whd_wh_b_4"]);
    // Locked: nothing more is due, not even the second of s1 on wh_a.
    assert!(claim_ids(&store, "r2", t(1)).await.is_empty());
    // The first fails and is retried later; the second still waits.
    let retry = Attempt::Retry {
        status: Some(503),
        error: "HTTP 503".into(),
        at: t(10),
    };
    assert!(record(&store, "whd_wh_a_1", "r1", retry).await);
    assert!(claim_ids(&store, "r1", t(5)).await.is_empty());
    assert_eq!(claim_ids(&store, "r1", t(10)).await, vec!["whd_wh_a_1"]);
    assert!(
        record(
            &store,
            "whd_wh_a_1",
            "r1",
            Attempt::Delivered { status: 204 }
        )
        .await
    );
    assert_eq!(claim_ids(&store, "r1", t(10)).await, vec!["whd_wh_a_2"]);

    let a = log(&store, "wh_a").await;
    let ids: Vec<&str> = a.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        ["whd_wh_a_3", "whd_wh_a_2", "whd_wh_a_1"],
        "newest first"
    );
    let first = &a[2];
    assert_eq!(first.state, DeliveryState::Delivered);
    assert_eq!((first.attempts, first.last_status), (2, Some(204)));
    assert_eq!(first.last_error, None);
    assert_eq!(first.finished_at, Some(t(1)));
    assert_eq!(
        (first.session.clone(), first.kind),
        (s1, EventKind::TurnFinished)
    );
    assert_eq!(a[1].state, DeliveryState::Pending);
    assert_eq!(a[1].attempts, 1);
}

pub async fn a_lock_holds_one_attempt_until_it_expires<S: WebhookStore>(store: S) {
    store
        .insert_endpoint(&endpoint("wh_a", "alice"))
        .await
        .expect("insert");
    let s = SessionId::generate();
    store
        .enqueue_deliveries(&[delivery(1, "wh_a", &s)])
        .await
        .expect("queue");
    let due = store.claim_due("r1", t(0), LOCK, 10).await.expect("claim");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].body, r#"{"n":1}"#);
    assert_eq!(due[0].url, "https://hooks.example/wh_a");
    assert_eq!(due[0].sealed_secret, vec![1, 2, 3]);
    assert_eq!(due[0].delivery.attempts, 1);
    assert!(claim_ids(&store, "r2", t(29)).await.is_empty());
    // r1 stopped answering: past the lock, r2 takes the delivery over.
    assert_eq!(claim_ids(&store, "r2", t(30)).await, vec!["whd_wh_a_1"]);
    // r1's late word is refused; r2's counts.
    assert!(
        !record(
            &store,
            "whd_wh_a_1",
            "r1",
            Attempt::Delivered { status: 200 }
        )
        .await
    );
    let give_up = Attempt::GiveUp {
        status: None,
        error: "connection refused".into(),
    };
    assert!(record(&store, "whd_wh_a_1", "r2", give_up).await);
    let d = &log(&store, "wh_a").await[0];
    assert_eq!(d.state, DeliveryState::Failed);
    assert_eq!(d.attempts, 2);
    assert_eq!(d.last_error.as_deref(), Some("connection refused"));
    assert_eq!(d.next_attempt_at, None);
    // Finished is final.
    assert!(
        !record(
            &store,
            "whd_wh_a_1",
            "r2",
            Attempt::Delivered { status: 200 }
        )
        .await
    );
    assert!(claim_ids(&store, "r3", t(100)).await.is_empty());
    // Purged after the keep time, not before.
    assert_eq!(store.purge_deliveries(t(1)).await.expect("purge"), 0);
    assert_eq!(store.purge_deliveries(t(2)).await.expect("purge"), 1);
    assert!(log(&store, "wh_a").await.is_empty());
}

pub async fn concurrent_claims_never_share_a_delivery<S: WebhookStore>(store: S) {
    const DELIVERIES: u32 = 40;
    store
        .insert_endpoint(&endpoint("wh_a", "alice"))
        .await
        .expect("insert");
    let queued: Vec<NewDelivery> = (0..DELIVERIES)
        .map(|n| delivery(n, "wh_a", &SessionId::generate()))
        .collect();
    store.enqueue_deliveries(&queued).await.expect("queue");
    let store = Arc::new(store);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..8 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let holder = format!("r{n}");
            let due = store
                .claim_due(&holder, t(0), LOCK, 7)
                .await
                .expect("claim");
            due.into_iter().map(|d| d.delivery.id).collect::<Vec<_>>()
        });
    }
    let mut all = Vec::new();
    while let Some(res) = tasks.join_next().await {
        all.extend(res.expect("task"));
    }
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "a delivery claimed twice: {all:?}"
    );
    assert_eq!(all.len(), DELIVERIES as usize);
}
