//! The three seams the core drives, and the records that cross them.
//!
//! Each seam takes and returns our own types; backend SDK types never cross.

use crate::error::{AgentError, RuntimeError, StoreError};
use crate::ids::{SessionId, Token};
use cc_wire::api::{ServerMessage, SessionLimits, SessionState};
use cc_wire::sessiond::{CommandAccepted, Health, InitRequest, JournalEntry};
use futures_util::stream::BoxStream;
use std::future::Future;
use std::time::SystemTime;

/// Label on every resource ClaudeCluster creates.
pub const LABEL_MANAGED: &str = "io.claudecluster.managed";
/// Label naming the session a resource belongs to.
pub const LABEL_SESSION: &str = "io.claudecluster.session";

/// What to start for a session.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub id: SessionId,
    pub image: String,
    pub limits: SessionLimits,
    /// Bearer token sessiond requires on every request.
    pub agent_token: Token,
    /// Started ahead of any session, for the warm pool: its lifetime
    /// begins when a session claims it, so the runtime gives it no
    /// deadline of its own (the session's actor ends it in time).
    pub pooled: bool,
}

/// Where a started session lives.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub container_id: String,
    /// Base URL of sessiond as the orchestrator reaches it.
    pub agent_url: String,
    /// Base URL of the orchestrator's gateway as the session reaches it
    /// (`http://host:port`, no trailing slash): its relays and egress
    /// proxy. Each runtime knows its own way there (Docker: the session
    /// network's gateway address; a cluster: a Service).
    pub gateway_url: String,
}

/// How far [`Runtime::create`] got.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    /// The container runs.
    Running(Placement),
    /// The runtime accepted the session but its container does not run
    /// yet (a Pod waiting for a node or its image); [`Runtime::wait_running`]
    /// says when it does. Its ID and the gateway URL its sessions will
    /// use are known already.
    Pending {
        container_id: String,
        gateway_url: String,
    },
}

/// A container's observed condition.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStatus {
    pub running: bool,
    /// Not running yet, and may still: waiting for its place (a Pending
    /// Pod). Never set with `running` or an exit code.
    pub starting: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
}

/// Something the runtime saw happen to a session's container.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeEvent {
    pub session: SessionId,
    pub kind: RuntimeEventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeEventKind {
    /// The container's main process ended (`oom`: the kernel killed it
    /// for exceeding its memory limit).
    Exited { code: Option<i64>, oom: bool },
    /// The kernel killed a process in the container for exceeding the
    /// session's memory limit; the container (and sessiond) may live on.
    OomKill,
}

/// A session container's resource use at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceUsage {
    /// Share of one core used since the previous sample (100.0 = one core).
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub pids: u64,
    /// What the session's workspace holds, as last measured (see
    /// [`Runtime::workspace_sizes`]); `None` when not measured.
    pub workspace_bytes: Option<u64>,
}

/// Runtime events as they happen; ends when the runtime's feed breaks.
pub type RuntimeEventStream = BoxStream<'static, Result<RuntimeEvent, RuntimeError>>;

