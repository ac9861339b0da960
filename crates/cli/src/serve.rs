//! `claudecluster serve`: wires the runtime (Docker, or Kubernetes; see
//! `runtime`), the store (SQLite in the
//! data directory, or PostgreSQL with `--database-url`; see `store`) and
//! the sessiond client into the session core and serves the API and
//! gateway.

use crate::runtime::{AnyRuntime, DockerArgs, KubeArgs, RuntimeChoice, RuntimeKind, WorkspaceArgs};
use crate::store::AnyStore;
use anyhow::{bail, Context};
use cc_core::secrets::SealKey;
use cc_core::session::Recovery;
use cc_core::{LimitsPolicy, Manager, ManagerConfig, Store};
use cc_server::{HttpAgent, ServerConfig, DEFAULT_ANTHROPIC_UPSTREAM};
use cc_wire::api::{EgressMode, Quantity};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
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
    /// PostgreSQL database for sessions, events, tokens and the audit log
    /// (`postgres://user:password@host:5432/db`), instead of the SQLite
    /// file in the data directory. The data directory still holds the
    /// keys, the audit copy and the git mirrors.
    #[arg(
        long,
        env = "CLAUDECLUSTER_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Address of the gateway sessions reach (Anthropic and git relays).
    /// Sessions reach it through their network's gateway address, so it
    /// must listen on the Docker bridges. Keep the port fixed: running
    /// sessions know it, so after a restart on another port (0 picks a
    /// free one) they cannot be adopted.
    #[arg(
        long,
        env = "CLAUDECLUSTER_GATEWAY_LISTEN",
        default_value = "0.0.0.0:8081"
    )]
    gateway_listen: SocketAddr,
    /// Bearer token `GET /metrics` requires (it names sessions); open when
    /// unset.
    #[arg(
        long,
        env = "CLAUDECLUSTER_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    metrics_token: Option<String>,
    /// A branch prefix (ending in `/`, e.g. `bots/`) every session may push
    /// under besides its own `claudecluster/<id>` branch (and branches under
    /// it). Repeatable; none by default. A prefix overlapping
    /// `claudecluster/` is refused: that namespace is the sessions' own.
    #[arg(
        long = "push-prefix",
        env = "CLAUDECLUSTER_PUSH_PREFIXES",
        value_delimiter = ',',
        value_parser = parse_push_prefix
    )]
    push_prefixes: Vec<String>,
    /// A forge whose API opens pull requests, as KIND,HOST,API_URL (e.g.
    /// `github,github.example.com,https://github.example.com/api/v3`);
    /// github.com and gitlab.com are known. Repeatable.
    #[arg(long = "forge", env = "CLAUDECLUSTER_FORGES", value_delimiter = ';')]
    forges: Vec<cc_server::forge::Forge>,
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
    /// A loopback or private host webhook endpoints may be on (HOST:PORT).
    /// Repeatable.
    #[arg(
        long = "allow-webhook-host",
        env = "CLAUDECLUSTER_ALLOW_WEBHOOK_HOSTS",
        value_delimiter = ','
    )]
    allow_webhook_hosts: Vec<String>,
    /// A host users (not only administrators) may register webhook
    /// endpoints on (`host`, `host:port` or `*.domain`). Repeatable.
    /// Without any, only administrators register webhooks.
    #[arg(
        long = "user-webhook-host",
        env = "CLAUDECLUSTER_USER_WEBHOOK_HOSTS",
        value_delimiter = ','
    )]
    user_webhook_hosts: Vec<String>,
    /// A host sessions may reach through the gateway's CONNECT proxy
    /// (`host`, `host:port` or `*.domain`; e.g. a package registry).
    /// Repeatable. Without any, sessions reach only the Anthropic and git
    /// relays.
    #[arg(
        long = "egress-allow",
        env = "CLAUDECLUSTER_EGRESS_ALLOW",
        value_delimiter = ','
    )]
    egress_allow: Vec<String>,
    /// Egress of a session that asks for none: `none` (the relays only),
    /// `allowlist` (plus --egress-allow hosts) or `open` (any public host).
    #[arg(long, env = "CLAUDECLUSTER_DEFAULT_EGRESS", default_value = "allowlist", value_parser = parse_egress)]
    default_egress: EgressMode,
    /// Most egress a session may ask for (`config.egress`).
    #[arg(long, env = "CLAUDECLUSTER_MAX_EGRESS", default_value = "allowlist", value_parser = parse_egress)]
    max_egress: EgressMode,
    /// Worker image sessions run.
    #[arg(
        long,
        env = "CLAUDECLUSTER_IMAGE",
        default_value = "claudecluster-worker:latest"
    )]
    image: String,
    /// Where sessions run: containers on this host's Docker Engine, or
    /// Pods in a Kubernetes namespace (see each runtime's flags below).
    #[arg(
        long,
        env = "CLAUDECLUSTER_RUNTIME",
        value_enum,
        default_value = "docker"
    )]
    runtime: RuntimeKind,
    /// Prefix of every resource this server creates (containers, networks,
    /// volumes; Pods, Secrets, NetworkPolicies).
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
    /// A session nobody used (no command, API call or WebSocket keepalive,
    /// no running turn) for this many seconds goes to sleep (or ends, see
    /// --idle-action), unless it asked for its own idle timeout
    /// (`config.idleTimeout`); 0 never idles out.
    #[arg(long, env = "CLAUDECLUSTER_IDLE_TIMEOUT", default_value_t = 1800)]
    idle_timeout: u64,
    /// Longest idle timeout (seconds) a session may ask for
    /// (`config.idleTimeout`, at least 60).
    #[arg(long, env = "CLAUDECLUSTER_MAX_IDLE_TIMEOUT", default_value_t = 86400)]
    max_idle_timeout: u64,
    /// What an idle session does: `sleep` (its container goes; its
    /// workspace, conversation and history stay, and the next use wakes
    /// it) or `terminate`. Sleep needs a runtime that keeps workspaces
    /// (Docker); elsewhere idle sessions end.
    #[arg(long, env = "CLAUDECLUSTER_IDLE_ACTION", default_value = "sleep", value_parser = ["sleep", "terminate"])]
    idle_action: String,
    /// Seconds a session may sleep before it ends; 0: for ever.
    #[arg(long, env = "CLAUDECLUSTER_MAX_SLEEP", default_value_t = 7 * 24 * 3600)]
    max_sleep: u64,
    /// Seconds a permission question (a session whose permission mode asks,
    /// e.g. `permissionMode: "default"`) waits for a person before it is
    /// denied with that reason; 0 waits as long as the session lives.
    #[arg(long, env = "CLAUDECLUSTER_PERMISSION_TIMEOUT", default_value_t = 300)]
    permission_timeout: u64,
    /// Seconds between reconciler passes (orphaned resources, stopped
    /// containers whose event was missed).
    #[arg(long, env = "CLAUDECLUSTER_RECONCILE_INTERVAL", default_value_t = 60)]
    reconcile_interval: u64,
    #[command(flatten)]
    workspace: WorkspaceArgs,
    /// Seconds between two measurements of the workspaces against
    /// --workspace-size, where the runtime cannot bound them itself
    /// (Docker): a session may overshoot by what it writes in between.
    #[arg(
        long,
        env = "CLAUDECLUSTER_WORKSPACE_CHECK_INTERVAL",
        default_value_t = 30
    )]
    workspace_check_interval: u64,
    /// End every live session on SIGTERM/Ctrl-C instead of leaving them
    /// running for the next orchestrator to adopt (sleeping ones too:
    /// their workspaces go).
    #[arg(long, env = "CLAUDECLUSTER_END_SESSIONS_ON_SHUTDOWN")]
    end_sessions_on_shutdown: bool,
    /// At create, ask the Anthropic upstream (--anthropic-base-url) whether
    /// it accepts the session's Claude API key (a free count_tokens call);
    /// only a 401/403 refuses the create, anything else lets it through.
    #[arg(long, env = "CLAUDECLUSTER_CHECK_API_KEY")]
    check_api_key: bool,
    /// Containers kept started for sessions with the default memory and
    /// CPU limits (0: every create starts its own).
    #[arg(long, env = "CLAUDECLUSTER_WARM_POOL", default_value_t = 0)]
    warm_pool: usize,
    /// Models sessions may choose, comma-separated (default: any).
    #[arg(long, env = "CLAUDECLUSTER_ALLOWED_MODELS", value_delimiter = ',')]
    allowed_models: Vec<String>,
    /// Model of sessions that choose none (default: Claude Code's).
    #[arg(long, env = "CLAUDECLUSTER_DEFAULT_MODEL")]
    default_model: Option<String>,
    /// Highest `maxBudgetUsd` per session, and the budget of sessions that
    /// set none (default: no limit).
    #[arg(long, env = "CLAUDECLUSTER_MAX_BUDGET_USD")]
    max_budget_usd: Option<f64>,
    /// What all sessions of one user may spend in USD (default: no limit).
    #[arg(long, env = "CLAUDECLUSTER_MAX_USER_BUDGET_USD")]
    max_user_budget_usd: Option<f64>,
    /// A model's price in USD per million tokens, replacing or adding to
    /// the built-in table the gateway prices spend with:
    /// `MODEL=INPUT,OUTPUT,CACHE_WRITE,CACHE_READ` (`MODEL` is a name
    /// prefix; `*` sets the price of models not in the table). Repeatable.
    #[arg(long = "model-price", value_name = "MODEL=IN,OUT,CW,CR")]
    model_prices: Vec<String>,
    /// Tools no session may use, comma-separated (e.g. `WebFetch,WebSearch`).
    #[arg(long, env = "CLAUDECLUSTER_FORBIDDEN_TOOLS", value_delimiter = ',')]
    forbidden_tools: Vec<String>,
    /// A command stdio MCP servers may run, exactly as a session's
    /// `mcpServers.<name>.command` names it (repeatable; default none, so
    /// sessions get only http/sse servers). An interpreter or launcher
    /// (`sh`, `node`, `npx`) allows anything its arguments say.
    #[arg(
        long = "allow-mcp-command",
        env = "CLAUDECLUSTER_ALLOW_MCP_COMMANDS",
        value_delimiter = ','
    )]
    allow_mcp_commands: Vec<String>,
    /// Bootstrap administrator token (any secret string, ≥ 16 characters).
    /// Without it and without any API token the API only listens on loopback.
    /// On the command line it is visible to every local user (`ps`): prefer
    /// --admin-token-file or the environment variable.
    #[arg(long, env = "CLAUDECLUSTER_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// File holding the bootstrap administrator token (surrounding
    /// whitespace ignored), e.g. a mounted secret.
    #[arg(
        long,
        env = "CLAUDECLUSTER_ADMIN_TOKEN_FILE",
        value_name = "PATH",
        conflicts_with = "admin_token"
    )]
    admin_token_file: Option<PathBuf>,
    /// Clients allowed to use the API (CIDR or address; repeatable).
    /// Default: any.
    #[arg(long = "allow-ip", env = "CLAUDECLUSTER_ALLOW_IPS", value_delimiter = ',', value_parser = cc_server::auth::ip::Cidr::parse)]
    allow_ips: Vec<cc_server::auth::ip::Cidr>,
    /// Requests per minute per client IP and per token: `N` or `N/BURST`.
    #[arg(long, env = "CLAUDECLUSTER_RATE_LIMIT", default_value = "600/120", value_parser = cc_server::auth::rate_limit::RateLimit::parse)]
    rate_limit: cc_server::auth::rate_limit::RateLimit,
    /// Live sessions one user may have (0: no limit).
    #[arg(
        long,
        env = "CLAUDECLUSTER_MAX_SESSIONS_PER_USER",
        default_value_t = 10
    )]
    max_sessions_per_user: usize,
    /// Session WebSockets one user may hold open at once (beyond it,
    /// 429 too_many_streams).
    #[arg(
        long,
        env = "CLAUDECLUSTER_MAX_STREAMS_PER_USER",
        default_value_t = cc_server::auth::DEFAULT_MAX_STREAMS_PER_USER as u64,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    max_streams_per_user: u64,
    /// Serve the API over TLS with this certificate chain (PEM); needs
    /// --tls-key.
    #[arg(long, env = "CLAUDECLUSTER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM) of --tls-cert.
    #[arg(long, env = "CLAUDECLUSTER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Delete the event logs of sessions ended more than this many days
    /// ago (0: keep forever). Checked hourly.
    #[arg(long, env = "CLAUDECLUSTER_LOG_RETENTION_DAYS", default_value_t = 0)]
    log_retention_days: u64,
    /// Log format.
    #[arg(long, env = "CLAUDECLUSTER_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    /// Export traces (API requests, session lifecycle steps, turns) to
    /// this OpenTelemetry collector over OTLP/HTTP (JSON), e.g.
    /// `http://otel-collector:4318`; spans go to `<URL>/v1/traces`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// The `service.name` of the exported traces.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "claudecluster")]
    otel_service_name: String,
    #[command(flatten)]
    replicas: ReplicaArgs,
    #[command(flatten)]
    docker: DockerArgs,
    #[command(flatten)]
    kube: KubeArgs,
}

