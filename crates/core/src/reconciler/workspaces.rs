//! Every `workspace_check_interval`: measures the workspaces and ends the
//! sessions over the size limit (see `session::workspace`). Stops at once
//! when the runtime bounds workspaces itself.

use crate::seams::{Agent, Runtime, Store};
use crate::session::Manager;

pub async fn run<R: Runtime, A: Agent, S: Store>(manager: Manager<R, A, S>) {
    let mut tick = tokio::time::interval(manager.config().workspace_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match manager.check_workspaces().await {
            Ok(None) => return,
            Ok(Some(0)) => {}
            Ok(Some(n)) => {
                tracing::info!(ended = n, "ended sessions over the workspace size limit")
            }
            Err(e) => tracing::warn!(error = %e, "workspace check failed"),
        }
    }
}
