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
//! - `GET  /v1/events?since=N&follow=true` → NDJSON stream of
//!   [`JournalEntry`] with `seq > N`, in order. With `follow` the response
//!   stays open and carries new entries as they are journaled; an empty line
//!   is sent as a heartbeat.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped on any incompatible change to this module.
pub const PROTOCOL_VERSION: u32 = 1;
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
/// Claude Code's configuration directory (`CLAUDE_CONFIG_DIR`), on the
/// workspace volume beside the checkout: its transcripts survive the
/// container, so a session that sleeps and wakes resumes its conversation.
pub const CLAUDE_CONFIG_DIR: &str = "/workspace/claude";

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