/// Several orchestrators on one PostgreSQL (`--database-url`).
#[derive(clap::Args)]
#[command(next_help_heading = "Replicas (several orchestrators on one --database-url)")]
struct ReplicaArgs {
    /// A file holding the secret every replica shares (32 random bytes or
    /// more, e.g. `openssl rand -hex 32`): the keys that seal session
    /// secrets in the database, sign session access tokens and sign the
    /// requests replicas forward to each other are derived from it.
    /// Required with --database-url; without it, keys are generated in
    /// the data directory.
    #[arg(long, env = "CLAUDECLUSTER_SECRET_KEY_FILE", value_name = "PATH")]
    secret_key_file: Option<PathBuf>,
    /// This replica's name among those sharing the database, unique and
    /// stable across its restarts (a Pod's name): it holds its sessions'
    /// leases under it, and takes them back at once after a restart.
    /// Default: `local` on SQLite, a random name with --database-url.
    #[arg(long, env = "CLAUDECLUSTER_REPLICA_ID")]
    replica_id: Option<String>,
    /// The URL other replicas reach this one's API at, to forward
    /// operations on the sessions it runs (default: http:// and --listen,
    /// unless that is a wildcard address).
    #[arg(long, env = "CLAUDECLUSTER_ADVERTISE_URL", value_name = "URL")]
    advertise_url: Option<url::Url>,
    /// Where sessions reach the gateway, when not at this replica's own
    /// listener: a load balancer in front of every replica's gateway (an
    /// address of this host with --runtime docker, whose port the host
    /// firewall then admits; a Service with --runtime kubernetes), so a
    /// session outlives the replica that started it.
    #[arg(long, env = "CLAUDECLUSTER_GATEWAY_URL", value_name = "URL")]
    gateway_url: Option<url::Url>,
}

