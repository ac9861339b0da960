//! The session's state machine and its one long-lived Claude Code process.
//!
//! `claude -p --input-format stream-json --output-format stream-json
//! --verbose <args…>` runs in the checkout. Turns are written to its stdin as
//! stream-json `user` messages, one at a time: a message written while a
//! turn runs would be folded into that turn ("the user sent a new message
//! while you were working") instead of becoming a turn of its own, so later
//! commands wait in [`Core::queued`] until the running turn's `result`.
//! Every stdout line is journaled (cut at [`MAX_LINE_BYTES`]: whatever runs
//! in the session can write to that pipe), and each `result` line ends one turn. When the process exits, the next
//! command starts a new one with `--resume=<session id>` so the
//! conversation continues.
//!
//! Permission prompts: unless the session runs in `bypassPermissions`
//! mode, Claude Code starts with `--permission-prompt-tool stdio` and asks
//! before each tool its mode and rules do not settle, with a
//! `can_use_tool` control request on stdout. Each becomes an
//! [`AgentEvent::PermissionRequest`] and waits in [`Core::questions`]
//! until the first of: an answer (`/v1/permissions`), the timeout
//! (denied), Claude Code withdrawing it, or the process exiting — each
//! journaled as an [`AgentEvent::PermissionDecision`]. `always` puts the
//! tool in [`Core::always_allowed`]: later questions about it are answered
//! `allow` here at once (journaled, never shown as a question).
//!
//! All state lives in one mutex ([`Core`]) that is never held across an
//! `.await`; state changes are journaled while it is held, so the journal's
//! order always matches the order of the changes. Writing to Claude Code's
//! stdin happens in a separate task fed by a channel, so a slow reader can
//! never block the API or the stdout reader.

use crate::journal::Journal;
use crate::{setup, Config};
use cc_wire::sessiond::{
    AgentEvent, AgentState, CommandRequest, DecisionSource, Health, InitRequest, PermissionAnswer,
    PermissionDecision, DEFAULT_PERMISSION_TIMEOUT_SECS, PROTOCOL_VERSION,
};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};

/// How long Claude Code gets to exit after its stdin closes on shutdown.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for a killed process to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// After the process exits, how long its output pipes may stay open (held by
/// a grandchild) before the readers are abandoned.
const PIPE_DRAIN: Duration = Duration::from_secs(2);

/// Why `/v1/init` was refused.
#[derive(Debug)]
pub enum InitError {
    /// A different request was already accepted.
    AlreadyInitialized,
    /// The request is malformed.
    Invalid(String),
    /// The daemon is stopping.
    ShuttingDown,
}

/// Why `/v1/command` was refused (the message names the state).
#[derive(Debug)]
pub struct NotReady {
    pub message: String,
}

/// Why `/v1/permissions` was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum AnswerError {
    /// Claude Code never asked this.
    Unknown,
    /// Settled already: by an earlier answer, `always`, the timeout, or
    /// withdrawn.
    AlreadySettled,
}

/// A `can_use_tool` question Claude Code waits on.
struct Question {
    tool: String,
    input: Value,
    /// The process that asked: only it can take the answer.
    generation: u64,
    /// When it was asked, in milliseconds since the Unix epoch.
    asked_ms: u64,
}

/// What a denial tells the model when the person gave no message.
fn default_denial(tool: &str) -> String {
    format!("The user did not allow {tool} to run.")
}

/// How a question is settled (see [`Session::settle`]).
struct Verdict {
    allow: bool,
    /// Allow the tool for the rest of the session.
    always: bool,
    /// What the model is told of a denial (a default when absent).
    message: Option<String>,
    source: DecisionSource,
    answered_by: Option<String>,
}

impl Verdict {
    /// Denied, telling the model `why`, for a reason no person gave.
    fn deny(why: String, source: DecisionSource) -> Self {
        Self {
            allow: false,
            always: false,
            message: Some(why),
            source,
            answered_by: None,
        }
    }

