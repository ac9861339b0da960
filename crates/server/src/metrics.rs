//! Prometheus text exposition (format 0.0.4) of the orchestrator, written
//! by hand: sessions by state, warm pool size, spawn and command latency
//! histograms,
//! per-session resource gauges, lifecycle counters, and the gateway's
//! allow/deny counts.

use crate::AppManager;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use cc_core::metrics::{CoreMetrics, HistogramSnapshot};
use cc_core::{ResourceUsage, Runtime, Store};
use cc_wire::api::SessionState;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Longest wait for one container's stats while rendering.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

const STATES: &[SessionState] = &[
    SessionState::Creating,
    SessionState::Starting,
    SessionState::Cloning,
    SessionState::Ready,
    SessionState::Busy,
    SessionState::Sleeping,
    SessionState::Terminating,
];

/// Gateway decisions, by relay (`anthropic`, `git`, the `egress` proxy)
/// and outcome.
#[derive(Debug, Default)]
pub struct GatewayCounters {
    pub anthropic_allowed: AtomicU64,
    pub anthropic_denied: AtomicU64,
    pub git_allowed: AtomicU64,
    pub git_denied: AtomicU64,
    pub egress_allowed: AtomicU64,
    pub egress_denied: AtomicU64,
}

/// Marks a gateway answer that refuses the request although its status is
/// a success (a push refused in git's own `report-status`).
#[derive(Debug, Clone, Copy)]
pub struct Refused;

/// Process-wide: the gateway router is built apart from the API.
pub static GATEWAY: GatewayCounters = GatewayCounters {
    anthropic_allowed: AtomicU64::new(0),
    anthropic_denied: AtomicU64::new(0),
    git_allowed: AtomicU64::new(0),
    git_denied: AtomicU64::new(0),
    egress_allowed: AtomicU64::new(0),
    egress_denied: AtomicU64::new(0),
};

