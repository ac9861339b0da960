//! Permission prompts: Claude Code's `can_use_tool` questions, relayed to
//! a person.
//!
//! sessiond owns each question (see `cc_wire::sessiond`): it journals the
//! question, takes the first answer (later ones are `409`), denies it when
//! nobody answered within the admin's `--permission-timeout`, and answers
//! questions about a tool allowed `always` itself. The session's actor
//! turns those journal entries into `permissionRequest` and
//! `permissionAnswer` events, keeps the open questions in [`Pending`] (the
//! status's `pendingPermissions`, for as long as this replica runs the
//! session), and audits questions and the answers no person gave (timeout,
//! `always`, withdrawn); the API audits the answers people give, with who
//! gave them.
//!
//! What is audited never holds a tool's input: like a command's text it may
//! hold anything (see `crate::audit`).

use crate::error::CoreError;
use cc_wire::api::PendingPermission;
use std::sync::Mutex;

/// Longest request id taken from a client (Claude Code's are UUIDs).
pub const MAX_REQUEST_ID_CHARS: usize = 128;
/// Longest message a denial may tell the model (sessiond's own limit).
pub const MAX_DENIAL_CHARS: usize = 10_000;

/// The questions a live session waits on, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Pending(Mutex<Vec<PendingPermission>>);

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PendingPermission>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn ask(&self, p: PendingPermission) {
        let mut list = self.lock();
        list.retain(|q| q.request_id != p.request_id);
        list.push(p);
    }

    pub(crate) fn settle(&self, request_id: &str) {
        self.lock().retain(|q| q.request_id != request_id);
    }

    /// Takes the questions sessiond reports open (when following its
    /// journal starts).
    pub(crate) fn replace(&self, open: Vec<PendingPermission>) {
        *self.lock() = open;
    }

    /// Forgets them all: the session ended.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    pub(crate) fn list(&self) -> Vec<PendingPermission> {
        self.lock().clone()
    }
}

/// A request id as a client names it: what Claude Code generates, never
/// anything that could change a forwarded path.
pub fn check_request_id(id: &str) -> Result<(), CoreError> {
    let sound = !id.is_empty()
        && id.chars().count() <= MAX_REQUEST_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if sound {
        Ok(())
    } else {
        Err(CoreError::missing(
            "permission_not_found",
            "no such permission request",
        ))
    }
}

/// Checks an answer's fields.
pub fn check_answer(message: Option<&str>) -> Result<(), CoreError> {
    if message.is_some_and(|m| m.chars().count() > MAX_DENIAL_CHARS) {
        return Err(CoreError::invalid(
            "invalid_permission_response",
            format!("message is longer than {MAX_DENIAL_CHARS} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(id: &str) -> PendingPermission {
        PendingPermission {
            request_id: id.into(),
            tool: "Bash".into(),
            input: json!({}),
            timestamp: 1,
        }
    }

    #[test]
    fn pending_questions_are_kept_in_order_until_settled() {
        let p = Pending::default();
        p.ask(q("a"));
        p.ask(q("b"));
        p.ask(q("a"));
        let ids: Vec<_> = p.list().into_iter().map(|q| q.request_id).collect();
        assert_eq!(ids, ["b", "a"]);
        p.settle("b");
        assert_eq!(p.list().len(), 1);
        p.clear();
        assert!(p.list().is_empty());
    }

    #[test]
    fn request_ids_cannot_reshape_a_path() {
        for ok in ["3f2b-11aa", "toolu_01.x", "perm-1"] {
            assert!(check_request_id(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_REQUEST_ID_CHARS + 1);
        for bad in ["", "../command", "a/b", "a?b", "a b", long.as_str()] {
            assert!(check_request_id(bad).is_err(), "{bad}");
        }
        assert!(check_answer(Some("no")).is_ok());
        assert!(check_answer(Some(&"x".repeat(MAX_DENIAL_CHARS + 1))).is_err());
    }
}
