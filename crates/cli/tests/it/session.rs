//! `run` and `session …` end to end against a live server.

use super::{cli, describe, output, stderr, stdout};
use cc_testkit::Harness;
use cc_wire::api::{ServerMessage, SessionState, SessionStatus};
use tokio::process::Command;

/// The binary pointed at the harness's server.
fn at(h: &Harness, home: &std::path::Path) -> Command {
    let mut c = cli(home);
    c.env("CLAUDECLUSTER_URL", h.client.base_url())
        .env("CLAUDECLUSTER_TOKEN", &h.user_token);
    c.env("CLAUDECLUSTER_TOKEN", &h.user_token);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_streams_the_task_summarises_and_deletes_the_session() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let home = tempfile::tempdir()?;
    let repo = h.git.create_repo("run", &[("README.md", "# Run\n")])?;

    let out = output(at(&h, home.path()).args([
        "run",
        "--repo",
        &repo,
        "--api-key",
        &h.api_key,
        "--timeout",
        "600",
        "bash: echo cli-$((6*7)) > out.txt && cat out.txt",
    ]))
    .await?;
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("▶ Bash: echo cli-$((6*7)) > out.txt && cat out.txt"),
        "the tool call is shown: {}",
        describe(&out)
    );
    assert!(
        text.contains("⎿ cli-42"),
        "its folded result: {}",
        describe(&out)
    );
    assert!(text.contains("✓ done"), "{}", describe(&out));
    assert!(text.contains("Summary"), "{}", describe(&out));
    assert!(text.contains("cost"), "{}", describe(&out));
    assert!(text.contains("succeeded"), "{}", describe(&out));
    assert!(!text.contains('\x1b'), "no colours when not on a TTY");
    assert!(stderr(&out).contains("deleted"), "{}", describe(&out));
    // Deleted: no live session remains.
    assert_eq!(h.client.list(false).await?, Vec::<SessionStatus>::new());
    let all = h.client.list(true).await?;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, SessionState::Terminated);

    // Files are counted from the turn's Write/Edit calls.
    let out = output(at(&h, home.path()).args([
        "run",
        "--repo",
        &repo,
        "--api-key",
        &h.api_key,
        "write: /workspace/repo/w.txt\nhello",
    ]))
    .await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).contains("1 written or edited: w.txt"),
        "{}",
        describe(&out)
    );

    // --push sends the task's work to the session's branch before the
    // session is deleted.
    let out = output(at(&h, home.path()).args([
        "run",
        "--repo",
        &repo,
        "--api-key",
        &h.api_key,
        "--push",
        "--commit-message",
        "Pushed by run",
        "bash: echo pushed > p.txt",
    ]))
    .await?;
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    let branch = text
        .split_whitespace()
        .find(|w| w.starts_with("claudecluster/"))
        .unwrap_or_else(|| panic!("no branch named: {}", describe(&out)))
        .to_owned();
    assert!(
        text.contains("uncommitted work committed first"),
        "{}",
        describe(&out)
    );
    assert_eq!(h.git.show("run", &branch, "p.txt")?, "pushed\n");
    assert!(stderr(&out).contains("deleted"), "{}", describe(&out));
    // Pull request flags without --pr are a usage error.
    let out = output(at(&h, home.path()).args([
        "run",
        "--repo",
        &repo,
        "--api-key",
        &h.api_key,
        "--push",
        "--draft",
        "say: hi",
    ]))
    .await?;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));

    // A turn whose result is an error fails the command.
    let out = output(at(&h, home.path()).args([
        "run",
        "--repo",
        &repo,
        "--api-key",
        &h.api_key,
        "error: 400",
    ]))
    .await?;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stdout(&out).contains('✗'), "{}", describe(&out));
    assert!(stdout(&out).contains("failed"), "{}", describe(&out));
    assert_eq!(h.client.list(false).await?, Vec::<SessionStatus>::new());

    // session create: waits for ready and prints only the ID.
    let out = output(
        at(&h, home.path())
            .args([
                "session",
                "create",
                "--repo",
                &repo,
                "--memory",
                "1g",
                "--cpu",
                "0.5",
                "--idle-timeout",
                "120",
            ])
            .env("ANTHROPIC_API_KEY", &h.api_key),
    )
    .await?;
    assert!(out.status.success(), "{}", describe(&out));
    let id = stdout(&out).trim().to_owned();
    let st = h.client.status(&id).await?;
    assert_eq!(st.state, SessionState::Ready, "{}", describe(&out));
    assert_eq!(st.limits.memory_bytes, 1 << 30);
    assert_eq!(st.limits.cpu, 0.5);
    assert_eq!(st.limits.idle_timeout_secs, Some(120));
    h.client.delete(&id).await?;

    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_keep_and_the_session_commands() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let home = tempfile::tempdir()?;
    let repo = h.git.create_repo("keep", &[("README.md", "# Keep\n")])?;

    // --json: every stdout line is a server message; --keep leaves the
    // session and names it on stderr.
    let out = output(at(&h, home.path()).args([
        "run",
        "--repo",
        &repo,
        "--api-key",
        &h.api_key,
        "--keep",
        "--json",
        "write: /workspace/repo/notes.txt\nkept",
    ]))
    .await?;
    assert!(out.status.success(), "{}", describe(&out));
    let msgs: Vec<ServerMessage> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| anyhow::anyhow!("{e}: {l}")))
        .collect::<anyhow::Result<_>>()?;
    assert!(msgs.iter().any(|m| matches!(
        m,
        ServerMessage::Status {
            state: SessionState::Ready,
            ..
        }
    )));
    assert!(msgs.iter().any(|m| matches!(m, ServerMessage::Command { text, .. } if text.starts_with("write: /workspace/repo/notes.txt"))));
    assert!(msgs.iter().any(
        |m| matches!(m, ServerMessage::Output { event: Some(e), .. } if e["type"] == "result")
    ));
    assert!(msgs
        .windows(2)
        .all(|w| w[0].seq() < w[1].seq() || w[1].seq() == 0));
    let id = stderr(&out)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let st = h.client.status(&id).await?;
    assert_eq!(st.state, SessionState::Ready, "kept: {}", describe(&out));

    // doctor sees the live API.
    let out = output(at(&h, home.path()).args(["doctor"])).await?;
    assert!(
        stdout(&out).contains(&format!("✓ the API answers at {}", h.client.base_url())),
        "{}",
        describe(&out)
    );

    // list / status
    let out = output(at(&h, home.path()).args(["session", "list"])).await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).contains(&id) && stdout(&out).contains("ready"),
        "{}",
        describe(&out)
    );
    let out = output(at(&h, home.path()).args(["session", "status", &id, "--json"])).await?;
    assert!(out.status.success(), "{}", describe(&out));
    let st: SessionStatus = serde_json::from_slice(&out.stdout)?;
    assert_eq!(st.session_id, id);
    // For people: the container's resource use among the facts.
    let out = output(at(&h, home.path()).args(["session", "status", &id])).await?;
    assert!(
        out.status.success()
            && stdout(&out)
                .lines()
                .any(|l| l.starts_with("resources") && l.contains("MiB memory")),
        "{}",
        describe(&out)
    );

    // send waits and streams the turn; the earlier turn's file is there.
    let out =
        output(at(&h, home.path()).args(["session", "send", &id, "bash: cat notes.txt"])).await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).contains("▶ Bash: cat notes.txt"),
        "{}",
        describe(&out)
    );
    assert!(stdout(&out).contains("⎿ kept"), "{}", describe(&out));
    assert!(stdout(&out).contains("✓ done"), "{}", describe(&out));

    // diff shows the session's work against where it started.
    let out = output(at(&h, home.path()).args(["session", "diff", &id])).await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains(" notes.txt +"), "{}", describe(&out));
    assert!(stdout(&out).contains("+kept"), "{}", describe(&out));

    // files lists the checkout and prints a file as it is.
    let out = output(at(&h, home.path()).args(["session", "files", &id])).await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("  notes.txt\n"), "{}", describe(&out));
    assert!(!stdout(&out).contains(".git"), "{}", describe(&out));
    let out = output(at(&h, home.path()).args(["session", "files", &id, "notes.txt"])).await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).starts_with("kept"), "{}", describe(&out));
    let out = output(at(&h, home.path()).args(["session", "files", &id, ".git/config"])).await?;
    assert!(!out.status.success(), "{}", describe(&out));

    // push sends the work to the session's branch; the base branch is
    // refused with the reason, and not as a token problem.
    let out = output(at(&h, home.path()).args(["session", "push", &id])).await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).contains(&format!("pushed claudecluster/{id}")),
        "{}",
        describe(&out)
    );
    let out = output(at(&h, home.path()).args(["session", "push", &id, "--to", "main"])).await?;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains("push_refused"), "{}", describe(&out));
    assert!(!stderr(&out).contains("token"), "{}", describe(&out));

    // send --no-wait only queues; a `logs --follow` started before it
    // streams the turn live (and ends with the session, below).
    let before = h.client.status(&id).await?.last_seq;
    let follow = at(&h, home.path())
        .args([
            "session",
            "logs",
            "--follow",
            &id,
            "--since",
            &before.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let out =
        output(at(&h, home.path()).args(["session", "send", "--no-wait", &id, "say: queued-turn"]))
            .await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "");
    let mut ws = h.client.stream(&id, before).await?;
    cc_testkit::harness::read_until(
        &mut ws,
        std::time::Duration::from_secs(120),
        |m| matches!(m, ServerMessage::Output { text, .. } if text.contains("queued-turn")),
    )
    .await?;
    cc_testkit::harness::read_until(&mut ws, std::time::Duration::from_secs(120), |m| {
        cc_testkit::harness::is_state(m, SessionState::Ready)
    })
    .await?;

    // logs: the whole conversation, for people and as NDJSON.
    let out = output(at(&h, home.path()).args(["session", "logs", &id])).await?;
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("› write: /workspace/repo/notes.txt"),
        "{}",
        describe(&out)
    );
    assert!(text.contains("› bash: cat notes.txt"), "{}", describe(&out));
    assert!(text.contains("queued-turn"), "{}", describe(&out));
    let out = output(at(&h, home.path()).args(["session", "logs", &id, "--json"])).await?;
    let logged: Vec<ServerMessage> = stdout(&out)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(logged, h.client.logs(&id, 0, 1000).await?.events);

    // delete, then the session is unknown to send/attach as a live one.
    let out = output(at(&h, home.path()).args(["session", "delete", &id])).await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("terminated"), "{}", describe(&out));
    assert_eq!(h.client.status(&id).await?.state, SessionState::Terminated);
    let followed = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        follow.wait_with_output(),
    )
    .await??;
    assert!(followed.status.success(), "{}", describe(&followed));
    let text = stdout(&followed);
    assert!(
        text.contains("› say: queued-turn"),
        "{}",
        describe(&followed)
    );
    assert!(
        text.contains("· session terminated"),
        "{}",
        describe(&followed)
    );
    assert!(
        !text.contains("notes.txt"),
        "only after --since: {}",
        describe(&followed)
    );
    let out = output(at(&h, home.path()).args(["session", "send", &id, "say: late"])).await?;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", describe(&out));

    // An unknown session: one line, exit 3.
    for args in [
        vec!["session", "status", "01JD0000000000000000000000"],
        vec!["session", "logs", "01JD0000000000000000000000"],
        vec!["session", "delete", "01JD0000000000000000000000"],
        vec!["session", "attach", "01JD0000000000000000000000"],
    ] {
        let out = output(at(&h, home.path()).args(&args)).await?;
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", describe(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("not found"), "{args:?}: {err}");
    }
    h.shutdown().await;
    Ok(())
}

