//! The session stream: the messages of `WS /api/v1/sessions/{id}/stream`,
//! which are also the objects of `GET …/logs`.
//!
//! Every message is the seed's envelope `{type, data: {...}}`:
//!
//! ```text
//! → { type: 'command', data: { command: string } }
//! ← { type: 'output', data: { text: string, timestamp: number } }
//! ← { type: 'status', data: { state: string } }
//! ← { type: 'error', data: { message: string } }
//! → { type: 'keepalive' }
//! ← { type: 'permissionRequest', data: { requestId, tool, input, timestamp } }
//! → { type: 'permissionResponse', data: { requestId, allow, message?, always? } }
//! ← { type: 'permissionAnswer', data: { requestId, tool, allow, always, source, … } }
//! ```
//!
//! `timestamp` is milliseconds since the Unix epoch (JavaScript's
//! `Date.now()`). Extensions live inside `data` (`seq`, the raw Claude Code
//! `event`, `reason`, `code`, …) or are message types of their own
//! (`claude`, `command`, `turnResult`); no seed field is renamed, moved or
//! retyped.

use crate::api::{SessionState, TurnSummary, UsageTotals};
use serde::{Deserialize, Serialize};

/// Messages the server sends. Stored events carry a `seq` that increases by
/// one per session; reconnecting with `?since=<last seq>` loses and repeats
/// nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "camelCase")]
pub enum ServerMessage {
    /// Text a person would read in a terminal.
    Output {
        seq: u64,
        text: String,
        /// Milliseconds since the Unix epoch.
        timestamp: u64,
        /// The Claude Code event this text was rendered from, when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<serde_json::Value>,
    },
    /// A Claude Code event that renders to no text (init, usage…).
    Claude {
        seq: u64,
        timestamp: u64,
        event: serde_json::Value,
    },
    /// A turn handed to Claude Code.
    Command {
        seq: u64,
        text: String,
        timestamp: u64,
    },
    Status {
        seq: u64,
        state: SessionState,
        timestamp: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A turn ended (extension): its cost, usage and outcome, and the
    /// session's totals so far.
    TurnResult {
        seq: u64,
        timestamp: u64,
        turn: TurnSummary,
        totals: UsageTotals,
    },
    Error {
        /// 0 for errors about the connection itself, which are not logged.
        seq: u64,
        message: String,
        timestamp: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
    /// Answer to a client `keepalive` (not logged).
    Keepalive { timestamp: u64 },
    /// Claude Code asks whether it may run a tool; the turn waits for a
    /// `permissionResponse` (or `POST …/permissions/{requestId}`).
    #[serde(rename_all = "camelCase")]
    PermissionRequest {
        seq: u64,
        request_id: String,
        tool: String,
        input: serde_json::Value,
        timestamp: u64,
    },
    /// A permission question was settled: by a person (`answeredBy`), by
    /// an earlier `always`, by the timeout, or withdrawn by Claude Code.
    #[serde(rename_all = "camelCase")]
    PermissionAnswer {
        seq: u64,
        request_id: String,
        tool: String,
        allow: bool,
        /// The tool is allowed for the rest of the session from now on.
        always: bool,
        /// `answer | always | timeout | cancelled`.
        source: String,
        /// What the model was told, for a denial.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answered_by: Option<String>,
        timestamp: u64,
    },
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
            | Self::TurnResult { seq, .. }
            | Self::PermissionRequest { seq, .. }
            | Self::PermissionAnswer { seq, .. }
            | Self::Error { seq, .. } => *seq = new,
            Self::Keepalive { .. } => {}
        }
        self
    }

    /// When the message was made, in milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> u64 {
        match self {
            Self::Output { timestamp, .. }
            | Self::Claude { timestamp, .. }
            | Self::Command { timestamp, .. }
            | Self::Status { timestamp, .. }
            | Self::TurnResult { timestamp, .. }
            | Self::PermissionRequest { timestamp, .. }
            | Self::PermissionAnswer { timestamp, .. }
            | Self::Error { timestamp, .. }
            | Self::Keepalive { timestamp } => *timestamp,
        }
    }

    /// The event's sequence number; 0 for messages that are not logged.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Output { seq, .. }
            | Self::Claude { seq, .. }
            | Self::Command { seq, .. }
            | Self::Status { seq, .. }
            | Self::TurnResult { seq, .. }
            | Self::PermissionRequest { seq, .. }
            | Self::PermissionAnswer { seq, .. }
            | Self::Error { seq, .. } => *seq,
            Self::Keepalive { .. } => 0,
        }
    }
}

/// Messages a client sends: `{type: 'command', data: {command, model?,
/// permissionMode?}}`, `{type: 'interrupt'}`, `{type: 'keepalive'}`,
/// `{type: 'permissionResponse', data: {requestId, allow, message?,
/// always?}}`.
///
/// The flat form of earlier releases, `{"type":"command","command":"…"}`,
/// is still read (not documented; it will go).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "camelCase")]
pub enum ClientMessage {
    Command(CommandData),
    Keepalive,
    /// Stop the running turn; the session stays usable.
    Interrupt,
    /// The answer to a `permissionRequest`.
    PermissionResponse(PermissionResponse),
}

/// The answer to a `permissionRequest`: the WebSocket's
/// `permissionResponse` data, and the body of `POST
/// /api/v1/sessions/{id}/permissions/{requestId}` (where `requestId` may be
/// left out; if present it must be the path's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PermissionResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub allow: bool,
    /// For a denial: what the model is told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// With `allow`: allow this tool for the rest of the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always: Option<bool>,
}

