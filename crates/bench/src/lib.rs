//! `cc-bench`: the benchmark engine behind `claudecluster bench`.
//!
//! It starts a whole ClaudeCluster on this machine with the testkit
//! [`Harness`] (the orchestrator in-process on real Docker, a model double
//! as the Anthropic upstream, a smart-HTTP git server) and drives it only
//! through the public API with the typed client, measuring each figure
//! beside the baseline a user would otherwise have:
//!
//! | phase | ours | baseline |
//! |---|---|---|
//! | [`spawn`] | create → first `status ready` | `docker run` → sessiond healthy |
//! | [`command`] | command → first `output` | Claude Code's stdin → first text delta |
//! | [`concurrency`] | N sessions at once: errors, CPU, memory | — |
//! | [`fanout`] | delivery lag to many watchers | — |
//! | [`api`] | `GET status` requests per second | — |
//! | [`push`] | `POST push` → response, creating and fast-forwarding the branch | `git push` from a host clone |
//! | [`sleep`] | `POST sleep` → asleep; `POST wake` → `ready`; `POST fork` → the fork's `ready`; memory awake and asleep | the same sessions' create → ready |
//! | [`replicas`] | two replicas on PostgreSQL: create → ready, command → first output, `kill -9` of the owner → served by the survivor | the same on SQLite (spawn, command) |
//! | [`kubernetes`] | on a cluster: create → ready, cold and from a warm Pod | a bare Pod of the same image → `Running` |
//!
//! plus quality figures: a RustSec scan of `Cargo.lock` ([`audit`]), the
//! worker image's size ([`image`]) and test coverage ([`coverage`]).
//!
//! Invariants: figures are printed, never asserted (the run fails only on
//! real errors: a session that does not start, a turn that errors, a
//! watcher that misses events); every Docker resource carries the run's
//! prefix and is removed at the end.

pub mod api;
pub mod audit;
pub mod command;
pub mod concurrency;
pub mod coverage;
pub mod fanout;
pub mod image;
pub mod kubernetes;
pub mod push;
pub mod replicas;
pub mod report;
pub mod serve;
pub mod session;
pub mod sleep;
pub mod spawn;
pub mod stats;
pub mod system;

pub use report::Report;

use cc_testkit::Harness;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The environment could not start (Docker, the image, listeners).
    #[error("cannot start the benchmark environment: {0}")]
    Setup(String),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What to measure and how much.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The worker image (a content tag, never a moving `:latest`).
    pub image: String,
    /// `quick` or `full`.
    pub profile: &'static str,
    /// Sessions started one after another for the spawn figures (and as
    /// many `docker run`s).
    pub spawn_samples: usize,
    /// Turns timed through ClaudeCluster and directly.
    pub command_samples: usize,
    /// Sessions started at once.
    pub sessions: usize,
    /// WebSocket watchers on one session.
    pub watchers: usize,
    pub api_clients: usize,
    pub api_duration: Duration,
    /// Fast-forward pushes timed through ClaudeCluster and with plain git
    /// (after one that creates the branch).
    pub push_samples: usize,
    /// Sessions put to sleep and woken.
    pub sleep_samples: usize,
    /// `Cargo.lock` to scan; `None` skips the scan.
    pub lockfile: Option<PathBuf>,
    /// RustSec advisory database; `None` skips the scan.
    pub advisory_db: Option<PathBuf>,
    /// A `cargo llvm-cov --json --summary-only` output to report.
    pub coverage: Option<PathBuf>,
    /// Session subnet pool, `CIDR[/LEN]` (see `serve --session-subnet-pool`);
    /// `None` leaves the networks to Docker's default address pools, which
    /// hold only about 30.
    pub subnet_pool: Option<String>,
    /// The OCI runtime sessions (and the `docker run` spawn baseline) run
    /// under, as `serve --container-runtime` (`runsc`: gVisor); `None`:
    /// Docker's default.
    pub container_runtime: Option<String>,
    /// Replicas on PostgreSQL (`replicas`); `None` skips the phase.
    pub replicas: Option<ReplicaOptions>,
    /// Failover trials of the replicas phase.
    pub failover_trials: usize,
    /// A cluster to measure sessions as Pods on; `None` skips the phase.
    pub kubernetes: Option<kubernetes::KubeOptions>,
    /// Samples of each Kubernetes figure.
    pub kube_samples: usize,
    /// Only the Kubernetes phase (the test command's cluster run).
    pub kubernetes_only: bool,
}

/// What the replicas phase needs: the binary to start `serve` from and a
/// PostgreSQL database to make a schema in.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    pub serve_bin: PathBuf,
    pub database_url: String,
}

/// The bench's session subnet pool unless told otherwise: 4096 /28s, so
/// `--sessions 100` and more fit. On by default here (unlike `serve`): the
/// bench is a short local run that needs more than Docker's ~30 networks,
/// and 10.213/16 is a range few hosts route; `--session-subnet-pool off`
/// goes back to Docker's pools.
pub const DEFAULT_SUBNET_POOL: &str = "10.213.0.0/16/28";

