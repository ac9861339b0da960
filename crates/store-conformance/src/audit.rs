//! The [`AuditStore`] cases: the hash chain, filters, redaction, and
//! concurrent appends that never fork the chain.

use cc_core::audit::{verify, AuditEvent, AuditFilter, AuditRecord, AuditStore, REDACTED};
use std::collections::BTreeSet;
use std::sync::Arc;

fn event(actor: &str, action: &str) -> AuditEvent {
    AuditEvent {
        time: "2026-01-01T00:00:00.000Z".into(),
        actor: actor.into(),
        source_ip: Some("192.0.2.7".into()),
        action: action.into(),
        session_id: Some("0123456789abcdef01234567".into()),
        outcome: "ok".into(),
        detail: None,
    }
}

/// Appends five records (alice, bob, alice, bob, alice).
pub async fn fill<S: AuditStore>(store: &S) {
    for (i, actor) in ["alice", "bob", "alice", "bob", "alice"].iter().enumerate() {
        let rec = store
            .append_audit(event(actor, &format!("session.a{i}")))
            .await
            .expect("append");
        assert_eq!(rec.seq, i as u64 + 1);
    }
}

pub async fn all<S: AuditStore>(store: &S) -> Vec<AuditRecord> {
    store
        .audit_records(&AuditFilter::default())
        .await
        .expect("read audit")
}

fn seqs(log: &[AuditRecord]) -> Vec<u64> {
    log.iter().map(|r| r.seq).collect()
}

pub async fn the_chain_verifies_and_filters_work<S: AuditStore>(store: S) {
    fill(&store).await;
    store
        .append_audit(AuditEvent {
            action: "auth.failure".into(),
            session_id: None,
            detail: Some("bad token".into()),
            ..event("carol", "")
        })
        .await
        .expect("append");
    let log = all(&store).await;
    assert_eq!(verify(&log), Ok(6));
    assert_eq!(log[5].event.detail.as_deref(), Some("bad token"));
    assert_eq!(log[5].event.session_id, None);

    let filtered = |f: AuditFilter| {
        let store = &store;
        async move { seqs(&store.audit_records(&f).await.expect("filter")) }
    };
    let alice = AuditFilter {
        actor: Some("alice".into()),
        ..AuditFilter::default()
    };
    assert_eq!(filtered(alice).await, [1, 3, 5]);
    let prefix = AuditFilter {
        action: Some("session.".into()),
        since: 1,
        limit: 2,
        ..AuditFilter::default()
    };
    assert_eq!(filtered(prefix).await, [2, 3]);
    let exact = AuditFilter {
        action: Some("auth.failure".into()),
        ..AuditFilter::default()
    };
    assert_eq!(filtered(exact).await, [6]);
    // A prefix filter is a prefix, not a pattern.
    let wildcard = AuditFilter {
        action: Some("%.".into()),
        ..AuditFilter::default()
    };
    assert_eq!(filtered(wildcard).await, Vec::<u64>::new());
    let by_session = AuditFilter {
        session_id: Some("0123456789abcdef01234567".into()),
        ..AuditFilter::default()
    };
    assert_eq!(filtered(by_session).await, [1, 2, 3, 4, 5]);
}

pub async fn redacting_a_user_keeps_the_chain<S: AuditStore>(store: S) {
    fill(&store).await;
    assert_eq!(store.redact_audit_actor("alice").await.expect("redact"), 3);
    let log = all(&store).await;
    assert_eq!(verify(&log), Ok(5));
    assert!(log.iter().all(|r| r.event.actor != "alice"));
    assert_eq!(log[0].event.actor, REDACTED);
    assert_eq!(log[0].event.source_ip, None);
    assert_eq!(log[0].nonce, None);
    assert_eq!(log[1].event.actor, "bob");
    assert!(log[1].nonce.is_some());
}

pub async fn concurrent_appends_never_fork_the_chain<S: AuditStore>(store: S) {
    appends_through_several_handles_never_fork_the_chain(vec![Arc::new(store)]).await;
}

/// Appends racing through every handle (one store, or several connected to
/// the same database: replicas) make one chain, each record once.
pub async fn appends_through_several_handles_never_fork_the_chain<S: AuditStore>(
    handles: Vec<Arc<S>>,
) {
    const TASKS: usize = 8;
    const PER_TASK: usize = 20;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = Arc::clone(&handles[t % handles.len()]);
        tasks.spawn(async move {
            for i in 0..PER_TASK {
                store
                    .append_audit(event("alice", &format!("session.t{t}.{i}")))
                    .await
                    .expect("append");
            }
        });
    }
    while let Some(res) = tasks.join_next().await {
        res.expect("task");
    }
    for store in &handles {
        let log = all(&**store).await;
        let total = (TASKS * PER_TASK) as u64;
        assert_eq!(verify(&log), Ok(total));
        assert_eq!(seqs(&log), (1..=total).collect::<Vec<_>>());
        let actions: BTreeSet<&str> = log.iter().map(|r| r.event.action.as_str()).collect();
        assert_eq!(actions.len() as u64, total, "every append landed once");
    }
}
