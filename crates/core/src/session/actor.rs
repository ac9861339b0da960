//! One actor per live session: the only code that changes a live session.
//!
//! It boots the session (waits for sessiond, sends the idempotent init,
//! follows the journal), turns journal entries into the session's event
//! log, serves commands, and ends the session — on request, at the end of
//! its lifetime, or when the container or the clone fails.

use super::adopt::Start;
use super::reaper::{self, Activity, Verdict};
use super::Inner;
use crate::error::{AgentError, CoreError, RuntimeError};
use crate::metrics::CoreMetrics;
use crate::seams::{Agent, AgentEndpoint, EventStream, Placement, Runtime, SessionRecord, Store};
use crate::time::{epoch_ms, now, now_ms, rfc3339_to_ms};
use cc_wire::api::{ServerMessage, SessionState};
use cc_wire::render::{render, Rendered};
use cc_wire::sessiond::{AgentEvent, AgentState, InitRequest, JournalEntry};
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

/// Messages waiting for the actor; senders wait when it is full.
pub(crate) const ACTOR_QUEUE: usize = 64;
/// Commands accepted while the session is still starting.
const MAX_QUEUED_COMMANDS: usize = 32;
/// Pause between health probes while sessiond starts.
const HEALTH_POLL: Duration = Duration::from_millis(50);
/// Pause before re-following a journal whose stream broke.
const REFOLLOW_BACKOFF: Duration = Duration::from_millis(500);

pub(crate) enum ActorMsg {
    Command {
        turn: cc_wire::sessiond::CommandRequest,
        reply: oneshot::Sender<Result<SessionState, CoreError>>,
    },
    Interrupt {
        reply: oneshot::Sender<Result<bool, CoreError>>,
    },
    Diff {
        reply: oneshot::Sender<Result<cc_wire::api::SessionDiff, CoreError>>,
    },
    Files {
        path: String,
        reply: oneshot::Sender<Result<cc_wire::api::SessionPath, CoreError>>,
    },
    Push {
        req: cc_wire::sessiond::PushRequest,
        reply: oneshot::Sender<Result<cc_wire::sessiond::PushOutcome, CoreError>>,
    },
    Terminate {
        reason: String,
        reply: oneshot::Sender<SessionRecord>,
    },
    /// Put the session to sleep (it must be `ready`).
    Sleep {
        reason: String,
        reply: oneshot::Sender<Result<SessionRecord, CoreError>>,
    },
    /// The runtime saw the container end (see `crate::reconciler`).
    ContainerExited { reason: String },
    /// The kernel killed a process in the container for exceeding the
    /// memory limit; the container lives on.
    OomKill,
    /// The session's workspace holds `used` bytes, more than the
    /// deployment's `limit` (see `super::workspace`): the session ends.
    WorkspaceFull { used: u64, limit: u64 },
    /// The gateway relayed a model call and measured what it cost.
    Spend { spend: super::usage::ModelSpend },
    /// Another replica holds the session's lease now: stop without
    /// touching the session (see `crate::lease`).
    Release { reason: String },
    /// A person's answer to a permission question.
    Permission {
        request_id: String,
        answer: cc_wire::sessiond::PermissionAnswer,
        reply: oneshot::Sender<Result<cc_wire::sessiond::PermissionDecision, CoreError>>,
    },
}

/// Where a session's actor starts.
pub(crate) enum Boot {
    /// The container runs; sessiond is at the endpoint.
    Placed(AgentEndpoint),
    /// The container waits for its place (a Pending Pod): the actor asks
    /// the runtime to say when it runs, then learns sessiond's URL; it
    /// holds sessiond's token meanwhile.
    Pending(crate::ids::Token),
}

/// The runtime's wait for a pending container, running beside the actor
/// so messages and the session's lifetime are served meanwhile.
type Placing = tokio::task::JoinHandle<Result<Placement, RuntimeError>>;

pub(crate) struct Actor<R, A, S> {
    inner: Arc<Inner<R, A, S>>,
    record: SessionRecord,
    record_tx: watch::Sender<SessionRecord>,
    events: broadcast::Sender<ServerMessage>,
    endpoint: AgentEndpoint,
    /// Set while the container waits for its place.
    placing: Option<Placing>,
    init: InitRequest,
    queued: VecDeque<cc_wire::sessiond::CommandRequest>,
    /// Last use, shared with the manager (see `reaper`).
    activity: Arc<Activity>,
    /// When the create request came in; `None` once `ready` was reached
    /// (or for an adopted session), so the spawn is measured once.
    spawn_started: Option<Instant>,
    /// When the wake request came in, likewise until `ready`.
    wake_started: Option<Instant>,
    /// Open while the session starts (`session.start`): the trace's view
    /// of the interval `spawn_started` measures.
    start_span: Option<tracing::Span>,
    /// The running turn: when its command was accepted, and its
    /// `session.turn` span, open until the turn's `ready`.
    turn: Option<(Instant, tracing::Span)>,
    oom: OomIncidents,
    /// Permission questions the session waits on, shared with its handle.
    permissions: Arc<super::permissions::Pending>,
}

/// Out-of-memory notifications closer than this to the previous one belong
/// to the same incident.
const OOM_INCIDENT_GAP: Duration = Duration::from_secs(2);

/// Groups the runtime's out-of-memory notifications into incidents: the
/// memory cgroup notifies each time an allocation fails while the process
/// the kernel killed is still exiting, so one kill comes as a burst of
/// notifications (five in a row were seen for one `tail`). One incident is
/// one kill counted and reported.
#[derive(Debug, Default)]
struct OomIncidents {
    last: Option<Instant>,
}

