//! Driving sessions through the public API for the measurements: create
//! and wait for `ready`, run one turn and time its first `output`.

use cc_client::EventStream;
use cc_testkit::harness::{is_state, read_until, summary};
use cc_testkit::Harness;
use cc_wire::api::{CreateSessionRequest, ServerMessage, SessionState};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Generous: on a loaded 2-core machine a container can take long to start,
/// and a timeout here would be noise, not a finding.
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);
pub const TURN_TIMEOUT: Duration = Duration::from_secs(300);

pub fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub fn anyhow_err(e: impl std::fmt::Debug) -> String {
    // anyhow's `{:#}`-like chain through Debug keeps the context lines.
    format!("{e:?}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A session that reached `ready`.
pub struct ReadySession {
    pub id: String,
    pub container_id: String,
    pub ws: EventStream,
    /// From sending create to the first `status ready` on the WebSocket.
    pub ready_after: Duration,
    /// Each state the session went through, with the time from sending
    /// create to the state's own timestamp (orchestrator clock, ms).
    pub stages: Vec<(SessionState, Duration)>,
}

/// Creates a session on `repo_url` and waits for its first `ready`.
pub async fn ready_session(h: &Harness, repo_url: &str) -> Result<ReadySession, String> {
    ready_session_with(&h.client, &h.create_request(repo_url, None)).await
}

/// Creates a session through `client` and waits for its first `ready`.
pub async fn ready_session_with(
    client: &cc_client::Client,
    request: &CreateSessionRequest,
) -> Result<ReadySession, String> {
    let started = Instant::now();
    let wall = SystemTime::now();
    let created = client
        .create(request)
        .await
        .map_err(|e| format!("create: {e}"))?;
    let mut ws = client
        .stream(&created.session_id, 0)
        .await
        .map_err(|e| format!("stream: {e}"))?;
    let seen = read_until(&mut ws, READY_TIMEOUT, |m| {
        is_state(m, SessionState::Ready)
            || is_state(m, SessionState::Error)
            || is_state(m, SessionState::Terminated)
    })
    .await
    .map_err(|e| format!("session {}: {}", created.session_id, anyhow_err(e)))?;
    let ready_after = started.elapsed();
    let stages = seen
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Status {
                state, timestamp, ..
            } => {
                let at = UNIX_EPOCH + Duration::from_millis(*timestamp);
                Some((*state, at.duration_since(wall).unwrap_or(Duration::ZERO)))
            }
            _ => None,
        })
        .collect();
    match seen.last() {
        Some(m) if is_state(m, SessionState::Ready) => Ok(ReadySession {
            id: created.session_id,
            container_id: created.container_id,
            ws,
            ready_after,
            stages,
        }),
        _ => Err(format!(
            "session {} did not become ready: {}",
            created.session_id,
            summary(&seen).lines().last().unwrap_or_default()
        )),
    }
}

/// How one turn went.
pub struct Turn {
    /// Command sent → first `output` event.
    pub first_output: Option<Duration>,
    /// Where that time went, by the events' own timestamps (sessiond's
    /// clock, the host's in a container): see [`Hops`].
    pub hops: Option<Hops>,
    /// Command sent → the turn's closing `ready`.
    pub total: Duration,
    /// An `error` event or status, or a turn result with `isError`.
    pub failed: bool,
}

/// A turn's first output, hop by hop, in milliseconds: the command on its
/// way into the container (client → sessiond journals it), Claude Code's
/// answer inside it (command journaled → first output line journaled: the
/// model's call goes out through the gateway's relay), and the output on
/// its way back (journaled → the client has it). Timestamps are whole
/// milliseconds, so each hop is ±1 ms.
#[derive(Debug, Clone, Copy)]
pub struct Hops {
    pub to_sessiond: f64,
    pub in_container: f64,
    pub back: f64,
}

/// Sends `command` on the WebSocket and reads until the turn's closing
/// `ready` (after `busy`) or an error state.
pub async fn run_turn(ws: &mut EventStream, command: &str) -> Result<Turn, String> {
    let started = Instant::now();
    let sent_ms = cc_core::now_ms();
    ws.command(command).await.map_err(err)?;
    let mut first_output = None;
    let mut command_ms = None;
    let mut hops = None;
    let mut busy = false;
    let mut failed = false;
    read_until(ws, TURN_TIMEOUT, |m| {
        match m {
            ServerMessage::Command { timestamp, .. } if command_ms.is_none() => {
                command_ms = Some(*timestamp);
            }
            ServerMessage::Output { timestamp, .. } if first_output.is_none() => {
                first_output = Some(started.elapsed());
                let received_ms = cc_core::now_ms();
                hops = command_ms.map(|c| Hops {
                    to_sessiond: c as f64 - sent_ms as f64,
                    in_container: *timestamp as f64 - c as f64,
                    back: received_ms as f64 - *timestamp as f64,
                });
            }
            ServerMessage::TurnResult { turn, .. } if turn.is_error => failed = true,
            ServerMessage::Error { .. } => failed = true,
            _ => {}
        }
        if is_state(m, SessionState::Busy) {
            busy = true;
        }
        let end = is_state(m, SessionState::Error) || is_state(m, SessionState::Terminated);
        if end {
            failed = true;
        }
        (busy && is_state(m, SessionState::Ready)) || end
    })
    .await
    .map_err(anyhow_err)?;
    Ok(Turn {
        first_output,
        hops,
        total: started.elapsed(),
        failed,
    })
}

/// Deletes a session; errors are reported, not fatal to the measurement.
pub async fn delete(client: &cc_client::Client, id: &str) -> Result<(), String> {
    client
        .delete(id)
        .await
        .map(|_| ())
        .map_err(|e| format!("delete {id}: {e}"))
}