/// The `data` of a client `command`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandData {
    pub command: String,
    /// This turn's model (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// This turn's permission mode (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
}

impl ClientMessage {
    /// A plain `command` message.
    pub fn command(command: impl Into<String>) -> Self {
        Self::Command(CommandData {
            command: command.into(),
            model: None,
            permission_mode: None,
        })
    }
}

/// The envelope as serde derives it; [`ClientMessage`]'s `Deserialize`
/// falls back to the flat command form when there is no `data`.
#[derive(Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "camelCase")]
enum Envelope {
    Command(CommandData),
    Keepalive,
    Interrupt,
    PermissionResponse(PermissionResponse),
}

impl<'de> Deserialize<'de> for ClientMessage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut v = serde_json::Value::deserialize(d)?;
        if v.get("type").and_then(|t| t.as_str()) == Some("command") && v.get("data").is_none() {
            // The flat form: the command's fields beside `type`.
            let fields = v.as_object_mut().map(std::mem::take).unwrap_or_default();
            v = serde_json::json!({ "type": "command", "data": fields });
            if let Some(data) = v["data"].as_object_mut() {
                data.remove("type");
            }
        }
        let envelope = Envelope::deserialize(v).map_err(D::Error::custom)?;
        Ok(match envelope {
            Envelope::Command(c) => Self::Command(c),
            Envelope::Keepalive => Self::Keepalive,
            Envelope::Interrupt => Self::Interrupt,
            Envelope::PermissionResponse(r) => Self::PermissionResponse(r),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_messages_are_the_seeds_envelope() {
        let out = ServerMessage::Output {
            seq: 3,
            text: "hi".into(),
            timestamp: 1_764_000_000_123,
            event: None,
        };
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            json!({"type": "output", "data": {"seq": 3, "text": "hi", "timestamp": 1_764_000_000_123_u64}})
        );
        let status = ServerMessage::Status {
            seq: 4,
            state: SessionState::Ready,
            timestamp: 5,
            reason: None,
        };
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            json!({"type": "status", "data": {"seq": 4, "state": "ready", "timestamp": 5}})
        );
        let err = ServerMessage::Error {
            seq: 0,
            message: "no".into(),
            timestamp: 6,
            code: Some("x".into()),
        };
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            json!({"type": "error", "data": {"seq": 0, "message": "no", "timestamp": 6, "code": "x"}})
        );
        let keepalive = ServerMessage::Keepalive { timestamp: 7 };
        assert_eq!(
            serde_json::to_value(&keepalive).unwrap(),
            json!({"type": "keepalive", "data": {"timestamp": 7}})
        );
        let ask = ServerMessage::PermissionRequest {
            seq: 8,
            request_id: "r-1".into(),
            tool: "Bash".into(),
            input: json!({"command": "ls"}),
            timestamp: 9,
        };
        assert_eq!(
            serde_json::to_value(&ask).unwrap(),
            json!({"type": "permissionRequest", "data": {"seq": 8, "requestId": "r-1", "tool": "Bash", "input": {"command": "ls"}, "timestamp": 9}})
        );
        for m in [out, status, err, keepalive, ask] {
            let back: ServerMessage =
                serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn client_messages_are_read_in_the_seeds_envelope_and_the_flat_form() {
        let seed: ClientMessage =
            serde_json::from_value(json!({"type": "command", "data": {"command": "ls"}})).unwrap();
        assert_eq!(seed, ClientMessage::command("ls"));
        let with_options: ClientMessage = serde_json::from_value(json!({
            "type": "command",
            "data": {"command": "ls", "model": "m", "permissionMode": "plan"}
        }))
        .unwrap();
        assert_eq!(
            with_options,
            ClientMessage::Command(CommandData {
                command: "ls".into(),
                model: Some("m".into()),
                permission_mode: Some("plan".into()),
            })
        );
        let flat: ClientMessage =
            serde_json::from_value(json!({"type": "command", "command": "ls", "model": "m"}))
                .unwrap();
        assert_eq!(
            flat,
            ClientMessage::Command(CommandData {
                command: "ls".into(),
                model: Some("m".into()),
                permission_mode: None,
            })
        );
        let keepalive: ClientMessage =
            serde_json::from_value(json!({"type": "keepalive"})).unwrap();
        assert_eq!(keepalive, ClientMessage::Keepalive);
        let interrupt: ClientMessage =
            serde_json::from_value(json!({"type": "interrupt"})).unwrap();
        assert_eq!(interrupt, ClientMessage::Interrupt);
        // What the server's Rust client sends is the seed's form.
        assert_eq!(
            serde_json::to_value(ClientMessage::command("ls")).unwrap(),
            json!({"type": "command", "data": {"command": "ls"}})
        );
        assert_eq!(
            serde_json::to_value(ClientMessage::Keepalive).unwrap(),
            json!({"type": "keepalive"})
        );
        let answer: ClientMessage = serde_json::from_value(json!({
            "type": "permissionResponse",
            "data": {"requestId": "r-1", "allow": false, "message": "no", "always": false}
        }))
        .unwrap();
        assert_eq!(
            answer,
            ClientMessage::PermissionResponse(PermissionResponse {
                request_id: Some("r-1".into()),
                allow: false,
                message: Some("no".into()),
                always: Some(false),
            })
        );
        for bad in [
            json!({"type": "permissionResponse", "data": {"requestId": "r"}}),
            json!({"type": "permissionResponse", "data": {"requestId": "r", "allow": true, "extra": 1}}),
            json!({"type": "command"}),
            json!({"type": "command", "data": {}}),
            json!({"type": "shout"}),
            json!("command"),
        ] {
            assert!(
                serde_json::from_value::<ClientMessage>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
