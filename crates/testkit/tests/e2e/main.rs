//! End to end, through the public API only: real Docker containers built
//! from the worker image, the real Claude Code inside them, a model double
//! as the Anthropic API, and a real smart-HTTP git server.
//!
//! Needs the worker image (`scripts/test.sh` builds it).

mod access;
mod bad_input;
mod control;
mod forgery;
mod fork;
mod isolation;
mod lifecycle;
mod oom;
mod permissions;
mod push;
mod python_sdk;
mod runtime;
mod seed;
mod session;
mod sleep;
mod webhooks;
mod work;

use cc_testkit::harness::{is_state, read_until, until_ready};
use cc_testkit::Harness;
use cc_wire::api::{ServerMessage, SessionState};
use std::time::Duration;

/// Generous: a loaded 2-core CI machine starts containers slowly.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const TURN_TIMEOUT: Duration = Duration::from_secs(120);

/// Creates a session on a fresh one-file repository and waits for `ready`.
async fn ready_session(
    h: &Harness,
    repo: &str,
) -> anyhow::Result<(String, cc_client::EventStream, Vec<ServerMessage>)> {
    let url = h.git.create_repo(repo, &[("README.md", "# Sample\n")])?;
    let created = h.client.create(&h.create_request(&url, None)).await?;
    // The whole log (`since=0`), so the caller sees how the session started.
    let url = format!("{}&since=0", created.endpoints.websocket);
    let mut ws = cc_client::EventStream::connect(&url).await?;
    let seen = until_ready(&mut ws, READY_TIMEOUT).await?;
    Ok((created.session_id, ws, seen))
}

/// Sends a command over the WebSocket and reads until the turn's final
/// `ready` status.
async fn run_turn(
    ws: &mut cc_client::EventStream,
    command: &str,
) -> anyhow::Result<Vec<ServerMessage>> {
    ws.command(command).await?;
    let mut busy = false;
    read_until(ws, TURN_TIMEOUT, |m| {
        if is_state(m, SessionState::Busy) {
            busy = true;
        }
        (busy && is_state(m, SessionState::Ready)) || is_state(m, SessionState::Error)
    })
    .await
}

/// The value of the Prometheus sample whose line contains `needle` (0 when
/// there is none). Gateway counters are process-wide, so tests only ask
/// whether theirs moved.
async fn metric(h: &Harness, needle: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{}/metrics", h.client.base_url()))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find(|l| !l.starts_with('#') && l.contains(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}