/// Gateway middleware: a request the gateway refused (401, 403, 407, or an
/// answer marked [`Refused`]) is a deny, anything else that reached a relay
/// or the egress proxy an allow.
pub async fn count_gateway(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let relay = if req.method() == axum::http::Method::CONNECT {
        Some((&GATEWAY.egress_allowed, &GATEWAY.egress_denied))
    } else if path.starts_with("/anthropic/") {
        Some((&GATEWAY.anthropic_allowed, &GATEWAY.anthropic_denied))
    } else if path.starts_with("/git/") {
        Some((&GATEWAY.git_allowed, &GATEWAY.git_denied))
    } else {
        None
    };
    let resp = next.run(req).await;
    if let Some((allowed, denied)) = relay {
        let refused = resp.extensions().get::<Refused>().is_some();
        let c = match resp.status() {
            StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::PROXY_AUTHENTICATION_REQUIRED => denied,
            _ if refused => denied,
            _ => allowed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
    resp
}

/// Renders every metric.
pub async fn render<R: Runtime, S: Store>(manager: &AppManager<R, S>) -> String {
    let mut out = String::new();
    let live = manager.live_records();

    family(
        &mut out,
        "claudecluster_sessions",
        "gauge",
        "Live sessions by state.",
    );
    // Nobody runs a sleeping session: the store counts them.
    let sleeping = manager.sleeping_count().await.unwrap_or(0);
    for state in STATES {
        let n = match state {
            SessionState::Sleeping => sleeping,
            _ => live.iter().filter(|r| r.state == *state).count(),
        };
        let _ = writeln!(
            out,
            "claudecluster_sessions{{state=\"{}\"}} {n}",
            state.as_str()
        );
    }

    let (ready, starting) = manager.pool_size();
    family(
        &mut out,
        "claudecluster_warm_pool",
        "gauge",
        "Warm pool containers, ready or starting.",
    );
    let _ = writeln!(out, "claudecluster_warm_pool{{state=\"ready\"}} {ready}");
    let _ = writeln!(
        out,
        "claudecluster_warm_pool{{state=\"starting\"}} {starting}"
    );

    let m = manager.metrics();
    histogram(
        &mut out,
        "claudecluster_session_spawn_seconds",
        "Create request to the session's first ready state.",
        &m.spawn_seconds.snapshot(),
    );
    histogram(
        &mut out,
        "claudecluster_command_seconds",
        "A command accepted to the end of its turn.",
        &m.command_seconds.snapshot(),
    );
    histogram(
        &mut out,
        "claudecluster_session_wake_seconds",
        "A sleeping session's wake to its ready state.",
        &m.wake_seconds.snapshot(),
    );
    for (name, help, v) in [
        (
            "claudecluster_sessions_reaped_total",
            "Sessions ended by their idle timeout or maximum lifetime.",
            &m.reaped_total,
        ),
        (
            "claudecluster_sessions_slept_total",
            "Sessions put to sleep (idle, or asked to).",
            &m.slept_total,
        ),
        (
            "claudecluster_sessions_woken_total",
            "Sleeping sessions woken.",
            &m.woken_total,
        ),
        (
            "claudecluster_session_container_failures_total",
            "Sessions failed because their container exited, was OOM-killed or vanished.",
            &m.container_failures_total,
        ),
        (
            "claudecluster_session_oom_kills_total",
            "Processes in sessions killed for exceeding the session's memory limit.",
            &m.oom_kills_total,
        ),
        (
            "claudecluster_session_workspace_limit_exceeded_total",
            "Sessions ended because their workspace outgrew its size limit.",
            &m.workspace_limit_exceeded_total,
        ),
        (
            "claudecluster_sessions_adopted_total",
            "Sessions adopted from a previous orchestrator.",
            &m.adopted_total,
        ),
        (
            "claudecluster_orphans_removed_total",
            "Resource sets of unknown or ended sessions removed.",
            &m.orphans_removed_total,
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", CoreMetrics::count(v));
    }

    family(
        &mut out,
        "claudecluster_gateway_requests_total",
        "counter",
        "Gateway requests by relay and decision.",
    );
    for (relay, decision, c) in [
        ("anthropic", "allow", &GATEWAY.anthropic_allowed),
        ("anthropic", "deny", &GATEWAY.anthropic_denied),
        ("git", "allow", &GATEWAY.git_allowed),
        ("git", "deny", &GATEWAY.git_denied),
        ("egress", "allow", &GATEWAY.egress_allowed),
        ("egress", "deny", &GATEWAY.egress_denied),
    ] {
        let _ = writeln!(
            out,
            "claudecluster_gateway_requests_total{{relay=\"{relay}\",decision=\"{decision}\"}} {}",
            c.load(Ordering::Relaxed)
        );
    }

    let samples = futures_util::future::join_all(live.iter().map(|r| async move {
        let id = r.id.to_string();
        let usage = match tokio::time::timeout(STATS_TIMEOUT, manager.usage(&id)).await {
            Ok(Ok(u)) => u,
            _ => None,
        };
        (id, usage)
    }))
    .await;
    // `None` (not measured) leaves a session out, as an empty sample does.
    let gauges: [(&str, &str, Reading); 7] = [
        (
            "claudecluster_session_cpu_percent",
            "CPU use of the session container (100 = one core).",
            |u| Some(u.cpu_percent),
        ),
        (
            "claudecluster_session_memory_bytes",
            "Memory use of the session container, page cache excluded.",
            |u| Some(u.memory_bytes as f64),
        ),
        (
            "claudecluster_session_memory_limit_bytes",
            "Memory limit of the session container.",
            |u| Some(u.memory_limit_bytes as f64),
        ),
        (
            "claudecluster_session_network_receive_bytes",
            "Bytes the session container received.",
            |u| Some(u.net_rx_bytes as f64),
        ),
        (
            "claudecluster_session_network_transmit_bytes",
            "Bytes the session container sent.",
            |u| Some(u.net_tx_bytes as f64),
        ),
        (
            "claudecluster_session_pids",
            "Processes in the session container.",
            |u| Some(u.pids as f64),
        ),
        (
            "claudecluster_session_workspace_bytes",
            "Bytes in the session's workspace at the last check.",
            |u| u.workspace_bytes.map(|b| b as f64),
        ),
    ];
    for (name, help, get) in gauges {
        family(&mut out, name, "gauge", help);
        for (id, usage) in &samples {
            if let Some(v) = usage.as_ref().and_then(get) {
                let _ = writeln!(out, "{name}{{session=\"{id}\"}} {v}");
            }
        }
    }
    out
}

/// One number out of a resource sample, if it has it.
type Reading = fn(&ResourceUsage) -> Option<f64>;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    family(out, name, "histogram", help);
    for (le, n) in &h.buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum_secs);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_core::metrics::Histogram;

    #[test]
    fn histogram_lines_are_well_formed() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(300));
        let mut out = String::new();
        histogram(&mut out, "x_seconds", "help", &h.snapshot());
        assert!(out.contains("# TYPE x_seconds histogram\n"));
        assert!(out.contains("x_seconds_bucket{le=\"0.25\"} 0\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.5\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(out.contains("x_seconds_count 1\n"));
    }
}