/// Keys derived from the replicas' shared secret (`--secret-key-file`),
/// one per purpose, so none can stand in for another.
struct SharedKeys {
    seal: SealKey,
    session_tokens: [u8; 32],
    replicas: [u8; 32],
}

/// Shortest shared secret accepted: 32 bytes, as hex or raw.
const MIN_SECRET_BYTES: usize = 32;

impl SharedKeys {
    fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let secret = std::fs::read(path)
            .with_context(|| format!("--secret-key-file: reading {}", path.display()))?;
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET_BYTES {
            bail!(
                "--secret-key-file: {} holds {} bytes; it needs at least {MIN_SECRET_BYTES} \
                 random bytes (e.g. `openssl rand -hex 32 > {}`)",
                path.display(),
                secret.len(),
                path.display()
            );
        }
        let derive = |purpose: &str| -> [u8; 32] {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(b"claudecluster ");
            h.update(purpose.as_bytes());
            h.update(b"\n");
            h.update(secret);
            h.finalize().into()
        };
        Ok(Self {
            seal: SealKey::from_bytes(derive("seal")),
            session_tokens: derive("session-token"),
            replicas: derive("replica"),
        })
    }
}

/// This replica as the others see it.
fn replica(
    args: &ReplicaArgs,
    clustered: bool,
    api: SocketAddr,
    tls: bool,
) -> anyhow::Result<cc_core::Replica> {
    let id = match &args.replica_id {
        Some(id) if id.is_empty() || id.len() > 200 => {
            bail!("--replica-id must be 1 to 200 characters")
        }
        Some(id) => id.clone(),
        None if clustered => format!("replica-{}", &cc_core::Token::generate().expose()[..12]),
        None => "local".into(),
    };
    let url = match &args.advertise_url {
        Some(u) => u.as_str().trim_end_matches('/').to_owned(),
        None if clustered && api.ip().is_unspecified() => bail!(
            "--advertise-url is needed with --database-url when --listen is {api}: \
             the URL the other replicas reach this one's API at"
        ),
        None => format!("{}://{api}", if tls { "https" } else { "http" }),
    };
    Ok(cc_core::Replica { id, url })
}