/// Where session containers run.
pub trait Runtime: Send + Sync + 'static {
    /// Creates and starts everything the session needs (its network,
    /// workspace volume and container). Idempotent per session ID. Returns
    /// as soon as the runtime has accepted the session: the placement when
    /// the container runs already, else [`Started::Pending`].
    fn create(
        &self,
        spec: &SessionSpec,
    ) -> impl Future<Output = Result<Started, RuntimeError>> + Send;
    /// Waits until the session's container runs, up to the runtime's own
    /// start deadline, and says where it is; fails with the reason when it
    /// cannot run (the scheduler's, the image's) or no longer exists.
    fn wait_running(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Placement, RuntimeError>> + Send;
    /// [`Runtime::create`], then [`Runtime::wait_running`] when the
    /// container waits for its place: returns once it runs.
    fn create_running(
        &self,
        spec: &SessionSpec,
    ) -> impl Future<Output = Result<Placement, RuntimeError>> + Send {
        async move {
            match self.create(spec).await? {
                Started::Running(p) => Ok(p),
                Started::Pending { .. } => self.wait_running(&spec.id).await,
            }
        }
    }
    /// Removes every resource of the session. Missing resources are fine.
    fn remove(&self, id: &SessionId) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Whether [`Runtime::suspend`] keeps a session's workspace (sessions
    /// can sleep).
    fn can_suspend(&self) -> bool {
        false
    }
    /// Makes `to`'s workspace a copy of `from`'s (a fork), before `to` is
    /// created: `from` may be running or asleep. Runtimes that cannot
    /// keep workspaces ([`Runtime::can_suspend`]) cannot copy them either.
    fn copy_workspace(
        &self,
        from: &SessionId,
        to: &SessionSpec,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        let _ = (from, to);
        async {
            Err(RuntimeError::Invalid(
                "this runtime cannot copy a session's workspace".into(),
            ))
        }
    }
    /// Puts a session to sleep: removes its container and what only a
    /// running container needs (its network, host rules), keeping its
    /// workspace, so that [`Runtime::create`] with the same ID starts it
    /// again on the same workspace. Missing resources are fine.
    fn suspend(&self, id: &SessionId) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        let _ = id;
        async {
            Err(RuntimeError::Invalid(
                "this runtime cannot keep a session's workspace without its container".into(),
            ))
        }
    }
    /// The session container's status; `None` when it does not exist.
    fn inspect(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<ContainerStatus>, RuntimeError>> + Send;
    /// Sessions that have any resource in this runtime (found by label).
    fn list(&self) -> impl Future<Output = Result<Vec<SessionId>, RuntimeError>> + Send;
    /// Where a running session container is (to adopt it after a
    /// restart); `None` when it does not exist or does not run.
    fn locate(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<Placement>, RuntimeError>> + Send;
    /// Container exits of this deployment's sessions, from now on.
    fn events(&self) -> impl Future<Output = Result<RuntimeEventStream, RuntimeError>> + Send;
    /// Whether the event feed reports a kill of a process in the container
    /// for memory ([`RuntimeEventKind::OomKill`]). Docker does; a cluster
    /// API shows only the container's own end, and the core then takes
    /// sessiond's count from the container's memory cgroup instead.
    fn reports_oom_kills(&self) -> bool {
        true
    }
    /// What each session's workspace holds on disk, in bytes, measured
    /// now, for every session that has one (asleep or awake). `None`: this
    /// runtime does not measure workspaces, because it bounds them itself
    /// (a Kubernetes `emptyDir` `sizeLimit`, which the kubelet enforces).
    /// Where the runtime cannot bound a workspace (a Docker volume), the
    /// core checks these figures against the limit and ends a session
    /// over it.
    fn workspace_sizes(
        &self,
    ) -> impl Future<Output = Result<Option<std::collections::HashMap<SessionId, u64>>, RuntimeError>>
           + Send {
        async { Ok(None) }
    }
    /// The session container's current resource use; `None` when it does
    /// not run.
    fn stats(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<ResourceUsage>, RuntimeError>> + Send;
}

/// How to reach one session's sessiond.
#[derive(Debug, Clone)]
pub struct AgentEndpoint {
    pub base_url: String,
    pub token: Token,
}

pub type EventStream = BoxStream<'static, Result<JournalEntry, AgentError>>;

/// The client for sessiond (see `cc_wire::sessiond` for the contract).
pub trait Agent: Send + Sync + 'static {
    fn health(&self, ep: &AgentEndpoint)
        -> impl Future<Output = Result<Health, AgentError>> + Send;
    fn init(
        &self,
        ep: &AgentEndpoint,
        req: &InitRequest,
    ) -> impl Future<Output = Result<Health, AgentError>> + Send;
    /// One turn (its text and per-turn overrides).
    fn command(
        &self,
        ep: &AgentEndpoint,
        req: &cc_wire::sessiond::CommandRequest,
    ) -> impl Future<Output = Result<CommandAccepted, AgentError>> + Send;
    fn interrupt(&self, ep: &AgentEndpoint) -> impl Future<Output = Result<(), AgentError>> + Send;
    /// The checkout's changes against the commit it started at.
    fn diff(
        &self,
        ep: &AgentEndpoint,
    ) -> impl Future<Output = Result<cc_wire::api::SessionDiff, AgentError>> + Send;
    /// One file or directory of the checkout, `path` relative to it.
    fn files(
        &self,
        ep: &AgentEndpoint,
        path: &str,
    ) -> impl Future<Output = Result<cc_wire::api::SessionPath, AgentError>> + Send;
    /// Commits uncommitted work and pushes `HEAD` through the git relay.
    fn push(
        &self,
        ep: &AgentEndpoint,
        req: &cc_wire::sessiond::PushRequest,
    ) -> impl Future<Output = Result<cc_wire::sessiond::PushOutcome, AgentError>> + Send;
    /// Answers a permission question (`POST /v1/permissions/{id}`).
    fn answer_permission(
        &self,
        ep: &AgentEndpoint,
        request_id: &str,
        answer: &cc_wire::sessiond::PermissionAnswer,
    ) -> impl Future<Output = Result<cc_wire::sessiond::PermissionDecision, AgentError>> + Send;
    /// Journal entries after `since`, then new ones as they happen.
    fn follow(
        &self,
        ep: &AgentEndpoint,
        since: u64,
    ) -> impl Future<Output = Result<EventStream, AgentError>> + Send;
}

/// Our persisted view of a session (versioned by the store's schema).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub container_id: Option<String>,
    pub state: SessionState,
    pub reason: Option<String>,
    pub repo_url: String,
    pub branch: Option<String>,
    pub limits: SessionLimits,
    /// The user who created it; only they (and administrators) see it.
    pub owner: String,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub expires_at: SystemTime,
    /// Sequence number of the newest event in the session's log.
    pub last_seq: u64,
    /// Newest sessiond journal entry reflected in the log, so a follower
    /// resumes exactly after it.
    pub agent_seq: u64,
    /// Cost and token totals of the session's turns, plus what is needed to
    /// price the next turn (see `session::usage`).
    pub usage: crate::session::usage::SessionUsage,
    /// Which replica owns the live session, under which fencing number
    /// (see `crate::lease`). Written by the lease operations and by
    /// [`Store::insert_session`]; the other writes only check it.
    pub lease: crate::lease::Lease,
}

