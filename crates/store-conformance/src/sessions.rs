//! The [`Store`] cases: session records, event logs and their cursor,
//! sealed secrets, retention and erasure. Each case takes a fresh, empty
//! store and uses the trait only.

use cc_core::{SessionId, SessionRecord, Store, StoreError};
use cc_wire::api::{ServerMessage, SessionLimits, SessionState};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A time with sub-millisecond digits, which the store truncates.
fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms) + Duration::from_nanos(456_789)
}

/// `t` truncated to the millisecond, as a store gives it back.
fn millis(t: SystemTime) -> SystemTime {
    let d = t.duration_since(UNIX_EPOCH).expect("after the epoch");
    UNIX_EPOCH + Duration::from_millis(d.as_millis() as u64)
}

fn truncated(mut rec: SessionRecord) -> SessionRecord {
    rec.created_at = millis(rec.created_at);
    rec.updated_at = millis(rec.updated_at);
    rec.expires_at = millis(rec.expires_at);
    rec
}

pub(crate) fn record(state: SessionState, created_ms: u64) -> SessionRecord {
    SessionRecord {
        id: SessionId::generate(),
        container_id: Some("c0ffee".into()),
        state,
        reason: Some("because".into()),
        repo_url: "https://example.test/repo.git".into(),
        branch: Some("main".into()),
        limits: SessionLimits {
            memory_bytes: 2 * 1024 * 1024 * 1024,
            cpu: 1.5,
            timeout_secs: 3600,
            egress: cc_wire::api::EgressMode::Allowlist,
            idle_timeout_secs: Some(1800),
        },
        created_at: at(created_ms),
        updated_at: at(created_ms + 10),
        expires_at: at(created_ms + 3_600_000),
        owner: "alice".into(),
        last_seq: 0,
        agent_seq: 0,
        usage: Default::default(),
        lease: Default::default(),
    }
}

fn bare_record() -> SessionRecord {
    let mut rec = SessionRecord {
        container_id: None,
        reason: None,
        branch: None,
        ..record(SessionState::Creating, 1_700_000_000_000)
    };
    // As a session stored before idle timeouts were per session reads.
    rec.limits.idle_timeout_secs = None;
    rec
}

/// A varied event with the given seq.
fn event(seq: u64) -> ServerMessage {
    let timestamp = 1_714_564_800_000 + (seq % 60) * 1000;
    match seq % 5 {
        0 => ServerMessage::Output {
            seq,
            text: format!("line {seq}\n"),
            timestamp,
            event: Some(serde_json::json!({"type": "assistant", "n": seq})),
        },
        1 => ServerMessage::Claude {
            seq,
            timestamp,
            event: serde_json::json!({"type": "system", "subtype": "init"}),
        },
        2 => ServerMessage::Command {
            seq,
            text: "fix the tests".into(),
            timestamp,
        },
        3 => ServerMessage::Status {
            seq,
            state: SessionState::Busy,
            timestamp,
            reason: None,
        },
        _ => ServerMessage::Error {
            seq,
            message: "boom".into(),
            timestamp,
            code: Some("E_BOOM".into()),
        },
    }
}

fn events(seqs: std::ops::RangeInclusive<u64>) -> Vec<ServerMessage> {
    seqs.map(event).collect()
}

fn seqs(evs: &[ServerMessage]) -> Vec<u64> {
    evs.iter().map(ServerMessage::seq).collect()
}

async fn get<S: Store>(store: &S, id: &SessionId) -> SessionRecord {
    store
        .get_session(id)
        .await
        .expect("get_session")
        .expect("session exists")
}

pub async fn record_round_trips<S: Store>(store: S) {
    let full = record(SessionState::Ready, 1_700_000_000_000);
    let bare = bare_record();
    let mut counted = record(SessionState::Busy, 1_700_000_000_001);
    counted.last_seq = 41;
    counted.agent_seq = 99;
    counted.lease = cc_core::Lease {
        holder: Some("replica-7".into()),
        fence: 12,
    };
    for rec in [&full, &bare, &counted] {
        store.insert_session(rec).await.expect("insert");
    }
    for rec in [full, bare, counted] {
        let back = get(&store, &rec.id).await;
        assert_eq!(back, truncated(rec.clone()));
        assert_ne!(
            back.created_at, rec.created_at,
            "sub-millisecond digits dropped"
        );
    }
}

