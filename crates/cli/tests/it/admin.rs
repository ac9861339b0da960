//! `claudecluster admin …` on a data directory (no server, no Docker):
//! tokens, the audit chain's verification naming a tampered record, and
//! erasing a user with the chain still verifying.

use super::{cli, describe, output, stdout};
use cc_core::audit::{AuditEvent, AuditStore};
use cc_core::identity::{hash_token, IdentityStore};
use cc_store_sqlite::SqliteStore;
use std::path::Path;

async fn admin(home: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let mut c = cli(home);
    c.arg("admin").args(args).arg("--data-dir").arg(dir);
    output(&mut c).await
}

fn event(actor: &str, action: &str) -> AuditEvent {
    AuditEvent {
        time: "2026-01-01T00:00:00.000Z".into(),
        actor: actor.into(),
        source_ip: Some("192.0.2.1".into()),
        action: action.into(),
        session_id: None,
        outcome: "ok".into(),
        detail: None,
    }
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    // `token create` makes the database when there is none yet.
    let out = admin(
        home.path(),
        dir.path(),
        &["token", "create", "--user", "alice"],
    )
    .await?;
    assert!(out.status.success(), "{}", describe(&out));
    let token = stdout(&out).trim().to_owned();
    assert!(token.starts_with("cct_"), "{}", describe(&out));

    let store = SqliteStore::open(dir.path())?;
    let rec = store
        .token_by_hash(&hash_token(&token))
        .await?
        .expect("stored by hash");
    assert_eq!(rec.user, "alice");

    let out = admin(home.path(), dir.path(), &["token", "list"]).await?;
    assert!(stdout(&out).contains(&rec.id) && !stdout(&out).contains(&token));
    let out = admin(home.path(), dir.path(), &["token", "revoke", &rec.id]).await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(store.active_tokens().await?, 0);
    let out = admin(home.path(), dir.path(), &["token", "revoke", &rec.id]).await?;
    assert!(!out.status.success(), "{}", describe(&out));

    // Both actions were audited, and the JSON-lines copy has them.
    let jsonl = std::fs::read_to_string(dir.path().join("audit.jsonl"))?;
    assert_eq!(jsonl.lines().count(), 2, "{jsonl}");
    assert!(!jsonl.contains(&token));
    Ok(())
}

#[tokio::test]
async fn audit_verify_names_the_edited_record() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path())?;
    for i in 0..6 {
        store
            .append_audit(event("alice", &format!("session.a{i}")))
            .await?;
    }
    let out = admin(home.path(), dir.path(), &["audit", "verify"]).await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("6 records"), "{}", describe(&out));

    let conn = rusqlite::Connection::open(dir.path().join(cc_store_sqlite::DB_FILE))?;
    conn.execute_batch(
        "DROP TRIGGER audit_log_no_rewrite;
         UPDATE audit_log SET outcome = 'denied' WHERE seq = 4;",
    )?;
    let out = admin(home.path(), dir.path(), &["audit", "verify"]).await?;
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        describe(&out).contains("audit record 4 does not verify"),
        "{}",
        describe(&out)
    );
    Ok(())
}

#[tokio::test]
async fn erasing_a_user_keeps_the_chain_verifiable() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path())?;
    for actor in ["alice", "bob", "alice"] {
        store.append_audit(event(actor, "session.create")).await?;
    }
    let out = admin(
        home.path(),
        dir.path(),
        &["token", "create", "--user", "alice"],
    )
    .await?;
    assert!(out.status.success(), "{}", describe(&out));

    let out = admin(home.path(), dir.path(), &["erase-user", "alice"]).await?;
    assert!(out.status.success(), "{}", describe(&out));
    let out = admin(home.path(), dir.path(), &["audit", "verify"]).await?;
    assert!(out.status.success(), "{}", describe(&out));
    let jsonl = std::fs::read_to_string(dir.path().join("audit.jsonl"))?;
    assert!(!jsonl.contains("\"alice\""), "{jsonl}");
    assert!(jsonl.contains("\"bob\""), "{jsonl}");
    assert_eq!(store.active_tokens().await?, 0);
    Ok(())
}
