//! A stateful, in-memory [`Runtime`]: containers that "run" until a test
//! stops them, with the exits and OOM kills a real runtime reports. It
//! starts nothing, so the core's lifecycle can be driven in-process; it
//! passes the same conformance suite as Docker ([`crate::conformance`]).

use crate::conformance::RuntimeDriver;
use cc_core::{
    ContainerStatus, Placement, ResourceUsage, Runtime, RuntimeError, RuntimeEvent,
    RuntimeEventKind, RuntimeEventStream, SessionId, SessionSpec, Started,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

/// Events buffered for a slow subscriber before it starts missing some
/// (a real runtime's feed drops too; the core re-checks live containers).
const EVENT_BUFFER: usize = 256;

#[derive(Debug, Clone)]
struct Container {
    id: String,
    limits: cc_wire::api::SessionLimits,
    running: bool,
    /// Waiting for its place (see [`FakeRuntime::hold_starts`]).
    pending: bool,
    /// Why it cannot start, once a test said so.
    refusal: Option<String>,
    exit_code: Option<i64>,
    oom_killed: bool,
}

#[derive(Clone)]
pub struct FakeRuntime {
    containers: Arc<Mutex<HashMap<SessionId, Container>>>,
    /// Sessions whose workspace exists (kept by [`Runtime::suspend`]),
    /// with the bytes it holds ([`FakeRuntime::fill_workspace`]).
    workspaces: Arc<Mutex<HashMap<SessionId, u64>>>,
    /// Bumped on every change a waiter may be waiting for.
    changed: Arc<watch::Sender<u64>>,
    hold: Arc<std::sync::atomic::AtomicBool>,
    events: broadcast::Sender<RuntimeEvent>,
    agent_url: String,
    gateway_url: String,
}

impl FakeRuntime {
    /// Every session's sessiond is said to be at `agent_url` (a fake
    /// sessiond, or an address nothing answers on), and the gateway at
    /// `gateway_url`.
    pub fn new(agent_url: impl Into<String>, gateway_url: impl Into<String>) -> Self {
        Self {
            containers: Arc::default(),
            workspaces: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
            hold: Arc::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
            agent_url: agent_url.into(),
            gateway_url: gateway_url.into(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<SessionId, Container>) -> T) -> T {
        f(&mut self.containers.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Like [`Self::with`] for a change a waiter may be waiting for.
    fn change<T>(&self, f: impl FnOnce(&mut HashMap<SessionId, Container>) -> T) -> T {
        let out = self.with(f);
        self.changed.send_modify(|n| *n += 1);
        out
    }

    /// From now on (`true`), created containers wait for their place, as
    /// a Pod waits for a node or its image, until [`Self::place`] or
    /// [`Self::refuse_start`].
    pub fn hold_starts(&self, hold: bool) {
        self.hold.store(hold, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the session's container is waiting for its place.
    pub fn is_pending(&self, id: &SessionId) -> bool {
        self.with(|m| m.get(id).is_some_and(|c| c.pending))
    }

    /// The pending container runs.
    pub fn place(&self, id: &SessionId) {
        self.change(|m| {
            if let Some(c) = m.get_mut(id).filter(|c| c.pending) {
                c.pending = false;
                c.running = true;
            }
        });
    }

    /// The pending container cannot run, for `reason` (a scheduler's).
    pub fn refuse_start(&self, id: &SessionId, reason: &str) {
        self.change(|m| {
            if let Some(c) = m.get_mut(id).filter(|c| c.pending) {
                c.refusal = Some(reason.to_owned());
            }
        });
    }

    fn placement(&self, c: &Container) -> Placement {
        Placement {
            container_id: c.id.clone(),
            agent_url: self.agent_url.clone(),
            gateway_url: self.gateway_url.clone(),
        }
    }

    /// The container's main process ends with `code` (`oom`: killed by the
    /// kernel for memory); the exit is reported as an event.
    pub fn exit(&self, id: &SessionId, code: i64, oom: bool) {
        let stopped = self.change(|m| match m.get_mut(id) {
            Some(c) if c.running => {
                c.running = false;
                c.exit_code = Some(code);
                c.oom_killed = oom;
                true
            }
            _ => false,
        });
        if stopped {
            if oom {
                self.send(id, RuntimeEventKind::OomKill);
            }
            self.send(
                id,
                RuntimeEventKind::Exited {
                    code: Some(code),
                    oom,
                },
            );
        }
    }

    /// A process in the container is killed for memory; the container
    /// lives on.
    pub fn oom_kill_child(&self, id: &SessionId) {
        if self.with(|m| m.get(id).is_some_and(|c| c.running)) {
            self.send(id, RuntimeEventKind::OomKill);
        }
    }

    /// The container vanishes without an event (deleted behind our back).
    pub fn vanish(&self, id: &SessionId) {
        self.change(|m| m.remove(id));
    }

    /// Whether the session's workspace exists.
    pub fn has_workspace(&self, id: &SessionId) -> bool {
        self.workspaces().contains_key(id)
    }

    /// The session's workspace now holds `bytes` (as if its tools wrote
    /// them); nothing when it has none.
    pub fn fill_workspace(&self, id: &SessionId, bytes: u64) {
        if let Some(b) = self.workspaces().get_mut(id) {
            *b = bytes;
        }
    }

    fn workspaces(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, u64>> {
        self.workspaces.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, id: &SessionId, kind: RuntimeEventKind) {
        // No subscriber is fine: nobody is watching.
        let _ = self.events.send(RuntimeEvent {
            session: id.clone(),
            kind,
        });
    }
}

impl Runtime for FakeRuntime {
    async fn create(&self, spec: &SessionSpec) -> Result<Started, RuntimeError> {
        if spec.image.is_empty() {
            return Err(RuntimeError::Invalid("no image named".into()));
        }
        let hold = self.hold.load(std::sync::atomic::Ordering::SeqCst);
        self.workspaces().entry(spec.id.clone()).or_insert(0);
        let c = self.with(|m| {
            m.entry(spec.id.clone())
                .or_insert_with(|| Container {
                    id: format!("fake-{}", spec.id),
                    limits: spec.limits,
                    running: !hold,
                    pending: hold,
                    refusal: None,
                    exit_code: None,
                    oom_killed: false,
                })
                .clone()
        });
        Ok(if c.pending {
            Started::Pending {
                container_id: c.id,
                gateway_url: self.gateway_url.clone(),
            }
        } else {
            Started::Running(self.placement(&c))
        })
    }

    async fn wait_running(&self, id: &SessionId) -> Result<Placement, RuntimeError> {
        let mut changed = self.changed.subscribe();
        loop {
            let c = self.with(|m| m.get(id).cloned());
            match c {
                None => return Err(RuntimeError::NotFound("no such container".into())),
                Some(c) if c.running => return Ok(self.placement(&c)),
                Some(Container {
                    refusal: Some(why), ..
                }) => return Err(RuntimeError::Invalid(why)),
                Some(c) if !c.pending => {
                    return Err(RuntimeError::Invalid("the container ended".into()))
                }
                Some(_) => {}
            }
            if changed.changed().await.is_err() {
                return Err(RuntimeError::Unavailable("the runtime went away".into()));
            }
        }
    }

    async fn remove(&self, id: &SessionId) -> Result<(), RuntimeError> {
        self.change(|m| m.remove(id));
        self.workspaces().remove(id);
        Ok(())
    }

    fn can_suspend(&self) -> bool {
        true
    }

    async fn suspend(&self, id: &SessionId) -> Result<(), RuntimeError> {
        self.change(|m| m.remove(id));
        Ok(())
    }

    async fn copy_workspace(&self, from: &SessionId, to: &SessionSpec) -> Result<(), RuntimeError> {
        let mut w = self.workspaces();
        let Some(&bytes) = w.get(from) else {
            return Err(RuntimeError::NotFound(format!("no workspace of {from}")));
        };
        w.insert(to.id.clone(), bytes);
        Ok(())
    }

    async fn inspect(&self, id: &SessionId) -> Result<Option<ContainerStatus>, RuntimeError> {
        Ok(self.with(|m| {
            m.get(id).map(|c| ContainerStatus {
                running: c.running,
                starting: c.pending && c.refusal.is_none(),
                exit_code: c.exit_code,
                oom_killed: c.oom_killed,
            })
        }))
    }

    async fn list(&self) -> Result<Vec<SessionId>, RuntimeError> {
        let mut ids: std::collections::HashSet<SessionId> =
            self.with(|m| m.keys().cloned().collect());
        ids.extend(self.workspaces().keys().cloned());
        Ok(ids.into_iter().collect())
    }

    async fn locate(&self, id: &SessionId) -> Result<Option<Placement>, RuntimeError> {
        let c = self.with(|m| m.get(id).filter(|c| c.running).cloned());
        Ok(c.map(|c| self.placement(&c)))
    }

    async fn events(&self) -> Result<RuntimeEventStream, RuntimeError> {
        let rx = self.events.subscribe();
        Ok(tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(|r| async move { r.ok().map(Ok) })
            .boxed())
    }

    async fn workspace_sizes(&self) -> Result<Option<HashMap<SessionId, u64>>, RuntimeError> {
        Ok(Some(self.workspaces().clone()))
    }

    async fn stats(&self, id: &SessionId) -> Result<Option<ResourceUsage>, RuntimeError> {
        Ok(self.with(|m| {
            m.get(id).filter(|c| c.running).map(|c| ResourceUsage {
                memory_limit_bytes: c.limits.memory_bytes,
                pids: 1,
                ..Default::default()
            })
        }))
    }
}

impl RuntimeDriver for FakeRuntime {
    async fn kill(&self, id: &SessionId) -> anyhow::Result<()> {
        self.exit(id, 137, false);
        Ok(())
    }

    async fn oom_kill_child(&self, id: &SessionId) -> anyhow::Result<()> {
        FakeRuntime::oom_kill_child(self, id);
        Ok(())
    }

    async fn write_to_workspace(&self, id: &SessionId, bytes: u64) -> anyhow::Result<()> {
        let before = self.workspaces().get(id).copied().unwrap_or(0);
        self.fill_workspace(id, before + bytes);
        Ok(())
    }
}