pub async fn unknown_session_is_none<S: Store>(store: S) {
    let got = store
        .get_session(&SessionId::generate())
        .await
        .expect("get");
    assert_eq!(got, None);
    let evs = store
        .events(&SessionId::generate(), 0, 10)
        .await
        .expect("events of an unknown session");
    assert!(evs.is_empty());
}

pub async fn duplicate_insert_is_refused<S: Store>(store: S) {
    let rec = record(SessionState::Creating, 1_700_000_000_000);
    store.insert_session(&rec).await.expect("insert");
    let mut again = rec.clone();
    again.repo_url = "https://example.test/other.git".into();
    assert!(matches!(
        store.insert_session(&again).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(get(&store, &rec.id).await, truncated(rec));
}

pub async fn update_overwrites_fields_but_not_the_cursor<S: Store>(store: S) {
    let rec = record(SessionState::Creating, 1_700_000_000_000);
    store.insert_session(&rec).await.expect("insert");
    store
        .append_events(&rec.id, &events(1..=3), Some(7))
        .await
        .expect("append");

    let mut changed = rec.clone();
    changed.container_id = None;
    changed.state = SessionState::Error;
    changed.reason = Some("the image is missing".into());
    changed.repo_url = "https://example.test/moved.git".into();
    changed.branch = None;
    changed.limits = SessionLimits {
        memory_bytes: 512 * 1024 * 1024,
        cpu: 0.25,
        timeout_secs: 60,
        egress: cc_wire::api::EgressMode::Open,
        // Never idles out.
        idle_timeout_secs: Some(0),
    };
    changed.created_at = at(1_600_000_000_000);
    changed.updated_at = at(1_700_000_123_456);
    changed.expires_at = at(1_700_000_999_999);
    changed.usage.totals.turns = 3;
    changed.usage.totals.errored_turns = 1;
    changed.usage.totals.cost_usd = 0.125;
    changed.usage.totals.tokens.input_tokens = 40_000;
    changed.usage.process_cost_usd = 0.0625;
    // A stale cursor in the record must not move the log's cursor.
    changed.last_seq = 0;
    changed.agent_seq = 0;
    store.update_session(&changed).await.expect("update");

    let back = get(&store, &rec.id).await;
    let mut expected = truncated(changed);
    expected.last_seq = 3;
    expected.agent_seq = 7;
    assert_eq!(back, expected);
    assert_eq!(
        seqs(&store.events(&rec.id, 0, 100).await.expect("events")),
        [1, 2, 3]
    );
}

pub async fn update_of_unknown_session_is_refused<S: Store>(store: S) {
    let rec = record(SessionState::Ready, 1_700_000_000_000);
    assert!(matches!(
        store.update_session(&rec).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.get_session(&rec.id).await.expect("get"), None);
}

pub async fn list_is_newest_first_and_filters_live<S: Store>(store: S) {
    let base = 1_700_000_000_000;
    let oldest = record(SessionState::Ready, base);
    let terminated = record(SessionState::Terminated, base + 1_000);
    let busy = record(SessionState::Busy, base + 2_000);
    let errored = record(SessionState::Error, base + 3_000);
    let newest = record(SessionState::Terminating, base + 4_000);
    // Inserted out of order: the order comes from created_at.
    for rec in [&busy, &newest, &oldest, &errored, &terminated] {
        store.insert_session(rec).await.expect("insert");
    }
    let ids = |recs: Vec<SessionRecord>| recs.into_iter().map(|r| r.id).collect::<Vec<_>>();

    let all = store.list_sessions(false).await.expect("list all");
    assert_eq!(all[0], truncated(newest.clone()));
    assert_eq!(
        ids(all),
        [&newest, &errored, &busy, &terminated, &oldest].map(|r| r.id.clone())
    );
    let live = store.list_sessions(true).await.expect("list live");
    assert!(live.iter().all(|r| r.state.is_live()));
    assert_eq!(ids(live), [&newest, &busy, &oldest].map(|r| r.id.clone()));

    // A state change moves a session out of the live list.
    let mut ended = busy.clone();
    ended.state = SessionState::Terminated;
    store.update_session(&ended).await.expect("update");
    let live = store.list_sessions(true).await.expect("list live");
    assert_eq!(ids(live), [&newest, &oldest].map(|r| r.id.clone()));

    // By state, newest first.
    let by = |s| store.sessions_in_state(s);
    assert_eq!(
        ids(by(SessionState::Terminated).await.expect("terminated")),
        [&busy, &terminated].map(|r| r.id.clone())
    );
    assert_eq!(
        ids(by(SessionState::Ready).await.expect("ready")),
        [&oldest].map(|r| r.id.clone())
    );
    assert!(by(SessionState::Sleeping)
        .await
        .expect("sleeping")
        .is_empty());
}

pub async fn append_then_read_with_since_and_limit<S: Store>(store: S) {
    let rec = record(SessionState::Ready, 1_700_000_000_000);
    let other = record(SessionState::Ready, 1_700_000_000_001);
    store.insert_session(&rec).await.expect("insert");
    store.insert_session(&other).await.expect("insert other");
    let batch = events(1..=10);
    store
        .append_events(&rec.id, &batch, Some(3))
        .await
        .expect("append");
    store
        .append_events(&other.id, &events(1..=2), None)
        .await
        .expect("append other");

    let all = store.events(&rec.id, 0, 100).await.expect("all");
    assert_eq!(all, batch, "events come back exactly, oldest first");
    let page = store.events(&rec.id, 2, 3).await.expect("page");
    assert_eq!(seqs(&page), [3, 4, 5]);
    assert_eq!(page, batch[2..5]);
    let tail = store.events(&rec.id, 8, 100).await.expect("tail");
    assert_eq!(seqs(&tail), [9, 10]);
    assert!(store
        .events(&rec.id, 10, 100)
        .await
        .expect("end")
        .is_empty());
    assert!(store
        .events(&rec.id, 0, 0)
        .await
        .expect("limit 0")
        .is_empty());
    assert!(store
        .events(&rec.id, u64::MAX, usize::MAX)
        .await
        .expect("huge since")
        .is_empty());
    assert_eq!(
        store
            .events(&rec.id, 0, usize::MAX)
            .await
            .expect("huge limit"),
        batch
    );
    assert_eq!(
        seqs(&store.events(&other.id, 0, 100).await.expect("other")),
        [1, 2],
        "logs are per session"
    );
}

pub async fn cursor_moves_with_the_batch<S: Store>(store: S) {
    let rec = record(SessionState::Busy, 1_700_000_000_000);
    store.insert_session(&rec).await.expect("insert");
    let cursor = |r: SessionRecord| (r.last_seq, r.agent_seq);

    store
        .append_events(&rec.id, &events(1..=4), Some(10))
        .await
        .expect("append");
    assert_eq!(cursor(get(&store, &rec.id).await), (4, 10));

    // No agent_seq: only last_seq moves.
    store
        .append_events(&rec.id, &events(5..=6), None)
        .await
        .expect("append");
    assert_eq!(cursor(get(&store, &rec.id).await), (6, 10));

    // No events: only agent_seq moves.
    store
        .append_events(&rec.id, &[], Some(15))
        .await
        .expect("agent_seq only");
    assert_eq!(cursor(get(&store, &rec.id).await), (6, 15));

    // Nothing at all: nothing changes.
    store
        .append_events(&rec.id, &[], None)
        .await
        .expect("no-op");
    assert_eq!(cursor(get(&store, &rec.id).await), (6, 15));

    // The rest of the record is untouched.
    let mut expected = truncated(rec.clone());
    expected.last_seq = 6;
    expected.agent_seq = 15;
    assert_eq!(get(&store, &rec.id).await, expected);
    assert_eq!(
        seqs(&store.events(&rec.id, 0, 100).await.expect("events")),
        [1, 2, 3, 4, 5, 6]
    );
}

pub async fn bad_batches_are_refused_and_write_nothing<S: Store>(store: S) {
    let rec = record(SessionState::Busy, 1_700_000_000_000);
    store.insert_session(&rec).await.expect("insert");
    store
        .append_events(&rec.id, &events(1..=5), Some(20))
        .await
        .expect("append");
    let before = store.events(&rec.id, 0, 100).await.expect("events");

    let keepalive = ServerMessage::Keepalive {
        timestamp: 1_714_564_800_000,
    };
    let bad: Vec<(&str, Vec<ServerMessage>)> = vec![
        ("an already stored seq", vec![event(5)]),
        ("a replayed prefix", events(4..=7)),
        ("a gap after last_seq", vec![event(7)]),
        ("a gap inside the batch", vec![event(6), event(8)]),
        ("a duplicate inside the batch", vec![event(6), event(6)]),
        ("a batch out of order", vec![event(7), event(6)]),
        (
            "a good start then a stale seq",
            vec![event(6), event(7), event(3)],
        ),
        ("an unlogged message", vec![keepalive]),
        ("seq zero", vec![event(0)]),
    ];
    for (what, batch) in bad {
        let res = store.append_events(&rec.id, &batch, Some(99)).await;
        assert!(
            matches!(res, Err(StoreError::Conflict(_))),
            "{what} must be refused as a conflict: {res:?}"
        );
        let after = get(&store, &rec.id).await;
        assert_eq!(
            (after.last_seq, after.agent_seq),
            (5, 20),
            "{what}: the cursor must not move"
        );
        assert_eq!(
            store.events(&rec.id, 0, 100).await.expect("events"),
            before,
            "{what}: no event may be written"
        );
    }

    // The log is still usable afterwards.
    store
        .append_events(&rec.id, &events(6..=7), Some(21))
        .await
        .expect("a good batch after bad ones");
    let after = get(&store, &rec.id).await;
    assert_eq!((after.last_seq, after.agent_seq), (7, 21));
}

pub async fn append_to_unknown_session_is_refused<S: Store>(store: S) {
    let id = SessionId::generate();
    assert!(matches!(
        store.append_events(&id, &events(1..=1), None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.append_events(&id, &[], Some(1)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store.events(&id, 0, 10).await.expect("events").is_empty());
}

/// Appends one event at a time, racing the other writers for the next seq:
/// whoever loses re-reads the cursor and tries again.
async fn append_racing<S: Store>(store: &S, id: &SessionId, text: String) {
    for _ in 0..100_000 {
        let next = get(store, id).await.last_seq + 1;
        let ev = ServerMessage::Command {
            seq: next,
            text: text.clone(),
            timestamp: 1_714_564_800_000,
        };
        match store.append_events(id, &[ev], Some(next)).await {
            Ok(()) => return,
            // Lost the race: another writer took `next` first.
            Err(StoreError::Conflict(_)) => tokio::task::yield_now().await,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    panic!("could not append {text}");
}

pub async fn concurrent_appends_stay_contiguous<S: Store>(store: S) {
    const TASKS: u64 = 8;
    const PER_TASK: u64 = 25;
    let store = Arc::new(store);
    let shared = record(SessionState::Busy, 1_700_000_000_000);
    store.insert_session(&shared).await.expect("insert");
    let mut own = Vec::new();
    for t in 0..TASKS {
        let rec = record(SessionState::Busy, 1_700_000_000_001 + t);
        store.insert_session(&rec).await.expect("insert");
        own.push(rec.id);
    }

    let mut tasks = tokio::task::JoinSet::new();
    for (t, own_id) in own.iter().cloned().enumerate() {
        let store = Arc::clone(&store);
        let shared = shared.id.clone();
        tasks.spawn(async move {
            for i in 0..PER_TASK {
                // Contended: every task appends to the shared log…
                append_racing(&*store, &shared, format!("{t}/{i}")).await;
                // …and uncontended: batches to its own.
                let first = i * 2 + 1;
                store
                    .append_events(&own_id, &events(first..=first + 1), Some(first + 1))
                    .await
                    .expect("append own");
            }
        });
    }
    while let Some(res) = tasks.join_next().await {
        res.expect("task");
    }

    let total = TASKS * PER_TASK;
    let log = store
        .events(&shared.id, 0, usize::MAX)
        .await
        .expect("events");
    assert_eq!(seqs(&log), (1..=total).collect::<Vec<_>>());
    let texts: BTreeSet<String> = log
        .iter()
        .map(|ev| match ev {
            ServerMessage::Command { text, .. } => text.clone(),
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(
        texts.len() as u64,
        total,
        "every append landed exactly once"
    );
    let after = get(&*store, &shared.id).await;
    assert_eq!((after.last_seq, after.agent_seq), (total, total));

    for id in &own {
        let log = store.events(id, 0, usize::MAX).await.expect("events");
        assert_eq!(seqs(&log), (1..=PER_TASK * 2).collect::<Vec<_>>());
        let rec = get(&*store, id).await;
        assert_eq!((rec.last_seq, rec.agent_seq), (PER_TASK * 2, PER_TASK * 2));
    }
}

pub async fn sealed_secrets_are_kept_replaced_and_deleted<S: Store>(store: S) {
    let rec = record(SessionState::Ready, 1_000);
    store.insert_session(&rec).await.expect("insert");
    assert_eq!(store.sealed_secrets(&rec.id).await.expect("read"), None);
    store
        .put_sealed_secrets(&rec.id, &[1, 2, 3])
        .await
        .expect("put");
    store
        .put_sealed_secrets(&rec.id, &[4, 5])
        .await
        .expect("replace");
    assert_eq!(
        store.sealed_secrets(&rec.id).await.expect("read"),
        Some(vec![4, 5])
    );
    store.delete_sealed_secrets(&rec.id).await.expect("delete");
    store
        .delete_sealed_secrets(&rec.id)
        .await
        .expect("deleting twice is fine");
    assert_eq!(store.sealed_secrets(&rec.id).await.expect("read"), None);
}

/// The record of `rec` after a finished turn: `ready`, with usage totals.
fn after_a_turn(rec: &SessionRecord) -> SessionRecord {
    let mut next = rec.clone();
    next.state = SessionState::Ready;
    next.reason = None;
    next.updated_at = at(1_700_000_222_000);
    next.usage.totals.turns = 1;
    next.usage.totals.cost_usd = 0.25;
    next.usage.totals.tokens.output_tokens = 1_234;
    next
}

pub async fn a_state_change_writes_its_events_and_the_record_together<S: Store>(store: S) {
    let rec = record(SessionState::Busy, 1_700_000_000_000);
    store.insert_session(&rec).await.expect("insert");
    store
        .append_events(&rec.id, &events(1..=2), Some(4))
        .await
        .expect("append");
    let next = after_a_turn(&rec);
    store
        .record_change(&next, &events(3..=3), Some(5))
        .await
        .expect("record the change");
    let back = get(&store, &rec.id).await;
    let mut expected = truncated(next);
    expected.last_seq = 3;
    expected.agent_seq = 5;
    assert_eq!(back, expected, "state, usage and cursor");
    let evs = store.events(&rec.id, 2, 10).await.expect("events");
    assert_eq!(evs, events(3..=3));

    // Without events it is an update that keeps the cursor.
    let mut later = back.clone();
    later.usage.totals.turns = 2;
    later.last_seq = 0;
    store
        .record_change(&later, &[], None)
        .await
        .expect("a change without events");
    let back = get(&store, &rec.id).await;
    assert_eq!(back.usage.totals.turns, 2);
    assert_eq!((back.last_seq, back.agent_seq), (3, 5));
}

pub async fn a_refused_state_change_writes_neither_events_nor_record<S: Store>(store: S) {
    let rec = record(SessionState::Busy, 1_700_000_000_000);
    store.insert_session(&rec).await.expect("insert");
    store
        .append_events(&rec.id, &events(1..=2), Some(4))
        .await
        .expect("append");
    let stored = get(&store, &rec.id).await;
    let next = after_a_turn(&rec);
    // seq 5 does not continue last_seq 2: the whole change is refused.
    let res = store.record_change(&next, &events(5..=5), Some(9)).await;
    assert!(res.is_err(), "a gap must be refused");
    assert_eq!(
        get(&store, &rec.id).await,
        stored,
        "the record is unchanged"
    );
    assert_eq!(
        seqs(&store.events(&rec.id, 0, 10).await.expect("events")),
        [1, 2],
        "no event written"
    );
    // An unknown session writes nothing either.
    let stranger = record(SessionState::Ready, 1_700_000_000_000);
    assert!(store
        .record_change(&stranger, &events(1..=1), None)
        .await
        .is_err());
    assert_eq!(store.get_session(&stranger.id).await.expect("get"), None);
    assert!(store
        .events(&stranger.id, 0, 10)
        .await
        .expect("events")
        .is_empty());
}

pub async fn secrets_of_an_unknown_session_are_refused<S: Store>(store: S) {
    let id = SessionId::generate();
    assert!(matches!(
        store.put_sealed_secrets(&id, &[1]).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.sealed_secrets(&id).await.expect("read"), None);
}

/// A session with one event, in `state`, last updated at `updated_s`.
async fn logged<S: Store>(
    store: &S,
    owner: &str,
    state: SessionState,
    updated_s: u64,
) -> SessionId {
    let mut rec = record(state, 1_000);
    rec.owner = owner.into();
    rec.updated_at = UNIX_EPOCH + Duration::from_secs(updated_s);
    store.insert_session(&rec).await.expect("insert");
    store
        .append_events(&rec.id, &events(1..=2), None)
        .await
        .expect("append");
    rec.id
}

pub async fn retention_purges_only_old_ended_logs<S: Store>(store: S) {
    let mut ids = Vec::new();
    for (state, updated) in [
        (SessionState::Terminated, 100),
        (SessionState::Error, 100),
        (SessionState::Ready, 100),
        (SessionState::Terminated, 10_000),
    ] {
        ids.push(logged(&store, "alice", state, updated).await);
    }
    let cutoff = UNIX_EPOCH + Duration::from_secs(5_000);
    assert_eq!(store.purge_logs_before(cutoff).await.expect("purge"), 4);
    let mut left = Vec::new();
    for id in &ids {
        left.push(store.events(id, 0, 10).await.expect("events").len());
        // The records stay.
        get(&store, id).await;
    }
    assert_eq!(left, [0, 0, 2, 2]);
    assert_eq!(store.purge_logs_before(cutoff).await.expect("again"), 0);
}

pub async fn erasure_removes_ended_sessions_and_refuses_live_ones<S: Store>(store: S) {
    let ended = logged(&store, "alice", SessionState::Terminated, 100).await;
    store
        .put_sealed_secrets(&ended, &[9])
        .await
        .expect("secrets");
    let live = logged(&store, "alice", SessionState::Ready, 100).await;
    let other = logged(&store, "bob", SessionState::Terminated, 100).await;

    assert!(matches!(
        store.erase_owner_sessions("alice").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.get_session(&ended).await.expect("get").is_some());

    let mut rec = get(&store, &live).await;
    rec.state = SessionState::Terminated;
    store.update_session(&rec).await.expect("end it");
    assert_eq!(store.erase_owner_sessions("alice").await.expect("erase"), 2);
    for id in [&ended, &live] {
        assert_eq!(store.get_session(id).await.expect("get"), None);
        assert!(store.events(id, 0, 10).await.expect("events").is_empty());
        assert_eq!(store.sealed_secrets(id).await.expect("secrets"), None);
    }
    assert_eq!(store.events(&other, 0, 10).await.expect("bob").len(), 2);
    assert_eq!(store.erase_owner_sessions("nobody").await.expect("none"), 0);
}
