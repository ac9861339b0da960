//! The contract between the orchestrator and `claudecluster-sessiond`.
//!
//! Every request carries `Authorization: Bearer <token>` (the per-session
//! token given to sessiond on its stdin, see [`TOKEN_FROM_STDIN`], or in
//! `SESSIOND_TOKEN` where its environment is its own). The orchestrator reads
//! [`Health::protocol_version`] and refuses to drive a daemon whose version it
//! does not speak.
//!
//! Routes (all JSON unless noted):
//! - `GET  /v1/health` → [`Health`]
//! - `POST /v1/init` [`InitRequest`] → 202 [`Health`]; idempotent: the same
//!   body again is a no-op, a different body is 409.
//! - `POST /v1/command` [`CommandRequest`] → 202 [`CommandAccepted`]
//! - `POST /v1/interrupt` → 202
//! - `GET  /v1/diff` → `crate::api::SessionDiff` (409 before the checkout
//!   exists)
//! - `POST /v1/push` [`PushRequest`] → [`PushOutcome`]: commits uncommitted
//!   work, then `git push` (never forced) through the relay. 409 `busy`
//!   during a turn, 409 `push_rejected` when the branch moved on the
//!   server, 403 `push_refused` when the relay refused it, 502
//!   `push_failed` otherwise.
//! - `GET  /v1/files?path=P` → `crate::api::SessionPath`: a file or directory
//!   of the checkout, `P` relative to it (absent: its root). 400
//!   `invalid_path` for an absolute path, `..`, NUL or something neither a
//!   file nor a directory; 403 `forbidden_path` for `.git` or a path
//!   leaving the checkout (through a symlink); 404 `not_found`; 409 before
//!   the checkout exists.
//! - `POST /v1/permissions/{requestId}` [`PermissionAnswer`] →
//!   [`PermissionDecision`]: answers Claude Code's `can_use_tool` question
//!   [`AgentEvent::PermissionRequest`] announced. The first answer wins: 409
//!   `already_answered` after it (or after the timeout or `always` did),
//!   404 `unknown_request` for a request Claude Code never made.
//! - `GET  /v1/events?since=N&follow=true` → NDJSON stream of
//!   [`JournalEntry`] with `seq > N`, in order. With `follow` the response
//!   stays open and carries new entries as they are journaled; an empty line
//!   is sent as a heartbeat.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped on any incompatible change to this module (2: permission
/// prompts — their journal events, `/v1/permissions`).
pub const PROTOCOL_VERSION: u32 = 2;
/// Port sessiond listens on inside the container.
pub const DEFAULT_PORT: u16 = 7700;
/// Set to `1` in sessiond's environment: its bearer token is the first
/// line of its stdin (the Docker runtime writes it there once the
/// container runs), not `SESSIOND_TOKEN`, so no environment holds it.
pub const TOKEN_FROM_STDIN: &str = "SESSIOND_TOKEN_STDIN";
/// Where the repository is checked out inside the container.
pub const WORKSPACE_DIR: &str = "/workspace";
/// Ref sessiond sets to the commit the checkout started at, the base of
/// the session's diff.
pub const BASE_REF: &str = "refs/claudecluster/base";
/// Checkout directory (the agent's working directory).
pub const REPO_DIR: &str = "/workspace/repo";

/// Lifecycle of the daemon, as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// Waiting for `/v1/init`.
    Idle,
    /// Cloning the repository.
    Cloning,
    /// Claude Code is running and waiting for a turn.
    Ready,
    /// A turn is in progress (more may be queued).
    Busy,
    /// Unrecoverable: clone failed, Claude Code cannot start.
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub protocol_version: u32,
    /// sessiond's own version.
    pub version: String,
    pub state: AgentState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Sequence number of the newest journal entry (0 when empty).
    pub last_seq: u64,
    /// Permission questions Claude Code waits on, oldest first, so an
    /// orchestrator that starts following the journal late (after a
    /// restart) knows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_permissions: Vec<crate::api::PendingPermission>,
}

