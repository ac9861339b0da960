//! Following a session's events: a WebSocket reader that reconnects with
//! `since=<last seq>` when the connection is lost, waiting for a session to
//! become ready, and running one turn to its end.

use crate::ui::{exit, Exit, Renderer, Spinner, Style};
use cc_client::{Client, ClientError, EventStream};
use cc_wire::api::{ClientMessage, CommandRequest, ServerMessage, SessionState};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

/// How long a lost connection is retried before giving up.
const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// A session's event stream that survives network loss.
pub struct Follower {
    client: Client,
    id: String,
    ws: Option<EventStream>,
    /// Sequence number of the newest logged event received.
    pub last_seq: u64,
    /// Whether to say on stderr that the connection is being re-established.
    pub announce: bool,
}

impl Follower {
    pub async fn open(client: &Client, id: &str, since: u64) -> Result<Self, Exit> {
        let ws = client
            .stream(id, since)
            .await
            .map_err(|e| Exit::from_client(e, client.base_url()))?;
        Ok(Self {
            client: client.clone(),
            id: id.to_owned(),
            ws: Some(ws),
            last_seq: since,
            announce: true,
        })
    }

    /// The next message; `None` once the session has ended and everything
    /// was delivered. Logged events already seen are skipped, so a
    /// reconnect never repeats one.
    pub async fn next(&mut self) -> Result<Option<ServerMessage>, Exit> {
        loop {
            let Some(ws) = self.ws.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            match ws.next().await {
                Ok(Some(msg)) => {
                    let seq = msg.seq();
                    if seq > 0 {
                        if seq <= self.last_seq {
                            continue;
                        }
                        self.last_seq = seq;
                    }
                    return Ok(Some(msg));
                }
                Ok(None) => {
                    self.ws = None;
                    // The server closes the stream when the session ends,
                    // but also when it shuts down: only the first is the end.
                    match self.client.status(&self.id).await {
                        Ok(st) if !st.state.is_live() => return Ok(None),
                        Ok(_) => {}
                        Err(ClientError::Transport(_)) => {}
                        Err(e) => return Err(Exit::from_client(e, self.client.base_url())),
                    }
                }
                Err(ClientError::Transport(_)) => self.ws = None,
                Err(e) => return Err(Exit::from_client(e, self.client.base_url())),
            }
        }
    }

