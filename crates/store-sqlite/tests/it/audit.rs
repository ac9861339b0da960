//! The audit table and API tokens on SQLite: the chain, its tamper
//! detection, append-only triggers, redaction, and token lookup.

use cc_core::audit::{verify, AuditEvent, AuditFilter, AuditStore, REDACTED};
use cc_core::identity::{hash_token, IdentityStore, NewToken, Role};
use cc_store_sqlite::SqliteStore;
use std::time::SystemTime;

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

async fn filled(dir: &std::path::Path) -> SqliteStore {
    let store = SqliteStore::open(dir).expect("open");
    for (i, actor) in ["alice", "bob", "alice", "bob", "alice"].iter().enumerate() {
        let rec = store
            .append_audit(event(actor, &format!("session.a{i}")))
            .await
            .expect("append");
        assert_eq!(rec.seq, i as u64 + 1);
    }
    store
}

async fn all(store: &SqliteStore) -> Vec<cc_core::AuditRecord> {
    store
        .audit_records(&AuditFilter::default())
        .await
        .expect("read")
}

fn raw(dir: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(cc_store_sqlite::DB_FILE)).expect("raw open")
}

#[tokio::test]
async fn the_chain_verifies_and_filters_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path()).await;
    let log = all(&store).await;
    assert_eq!(verify(&log), Ok(5));
    let alice = store
        .audit_records(&AuditFilter {
            actor: Some("alice".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(alice.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 3, 5]);
    let page = store
        .audit_records(&AuditFilter {
            action: Some("session.".into()),
            since: 2,
            limit: 2,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4]);
}

#[tokio::test]
async fn editing_one_record_in_the_database_is_detected_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path()).await;
    // A personal field may be rewritten (redaction), but not silently.
    raw(dir.path())
        .execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2", [])
        .unwrap();
    let err = verify(&all(&store).await).unwrap_err();
    assert_eq!(err.seq, 2, "{err}");

    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path()).await;
    let conn = raw(dir.path());
    // The triggers refuse edits of hashed columns and deletes…
    assert!(conn
        .execute("UPDATE audit_log SET outcome = 'denied' WHERE seq = 4", [])
        .is_err());
    assert!(conn
        .execute("DELETE FROM audit_log WHERE seq = 4", [])
        .is_err());
    // …and someone who drops them is still caught, at the edited record.
    conn.execute_batch(
        "DROP TRIGGER audit_log_no_rewrite; DROP TRIGGER audit_log_no_delete;
         UPDATE audit_log SET outcome = 'denied' WHERE seq = 4;",
    )
    .unwrap();
    assert_eq!(verify(&all(&store).await).unwrap_err().seq, 4);

    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path()).await;
    let conn = raw(dir.path());
    conn.execute_batch("DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE seq = 3;")
        .unwrap();
    assert_eq!(verify(&all(&store).await).unwrap_err().seq, 4);
}

#[tokio::test]
async fn redacting_a_user_keeps_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path()).await;
    assert_eq!(store.redact_audit_actor("alice").await.unwrap(), 3);
    let log = all(&store).await;
    assert_eq!(verify(&log), Ok(5));
    assert!(log.iter().all(|r| r.event.actor != "alice"));
    assert_eq!(log[0].event.actor, REDACTED);
    assert_eq!(log[0].event.source_ip, None);
    assert_eq!(log[1].event.actor, "bob");
}

#[tokio::test]
async fn tokens_are_found_by_hash_and_revoked() {
    let store = SqliteStore::in_memory().unwrap();
    let now = SystemTime::now();
    let t = NewToken::generate("alice", Role::User, Some("laptop".into()), now);
    store.insert_token(&t.record).await.unwrap();
    assert_eq!(store.active_tokens().await.unwrap(), 1);
    let found = store
        .token_by_hash(&hash_token(&t.token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.user, "alice");
    assert_eq!(found.revoked_at, None);
    assert!(store
        .token_by_hash(&hash_token("cct_other"))
        .await
        .unwrap()
        .is_none());
    assert!(store.revoke_token(&t.record.id, now).await.unwrap());
    assert!(!store.revoke_token(&t.record.id, now).await.unwrap());
    assert_eq!(store.active_tokens().await.unwrap(), 0);
    let found = store
        .token_by_hash(&hash_token(&t.token))
        .await
        .unwrap()
        .unwrap();
    assert!(found.revoked_at.is_some());
    assert_eq!(store.list_tokens().await.unwrap().len(), 1);
}

#[tokio::test]
async fn retention_purges_only_old_ended_logs() {
    use cc_core::{SessionId, SessionRecord, Store};
    use cc_wire::api::{ServerMessage, SessionLimits, SessionState};
    use std::time::{Duration, UNIX_EPOCH};
    let store = SqliteStore::in_memory().unwrap();
    let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
    let mut ids = Vec::new();
    for (state, updated) in [
        (SessionState::Terminated, 100),
        (SessionState::Error, 100),
        (SessionState::Ready, 100),
        (SessionState::Terminated, 10_000),
    ] {
        let rec = SessionRecord {
            id: SessionId::generate(),
            container_id: None,
            state,
            reason: None,
            repo_url: "https://example.test/r.git".into(),
            branch: None,
            limits: SessionLimits {
                memory_bytes: 1 << 30,
                cpu: 1.0,
                timeout_secs: 60,
                egress: Default::default(),
                idle_timeout_secs: Some(1800),
            },
            owner: "alice".into(),
            created_at: at(1),
            updated_at: at(updated),
            expires_at: at(100_000),
            last_seq: 0,
            agent_seq: 0,
            usage: Default::default(),
        };
        store.insert_session(&rec).await.unwrap();
        let ev = ServerMessage::Status {
            seq: 1,
            state,
            timestamp: 1_767_225_600_000,
            reason: None,
        };
        store.append_events(&rec.id, &[ev], None).await.unwrap();
        ids.push(rec.id);
    }
    assert_eq!(store.purge_logs_before(at(5_000)).await.unwrap(), 2);
    let left: Vec<usize> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(store.events(id, 0, 10).await.unwrap().len());
        }
        v
    };
    assert_eq!(left, [0, 0, 1, 1]);
}
