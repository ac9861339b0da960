//! The demo: one whole ClaudeCluster session on this machine.
//!
//! Starts the orchestrator on real Docker, a git server with a small sample
//! repository, and — unless `ANTHROPIC_API_KEY` is set — a model double in
//! place of the Anthropic API; then creates a session, gives Claude Code a
//! task, streams its work to the terminal, shows the result and ends the
//! session. Run it with `scripts/demo.sh`, which builds what it needs.

use anyhow::Context;
use cc_testkit::harness::{Harness, HarnessOptions};
use cc_wire::api::{ServerMessage, SessionState};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const SAMPLE: &[(&str, &str)] = &[
    (
        "README.md",
        "# greeter\n\nA tiny sample project for the ClaudeCluster demo.\n",
    ),
    ("greet.sh", "#!/bin/sh\necho \"Hello, ${1:-world}!\"\n"),
];

/// Scripted for the model double: a tool turn that changes and commits
/// the repository, then a turn that shows the conversation carried over.
const DOUBLE_TASKS: &[&str] = &[
    "bash: sh greet.sh ClaudeCluster && printf 'Run `sh greet.sh NAME`.\\n' >> README.md && git commit -qam 'Document usage' && git log --oneline",
    "recall",
];
const REAL_TASKS: &[&str] = &[
    "Add a short 'Usage' section to README.md explaining how to run greet.sh, then commit the change with a clear message.",
    "In one sentence, what did you change in the previous step?",
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let real_key = std::env::var("ANTHROPIC_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let dim = |s: &str| {
        if color {
            format!("\x1b[2m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    };
    let (opts, tasks) = match &real_key {
        Some(key) => {
            println!(
                "{}",
                dim("Using the real Anthropic API (ANTHROPIC_API_KEY is set).")
            );
            (
                HarnessOptions {
                    upstream: Some(cc_server::DEFAULT_ANTHROPIC_UPSTREAM.into()),
                    api_key: Some(key.clone()),
                    ..Default::default()
                },
                REAL_TASKS,
            )
        }
        None => {
            println!(
                "{}",
                dim("Using the model double in place of the Anthropic API (set ANTHROPIC_API_KEY to use the real one).")
            );
            (
                HarnessOptions {
                    upstream: None,
                    api_key: None,
                    ..Default::default()
                },
                DOUBLE_TASKS,
            )
        }
    };
    let h = Harness::start_with(opts)
        .await
        .context("starting ClaudeCluster")?;
    let repo = h.git.create_repo("greeter", SAMPLE)?;
    println!(
        "{}",
        dim(&format!(
            "Orchestrator at {}; sample repository at {repo}",
            h.client.base_url()
        ))
    );

    let started = Instant::now();
    let created = h.client.create(&h.create_request(&repo, None)).await?;
    println!(
        "{}",
        dim(&format!(
            "Session {} in container {}",
            created.session_id,
            &created.container_id[..12.min(created.container_id.len())]
        ))
    );
    let mut ws = cc_client::EventStream::connect(&created.endpoints.websocket).await?;
    let mut result = run(&mut ws, tasks, started, &dim).await;
    if result.is_ok() {
        result = deliver(&h, &created.session_id, &dim).await;
    }
    h.client.delete(&created.session_id).await?;
    println!(
        "{}",
        dim("Session deleted: its container, network and volume are gone.")
    );
    h.shutdown().await;
    result
}

/// The session's work leaves it: its diff, then a push to its own branch.
async fn deliver(h: &Harness, id: &str, dim: &dyn Fn(&str) -> String) -> anyhow::Result<()> {
    let diff = h.client.diff(id).await?;
    let files: Vec<&str> = diff.files.iter().map(|f| f.path.as_str()).collect();
    println!(
        "\n{}",
        dim(&format!(
            "Changes: {} file(s), +{} -{}: {}",
            files.len(),
            diff.insertions,
            diff.deletions,
            files.join(", ")
        ))
    );
    let pushed = h
        .client
        .push(id, &cc_wire::api::PushRequest::default())
        .await?;
    let branches = h.git.branches("greeter")?;
    println!(
        "{}",
        dim(&format!(
            "Pushed to branch {} at {} (branches now: {}); main is untouched.",
            pushed.branch,
            cc_wire::api::short_commit(&pushed.commit),
            branches.join(", ")
        ))
    );
    Ok(())
}

async fn run(
    ws: &mut cc_client::EventStream,
    tasks: &[&str],
    started: Instant,
    dim: &dyn Fn(&str) -> String,
) -> anyhow::Result<()> {
    wait_for(ws, dim, |m| {
        matches!(
            m,
            ServerMessage::Status {
                state: SessionState::Ready,
                ..
            }
        )
    })
    .await?;
    println!(
        "{}",
        dim(&format!("Ready in {:.1}s", started.elapsed().as_secs_f64()))
    );
    for task in tasks {
        println!("\n› {task}");
        ws.command(task).await?;
        let mut busy = false;
        wait_for(ws, dim, |m| {
            if matches!(
                m,
                ServerMessage::Status {
                    state: SessionState::Busy,
                    ..
                }
            ) {
                busy = true;
            }
            busy && matches!(
                m,
                ServerMessage::Status {
                    state: SessionState::Ready,
                    ..
                }
            )
        })
        .await?;
    }
    Ok(())
}

/// Prints the stream until `done` matches; fails on a session error.
async fn wait_for(
    ws: &mut cc_client::EventStream,
    dim: &dyn Fn(&str) -> String,
    mut done: impl FnMut(&ServerMessage) -> bool,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(300), ws.next())
            .await
            .context("no event for 5 minutes")??
            .context("the stream ended")?;
        match &msg {
            ServerMessage::Output { text, .. } => {
                print!("{text}");
                out.flush()?;
            }
            ServerMessage::Status { state, reason, .. } => {
                println!(
                    "{}",
                    dim(&format!(
                        "[{}{}]",
                        state.as_str(),
                        reason
                            .as_ref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ))
                );
                if *state == SessionState::Error {
                    anyhow::bail!("the session failed: {}", reason.clone().unwrap_or_default());
                }
            }
            ServerMessage::Error { message, .. } => eprintln!("error: {message}"),
            _ => {}
        }
        if done(&msg) {
            return Ok(());
        }
    }
}
