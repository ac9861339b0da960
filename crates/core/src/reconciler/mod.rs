//! Background loops that keep the orchestrator's view and the runtime in
//! agreement, one file each:
//! - [`runtime_events`]: container exits (and OOM kills) reported by the
//!   runtime end their sessions with the reason within moments;
//! - [`orphan_gc`]: periodically removes resources nobody owns and checks
//!   that every live session's container still runs;
//! - [`warm_pool`]: keeps pre-started containers ready for creates;
//! - [`leases`]: renews this replica's session leases and takes over the
//!   sessions of replicas that stopped renewing theirs;
//! - [`workspaces`]: ends sessions whose workspace outgrew its size limit
//!   where the runtime cannot bound it.
//!
//! Idle and lifetime expiry live with each session's actor
//! (`session::reaper`).

pub mod leases;
pub mod orphan_gc;
pub mod runtime_events;
pub mod warm_pool;
pub mod workspaces;

use crate::seams::{Agent, Runtime, Store};
use crate::session::Manager;
use tokio::task::JoinHandle;

/// The running loops; dropping it stops them.
pub struct Background {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts every loop for `manager` (after [`Manager::recover`]).
pub fn start<R: Runtime, A: Agent, S: Store>(manager: &Manager<R, A, S>) -> Background {
    let interval = manager.config().reconcile_interval;
    let mut tasks = vec![
        tokio::spawn(runtime_events::run(manager.clone())),
        tokio::spawn(orphan_gc::run(manager.clone(), interval)),
        tokio::spawn(leases::run(manager.clone())),
    ];
    if manager.config().workspace_limit.is_some() {
        tasks.push(tokio::spawn(workspaces::run(manager.clone())));
    }
    if manager.config().warm_pool > 0 {
        tasks.push(tokio::spawn(warm_pool::run(manager.clone())));
    }
    Background { tasks }
}
