//! The public API: REST under `/api/v1` and the session WebSocket.
//!
//! Field names are camelCase. The seed contract's fields are kept exactly;
//! everything else is an additive extension that a seed-only client can
//! ignore.

use serde::{Deserialize, Serialize};

pub use crate::stream::{ClientMessage, PermissionResponse, ServerMessage};

/// `POST /api/v1/sessions/create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSessionRequest {
    pub repo_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    pub claude_api_key: String,
    /// Token for a private repository (extension). The git relay adds it
    /// on the way out (HTTP Basic, user `x-access-token`, which GitHub and
    /// GitLab accept); it never enters the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<SessionConfigRequest>,
    /// What Claude Code is told (extension; see [`SessionOptions`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<SessionOptions>,
}

/// Claude Code's settings for one session, all optional; the server applies
/// the admin's defaults and refuses what its policy forbids, naming the
/// option (`options.model`, …).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Tried when the main model is overloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_model: Option<String>,
    /// `acceptEdits | bypassPermissions | default | dontAsk | plan`
    /// (default `bypassPermissions`: the container is the sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// Tools allowed without asking (Claude Code's `--allowedTools` rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<Vec<String>>,
    /// Tools removed from the model's tool list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disallowed_tools: Option<Vec<String>>,
    /// Model calls per turn before the turn stops (`error_max_turns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Spend limit of the session's Claude Code process in USD
    /// (`error_max_budget_usd` once reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_usd: Option<f64>,
    /// Appended to Claude Code's system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_system_prompt: Option<String>,
    /// MCP servers by name, in Claude Code's `mcpServers` format:
    /// `{"command": "...", "args": [...]}` (stdio, present in the image) or
    /// `{"type": "http", "url": "..."}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    /// Extra environment for Claude Code and its tools. Values are never
    /// logged or echoed; names that would override ClaudeCluster's own
    /// (`ANTHROPIC_*`, `CLAUDE_CODE_*`, `PATH`, `HOME`, …) are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<std::collections::BTreeMap<String, String>>,
    /// Repository instructions: appended to the checkout's `CLAUDE.md`
    /// (created when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
}

/// Overrides for one turn, where Claude Code can change them mid-session.
/// The session's own setting applies again to later turns without one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TurnOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
}

impl TurnOverrides {
    pub fn is_empty(&self) -> bool {
        self.model.is_none() && self.permission_mode.is_none()
    }
}

/// Token counts as Claude Code reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

/// One turn's outcome, from Claude Code's `result` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnSummary {
    /// Claude Code's `subtype`: `success`, `error_max_turns`,
    /// `error_max_budget_usd`, `error_during_execution`, …
    pub subtype: String,
    pub is_error: bool,
    /// Why the turn ended (`completed`, `max_turns`, `budget_exhausted`,
    /// `aborted_streaming`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_reason: Option<String>,
    /// For errors: Claude Code's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// HTTP status of a failed model API call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_error_status: Option<u16>,
    pub duration_ms: u64,
    /// What this turn cost (Claude Code's own pricing), in USD.
    pub cost_usd: f64,
    /// Model calls in this turn (Claude Code's `num_turns`).
    pub num_turns: u64,
    pub usage: TokenUsage,
}

/// Sums over a session's turns (status `usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    /// Turns that ended with a `result`.
    pub turns: u64,
    pub errored_turns: u64,
    pub cost_usd: f64,
    pub duration_ms: u64,
    /// Model calls.
    pub num_turns: u64,
    #[serde(flatten)]
    pub tokens: TokenUsage,
}

/// Resource limits asked for at create; the server applies defaults and
/// refuses values above its maxima.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionConfigRequest {
    /// Memory limit: a byte count with an optional unit (`"512m"`, `"2g"`,
    /// `"1GiB"`) or a bare number of MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// CPU limit in cores (`1`, `0.5`, `"2"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Maximum lifetime of the session in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Seconds without use after which the session ends (extension;
    /// default, minimum and maximum set by the admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u64>,
    /// What the session may reach beyond the Anthropic and git relays
    /// (extension; default and maximum set by the admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressMode>,
}

