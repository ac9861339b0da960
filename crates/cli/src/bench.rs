//! `claudecluster bench`: the benchmark suite beside its baselines (see the
//! `cc-bench` crate), a table on stdout and JSON in `--out`. Fails only on
//! real errors, never on slow figures.

use anyhow::Context;
use cc_bench::BenchOptions;
use cc_runtime_docker::image::{build_worker_image, ImageBuildOptions, Progress};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
#[command(
    after_help = "Examples:\n  claudecluster bench --quick\n  claudecluster bench --out bench.json\n  claudecluster bench --sessions 150 --image claudecluster-worker:<tag>"
)]
pub struct BenchArgs {
    /// The small profile CI runs (every phase, small counts, < 2 minutes).
    #[arg(long)]
    quick: bool,
    /// The worker image; by default the one `claudecluster image build`
    /// makes (built or found in seconds).
    #[arg(long, env = "CLAUDECLUSTER_TEST_IMAGE")]
    image: Option<String>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench.json")]
    out: PathBuf,
    /// Sessions started at once (full profile: 100).
    #[arg(long)]
    sessions: Option<usize>,
    /// Sessions started one by one for the spawn figures.
    #[arg(long)]
    spawn_samples: Option<usize>,
    /// Turns timed for the command latency.
    #[arg(long)]
    command_samples: Option<usize>,
    /// Fast-forward pushes timed, ours and plain `git push` (full: 10).
    #[arg(long)]
    push_samples: Option<usize>,
    /// Sessions put to sleep and woken (full: 10).
    #[arg(long)]
    sleep_samples: Option<usize>,
    /// WebSocket watchers on one session.
    #[arg(long)]
    watchers: Option<usize>,
    /// The RustSec advisory database (default: ../shared/advisory-db next
    /// to the workspace).
    #[arg(long, env = "CLAUDECLUSTER_ADVISORY_DB")]
    advisory_db: Option<PathBuf>,
    /// The Cargo.lock to scan (default: the workspace's).
    #[arg(long)]
    lockfile: Option<PathBuf>,
    /// A `cargo llvm-cov --json --summary-only` output to report (see
    /// scripts/coverage.sh).
    #[arg(long)]
    coverage: Option<PathBuf>,
    /// Session subnet pool, `CIDR[/LEN]` (as `serve --session-subnet-pool`;
    /// default 10.213.0.0/16 in /28s, room for 4096 sessions), or `off` for
    /// Docker's default address pools (about 30 sessions at once).
    #[arg(long, env = "CLAUDECLUSTER_SESSION_SUBNET_POOL")]
    session_subnet_pool: Option<String>,
    /// A PostgreSQL database to measure two replicas on (a schema of the
    /// run's own is made and dropped): create → ready and command → first
    /// output beside SQLite, and failover after `kill -9` of the owner.
    /// Without it the phase is skipped.
    #[arg(
        long,
        env = "CLAUDECLUSTER_BENCH_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Failover trials of the replicas phase (full: 10, quick: 2).
    #[arg(long)]
    failover_trials: Option<usize>,
    /// The OCI runtime sessions run under, as `serve --container-runtime`
    /// (e.g. `runsc` for gVisor, registered with Docker): the spawn
    /// baseline's `docker run` uses it too.
    #[arg(long, value_name = "NAME")]
    container_runtime: Option<String>,
    /// A cluster to measure sessions as Pods on (`serve --runtime
    /// kubernetes` with this kubeconfig): create → ready, cold and from a
    /// warm Pod, beside a bare Pod of the same image. Without it the phase
    /// is skipped.
    #[arg(long, value_name = "PATH", help_heading = "Kubernetes")]
    kubeconfig: Option<PathBuf>,
    /// The namespace the phase's Pods go in.
    #[arg(long, default_value = "default", help_heading = "Kubernetes")]
    kube_namespace: String,
    /// The node every Pod is put on (a cluster without a scheduler).
    #[arg(long, help_heading = "Kubernetes")]
    kube_node: Option<String>,
    /// This host's address as the cluster's Pods reach it: the phase's
    /// gateway listens there.
    #[arg(long, value_name = "IP", help_heading = "Kubernetes")]
    kube_host_ip: Option<String>,
    /// Samples of each Kubernetes figure (full: 10, quick: 3).
    #[arg(long, help_heading = "Kubernetes")]
    kube_samples: Option<usize>,
    /// Only the Kubernetes phase.
    #[arg(long, requires = "kubeconfig", help_heading = "Kubernetes")]
    kubernetes_only: bool,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let image = match args.image {
        Some(i) => i,
        None => worker_image().await?,
    };
    let mut opts = if args.quick {
        BenchOptions::quick(image)
    } else {
        BenchOptions::full(image)
    };
    if let Some(n) = args.sessions {
        opts.sessions = n;
    }
    if let Some(n) = args.spawn_samples {
        opts.spawn_samples = n;
    }
    if let Some(n) = args.command_samples {
        opts.command_samples = n;
    }
    if let Some(n) = args.push_samples {
        opts.push_samples = n;
    }
    if let Some(n) = args.sleep_samples {
        opts.sleep_samples = n;
    }
    if let Some(n) = args.watchers {
        opts.watchers = n;
    }
    if let Some(n) = args.failover_trials {
        opts.failover_trials = n;
    }
    if let Some(url) = args.database_url {
        opts.replicas = Some(cc_bench::ReplicaOptions {
            serve_bin: std::env::current_exe().context("locating this executable")?,
            database_url: url,
        });
    }
    if let Some(kubeconfig) = args.kubeconfig {
        let host_ip = args
            .kube_host_ip
            .context("--kube-host-ip: where the cluster's Pods reach this host's gateway")?;
        opts.kubernetes = Some(cc_bench::kubernetes::KubeOptions {
            serve_bin: std::env::current_exe().context("locating this executable")?,
            kubeconfig,
            namespace: args.kube_namespace,
            node: args.kube_node,
            host_ip,
        });
    }
    if let Some(n) = args.kube_samples {
        opts.kube_samples = n;
    }
    opts.kubernetes_only = args.kubernetes_only;
    opts.container_runtime = args.container_runtime;
    let root = workspace_root();
    opts.lockfile = args
        .lockfile
        .or_else(|| root.as_ref().map(|r| r.join("Cargo.lock")))
        .filter(|p| p.is_file());
    opts.advisory_db = args
        .advisory_db
        .or_else(|| {
            root.as_ref()
                .and_then(|r| r.parent())
                .map(|p| p.join("shared/advisory-db"))
        })
        .filter(|p| p.is_dir());
    opts.coverage = args.coverage;
    match args.session_subnet_pool.as_deref().map(str::trim) {
        None => {}
        Some("off") => opts.subnet_pool = None,
        Some(spec) => {
            // Checked now rather than after the spawn phase.
            cc_runtime_docker::SubnetPool::parse(spec, 28).context("--session-subnet-pool")?;
            opts.subnet_pool = Some(spec.to_owned());
        }
    }