/// Persistence for sessions and their event logs, with the leases that
/// say which replica owns each live session (one process alone holds
/// them all; see `crate::lease`).
pub trait Store: crate::lease::Leases + Send + Sync + 'static {
    fn insert_session(
        &self,
        rec: &SessionRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Overwrites the session's fields except the log cursor (`last_seq`,
    /// `agent_seq`), which only `append_events` moves, and the lease, which
    /// only the lease operations move. Times are kept to the millisecond.
    /// Refused with [`StoreError::Fenced`] when `rec.lease.fence` is older
    /// than the stored one (another replica took the session over).
    fn update_session(
        &self,
        rec: &SessionRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn get_session(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<SessionRecord>, StoreError>> + Send;
    /// Sessions, newest first; only those in a live state when `live_only`.
    fn list_sessions(
        &self,
        live_only: bool,
    ) -> impl Future<Output = Result<Vec<SessionRecord>, StoreError>> + Send;
    /// Sessions in `state`, newest first (e.g. the sleeping ones: a
    /// reconciler pass and a metrics scrape need only those).
    fn sessions_in_state(
        &self,
        state: SessionState,
    ) -> impl Future<Output = Result<Vec<SessionRecord>, StoreError>> + Send;
    /// Appends events (their `seq` already assigned, contiguous after the
    /// session's `last_seq`) and, in the same transaction, sets the
    /// session's `last_seq` to the last one and `agent_seq` when given.
    fn append_events(
        &self,
        id: &SessionId,
        events: &[ServerMessage],
        agent_seq: Option<u64>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// A state change as one transaction: appends `events` exactly as
    /// [`Store::append_events`] does and overwrites the session's other
    /// fields from `rec` exactly as [`Store::update_session`] does. Both
    /// happen or neither does, so the status event, the state and what the
    /// record carries with it (the usage totals) are never split.
    fn record_change(
        &self,
        rec: &SessionRecord,
        events: &[ServerMessage],
        agent_seq: Option<u64>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Events with `seq > since`, oldest first, at most `limit`.
    fn events(
        &self,
        id: &SessionId,
        since: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ServerMessage>, StoreError>> + Send;
    /// Stores a live session's sealed secrets (see `crate::secrets`),
    /// replacing earlier ones. The store never sees them in clear.
    fn put_sealed_secrets(
        &self,
        id: &SessionId,
        sealed: &[u8],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn sealed_secrets(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// Forgets the session's secrets; missing ones are fine.
    fn delete_sealed_secrets(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Retention: deletes the event logs of sessions that ended
    /// (`terminated` or `error`) before `cutoff`; the session records stay.
    /// Returns the number of events deleted.
    fn purge_logs_before(
        &self,
        cutoff: SystemTime,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Erasure: deletes every session of `owner` with its event log and
    /// secrets, returning how many sessions went. Refused with
    /// [`StoreError::Conflict`] (deleting nothing) while `owner` has a live
    /// session, so no container outlives its record.
    fn erase_owner_sessions(
        &self,
        owner: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