    /// Allowed by an earlier `always` for the same tool.
    fn always() -> Self {
        Self {
            allow: true,
            always: true,
            message: None,
            source: DecisionSource::Always,
            answered_by: None,
        }
    }
}

/// The session: lifecycle state, the Claude Code process and the journal.
pub struct Session {
    config: Arc<Config>,
    journal: Arc<Journal>,
    core: Mutex<Core>,
}

struct Core {
    state: AgentState,
    /// Why the state is `Error`.
    error: Option<String>,
    /// The accepted init request (compared against repeated ones).
    init: Option<InitRequest>,
    /// Accepted turns whose `result` has not arrived yet (the running one
    /// and the queued ones).
    pending: u32,
    /// Turns accepted while another runs, written after its `result`.
    queued: std::collections::VecDeque<String>,
    /// Claude Code's session id, for `--resume` after the process exits
    /// (or, kept in `claude_config`, after the container was replaced).
    session_id: Option<String>,
    /// Claude Code's configuration directory, once the setup made it.
    claude_config: Option<std::path::PathBuf>,
    /// The next start resumes a conversation copied from another session
    /// as a fork of its own (`--fork-session`).
    fork_conversation: bool,
    /// Per-turn overrides in force in the running process (`None`: as it
    /// was started). Later turns without one switch back.
    turn_model: Option<String>,
    turn_permission_mode: Option<String>,
    next_control: u64,
    /// The running process, if any.
    proc: Option<Proc>,
    next_generation: u64,
    next_interrupt: u64,
    shutting_down: bool,
    /// Permission questions waiting for an answer, by request id.
    questions: HashMap<String, Question>,
    /// Request ids already settled, so a late answer is told so.
    settled: HashSet<String>,
    /// Tools allowed for the rest of the session (`always`).
    always_allowed: HashSet<String>,
}

/// A running Claude Code process.
struct Proc {
    /// Tells output and exit of this process from those of a later one.
    generation: u64,
    /// Lines for stdin; dropping it closes stdin (Claude Code then exits).
    stdin: Option<mpsc::UnboundedSender<String>>,
    /// Asks the supervisor to kill the process.
    kill: Option<oneshot::Sender<()>>,
    /// Fires once the exit has been journaled.
    exited: Option<oneshot::Receiver<()>>,
    /// Whether its `system/init` event was seen (the session id comes from
    /// the first one).
    saw_init: bool,
}

