//! Errors, classified at each seam.
//!
//! [`CoreError`] is what the API layer maps to HTTP: its `message` is safe
//! to show a client (no secrets, no internal addresses); internal context is
//! logged where the error is created.

use thiserror::Error;

/// A runtime backend failure, classified so the core can decide what to do.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend cannot be reached or is overloaded.
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
    /// The request cannot succeed as asked (e.g. the image is missing).
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("runtime error: {0}")]
    Internal(String),
}

/// A store backend failure, classified at the seam so callers can tell
/// what happened without reading backend messages.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The record the operation needs does not exist (e.g. updating or
    /// appending to a session that was never inserted).
    #[error("not found: {0}")]
    NotFound(String),
    /// The operation clashes with what is stored: a duplicate key, an event
    /// batch that does not continue the log, a precondition that no longer
    /// holds. Retrying after re-reading may succeed; nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The write carried a fencing number older than the session's lease:
    /// another replica owns the session now (see `crate::lease`). Nothing
    /// was written; the writer must let the session go.
    #[error("fenced off: {0}")]
    Fenced(String),
    /// The backend cannot be reached: no connection can be opened, or the
    /// one in use broke (the database restarted, the network was cut). A
    /// read can be retried; a write in flight may or may not have happened.
    /// The API answers `503` while it lasts.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend failed otherwise (an SQL error, a constraint of its own).
    #[error("store error: {0}")]
    Backend(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

/// Talking to sessiond failed.
#[derive(Debug, Error)]
pub enum AgentError {
    /// Not reachable (yet): connection refused, timeout.
    #[error("sessiond unreachable: {0}")]
    Unreachable(String),
    /// sessiond answered with an error status.
    #[error("sessiond refused ({status}): {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// sessiond speaks a protocol version we do not.
    #[error("sessiond speaks protocol {found}, the orchestrator needs {expected}")]
    Version { expected: u32, found: u32 },
    #[error("sessiond protocol error: {0}")]
    Protocol(String),
}

/// What the API layer sees.
#[derive(Debug, Error)]
pub enum CoreError {
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("session {0} not found")]
    NotFound(String),
    /// Something within a session (a path of its checkout) does not exist.
    #[error("{message}")]
    Missing { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    Unavailable(String),
    /// Another replica took the session over (its lease has a newer fence):
    /// this replica must let the session go and leave it running.
    #[error("{0}")]
    Fenced(String),
    /// Logged in full where raised; clients get a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoreError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }

    pub fn missing(code: &'static str, message: impl Into<String>) -> Self {
        Self::Missing {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for CoreError {
    /// A store that cannot be reached is the service being unavailable
    /// (`503`, retry later); any other store failure is ours (`500`).
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::Unavailable(format!(
                "the session store is unavailable, retry later: {m}"
            )),
            StoreError::Fenced(m) => {
                Self::Fenced(format!("another replica owns the session now: {m}"))
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<RuntimeError> for CoreError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Unavailable(m) => {
                Self::Unavailable(format!("the container runtime is unavailable: {m}"))
            }
            RuntimeError::Invalid(m) => Self::Unavailable(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_store_is_unavailable_and_other_failures_internal() {
        let e = CoreError::from(StoreError::Unavailable("connection refused".into()));
        assert!(
            matches!(&e, CoreError::Unavailable(m) if m.contains("connection refused")),
            "{e:?}"
        );
        for other in [
            StoreError::Backend("syntax".into()),
            StoreError::Corrupt("row".into()),
            StoreError::Conflict("seq".into()),
        ] {
            assert!(matches!(CoreError::from(other), CoreError::Internal(_)));
        }
    }
}
