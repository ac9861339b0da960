//! The warm pool: containers started before anyone asks, so a create skips
//! the network, volume and container start and sessiond's boot.
//!
//! A pool container is an ordinary session container under a session ID
//! generated in advance (the session that claims it takes that ID, so
//! names and labels already fit). It holds no user data and no user
//! secrets: only sessiond's bearer token, the orchestrator's own
//! credential. The repository, Claude Code's settings and the session
//! token reach it with the `init` sent after the claim. Only sessions with
//! the default limits can claim one (the container's limits are set when
//! it starts). A claim pops one entry under a lock, so no container is
//! ever handed to two sessions. The pool is refilled in the background
//! (`crate::reconciler::warm_pool`); after a restart, containers of the
//! old pool are unknown to the store and removed as orphans.

use super::Manager;
use crate::ids::{SessionId, Token};
use crate::seams::{Agent, AgentEndpoint, Placement, Runtime, SessionSpec, Store};
use cc_wire::api::SessionLimits;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Pause between health probes of a new pool container.
const HEALTH_POLL: Duration = Duration::from_millis(50);

/// A started container with a healthy sessiond, waiting for a session.
#[derive(Debug, Clone)]
pub(crate) struct Warm {
    pub(crate) id: SessionId,
    pub(crate) agent_token: Token,
    pub(crate) placement: Placement,
    pub(crate) limits: SessionLimits,
}

#[derive(Default)]
pub(crate) struct WarmPool {
    /// Ready containers, and IDs being started for the pool.
    inner: Mutex<PoolState>,
    /// Wakes the refill loop after a claim.
    pub(crate) claimed: Notify,
}

#[derive(Default)]
struct PoolState {
    ready: VecDeque<Warm>,
    starting: Vec<SessionId>,
    /// Claimed, but the claiming session has no record yet: still ours,
    /// so the orphan sweep leaves it alone.
    claimed: Vec<SessionId>,
}

impl WarmPool {
    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a ready container started with these memory and CPU limits
    /// (the lifetime and the idle timeout are the session's own).
    pub(crate) fn claim(&self, limits: &SessionLimits) -> Option<Warm> {
        let warm = {
            let mut st = self.state();
            let i = st.ready.iter().position(|w| {
                w.limits.memory_bytes == limits.memory_bytes && w.limits.cpu == limits.cpu
            })?;
            let w = st.ready.remove(i)?;
            st.claimed.push(w.id.clone());
            Some(w)
        };
        self.claimed.notify_one();
        warm
    }

    /// Containers ready or being started.
    pub(crate) fn len(&self) -> (usize, usize) {
        let st = self.state();
        (st.ready.len(), st.starting.len())
    }

    /// Whether the resources named by `id` belong to the pool.
    pub(crate) fn owns(&self, id: &SessionId) -> bool {
        let st = self.state();
        st.starting.contains(id) || st.claimed.contains(id) || st.ready.iter().any(|w| w.id == *id)
    }

    /// Every ID whose resources belong to the pool (for the replica's
    /// heartbeat: other replicas' sweeps leave them alone).
    pub(crate) fn owned_ids(&self) -> Vec<SessionId> {
        let st = self.state();
        st.starting
            .iter()
            .chain(st.claimed.iter())
            .chain(st.ready.iter().map(|w| &w.id))
            .cloned()
            .collect()
    }

    /// The claiming session's record exists now (or its create failed).
    pub(crate) fn settled(&self, id: &SessionId) {
        self.state().claimed.retain(|c| c != id);
    }

    pub(crate) fn starting(&self, id: &SessionId) {
        self.state().starting.push(id.clone());
    }

    /// A started container joins the pool (or, `None`, failed to start).
    pub(crate) fn started(&self, id: &SessionId, warm: Option<Warm>) {
        let mut st = self.state();
        st.starting.retain(|s| s != id);
        if let Some(w) = warm {
            st.ready.push_back(w);
        }
    }

    fn take_any(&self) -> Option<Warm> {
        self.state().ready.pop_front()
    }

    /// Drops a ready container (it died); `true` when it was in the pool.
    pub(crate) fn forget(&self, id: &SessionId) -> bool {
        let mut st = self.state();
        let before = st.ready.len();
        st.ready.retain(|w| w.id != *id);
        before != st.ready.len()
    }
}

impl<R: Runtime, A: Agent, S: Store> Manager<R, A, S> {
    /// Containers in the warm pool: `(ready, starting)`.
    pub fn pool_size(&self) -> (usize, usize) {
        self.inner.pool.len()
    }