impl Session {
    pub fn new(config: Arc<Config>, journal: Arc<Journal>) -> Arc<Self> {
        Arc::new(Self {
            config,
            journal,
            core: Mutex::new(Core {
                state: AgentState::Idle,
                error: None,
                init: None,
                pending: 0,
                queued: std::collections::VecDeque::new(),
                session_id: None,
                claude_config: None,
                fork_conversation: false,
                turn_model: None,
                turn_permission_mode: None,
                next_control: 1,
                proc: None,
                next_generation: 1,
                next_interrupt: 1,
                shutting_down: false,
                questions: HashMap::new(),
                settled: HashSet::new(),
                always_allowed: HashSet::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // Every critical section leaves `Core` consistent at each step that
        // could panic, so a poisoned lock is still usable.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn health_of(&self, core: &Core) -> Health {
        Health {
            protocol_version: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            state: core.state,
            error: core.error.clone(),
            last_seq: self.journal.last_seq(),
            open_permissions: {
                let mut open: Vec<_> = core
                    .questions
                    .iter()
                    .map(|(id, q)| cc_wire::api::PendingPermission {
                        request_id: id.clone(),
                        tool: q.tool.clone(),
                        input: q.input.clone(),
                        timestamp: q.asked_ms,
                    })
                    .collect();
                open.sort_by_key(|p| p.timestamp);
                open
            },
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn health(&self) -> Health {
        self.health_of(&self.lock())
    }

    /// Changes the state and journals the change.
    fn set_state(&self, core: &mut Core, state: AgentState, message: Option<String>) {
        core.state = state;
        core.error = if state == AgentState::Error {
            message.clone()
        } else {
            None
        };
        if let Some(m) = &message {
            if state == AgentState::Error {
                tracing::error!("state error: {m}");
            }
        }
        tracing::info!(?state, "state changed");
        self.journal.append(AgentEvent::State { state, message });
    }

    /// `/v1/init`: accepts the first request and starts the setup; an equal
    /// request later is a no-op, a different one a conflict.
    pub fn init(self: &Arc<Self>, req: InitRequest) -> Result<Health, InitError> {
        let mut core = self.lock();
        if let Some(previous) = &core.init {
            return if *previous == req {
                Ok(self.health_of(&core))
            } else {
                Err(InitError::AlreadyInitialized)
            };
        }
        if core.shutting_down {
            return Err(InitError::ShuttingDown);
        }
        setup::validate(&req).map_err(InitError::Invalid)?;
        core.init = Some(req.clone());
        self.set_state(&mut core, AgentState::Cloning, None);
        let health = self.health_of(&core);
        drop(core);
        tokio::spawn(Arc::clone(self).run_setup(req));
        Ok(health)
    }

    async fn run_setup(self: Arc<Self>, req: InitRequest) {
        let prepared = setup::prepare_repo(&self.config, &req, &self.journal).await;
        let mut core = self.lock();
        if let Err(reason) = prepared {
            self.set_state(&mut core, AgentState::Error, Some(reason));
            return;
        }
        if core.shutting_down {
            return;
        }
        let claude_config = crate::conversation::prepare(self.config.claude_config_dir.as_deref());
        if let Some(dir) = &claude_config {
            // A session woken from sleep: its conversation goes on; a
            // fork's copy of it goes on apart.
            core.session_id = crate::conversation::load(dir);
            core.fork_conversation = req.fork && core.session_id.is_some();
        }
        core.claude_config = claude_config;
        match self.spawn_claude(&mut core) {
            Ok(()) => self.set_state(&mut core, AgentState::Ready, None),
            Err(reason) => self.set_state(&mut core, AgentState::Error, Some(reason)),
        }
    }

    /// `/v1/command`: hands a turn to Claude Code (starting it again with
    /// `--resume` when it exited) and returns the `seq` of the `command`
    /// entry. Per-turn overrides become control requests written right
    /// before the turn's user message.
    pub fn command(self: &Arc<Self>, req: CommandRequest) -> Result<u64, NotReady> {
        let CommandRequest {
            text,
            model,
            permission_mode,
        } = req;
        let mut core = self.lock();
        if core.shutting_down {
            return Err(NotReady {
                message: "sessiond is shutting down".into(),
            });
        }
        if !matches!(core.state, AgentState::Ready | AgentState::Busy) {
            let state = core.state;
            let mut message = format!("session is {}", state_name(state));
            if let Some(e) = &core.error {
                message.push_str(": ");
                message.push_str(e);
            }
            return Err(NotReady { message });
        }
        if core.proc.is_none() {
            if let Err(reason) = self.spawn_claude(&mut core) {
                self.set_state(&mut core, AgentState::Error, Some(reason.clone()));
                return Err(NotReady { message: reason });
            }
        }
        let mut line = self.override_lines(&mut core, model, permission_mode);
        line.push_str(
            &json!({
                "type": "user",
                "message": {"role": "user", "content": text},
                "parent_tool_use_id": null,
                "session_id": "default",
            })
            .to_string(),
        );
        // The stdout reader needs the lock to count `result`s, so even an
        // instant answer is counted after the increment below.
        if core.pending > 0 {
            core.queued.push_back(line);
        } else if !send_line(&core, line) {
            return Err(NotReady {
                message: "Claude Code is exiting; retry in a moment".into(),
            });
        }
        let seq = self.journal.append(AgentEvent::Command { text });
        core.pending += 1;
        if core.state == AgentState::Ready {
            self.set_state(&mut core, AgentState::Busy, None);
        }
        Ok(seq)
    }

    /// Control requests (each followed by a newline) that switch the
    /// process to this turn's model and permission mode, or back to the
    /// session's after a turn that overrode them. Claude Code handles stdin
    /// in order, so they apply to the user message written after them.
    fn override_lines(
        &self,
        core: &mut Core,
        model: Option<String>,
        mode: Option<String>,
    ) -> String {
        let init_args = core
            .init
            .as_ref()
            .map(|i| i.claude.args.clone())
            .unwrap_or_default();
        let mut out = String::new();
        let mut control = |core: &mut Core, request: Value| {
            let n = core.next_control;
            core.next_control += 1;
            out.push_str(
                &json!({"type": "control_request", "request_id": format!("turn-{n}"), "request": request})
                    .to_string(),
            );
            out.push('\n');
        };
        if model != core.turn_model {
            // Without a model, `set_model` means Claude Code's default, not
            // the session's `--model`: name the session's explicitly.
            let target = model.clone().or_else(|| last_arg(&init_args, "--model"));
            let mut request = json!({"subtype": "set_model"});
            if let Some(m) = target {
                request["model"] = Value::String(m);
            }
            control(core, request);
            core.turn_model = model;
        }
        if mode != core.turn_permission_mode {
            let target = mode
                .clone()
                .or_else(|| last_arg(&init_args, "--permission-mode"))
                .unwrap_or_else(|| "default".into());
            control(
                core,
                json!({"subtype": "set_permission_mode", "mode": target}),
            );
            core.turn_permission_mode = mode;
        }
        out
    }

    /// `/v1/interrupt`: asks Claude Code to abort the running turn. Returns
    /// whether a turn was running (and the request was sent).
    pub fn interrupt(&self) -> bool {
        let mut core = self.lock();
        if core.pending == 0 || core.state != AgentState::Busy {
            return false;
        }
        let n = core.next_interrupt;
        let line = json!({
            "type": "control_request",
            "request_id": format!("int-{n}"),
            "request": {"subtype": "interrupt"},
        })
        .to_string();
        // A question the turn waits on is withdrawn with it.
        let waiting: Vec<String> = core.questions.keys().cloned().collect();
        for id in waiting {
            if let Some(q) = core.questions.remove(&id) {
                let message = "The user interrupted the turn.".to_owned();
                self.settle(
                    &mut core,
                    &id,
                    q,
                    Verdict::deny(message, DecisionSource::Cancelled),
                );
            }
        }
        if !send_line(&core, line) {
            return false;
        }
        core.next_interrupt += 1;
        true
    }

    /// `/v1/permissions/{id}`: answers a question Claude Code waits on.
    /// The first answer wins.
    pub fn answer(
        &self,
        request_id: &str,
        answer: PermissionAnswer,
    ) -> Result<PermissionDecision, AnswerError> {
        let mut core = self.lock();
        let Some(q) = core.questions.remove(request_id) else {
            return Err(if core.settled.contains(request_id) {
                AnswerError::AlreadySettled
            } else {
                AnswerError::Unknown
            });
        };
        let always = answer.allow && answer.always;
        let tool = q.tool.clone();
        let message =
            (!answer.allow).then(|| answer.message.unwrap_or_else(|| default_denial(&tool)));
        let verdict = Verdict {
            allow: answer.allow,
            always,
            message,
            source: DecisionSource::Answer,
            answered_by: answer.answered_by,
        };
        let decision = self.settle(&mut core, request_id, q, verdict);
        if always {
            // Questions about the same tool asked meanwhile (parallel tool
            // calls) are covered by it too.
            let same: Vec<String> = core
                .questions
                .iter()
                .filter(|(_, q)| q.tool == tool)
                .map(|(id, _)| id.clone())
                .collect();
            for id in same {
                if let Some(q) = core.questions.remove(&id) {
                    self.settle(&mut core, &id, q, Verdict::always());
                }
            }
        }
        Ok(decision)
    }

    /// Denies the question if nobody answered it within the timeout.
    fn expire(&self, request_id: &str, after: Duration) {
        let mut core = self.lock();
        if let Some(q) = core.questions.remove(request_id) {
            tracing::info!(request_id, tool = %q.tool, "permission question timed out");
            let message = format!(
                "Nobody answered within {} s whether {} may run, so it was denied.",
                after.as_secs(),
                q.tool
            );
            self.settle(
                &mut core,
                request_id,
                q,
                Verdict::deny(message, DecisionSource::Timeout),
            );
        }
    }

    /// Tells Claude Code the decision (if the process that asked still
    /// runs), remembers it and journals it.
    fn settle(
        &self,
        core: &mut Core,
        request_id: &str,
        q: Question,
        verdict: Verdict,
    ) -> PermissionDecision {
        let Verdict {
            allow,
            always,
            message,
            source,
            answered_by,
        } = verdict;
        let response = if allow {
            json!({"behavior": "allow", "updatedInput": q.input})
        } else {
            json!({"behavior": "deny", "message": message.clone().unwrap_or_else(|| default_denial(&q.tool))})
        };
        let line = json!({
            "type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": response},
        })
        .to_string();
        let asker_runs = core
            .proc
            .as_ref()
            .is_some_and(|p| p.generation == q.generation);
        // A process that ended takes no answer (its question is void).
        if asker_runs && !send_line(core, line) {
            tracing::warn!(
                request_id,
                "Claude Code is exiting: the permission answer was not delivered"
            );
        }
        if always {
            core.always_allowed.insert(q.tool.clone());
        }
        core.settled.insert(request_id.to_owned());
        let decision = PermissionDecision {
            request_id: request_id.to_owned(),
            tool: q.tool,
            allow,
            always,
            message: if allow { None } else { message },
            source,
            answered_by,
        };
        self.journal
            .append(AgentEvent::PermissionDecision(decision.clone()));
        decision
    }

    /// A `can_use_tool` control request: answered at once for a tool
    /// allowed `always`, else journaled to wait for a person (and the
    /// timeout).
    fn on_permission_request(self: &Arc<Self>, core: &mut Core, generation: u64, data: Value) {
        let Some(request_id) = data
            .get("request_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            // Nothing to answer it with: keep it visible at least.
            self.journal.append(AgentEvent::Claude { data });
            return;
        };
        let request = &data["request"];
        let tool = request
            .get("tool_name")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        let input = request.get("input").cloned().unwrap_or_else(|| json!({}));
        let asked_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let q = Question {
            tool: tool.clone(),
            input: input.clone(),
            generation,
            asked_ms,
        };
        if core.always_allowed.contains(&tool) {
            self.settle(core, &request_id, q, Verdict::always());
            return;
        }
        core.questions.insert(request_id.clone(), q);
        self.journal.append(AgentEvent::PermissionRequest {
            request_id: request_id.clone(),
            tool,
            input,
        });
        let secs = core
            .init
            .as_ref()
            .and_then(|i| i.permission_timeout_secs)
            .unwrap_or(DEFAULT_PERMISSION_TIMEOUT_SECS);
        if secs > 0 {
            let after = Duration::from_secs(secs);
            let me = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                me.expire(&request_id, after);
            });
        }
    }

    /// Stops Claude Code: closes its stdin, waits up to [`STOP_GRACE`] for
    /// it to exit, then kills it. Later commands and inits are refused.
    pub async fn shutdown(&self) {
        let (exited, kill) = {
            let mut core = self.lock();
            core.shutting_down = true;
            match core.proc.as_mut() {
                Some(p) => {
                    p.stdin = None;
                    (p.exited.take(), p.kill.take())
                }
                None => (None, None),
            }
        };
        let Some(mut exited) = exited else { return };
        tracing::info!("closed Claude Code's stdin; waiting for it to exit");
        if tokio::time::timeout(STOP_GRACE, &mut exited).await.is_ok() {
            return;
        }
        tracing::warn!("Claude Code did not exit within {STOP_GRACE:?}; killing it");
        if let Some(kill) = kill {
            let _ = kill.send(());
        }
        let _ = tokio::time::timeout(KILL_WAIT, exited).await;
    }

    /// Starts Claude Code (with `--resume` once a session id is known).
    fn spawn_claude(self: &Arc<Self>, core: &mut Core) -> Result<(), String> {
        let init = core
            .init
            .as_ref()
            .ok_or_else(|| "cannot start Claude Code before init".to_owned())?;
        let mut cmd = Command::new(&self.config.claude_bin);
        cmd.args([
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
        ]);
        if let Some(id) = &core.session_id {
            cmd.arg(format!("--resume={id}"));
            if std::mem::take(&mut core.fork_conversation) {
                cmd.arg("--fork-session");
            }
        }
        let mut env = init.claude.env.clone();
        if let Some(dir) = &core.claude_config {
            env.entry("CLAUDE_CONFIG_DIR".to_owned())
                .or_insert_with(|| dir.display().to_string());
        }
        if asks_permission(&init.claude.args) {
            cmd.args(["--permission-prompt-tool", "stdio"]);
        }
        cmd.args(&init.claude.args)
            .current_dir(&self.config.repo_dir)
            .env_clear()
            .envs(self.config.child_env(&env))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start Claude Code ({}): {e}", self.config.claude_bin))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("Claude Code started without its pipes".into());
        };

        let generation = core.next_generation;
        core.next_generation += 1;
        // A new process starts with the session's own settings.
        core.turn_model = None;
        core.turn_permission_mode = None;
        tracing::info!(
            generation,
            pid = child.id(),
            resume = core.session_id.is_some(),
            "started Claude Code"
        );
        let (line_tx, line_rx) = mpsc::unbounded_channel();
        let (kill_tx, kill_rx) = oneshot::channel();
        let (exited_tx, exited_rx) = oneshot::channel();
        tokio::spawn(write_stdin(stdin, line_rx));

        let me = Arc::clone(self);
        let out = tokio::spawn(read_lines(stdout, move |line| {
            me.on_stdout_line(generation, line)
        }));
        let me = Arc::clone(self);
        let err = tokio::spawn(read_lines(stderr, move |line| {
            me.journal.append(AgentEvent::Stderr { line });
        }));
        tokio::spawn(Arc::clone(self).supervise(generation, child, [out, err], kill_rx, exited_tx));

        core.proc = Some(Proc {
            generation,
            stdin: Some(line_tx),
            kill: Some(kill_tx),
            exited: Some(exited_rx),
            saw_init: false,
        });
        Ok(())
    }

    /// Waits for the process to end (or kills it on request), lets the
    /// readers finish journaling its output, then journals the exit.
    async fn supervise(
        self: Arc<Self>,
        generation: u64,
        mut child: Child,
        readers: [tokio::task::JoinHandle<()>; 2],
        kill: oneshot::Receiver<()>,
        exited: oneshot::Sender<()>,
    ) {
        let status = tokio::select! {
            status = child.wait() => status,
            // A dropped sender does not match `Ok` and disables this branch.
            Ok(()) = kill => {
                let _ = child.start_kill();
                child.wait().await
            }
        };
        let code = match status {
            Ok(s) => s.code(),
            Err(e) => {
                tracing::error!("waiting for Claude Code failed: {e}");
                None
            }
        };
        for mut reader in readers {
            if tokio::time::timeout(PIPE_DRAIN, &mut reader).await.is_err() {
                tracing::warn!("Claude Code's output stayed open after it exited");
                reader.abort();
            }
        }
        self.on_exit(generation, code);
        let _ = exited.send(());
    }

    fn on_stdout_line(self: &Arc<Self>, generation: u64, line: String) {
        if line.trim().is_empty() {
            return;
        }
        let data: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                self.journal.append(AgentEvent::Stderr { line });
                return;
            }
        };
        let mut guard = self.lock();
        let core = &mut *guard;
        let kind = data.get("type").and_then(Value::as_str);
        if kind == Some("system") && data.get("subtype").and_then(Value::as_str) == Some("init") {
            if let Some(p) = core.proc.as_mut().filter(|p| p.generation == generation) {
                if !p.saw_init {
                    p.saw_init = true;
                    if let Some(id) = data.get("session_id").and_then(Value::as_str) {
                        if core.session_id.as_deref() != Some(id) {
                            if let Some(dir) = &core.claude_config {
                                crate::conversation::save(dir, id);
                            }
                        }
                        core.session_id = Some(id.to_owned());
                    }
                }
            }
        }
        if kind == Some("control_request")
            && data["request"].get("subtype").and_then(Value::as_str) == Some("can_use_tool")
        {
            self.on_permission_request(core, generation, data);
            return;
        }
        if kind == Some("control_cancel_request") {
            let id = data
                .get("request_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(q) = core.questions.remove(id) {
                let message = "Claude Code withdrew the question.".to_owned();
                self.settle(
                    core,
                    id,
                    q,
                    Verdict::deny(message, DecisionSource::Cancelled),
                );
            }
            return;
        }
        let is_result = kind == Some("result");
        self.journal.append(AgentEvent::Claude { data });
        if is_result {
            core.pending = core.pending.saturating_sub(1);
            if let Some(next) = core.queued.pop_front() {
                if !send_line(core, next) {
                    tracing::warn!("a queued turn was lost: Claude Code is exiting");
                }
            }
            if core.pending == 0 && core.state == AgentState::Busy {
                self.set_state(core, AgentState::Ready, None);
            }
        }
    }

