//! `claudecluster serve`: wires the Docker runtime, the SQLite store and the
//! sessiond client into the session core and serves the API and gateway.

use anyhow::{bail, Context};
use cc_core::{LimitsPolicy, Manager, ManagerConfig};
use cc_runtime_docker::DockerRuntime;
use cc_server::{HttpAgent, ServerConfig, DEFAULT_ANTHROPIC_UPSTREAM};
use cc_store_sqlite::SqliteStore;
use cc_wire::api::Quantity;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::net::TcpListener;

#[derive(Args)]
#[command(
    after_help = "Example:\n  claudecluster serve --listen 127.0.0.1:8080 --data-dir ./data \\\n      --allow-repo-host 127.0.0.1:9418"
)]
pub struct ServeArgs {
    /// Address of the REST + WebSocket API.
    #[arg(long, env = "CLAUDECLUSTER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the session database lives.
    #[arg(
        long,
        env = "CLAUDECLUSTER_DATA_DIR",
        default_value = "./claudecluster-data"
    )]
    data_dir: PathBuf,
    /// Address of the gateway sessions reach (Anthropic and git relays).
    /// Sessions reach it through their network's gateway address, so it
    /// must listen on the Docker bridges; port 0 picks a free port.
    #[arg(
        long,
        env = "CLAUDECLUSTER_GATEWAY_LISTEN",
        default_value = "0.0.0.0:0"
    )]
    gateway_listen: SocketAddr,
    /// Where the Anthropic relay forwards the sessions' API traffic.
    #[arg(long, env = "CLAUDECLUSTER_ANTHROPIC_BASE_URL", default_value = DEFAULT_ANTHROPIC_UPSTREAM)]
    anthropic_base_url: String,
    /// A loopback or private repository host sessions may clone from
    /// (HOST:PORT). Repeatable.
    #[arg(
        long = "allow-repo-host",
        env = "CLAUDECLUSTER_ALLOW_REPO_HOSTS",
        value_delimiter = ','
    )]
    allow_repo_hosts: Vec<String>,
    /// Worker image sessions run.
    #[arg(
        long,
        env = "CLAUDECLUSTER_IMAGE",
        default_value = "claudecluster-worker:latest"
    )]
    image: String,
    /// Prefix of every Docker resource this server creates.
    #[arg(long, env = "CLAUDECLUSTER_RESOURCE_PREFIX", default_value = cc_runtime_docker::DEFAULT_PREFIX)]
    resource_prefix: String,
    /// Base URL clients use to reach this server, for the endpoints
    /// returned at create (default: from the request's Host header).
    #[arg(long, env = "CLAUDECLUSTER_PUBLIC_URL")]
    public_url: Option<String>,
    /// Memory limit of a session unless it asks otherwise.
    #[arg(long, default_value = "2g")]
    default_memory: String,
    /// Largest memory limit a session may ask for.
    #[arg(long, default_value = "8g")]
    max_memory: String,
    /// CPU limit (cores) of a session unless it asks otherwise.
    #[arg(long, default_value_t = 1.0)]
    default_cpu: f64,
    /// Largest CPU limit (cores) a session may ask for.
    #[arg(long, default_value_t = 4.0)]
    max_cpu: f64,
    /// Lifetime (seconds) of a session unless it asks otherwise.
    #[arg(long, default_value_t = 3600)]
    default_timeout: u64,
    /// Longest lifetime (seconds) a session may ask for.
    #[arg(long, default_value_t = 86400)]
    max_timeout: u64,
    /// Log format.
    #[arg(long, env = "CLAUDECLUSTER_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

fn limits(args: &ServeArgs) -> anyhow::Result<LimitsPolicy> {
    let mem = |s: &str, flag: &str| {
        cc_core::config::parse_memory(&Quantity::Text(s.into()))
            .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
    };
    let mut p = LimitsPolicy::default();
    p.default.memory_bytes = mem(&args.default_memory, "default-memory")?;
    p.max.memory_bytes = mem(&args.max_memory, "max-memory")?;
    p.default.cpu = args.default_cpu;
    p.max.cpu = args.max_cpu;
    p.default.timeout_secs = args.default_timeout;
    p.max.timeout_secs = args.max_timeout;
    if p.default.memory_bytes > p.max.memory_bytes
        || p.default.cpu > p.max.cpu
        || p.default.timeout_secs > p.max.timeout_secs
    {
        bail!("a --default-* limit is above its --max-* limit");
    }
    Ok(p)
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log_format);
    let limits = limits(&args)?;
    let runtime = DockerRuntime::connect(args.resource_prefix.clone())
        .await
        .context("connecting to Docker")?;
    runtime.check_image(&args.image).await?;
    let store = SqliteStore::open(&args.data_dir)
        .with_context(|| format!("opening the data directory {}", args.data_dir.display()))?;
    let api = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the API to {}", args.listen))?;
    let gateway = TcpListener::bind(args.gateway_listen)
        .await
        .with_context(|| format!("binding the gateway to {}", args.gateway_listen))?;
    let gateway_port = gateway.local_addr()?.port();

    let mut config = ManagerConfig::new(args.image.clone(), gateway_port);
    config.limits = limits;
    config.allowed_repo_hosts = args.allow_repo_hosts.clone();
    let manager = Manager::new(runtime, HttpAgent::new()?, store, config);
    let cleaned = manager
        .recover()
        .await
        .context("cleaning up after the previous run")?;
    if cleaned > 0 {
        tracing::info!(cleaned, "cleaned up sessions left by a previous run");
    }

    let api_addr = api.local_addr()?;
    // The one line scripts wait for.
    println!("listening on http://{api_addr}");
    tracing::info!(%api_addr, gateway_port, image = %args.image, "claudecluster serving");
    let server = ServerConfig {
        public_url: args.public_url.clone(),
        anthropic_upstream: args.anthropic_base_url.clone(),
    };
    cc_server::serve(api, gateway, manager.clone(), server, shutdown_signal()).await?;
    tracing::info!("shutting down: ending live sessions");
    manager.terminate_all().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
