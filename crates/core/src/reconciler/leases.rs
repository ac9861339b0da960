//! Session ownership across replicas (see `crate::lease`): renews this
//! replica's leases every [`RENEW_EVERY`] (letting go of sessions another
//! replica took over), and every [`TAKEOVER_SCAN_EVERY`] claims and adopts
//! the live sessions whose owner stopped renewing — a replica that was
//! killed, lost its network or stopped without ending its sessions.
//! One process alone runs it too: its leases are simply always its own.

use crate::lease::{RENEW_EVERY, TAKEOVER_SCAN_EVERY};
use crate::seams::{Agent, Runtime, Store};
use crate::session::Manager;
use tokio::time::MissedTickBehavior;

pub async fn run<R: Runtime, A: Agent, S: Store>(manager: Manager<R, A, S>) {
    let mut renew = tokio::time::interval(RENEW_EVERY);
    renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut scan = tokio::time::interval(TAKEOVER_SCAN_EVERY);
    scan.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = renew.tick() => {
                if let Err(e) = manager.renew_leases().await {
                    tracing::warn!(error = %e, "renewing session leases failed");
                }
            }
            _ = scan.tick() => match manager.take_over_unowned().await {
                Ok(r) if r.adopted + r.failed > 0 => tracing::info!(
                    adopted = r.adopted,
                    failed = r.failed,
                    "took over sessions whose replica stopped renewing"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "looking for sessions to take over failed"),
            },
        }
    }
}