    let report = cc_bench::run(&opts, &|step| eprintln!("▸ {step}")).await?;
    report.write_json(&args.out)?;
    println!("{}", report.table());
    eprintln!("wrote {}", args.out.display());
    if !report.failures.is_empty() {
        anyhow::bail!(
            "{} real errors during the benchmark (listed above)",
            report.failures.len()
        );
    }
    Ok(())
}

/// The workspace holding Cargo.lock: from the current directory up, else
/// where this binary was built from.
fn workspace_root() -> Option<PathBuf> {
    let from_cwd = std::env::current_dir().ok().and_then(|d| {
        d.ancestors()
            .find(|a| a.join("Cargo.lock").is_file())
            .map(Path::to_path_buf)
    });
    from_cwd.or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .find(|a| a.join("Cargo.lock").is_file())
            .map(Path::to_path_buf)
    })
}

/// Builds or finds the worker image as `claudecluster image build` does.
async fn worker_image() -> anyhow::Result<String> {
    let sessiond = std::env::current_exe()
        .context("locating this executable")?
        .with_file_name("claudecluster-sessiond");
    let opts = ImageBuildOptions::new(sessiond);
    let mut show = |p: Progress| {
        if let Progress::Step { name, detail } = p {
            eprintln!("▸ image {name}: {detail}");
        }
    };
    let built = build_worker_image(&opts, &mut show)
        .await
        .context("building the worker image (or pass --image)")?;
    Ok(built.tag)
}
