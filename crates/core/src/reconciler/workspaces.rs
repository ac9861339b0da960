//! Measures the workspaces and ends the sessions over the size limit (see
//! `session::workspace`), then pauses `workspace_check_interval` — a
//! pause after each measurement, not a fixed rate, so that a slow
//! measurement on a busy Engine never runs back to back and leaves the
//! Engine's other clients room for theirs. Stops at once when the runtime
//! bounds workspaces itself.

use crate::seams::{Agent, Runtime, Store};
use crate::session::Manager;

pub async fn run<R: Runtime, A: Agent, S: Store>(manager: Manager<R, A, S>) {
    loop {
        match manager.check_workspaces().await {
            Ok(None) => return,
            Ok(Some(0)) => {}
            Ok(Some(n)) => {
                tracing::info!(ended = n, "ended sessions over the workspace size limit")
            }
            Err(e) => tracing::warn!(error = %e, "workspace check failed"),
        }
        tokio::time::sleep(manager.config().workspace_check_interval).await;
    }
}