/// A session's way out, besides the gateway's Anthropic and git relays:
/// `none`; `allowlist` — the admin's `--egress-allow` hosts through the
/// gateway's proxy; `open` — any public host through that proxy (private,
/// loopback and link-local addresses still need an exact allowlist entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    None,
    #[default]
    Allowlist,
    Open,
}

impl EgressMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Allowlist => "allowlist",
            Self::Open => "open",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "allowlist" => Self::Allowlist,
            "open" => Self::Open,
            _ => return None,
        })
    }
}

/// A number or a string with a unit, as users naturally write limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    Number(f64),
    Text(String),
}

/// `201` answer to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionResponse {
    pub session_id: String,
    pub container_id: String,
    /// `starting | ready | error`, as the seed specifies.
    pub status: SeedStatus,
    pub endpoints: Endpoints,
    /// Full lifecycle state (extension).
    pub state: SessionState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    pub websocket: String,
    pub http: String,
}

/// The seed's coarse status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedStatus {
    Starting,
    Ready,
    Error,
    Terminated,
}

/// Full session lifecycle:
/// `creating → starting → cloning → ready ⇄ busy → terminating → terminated`,
/// with `error` reachable from every live state. An idle `ready` session
/// may go to `sleeping` (no container, its workspace and conversation
/// kept); waking it goes through `starting` and `cloning` (no clone then)
/// back to `ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Creating,
    Starting,
    Cloning,
    Ready,
    Busy,
    Sleeping,
    Terminating,
    Terminated,
    Error,
}

impl SessionState {
    pub fn seed_status(self) -> SeedStatus {
        match self {
            Self::Creating | Self::Starting | Self::Cloning => SeedStatus::Starting,
            // A sleeping session takes commands: the first wakes it.
            Self::Ready | Self::Busy | Self::Sleeping => SeedStatus::Ready,
            Self::Error => SeedStatus::Error,
            Self::Terminating | Self::Terminated => SeedStatus::Terminated,
        }
    }

    /// Whether the session still owns runtime resources (a sleeping one
    /// its workspace).
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Terminated | Self::Error)
    }

    /// Whether the session has a container (or is getting one): live and
    /// not asleep.
    pub fn is_awake(self) -> bool {
        self.is_live() && self != Self::Sleeping
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Starting => "starting",
            Self::Cloning => "cloning",
            Self::Ready => "ready",
            Self::Busy => "busy",
            Self::Sleeping => "sleeping",
            Self::Terminating => "terminating",
            Self::Terminated => "terminated",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => Self::Creating,
            "starting" => Self::Starting,
            "cloning" => Self::Cloning,
            "ready" => Self::Ready,
            "busy" => Self::Busy,
            "sleeping" => Self::Sleeping,
            "terminating" => Self::Terminating,
            "terminated" => Self::Terminated,
            "error" => Self::Error,
            _ => return None,
        })
    }
}

/// Limits in force for a session, after defaults and maxima.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionLimits {
    pub memory_bytes: u64,
    pub cpu: f64,
    pub timeout_secs: u64,
    #[serde(default)]
    pub egress: EgressMode,
    /// Seconds without use after which the session ends; `0`: never.
    /// `None` only for sessions stored before the idle timeout was chosen
    /// per session: they follow the server's current `--idle-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
}

/// `GET /api/v1/sessions/{id}/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    pub session_id: String,
    pub container_id: Option<String>,
    pub status: SeedStatus,
    pub state: SessionState,
    /// Why the session is in `error` or was terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub repo_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    pub limits: SessionLimits,
    pub created_at: String,
    pub updated_at: String,
    pub expires_at: String,
    /// Sequence number of the newest event.
    pub last_seq: u64,
    pub endpoints: Endpoints,
    /// Cost and token totals of the session's turns (extension).
    #[serde(default)]
    pub usage: UsageTotals,
    /// Processes in the session the kernel killed for exceeding its memory
    /// limit (extension; the session lives on after each).
    #[serde(default)]
    pub oom_kills: u64,
    /// The live session container's resource use at the time of the
    /// request (extension; absent when no container runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ContainerResources>,
    /// Permission questions waiting for a person (extension): while this
    /// is not empty the running turn is stopped until one is answered.
    #[serde(default)]
    pub pending_permissions: Vec<PendingPermission>,
}

