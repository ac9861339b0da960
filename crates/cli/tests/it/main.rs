//! Acceptance tests of the `claudecluster` client commands: the real binary
//! against a live server (the testkit harness: real Docker, the model
//! double, a git server), plus the error cases against no server and a
//! fake one.
//!
//! The end-to-end tests need the worker image (`CLAUDECLUSTER_TEST_IMAGE`);
//! the attach test needs tmux.

mod admin;
mod attach;
mod console;
mod database;
mod errors;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod options;
mod reconnect;
mod replicas;
mod session;
mod telemetry;
mod webhook;

use std::path::Path;
use std::process::Output;
use std::time::Duration;
use tokio::process::Command;

/// A whole CLI invocation never takes this long, even on a loaded machine.
const CLI_TIMEOUT: Duration = Duration::from_secs(240);

pub const BIN: &str = env!("CARGO_BIN_EXE_claudecluster");

/// The binary with a clean environment: no user config, no ambient
/// ClaudeCluster or Anthropic settings.
pub fn cli(config_home: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "CLAUDECLUSTER_URL",
        "CLAUDECLUSTER_TOKEN",
        "ANTHROPIC_API_KEY",
        "NO_COLOR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("XDG_CONFIG_HOME", config_home)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    cmd
}

/// Runs to completion (bounded by [`CLI_TIMEOUT`]).
pub async fn output(cmd: &mut Command) -> anyhow::Result<Output> {
    Ok(tokio::time::timeout(CLI_TIMEOUT, cmd.output()).await??)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Creates a session on a one-file repository through the API and waits
/// until it is ready.
pub async fn ready_session(h: &cc_testkit::Harness, repo: &str) -> anyhow::Result<String> {
    ready_session_with(h, repo, None).await
}

/// [`ready_session`] with these options (e.g. a permission mode that asks).
pub async fn ready_session_with(
    h: &cc_testkit::Harness,
    repo: &str,
    options: Option<cc_wire::api::SessionOptions>,
) -> anyhow::Result<String> {
    let url = h.git.create_repo(repo, &[("README.md", "# Sample\n")])?;
    let mut req = h.create_request(&url, None);
    req.options = options;
    let created = h.client.create(&req).await?;
    let mut ws = h.client.stream(&created.session_id, 0).await?;
    cc_testkit::harness::until_ready(&mut ws, Duration::from_secs(90)).await?;
    Ok(created.session_id)
}

/// A turn never takes this long, even on a loaded machine.
pub const TURN_TIMEOUT: Duration = Duration::from_secs(180);

/// Reads the stream until the session's first `ready`, failing with what
/// it saw when it ends in `error` instead (or `timeout` passes).
pub async fn await_ready(
    ws: &mut cc_client::EventStream,
    timeout: Duration,
) -> anyhow::Result<Vec<cc_wire::api::ServerMessage>> {
    cc_testkit::harness::until_ready(ws, timeout).await
}

/// Sends a command on the stream and reads until the turn's closing
/// `ready` (or an `error`).
pub async fn run_turn(
    ws: &mut cc_client::EventStream,
    command: &str,
) -> anyhow::Result<Vec<cc_wire::api::ServerMessage>> {
    use cc_testkit::harness::{is_state, read_until};
    use cc_wire::api::SessionState;
    ws.command(command).await?;
    let mut busy = false;
    read_until(ws, TURN_TIMEOUT, |m| {
        busy |= is_state(m, SessionState::Busy);
        (busy && is_state(m, SessionState::Ready)) || is_state(m, SessionState::Error)
    })
    .await
}

/// Starts `serve` (stdout piped, stderr as the caller set it) and returns
/// it with the API's base URL, from the first line it prints.
pub async fn spawn_serve(mut serve: Command) -> anyhow::Result<(tokio::process::Child, String)> {
    use anyhow::Context;
    use tokio::io::{AsyncBufReadExt, BufReader};
    serve.stdout(std::process::Stdio::piped());
    let mut child = serve.spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("serve did not start")??
        .unwrap_or_default();
    let base = first
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line {first:?}"))?
        .to_owned();
    Ok((child, base))
}

/// Everything about an invocation, for assertion messages.
pub fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}
