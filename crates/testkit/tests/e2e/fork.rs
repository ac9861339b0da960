//! Forks on real Docker with the real Claude Code and the model double:
//! each fork starts from a copy of its parent's checkout (uncommitted work
//! included) and conversation, and from there the two go their own ways,
//! each to its own branch.

use super::sleep::{code_of, sleepy_harness};
use super::{ready_session, run_turn, READY_TIMEOUT, TURN_TIMEOUT};
use anyhow::ensure;
use cc_testkit::harness::{is_state, output_text, read_until, summary};
use cc_wire::api::{ForkRequest, PushRequest, SessionPath, SessionState};

/// Reads a fork from its start until the turn its command ran has ended.
async fn forked_turn(h: &cc_testkit::Harness, id: &str) -> anyhow::Result<String> {
    let mut ws = h.client.stream(id, 0).await?;
    let mut busy = false;
    let seen = read_until(&mut ws, READY_TIMEOUT + TURN_TIMEOUT, |m| {
        busy |= is_state(m, SessionState::Busy);
        (busy && is_state(m, SessionState::Ready)) || is_state(m, SessionState::Error)
    })
    .await?;
    ensure!(
        seen.last()
            .is_some_and(|m| is_state(m, SessionState::Ready)),
        "the fork failed: {}",
        summary(&seen)
    );
    Ok(output_text(&seen))
}

async fn has_file(h: &cc_testkit::Harness, id: &str, path: &str) -> anyhow::Result<bool> {
    match h.client.files(id, path).await {
        Ok(SessionPath::File { .. }) => Ok(true),
        Ok(other) => anyhow::bail!("{path} is not a file: {other:?}"),
        Err(e) if code_of(&e) == Some((404, "path_not_found")) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_start_from_the_parents_checkout_and_conversation_and_go_their_own_way(
) -> anyhow::Result<()> {
    let h = sleepy_harness().await?;
    let (id, mut ws, _) = ready_session(&h, "forked").await?;
    run_turn(&mut ws, "write: shared.txt\nfrom the parent").await?;

    for count in [0, 11] {
        let req = ForkRequest {
            count: Some(count),
            command: None,
        };
        let e = h.client.fork(&id, &req).await.expect_err("out of range");
        assert_eq!(code_of(&e), Some((400, "invalid_fork_count")), "{e}");
    }
    ws.command("slow: 2000 one two three four").await?;
    read_until(&mut ws, TURN_TIMEOUT, |m| is_state(m, SessionState::Busy)).await?;
    let busy = h
        .client
        .fork(&id, &ForkRequest::default())
        .await
        .expect_err("forked during a turn");
    assert_eq!(code_of(&busy), Some((409, "session_busy")), "{busy}");
    read_until(&mut ws, TURN_TIMEOUT, |m| is_state(m, SessionState::Ready)).await?;

    // Two forks, each running a command at once: both remember what the
    // parent was told, and hold its (uncommitted) file.
    let req = ForkRequest {
        count: Some(2),
        command: Some("recall".into()),
    };
    let forked = h.client.fork(&id, &req).await?;
    assert_eq!(forked.parent_id, id);
    assert_eq!(forked.sessions.len(), 2);
    let fork = forked.sessions[0].session_id.clone();
    assert!(forked.sessions.iter().all(|s| s.session_id != id));
    assert_ne!(forked.sessions[0].session_id, forked.sessions[1].session_id);
    for s in &forked.sessions {
        let text = forked_turn(&h, &s.session_id).await?;
        ensure!(
            text.contains("write: shared.txt") && text.contains("slow: 2000"),
            "fork {} forgot the conversation: {text}",
            s.session_id
        );
        assert!(has_file(&h, &s.session_id, "shared.txt").await?);
    }

    // From here on apart.
    let last = h.client.status(&fork).await?.last_seq;
    let mut fork_ws = h.client.stream(&fork, last).await?;
    run_turn(&mut fork_ws, "write: only-fork.txt\nfork").await?;
    run_turn(&mut ws, "write: only-parent.txt\nparent").await?;
    assert!(has_file(&h, &fork, "only-fork.txt").await?);
    assert!(!has_file(&h, &fork, "only-parent.txt").await?);
    assert!(has_file(&h, &id, "only-parent.txt").await?);
    assert!(!has_file(&h, &id, "only-fork.txt").await?);
    let recall = run_turn(&mut fork_ws, "recall").await?;
    let text = output_text(&recall);
    ensure!(
        !text.contains("only-parent"),
        "the fork saw the parent's later turn: {text}"
    );

    // Each pushes to its own branch.
    let pushed_parent = h.client.push(&id, &PushRequest::default()).await?;
    let pushed_fork = h.client.push(&fork, &PushRequest::default()).await?;
    assert_eq!(pushed_parent.branch, format!("claudecluster/{id}"));
    assert_eq!(pushed_fork.branch, format!("claudecluster/{fork}"));
    let on_fork = h.git.show("forked", &pushed_fork.branch, "only-fork.txt")?;
    assert!(on_fork.contains("fork"), "{on_fork}");
    assert!(h
        .git
        .show("forked", &pushed_parent.branch, "only-fork.txt")
        .is_err());

    // A sleeping parent forks too, and stays asleep.
    h.client.sleep(&id).await?;
    let from_sleep = h.client.fork(&id, &ForkRequest::default()).await?;
    let child = &from_sleep.sessions[0].session_id;
    let mut child_ws = h.client.stream(child, 0).await?;
    read_until(&mut child_ws, READY_TIMEOUT, |m| {
        is_state(m, SessionState::Ready)
    })
    .await?;
    assert!(has_file(&h, child, "only-parent.txt").await?);
    assert_eq!(h.client.status(&id).await?.state, SessionState::Sleeping);
    h.shutdown().await;
    Ok(())
}