    fn on_exit(&self, generation: u64, code: Option<i32>) {
        let mut core = self.lock();
        if core
            .proc
            .as_ref()
            .is_some_and(|p| p.generation == generation)
        {
            core.proc = None;
        }
        tracing::info!(generation, ?code, "Claude Code exited");
        let orphaned: Vec<String> = core
            .questions
            .iter()
            .filter(|(_, q)| q.generation == generation)
            .map(|(id, _)| id.clone())
            .collect();
        for id in orphaned {
            if let Some(q) = core.questions.remove(&id) {
                let message = "Claude Code exited before the question was answered.".to_owned();
                self.settle(
                    &mut core,
                    &id,
                    q,
                    Verdict::deny(message, DecisionSource::Cancelled),
                );
            }
        }
        self.journal.append(AgentEvent::Exited { code });
        if !core.queued.is_empty() {
            tracing::warn!(
                dropped = core.queued.len(),
                "queued turns dropped: Claude Code exited"
            );
        }
        core.pending = 0;
        core.queued.clear();
        if core.state == AgentState::Busy {
            self.set_state(&mut core, AgentState::Ready, None);
        }
    }
}

/// The value of the last `--flag value` (or `--flag=value`) in `args`.
fn last_arg(args: &[String], flag: &str) -> Option<String> {
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == flag {
            found = it.next().cloned();
        } else if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.to_owned());
        }
    }
    found
}

