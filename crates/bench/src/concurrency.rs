//! Concurrency: N sessions created at once, all ready, then all running a
//! turn at once; errors counted, the orchestrator's CPU and memory, and
//! each session container's memory idle and during its turn.
//!
//! The orchestrator runs inside the bench process, so its CPU and RSS are
//! read from `/proc/self` — they include the bench's own HTTP and WebSocket
//! clients (a small share next to the orchestrator's work). Container
//! memory is read from each container's cgroup (page cache excluded).

use crate::session::{delete, ready_session, run_turn, ReadySession};
use crate::stats::Summary;
use crate::system::{container_memory, proc_self, ProcSample};
use cc_testkit::Harness;
use futures_util::future::join_all;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyResult {
    pub sessions: usize,
    pub ready: usize,
    pub turns_ok: usize,
    pub errors: usize,
    pub error_samples: Vec<String>,
    /// Create of all → the last `ready`.
    pub all_ready_secs: f64,
    /// Each session's create → ready while all start together.
    pub ready_latency_ms: Option<Summary>,
    /// All commands sent → the last turn done.
    pub all_turns_secs: f64,
    pub turn_latency_ms: Option<Summary>,
    pub orchestrator: OrchestratorUse,
    /// Per session container, MiB.
    pub memory_idle_mib: Option<Summary>,
    pub memory_turn_peak_mib: Option<Summary>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrchestratorUse {
    pub before: Option<ProcSample>,
    pub after: Option<ProcSample>,
    /// CPU seconds over the phase's wall seconds: cores used on average.
    pub avg_cores: Option<f64>,
    pub cpu_secs: Option<f64>,
    pub wall_secs: f64,
    pub note: String,
}

/// How often container memory is sampled during the turns.
const MEMORY_SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// A turn long enough that all sessions are mid-turn at once.
const TURN: &str = "slow: 3000 concurrent sessions all working on a turn at the same time";

/// Creates `n` sessions at once and waits for each to be ready: the ready
/// ones, the errors, and the seconds until the last was ready.
async fn start_all(h: &Harness, repo_url: &str, n: usize) -> (Vec<ReadySession>, Vec<String>, f64) {
    let started = Instant::now();
    let results = join_all((0..n).map(|_| ready_session(h, repo_url))).await;
    let all_ready_secs = started.elapsed().as_secs_f64();
    let mut sessions = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(s) => sessions.push(s),
            Err(e) => errors.push(e),
        }
    }
    (sessions, errors, all_ready_secs)
}

/// Deletes the sessions; the failures.
async fn delete_all(h: &Harness, sessions: Vec<ReadySession>) -> Vec<String> {
    join_all(sessions.into_iter().map(|s| async move {
        s.ws.close().await;
        delete(&h.client, &s.id).await
    }))
    .await
    .into_iter()
    .filter_map(Result::err)
    .collect()
}

/// A burst from a warm pool sized for it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PooledBurstResult {
    pub sessions: usize,
    pub ready: usize,
    pub errors: usize,
    pub error_samples: Vec<String>,
    /// The pool's refill from empty to `sessions` warm containers.
    pub pool_fill_secs: Option<f64>,
    /// Create of all → the last `ready`.
    pub all_ready_secs: f64,
    pub ready_latency_ms: Option<Summary>,
}

/// Most a warm container may take to join the pool while it fills.
const POOL_FILL_PER_CONTAINER: Duration = Duration::from_secs(3);