    /// Starts pool containers, one at a time, until the pool holds
    /// `warm_pool` of them; stops at the first failure (the refill loop
    /// tries again later). Returns how many it started.
    pub async fn refill_pool(&self) -> usize {
        let inner = &self.inner;
        let mut started = 0;
        loop {
            let (ready, starting) = inner.pool.len();
            if ready + starting >= inner.config.warm_pool {
                return started;
            }
            let id = SessionId::generate();
            let spec = SessionSpec {
                id: id.clone(),
                image: inner.config.image.clone(),
                limits: inner.config.limits.default,
                agent_token: Token::generate(),
                pooled: true,
            };
            inner.pool.starting(&id);
            let warm = match inner.runtime.create_running(&spec).await {
                Ok(placement) => {
                    let ep = AgentEndpoint {
                        base_url: placement.agent_url.clone(),
                        token: spec.agent_token.clone(),
                    };
                    let deadline = Instant::now() + inner.config.agent_ready_timeout;
                    let healthy = loop {
                        match inner.agent.health(&ep).await {
                            Ok(_) => break true,
                            Err(_) if Instant::now() >= deadline => break false,
                            Err(_) => tokio::time::sleep(HEALTH_POLL).await,
                        }
                    };
                    healthy.then(|| Warm {
                        id: id.clone(),
                        agent_token: spec.agent_token.clone(),
                        placement,
                        limits: spec.limits,
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "starting a warm pool container");
                    None
                }
            };
            let ok = warm.is_some();
            inner.pool.started(&id, warm);
            if !ok {
                if let Err(e) = inner.runtime.remove(&id).await {
                    tracing::warn!(error = %e, "removing a failed warm pool container");
                }
                return started;
            }
            started += 1;
        }
    }

    /// Removes every ready pool container (shutdown).
    pub async fn drain_pool(&self) {
        while let Some(w) = self.inner.pool.take_any() {
            if let Err(e) = self.inner.runtime.remove(&w.id).await {
                tracing::warn!(error = %e, "removing a warm pool container");
            }
        }
    }

    /// Waits until a claim asks for a refill, or `max` passes.
    pub async fn pool_claimed(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.inner.pool.claimed.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warm(limits: SessionLimits) -> Warm {
        Warm {
            id: SessionId::generate(),
            agent_token: Token::generate(),
            placement: Placement {
                container_id: "c".into(),
                agent_url: "http://10.0.0.2:7700".into(),
                gateway_url: "http://10.0.0.1:8081".into(),
            },
            limits,
        }
    }

    fn limits(mem: u64) -> SessionLimits {
        SessionLimits {
            memory_bytes: mem,
            cpu: 1.0,
            timeout_secs: 60,
            egress: Default::default(),
            idle_timeout_secs: None,
        }
    }

    #[test]
    fn claims_match_limits_and_never_repeat() {
        let pool = WarmPool::default();
        let a = warm(limits(1));
        let b = warm(limits(1));
        for w in [&a, &b] {
            pool.starting(&w.id);
            assert!(pool.owns(&w.id));
            pool.started(&w.id, Some(w.clone()));
        }
        assert_eq!(pool.len(), (2, 0));
        assert!(pool.claim(&limits(2)).is_none(), "other limits start cold");
        // The idle timeout is the session's, not the container's.
        let first = pool
            .claim(&SessionLimits {
                idle_timeout_secs: Some(120),
                ..limits(1)
            })
            .unwrap();
        let second = pool.claim(&limits(1)).unwrap();
        assert_ne!(first.id, second.id);
        assert!(pool.claim(&limits(1)).is_none());
        assert!(pool.owns(&a.id), "claimed, not yet recorded");
        pool.settled(&a.id);
        assert!(!pool.owns(&a.id));
    }

    #[test]
    fn concurrent_claims_get_distinct_containers() {
        let pool = std::sync::Arc::new(WarmPool::default());
        for _ in 0..50 {
            let w = warm(limits(1));
            pool.started(&w.id.clone(), Some(w));
        }
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(w) = pool.claim(&limits(1)) {
                        got.push(w.id);
                    }
                    got
                })
            })
            .collect();
        let mut all: Vec<SessionId> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(all.len(), 50);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 50, "no container claimed twice");
    }

    #[test]
    fn a_dead_container_leaves_the_pool() {
        let pool = WarmPool::default();
        let w = warm(limits(1));
        pool.started(&w.id, Some(w.clone()));
        assert!(pool.forget(&w.id));
        assert!(!pool.forget(&w.id));
        assert!(pool.claim(&limits(1)).is_none());
    }
}
