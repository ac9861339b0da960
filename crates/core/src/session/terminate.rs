//! Ending sessions: on request, at the end of their lifetime, and at
//! startup for sessions a previous orchestrator left behind.

use super::actor::ActorMsg;
use super::create::append_status;
use super::{send, Manager};
use crate::error::CoreError;
use crate::seams::{Agent, Runtime, SessionRecord, Store};
use cc_wire::api::SessionState;
use tokio::sync::oneshot;

/// Reason recorded when a client deletes a session.
pub const REASON_DELETED: &str = "deleted by the client";

impl<R: Runtime, A: Agent, S: Store> Manager<R, A, S> {
    /// Ends a session and removes its resources. Ending an ended session
    /// is a no-op that returns its record.
    pub async fn terminate(&self, id: &str) -> Result<SessionRecord, CoreError> {
        let rec = self.get(id).await?;
        let Some(handle) = self.inner.handle(&rec.id) else {
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

    /// Terminates every live session (tests, single-host shutdown).
    pub async fn terminate_all(&self) {
        for id in self.inner.live_ids() {
            if let Err(e) = self.terminate(id.as_str()).await {
                tracing::warn!(session = %id, error = %e, "terminate failed");
            }
        }
    }

    /// Run once at startup: sessions a previous orchestrator left live
    /// cannot be adopted yet (their credentials lived in its memory), so
    /// they are marked `error` and their resources removed; resources of
    /// sessions we do not know are removed too. Returns how many sessions
    /// were cleaned up.
    pub async fn recover(&self) -> Result<usize, CoreError> {
        let inner = &self.inner;
        let mut cleaned = 0;
        for mut rec in inner.store.list_sessions(true).await? {
            if inner.handle(&rec.id).is_some() {
                continue;
            }
            inner.runtime.remove(&rec.id).await?;
            rec.state = SessionState::Error;
            rec.reason = Some("the orchestrator restarted and could not adopt this session".into());
            append_status(inner.store(), &mut rec).await?;
            inner.store.update_session(&rec).await?;
            cleaned += 1;
        }
        for id in inner.runtime.list().await? {
            if inner.handle(&id).is_none() {
                tracing::info!(session = %id, "removing orphaned session resources");
                inner.runtime.remove(&id).await?;
                cleaned += 1;
            }
        }
        Ok(cleaned)
    }
}