/// `n` sessions created at once from a warm pool of `n` (an orchestrator
/// of its own, `--warm-pool n`), after the pool has filled.
pub async fn measure_pooled(n: usize) -> PooledBurstResult {
    let mut errors = Vec::new();
    let mut result = PooledBurstResult {
        sessions: n,
        ready: 0,
        errors: 0,
        error_samples: Vec::new(),
        pool_fill_secs: None,
        all_ready_secs: 0.0,
        ready_latency_ms: None,
    };
    let opts = cc_testkit::harness::HarnessOptions {
        max_streams_per_user: Some(n + 16),
        ..Default::default()
    };
    let h = match Harness::start_configured(opts, |c| c.warm_pool = n).await {
        Ok(h) => h,
        Err(e) => {
            result.errors = 1;
            result.error_samples.push(format!("starting: {e:#}"));
            return result;
        }
    };
    let repo = match h.git.create_repo("burst", &[("README.md", "# burst\n")]) {
        Ok(r) => r,
        Err(e) => {
            result.errors = 1;
            result.error_samples.push(format!("repository: {e:#}"));
            h.shutdown().await;
            return result;
        }
    };
    let fill = Instant::now();
    let deadline = fill + POOL_FILL_PER_CONTAINER * n as u32 + Duration::from_secs(60);
    while h.manager.pool_size().0 < n {
        if Instant::now() >= deadline {
            errors.push(format!(
                "the pool held {} of {n} warm containers after {:.0} s",
                h.manager.pool_size().0,
                fill.elapsed().as_secs_f64()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    result.pool_fill_secs = Some(fill.elapsed().as_secs_f64());
    let (sessions, failed, all_ready_secs) = start_all(&h, &repo, n).await;
    errors.extend(failed);
    result.ready = sessions.len();
    result.all_ready_secs = all_ready_secs;
    result.ready_latency_ms =
        Summary::of(&sessions.iter().map(|s| s.ready_after).collect::<Vec<_>>());
    errors.extend(delete_all(&h, sessions).await);
    h.manager.drain_pool().await;
    h.shutdown().await;
    result.errors = errors.len();
    result.error_samples = errors.into_iter().take(5).collect();
    result
}

pub async fn measure(h: &Harness, repo_url: &str, n: usize) -> ConcurrencyResult {
    let before = proc_self();
    let phase = Instant::now();
    let (mut sessions, mut errors, all_ready_secs) = start_all(h, repo_url, n).await;
    let ready_latency = Summary::of(&sessions.iter().map(|s| s.ready_after).collect::<Vec<_>>());
    let containers: Vec<String> = sessions.iter().map(|s| s.container_id.clone()).collect();
    let idle: Vec<f64> = containers
        .iter()
        .filter_map(|c| container_memory(c))
        .map(mib)
        .collect();

    // All turns at once, container memory sampled until they are done.
    let peaks: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = {
        let peaks = Arc::clone(&peaks);
        let containers = containers.clone();
        tokio::spawn(async move {
            loop {
                for c in &containers {
                    if let Some(m) = container_memory(c) {
                        let mut p = peaks.lock().unwrap_or_else(|e| e.into_inner());
                        let e = p.entry(c.clone()).or_default();
                        *e = (*e).max(m);
                    }
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(MEMORY_SAMPLE_EVERY) => {}
                }
            }
        })
    };
    let turns_started = Instant::now();
    let turns = join_all(sessions.iter_mut().map(|s| run_turn(&mut s.ws, TURN))).await;
    let all_turns_secs = turns_started.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = sampler.await;
    let mut turn_times = Vec::new();
    let mut turns_ok = 0;
    for t in turns {
        match t {
            Ok(t) if !t.failed => {
                turns_ok += 1;
                turn_times.push(t.total);
            }
            Ok(_) => errors.push("a turn ended in an error".into()),
            Err(e) => errors.push(e),
        }
    }
    let after = proc_self();
    let wall_secs = phase.elapsed().as_secs_f64();

    let peak: Vec<f64> = peaks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .map(|b| mib(*b))
        .collect();
    let ready = sessions.len();
    errors.extend(delete_all(h, sessions).await);

    let cpu_secs = match (before, after) {
        (Some(b), Some(a)) => Some(a.cpu_secs - b.cpu_secs),
        _ => None,
    };
    ConcurrencyResult {
        sessions: n,
        ready,
        turns_ok,
        errors: errors.len(),
        error_samples: errors.into_iter().take(5).collect(),
        all_ready_secs,
        ready_latency_ms: ready_latency,
        all_turns_secs,
        turn_latency_ms: Summary::of(&turn_times),
        orchestrator: OrchestratorUse {
            before,
            after,
            avg_cores: cpu_secs.map(|c| c / wall_secs),
            cpu_secs,
            wall_secs,
            note: "in-process orchestrator: /proc/self, bench clients included".into(),
        },
        memory_idle_mib: Summary::of_values(&idle),
        memory_turn_peak_mib: Summary::of_values(&peak),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
