//! The public API: REST under `/api/v1` and the session WebSocket.
//!
//! Field names are camelCase. The seed contract's fields are kept exactly;
//! everything else is an additive extension that a seed-only client can
//! ignore.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/sessions/create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSessionRequest {
    pub repo_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    pub claude_api_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<SessionConfigRequest>,
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
/// with `error` reachable from every live state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Creating,
    Starting,
    Cloning,
    Ready,
    Busy,
    Terminating,
    Terminated,
    Error,
}

impl SessionState {
    pub fn seed_status(self) -> SeedStatus {
        match self {
            Self::Creating | Self::Starting | Self::Cloning => SeedStatus::Starting,
            Self::Ready | Self::Busy => SeedStatus::Ready,
            Self::Error => SeedStatus::Error,
            Self::Terminating | Self::Terminated => SeedStatus::Terminated,
        }
    }

    /// Whether the session still owns runtime resources.
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Terminated | Self::Error)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Starting => "starting",
            Self::Cloning => "cloning",
            Self::Ready => "ready",
            Self::Busy => "busy",
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
}

/// `POST /api/v1/sessions/{id}/command` body, and the WebSocket `command`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandRequest {
    pub command: String,
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

/// Messages the server sends on the WebSocket; the same objects make up the
/// log. Seed types: `output {text, timestamp}`, `status {state}`,
/// `error {message}`. Extensions: `seq` on every stored event, the raw
/// Claude Code `event`, and the `command`, `claude` and `keepalive` types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    /// Text a person would read in a terminal.
    Output {
        seq: u64,
        text: String,
        timestamp: String,
        /// The Claude Code event this text was rendered from, when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<serde_json::Value>,
    },
    /// A Claude Code event that renders to no text (init, usage…).
    Claude {
        seq: u64,
        timestamp: String,
        event: serde_json::Value,
    },
    /// A turn handed to Claude Code.
    Command {
        seq: u64,
        text: String,
        timestamp: String,
    },
    Status {
        seq: u64,
        state: SessionState,
        timestamp: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Error {
        /// 0 for errors about the connection itself, which are not logged.
        seq: u64,
        message: String,
        timestamp: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
    /// Answer to a client `keepalive` (not logged).
    Keepalive { timestamp: String },
}

impl ServerMessage {
    /// The same message with its sequence number set (stored events get
    /// theirs from the session's log when they are appended).
    pub fn with_seq(mut self, new: u64) -> Self {
        match &mut self {
            Self::Output { seq, .. }
            | Self::Claude { seq, .. }
            | Self::Command { seq, .. }
            | Self::Status { seq, .. }
            | Self::Error { seq, .. } => *seq = new,
            Self::Keepalive { .. } => {}
        }
        self
    }

    /// The event's sequence number; 0 for messages that are not logged.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Output { seq, .. }
            | Self::Claude { seq, .. }
            | Self::Command { seq, .. }
            | Self::Status { seq, .. }
            | Self::Error { seq, .. } => *seq,
            Self::Keepalive { .. } => 0,
        }
    }
}

/// Messages a client sends on the WebSocket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ClientMessage {
    Command {
        command: String,
    },
    Keepalive,
    /// Stop the running turn; the session stays usable.
    Interrupt,
}

/// Every error answer: a stable machine `code` and a human `message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub code: String,
    pub message: String,
}
