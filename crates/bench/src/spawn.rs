//! Spawn: create → first `status ready` on the WebSocket, cold, one
//! session at a time; beside the baseline of `docker run` of the same image
//! on a throwaway network to sessiond's first healthy answer.
//!
//! The two are not the same work, and that is the point: the baseline is
//! what a user gets from Docker alone (a running daemon, no repository, no
//! Claude Code configured); ours adds the session's network, volume and
//! firewall rules, the hardened container, sessiond's `init`, the clone
//! through the git relay and the store writes.

use crate::session::{delete, ready_session};
use crate::stats::Summary;
use crate::system::docker;
use cc_runtime_docker::image::SESSIOND_PORT;
use cc_runtime_docker::LABEL_PREFIX;
use cc_testkit::Harness;
use cc_wire::api::SessionState;
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpawnResult {
    pub cold_ms: Option<Summary>,
    /// Create sent → each state's timestamp (`starting`, `cloning`,
    /// `ready`): where the cold start's time goes.
    pub stages_ms: Vec<(String, Summary)>,
    /// `None`: this build has no warm pool to measure.
    pub warm_ms: Option<Summary>,
    pub warm_note: String,
    pub docker_run_ms: Option<Summary>,
    /// Our p50 over the baseline's p50.
    pub ratio_p50: Option<f64>,
    pub errors: Vec<String>,
}

pub async fn measure(h: &Harness, repo_url: &str, image: &str, n: usize) -> SpawnResult {
    let mut errors = Vec::new();
    let mut cold = Vec::new();
    let mut stages: Vec<(SessionState, Vec<Duration>)> = Vec::new();
    for _ in 0..n {
        match ready_session(h, repo_url).await {
            Ok(s) => {
                cold.push(s.ready_after);
                for (state, at) in &s.stages {
                    match stages.iter_mut().find(|(st, _)| st == state) {
                        Some((_, v)) => v.push(*at),
                        None => stages.push((*state, vec![*at])),
                    }
                }
                s.ws.close().await;
                if let Err(e) = delete(&h.client, &s.id).await {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    let baseline = match docker_run_baseline(&h.docker.prefix, image, n).await {
        Ok(b) => b,
        Err(e) => {
            errors.push(format!("docker run baseline: {e}"));
            Vec::new()
        }
    };
    let cold = Summary::of(&cold);
    let docker_run = Summary::of(&baseline);
    SpawnResult {
        ratio_p50: ratio(cold.as_ref(), docker_run.as_ref()),
        cold_ms: cold,
        stages_ms: stages
            .iter()
            .filter_map(|(st, v)| Some((st.as_str().to_owned(), Summary::of(v)?)))
            .collect(),
        warm_ms: None,
        warm_note: "not measured".into(),
        docker_run_ms: docker_run,
        errors,
    }
}

/// How long the pool gets to start a container between two claims.
const POOL_FILL_DEADLINE: Duration = Duration::from_secs(120);

/// Create → ready from a warm pool of one: before each create the pool
/// holds a started container, which the session claims. Fills in the
/// `warm_*` fields of `result`.
pub async fn measure_warm(h: &Harness, repo_url: &str, n: usize, result: &mut SpawnResult) {
    let mut warm = Vec::new();
    for _ in 0..n {
        let deadline = Instant::now() + POOL_FILL_DEADLINE;
        while h.manager.pool_size().0 < 1 {
            if Instant::now() >= deadline {
                result
                    .errors
                    .push("warm: the pool did not fill in time".into());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match ready_session(h, repo_url).await {
            Ok(s) => {
                warm.push(s.ready_after);
                s.ws.close().await;
                if let Err(e) = delete(&h.client, &s.id).await {
                    result.errors.push(e);
                }
            }
            Err(e) => result.errors.push(format!("warm: {e}")),
        }
    }
    result.warm_ms = Summary::of(&warm);
    result.warm_note.clear();
}

pub fn ratio(ours: Option<&Summary>, base: Option<&Summary>) -> Option<f64> {
    match (ours, base) {
        (Some(o), Some(b)) if b.p50 > 0.0 => Some(o.p50 / b.p50),
        _ => None,
    }
}

/// How often the baseline polls sessiond's health: fine enough not to add
/// noticeable time to a ~1 s start.
const POLL_EVERY: Duration = Duration::from_millis(10);
const HEALTH_DEADLINE: Duration = Duration::from_secs(120);

/// `docker run -d` of the image on a network made for it, then
/// `GET /v1/health` until 200; `n` times, each container removed after.
async fn docker_run_baseline(prefix: &str, image: &str, n: usize) -> Result<Vec<Duration>, String> {
    let label = format!("{LABEL_PREFIX}={prefix}");
    let net = format!("{prefix}bench-baseline");
    docker(&["network", "create", "--label", &label, &net]).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut result = Ok(());
    for i in 0..n {
        let name = format!("{prefix}bench-baseline-{i}");
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &label,
            "--network",
            &net,
        ];
        // The same OCI runtime as the sessions (gVisor with
        // `--container-runtime runsc`).
        let runtime = cc_testkit::harness::container_runtime();
        if let Some(r) = &runtime {
            args.extend(["--runtime", r]);
        }
        args.extend(["-e", "SESSIOND_TOKEN=x", image]);
        let started = Instant::now();
        let run = docker(&args).await;
        let step = match run {
            Ok(_) => wait_healthy(&http, &name, started).await,
            Err(e) => Err(e),
        };
        let _ = docker(&["rm", "-f", "-v", &name]).await;
        match step {
            Ok(d) => out.push(d),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let _ = docker(&["network", "rm", &net]).await;
    result.map(|()| out)
}

async fn wait_healthy(
    http: &reqwest::Client,
    name: &str,
    started: Instant,
) -> Result<Duration, String> {
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        name,
    ])
    .await?;
    if ip.is_empty() {
        return Err(format!("{name} has no address"));
    }
    let url = format!("http://{ip}:{SESSIOND_PORT}/v1/health");
    loop {
        let ok = http
            .get(&url)
            .bearer_auth("x")
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(started.elapsed());
        }
        if started.elapsed() > HEALTH_DEADLINE {
            return Err(format!("{name} not healthy after {HEALTH_DEADLINE:?}"));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
