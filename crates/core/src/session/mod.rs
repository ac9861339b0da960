//! Sessions: the manager that the API calls, and one actor per live session.
//!
//! Invariants:
//! - Every operation on a live session goes through its actor, so they are
//!   serialised; the manager only routes.
//! - Every client-visible event gets the next `seq` of its session and is
//!   stored before it is broadcast, so a reader that missed a broadcast
//!   finds it in the store ([`Subscription`]).
//! - A session that reaches `error` or `terminated` owns no runtime
//!   resources and no credentials any more.

mod actor;
mod adopt;
mod create;
mod fork;
pub mod notices;
pub mod permissions;
mod pool;
pub(crate) mod reaper;
mod sleep;
mod subscription;
mod terminate;
pub(crate) mod usage;
mod workspace;

pub use adopt::Recovery;
pub use create::CreateSession;
pub use fork::{check_fork_count, MAX_FORKS};
pub use subscription::Subscription;
pub use usage::{ModelSpend, SessionUsage};

use crate::config::ManagerConfig;
use crate::credentials::CredentialRegistry;
use crate::error::CoreError;
use crate::ids::SessionId;
use crate::metrics::CoreMetrics;
use crate::seams::{Agent, Runtime, SessionRecord, Store};
use actor::ActorMsg;
use cc_wire::api::{ServerMessage, SessionState};
use reaper::Activity;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Longest command text accepted (one user turn).
pub const MAX_COMMAND_BYTES: usize = 100_000;
/// Largest page of events returned at once.
pub const MAX_EVENTS_PAGE: usize = 1000;

/// The entry point of the core: creates sessions and routes operations to
/// their actors. Cheap to clone.
pub struct Manager<R, A, S> {
    inner: Arc<Inner<R, A, S>>,
}

impl<R, A, S> Clone for Manager<R, A, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

pub(crate) struct Inner<R, A, S> {
    pub(crate) runtime: R,
    pub(crate) agent: A,
    pub(crate) store: S,
    pub(crate) config: ManagerConfig,
    pub(crate) credentials: CredentialRegistry,
    pub(crate) metrics: CoreMetrics,
    pub(crate) pool: pool::WarmPool,
    live: Mutex<HashMap<SessionId, Handle>>,
    /// Sessions this replica is claiming and adopting right now, so the
    /// takeover loop and a request's takeover never adopt one twice.
    taking_over: Mutex<std::collections::HashSet<SessionId>>,
    /// Recent resource samples, so status polls do not queue on Docker.
    usage_cache:
        tokio::sync::Mutex<HashMap<SessionId, (tokio::time::Instant, crate::seams::ResourceUsage)>>,
    /// What each workspace held at the last check (see `workspace`).
    workspace_sizes: Mutex<HashMap<SessionId, u64>>,
    /// Where audit records the core writes on its own go (see
    /// [`Manager::audit_events`]); none: nobody takes them.
    audit: Mutex<Option<mpsc::UnboundedSender<crate::audit::AuditEvent>>>,
}

/// How long a resource sample answers status requests. Docker computes
/// stats one container at a time (~65 ms each here), so without a cache 16
/// clients polling one session wait ~1 s each.
const USAGE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// Which replica serves operations on a session (commands, interrupt,
/// diff, files, push, delete): see [`Manager::route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This replica: it runs the session's actor, or the session is not
    /// live (the operation answers for itself).
    Here,
    /// Another replica holds the session's lease; forward to it.
    Replica(crate::lease::Replica),
}

/// How the manager reaches a live session's actor.
#[derive(Clone)]
pub(crate) struct Handle {
    tx: mpsc::Sender<ActorMsg>,
    events: broadcast::Sender<ServerMessage>,
    record: watch::Receiver<SessionRecord>,
    activity: Arc<Activity>,
    /// The session's `--max-budget-usd` (its actor holds the rest of init).
    budget_usd: Option<f64>,
    /// Permission questions the session waits on.
    permissions: Arc<permissions::Pending>,
}