/// What sessiond needs to set a session up. Secrets never travel here: the
/// credentials are session-scoped tokens that only the orchestrator's
/// gateway can turn into real keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitRequest {
    /// URL to clone (the orchestrator's git relay).
    pub clone_url: String,
    /// Extra HTTP headers git sends to `clone_url` (relay authentication).
    #[serde(default)]
    pub git_headers: Vec<String>,
    /// Branch to check out; the remote's default branch when absent.
    #[serde(default)]
    pub branch: Option<String>,
    pub claude: ClaudeSettings,
    /// Repository instructions appended to the checkout's `CLAUDE.md`
    /// (created, and excluded from git, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// The session's own branch: a plain `git push` in the checkout pushes
    /// `HEAD` there (`remote.origin.push`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_branch: Option<String>,
    /// The checkout is a copy of another session's (a fork): Claude Code
    /// resumes the conversation kept with it as a fork of its own
    /// (`--fork-session`), so the two go on apart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fork: bool,
    /// Seconds a permission question waits for an answer before it is
    /// denied (absent: [`DEFAULT_PERMISSION_TIMEOUT_SECS`]; `0`: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_timeout_secs: Option<u64>,
}

/// How long a permission question waits when the orchestrator does not say.
pub const DEFAULT_PERMISSION_TIMEOUT_SECS: u64 = 300;

/// `POST /v1/permissions/{requestId}`: a person's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PermissionAnswer {
    pub allow: bool,
    /// For a denial: what the model is told (a default otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// With `allow`: allow this tool for the rest of the session.
    #[serde(default)]
    pub always: bool,
    /// Who answered (a user name), for the journal and the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
}

/// What settled a permission question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DecisionSource {
    /// A person's answer (`/v1/permissions`).
    Answer,
    /// An earlier `always` for the same tool.
    Always,
    /// Nobody answered in time: denied.
    Timeout,
    /// Claude Code withdrew the question (the turn was interrupted, the
    /// process exited).
    Cancelled,
}

impl DecisionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answer => "answer",
            Self::Always => "always",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }
}

/// How a permission question was settled: the journal's
/// [`AgentEvent::PermissionDecision`] and the answer of `/v1/permissions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PermissionDecision {
    pub request_id: String,
    pub tool: String,
    pub allow: bool,
    /// The tool is allowed for the rest of the session from now on.
    #[serde(default)]
    pub always: bool,
    /// What the model was told, for a denial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub source: DecisionSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaudeSettings {
    /// Extra command-line arguments (validated by the orchestrator).
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment for the Claude Code process (base URL, session token…).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandRequest {
    pub text: String,
    /// Model for this turn (a `set_model` control request before it); later
    /// turns without one go back to the session's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Permission mode for this turn (`set_permission_mode`), likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandAccepted {
    /// Journal sequence number of the `command` entry recording it.
    pub seq: u64,
}

/// One journaled event. `seq` starts at 1 and increases by one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    pub seq: u64,
    /// RFC 3339 time the daemon journaled it.
    pub ts: String,
    pub event: AgentEvent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum AgentEvent {
    /// The daemon changed state; `message` explains errors.
    State {
        state: AgentState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A user turn was handed to Claude Code.
    Command { text: String },
    /// One line of Claude Code's stream-json output, verbatim.
    Claude { data: serde_json::Value },
    /// A line Claude Code (or git) wrote to stderr.
    Stderr { line: String },
    /// The Claude Code process ended.
    Exited {
        #[serde(default)]
        code: Option<i32>,
    },
    /// The kernel killed `kills` processes of the session for exceeding
    /// its memory limit since the last report (the container's memory
    /// cgroup counts them); the session lives on.
    OomKill { kills: u64 },
    /// Claude Code asks whether it may run a tool (its `can_use_tool`
    /// control request); it waits until a [`Self::PermissionDecision`].
    #[serde(rename_all = "camelCase")]
    PermissionRequest {
        request_id: String,
        tool: String,
        input: serde_json::Value,
    },
    /// A permission question was answered (by a person, an earlier
    /// `always`, the timeout) or withdrawn.
    PermissionDecision(PermissionDecision),
}

/// `POST /v1/push`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushRequest {
    /// Branch to push `HEAD` to (the orchestrator has checked it).
    pub branch: String,
    /// Message of the commit made of uncommitted work, if there is any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What `POST /v1/push` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushOutcome {
    pub branch: String,
    /// The commit the branch now points at.
    pub commit: String,
    /// Whether the push created the branch.
    pub created: bool,
    /// Whether uncommitted work was committed first.
    pub committed_changes: bool,
    /// The repository's default branch, as the checkout knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}