/// The admin's policy over what sessions tell Claude Code.
fn agent_policy(args: &ServeArgs) -> anyhow::Result<cc_core::options::AgentPolicy> {
    let trimmed = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let allowed_models = trimmed(&args.allowed_models);
    for (flag, v) in [
        ("--max-budget-usd", args.max_budget_usd),
        ("--max-user-budget-usd", args.max_user_budget_usd),
    ] {
        if let Some(b) = v {
            anyhow::ensure!(b.is_finite() && b > 0.0, "{flag} must be a positive amount");
        }
    }
    if let Some(m) = &args.default_model {
        anyhow::ensure!(
            allowed_models.is_empty() || allowed_models.contains(m),
            "--default-model {m} is not among --allowed-models"
        );
    }
    Ok(cc_core::options::AgentPolicy {
        allowed_models,
        default_model: args.default_model.clone(),
        max_budget_usd: args.max_budget_usd,
        max_user_budget_usd: args.max_user_budget_usd,
        forbidden_tools: trimmed(&args.forbidden_tools),
        allowed_mcp_commands: args.allow_mcp_commands.clone(),
    })
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

/// Raises the soft limit on open files to the hard limit: the API and the
/// gateway may hold thousands of connections (see
/// `cc_server::auth::connections`), a proxied one two descriptors, beyond
/// the usual soft limit of 1024.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let Some(hard) = limit.maximum else {
        return;
    };
    if limit.current.is_some_and(|soft| soft >= hard) {
        return;
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(
            from = limit.current,
            to = hard,
            "raised the open-files limit"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
}

/// Logs to stderr as `RUST_LOG` says (default `info`); with an OTLP
/// endpoint, also every `info` span to it, whatever the log level.
fn init_logging(format: &str, otlp: Option<&str>, service: &str) {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let otel = otlp
        .map(|endpoint| cc_server::otel::layer(endpoint, service).with_filter(LevelFilter::INFO));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(otel);
    if format == "json" {
        registry.with(fmt.json().with_filter(filter)).init();
    } else {
        registry.with(fmt.with_filter(filter)).init();
    }
}

/// The secret in `path` without surrounding whitespace; errors name the
/// flag and the file, never the content.
fn read_secret_file(path: &std::path::Path, flag: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{flag}: reading {}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        bail!("{flag}: {} is empty", path.display());
    }
    Ok(secret.to_owned())
}

