//! PostgreSQL-specific tests, and the conformance suite wired to this store.

use crate::support::{fresh, url};
use cc_core::audit::{verify, AuditStore};
use cc_core::{Leases, SessionId, SessionRecord, Store, StoreError};
use cc_store_conformance::audit::{
    all, appends_through_several_handles_never_fork_the_chain, fill,
};
use cc_store_conformance::leases::wait_for;
use cc_store_postgres::PostgresStore;
use cc_wire::api::{ServerMessage, SessionLimits, SessionState};
use std::sync::Arc;

mod conformance {
    use crate::support::fresh;
    cc_store_conformance::store_conformance!(fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_refuses_deletes_truncation_and_rewrites() {
    let Some((schema, store)) = fresh().await else {
        return;
    };
    fill(&store).await;
    let raw = schema.raw().await;
    for sql in [
        "DELETE FROM audit_log WHERE seq = 4",
        "TRUNCATE audit_log",
        "UPDATE audit_log SET outcome = 'denied' WHERE seq = 4",
        "UPDATE audit_log SET hash = 'x' WHERE seq = 4",
    ] {
        let err = raw.batch_execute(sql).await.expect_err(sql);
        let msg = err.as_db_error().map(|d| d.message().to_owned());
        assert_eq!(
            msg.as_deref(),
            Some("the audit log is append-only"),
            "{sql}"
        );
    }
    assert_eq!(verify(&all(&store).await), Ok(5));
    // A personal field may be rewritten (that is how erasure works), but
    // not silently: the chain names the record.
    raw.batch_execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
        .await
        .expect("personal fields are not hashed directly");
    assert_eq!(verify(&all(&store).await).unwrap_err().seq, 2);
}

/// Two stores, each with its own pool, stand in for two replicas (two
/// processes) appending to one audit log at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_appending_at_once_keep_one_chain() {
    let Some((schema, a)) = fresh().await else {
        return;
    };
    let b = schema.store().await;
    let stores = [Arc::new(a), Arc::new(b)];
    let mut tasks = tokio::task::JoinSet::new();
    for (i, store) in stores.iter().enumerate() {
        for t in 0..4 {
            let store = Arc::clone(store);
            tasks.spawn(async move {
                for n in 0..15 {
                    store
                        .append_audit(cc_core::AuditEvent {
                            time: "2026-01-01T00:00:00.000Z".into(),
                            actor: format!("replica{i}"),
                            source_ip: None,
                            action: format!("session.r{i}.t{t}.{n}"),
                            session_id: None,
                            outcome: "ok".into(),
                            detail: None,
                        })
                        .await
                        .expect("append");
                }
            });
        }
    }
    while let Some(res) = tasks.join_next().await {
        res.expect("task");
    }
    let log = all(&*stores[1]).await;
    assert_eq!(verify(&log), Ok(120));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_and_a_newer_schema_is_refused() {
    let Some((schema, _store)) = fresh().await else {
        return;
    };
    // Opening again finds the schema current and changes nothing.
    let _again = schema.store().await;
    let raw = schema.raw().await;
    let versions: Vec<i64> = raw
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .await
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    raw.batch_execute("INSERT INTO schema_version VALUES (999)")
        .await
        .expect("pretend a newer build migrated");
    let err = PostgresStore::connect_with(schema.config(), 1)
        .await
        .expect_err("a newer schema");
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_unreachable_database_is_a_clear_error_without_the_password() {
    if url().is_none() {
        return;
    }
    let err = PostgresStore::connect("postgres://u:sekrit@127.0.0.1:1/db")
        .await
        .expect_err("nothing listens on port 1");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{msg}");
    assert!(msg.contains("connecting to PostgreSQL"), "{msg}");
    assert!(!msg.contains("sekrit"), "{msg}");

    let err = PostgresStore::connect("postgres://u:sekrit@host:notaport/db")
        .await
        .expect_err("a bad port");
    let msg = err.to_string();
    assert!(msg.contains("not a PostgreSQL URL"), "{msg}");
    assert!(!msg.contains("sekrit"), "{msg}");
}

/// Whether the store answers within three calls: the first may meet a dead
/// connection (reported, not retried); the pool then drops it and the next
/// call opens a fresh one.
async fn answers_again(store: &PostgresStore) -> bool {
    for _ in 0..3 {
        if store.audit_records(&Default::default()).await.is_ok() {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_recovers_after_its_connections_are_killed() {
    let Some((schema, store)) = fresh().await else {
        return;
    };
    fill(&store).await;
    let raw = schema.raw().await;
    // Ends the store's connections (this test's only: they carry the
    // schema's name), as a restarted server or a network cut would.
    let killed = raw
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&schema.name],
        )
        .await
        .expect("terminate");
    assert!(!killed.is_empty(), "the store had connections to end");
    let ok = answers_again(&store).await;
    assert!(ok, "the store opens fresh connections after losing its own");
    assert_eq!(verify(&all(&store).await), Ok(5));
    drop(schema);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_unavailable_until_it_is_back() {
    let Some(url) = url() else {
        return;
    };
    let schema = crate::support::Schema::create(&url).await;
    let server = url::Url::parse(&url).unwrap();
    let relay = cc_testkit::tcp_relay::TcpRelay::start(format!(
        "{}:{}",
        server.host_str().unwrap(),
        server.port().unwrap_or(5432)
    ))
    .await
    .unwrap();
    let mut through = server.clone();
    through.set_host(Some("127.0.0.1")).unwrap();
    through.set_port(Some(relay.port())).unwrap();
    let mut config: cc_store_postgres::Config = through.as_str().parse().unwrap();
    config.options(format!("-c search_path={}", schema.name));
    let store = PostgresStore::connect_with(config, 2).await.unwrap();
    fill(&store).await;

    relay.cut(true);
    // The connection in use breaks, and no new one opens: both are the
    // database being unavailable, which the API answers with 503.
    for _ in 0..2 {
        let err = store
            .audit_records(&Default::default())
            .await
            .expect_err("the database is cut off");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let api = cc_core::CoreError::from(err);
        assert!(matches!(api, cc_core::CoreError::Unavailable(_)), "{api:?}");
    }

    relay.cut(false);
    assert!(
        answers_again(&store).await,
        "the store works again once the database is back"
    );
    assert_eq!(verify(&all(&store).await), Ok(5));
    drop(schema);
}

fn session() -> SessionRecord {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_000);
    SessionRecord {
        id: SessionId::generate(),
        container_id: None,
        state: SessionState::Ready,
        reason: None,
        repo_url: "https://example.test/repo.git".into(),
        branch: None,
        limits: SessionLimits {
            memory_bytes: 1 << 30,
            cpu: 1.0,
            timeout_secs: 600,
            egress: cc_wire::api::EgressMode::None,
            idle_timeout_secs: None,
        },
        created_at: at,
        updated_at: at,
        expires_at: at,
        owner: "alice".into(),
        last_seq: 0,
        agent_seq: 0,
        usage: Default::default(),
        lease: Default::default(),
    }
}

fn command(seq: u64) -> ServerMessage {
    ServerMessage::Command {
        seq,
        text: format!("turn {seq}"),
        timestamp: 1_714_564_800_000,
    }
}

/// Two stores (two connection pools) stand in for two replicas appending
/// to the audit log at once: one chain, each record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_appending_audit_records_never_fork_the_chain() {
    let Some((schema, a)) = fresh().await else {
        return;
    };
    let b = schema.store().await;
    appends_through_several_handles_never_fork_the_chain(vec![Arc::new(a), Arc::new(b)]).await;
}

/// Two stores stand in for two replicas: an append through one wakes the
/// other's feed with the session's ID, at commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_through_one_store_wakes_the_feed_of_another() {
    let Some((schema, a)) = fresh().await else {
        return;
    };
    let b = schema.store().await;
    let mut feed = b.event_feed().expect("PostgreSQL has an event feed");
    let rec = session();
    a.insert_session(&rec).await.expect("insert");
    a.append_events(&rec.id, &[command(1)], None)
        .await
        .expect("append");
    wait_for(&mut feed, &rec.id).await;
    let mut next = rec.clone();
    next.state = SessionState::Busy;
    a.record_change(&next, &[command(2)], None)
        .await
        .expect("record_change");
    wait_for(&mut feed, &rec.id).await;
}

/// The feed's receivers keep working when its listening connection is
/// killed: the store listens again on a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_listens_again_after_its_connection_is_killed() {
    let Some((schema, store)) = fresh().await else {
        return;
    };
    let mut feed = store.event_feed().expect("feed");
    let rec = session();
    store.insert_session(&rec).await.expect("insert");
    let raw = schema.raw().await;
    let killed = raw
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND query LIKE 'LISTEN%'",
            &[&schema.name],
        )
        .await
        .expect("terminate");
    assert_eq!(killed.len(), 1, "the store listens on one connection");
    // Appends until one is heard: those made before the store listens
    // again are lost (the feed is a hint, not a log).
    let heard = async {
        for seq in 1.. {
            store
                .append_events(&rec.id, &[command(seq)], None)
                .await
                .expect("append");
            let wait = tokio::time::timeout(std::time::Duration::from_millis(200), feed.recv());
            // Other tests' sessions (the channel is the database's) and
            // lag are skipped; a closed feed is a failure.
            match wait.await {
                Ok(Ok(got)) if got == rec.id => return,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    panic!("the feed closed")
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), heard)
        .await
        .expect("the feed wakes again");
}
