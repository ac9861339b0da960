//! Ending sessions on request (the actor ends them at the end of their
//! lifetime; `adopt` handles those a previous orchestrator left behind).

use super::actor::ActorMsg;
use super::{send, Manager};
use crate::error::CoreError;
use crate::seams::{Agent, Runtime, SessionRecord, Store};
use tokio::sync::oneshot;

/// Reason recorded when a client deletes a session.
pub const REASON_DELETED: &str = "deleted by the client";

impl<R: Runtime, A: Agent, S: Store> Manager<R, A, S> {
    /// Ends a session and removes its resources. Ending an ended session
    /// is a no-op that returns its record.
    pub async fn terminate(&self, id: &str) -> Result<SessionRecord, CoreError> {
        let rec = self.get(id).await?;
        let Some(handle) = self.inner.handle(&rec.id) else {
            if rec.state == cc_wire::api::SessionState::Sleeping {
                return self.end_sleeping(&rec.id, REASON_DELETED).await;
            }
            return Ok(rec);
        };
        let (reply, rx) = oneshot::channel();
        if send(
            &handle,
            ActorMsg::Terminate {
                reason: REASON_DELETED.into(),
                reply,
            },
        )
        .await
        .is_err()
        {
            // The actor ended on its own meanwhile.
            return self.get(id).await;
        }
        match rx.await {
            Ok(rec) => Ok(rec),
            Err(_) => self.get(id).await,
        }
    }

    /// Terminates every session this replica runs, and every sleeping one
    /// (tests, single-host shutdown).
    pub async fn terminate_all(&self) {
        let mut ids = self.inner.live_ids();
        match self.inner.store().list_sessions(true).await {
            Ok(all) => ids.extend(
                all.into_iter()
                    .filter(|r| r.state == cc_wire::api::SessionState::Sleeping)
                    .map(|r| r.id),
            ),
            Err(e) => tracing::warn!(error = %e, "listing sleeping sessions to end them"),
        }
        for id in ids {
            if let Err(e) = self.terminate(id.as_str()).await {
                tracing::warn!(session = %id, error = %e, "terminate failed");
            }
        }
    }
}