/// `run --best-of 3`: one session created and forked twice, the task run
/// in all three at once (a Bash call whose output differs in each), a line
/// per session as each ends, then the comparison; `--keep` keeps them,
/// without it they go; `--json` prints the comparison as one object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_best_of_runs_the_task_in_forks_and_compares_them() -> anyhow::Result<()> {
    let h = Harness::start_configured(
        cc_testkit::harness::HarnessOptions {
            upstream: None,
            api_key: None,
            ..Default::default()
        },
        // Forks need the sessions' sealed secrets, as under `serve`.
        |c| c.seal_key = Some(cc_core::secrets::SealKey::generate()),
    )
    .await?;
    let home = tempfile::tempdir()?;
    let repo = h.git.create_repo("best", &[("README.md", "# Best\n")])?;
    let task = "bash: head -c 8 /proc/sys/kernel/random/uuid > pick.txt && cat pick.txt";

    for bad in [&["--best-of", "1"][..], &["--best-of", "3", "--push"][..]] {
        let out = output(
            at(&h, home.path())
                .args(["run", "--repo", &repo, "--api-key", &h.api_key])
                .args(bad)
                .arg(task),
        )
        .await?;
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    }

    let out = output(at(&h, home.path()).args([
        "run",
        "--repo",
        &repo,
        "--api-key",
        &h.api_key,
        "--best-of",
        "3",
        "--keep",
        task,
    ]))
    .await?;
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("Best of"), "{}", describe(&out));
    assert_eq!(
        text.lines().filter(|l| l.contains("succeeded")).count(),
        3,
        "{}",
        describe(&out)
    );
    for k in ["[1]", "[2]", "[3]"] {
        assert!(stderr(&out).contains(k), "{}", describe(&out));
    }
    let kept = h.client.list(false).await?;
    assert_eq!(kept.len(), 3, "kept: {kept:?}");
    let mut picks = std::collections::BTreeSet::new();
    for s in &kept {
        assert!(text.contains(&s.session_id), "{}", describe(&out));
        match h.client.files(&s.session_id, "pick.txt").await? {
            cc_wire::api::SessionPath::File { content, .. } => picks.insert(content),
            other => anyhow::bail!("no pick.txt: {other:?}"),
        };
    }
    assert_eq!(picks.len(), 3, "each session did its own work: {picks:?}");

    let out = output(at(&h, home.path()).args([
        "run",
        "--repo",
        &repo,
        "--api-key",
        &h.api_key,
        "--best-of",
        "2",
        "--json",
        "say: picked",
    ]))
    .await?;
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim())?;
    let rows = report["sessions"].as_array().expect("sessions");
    assert_eq!(rows.len(), 2, "{report}");
    for r in rows {
        assert_eq!(r["succeeded"], true, "{report}");
        assert_eq!(r["result"], "picked", "{report}");
        assert!(r["costUsd"].is_number(), "{report}");
    }
    assert_eq!(
        h.client.list(false).await?.len(),
        3,
        "without --keep the attempts are deleted"
    );
    h.shutdown().await;
    Ok(())
}
