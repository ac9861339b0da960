//! SQLite-specific tests, and the conformance suite wired to this store.

use cc_core::lease::{Lease, Leases, LEASE_TTL};
use cc_core::{SessionId, SessionRecord, Store, StoreError};
use cc_store_sqlite::{SqliteStore, DB_FILE};
use cc_wire::api::{ServerMessage, SessionLimits, SessionState};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};
use tempfile::TempDir;

mod in_memory {
    async fn fresh() -> Option<((), cc_store_sqlite::SqliteStore)> {
        Some((
            (),
            cc_store_sqlite::SqliteStore::in_memory().expect("in-memory store"),
        ))
    }
    cc_store_conformance::store_conformance!(fresh);
}

mod file_backed {
    async fn fresh() -> Option<(tempfile::TempDir, cc_store_sqlite::SqliteStore)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = cc_store_sqlite::SqliteStore::open(dir.path()).expect("open store");
        Some((dir, store))
    }
    cc_store_conformance::store_conformance!(fresh);
}

fn record() -> SessionRecord {
    SessionRecord {
        id: SessionId::generate(),
        container_id: Some("abc123".into()),
        state: SessionState::Ready,
        reason: None,
        repo_url: "https://example.test/repo.git".into(),
        branch: Some("dev".into()),
        limits: SessionLimits {
            memory_bytes: 1 << 30,
            cpu: 2.0,
            timeout_secs: 600,
            egress: cc_wire::api::EgressMode::None,
            idle_timeout_secs: Some(120),
        },
        created_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
        updated_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_500),
        expires_at: UNIX_EPOCH + Duration::from_millis(1_700_000_600_000),
        owner: "alice".into(),
        last_seq: 0,
        agent_seq: 0,
        usage: Default::default(),
        lease: Default::default(),
    }
}

fn output(seq: u64) -> ServerMessage {
    ServerMessage::Output {
        seq,
        text: format!("line {seq}\n"),
        timestamp: 1_714_564_800_000,
        event: None,
    }
}

fn raw(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(DB_FILE)).expect("raw connection")
}

/// A data dir holding one session with events 1..=3.
async fn seeded() -> (TempDir, SessionRecord) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let rec = record();
    store.insert_session(&rec).await.expect("insert");
    store
        .append_events(&rec.id, &[output(1), output(2), output(3)], Some(3))
        .await
        .expect("append");
    (dir, rec)
}

#[tokio::test]
async fn data_survives_reopening() {
    let (dir, rec) = seeded().await;

    let store = SqliteStore::open(dir.path()).expect("reopen");
    let back = store
        .get_session(&rec.id)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!((back.last_seq, back.agent_seq), (3, 3));
    assert_eq!(
        SessionRecord {
            last_seq: 0,
            agent_seq: 0,
            usage: Default::default(),
            lease: Default::default(),
            ..back
        },
        rec
    );
    let evs = store.events(&rec.id, 0, 100).await.expect("events");
    assert_eq!(evs, [output(1), output(2), output(3)]);
    // The log continues where it stopped.
    assert!(store
        .append_events(&rec.id, &[output(3)], None)
        .await
        .is_err());
    store
        .append_events(&rec.id, &[output(4)], None)
        .await
        .expect("continue");
    drop(store);

    let store = SqliteStore::open(dir.path()).expect("reopen again");
    let evs = store.events(&rec.id, 3, 100).await.expect("events");
    assert_eq!(evs, [output(4)]);
}

#[tokio::test]
async fn open_creates_a_private_data_dir_in_wal_mode() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("nested").join("data");
    let _store = SqliteStore::open(&dir).expect("open");
    assert!(dir.join(DB_FILE).is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    let mode: String = raw(&dir)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let version: i64 = raw(&dir)
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .expect("schema version");
    // Every migration ran (later issues append more).
    assert!(version >= 2, "schema version {version}");
}