/// Whether Claude Code may ask for permission in the mode `args` start it
/// in (the last `--permission-mode`, `default` when none): everything but
/// `bypassPermissions`, which never asks. A turn that switches a bypassing
/// session to an asking mode gets Claude Code's own denials instead.
fn asks_permission(args: &[String]) -> bool {
    last_arg(args, "--permission-mode").as_deref() != Some("bypassPermissions")
        && !args
            .iter()
            .any(|a| a.starts_with("--permission-prompt-tool"))
}

/// Queues a line for the running process's stdin; false when there is none.
fn send_line(core: &Core, line: String) -> bool {
    core.proc
        .as_ref()
        .and_then(|p| p.stdin.as_ref())
        .is_some_and(|tx| tx.send(line).is_ok())
}

fn state_name(state: AgentState) -> &'static str {
    match state {
        AgentState::Idle => "idle (waiting for init)",
        AgentState::Cloning => "cloning",
        AgentState::Ready => "ready",
        AgentState::Busy => "busy",
        AgentState::Error => "in error",
    }
}

/// Feeds queued lines to Claude Code's stdin; closes it when the sender is
/// dropped.
async fn write_stdin(mut stdin: ChildStdin, mut lines: mpsc::UnboundedReceiver<String>) {
    while let Some(mut line) = lines.recv().await {
        line.push('\n');
        if let Err(e) = stdin.write_all(line.as_bytes()).await {
            tracing::warn!("writing to Claude Code's stdin failed: {e}");
            return;
        }
        if let Err(e) = stdin.flush().await {
            tracing::warn!("flushing Claude Code's stdin failed: {e}");
            return;
        }
    }
}