impl OomIncidents {
    /// Whether a notification at `at` begins a new incident.
    fn is_new(&mut self, at: Instant) -> bool {
        let new = self
            .last
            .is_none_or(|l| at.saturating_duration_since(l) >= OOM_INCIDENT_GAP);
        self.last = Some(at);
        new
    }
}

/// Why the actor's loop ended.
enum Exit {
    Terminated(String, Option<oneshot::Sender<SessionRecord>>),
    /// Idle, or asked to: its container goes, its workspace stays.
    Slept(
        String,
        Option<oneshot::Sender<Result<SessionRecord, CoreError>>>,
    ),
    /// Asleep now (the answer for whoever asked).
    Asleep(Option<oneshot::Sender<Result<SessionRecord, CoreError>>>),
    Failed(String),
    /// The session belongs to another replica now; it goes on there.
    Released(String),
}

impl<R: Runtime, A: Agent, S: Store> Actor<R, A, S> {
    pub(crate) fn new(
        inner: Arc<Inner<R, A, S>>,
        record: SessionRecord,
        record_tx: watch::Sender<SessionRecord>,
        events: broadcast::Sender<ServerMessage>,
        boot: Boot,
        init: InitRequest,
    ) -> Self {
        let (endpoint, placing) = match boot {
            Boot::Placed(ep) => (ep, None),
            Boot::Pending(token) => {
                let inner = inner.clone();
                let id = record.id.clone();
                let wait = tokio::spawn(async move { inner.runtime.wait_running(&id).await });
                // Its URL comes with the placement (`on_placed`).
                let ep = AgentEndpoint {
                    base_url: String::new(),
                    token,
                };
                (ep, Some(wait))
            }
        };
        Self {
            inner,
            record,
            record_tx,
            events,
            endpoint,
            placing,
            init,
            queued: VecDeque::new(),
            activity: Arc::new(Activity::new()),
            spawn_started: None,
            wake_started: None,
            start_span: None,
            turn: None,
            oom: OomIncidents::default(),
            permissions: Default::default(),
        }
    }

    /// Shares the session's open permission questions with its handle.
    pub(crate) fn with_permissions(mut self, p: Arc<super::permissions::Pending>) -> Self {
        self.permissions = p;
        self
    }