    async fn reconnect(&mut self) -> Result<(), Exit> {
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(250);
        if self.announce {
            eprintln!(
                "{}",
                Style::stderr().dim("· connection lost, reconnecting…")
            );
        }
        loop {
            tokio::time::sleep(wait).await;
            match self.client.stream(&self.id, self.last_seq).await {
                Ok(ws) => {
                    self.ws = Some(ws);
                    if self.announce {
                        eprintln!("{}", Style::stderr().dim("· reconnected"));
                    }
                    return Ok(());
                }
                Err(e @ ClientError::Transport(_)) if started.elapsed() < RECONNECT_FOR => {
                    tracing::debug!(error = %e, "reconnecting");
                }
                Err(e) => return Err(Exit::from_client(e, self.client.base_url())),
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    /// Sends a message on the WebSocket; `false` when not connected.
    pub async fn send(&mut self, msg: &ClientMessage) -> bool {
        match self.ws.as_mut() {
            Some(ws) => ws.send(msg).await.is_ok(),
            None => false,
        }
    }
}

/// Reads until the session is `ready`, showing the state on the spinner
/// and (in JSON mode) printing every message.
pub async fn wait_ready(
    follower: &mut Follower,
    renderer: &mut Renderer,
    spinner: &Spinner,
) -> Result<(), Exit> {
    loop {
        let Some(msg) = follower.next().await? else {
            return Err(Exit::new(
                exit::FAILURE,
                "the session ended before it was ready",
            ));
        };
        if renderer.mode == crate::ui::Mode::Json {
            renderer.print(&msg);
        }
        if let ServerMessage::Status { state, reason, .. } = &msg {
            spinner.set(&format!("starting the session: {}", state.as_str()));
            match state {
                SessionState::Ready => return Ok(()),
                SessionState::Error
                | SessionState::Terminated
                | SessionState::Terminating
                | SessionState::Sleeping => {
                    return Err(Exit::new(
                        exit::FAILURE,
                        format!(
                            "the session failed to start: {}",
                            crate::ui::inert(reason.as_deref().unwrap_or(state.as_str()))
                        ),
                    ))
                }
                _ => {}
            }
        }
    }
}

/// What one turn did.
#[derive(Debug, Default)]
pub struct TurnOutcome {
    /// The Claude Code `result` event, when the turn produced one.
    pub result: Option<Value>,
    /// Files the turn's Edit/Write calls touched.
    pub files: BTreeSet<String>,
    /// The session ended or failed during the turn.
    pub session_ended: Option<(SessionState, Option<String>)>,
    /// The user interrupted the turn with Ctrl-C.
    pub interrupted: bool,
}

impl TurnOutcome {
    pub fn failed(&self) -> bool {
        self.session_ended.is_some()
            || self
                .result
                .as_ref()
                .and_then(|r| r.get("is_error"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
    }
}

/// Sends `command` and prints the turn until it ends. Ctrl-C interrupts
/// the turn (a second one leaves at once).
pub async fn run_turn(
    client: &Client,
    id: &str,
    follower: &mut Follower,
    command: &str,
    renderer: &mut Renderer,
) -> Result<TurnOutcome, Exit> {
    let req = CommandRequest {
        command: command.to_owned(),
        model: None,
        permission_mode: None,
    };
    run_turn_with(client, id, follower, &req, renderer).await
}

/// [`run_turn`] with per-turn overrides (`model`, `permissionMode`).
pub async fn run_turn_with(
    client: &Client,
    id: &str,
    follower: &mut Follower,
    req: &CommandRequest,
    renderer: &mut Renderer,
) -> Result<TurnOutcome, Exit> {
    let command = req.command.as_str();
    client
        .command_with(id, req)
        .await
        .map_err(|e| Exit::from_client(e, client.base_url()))?;
    let mut out = TurnOutcome::default();
    let mut seen_command = false;
    let mut busy = false;
    // Any `busy` since the command was sent: the turn has started.
    let mut started = false;
    // Ctrl-C before the turn started: the server only interrupts a running
    // turn, so ask again once it runs.
    let mut interrupt_on_start = false;
    let mut interrupts = 0u32;
    loop {
        let msg = tokio::select! {
            m = follower.next() => m?,
            _ = tokio::signal::ctrl_c() => {
                interrupts += 1;
                if interrupts > 1 {
                    return Err(Exit::new(130, "interrupted"));
                }
                out.interrupted = true;
                renderer.finish_line();
                eprintln!("{}", Style::stderr().dim("· interrupting the turn (Ctrl-C again to leave)…"));
                interrupt(follower, client, id).await;
                interrupt_on_start = !started;
                continue;
            }
        };
        let Some(msg) = msg else {
            out.session_ended = Some((SessionState::Terminated, None));
            break;
        };
        renderer.print(&msg);
        match &msg {
            ServerMessage::Command { text, .. } if text == command => seen_command = true,
            ServerMessage::Output {
                event: Some(ev), ..
            } if seen_command => match ev.get("type").and_then(Value::as_str) {
                Some("result") => out.result = Some(ev.clone()),
                Some("assistant") => collect_files(ev, &mut out.files),
                _ => {}
            },
            ServerMessage::Status { state, reason, .. } => match state {
                SessionState::Busy => {
                    started = true;
                    busy = busy || seen_command;
                    if std::mem::take(&mut interrupt_on_start) {
                        interrupt(follower, client, id).await;
                    }
                }
                SessionState::Ready if seen_command && (busy || out.result.is_some()) => break,
                SessionState::Error | SessionState::Terminating | SessionState::Terminated => {
                    out.session_ended = Some((*state, reason.clone()));
                    break;
                }
                _ => {}
            },
            _ => {}
        }
    }
    renderer.finish_line();
    Ok(out)
}

/// The WebSocket `interrupt` message, or the REST call when the socket is
/// down. Best effort: the turn's own end says whether it worked.
async fn interrupt(follower: &mut Follower, client: &Client, id: &str) {
    if !follower.send(&ClientMessage::Interrupt).await {
        let _ = client.interrupt(id).await;
    }
}

/// The files of an `assistant` event's Edit/Write tool calls.
fn collect_files(event: &Value, files: &mut BTreeSet<String>) {
    let blocks = event["message"]["content"].as_array().into_iter().flatten();
    for b in blocks {
        if b.get("type").and_then(Value::as_str) != Some("tool_use") {
            continue;
        }
        let name = b.get("name").and_then(Value::as_str).unwrap_or("");
        if !matches!(name, "Edit" | "Write" | "MultiEdit" | "NotebookEdit") {
            continue;
        }
        let input = &b["input"];
        if let Some(p) = input
            .get("file_path")
            .or_else(|| input.get("notebook_path"))
            .and_then(Value::as_str)
        {
            let shown = p.strip_prefix("/workspace/repo/").unwrap_or(p);
            // One line in the summary: a newline in a name is shown too.
            files.insert(crate::ui::inert(shown).replace('\n', "\u{240a}"));
        }
    }
}

/// The human summary printed after a `run`.
pub fn summary_lines(out: &TurnOutcome, style: Style) -> Vec<String> {
    let label = |s: &str| style.dim(&format!("  {s:<10}"));
    let mut lines = vec![style.bold("Summary")];
    let n = out.files.len();
    let files = if n == 0 {
        "none written or edited".to_owned()
    } else {
        format!(
            "{n} written or edited: {}",
            out.files.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    lines.push(format!(
        "{}{files} {}",
        label("files"),
        style.dim("(counted from the turn's Edit/Write tool calls)")
    ));
    let r = out.result.as_ref();
    let cost = r
        .and_then(|r| r.get("total_cost_usd"))
        .and_then(Value::as_f64)
        .map(|c| format!("${c:.4}"))
        .unwrap_or_else(|| "unknown".into());
    lines.push(format!("{}{cost}", label("cost")));
    let secs = r
        .and_then(|r| r.get("duration_ms"))
        .and_then(Value::as_f64)
        .map(|ms| format!("{:.1}s", ms / 1000.0))
        .unwrap_or_else(|| "unknown".into());
    let turns = r
        .and_then(|r| r.get("num_turns"))
        .and_then(Value::as_u64)
        .map(|n| format!(" · {n} model turn{}", if n == 1 { "" } else { "s" }))
        .unwrap_or_default();
    lines.push(format!("{}{secs}{turns}", label("duration")));
    if let Some(usage) = r.and_then(|r| r.get("usage")) {
        let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
        let input =
            n("input_tokens") + n("cache_read_input_tokens") + n("cache_creation_input_tokens");
        lines.push(format!(
            "{}{input} in · {} out",
            label("tokens"),
            n("output_tokens")
        ));
    }
    let outcome = if let Some((state, reason)) = &out.session_ended {
        style.red(&format!(
            "session {}{}",
            state.as_str(),
            reason
                .as_deref()
                .map(|r| format!(": {}", crate::ui::inert(r)))
                .unwrap_or_default()
        ))
    } else if out.interrupted {
        style.yellow("interrupted")
    } else if out.failed() {
        style.red("failed")
    } else {
        style.green("succeeded")
    };
    lines.push(format!("{}{outcome}", label("outcome")));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn files_come_from_edit_and_write_calls_only() {
        let ev = json!({"type":"assistant","message":{"content":[
            {"type":"tool_use","name":"Write","input":{"file_path":"/workspace/repo/a.txt","content":"x"}},
            {"type":"tool_use","name":"Bash","input":{"command":"touch b"}},
            {"type":"tool_use","name":"Edit","input":{"file_path":"/etc/c"}},
            {"type":"text","text":"hi"}]}});
        let mut files = BTreeSet::new();
        collect_files(&ev, &mut files);
        assert_eq!(
            files.into_iter().collect::<Vec<_>>(),
            vec!["/etc/c".to_owned(), "a.txt".to_owned()]
        );
    }

    #[test]
    fn the_summary_shows_a_sessions_escapes_instead_of_obeying_them() {
        let ev = json!({"type":"assistant","message":{"content":[
            {"type":"tool_use","name":"Write","input":{"file_path":"a\u{1b}]52;c;eA==\u{7}\nb"}}]}});
        let mut out = TurnOutcome::default();
        collect_files(&ev, &mut out.files);
        out.session_ended = Some((SessionState::Error, Some("x\u{1b}[2Jy".into())));
        let lines = summary_lines(&out, crate::ui::Style { color: false });
        let text = lines.join("\n");
        assert!(text.contains("a␛]52;c;eA==␇␊b"), "{text}");
        assert!(text.contains("x␛[2Jy"), "{text}");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
    }

    #[test]
    fn a_turn_fails_on_an_error_result_or_a_dead_session() {
        let mut out = TurnOutcome {
            result: Some(json!({"is_error": false})),
            ..Default::default()
        };
        assert!(!out.failed());
        out.result = Some(json!({"is_error": true}));
        assert!(out.failed());
        out.result = None;
        out.session_ended = Some((SessionState::Error, None));
        assert!(out.failed());
    }
}