pub async fn run(mut args: ServeArgs) -> anyhow::Result<()> {
    if let Some(url) = &args.otlp_endpoint {
        let ok = reqwest::Url::parse(url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            bail!("--otlp-endpoint must be an http(s) URL such as http://otel-collector:4318, not {url:?}");
        }
    }
    init_logging(
        &args.log_format,
        args.otlp_endpoint.as_deref(),
        &args.otel_service_name,
    );
    raise_open_files_limit();
    if let Some(path) = &args.admin_token_file {
        args.admin_token = Some(read_secret_file(path, "--admin-token-file")?);
    }
    let limits = limits(&args)?;
    // Replicas share their keys; one process alone keeps its own.
    let clustered = args.database_url.is_some();
    let shared = match &args.replicas.secret_key_file {
        Some(path) => Some(SharedKeys::load(path)?),
        None if clustered => bail!(
            "--database-url needs --secret-key-file: every replica sharing the database must \
             seal session secrets and sign tokens with the same key (create one with \
             `openssl rand -hex 32 > FILE` and give it to each replica)"
        ),
        None => None,
    };
    // The store first: a database that cannot be reached stops the server
    // before it touches Docker.
    // It holds the audit copy and the git mirrors whatever the store; only
    // its owner may read it (mode 0700, as the SQLite store makes it).
    let mut dir = std::fs::DirBuilder::new();
    dir.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
    dir.create(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let store = AnyStore::open(args.database_url.as_deref(), &args.data_dir).await?;
    tracing::info!(store = store.kind(), "store opened");
    let api = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the API to {}", args.listen))?;
    if args.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
        bail!("--admin-token must be at least 16 characters");
    }
    // Before anything is announced: no open API beyond loopback.
    let exposure = cc_server::AccessConfig {
        admin_token: args.admin_token.clone(),
        ..Default::default()
    };
    cc_server::check_exposure(api.local_addr()?, &exposure, &store).await?;
    let gateway = TcpListener::bind(args.gateway_listen)
        .await
        .with_context(|| format!("binding the gateway to {}", args.gateway_listen))?;
    let gateway_port = gateway.local_addr()?.port();
    let replica = replica(
        &args.replicas,
        clustered,
        api.local_addr()?,
        args.tls_cert.is_some(),
    )?;
    let runtime = AnyRuntime::open(
        RuntimeChoice {
            kind: args.runtime,
            prefix: &args.resource_prefix,
            docker: &args.docker,
            kube: &args.kube,
            workspace: &args.workspace,
        },
        &args.image,
        gateway_port,
        args.replicas.gateway_url.as_ref(),
    )
    .await?;
    tracing::info!(runtime = runtime.kind(), "runtime connected");

    let mut config = ManagerConfig::new(args.image.clone(), gateway_port);
    config.limits = limits;
    config.allowed_repo_hosts = args.allow_repo_hosts.clone();
    config.egress_allow = args.egress_allow.clone();
    config.limits.default.egress = args.default_egress;
    config.limits.max.egress = args.max_egress;
    if config.limits.default.egress > config.limits.max.egress {
        anyhow::bail!("--default-egress is above --max-egress");
    }
    config.agent = agent_policy(&args)?;
    for spec in &args.model_prices {
        config
            .prices
            .set_from_spec(spec)
            .map_err(|e| anyhow::anyhow!("--model-price {e}"))?;
    }
    config.idle_timeout = (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout));
    config.permission_timeout = Duration::from_secs(args.permission_timeout);
    config.max_idle_timeout = Duration::from_secs(args.max_idle_timeout);
    config.idle_action = cc_core::IdleAction::parse(&args.idle_action)
        .context("--idle-action is sleep or terminate")?;
    config.max_sleep = (args.max_sleep > 0).then(|| Duration::from_secs(args.max_sleep));
    if config.max_idle_timeout < config.min_idle_timeout {
        bail!(
            "--max-idle-timeout must be at least {} seconds",
            config.min_idle_timeout.as_secs()
        );
    }
    if config
        .idle_timeout
        .is_some_and(|d| d > config.max_idle_timeout)
    {
        bail!("--idle-timeout is above --max-idle-timeout");
    }
    if args.reconcile_interval == 0 {
        bail!("--reconcile-interval must be at least 1 second");
    }
    config.reconcile_interval = Duration::from_secs(args.reconcile_interval);
    if args.workspace_check_interval == 0 {
        bail!("--workspace-check-interval must be at least 1 second");
    }
    config.workspace_limit = args.workspace.limit()?;
    config.workspace_check_interval = Duration::from_secs(args.workspace_check_interval);
    config.warm_pool = args.warm_pool;
    config.seal_key = Some(match &shared {
        Some(keys) => keys.seal.clone(),
        None => {
            SealKey::load_or_create(&args.data_dir).context("loading the server's sealing key")?
        }
    });
    tracing::info!(replica = %replica.id, url = %replica.url, "this replica");
    config.replica = replica;
    let (notices, notices_rx) = cc_server::webhook::channel();
    config.notices = Some(notices);
    let manager = Manager::new(runtime, HttpAgent::new()?, store, config);
    let recovery = manager
        .recover()
        .await
        .context("taking over sessions left by the previous run")?;
    if recovery != Recovery::default() {
        tracing::info!(
            adopted = recovery.adopted,
            failed = recovery.failed,
            orphans = recovery.orphans,
            "took over from the previous run"
        );
    }
    let background = cc_core::reconciler::start(&manager);
    // Lives to the end: notices of sessions ended at shutdown are queued.
    let webhook_rules = cc_server::webhook::WebhookConfig {
        user_hosts: args.user_webhook_hosts.clone(),
        allow_hosts: args.allow_webhook_hosts.clone(),
    };
    let _webhooks = cc_server::webhook::start(manager.clone(), notices_rx, webhook_rules.clone());

    let api_addr = api.local_addr()?;
    // The one line scripts wait for.
    let scheme = if args.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    println!("listening on {scheme}://{api_addr}");
    tracing::info!(%api_addr, gateway_port, image = %args.image, "claudecluster serving");
    if args.log_retention_days > 0 {
        spawn_retention(
            manager.store().clone(),
            manager.config().replica.id.clone(),
            args.log_retention_days,
        );
    }
    let server = ServerConfig {
        public_url: args.public_url.clone(),
        anthropic_upstream: args.anthropic_base_url.clone(),
        check_api_key: args.check_api_key,
        access: cc_server::AccessConfig {
            admin_token: args.admin_token.clone(),
            allow_ips: args.allow_ips.clone(),
            rate_limit: Some(args.rate_limit),
            max_sessions_per_user: (args.max_sessions_per_user > 0)
                .then_some(args.max_sessions_per_user),
            max_streams_per_user: usize::try_from(args.max_streams_per_user).unwrap_or(usize::MAX),
            audit_jsonl: Some(args.data_dir.join("audit.jsonl")),
            metrics_token: args.metrics_token.clone(),
            session_token_key: Some(match &shared {
                Some(keys) => keys.session_tokens,
                None => session_token_key(&args.data_dir)?,
            }),
            tls: match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some(cc_server::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            ..Default::default()
        },
        git: cc_server::GitConfig {
            push: cc_core::PushPolicy {
                prefixes: args.push_prefixes.clone(),
            },
            forges: args.forges.clone(),
            mirror_dir: Some(args.data_dir.join("git-mirrors")),
        },
        peers: match (&shared, clustered) {
            (Some(keys), true) => Some(cc_server::cluster::Peers::new(
                cc_server::cluster::ClusterKey::new(keys.replicas),
            )?),
            _ => None,
        },
        webhooks: webhook_rules,
    };
    // Stops accepting, lets in-flight requests finish, then returns.
    cc_server::serve(api, gateway, manager.clone(), server, shutdown_signal()).await?;
    // Pool containers hold nothing worth keeping; the next start would
    // remove them as orphans anyway.
    drop(background);
    manager.drain_pool().await;
    if args.end_sessions_on_shutdown {
        tracing::info!("shutting down: ending live sessions");
        manager.terminate_all().await;
    } else {
        tracing::info!(
            live = manager.live_records().len(),
            "shutting down: live sessions keep running for the next orchestrator"
        );
        if clustered {
            // The other replicas take them over now, not when the leases
            // run out.
            manager.release_leases().await;
        }
    }
    Ok(())
}