impl BenchOptions {
    /// The whole suite: well under 15 minutes on a 2-core machine.
    pub fn full(image: String) -> Self {
        Self {
            image,
            profile: "full",
            spawn_samples: 10,
            command_samples: 20,
            sessions: 100,
            watchers: 50,
            api_clients: 32,
            api_duration: Duration::from_secs(5),
            push_samples: 10,
            sleep_samples: 10,
            lockfile: None,
            advisory_db: None,
            coverage: None,
            subnet_pool: Some(DEFAULT_SUBNET_POOL.into()),
            container_runtime: None,
            replicas: None,
            failover_trials: 10,
            kubernetes: None,
            kube_samples: 10,
            kubernetes_only: false,
        }
    }

    /// The CI profile: every phase, small counts, under two minutes.
    pub fn quick(image: String) -> Self {
        Self {
            profile: "quick",
            spawn_samples: 3,
            command_samples: 5,
            sessions: 4,
            watchers: 10,
            api_clients: 16,
            api_duration: Duration::from_secs(2),
            push_samples: 3,
            sleep_samples: 2,
            failover_trials: 2,
            kube_samples: 3,
            ..Self::full(image)
        }
    }
}

/// Runs every phase; `progress` hears what is being measured. Phase errors
/// are collected in the report's `failures`, not returned.
pub async fn run(opts: &BenchOptions, progress: &dyn Fn(&str)) -> Result<Report, BenchError> {
    let started = Instant::now();
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let machine = system::machine().await;
    // The harness takes its image from the variable the e2e tests use; set
    // before any session exists.
    std::env::set_var("CLAUDECLUSTER_TEST_IMAGE", &opts.image);
    match &opts.subnet_pool {
        Some(pool) => std::env::set_var(cc_testkit::harness::SUBNET_POOL_ENV, pool),
        None => std::env::remove_var(cc_testkit::harness::SUBNET_POOL_ENV),
    }
    match &opts.container_runtime {
        Some(r) => std::env::set_var(cc_testkit::harness::CONTAINER_RUNTIME_ENV, r),
        None => std::env::remove_var(cc_testkit::harness::CONTAINER_RUNTIME_ENV),
    }
    progress("starting the orchestrator, the model double and the git server");
    // One user watches every session of the concurrency phase (and a few
    // more streams of its own): the per-user cap must not cut it short.
    let h = Harness::start_with(cc_testkit::harness::HarnessOptions {
        max_streams_per_user: Some(opts.sessions + 16),
        ..Default::default()
    })
    .await
    .map_err(|e| BenchError::Setup(format!("{e:#}")))?;
    let repo = h
        .git
        .create_repo("bench", &[("README.md", "# bench\n")])
        .map_err(|e| BenchError::Setup(format!("{e:#}")))?;
    let mut report = Report::new(opts, machine, started_at);
    if !opts.kubernetes_only {
        docker_phases(opts, &h, &repo, &mut report, progress).await;
    }
    if let Some(k) = &opts.kubernetes {
        kubernetes_phase(opts, k, &h, &repo, &mut report, progress).await;
    }
    h.shutdown().await;
    if opts.kubernetes_only {
        report.duration_secs = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    progress("quality: vulnerability scan, image size, coverage");
    if let (Some(lock), Some(db)) = (&opts.lockfile, &opts.advisory_db) {
        match audit::scan(lock, db) {
            Ok(a) => report.audit = Some(a),
            Err(e) => report.failures.push(format!("audit: {e}")),
        }
    }
    match image::measure(&opts.image).await {
        Ok(i) => report.image_report = Some(i),
        Err(e) => report.failures.push(format!("image: {e}")),
    }
    report.coverage = coverage::read(opts.coverage.as_deref());
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The phases on this machine's Docker.
async fn docker_phases(
    opts: &BenchOptions,
    h: &Harness,
    repo: &str,
    report: &mut Report,
    progress: &dyn Fn(&str),
) {
    progress(&format!(
        "spawn: {} cold sessions, then {} docker runs",
        opts.spawn_samples, opts.spawn_samples
    ));
    let mut spawn = spawn::measure(h, repo, &opts.image, opts.spawn_samples).await;
    progress(&format!(
        "spawn: {} sessions from a warm pool of one",
        opts.spawn_samples
    ));
    match Harness::start_configured(
        cc_testkit::harness::HarnessOptions {
            upstream: None,
            api_key: None,
            ..Default::default()
        },
        |c| c.warm_pool = 1,
    )
    .await
    {
        Ok(warm_h) => match warm_h
            .git
            .create_repo("bench", &[("README.md", "# bench\n")])
        {
            Ok(warm_repo) => {
                spawn::measure_warm(&warm_h, &warm_repo, opts.spawn_samples, &mut spawn).await;
                warm_h.manager.drain_pool().await;
                warm_h.shutdown().await;
            }
            Err(e) => spawn.errors.push(format!("warm: {e:#}")),
        },
        Err(e) => spawn.errors.push(format!("warm: {e:#}")),
    }
    report.failures.extend(prefixed("spawn", &spawn.errors));
    report.spawn = Some(spawn);

    progress(&format!(
        "command latency: {} turns through ClaudeCluster, {} direct",
        opts.command_samples, opts.command_samples
    ));
    let cmd = command::measure(h, repo, &opts.image, opts.command_samples).await;
    report.failures.extend(prefixed("command", &cmd.errors));
    if cmd.failed_turns > 0 {
        report
            .failures
            .push(format!("command: {} turns failed", cmd.failed_turns));
    }
    report.command = Some(cmd);

    progress(&format!("concurrency: {} sessions at once", opts.sessions));
    let conc = concurrency::measure(h, repo, opts.sessions).await;
    report
        .failures
        .extend(prefixed("concurrency", &conc.error_samples));
    if conc.errors > conc.error_samples.len() {
        report.failures.push(format!(
            "concurrency: {} more errors",
            conc.errors - conc.error_samples.len()
        ));
    }
    if conc
        .error_samples
        .iter()
        .any(|e| e.contains("address pool"))
    {
        report.failures.push(POOL_HINT.into());
    }
    report.concurrency = Some(conc);

    progress(&format!(
        "burst: {} sessions at once from a warm pool of {}",
        opts.sessions, opts.sessions
    ));
    let burst = concurrency::measure_pooled(opts.sessions).await;
    report
        .failures
        .extend(prefixed("warm pool burst", &burst.error_samples));
    report.pooled_burst = Some(burst);

    progress(&format!("stream fan-out: {} watchers", opts.watchers));
    let fan = fanout::measure(h, repo, opts.watchers).await;
    report.failures.extend(prefixed("fan-out", &fan.errors));
    if fan.incomplete_watchers > 0 && fan.errors.is_empty() {
        report.failures.push(format!(
            "fan-out: {} watchers missed events",
            fan.incomplete_watchers
        ));
    }
    report.fanout = Some(fan);

    progress(&format!(
        "API: {} clients for {:?}",
        opts.api_clients, opts.api_duration
    ));
    match api::measure(h, repo, opts.api_clients, opts.api_duration).await {
        Ok(a) => {
            report.failures.extend(prefixed("api", &a.error_samples));
            report.api = Some(a);
        }
        Err(e) => report.failures.push(format!("api: {e}")),
    }

    progress(&format!(
        "push: {} fast-forwards through ClaudeCluster, {} with plain git",
        opts.push_samples, opts.push_samples
    ));
    let push = push::measure(h, repo, opts.push_samples).await;
    report.failures.extend(prefixed("push", &push.errors));
    report.push = Some(push);

    progress(&format!("sleep and wake: {} sessions", opts.sleep_samples));
    let sleep = sleep::measure(opts.sleep_samples).await;
    report.failures.extend(prefixed("sleep", &sleep.errors));
    report.sleep = Some(sleep);

    if let Some(r) = &opts.replicas {
        progress(&format!(
            "replicas: two on PostgreSQL, {} failover trials (kill -9 of the owner)",
            opts.failover_trials
        ));
        let setup = replicas::Setup {
            serve_bin: &r.serve_bin,
            database_url: &r.database_url,
            image: &opts.image,
        };
        let result = replicas::measure(h, repo, &setup, opts.failover_trials).await;
        report.failures.extend(prefixed("replicas", &result.errors));
        report.replicas = Some(result);
    }
}

/// Sessions as Pods on a cluster (with the `kubernetes` feature).
async fn kubernetes_phase(
    opts: &BenchOptions,
    k: &kubernetes::KubeOptions,
    h: &Harness,
    repo: &str,
    report: &mut Report,
    progress: &dyn Fn(&str),
) {
    progress(&format!(
        "kubernetes: {} sessions cold, {} from a warm Pod, {} bare Pods",
        opts.kube_samples, opts.kube_samples, opts.kube_samples
    ));
    #[cfg(feature = "kubernetes")]
    {
        let result = kubernetes::measure(h, repo, &opts.image, k, opts.kube_samples).await;
        report
            .failures
            .extend(prefixed("kubernetes", &result.errors));
        report.kubernetes = Some(result);
    }
    #[cfg(not(feature = "kubernetes"))]
    {
        let _ = (k, h, repo);
        report.failures.push(
            "kubernetes: this build has no Kubernetes support (the `kubernetes` feature)".into(),
        );
    }
}

/// Each session has its own Docker network, and a default Docker Engine has
/// address pools for about 30 of them.
const POOL_HINT: &str = "concurrency: Docker ran out of network address pools (one network per session; about 30 with Docker's defaults): run with a session subnet pool, e.g. --session-subnet-pool 10.213.0.0/16/28 (the default unless `off`)";

fn prefixed(phase: &str, errors: &[String]) -> Vec<String> {
    errors.iter().map(|e| format!("{phase}: {e}")).collect()
}