impl<R: Runtime, A: Agent, S: Store> Manager<R, A, S> {
    pub fn new(runtime: R, agent: A, store: S, config: ManagerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                runtime,
                agent,
                store,
                config,
                credentials: CredentialRegistry::default(),
                metrics: CoreMetrics::default(),
                pool: Default::default(),
                live: Mutex::new(HashMap::new()),
                taking_over: Default::default(),
                usage_cache: Default::default(),
                workspace_sizes: Default::default(),
                audit: Mutex::new(None),
            }),
        }
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config
    }

    /// What the gateway consults to turn session tokens into secrets.
    pub fn credentials(&self) -> &CredentialRegistry {
        &self.inner.credentials
    }

    /// The credentials of `session` if `token` is its session token, for
    /// the gateway: from this replica's registry when it runs the session,
    /// else — a session another replica runs, whose traffic a load balancer
    /// sent here — from its sealed secrets in the store (never cached, so a
    /// session that ended elsewhere is refused at once).
    pub async fn session_credentials(
        &self,
        session: &SessionId,
        token: &str,
    ) -> Option<Arc<crate::credentials::SessionCredentials>> {
        if let Some(c) = self.inner.credentials.authenticate(session, token) {
            return Some(c);
        }
        let key = self.inner.config.seal_key.as_ref()?;
        let store = &self.inner.store;
        let rec = store.get_session(session).await.ok().flatten()?;
        if !rec.state.is_awake() {
            return None;
        }
        let sealed = store.sealed_secrets(session).await.ok().flatten()?;
        let secrets = crate::secrets::open(key, session, &sealed).ok()?;
        if !crate::ids::secret_eq(secrets.session_token.expose(), token) {
            return None;
        }
        Some(Arc::new(crate::credentials::SessionCredentials {
            session_id: rec.id,
            token: secrets.session_token,
            claude_api_key: secrets.claude_api_key,
            repo_token: secrets.repo_token,
            egress: rec.limits.egress,
            repo_url: rec.repo_url,
        }))
    }

    pub fn runtime(&self) -> &R {
        &self.inner.runtime
    }

    pub fn metrics(&self) -> &CoreMetrics {
        &self.inner.metrics
    }

    /// Records of the live sessions (those with an actor), unordered.
    pub fn live_records(&self) -> Vec<SessionRecord> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|h| h.record.borrow().clone())
            .collect()
    }

    /// Counts a sign of use (an API call, a WebSocket keepalive) against
    /// the session's idle timeout. Unknown or ended sessions are ignored.
    pub fn touch(&self, id: &str) {
        if let Some(h) = SessionId::parse(id).and_then(|id| self.inner.handle(&id)) {
            h.activity.touch();
        }
    }

    /// The live session's container resource use; `None` when it has no
    /// running container.
    pub async fn usage(&self, id: &str) -> Result<Option<crate::seams::ResourceUsage>, CoreError> {
        let id = parse_id(id)?;
        if self.inner.handle(&id).is_none() {
            return Ok(None);
        }
        // Held across the fetch: concurrent callers wait for one sample
        // and share it instead of each asking Docker.
        let mut cache = self.inner.usage_cache.lock().await;
        cache.retain(|sid, (at, _)| at.elapsed() < USAGE_TTL && self.inner.handle(sid).is_some());
        if let Some((_, u)) = cache.get(&id) {
            return Ok(Some(u.clone()));
        }
        let mut fresh = self
            .inner
            .runtime
            .stats(&id)
            .await
            .map_err(|e| CoreError::Unavailable(format!("reading resource use: {e}")))?;
        if let Some(u) = &mut fresh {
            u.workspace_bytes = self.inner.workspace_size(&id);
            cache.insert(id, (tokio::time::Instant::now(), u.clone()));
        }
        Ok(fresh)
    }

    /// The store, for the server's identity and audit tables.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The session's current record.
    pub async fn get(&self, id: &str) -> Result<SessionRecord, CoreError> {
        let id = parse_id(id)?;
        if let Some(h) = self.inner.handle(&id) {
            h.activity.touch();
            return Ok(h.record.borrow().clone());
        }
        self.inner
            .store
            .get_session(&id)
            .await?
            .ok_or_else(|| CoreError::NotFound(id.to_string()))
    }

    /// Refuses (`403 budget_exhausted`) once the session has spent its
    /// budget or its owner the administrator's per-user budget: the checks
    /// every turn passes, for the gateway to make before each model call it
    /// relays. Does not count as a use of the session.
    pub async fn check_budget(&self, id: &SessionId) -> Result<(), CoreError> {
        let (record, budget) = match self.inner.handle(id) {
            Some(h) => (h.record.borrow().clone(), h.budget_usd),
            None => match self.inner.store.get_session(id).await? {
                Some(record) => (record, None),
                None => return Err(CoreError::NotFound(id.to_string())),
            },
        };
        usage::check_session_budget(budget, &record.usage)?;
        if let Some(limit) = self.inner.config.agent.max_user_budget_usd {
            usage::check_user_budget(&self.inner.store, &record.owner, limit).await?;
        }
        Ok(())
    }

    /// Adds a model call the gateway relayed for session `id`, priced from
    /// the upstream's answer, to the session's spend: the figure budgets
    /// are checked against. The session's actor applies it in order with
    /// the session's other writes; a session without one (it ended) has
    /// its stored record updated.
    pub async fn record_spend(&self, id: &SessionId, spend: ModelSpend) -> Result<(), CoreError> {
        if let Some(h) = self.inner.handle(id) {
            // When the actor is gone, the stored record is updated instead.
            if h.tx.send(ActorMsg::Spend { spend }).await.is_ok() {
                return Ok(());
            }
        }
        let mut record = self
            .inner
            .store
            .get_session(id)
            .await?
            .ok_or_else(|| CoreError::NotFound(id.to_string()))?;
        usage::add_spend(id, &mut record.usage, &spend);
        self.inner.store.update_session(&record).await?;
        Ok(())
    }

    /// Sessions, newest first.
    pub async fn list(&self, live_only: bool) -> Result<Vec<SessionRecord>, CoreError> {
        let mut records = self.inner.store.list_sessions(live_only).await?;
        for r in &mut records {
            if let Some(h) = self.inner.handle(&r.id) {
                *r = h.record.borrow().clone();
            }
        }
        Ok(records)
    }

    /// Hands one user turn to the session; queued while it is starting.
    pub async fn command(&self, id: &str, text: String) -> Result<SessionState, CoreError> {
        self.command_with(id, text, cc_wire::api::TurnOverrides::default())
            .await
    }

    /// [`Self::command`] with this turn's model or permission mode (checked
    /// against the admin's policy).
    pub async fn command_with(
        &self,
        id: &str,
        text: String,
        overrides: cc_wire::api::TurnOverrides,
    ) -> Result<SessionState, CoreError> {
        self.inner.config.agent.check_overrides(&overrides)?;
        check_command(&text)?;
        let handle = self.awake_handle(id).await?;
        let (reply, rx) = oneshot::channel();
        let turn = cc_wire::sessiond::CommandRequest {
            text,
            model: overrides.model,
            permission_mode: overrides.permission_mode,
        };
        send(&handle, ActorMsg::Command { turn, reply }).await?;
        rx.await.map_err(|_| ended())?
    }

    /// Stops the running turn; `false` when none was running.
    pub async fn interrupt(&self, id: &str) -> Result<bool, CoreError> {
        if self.get(id).await?.state == SessionState::Sleeping {
            return Ok(false); // Nothing runs; no reason to wake it.
        }
        let handle = self.live_handle(id).await?;
        let (reply, rx) = oneshot::channel();
        send(&handle, ActorMsg::Interrupt { reply }).await?;
        rx.await.map_err(|_| ended())?
    }

    /// The session's changes against the commit its checkout started at.
    pub async fn diff(&self, id: &str) -> Result<cc_wire::api::SessionDiff, CoreError> {
        let handle = self.ready_handle(id).await?;
        let (reply, rx) = oneshot::channel();
        send(&handle, ActorMsg::Diff { reply }).await?;
        rx.await.map_err(|_| ended())?
    }

    /// One file or directory of the session's checkout, `path` relative
    /// to it (empty: its root).
    pub async fn files(
        &self,
        id: &str,
        path: &str,
    ) -> Result<cc_wire::api::SessionPath, CoreError> {
        let handle = self.ready_handle(id).await?;
        let (reply, rx) = oneshot::channel();
        let path = path.to_owned();
        send(&handle, ActorMsg::Files { path, reply }).await?;
        rx.await.map_err(|_| ended())?
    }

    /// Pushes the session's work (see `cc_wire::sessiond::PushRequest`);
    /// the branch must have passed the push rules already.
    pub async fn push(
        &self,
        id: &str,
        req: cc_wire::sessiond::PushRequest,
    ) -> Result<cc_wire::sessiond::PushOutcome, CoreError> {
        let handle = self.ready_handle(id).await?;
        let (reply, rx) = oneshot::channel();
        send(&handle, ActorMsg::Push { req, reply }).await?;
        rx.await.map_err(|_| ended())?
    }

    /// The audit records the core writes on its own — permission
    /// questions, and answers no person gave — for the server to chain;
    /// before a caller takes them, none are kept.
    pub fn audit_events(&self) -> mpsc::UnboundedReceiver<crate::audit::AuditEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.inner.audit.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// The permission questions the live session waits on, oldest first
    /// (none for a session this replica does not run).
    pub fn pending_permissions(&self, id: &str) -> Vec<cc_wire::api::PendingPermission> {
        SessionId::parse(id)
            .and_then(|id| self.inner.handle(&id))
            .map(|h| h.permissions.list())
            .unwrap_or_default()
    }

    /// Answers a permission question the session waits on, for
    /// `answered_by`. The first answer wins: `409 permission_already_answered`
    /// after it (or after the timeout or `always` settled it); `404
    /// permission_not_found` for a question never asked.
    pub async fn answer_permission(
        &self,
        id: &str,
        request_id: &str,
        response: &cc_wire::api::PermissionResponse,
        answered_by: &str,
    ) -> Result<cc_wire::sessiond::PermissionDecision, CoreError> {
        permissions::check_request_id(request_id)?;
        permissions::check_answer(response.message.as_deref())?;
        if response
            .request_id
            .as_deref()
            .is_some_and(|r| r != request_id)
        {
            return Err(CoreError::invalid(
                "invalid_permission_response",
                "requestId in the body is not the one in the path",
            ));
        }
        let handle = self.live_handle(id).await?;
        let (reply, rx) = oneshot::channel();
        let answer = cc_wire::sessiond::PermissionAnswer {
            allow: response.allow,
            message: response.message.clone().filter(|_| !response.allow),
            always: response.allow && response.always.unwrap_or(false),
            answered_by: Some(answered_by.to_owned()),
        };
        let request_id = request_id.to_owned();
        send(
            &handle,
            ActorMsg::Permission {
                request_id,
                answer,
                reply,
            },
        )
        .await?;
        rx.await.map_err(|_| ended())?
    }

    /// Where operations on the session are served. A live session nobody
    /// holds (its owner stopped renewing its lease) is taken over here and
    /// now, so a client retrying after its replica died is served at once.
    pub async fn route(&self, id: &str) -> Result<Route, CoreError> {
        let Some(id) = SessionId::parse(id) else {
            return Ok(Route::Here);
        };
        if self.inner.handle(&id).is_some() {
            return Ok(Route::Here);
        }
        // A sleeping session has no owner: whoever is asked wakes it.
        let awake = self
            .inner
            .store
            .get_session(&id)
            .await?
            .is_some_and(|r| r.state.is_awake());
        if !awake {
            return Ok(Route::Here);
        }
        match self.inner.store.holder(&id).await? {
            Some(r) if r.id != self.inner.config.replica.id => Ok(Route::Replica(r)),
            Some(_) => Ok(Route::Here),
            None => {
                self.take_over(&id, &mut Recovery::default()).await?;
                Ok(Route::Here)
            }
        }
    }

    /// Stored events after `since`.
    pub async fn logs(
        &self,
        id: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<ServerMessage>, CoreError> {
        let rec = self.get(id).await?;
        Ok(self
            .inner
            .store
            .events(&rec.id, since, limit.clamp(1, MAX_EVENTS_PAGE))
            .await?)
    }

    /// Every event after `since`, then live ones until the session ends.
    pub async fn subscribe(&self, id: &str, since: u64) -> Result<Subscription<S>, CoreError> {
        let rec = self.get(id).await?;
        let rx = self.inner.handle(&rec.id).map(|h| h.events.subscribe());
        // Followed through the store whenever its actor is not here: it
        // runs on another replica, sleeps, or goes to sleep and wakes
        // (anywhere) while the reader reads.
        let feed = rec.state.is_live().then(|| self.inner.store.event_feed());
        Ok(Subscription::new(self.inner.clone(), rec.id, since, rx).following(feed))
    }

    /// A live session's handle, or why there is none.
    async fn live_handle(&self, id: &str) -> Result<Handle, CoreError> {
        let rec = self.get(id).await?;
        self.inner.handle(&rec.id).ok_or_else(|| {
            CoreError::conflict(
                "session_not_active",
                format!("session {} is {}", rec.id, rec.state.as_str()),
            )
        })
    }
}

