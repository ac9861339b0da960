//! Keeps the warm pool at its size: refills after every claim, and at
//! least every [`RECHECK`] (a pool container that died, a failed start).

use crate::seams::{Agent, Runtime, Store};
use crate::session::Manager;
use std::time::Duration;

/// Longest pause between two refills.
const RECHECK: Duration = Duration::from_secs(10);

pub async fn run<R: Runtime, A: Agent, S: Store>(manager: Manager<R, A, S>) {
    loop {
        let started = manager.refill_pool().await;
        if started > 0 {
            let (ready, _) = manager.pool_size();
            tracing::debug!(started, ready, "warm pool refilled");
        }
        manager.pool_claimed(RECHECK).await;
    }
}