#[tokio::test]
async fn a_session_stored_before_idle_timeouts_reads_as_none() {
    let (dir, rec) = seeded().await;
    let max_version = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .expect("schema version")
    };
    let newest = max_version(&raw(dir.path()));
    // Back to the schema before version 6: what it and later versions
    // added gone, with their versions.
    downgrade_before_leases(dir.path());
    raw(dir.path())
        .execute_batch(
            "ALTER TABLE sessions DROP COLUMN idle_timeout_secs; \
             DELETE FROM schema_version WHERE version >= 6;",
        )
        .expect("downgrade");

    let store = SqliteStore::open(dir.path()).expect("open migrates");
    assert_eq!(max_version(&raw(dir.path())), newest);
    let back = store
        .get_session(&rec.id)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(back.limits.idle_timeout_secs, None);
    let mut expected = rec.clone();
    expected.limits.idle_timeout_secs = None;
    assert_eq!(
        SessionRecord {
            last_seq: 0,
            agent_seq: 0,
            ..back.clone()
        },
        expected
    );
    // An update keeps what the session is given from then on.
    let mut changed = back;
    changed.limits.idle_timeout_secs = Some(300);
    store.update_session(&changed).await.expect("update");
    let again = store
        .get_session(&rec.id)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(again.limits.idle_timeout_secs, Some(300));
}

/// Takes the database back to the schema before version 7 (leases), and
/// so before every later version.
fn downgrade_before_leases(dir: &Path) {
    raw(dir)
        .execute_batch(
            "DROP TABLE idempotency_keys; DROP TABLE webhook_deliveries; \
             DROP TABLE webhook_endpoints; \
             DROP INDEX sessions_lease_holder; \
             ALTER TABLE sessions DROP COLUMN lease_holder; \
             ALTER TABLE sessions DROP COLUMN lease_fence; \
             ALTER TABLE sessions DROP COLUMN lease_expires_ms; \
             DROP TABLE replicas; DROP TABLE job_locks; \
             DELETE FROM schema_version WHERE version >= 7;",
        )
        .expect("downgrade");
}

#[tokio::test]
async fn a_session_stored_before_leases_reads_as_unowned() {
    let (dir, rec) = seeded().await;
    downgrade_before_leases(dir.path());
    let store = SqliteStore::open(dir.path()).expect("open migrates");
    let back = store
        .get_session(&rec.id)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(back.lease, Lease::default());
    assert_eq!(
        store.unowned().await.expect("unowned"),
        std::slice::from_ref(&rec.id)
    );
    assert_eq!(store.holder(&rec.id).await.expect("holder"), None);
    assert_eq!(
        store
            .claim(&rec.id, "replica-1", LEASE_TTL)
            .await
            .expect("claim"),
        Some(1)
    );
}

#[tokio::test]
async fn a_negative_idle_timeout_is_corrupt() {
    let (dir, rec) = seeded().await;
    raw(dir.path())
        .execute(
            "UPDATE sessions SET idle_timeout_secs = -5 WHERE id = ?1",
            [rec.id.as_str()],
        )
        .expect("tamper");
    let store = SqliteStore::open(dir.path()).expect("open");
    assert_corrupt(store.get_session(&rec.id).await, &["idle_timeout_secs"]);
}

#[tokio::test]
async fn two_stores_on_one_dir_see_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = SqliteStore::open(dir.path()).expect("open a");
    let b = SqliteStore::open(dir.path()).expect("open b");
    let rec = record();
    a.insert_session(&rec).await.expect("insert");
    b.append_events(&rec.id, &[output(1)], Some(1))
        .await
        .expect("append via b");
    assert!(a.append_events(&rec.id, &[output(1)], None).await.is_err());
    assert_eq!(a.events(&rec.id, 0, 10).await.expect("events"), [output(1)]);
}

