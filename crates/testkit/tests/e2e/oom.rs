//! A process inside a session killed for exceeding the session's memory
//! limit is reported — on the stream, in the status and in `/metrics` —
//! while the session itself lives on.

use super::{metric, run_turn, READY_TIMEOUT, TURN_TIMEOUT};
use cc_testkit::harness::{
    is_oom_report, is_state, oom_reports_logged, read_until, summary, until_ready,
};
use cc_testkit::Harness;
use cc_wire::api::{Quantity, ServerMessage, SessionState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_for_memory_is_reported_and_the_session_lives_on() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let url = h.git.create_repo("oom", &[("README.md", "# OOM\n")])?;
    let mut req = h.create_request(&url, None);
    if let Some(c) = req.config.as_mut() {
        c.memory = Some(Quantity::Text("512m".into()));
    }
    let created = h.client.create(&req).await?;
    let id = created.session_id;
    let mut ws = h.client.stream(&id, 0).await?;
    until_ready(&mut ws, READY_TIMEOUT).await?;
    let before = metric(&h, "claudecluster_session_oom_kills_total").await?;

    // `tail` holds its whole input in memory when it has no newline.
    let turn = run_turn(
        &mut ws,
        "bash: head -c 900m /dev/zero | tail > /dev/null; echo tail ended with $?",
    )
    .await?;
    let mut seen = turn.clone();
    if !seen.iter().any(is_oom_report) {
        // The Engine's event may arrive after the turn ended.
        seen.extend(read_until(&mut ws, TURN_TIMEOUT, is_oom_report).await?);
    }
    let report = seen.iter().find(|m| is_oom_report(m)).expect("found above");
    let ServerMessage::Error { message, seq, .. } = report else {
        unreachable!()
    };
    assert!(message.contains("memory limit (512 MiB)"), "{message}");
    assert!(*seq > 0, "the report is in the session's log");

    // One kill comes as a burst of the Engine's `oom` notifications: one
    // incident, counted and reported once; the count and the log agree.
    let status = h.client.status(&id).await?;
    let reports = oom_reports_logged(&h.client, &id).await?;
    assert!(status.oom_kills >= 1, "{status:?}");
    assert_eq!(status.oom_kills, reports, "{status:?}");
    assert_eq!(status.state, SessionState::Ready, "the session lives on");
    assert!(
        metric(&h, "claudecluster_session_oom_kills_total").await? > before,
        "the counter moved"
    );
    // And it still works.
    let next = run_turn(&mut ws, "bash: echo still here").await?;
    assert!(
        next.iter().any(|m| is_state(m, SessionState::Ready)),
        "{}",
        summary(&next)
    );
    h.client.delete(&id).await?;
    h.shutdown().await;
    Ok(())
}