/// A permission question that waits for an answer (the data of its
/// `permissionRequest` event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingPermission {
    pub request_id: String,
    pub tool: String,
    pub input: serde_json::Value,
    /// When it was asked, in milliseconds since the Unix epoch.
    pub timestamp: u64,
}

/// `POST /api/v1/sessions/{id}/permissions/{requestId}`: how the question
/// was settled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PermissionAnswered {
    pub session_id: String,
    pub request_id: String,
    pub tool: String,
    pub allow: bool,
    /// The tool is allowed for the rest of the session from now on.
    pub always: bool,
}

/// A session container's resource use at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResources {
    /// CPU use since the previous sample; 100 is one full core.
    pub cpu_percent: f64,
    /// Memory in use, page cache excluded.
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    pub pids: u64,
    /// Bytes in the session's workspace at the deployment's last check
    /// (absent when not measured: a runtime that bounds workspaces itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_bytes: Option<u64>,
    /// The most its workspace may hold (`serve --workspace-size`); absent
    /// when unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_limit_bytes: Option<u64>,
}

/// `POST /api/v1/sessions/{id}/fork` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForkRequest {
    /// How many forks (1 to 10; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// A task every fork runs at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// `201` answer to fork: the new sessions, `starting`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForkResponse {
    pub parent_id: String,
    pub sessions: Vec<CreateSessionResponse>,
}

/// `POST /api/v1/sessions/{id}/command` body, and the WebSocket `command`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandRequest {
    pub command: String,
    /// This turn's model (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// This turn's permission mode (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
}

impl CommandRequest {
    /// The per-turn overrides it carries.
    pub fn overrides(&self) -> TurnOverrides {
        TurnOverrides {
            model: self.model.clone(),
            permission_mode: self.permission_mode.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandResponse {
    pub session_id: String,
    pub accepted: bool,
    pub state: SessionState,
}

/// `DELETE /api/v1/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResponse {
    pub session_id: String,
    pub status: SeedStatus,
    pub state: SessionState,
}

/// `GET /api/v1/sessions/{id}/logs?since=N&limit=M`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsResponse {
    pub session_id: String,
    pub events: Vec<ServerMessage>,
    /// Pass as `since` to continue after the last event returned.
    pub next_since: u64,
}

/// Every error answer: a stable machine `code` and a human `message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub code: String,
    pub message: String,
}

/// `GET /api/v1/sessions/{id}/diff`: the session's changes against the
/// commit it started from — committed and uncommitted work, new files
/// included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionDiff {
    /// The commit the session's checkout started at.
    pub base_commit: String,
    /// The checkout's `HEAD` now.
    pub head_commit: String,
    pub files: Vec<FileChange>,
    pub insertions: u64,
    pub deletions: u64,
    /// Unified diff (`git diff`), cut at [`MAX_DIFF_BYTES`].
    pub diff: String,
    /// The commits since the base as a patch series (`git format-patch`),
    /// cut at [`MAX_DIFF_BYTES`].
    pub patches: String,
    /// Whether `diff` or `patches` was cut.
    pub truncated: bool,
}

/// Largest `diff` / `patches` text returned.
pub const MAX_DIFF_BYTES: usize = 4 * 1024 * 1024;

/// `POST /api/v1/sessions/{id}/push`: the session's work (uncommitted
/// changes are committed first) to a branch of its repository, never
/// forced, never to the branch the session started from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushRequest {
    /// `claudecluster/<session-id>` unless this names a branch under a
    /// prefix the admin allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Message of the commit made of uncommitted work, if there is any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Open a pull (merge) request from the branch once it is pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestOptions>,
}

/// The pull request `push` opens; title and body default to the session's
/// last result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PullRequestOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Target branch; the branch the session started from by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    #[serde(default)]
    pub draft: bool,
}

