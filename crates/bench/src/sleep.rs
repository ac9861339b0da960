//! Sleep and wake: `n` ready sessions, each put to sleep (`POST sleep` →
//! its answer: the container is gone), woken (`POST wake` → `ready` on the
//! stream: a new container on the same workspace, Claude Code resumed) and
//! forked once (`POST fork` → the fork's `ready`: a copied workspace
//! instead of a clone), beside the cold create → ready the same sessions
//! took in this run.
//! Also what they hold: the memory of their containers awake (cgroups) and
//! asleep (containers left: none, so none), the disk a sleeping session
//! keeps (its workspace volume) and what one check of every workspace
//! against `--workspace-size` takes (the runtime's measurement).
//!
//! Sleep needs sealed secrets, so the phase runs its own orchestrator.

use crate::session::{anyhow_err, delete, err, ready_session};
use crate::stats::Summary;
use cc_testkit::harness::{until_ready, HarnessOptions};
use cc_testkit::Harness;
use cc_wire::api::SessionState;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Longest wait for a woken session's `ready`.
const WAKE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SleepResult {
    pub sessions: usize,
    /// `POST sleep` sent → answered (asleep, container removed).
    pub sleep_ms: Option<Summary>,
    /// `POST wake` sent → the stream's `ready`.
    pub wake_ms: Option<Summary>,
    /// The same sessions' create → ready (the baseline a wake, or a fork,
    /// replaces).
    pub create_ms: Option<Summary>,
    /// `POST fork` (one fork of a ready session) → the fork's `ready`.
    pub fork_ms: Option<Summary>,
    /// Their containers' memory, summed, while awake and idle.
    pub awake_memory_bytes: Option<u64>,
    /// Containers of theirs that still ran while they slept.
    pub containers_asleep: usize,
    /// Disk each sleeping session keeps (its workspace volume).
    pub workspace_bytes: Option<Summary>,
    /// One measurement of every workspace on the Engine (what each
    /// `--workspace-check-interval` costs), with these sessions asleep.
    pub workspace_check_ms: Option<Summary>,
    pub errors: Vec<String>,
}

pub async fn measure(n: usize) -> SleepResult {
    let mut r = SleepResult {
        sessions: n,
        sleep_ms: None,
        wake_ms: None,
        create_ms: None,
        fork_ms: None,
        awake_memory_bytes: None,
        containers_asleep: 0,
        workspace_bytes: None,
        workspace_check_ms: None,
        errors: Vec::new(),
    };
    let h = match Harness::start_configured(
        HarnessOptions {
            upstream: None,
            api_key: None,
            ..Default::default()
        },
        |c| c.seal_key = Some(cc_core::secrets::SealKey::generate()),
    )
    .await
    {
        Ok(h) => h,
        Err(e) => {
            r.errors.push(format!("starting: {}", anyhow_err(e)));
            return r;
        }
    };
    if let Err(e) = run(&h, n, &mut r).await {
        r.errors.push(e);
    }
    h.shutdown().await;
    r
}

async fn run(h: &Harness, n: usize, r: &mut SleepResult) -> Result<(), String> {
    let repo = h
        .git
        .create_repo("sleep", &[("README.md", "# sleep\n")])
        .map_err(anyhow_err)?;
    let mut ids = Vec::new();
    let mut creates = Vec::new();
    let mut memory = Some(0u64);
    for _ in 0..n {
        let s = ready_session(h, &repo).await?;
        creates.push(s.ready_after);
        memory = memory
            .zip(crate::system::container_memory(&s.container_id))
            .map(|(a, b)| a + b);
        ids.push(s.id);
    }
    r.create_ms = Summary::of(&creates);
    r.awake_memory_bytes = memory;

    let mut sleeps = Vec::new();
    for id in &ids {
        let t = Instant::now();
        let st = h.client.sleep(id).await.map_err(err)?;
        sleeps.push(t.elapsed());
        if st.state != SessionState::Sleeping {
            return Err(format!("session {id} is {} after sleep", st.state.as_str()));
        }
        let name = format!("{}{id}", h.docker.prefix);
        if crate::system::docker(&["inspect", &name]).await.is_ok() {
            r.containers_asleep += 1;
        }
    }
    r.sleep_ms = Summary::of(&sleeps);
    // What the orchestrator's workspace check does, timed: the Engine
    // measures every volume (as root).
    let runtime = cc_runtime_docker::DockerRuntime::connect(h.docker.prefix.clone())
        .await
        .map_err(|e| e.to_string())?;
    let (mut checks, mut disk) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        let sizes = cc_core::Runtime::workspace_sizes(&runtime)
            .await
            .map_err(|e| format!("measuring workspaces: {e}"))?
            .unwrap_or_default();
        checks.push(t.elapsed());
        disk = ids
            .iter()
            .filter_map(|id| cc_core::SessionId::parse(id).and_then(|id| sizes.get(&id).copied()))
            .map(|b| b as f64)
            .collect();
    }
    r.workspace_check_ms = Summary::of(&checks);
    r.workspace_bytes = Summary::of_values(&disk);

    let mut wakes = Vec::new();
    for id in &ids {
        let last = h.client.status(id).await.map_err(err)?.last_seq;
        let mut ws = h.client.stream(id, last).await.map_err(err)?;
        let t = Instant::now();
        h.client.wake(id).await.map_err(err)?;
        until_ready(&mut ws, WAKE_TIMEOUT)
            .await
            .map_err(|e| format!("session {id} did not wake: {e:#}"))?;
        wakes.push(t.elapsed());
    }
    r.wake_ms = Summary::of(&wakes);

    let mut forks = Vec::new();
    for id in &ids {
        let t = Instant::now();
        let req = cc_wire::api::ForkRequest::default();
        let forked = h.client.fork(id, &req).await.map_err(err)?;
        let fork = &forked.sessions[0].session_id;
        let mut ws = h.client.stream(fork, 0).await.map_err(err)?;
        until_ready(&mut ws, WAKE_TIMEOUT)
            .await
            .map_err(|e| format!("the fork {fork} of {id} did not start: {e:#}"))?;
        forks.push(t.elapsed());
        delete(&h.client, fork).await?;
    }
    r.fork_ms = Summary::of(&forks);
    for id in &ids {
        delete(&h.client, id).await?;
    }
    Ok(())
}