/// The key of session access tokens, kept in the data directory (mode
/// 0600) so the tokens in `endpoints` survive a restart of the server.
fn session_token_key(data_dir: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    use std::io::{Read, Write};
    let path = data_dir.join("session-token.key");
    let mut key = [0u8; 32];
    match std::fs::File::open(&path) {
        Ok(mut f) => {
            f.read_exact(&mut key)
                .with_context(|| format!("reading {}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            random_key(&mut key);
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            o.open(&path)
                .and_then(|mut f| f.write_all(&key))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    }
    Ok(key)
}

fn random_key(key: &mut [u8; 32]) {
    // A token is 32 bytes of OS randomness, hex-encoded.
    let hex = cc_core::Token::generate();
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex.expose()[i * 2..i * 2 + 2], 16).unwrap_or(0);
    }
}

/// Deletes the logs of sessions ended more than `days` ago, hourly.
/// Deletes the logs of sessions ended more than `days` ago, hourly, by one
/// replica at a time (a cluster-wide job lock held for the hour).
fn spawn_retention(store: AnyStore, replica: String, days: u64) {
    use cc_core::Leases;
    const EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
    let keep = std::time::Duration::from_secs(days * 86_400);
    tokio::spawn(async move {
        loop {
            match store.lock_job("retention", &replica, EVERY).await {
                Ok(true) => {
                    let cutoff = cc_core::now()
                        .checked_sub(keep)
                        .unwrap_or(std::time::UNIX_EPOCH);
                    match store.purge_logs_before(cutoff).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(events = n, "retention: deleted old session logs"),
                        Err(e) => tracing::error!(error = %e, "retention: purging session logs"),
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "retention: taking the job lock"),
            }
            tokio::time::sleep(EVERY).await;
        }
    });
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

fn parse_egress(s: &str) -> Result<EgressMode, String> {
    EgressMode::parse(s).ok_or_else(|| format!("{s:?} is not one of none, allowlist, open"))
}

fn parse_push_prefix(s: &str) -> Result<String, String> {
    cc_core::PushPolicy::validate_prefix(s).map(|()| s.to_owned())
}

#[cfg(test)]
mod tests {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

    #[test]
    fn the_admin_token_file_is_read_trimmed_and_errors_never_show_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token");
        std::fs::write(&path, "  s3cret-admin-token-0123\n").unwrap();
        assert_eq!(
            super::read_secret_file(&path, "--admin-token-file").unwrap(),
            "s3cret-admin-token-0123"
        );
        std::fs::write(&path, "\n").unwrap();
        let err = super::read_secret_file(&path, "--admin-token-file").unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        let err =
            super::read_secret_file(&dir.path().join("none"), "--admin-token-file").unwrap_err();
        assert!(
            format!("{err:#}").contains("--admin-token-file: reading"),
            "{err:#}"
        );
    }

    #[test]
    fn the_admin_token_comes_from_one_place_only() {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            args: super::ServeArgs,
        }
        use clap::Parser;
        let both = Serve::try_parse_from([
            "serve",
            "--admin-token",
            "0123456789abcdef",
            "--admin-token-file",
            "/run/secrets/admin",
        ]);
        assert!(both.is_err());
        let file = Serve::try_parse_from(["serve", "--admin-token-file", "/run/secrets/admin"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(file.args.admin_token_file.is_some());
    }

    #[test]
    fn serve_raises_the_open_files_soft_limit_to_the_hard_limit() {
        let before = getrlimit(Resource::Nofile);
        let Some(hard) = before.maximum else {
            return; // unlimited: nothing to raise
        };
        // Start from a low soft limit, as many systems ship (1024).
        let low = hard.min(256);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(low),
                maximum: Some(hard),
            },
        )
        .unwrap();
        super::raise_open_files_limit();
        assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
    }
}
