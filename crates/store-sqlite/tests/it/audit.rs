//! The audit table on SQLite beyond the conformance suite: tamper
//! detection when someone edits the database file, and the append-only
//! triggers.

use cc_core::audit::verify;
use cc_store_conformance::audit::{all, fill};
use cc_store_sqlite::SqliteStore;

async fn filled(dir: &std::path::Path) -> SqliteStore {
    let store = SqliteStore::open(dir).expect("open");
    fill(&store).await;
    store
}

fn raw(dir: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(cc_store_sqlite::DB_FILE)).expect("raw open")
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
