//! The main story: create, two turns with context, logs, resume, delete.

use super::{ready_session, run_turn, TURN_TIMEOUT};
use cc_testkit::harness::{output_text, read_until, summary};
use cc_testkit::Harness;
use cc_wire::api::{SeedStatus, ServerMessage, SessionState};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_runs_real_claude_code_end_to_end() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let (id, mut ws, boot) = ready_session(&h, "sample").await?;
    assert!(
        boot.iter()
            .any(|m| cc_testkit::harness::is_state(m, SessionState::Cloning)),
        "{}",
        summary(&boot)
    );
    let status = h.client.status(&id).await?;
    assert_eq!(status.status, SeedStatus::Ready);
    let container = status.container_id.clone().expect("a container");

    // Turn 1: the model double scripts a Bash tool call that commits a file.
    let turn1 = run_turn(
        &mut ws,
        "bash: echo hello from claude > hello.txt && git add hello.txt && git commit -qm 'add hello' && git log --oneline | head -1",
    )
    .await?;
    let text1 = output_text(&turn1);
    assert!(
        text1.contains("▶ Bash: echo hello from claude > hello.txt"),
        "{text1}"
    );
    assert!(text1.contains("add hello"), "tool result shown: {text1}");
    assert!(text1.contains("✓ done"), "{text1}");
    assert!(turn1
        .iter()
        .any(|m| matches!(m, ServerMessage::Command { .. })));
    assert!(
        turn1.iter().any(
            |m| matches!(m, ServerMessage::Output { event: Some(e), .. } if e["type"] == "result")
        ),
        "the raw result event travels with its text"
    );

    // Turn 2 sees the context of turn 1.
    let turn2 = run_turn(&mut ws, "recall").await?;
    let text2 = output_text(&turn2);
    assert!(
        text2.contains("You said before: \"bash: echo hello from claude"),
        "{text2}"
    );

    // The file is really in the container's checkout, committed.
    let out = Command::new("docker")
        .args([
            "exec",
            &container,
            "git",
            "-C",
            "/workspace/repo",
            "log",
            "-1",
            "--format=%s",
        ])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "add hello");
    let out = Command::new("docker")
        .args(["exec", &container, "cat", "/workspace/repo/hello.txt"])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from claude"
    );

    // Every upstream request carried the user's real key, never the
    // session token the container holds.
    let reqs = h.model.requests();
    assert!(reqs.len() >= 3, "{} requests", reqs.len());
    assert!(reqs
        .iter()
        .all(|r| r.api_key.as_deref() == Some(h.api_key.as_str())));

    // `logs` returns what the stream carried, in order, exactly once.
    let mut streamed: Vec<ServerMessage> = boot.into_iter().chain(turn1).chain(turn2).collect();
    streamed.retain(|m| m.seq() > 0);
    let logs = h.client.logs(&id, 0, 1000).await?;
    assert_eq!(logs.events, streamed);
    assert!(logs.events.windows(2).all(|w| w[1].seq() == w[0].seq() + 1));

    // A reader that reconnects with `since` gets the rest exactly once.
    let cut = streamed[streamed.len() / 2].seq();
    let mut again = h.client.stream(&id, cut).await?;
    let rest = read_until(&mut again, TURN_TIMEOUT, |m| {
        m.seq() == streamed.last().map_or(0, |l| l.seq())
    })
    .await?;
    let expected: Vec<_> = streamed.iter().filter(|m| m.seq() > cut).cloned().collect();
    assert_eq!(rest, expected);

    // Delete: terminated, and nothing of the session remains.
    let deleted = h.client.delete(&id).await?;
    assert_eq!(deleted.state, SessionState::Terminated);
    let tail = read_until(&mut ws, TURN_TIMEOUT, |m| {
        cc_testkit::harness::is_state(m, SessionState::Terminated)
    })
    .await?;
    assert!(tail
        .iter()
        .any(|m| cc_testkit::harness::is_state(m, SessionState::Terminating)));
    assert!(ws.next().await?.is_none(), "stream ends with the session");
    assert_eq!(h.docker.all_leftovers(), Vec::<String>::new());
    assert_eq!(h.client.status(&id).await?.state, SessionState::Terminated);
    let err = h.client.command(&id, "hello").await.unwrap_err();
    assert_eq!(err.code(), Some("session_not_active"));
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_commands_and_limits_apply() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let url = h.git.create_repo("limits", &[("a.txt", "a\n")])?;
    let mut req = h.create_request(&url, None);
    req.config = Some(cc_wire::api::SessionConfigRequest {
        memory: Some(cc_wire::api::Quantity::Text("768m".into())),
        cpu: Some(cc_wire::api::Quantity::Number(0.5)),
        timeout: Some(300),
        idle_timeout: None,
        egress: None,
    });
    let created = h.client.create(&req).await?;
    assert_eq!(created.status, SeedStatus::Starting);
    // A command sent before the session is ready is queued, not lost.
    let accepted = h
        .client
        .command(&created.session_id, "say: queued hello")
        .await?;
    assert!(accepted.accepted);
    let mut ws = h.client.stream(&created.session_id, 0).await?;
    let seen = read_until(
        &mut ws,
        super::READY_TIMEOUT + TURN_TIMEOUT,
        |m| matches!(m, ServerMessage::Output { text, .. } if text.contains("✓ done")),
    )
    .await?;
    assert!(
        output_text(&seen).contains("queued hello"),
        "{}",
        summary(&seen)
    );

    let inspect = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.ReadonlyRootfs}} {{.Config.User}}",
            &created.container_id,
        ])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        format!("{} 500000000 true 1000:1000", 768 * 1024 * 1024)
    );
    let status = h.client.status(&created.session_id).await?;
    assert_eq!(status.limits.timeout_secs, 300);
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maximum_lifetime_ends_a_session() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let url = h.git.create_repo("short", &[("a.txt", "a\n")])?;
    let mut req = h.create_request(&url, None);
    req.config = Some(cc_wire::api::SessionConfigRequest {
        timeout: Some(8),
        ..Default::default()
    });
    let created = h.client.create(&req).await?;
    let mut ws = h.client.stream(&created.session_id, 0).await?;
    let seen = read_until(&mut ws, super::READY_TIMEOUT, |m| {
        cc_testkit::harness::is_state(m, SessionState::Terminated)
    })
    .await?;
    let reason = match seen.last() {
        Some(ServerMessage::Status { reason, .. }) => reason.clone().unwrap_or_default(),
        _ => String::new(),
    };
    assert!(reason.contains("maximum lifetime of 8 s"), "{reason}");
    assert_eq!(h.docker.all_leftovers(), Vec::<String>::new());
    h.shutdown().await;
    Ok(())
}
