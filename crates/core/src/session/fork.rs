//! Forking a session: new sessions, each starting from a copy of the
//! parent's workspace (its checkout, uncommitted work included, and Claude
//! Code's conversation, which each fork resumes as a fork of its own), with
//! its own container, network, tokens and branch `claudecluster/<new id>`.
//! The parent is untouched: it may be `ready` or asleep, never in a turn.

use super::create::{append_status, new_record, Launch, Setup};
use super::Manager;
use crate::error::CoreError;
use crate::ids::SessionId;
use crate::seams::{Agent, Runtime, SessionRecord, Store};
use cc_wire::api::SessionState;

/// Most forks one request makes.
pub const MAX_FORKS: usize = 10;

/// Refuses a fork count out of `1..=MAX_FORKS` (`400`).
pub fn check_fork_count(count: usize) -> Result<(), CoreError> {
    if (1..=MAX_FORKS).contains(&count) {
        return Ok(());
    }
    Err(CoreError::invalid(
        "invalid_fork_count",
        format!("count must be between 1 and {MAX_FORKS}"),
    ))
}

impl<R: Runtime, A: Agent, S: Store> Manager<R, A, S> {
    /// Forks `parent` `count` times; each fork runs `command` at once when
    /// given (queued until it is ready). Returns the forks as created
    /// (`starting`). `409 session_busy` during the parent's turn.
    pub async fn fork(
        &self,
        parent: &str,
        count: usize,
        command: Option<String>,
    ) -> Result<Vec<SessionRecord>, CoreError> {
        check_fork_count(count)?;
        if let Some(text) = &command {
            super::check_command(text)?;
        }
        let inner = &self.inner;
        let parent = self.get(parent).await?;
        match parent.state {
            SessionState::Ready | SessionState::Sleeping => {}
            SessionState::Busy => {
                return Err(CoreError::conflict(
                    "session_busy",
                    "a turn is running; fork the session when it has finished",
                ))
            }
            s if s.is_live() => {
                return Err(CoreError::conflict(
                    "session_not_ready",
                    format!(
                        "session {} is {}: fork it once it is ready",
                        parent.id,
                        s.as_str()
                    ),
                ))
            }
            s => {
                return Err(CoreError::conflict(
                    "session_not_active",
                    format!("session {} is {}", parent.id, s.as_str()),
                ))
            }
        }
        let key = match (&inner.config.seal_key, inner.runtime.can_suspend()) {
            (Some(key), true) => key,
            _ => {
                return Err(CoreError::conflict(
                    "fork_unavailable",
                    "sessions cannot be forked here: the runtime does not keep workspaces apart from their containers, or the server keeps no sealed secrets",
                ))
            }
        };
        let sealed = inner
            .store
            .sealed_secrets(&parent.id)
            .await?
            .ok_or_else(|| {
                CoreError::Internal(format!("session {}'s secrets are gone", parent.id))
            })?;
        let secrets = crate::secrets::open(key, &parent.id, &sealed)
            .map_err(|e| CoreError::Internal(format!("opening {}'s secrets: {e}", parent.id)))?;
        let init = secrets.init.clone().ok_or_else(|| {
            CoreError::conflict(
                "session_not_ready",
                format!("session {} was never set up", parent.id),
            )
        })?;
        let forks = (0..count).map(|_| {
            let launch = Launch {
                claude_api_key: secrets.claude_api_key.clone(),
                repo_token: secrets.repo_token.clone(),
                repo_url: parent.repo_url.clone(),
                warm: None,
                setup: Setup::Fork {
                    parent: parent.id.clone(),
                    init: init.clone(),
                },
            };
            self.fork_one(&parent, launch)
        });
        let made = futures_util::future::join_all(forks).await;
        let mut out = Vec::with_capacity(count);
        let mut failed = None;
        for r in made {
            match r {
                Ok(rec) => out.push(rec),
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            // All or nothing: the ones that started go again.
            for rec in &out {
                if let Err(end) = self.terminate(rec.id.as_str()).await {
                    tracing::warn!(session = %rec.id, error = %end, "ending a fork of a failed fork request");
                }
            }
            return Err(e);
        }
        if let Some(text) = command {
            for rec in &out {
                self.command(rec.id.as_str(), text.clone()).await?;
            }
        }
        Ok(out)
    }

    async fn fork_one(
        &self,
        parent: &SessionRecord,
        launch: Launch,
    ) -> Result<SessionRecord, CoreError> {
        let started_at = tokio::time::Instant::now();
        let inner = &self.inner;
        let mut record = new_record(
            &inner.config,
            SessionId::generate(),
            parent.repo_url.clone(),
            parent.branch.clone(),
            parent.limits,
            parent.owner.clone(),
        );
        record.reason = Some(format!("forked from {}", parent.id));
        inner.store.insert_session(&record).await?;
        append_status(inner, &mut record).await?;
        record.reason = None;
        self.launch(record, launch, started_at).await
    }
}