impl<R, A, S> Inner<R, A, S> {
    fn handle(&self, id: &SessionId) -> Option<Handle> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn insert_handle(&self, id: SessionId, h: Handle) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, h);
    }

    pub(crate) fn remove_handle(&self, id: &SessionId) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Marks the session as being taken over; `false` when it already is.
    pub(crate) fn start_taking_over(&self, id: &SessionId) -> bool {
        self.taking_over
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone())
    }

    pub(crate) fn done_taking_over(&self, id: &SessionId) {
        self.taking_over
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    pub(crate) fn live_ids(&self) -> Vec<SessionId> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub(crate) fn store(&self) -> &S {
        &self.store
    }

    /// Hands an audit record to whoever took [`Manager::audit_events`].
    pub(crate) fn audit(&self, event: crate::audit::AuditEvent) {
        if let Some(tx) = self
            .audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = tx.send(event);
        }
    }
}

/// Refuses an empty or oversized command.
fn check_command(text: &str) -> Result<(), CoreError> {
    if text.trim().is_empty() {
        return Err(CoreError::invalid(
            "invalid_command",
            "command must not be empty",
        ));
    }
    if text.len() > MAX_COMMAND_BYTES {
        return Err(CoreError::invalid(
            "command_too_large",
            format!("command is longer than {MAX_COMMAND_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn parse_id(id: &str) -> Result<SessionId, CoreError> {
    // A malformed ID cannot name a session: same answer as an unknown one.
    SessionId::parse(id).ok_or_else(|| CoreError::NotFound(id.chars().take(64).collect()))
}

async fn send(h: &Handle, msg: ActorMsg) -> Result<(), CoreError> {
    h.tx.send(msg).await.map_err(|_| ended())
}

fn ended() -> CoreError {
    CoreError::conflict("session_not_active", "the session ended")
}
