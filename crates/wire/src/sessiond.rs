//! The contract between the orchestrator and `claudecluster-sessiond`.
//!
//! Every request carries `Authorization: Bearer <token>` (the per-session
//! token given to the container in `SESSIOND_TOKEN`). The orchestrator reads
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}