/// What `push` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushResponse {
    pub session_id: String,
    pub branch: String,
    /// The commit the branch now points at.
    pub commit: String,
    /// Whether the push created the branch (else it fast-forwarded it or
    /// it was up to date).
    pub created: bool,
    /// Whether uncommitted work was committed before the push.
    pub committed_changes: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequest>,
}

/// A commit's abbreviated name, as git shows it (its first 7 characters).
pub fn short_commit(oid: &str) -> &str {
    oid.get(..7).unwrap_or(oid)
}

/// A pull (GitHub) or merge (GitLab) request opened by `push`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullRequest {
    pub number: u64,
    pub url: String,
    pub base: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileChange {
    pub path: String,
    pub insertions: u64,
    pub deletions: u64,
    pub binary: bool,
}

/// `GET /api/v1/sessions/{id}/files?path=P`: one file or directory of the
/// session's checkout, for clients that show the work. `P` is relative to
/// the checkout (absent or empty: its root); it may not leave the checkout
/// (no absolute paths, no `..`, no symlinks pointing outside) nor touch
/// `.git`, whose config holds the session's relay credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum SessionPath {
    /// A directory: its entries, sorted by name (`.git` left out).
    Dir {
        /// The path asked for, normalised (`""` is the checkout's root).
        path: String,
        entries: Vec<DirEntry>,
        /// Whether the listing was cut at [`MAX_DIR_ENTRIES`].
        truncated: bool,
    },
    /// A regular file (a symlink inside the checkout is read through).
    File {
        path: String,
        /// The file's size on disk, in bytes.
        size: u64,
        encoding: FileEncoding,
        /// The first [`MAX_FILE_BYTES`] of the file, as `encoding` says.
        content: String,
        /// Whether `content` is shorter than the file.
        truncated: bool,
    },
}

/// How [`SessionPath::File`] carries the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileEncoding {
    /// Text: valid UTF-8 without NUL bytes.
    Utf8,
    /// Anything else, standard base64 with padding.
    Base64,
}

/// One entry of [`SessionPath::Dir`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirEntry {
    /// The entry's name (not UTF-8 names are shown lossily).
    pub name: String,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Bytes for a file; 0 for anything else.
    pub size: u64,
}

/// What a [`DirEntry`] is; symlinks are not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// Largest part of a file returned by `files`.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Most entries returned for one directory.
pub const MAX_DIR_ENTRIES: usize = 10_000;

/// `POST /api/v1/webhooks`: an endpoint to tell of sessions' events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookRequest {
    /// `https://…` (or `http://…`); no redirect is followed.
    pub url: String,
    /// Event names (`session.created`, `turn.finished`, …); absent or
    /// empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Every user's sessions, not only the registering user's
    /// (administrators only).
    #[serde(default)]
    pub all_sessions: bool,
}

/// A registered endpoint (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookInfo {
    pub id: String,
    pub url: String,
    /// Empty: all events.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub owner: String,
    pub all_sessions: bool,
    pub created_at: String,
}

/// The answer to a registration: the signing secret, shown once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedWebhook {
    /// `whsec_…`: the HMAC-SHA256 key of the deliveries' signatures.
    pub secret: String,
    #[serde(flatten)]
    pub info: WebhookInfo,
}

/// One entry of an endpoint's delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    /// The delivery's ID: the body's `id`, the same on every attempt.
    pub id: String,
    pub event: String,
    pub session_id: String,
    /// `pending | delivered | failed`.
    pub state: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub next_attempt_at: Option<String>,
    pub finished_at: Option<String>,
}

/// The body of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    /// The delivery's ID (also the `ClaudeCluster-Webhook-Id` header).
    pub id: String,
    /// The event's name, e.g. `turn.finished`.
    #[serde(rename = "type")]
    pub kind: String,
    pub session_id: String,
    /// When it happened (RFC 3339, UTC).
    pub time: String,
    /// The event's own fields.
    pub data: serde_json::Value,
}