/// Longest line taken from Claude Code's output (or stderr): whatever runs
/// in the session can write to those pipes, and each line is journaled and
/// sent on. The rest of a longer line is discarded as it is read.
pub(crate) const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Calls `on_line` for each line (without its line ending; invalid UTF-8
/// replaced) until end of file. A line beyond [`MAX_LINE_BYTES`] is cut
/// there, with a marker saying how much was discarded (and so is no JSON
/// event any more); the discarded bytes are never held.
async fn read_lines(pipe: impl AsyncRead + Unpin, mut on_line: impl FnMut(String)) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    let mut discarded = 0usize;
    loop {
        let buf = match reader.fill_buf().await {
            Ok(buf) => buf,
            Err(e) => {
                tracing::warn!("reading Claude Code's output failed: {e}");
                return;
            }
        };
        if buf.is_empty() {
            if !line.is_empty() || discarded > 0 {
                on_line(finish_line(&mut line, discarded));
            }
            return;
        }
        let newline = buf.iter().position(|b| *b == b'\n');
        let part = &buf[..newline.unwrap_or(buf.len())];
        let room = MAX_LINE_BYTES - line.len();
        let kept = part.len().min(room);
        line.extend_from_slice(&part[..kept]);
        discarded += part.len() - kept;
        let used = newline.map_or(buf.len(), |i| i + 1);
        reader.consume(used);
        if newline.is_some() {
            on_line(finish_line(&mut line, discarded));
            discarded = 0;
        }
    }
}

