//! Watching session containers: the Engine's event feed turned into our
//! [`RuntimeEvent`]s, and one-shot stats turned into [`ResourceUsage`].

use bollard::models::{ContainerStatsResponse, EventMessage};
use cc_core::{ResourceUsage, RuntimeEvent, RuntimeEventKind, SessionId, LABEL_SESSION};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What one Engine event says about a session container.
#[derive(Debug, PartialEq)]
pub(crate) enum Observed {
    /// `die`, with its exit code; the runtime asks the container whether
    /// the kernel's OOM killer ended it.
    Died(Option<i64>),
    /// `oom`: the kernel killed a process in the container's cgroup for
    /// exceeding the memory limit. The Engine sends it whether or not the
    /// main process survives (an OOM-killed container's `die` follows).
    Oom,
}

/// The session event of one Engine event, if it is one we care about.
pub(crate) fn observe(msg: &EventMessage) -> Option<(SessionId, Observed)> {
    let attrs = msg.actor.as_ref()?.attributes.as_ref()?;
    let session = SessionId::parse(attrs.get(LABEL_SESSION)?)?;
    match msg.action.as_deref()? {
        "die" => {
            let code = attrs.get("exitCode").and_then(|c| c.parse().ok());
            Some((session, Observed::Died(code)))
        }
        "oom" => Some((session, Observed::Oom)),
        _ => None,
    }
}

pub(crate) fn oom_kill(session: SessionId) -> RuntimeEvent {
    RuntimeEvent {
        session,
        kind: RuntimeEventKind::OomKill,
    }
}

pub(crate) fn exited(session: SessionId, code: Option<i64>, oom: bool) -> RuntimeEvent {
    RuntimeEvent {
        session,
        kind: RuntimeEventKind::Exited { code, oom },
    }
}

/// The previous `(container CPU ns, host CPU ns)` sample per session.
#[derive(Debug, Clone, Default)]
pub(crate) struct CpuSamples(Arc<Mutex<HashMap<SessionId, (u64, u64)>>>);

impl CpuSamples {
    /// Records `now` and returns the sample before it.
    fn swap(&self, id: &SessionId, now: (u64, u64)) -> Option<(u64, u64)> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(id.clone(), now)
    }

    pub(crate) fn forget(&self, id: &SessionId) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }
}

/// CPU share (100 = one core) between two samples, `docker stats` style.
fn cpu_percent(prev: (u64, u64), now: (u64, u64), cpus: u32) -> f64 {
    let used = now.0.saturating_sub(prev.0) as f64;
    let system = now.1.saturating_sub(prev.1) as f64;
    if used > 0.0 && system > 0.0 {
        used / system * f64::from(cpus.max(1)) * 100.0
    } else {
        0.0
    }
}

/// Our view of one one-shot stats sample: CPU against the previous call
/// for this session (0 on the first), memory without page cache as
/// `docker stats` shows it.
pub(crate) fn usage(
    s: &ContainerStatsResponse,
    id: &SessionId,
    prev: &CpuSamples,
) -> ResourceUsage {
    let cpu_percent = s
        .cpu_stats
        .as_ref()
        .and_then(|c| {
            let now = (c.cpu_usage.as_ref()?.total_usage?, c.system_cpu_usage?);
            let before = prev.swap(id, now)?;
            Some(cpu_percent(before, now, c.online_cpus.unwrap_or(1)))
        })
        .unwrap_or(0.0);
    let (memory_bytes, memory_limit_bytes) = s
        .memory_stats
        .as_ref()
        .map(|m| {
            let cache = m
                .stats
                .as_ref()
                .and_then(|st| st.get("inactive_file").or_else(|| st.get("cache")))
                .copied()
                .unwrap_or(0);
            (
                m.usage.unwrap_or(0).saturating_sub(cache),
                m.limit.unwrap_or(0),
            )
        })
        .unwrap_or((0, 0));
    let (net_rx_bytes, net_tx_bytes) = s
        .networks
        .iter()
        .flatten()
        .fold((0, 0), |(rx, tx), (_, n)| {
            (rx + n.rx_bytes.unwrap_or(0), tx + n.tx_bytes.unwrap_or(0))
        });
    ResourceUsage {
        cpu_percent,
        memory_bytes,
        memory_limit_bytes,
        net_rx_bytes,
        net_tx_bytes,
        pids: s.pids_stats.as_ref().and_then(|p| p.current).unwrap_or(0),
        workspace_bytes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;
    use std::collections::HashMap;

    fn event(action: &str, session: &str) -> EventMessage {
        EventMessage {
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some("abc".into()),
                attributes: Some(HashMap::from([
                    (LABEL_SESSION.to_owned(), session.to_owned()),
                    ("exitCode".to_owned(), "137".to_owned()),
                ])),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn cpu_share_between_samples() {
        // 0.5 s of container CPU over 2 s of host CPU on 4 cores: one core.
        let pct = cpu_percent((1_000, 10_000), (500_001_000, 2_000_010_000), 4);
        assert!((pct - 100.0).abs() < 1e-6, "{pct}");
        assert_eq!(cpu_percent((5, 5), (5, 5), 2), 0.0);
    }

    #[test]
    fn die_and_oom_events_of_sessions_count() {
        let id = SessionId::generate();
        assert_eq!(
            observe(&event("die", id.as_str())),
            Some((id.clone(), Observed::Died(Some(137))))
        );
        assert_eq!(
            observe(&event("oom", id.as_str())),
            Some((id.clone(), Observed::Oom))
        );
        assert_eq!(observe(&event("start", id.as_str())), None);
        assert_eq!(observe(&event("die", "not-a-session")), None);
    }
}
