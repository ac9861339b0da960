//! The workspace size limit where the runtime cannot bound a workspace
//! itself (a Docker volume is a directory on the Engine's disk): every
//! check measures each workspace, and a live session whose workspace holds
//! more than `serve --workspace-size` ends in `error` and its workspace is
//! removed — what the kubelet does to a Pod whose `emptyDir` outgrows its
//! `sizeLimit`. A session can overshoot by what it writes between two
//! checks.

use super::actor::ActorMsg;
use super::{Inner, Manager};
use crate::error::CoreError;
use crate::ids::SessionId;
use crate::seams::{Agent, Runtime, Store};

impl<R: Runtime, A: Agent, S: Store> Inner<R, A, S> {
    /// What the session's workspace held at the last check.
    pub(crate) fn workspace_size(&self, id: &SessionId) -> Option<u64> {
        self.workspace_sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }
}

impl<R: Runtime, A: Agent, S: Store> Manager<R, A, S> {
    /// Measures every workspace once and ends this replica's sessions
    /// whose workspace is over the limit; returns how many it ended, or
    /// `None` when the runtime does not measure workspaces (it bounds them
    /// itself) and there is nothing to check.
    pub async fn check_workspaces(&self) -> Result<Option<usize>, CoreError> {
        let sizes = match self.inner.runtime.workspace_sizes().await {
            Ok(Some(sizes)) => sizes,
            Ok(None) => return Ok(None),
            Err(e) => return Err(CoreError::Unavailable(format!("measuring workspaces: {e}"))),
        };
        let over: Vec<(SessionId, u64)> = match self.inner.config.workspace_limit {
            Some(limit) => sizes
                .iter()
                .filter(|(_, used)| **used > limit)
                .map(|(id, used)| (id.clone(), *used))
                .collect(),
            None => Vec::new(),
        };
        *self
            .inner
            .workspace_sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = sizes;
        let mut ended = 0;
        for (id, used) in over {
            // Sleeping sessions' workspaces cannot grow; another replica's
            // sessions are that replica's to check.
            let Some(h) = self.inner.handle(&id) else {
                continue;
            };
            let limit = self.inner.config.workspace_limit.unwrap_or_default();
            tracing::warn!(session = %id, used_bytes = used, limit_bytes = limit, "workspace over its size limit");
            if h.tx
                .send(ActorMsg::WorkspaceFull { used, limit })
                .await
                .is_ok()
            {
                ended += 1;
            }
        }
        Ok(Some(ended))
    }
}