/// The line read so far as text (emptying `line`), marked when `discarded`
/// bytes of it were dropped.
fn finish_line(line: &mut Vec<u8>, discarded: usize) -> String {
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    let mut text = String::from_utf8_lossy(line).into_owned();
    line.clear();
    if discarded > 0 {
        text.push_str(&format!(
            " … [line truncated at {MAX_LINE_BYTES} bytes: {discarded} more discarded]"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        read_lines(input, |l| lines.push(l)).await;
        lines
    }

    #[test]
    fn claude_code_is_asked_to_relay_questions_unless_it_bypasses_them() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(asks_permission(&args(&[])));
        assert!(asks_permission(&args(&["--permission-mode", "default"])));
        assert!(asks_permission(&args(&["--permission-mode=acceptEdits"])));
        // The last mode counts, as Claude Code reads it.
        assert!(asks_permission(&args(&[
            "--permission-mode",
            "bypassPermissions",
            "--permission-mode",
            "default"
        ])));
        assert!(!asks_permission(&args(&[
            "--permission-mode",
            "default",
            "--permission-mode",
            "bypassPermissions"
        ])));
    }

    #[tokio::test]
    async fn a_line_beyond_the_limit_is_cut_with_a_marker() {
        let mut input = b"{\"type\":\"a\"}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE_BYTES + 5));
        input.extend(b"\nlast");
        let lines = lines_of(&input).await;
        assert_eq!(
            lines.len(),
            3,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(lines[0], "{\"type\":\"a\"}");
        let marker = format!(
            " … [line truncated at {MAX_LINE_BYTES} bytes: {} more discarded]",
            2 * MAX_LINE_BYTES + 5
        );
        assert!(
            lines[1].ends_with(&marker),
            "{}",
            &lines[1][MAX_LINE_BYTES..]
        );
        assert_eq!(lines[1].len(), MAX_LINE_BYTES + marker.len());
        assert_eq!(lines[2], "last");
        // A line just at the limit is whole.
        let exact = vec![b'y'; MAX_LINE_BYTES];
        assert_eq!(lines_of(&exact).await, [String::from_utf8(exact).unwrap()]);
    }
}
