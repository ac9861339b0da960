//! Every interval: removes containers, networks and volumes of sessions
//! that are unknown or ended (one replica at a time), ends live sessions whose container
//! stopped or vanished without an event reaching us, and ends sessions
//! that slept longer than the admin allows.

use crate::seams::{Agent, Runtime, Store};
use crate::session::Manager;
use std::time::Duration;

pub async fn run<R: Runtime, A: Agent, S: Store>(manager: Manager<R, A, S>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; recover() just ran
    loop {
        tick.tick().await;
        match manager.sweep_orphans().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed orphaned session resources"),
            Err(e) => tracing::warn!(error = %e, "orphan sweep failed"),
        }
        match manager.end_long_sleepers().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(ended = n, "ended sessions that slept too long"),
            Err(e) => tracing::warn!(error = %e, "ending long-sleeping sessions failed"),
        }
        let stopped = manager.check_live_containers().await;
        if stopped > 0 {
            tracing::info!(stopped, "found stopped session containers");
        }
    }
}
