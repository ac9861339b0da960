//! Sleep and wake on real Docker with the real Claude Code and the model
//! double: a session that sleeps (asked to, or idle) has no container but
//! keeps its checkout and its conversation, and any use wakes it.

use super::{ready_session, run_turn, READY_TIMEOUT, TURN_TIMEOUT};
use anyhow::ensure;
use cc_client::ClientError;
use cc_testkit::harness::{is_state, output_text, read_until, summary, HarnessOptions};
use cc_testkit::Harness;
use cc_wire::api::{ServerMessage, SessionState};
use std::process::{Command, Stdio};
use std::time::Duration;

fn exists(kind: &str, name: &str) -> bool {
    Command::new("docker")
        .args([kind, "inspect", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A harness whose sessions can sleep (sleeping needs sealed secrets),
/// with idle timeouts as short as a test needs.
pub(crate) async fn sleepy_harness() -> anyhow::Result<Harness> {
    Harness::start_configured(
        HarnessOptions {
            upstream: None,
            api_key: None,
            ..Default::default()
        },
        |c| {
            c.seal_key = Some(cc_core::secrets::SealKey::generate());
            c.min_idle_timeout = Duration::from_secs(1);
        },
    )
    .await
}

pub(crate) fn code_of(e: &ClientError) -> Option<(u16, &str)> {
    match e {
        ClientError::Api { status, code, .. } => Some((*status, code.as_str())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_sleeps_and_wakes_with_its_checkout_and_conversation() -> anyhow::Result<()> {
    let h = sleepy_harness().await?;
    let (id, mut ws, _) = ready_session(&h, "sleepy").await?;
    let name = format!("{}{id}", h.docker.prefix);
    let volume = format!("{name}-workspace");
    let first = run_turn(&mut ws, "write: notes.txt\nthe lighthouse is blue").await?;
    ensure!(
        output_text(&first).contains("Wrote notes.txt"),
        "{}",
        summary(&first)
    );

    // During a turn: refused, the turn goes on.
    ws.command("slow: 2000 one two three four").await?;
    read_until(&mut ws, TURN_TIMEOUT, |m| is_state(m, SessionState::Busy)).await?;
    let busy = h.client.sleep(&id).await.expect_err("asleep during a turn");
    assert_eq!(code_of(&busy), Some((409, "session_busy")), "{busy}");
    read_until(&mut ws, TURN_TIMEOUT, |m| is_state(m, SessionState::Ready)).await?;

    // Asleep: no container, no network; the workspace stays.
    let slept = h.client.sleep(&id).await?;
    assert_eq!(slept.state, SessionState::Sleeping);
    read_until(&mut ws, READY_TIMEOUT, |m| {
        is_state(m, SessionState::Sleeping)
    })
    .await?;
    assert!(!exists("container", &name), "the container is gone");
    assert!(!exists("network", &name), "the network is gone");
    assert!(exists("volume", &volume), "the workspace stays");
    let listed = h.client.list(false).await?;
    assert!(
        listed
            .iter()
            .any(|s| s.session_id == id && s.state == SessionState::Sleeping),
        "listed as sleeping"
    );
    let again = h.client.sleep(&id).await?;
    assert_eq!(
        again.state,
        SessionState::Sleeping,
        "sleeping again is a no-op"
    );
    // Nothing runs, so nothing to interrupt, and that does not wake it.
    h.client.interrupt(&id).await?;
    assert_eq!(h.client.status(&id).await?.state, SessionState::Sleeping);

    // A command on the same WebSocket wakes it; the model sees every
    // earlier typed prompt (Claude Code resumed its conversation).
    let woken = run_turn(&mut ws, "recall").await?;
    let text = output_text(&woken);
    ensure!(
        text.contains("write: notes.txt") && text.contains("slow: 2000"),
        "the woken session forgot its conversation: {text}\n{}",
        summary(&woken)
    );
    assert!(exists("container", &name), "woken: a container again");
    let notes = h.client.files(&id, "notes.txt").await?;
    let content = match notes {
        cc_wire::api::SessionPath::File { content, .. } => content,
        other => anyhow::bail!("not a file: {other:?}"),
    };
    assert!(
        content.contains("the lighthouse is blue"),
        "the checkout survived: {content}"
    );

    // The checkout's origin follows the session's new container: its work
    // (the file, uncommitted) pushes to its own branch through the relay.
    let pushed = h
        .client
        .push(&id, &cc_wire::api::PushRequest::default())
        .await?;
    assert!(pushed.created && pushed.committed_changes, "{pushed:?}");
    let pushed_file = h.git.show("sleepy", &pushed.branch, "notes.txt")?;
    assert!(
        pushed_file.contains("the lighthouse is blue"),
        "{pushed_file}"
    );

    // Every event once, across the sleep and the wake, and the states
    // in the order a reader sees them.
    let log = h.client.logs(&id, 0, 1000).await?.events;
    let seqs: Vec<u64> = log.iter().map(ServerMessage::seq).collect();
    assert_eq!(seqs, (1..=log.len() as u64).collect::<Vec<_>>());
    let states: Vec<SessionState> = log
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Status { state, .. } => Some(*state),
            _ => None,
        })
        .collect();
    let sleep_at = states
        .iter()
        .position(|s| *s == SessionState::Sleeping)
        .expect("a sleeping status");
    assert_eq!(
        &states[sleep_at..sleep_at + 2],
        &[SessionState::Sleeping, SessionState::Starting],
        "{states:?}"
    );

    // Delete works on a sleeping session and takes the workspace.
    h.client.sleep(&id).await?;
    let deleted = h.client.delete(&id).await?;
    assert_eq!(deleted.state, SessionState::Terminated);
    assert!(!exists("volume", &volume), "the workspace went with it");
    let ended = h.client.wake(&id).await.expect_err("woke an ended session");
    assert_eq!(
        code_of(&ended),
        Some((409, "session_not_active")),
        "{ended}"
    );
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_sleeps_and_a_wake_or_a_read_brings_it_back() -> anyhow::Result<()> {
    let h = sleepy_harness().await?;
    let url = h.git.create_repo("dozy", &[("README.md", "# dozy\n")])?;
    let mut req = h.create_request(&url, None);
    req.config.get_or_insert_with(Default::default).idle_timeout = Some(2);
    let created = h.client.create(&req).await?;
    let id = created.session_id;
    let mut ws = h.client.stream(&id, 0).await?;
    let seen = read_until(&mut ws, READY_TIMEOUT + Duration::from_secs(30), |m| {
        is_state(m, SessionState::Sleeping) || is_state(m, SessionState::Error)
    })
    .await?;
    let reason = match seen.last() {
        Some(ServerMessage::Status {
            state: SessionState::Sleeping,
            reason,
            ..
        }) => reason.clone().unwrap_or_default(),
        _ => anyhow::bail!("did not fall asleep: {}", summary(&seen)),
    };
    assert!(reason.contains("idle"), "{reason}");
    // Audited with its cause (written by the server a moment later).
    let audited = async {
        loop {
            let page: serde_json::Value = reqwest::Client::new()
                .get(format!(
                    "{}/api/v1/audit?action=session.sleep&limit=100",
                    h.client.base_url()
                ))
                .bearer_auth(&h.admin_token)
                .send()
                .await?
                .json()
                .await?;
            let found = page["records"].as_array().is_some_and(|r| {
                r.iter().any(|r| {
                    r["sessionId"] == id.as_str()
                        && r["actor"] == "system"
                        && r["detail"] == "cause=idle"
                })
            });
            if found {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), audited).await??;
    let metrics = reqwest::get(format!("{}/metrics", h.client.base_url()))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("claudecluster_sessions{state=\"sleeping\"} 1"),
        "{metrics}"
    );

    // A read of the checkout wakes it and waits until it can answer.
    let diff = h.client.diff(&id).await?;
    assert!(diff.files.is_empty(), "nothing changed: {diff:?}");
    let status = h.client.status(&id).await?;
    assert_eq!(status.state, SessionState::Ready);
    h.shutdown().await;
    Ok(())
}