#[tokio::test]
async fn events_are_stored_with_their_kind() {
    let (dir, rec) = seeded().await;
    let store = SqliteStore::open(dir.path()).expect("open");
    let status = ServerMessage::Status {
        seq: 4,
        state: SessionState::Busy,
        timestamp: 1_714_564_800_000,
        reason: Some("turn".into()),
    };
    store
        .append_events(&rec.id, &[status], None)
        .await
        .expect("append");
    let conn = raw(dir.path());
    let mut st = conn
        .prepare("SELECT seq, kind FROM events WHERE session_id = ?1 ORDER BY seq")
        .expect("prepare");
    let kinds: Vec<(i64, String)> = st
        .query_map([rec.id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        kinds,
        [
            (1, "output".to_owned()),
            (2, "output".to_owned()),
            (3, "output".to_owned()),
            (4, "status".to_owned())
        ]
    );
}

fn assert_corrupt<T: std::fmt::Debug>(res: Result<T, StoreError>, mentions: &[&str]) {
    match res {
        Err(StoreError::Corrupt(msg)) => {
            for m in mentions {
                assert!(msg.contains(m), "{msg:?} should mention {m:?}");
            }
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_state_is_corrupt() {
    let (dir, rec) = seeded().await;
    raw(dir.path())
        .execute(
            "UPDATE sessions SET state = 'hibernating' WHERE id = ?1",
            [rec.id.as_str()],
        )
        .expect("tamper");
    let store = SqliteStore::open(dir.path()).expect("open");
    assert_corrupt(
        store.get_session(&rec.id).await,
        &[rec.id.as_str(), "hibernating"],
    );
    assert_corrupt(store.list_sessions(false).await, &["hibernating"]);
}

#[tokio::test]
async fn foreign_record_version_or_negative_counter_is_corrupt() {
    let (dir, rec) = seeded().await;
    let store = SqliteStore::open(dir.path()).expect("open");
    raw(dir.path())
        .execute(
            "UPDATE sessions SET record_version = 2 WHERE id = ?1",
            [rec.id.as_str()],
        )
        .expect("tamper");
    assert_corrupt(store.get_session(&rec.id).await, &["record version"]);
    raw(dir.path())
        .execute(
            "UPDATE sessions SET record_version = 1, memory_bytes = -1 WHERE id = ?1",
            [rec.id.as_str()],
        )
        .expect("tamper");
    assert_corrupt(store.get_session(&rec.id).await, &["memory_bytes"]);
}

#[tokio::test]
async fn unparsable_event_is_corrupt_naming_session_and_seq() {
    let (dir, rec) = seeded().await;
    raw(dir.path())
        .execute(
            "UPDATE events SET payload = '{\"type\":\"nonsense\"}' \
             WHERE session_id = ?1 AND seq = 2",
            [rec.id.as_str()],
        )
        .expect("tamper");
    let store = SqliteStore::open(dir.path()).expect("open");
    assert_corrupt(store.events(&rec.id, 0, 10).await, &[rec.id.as_str(), "2"]);
    // Rows before the bad one are still readable.
    assert_eq!(
        store.events(&rec.id, 0, 1).await.expect("first"),
        [output(1)]
    );
    // A payload whose seq disagrees with its row is corrupt as well.
    raw(dir.path())
        .execute(
            "UPDATE events SET payload = ?2 WHERE session_id = ?1 AND seq = 3",
            rusqlite::params![
                rec.id.as_str(),
                serde_json::to_string(&output(9)).expect("json")
            ],
        )
        .expect("tamper");
    assert_corrupt(store.events(&rec.id, 2, 10).await, &["event 3"]);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let (dir, _) = seeded().await;
    raw(dir.path())
        .execute(
            "INSERT INTO schema_version (version) SELECT MAX(version) + 1 FROM schema_version",
            [],
        )
        .expect("tamper");
    let err = SqliteStore::open(dir.path()).expect_err("newer schema");
    assert!(err.to_string().contains("newer than this build"), "{err}");
}