    /// Shares the session's activity clock and, for a new or woken
    /// session, when its request arrived (for the latency metrics).
    pub(crate) fn with_lifecycle(mut self, activity: Arc<Activity>, start: Start) -> Self {
        self.activity = activity;
        match start {
            Start::Created(t) => self.spawn_started = Some(t),
            Start::Woken(t) => self.wake_started = Some(t),
            Start::Adopted => {}
        }
        self
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<ActorMsg>) {
        let id = self.record.id.clone();
        let exit = loop {
            let exit = match self.serve(&mut rx).await {
                Ok(exit) => exit,
                // A write was fenced off: the session's new owner carries on.
                Err(CoreError::Fenced(m)) => Exit::Released(m),
                Err(e) => Exit::Failed(format!("internal error: {e}")),
            };
            let Exit::Slept(reason, reply) = exit else {
                break exit;
            };
            let span = tracing::info_span!("session.sleep", session.id = %id, reason);
            match tracing::Instrument::instrument(self.go_to_sleep(reason), span).await {
                Ok(()) => {
                    // Asked for through the API, which audits it; the idle
                    // timeout's is audited here.
                    if reply.is_none() {
                        let e = crate::audit::core_event(
                            "system",
                            "session.sleep",
                            id.as_str(),
                            "ok",
                            "cause=idle".into(),
                        );
                        self.inner.audit(e);
                    }
                    break Exit::Asleep(reply);
                }
                Err(CoreError::Fenced(m)) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(CoreError::Unavailable(
                            "the session moved to another replica; try again".into(),
                        )));
                    }
                    break Exit::Released(m);
                }
                // Its container is still there: it stays awake, as it was
                // (sessiond is followed again from the stored cursor).
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "the session could not go to sleep; it stays awake");
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        };
        if let Some(wait) = self.placing.take() {
            wait.abort();
        }
        self.start_span = None;
        self.turn = None;
        self.permissions.clear();
        let end = |reason: &str| tracing::info_span!("session.end", session.id = %id, reason);
        let result = match exit {
            Exit::Released(reason) => {
                tracing::warn!(session = %id, %reason, "let the session go to another replica");
                self.inner.credentials.remove(&id);
                Ok(())
            }
            Exit::Terminated(reason, reply) => {
                let span = end(&reason);
                let finish = self.finish(SessionState::Terminated, reason, None);
                let r = tracing::Instrument::instrument(finish, span).await;
                if let Some(reply) = reply {
                    let _ = reply.send(self.record.clone());
                }
                r
            }
            Exit::Failed(reason) => {
                let span = end(&reason);
                let finish = self.finish(SessionState::Error, reason.clone(), Some(reason));
                tracing::Instrument::instrument(finish, span).await
            }
            Exit::Asleep(reply) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(self.record.clone()));
                }
                Ok(())
            }
            // Handled above, where it either sleeps or serves on.
            Exit::Slept(..) => Ok(()),
        };
        if let Err(e) = result {
            tracing::error!(session = %id, error = %e, "ending session");
        }
        self.inner.remove_handle(&id);
        // Late messages get a clear answer instead of hanging.
        rx.close();
        while let Some(msg) = rx.recv().await {
            match msg {
                // A call relayed while the session ended still cost.
                ActorMsg::Spend { spend } => self.on_spend(spend).await,
                other => self.refuse(other),
            }
        }
    }

    async fn serve(&mut self, rx: &mut mpsc::Receiver<ActorMsg>) -> Result<Exit, CoreError> {
        self.activity.touch();
        if self.spawn_started.is_some() {
            let id = &self.record.id;
            self.start_span = Some(tracing::info_span!("session.start", session.id = %id));
        }
        let mut journal: Option<EventStream> = None;
        let mut boot_deadline = Instant::now() + self.inner.config.agent_ready_timeout;
        loop {
            let booting = journal.is_none() && self.placing.is_none();
            let idle = reaper::idle_timeout(&self.record.limits, self.inner.config.idle_timeout);
            let check_at = match reaper::judge(&self.record, &self.activity, idle) {
                Verdict::Expired(reason) => {
                    CoreMetrics::inc(&self.inner.metrics.reaped_total);
                    return Ok(Exit::Terminated(reason, None));
                }
                Verdict::Idle(reason) if self.inner.sleeps_when_idle() => {
                    return Ok(Exit::Slept(reason, None));
                }
                Verdict::Idle(reason) => {
                    CoreMetrics::inc(&self.inner.metrics.reaped_total);
                    return Ok(Exit::Terminated(reason, None));
                }
                Verdict::CheckAt(at) => at,
            };
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else {
                        return Ok(Exit::Terminated("the orchestrator shut down".into(), None));
                    };
                    if let Some(exit) = self.handle(msg).await {
                        return Ok(exit);
                    }
                }
                // Loops to judge the session's lifetime again.
                _ = tokio::time::sleep_until(check_at) => {}
                placed = placed(&mut self.placing) => {
                    match placed {
                        Ok(p) => self.on_placed(p).await?,
                        Err(reason) => {
                            CoreMetrics::inc(&self.inner.metrics.container_failures_total);
                            return Ok(Exit::Failed(reason));
                        }
                    }
                    boot_deadline = Instant::now() + self.inner.config.agent_ready_timeout;
                }
                booted = boot(
                    self.inner.clone(),
                    self.endpoint.clone(),
                    self.init.clone(),
                    self.record.agent_seq,
                    boot_deadline,
                ), if booting => {
                    match booted {
                        Ok((stream, open)) => {
                            self.permissions.replace(open);
                            journal = Some(stream);
                        }
                        Err(reason) => return Ok(Exit::Failed(reason)),
                    }
                }
                entry = next_entry(&mut journal), if !booting => {
                    match entry {
                        Some(Ok(entry)) => {
                            if let Some(exit) = self.on_entry(entry).await? {
                                return Ok(exit);
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(session = %self.record.id, error = %e, "journal stream broke");
                            if let Some(reason) = self.container_gone().await {
                                CoreMetrics::inc(&self.inner.metrics.container_failures_total);
                                return Ok(Exit::Failed(reason));
                            }
                            journal = None;
                            boot_deadline = Instant::now() + self.inner.config.agent_ready_timeout;
                            tokio::time::sleep(REFOLLOW_BACKOFF).await;
                        }
                        None => {
                            if let Some(reason) = self.container_gone().await {
                                CoreMetrics::inc(&self.inner.metrics.container_failures_total);
                                return Ok(Exit::Failed(reason));
                            }
                            journal = None;
                            boot_deadline = Instant::now() + self.inner.config.agent_ready_timeout;
                            tokio::time::sleep(REFOLLOW_BACKOFF).await;
                        }
                    }
                }
            }
        }
    }

    /// Whether the session's checkout may be used now: it exists once the
    /// session is ready; `during_turn` allows it while a turn runs.
    fn checkout(&self, missing: &str, during_turn: bool) -> Result<(), CoreError> {
        match self.record.state {
            SessionState::Ready => Ok(()),
            SessionState::Busy if during_turn => Ok(()),
            SessionState::Busy => Err(CoreError::conflict(
                "session_busy",
                "a turn is running; try again when it has finished",
            )),
            other => Err(CoreError::conflict(
                "session_not_ready",
                format!(
                    "session {} is {}: {missing}",
                    self.record.id,
                    other.as_str()
                ),
            )),
        }
    }

    async fn handle(&mut self, msg: ActorMsg) -> Option<Exit> {
        match msg {
            ActorMsg::Command { turn, reply } => {
                let r = self.command(turn).await;
                let _ = reply.send(r);
            }
            ActorMsg::Diff { reply } => {
                let r = match self.checkout("no checkout yet", true) {
                    Ok(()) => self
                        .inner
                        .agent
                        .diff(&self.endpoint)
                        .await
                        .map_err(agent_unavailable),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            ActorMsg::Files { path, reply } => {
                let r = match self.checkout("no checkout yet", true) {
                    Ok(()) => self
                        .inner
                        .agent
                        .files(&self.endpoint, &path)
                        .await
                        .map_err(files_error),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            ActorMsg::Push { req, reply } => {
                // Not during a turn: HEAD and the working tree are moving.
                let r = match self.checkout("nothing to push", false) {
                    Ok(()) => self
                        .inner
                        .agent
                        .push(&self.endpoint, &req)
                        .await
                        .map_err(push_error),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            ActorMsg::Interrupt { reply } => {
                let r = if self.record.state == SessionState::Busy {
                    self.inner
                        .agent
                        .interrupt(&self.endpoint)
                        .await
                        .map(|()| true)
                        .map_err(agent_unavailable)
                } else {
                    Ok(false)
                };
                let _ = reply.send(r);
            }
            ActorMsg::Terminate { reason, reply } => {
                return Some(Exit::Terminated(reason, Some(reply)))
            }
            ActorMsg::Sleep { reason, reply } => match self.may_sleep() {
                Ok(()) => return Some(Exit::Slept(reason, Some(reply))),
                Err(e) => drop(reply.send(Err(e))),
            },
            // A container that never ran: the runtime's wait for it says
            // why, in its own words (the kubelet's, the scheduler's).
            ActorMsg::ContainerExited { reason } if self.placing.is_some() => {
                tracing::debug!(session = %self.record.id, %reason, "the pending container ended; waiting for the runtime's verdict");
            }
            ActorMsg::ContainerExited { reason } => {
                CoreMetrics::inc(&self.inner.metrics.container_failures_total);
                return Some(Exit::Failed(reason));
            }
            ActorMsg::OomKill => {
                if let Err(e) = self.on_oom_kill(None).await {
                    tracing::error!(session = %self.record.id, error = %e, "recording an out-of-memory kill");
                }
            }
            ActorMsg::WorkspaceFull { used, limit } => {
                CoreMetrics::inc(&self.inner.metrics.workspace_limit_exceeded_total);
                return Some(Exit::Failed(format!(
                    "the session's workspace grew to {}, over its limit of {}",
                    format_mib(used),
                    format_mib(limit)
                )));
            }
            ActorMsg::Spend { spend } => self.on_spend(spend).await,
            ActorMsg::Release { reason } => return Some(Exit::Released(reason)),
            ActorMsg::Permission {
                request_id,
                answer,
                reply,
            } => {
                let r = self
                    .inner
                    .agent
                    .answer_permission(&self.endpoint, &request_id, &answer)
                    .await
                    .map_err(permission_error);
                let _ = reply.send(r);
            }
        }
        None
    }

    /// Adds a model call the gateway measured to the session's spend and
    /// stores it, so the next budget check (of this session or its owner's
    /// others) sees it.
    async fn on_spend(&mut self, spend: super::usage::ModelSpend) {
        super::usage::add_spend(&self.record.id, &mut self.record.usage, &spend);
        if let Err(e) = self.inner.store.update_session(&self.record).await {
            tracing::error!(session = %self.record.id, error = %e, "storing the session's spend");
        }
        self.record_tx.send_replace(self.record.clone());
    }

    /// Counts the kill and tells the stream (once per incident, see
    /// [`OomIncidents`]): the process that died was the session's (a tool,
    /// a build), not the session, which stays usable.
    async fn on_oom_kill(&mut self, agent_seq: Option<u64>) -> Result<(), CoreError> {
        if !self.oom.is_new(Instant::now()) {
            return self.emit(Vec::new(), agent_seq).await;
        }
        CoreMetrics::inc(&self.inner.metrics.oom_kills_total);
        self.record.usage.oom_kills += 1;
        let limit = self.record.limits.memory_bytes;
        tracing::warn!(session = %self.record.id, limit_bytes = limit, "out-of-memory kill in the session");
        let msg = ServerMessage::Error {
            seq: 0,
            message: format!(
                "a process in the session was killed for exceeding the session's memory limit ({})",
                format_mib(limit)
            ),
            timestamp: now_ms(),
            code: Some("oom_kill".into()),
        };
        // The count and its event in one transaction.
        self.write(vec![msg], agent_seq, true).await
    }

    async fn command(
        &mut self,
        turn: cc_wire::sessiond::CommandRequest,
    ) -> Result<SessionState, CoreError> {
        super::usage::check_budget(&self.init, &self.record.usage)?;
        if let Some(limit) = self.inner.config.agent.max_user_budget_usd {
            // Each session's own cap was cut to what its user had left when
            // it was created; sessions created side by side could still
            // spend that more than once, so every turn asks again.
            super::usage::check_user_budget(self.inner.store(), &self.record.owner, limit).await?;
        }
        self.activity.touch();
        if self.turn.is_none() {
            let span = tracing::info_span!(
                "session.turn",
                session.id = %self.record.id,
                turn.cost_usd = tracing::field::Empty,
                turn.is_error = tracing::field::Empty,
                turn.num_turns = tracing::field::Empty,
            );
            self.turn = Some((Instant::now(), span));
        }
        match self.record.state {
            SessionState::Ready | SessionState::Busy => {
                self.inner
                    .agent
                    .command(&self.endpoint, &turn)
                    .await
                    .map_err(agent_unavailable)?;
                Ok(self.record.state)
            }
            SessionState::Creating | SessionState::Starting | SessionState::Cloning => {
                if self.queued.len() >= MAX_QUEUED_COMMANDS {
                    return Err(CoreError::conflict(
                        "too_many_queued_commands",
                        format!(
                            "{MAX_QUEUED_COMMANDS} commands already wait for the session to start"
                        ),
                    ));
                }
                self.queued.push_back(turn);
                Ok(self.record.state)
            }
            other => Err(CoreError::conflict(
                "session_not_active",
                format!("session {} is {}", self.record.id, other.as_str()),
            )),
        }
    }

    /// Turns one journal entry into log events and state changes.
    async fn on_entry(&mut self, entry: JournalEntry) -> Result<Option<Exit>, CoreError> {
        if entry.seq <= self.record.agent_seq {
            return Ok(None); // Already reflected (re-follow after a break).
        }
        let seq = Some(entry.seq);
        // The container's clock is not trusted to be valid: an unreadable
        // time is the time the orchestrator read the entry.
        let ts = rfc3339_to_ms(&entry.ts).unwrap_or_else(now_ms);
        match entry.event {
            AgentEvent::State { state, message } => {
                let next = match state {
                    AgentState::Idle => None,
                    AgentState::Cloning => Some(SessionState::Cloning),
                    AgentState::Ready => Some(SessionState::Ready),
                    AgentState::Busy => Some(SessionState::Busy),
                    AgentState::Error => {
                        return Ok(Some(Exit::Failed(
                            message.unwrap_or_else(|| "the session agent failed".into()),
                        )))
                    }
                };
                match next {
                    Some(s) if s != self.record.state => {
                        self.observe_transition(s);
                        self.set_state(s, None, seq).await?
                    }
                    _ => self.emit(Vec::new(), seq).await?,
                }
                if self.record.state == SessionState::Ready {
                    self.flush_queue().await;
                }
            }
            AgentEvent::Command { text } => {
                let msg = ServerMessage::Command {
                    seq: 0,
                    text,
                    timestamp: ts,
                };
                self.emit(vec![msg], seq).await?;
            }
            AgentEvent::Claude { data } => {
                let turn = super::usage::on_claude_event(
                    &self.record.id,
                    &mut self.record.usage,
                    &data,
                    ts,
                );
                let result = turn
                    .as_ref()
                    .and_then(|_| data.get("result")?.as_str().map(str::to_owned));
                let msg = match render(&data) {
                    Rendered::Text { text, keep_event } => Some(ServerMessage::Output {
                        seq: 0,
                        text,
                        timestamp: ts,
                        event: keep_event.then_some(data),
                    }),
                    Rendered::Silent => Some(ServerMessage::Claude {
                        seq: 0,
                        timestamp: ts,
                        event: data,
                    }),
                    Rendered::Drop => None,
                };
                if let (Some((_, span)), Some(ServerMessage::TurnResult { turn, .. })) =
                    (&self.turn, &turn)
                {
                    span.record("turn.cost_usd", turn.cost_usd);
                    span.record("turn.is_error", turn.is_error);
                    span.record("turn.num_turns", turn.num_turns);
                }
                // A finished turn moved the usage totals: they are stored
                // with its event, not left for the next state change.
                let with_record = turn.is_some();
                let notice = turn.clone();
                self.write(msg.into_iter().chain(turn).collect(), seq, with_record)
                    .await?;
                if let Some(turn) = notice {
                    let to = self.inner.config.notices.as_ref();
                    super::notices::on_turn(to, &self.record, &turn, result.as_deref());
                }
            }
            AgentEvent::Stderr { line } => {
                tracing::debug!(session = %self.record.id, %line, "agent stderr");
                self.emit(Vec::new(), seq).await?;
            }
            AgentEvent::OomKill { kills } => {
                // Where the runtime reports kills itself, those count.
                if self.inner.runtime.reports_oom_kills() {
                    self.emit(Vec::new(), seq).await?;
                } else {
                    tracing::debug!(session = %self.record.id, kills, "sessiond saw an out-of-memory kill");
                    self.on_oom_kill(seq).await?;
                }
            }
            AgentEvent::PermissionRequest {
                request_id,
                tool,
                input,
            } => {
                self.permissions.ask(cc_wire::api::PendingPermission {
                    request_id: request_id.clone(),
                    tool: tool.clone(),
                    input: input.clone(),
                    timestamp: ts,
                });
                self.activity.touch();
                let detail = format!("request {request_id}: may {tool} run?");
                self.inner.audit(crate::audit::core_event(
                    &self.record.owner,
                    "permission.request",
                    self.record.id.as_str(),
                    "asked",
                    detail,
                ));
                let msg = ServerMessage::PermissionRequest {
                    seq: 0,
                    request_id,
                    tool,
                    input,
                    timestamp: ts,
                };
                self.emit(vec![msg.clone()], seq).await?;
                let to = self.inner.config.notices.as_ref();
                super::notices::on_permission(to, &self.record, &msg);
            }
            AgentEvent::PermissionDecision(d) => {
                self.permissions.settle(&d.request_id);
                self.activity.touch();
                // People's answers are audited by the API, with who gave
                // them; the others here.
                if d.source != cc_wire::sessiond::DecisionSource::Answer {
                    let verdict = if d.allow { "allowed" } else { "denied" };
                    let detail = format!(
                        "request {}: {} {verdict} by {}",
                        d.request_id,
                        d.tool,
                        d.source.as_str()
                    );
                    self.inner.audit(crate::audit::core_event(
                        crate::audit::SYSTEM_ACTOR,
                        "permission.answer",
                        self.record.id.as_str(),
                        d.source.as_str(),
                        detail,
                    ));
                }
                let msg = ServerMessage::PermissionAnswer {
                    seq: 0,
                    request_id: d.request_id,
                    tool: d.tool,
                    allow: d.allow,
                    always: d.always,
                    source: d.source.as_str().to_owned(),
                    message: d.message,
                    answered_by: d.answered_by,
                    timestamp: ts,
                };
                self.emit(vec![msg], seq).await?;
            }
            AgentEvent::Exited { code } => {
                let code = code.map_or_else(|| "a signal".into(), |c| format!("code {c}"));
                let msg = ServerMessage::Error {
                    seq: 0,
                    message: format!(
                        "Claude Code exited ({code}); the next command restarts it and resumes the conversation"
                    ),
                    timestamp: ts,
                    code: Some("agent_exited".into()),
                };
                self.emit(vec![msg], seq).await?;
            }
        }
        Ok(None)
    }

    /// Feeds the spawn and command latency metrics; every transition is
    /// also activity (a finished turn restarts the idle clock).
    fn observe_transition(&mut self, next: SessionState) {
        self.activity.touch();
        if next != SessionState::Ready {
            return;
        }
        let metrics = &self.inner.metrics;
        if let Some(t) = self.spawn_started.take() {
            metrics.spawn_seconds.observe(t.elapsed());
            self.start_span = None;
        } else if let Some(t) = self.wake_started.take() {
            metrics.wake_seconds.observe(t.elapsed());
        } else if self.record.state == SessionState::Busy {
            // Dropping the span closes it.
            if let Some((t, _span)) = self.turn.take() {
                metrics.command_seconds.observe(t.elapsed());
            }
        }
    }

    /// Sends commands that arrived while the session was starting.
    async fn flush_queue(&mut self) {
        while let Some(turn) = self.queued.pop_front() {
            if let Err(e) = self.inner.agent.command(&self.endpoint, &turn).await {
                tracing::warn!(session = %self.record.id, error = %e, "queued command not delivered");
                let msg = ServerMessage::Error {
                    seq: 0,
                    message: format!("a queued command could not be delivered: {e}"),
                    timestamp: now_ms(),
                    code: Some("command_not_delivered".into()),
                };
                if let Err(e) = self.emit(vec![msg], None).await {
                    tracing::error!(session = %self.record.id, error = %e, "logging a failed command");
                }
            }
        }
    }

    /// Stores events (assigning their `seq`), then broadcasts them.
    async fn emit(
        &mut self,
        msgs: Vec<ServerMessage>,
        agent_seq: Option<u64>,
    ) -> Result<(), CoreError> {
        self.write(msgs, agent_seq, false).await
    }

    /// Stores events (assigning their `seq`) — with the whole record in
    /// the same transaction when `with_record` — then broadcasts them.
    async fn write(
        &mut self,
        msgs: Vec<ServerMessage>,
        agent_seq: Option<u64>,
        with_record: bool,
    ) -> Result<(), CoreError> {
        if msgs.is_empty() && agent_seq.is_none() && !with_record {
            return Ok(());
        }
        let first = self.record.last_seq + 1;
        let msgs: Vec<ServerMessage> = msgs
            .into_iter()
            .enumerate()
            .map(|(i, m)| m.with_seq(first + i as u64))
            .collect();
        if with_record {
            self.inner
                .store
                .record_change(&self.record, &msgs, agent_seq)
                .await?;
        } else {
            self.inner
                .store
                .append_events(&self.record.id, &msgs, agent_seq)
                .await?;
        }
        self.record.last_seq += msgs.len() as u64;
        if let Some(s) = agent_seq {
            self.record.agent_seq = s;
        }
        for m in msgs {
            // No receivers is fine: nobody is watching.
            let _ = self.events.send(m);
        }
        self.record_tx.send_replace(self.record.clone());
        Ok(())
    }

    async fn set_state(
        &mut self,
        state: SessionState,
        reason: Option<String>,
        agent_seq: Option<u64>,
    ) -> Result<(), CoreError> {
        let prev = self.record.state;
        self.record.state = state;
        self.record.reason = reason.clone();
        self.record.updated_at = now();
        let msg = ServerMessage::Status {
            seq: 0,
            state,
            timestamp: epoch_ms(self.record.updated_at),
            reason,
        };
        // One transaction: a crash cannot keep the event and lose the
        // record (its state, the usage totals gathered since the last one).
        self.write(vec![msg], agent_seq, true).await?;
        super::notices::on_status(self.inner.config.notices.as_ref(), &self.record, Some(prev));
        Ok(())
    }

    /// Releases everything and records the final state.
    async fn finish(
        &mut self,
        state: SessionState,
        reason: String,
        error: Option<String>,
    ) -> Result<(), CoreError> {
        let id = self.record.id.clone();
        // Only the session's owner may end it: a replica that lost the
        // lease (and has not noticed yet) leaves the container alone.
        let me = &self.inner.config.replica.id;
        if let Ok(None) = self
            .inner
            .store
            .claim(&id, me, crate::lease::LEASE_TTL)
            .await
        {
            return Err(CoreError::Fenced(format!(
                "session {id} is no longer held by replica {me}"
            )));
        }
        if state == SessionState::Terminated {
            self.set_state(SessionState::Terminating, None, None)
                .await?;
        }
        self.inner.credentials.remove(&id);
        if self.inner.config.seal_key.is_some() {
            if let Err(e) = self.inner.store.delete_sealed_secrets(&id).await {
                tracing::error!(session = %id, error = %e, "deleting sealed secrets");
            }
        }
        let removed = self.inner.runtime.remove(&id).await;
        if let Some(message) = error {
            let msg = ServerMessage::Error {
                seq: 0,
                message,
                timestamp: now_ms(),
                code: Some("session_failed".into()),
            };
            self.emit(vec![msg], None).await?;
        }
        let reason = match removed {
            Ok(()) => reason,
            Err(e) => {
                tracing::error!(session = %id, error = %e, "removing session resources");
                format!("{reason} (resource cleanup failed: {e})")
            }
        };
        self.set_state(state, Some(reason), None).await?;
        tracing::info!(session = %id, state = state.as_str(), reason = ?self.record.reason, "session ended");
        Ok(())
    }

    /// Whether the session may go to sleep now: only between turns.
    fn may_sleep(&self) -> Result<(), CoreError> {
        if !self.inner.can_sleep() {
            return Err(CoreError::conflict(
                "sleep_unavailable",
                "sessions cannot sleep here: the runtime does not keep a workspace without its container, or the server keeps no sealed secrets",
            ));
        }
        match self.record.state {
            SessionState::Ready => Ok(()),
            SessionState::Busy => Err(CoreError::conflict(
                "session_busy",
                "a turn is running; put the session to sleep when it has finished, or interrupt it first",
            )),
            other => Err(CoreError::conflict(
                "session_not_ready",
                format!(
                    "session {} is {}: it can sleep once it is ready",
                    self.record.id,
                    other.as_str()
                ),
            )),
        }
    }

    /// Removes the container (keeping the workspace, where Claude Code
    /// keeps its conversation), records `sleeping` and lets go of the
    /// lease: nobody runs a sleeping session; whoever wakes it claims it.
    async fn go_to_sleep(&mut self, reason: String) -> Result<(), CoreError> {
        let id = self.record.id.clone();
        let me = self.inner.config.replica.id.clone();
        if let Ok(None) = self
            .inner
            .store
            .claim(&id, &me, crate::lease::LEASE_TTL)
            .await
        {
            return Err(CoreError::Fenced(format!(
                "session {id} is no longer held by replica {me}"
            )));
        }
        self.inner
            .runtime
            .suspend(&id)
            .await
            .map_err(|e| CoreError::Unavailable(format!("removing its container: {e}")))?;
        // Its token is refused from now on; the sealed copy stays for the
        // wake.
        self.inner.credentials.remove(&id);
        self.record.container_id = None;
        self.set_state(SessionState::Sleeping, Some(reason), None)
            .await?;
        CoreMetrics::inc(&self.inner.metrics.slept_total);
        if let Err(e) = self.inner.store.release(&id, &me).await {
            tracing::warn!(session = %id, error = %e, "releasing the sleeping session's lease");
        }
        tracing::info!(session = %id, reason = ?self.record.reason, "session asleep");
        Ok(())
    }

    /// The pending container runs: the session learns where sessiond is.
    async fn on_placed(&mut self, p: Placement) -> Result<(), CoreError> {
        tracing::info!(session = %self.record.id, container = %p.container_id, "the session container runs");
        self.endpoint.base_url = p.agent_url;
        self.record.container_id = Some(p.container_id);
        self.record.updated_at = now();
        self.inner.store.update_session(&self.record).await?;
        self.record_tx.send_replace(self.record.clone());
        Ok(())
    }

    /// Why the container is gone, if it is.
    async fn container_gone(&self) -> Option<String> {
        match self.inner.runtime.inspect(&self.record.id).await {
            Ok(None) => Some("the session container disappeared".into()),
            Ok(Some(st)) if !st.running => {
                Some(super::adopt::exit_reason(st.exit_code, st.oom_killed))
            }
            Ok(Some(_)) => None,
            Err(e) => {
                tracing::warn!(session = %self.record.id, error = %e, "inspecting container");
                None
            }
        }
    }

    fn refuse(&self, msg: ActorMsg) {
        let err = || {
            CoreError::conflict(
                "session_not_active",
                format!(
                    "session {} is {}",
                    self.record.id,
                    self.record.state.as_str()
                ),
            )
        };
        match msg {
            ActorMsg::Command { reply, .. } => drop(reply.send(Err(err()))),
            ActorMsg::Interrupt { reply } => drop(reply.send(Err(err()))),
            ActorMsg::Diff { reply } => drop(reply.send(Err(err()))),
            ActorMsg::Files { reply, .. } => drop(reply.send(Err(err()))),
            ActorMsg::Push { reply, .. } => drop(reply.send(Err(err()))),
            ActorMsg::Permission { reply, .. } => drop(reply.send(Err(err()))),
            ActorMsg::Terminate { reply, .. } => drop(reply.send(self.record.clone())),
            ActorMsg::Sleep { reply, .. } => drop(reply.send(Err(err()))),
            ActorMsg::ContainerExited { .. }
            | ActorMsg::OomKill
            | ActorMsg::WorkspaceFull { .. }
            | ActorMsg::Spend { .. }
            | ActorMsg::Release { .. } => {}
        }
    }
}

/// Waits for sessiond, initialises it (idempotent) and follows its journal;
/// also returns the permission questions open before `since` (an adopted
/// session's). Owns everything it uses so it can be dropped and started
/// again freely.
async fn boot<R: Runtime, A: Agent, S: Store>(
    inner: Arc<Inner<R, A, S>>,
    ep: AgentEndpoint,
    init: InitRequest,
    since: u64,
    deadline: Instant,
) -> Result<(EventStream, Vec<cc_wire::api::PendingPermission>), String> {
    let health = loop {
        match inner.agent.health(&ep).await {
            Ok(h) => break h,
            Err(AgentError::Version { expected, found }) => {
                return Err(format!(
                    "the worker image's sessiond speaks protocol {found}, this orchestrator needs {expected}: rebuild the image"
                ))
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("the session agent did not start in time: {e}"))
            }
            Err(_) => tokio::time::sleep(HEALTH_POLL).await,
        }
    };
    match inner.agent.init(&ep, &init).await {
        Ok(_) => {}
        // An adopted session whose first request was not kept: sessiond
        // is set up already, which is all that matters.
        Err(AgentError::Refused { code, .. }) if code == "already_initialized" => {}
        Err(e) => return Err(format!("the session agent refused its setup: {e}")),
    }
    let stream = inner
        .agent
        .follow(&ep, since)
        .await
        .map_err(|e| format!("the session agent's journal is unreachable: {e}"))?;
    // Those asked or settled after `since` come again with the journal.
    Ok((stream, health.open_permissions))
}

/// The pending container's placement once the runtime has it; never while
/// nothing is pending.
async fn placed(placing: &mut Option<Placing>) -> Result<Placement, String> {
    let Some(wait) = placing.as_mut() else {
        return std::future::pending().await;
    };
    let r = wait.await;
    *placing = None;
    match r {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(format!("the session container could not start: {e}")),
        Err(e) => Err(format!(
            "internal error: waiting for the session container: {e}"
        )),
    }
}

async fn next_entry(journal: &mut Option<EventStream>) -> Option<Result<JournalEntry, AgentError>> {
    match journal {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// sessiond's push errors, as the API reports them.
fn push_error(e: AgentError) -> CoreError {
    match e {
        AgentError::Refused {
            status: 403,
            message,
            ..
        } => CoreError::Forbidden {
            code: "push_refused",
            message: format!("the git relay refused the push: {message}"),
        },
        AgentError::Refused {
            status: 409,
            code,
            message,
        } if code == "push_rejected" => CoreError::conflict("push_rejected", message),
        AgentError::Refused {
            status: 409,
            code,
            message,
        } if code == "busy" => CoreError::conflict("session_busy", message),
        AgentError::Refused {
            status: 502,
            message,
            ..
        } => CoreError::Unavailable(message),
        other => agent_unavailable(other),
    }
}

/// sessiond's answers about a path of the checkout keep their meaning: a
/// bad path is the client's mistake, not an unavailable session.
fn files_error(e: AgentError) -> CoreError {
    match e {
        AgentError::Refused {
            status: 400,
            message,
            ..
        } => CoreError::invalid("invalid_path", message),
        AgentError::Refused {
            status: 403,
            message,
            ..
        } => CoreError::forbidden("forbidden_path", message),
        AgentError::Refused {
            status: 404,
            message,
            ..
        } => CoreError::missing("path_not_found", message),
        other => agent_unavailable(other),
    }
}

/// sessiond's answers about a permission question keep their meaning.
fn permission_error(e: AgentError) -> CoreError {
    match e {
        AgentError::Refused { status: 404, .. } => CoreError::missing(
            "permission_not_found",
            "the session has no such permission request",
        ),
        AgentError::Refused {
            status: 409,
            code,
            message,
        } if code == "already_answered" => CoreError::conflict(
            "permission_already_answered",
            format!("{message}; the first answer stands"),
        ),
        AgentError::Refused {
            status: 400 | 413,
            message,
            ..
        } => CoreError::invalid("invalid_permission_response", message),
        other => agent_unavailable(other),
    }
}

fn agent_unavailable(e: AgentError) -> CoreError {
    match e {
        AgentError::Refused {
            status: 409,
            message,
            ..
        } => CoreError::conflict("session_not_ready", message),
        other => CoreError::Unavailable(format!("the session agent is unavailable: {other}")),
    }
}

/// A memory size for people: whole MiB, or GiB when exact.
fn format_mib(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= 1024 * MIB && bytes.is_multiple_of(1024 * MIB) {
        format!("{} GiB", bytes / (1024 * MIB))
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_oom_notifications_is_one_incident() {
        let mut oom = OomIncidents::default();
        let t0 = Instant::now();
        assert!(oom.is_new(t0));
        // The burst of one kill, each close to the one before it.
        for ms in [1, 40, 900, 2500] {
            assert!(!oom.is_new(t0 + Duration::from_millis(ms)), "{ms} ms");
        }
        // A later kill, after a quiet gap.
        assert!(oom.is_new(t0 + Duration::from_millis(2500) + OOM_INCIDENT_GAP));
    }

    fn refused(status: u16, code: &str) -> AgentError {
        AgentError::Refused {
            status,
            code: code.into(),
            message: format!("{code} from sessiond"),
        }
    }

    #[test]
    fn sessiond_path_errors_keep_their_meaning() {
        let e = files_error(refused(400, "invalid_path"));
        assert!(
            matches!(&e, CoreError::Invalid { code: "invalid_path", message } if message == "invalid_path from sessiond"),
            "{e:?}"
        );
        let e = files_error(refused(403, "forbidden_path"));
        assert!(
            matches!(
                e,
                CoreError::Forbidden {
                    code: "forbidden_path",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = files_error(refused(404, "not_found"));
        assert!(
            matches!(
                e,
                CoreError::Missing {
                    code: "path_not_found",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = files_error(refused(409, "not_ready"));
        assert!(
            matches!(
                e,
                CoreError::Conflict {
                    code: "session_not_ready",
                    ..
                }
            ),
            "{e:?}"
        );
        for e in [
            refused(500, "files_failed"),
            AgentError::Unreachable("refused".into()),
        ] {
            let e = files_error(e);
            assert!(matches!(e, CoreError::Unavailable(_)), "{e:?}");
        }
    }

    #[test]
    fn memory_limits_read_as_people_write_them() {
        assert_eq!(format_mib(512 * 1024 * 1024), "512 MiB");
        assert_eq!(format_mib(2 * 1024 * 1024 * 1024), "2 GiB");
        assert_eq!(format_mib(1536 * 1024 * 1024), "1536 MiB");
    }
}
