//! The webhook notices a session's log gives rise to (see
//! `crate::webhook`): sent as the log records the event, so a notice
//! never tells of something the log does not hold.

use crate::seams::SessionRecord;
use crate::time::{epoch_ms, now_ms};
use crate::webhook::{EventKind, Notice, NoticeSender};
use cc_wire::api::{ServerMessage, SessionState};
use serde_json::json;

/// For a status the log just recorded; `prev` is the state before it
/// (`None` where the session is being created or ended outside its actor).
pub(crate) fn on_status(
    to: Option<&NoticeSender>,
    rec: &SessionRecord,
    prev: Option<SessionState>,
) {
    use SessionState::*;
    let (kind, data) = match rec.state {
        Creating => (
            EventKind::SessionCreated,
            json!({ "repoUrl": rec.repo_url, "branch": rec.branch, "limits": rec.limits }),
        ),
        // The first `ready`; later ones end turns (`turn.finished`).
        Ready if matches!(prev, Some(Creating | Starting | Cloning)) => {
            (EventKind::SessionReady, json!({}))
        }
        Error => (EventKind::SessionError, json!({ "reason": rec.reason })),
        Sleeping => (EventKind::SessionSleeping, json!({ "reason": rec.reason })),
        Terminated => (
            EventKind::SessionTerminated,
            json!({ "reason": rec.reason, "usage": rec.usage.totals }),
        ),
        _ => return,
    };
    send(to, rec, kind, epoch_ms(rec.updated_at), data);
}

/// Longest excerpt of a turn's result text a notice carries.
const MAX_RESULT_CHARS: usize = 4000;

/// For a finished turn the log just recorded (its `turnResult` message),
/// with the start of Claude Code's result text.
pub(crate) fn on_turn(
    to: Option<&NoticeSender>,
    rec: &SessionRecord,
    msg: &ServerMessage,
    result: Option<&str>,
) {
    let ServerMessage::TurnResult {
        turn,
        totals,
        timestamp,
        ..
    } = msg
    else {
        return;
    };
    let result = result.map(|r| match r.char_indices().nth(MAX_RESULT_CHARS) {
        Some((cut, _)) => format!("{}…", &r[..cut]),
        None => r.to_owned(),
    });
    let data = json!({ "turn": turn, "totals": totals, "result": result });
    send(to, rec, EventKind::TurnFinished, *timestamp, data);
}

/// For a permission question the log just recorded (its
/// `permissionRequest` message): the tool and its input, which a person
/// answers with `POST …/permissions/{requestId}`. An input longer than
/// [`MAX_RESULT_CHARS`] as JSON comes as the start of that JSON text.
pub(crate) fn on_permission(to: Option<&NoticeSender>, rec: &SessionRecord, msg: &ServerMessage) {
    let ServerMessage::PermissionRequest {
        request_id,
        tool,
        input,
        timestamp,
        ..
    } = msg
    else {
        return;
    };
    let text = input.to_string();
    let input = match text.char_indices().nth(MAX_RESULT_CHARS) {
        Some((cut, _)) => serde_json::Value::String(format!("{}…", &text[..cut])),
        None => input.clone(),
    };
    let data = json!({ "requestId": request_id, "tool": tool, "input": input });
    send(to, rec, EventKind::PermissionRequested, *timestamp, data);
}

/// For what the API did with the session outside its log (a push, a pull
/// request).
pub fn on_api(
    to: Option<&NoticeSender>,
    rec: &SessionRecord,
    kind: EventKind,
    data: serde_json::Value,
) {
    send(to, rec, kind, now_ms(), data);
}

/// Sends the session's notice when someone listens (nothing is queued
/// otherwise).
fn send(
    to: Option<&NoticeSender>,
    rec: &SessionRecord,
    kind: EventKind,
    at_ms: u64,
    data: serde_json::Value,
) {
    if let Some(tx) = to {
        let notice = Notice {
            kind,
            session: rec.id.clone(),
            owner: rec.owner.clone(),
            at_ms,
            data,
        };
        // A closed receiver: the server is shutting down.
        let _ = tx.send(notice);
    }
}
