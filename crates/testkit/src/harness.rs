//! A whole ClaudeCluster on this machine's Docker, for end-to-end tests,
//! benchmarks and the demo: the orchestrator (in-process, real listeners),
//! a model double as the Anthropic upstream, and a smart-HTTP git server.
//! Everything is reached through the public API with [`cc_client`].

use crate::docker::PrefixGuard;
use crate::git_server::GitServer;
use anyhow::{bail, Context};
use cc_client::{Client, EventStream};
use cc_core::{Manager, ManagerConfig};
use cc_model_double::{ModelDouble, ModelDoubleConfig};
use cc_runtime_docker::DockerRuntime;
use cc_server::{HttpAgent, ServerConfig};
use cc_store_sqlite::SqliteStore;
use cc_wire::api::{CreateSessionRequest, ServerMessage, SessionConfigRequest, SessionState};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The user the harness's `client` acts as.
pub const HARNESS_USER: &str = "tester";

/// When set (`CIDR[/LEN]`, e.g. `10.216.0.0/16`; /28 subnets unless LEN
/// says), session networks take their subnets from this pool instead of
/// Docker's default address pools (about 30 networks between all runs).
pub const SUBNET_POOL_ENV: &str = "CLAUDECLUSTER_TEST_SUBNET_POOL";

/// When set (e.g. `runsc`), session containers run under this Docker
/// runtime (`serve --container-runtime`); `scripts/test.sh` runs the
/// end-to-end session and isolation tests once more under gVisor.
pub const CONTAINER_RUNTIME_ENV: &str = "CLAUDECLUSTER_TEST_CONTAINER_RUNTIME";

/// The Docker runtime the tests' sessions run under, when not Docker's
/// default.
pub fn container_runtime() -> Option<String> {
    std::env::var(CONTAINER_RUNTIME_ENV)
        .ok()
        .filter(|r| !r.trim().is_empty())
}

/// Image the tests run unless `CLAUDECLUSTER_TEST_IMAGE` names another.
pub const DEFAULT_TEST_IMAGE: &str = "claudecluster-worker:latest";

pub struct Harness {
    /// Authenticated as [`HARNESS_USER`] with [`Harness::user_token`].
    pub client: Client,
    /// Authenticated with the bootstrap admin token.
    pub admin: Client,
    pub admin_token: String,
    /// An API token of the user [`HARNESS_USER`].
    pub user_token: String,
    pub git: GitServer,
    pub model: ModelDouble,
    /// The "user's" Claude API key; the model double accepts only this.
    pub api_key: String,
    pub manager: Manager<DockerRuntime, HttpAgent, SqliteStore>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    /// The server's data directory (database, `audit.jsonl`).
    pub data: tempfile::TempDir,
    /// Reconciler loops (container events, orphan sweep).
    _background: cc_core::reconciler::Background,
    /// The webhook dispatcher, when the options turned webhooks on.
    _webhooks: Option<cc_server::webhook::Background>,
    // Dropped last: removes whatever the run left behind.
    pub docker: PrefixGuard,
}

#[derive(Default)]
pub struct HarnessOptions {
    pub upstream: Option<String>,
    pub api_key: Option<String>,
    /// Push rules and forges.
    pub git: cc_server::GitConfig,
    /// A forge of this kind whose API is at this URL, for the harness's
    /// git server (pull request tests point it at a fake).
    pub forge: Option<(cc_server::forge::ForgeKind, String)>,
    /// Webhooks on: the dispatcher runs with these rules (and the server
    /// gets a sealing key for the endpoints' secrets).
    pub webhooks: Option<cc_server::webhook::WebhookConfig>,
    /// Session streams one user may hold open at once, when more than the
    /// server's default (64): a benchmark watching more sessions.
    pub max_streams_per_user: Option<usize>,
}

impl Harness {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(HarnessOptions {
            upstream: None,
            api_key: None,
            ..Default::default()
        })
        .await
    }

    /// With `upstream`, sessions talk to that Anthropic API instead of the
    /// model double (the demo with a real key).
    pub async fn start_with(opts: HarnessOptions) -> anyhow::Result<Self> {
        Self::start_configured(opts, |_| {}).await
    }

    /// Like [`Self::start_with`], letting the test adjust the deployment's
    /// configuration (e.g. the admin's agent policy) before the server starts.
    pub async fn start_configured(
        opts: HarnessOptions,
        configure: impl FnOnce(&mut ManagerConfig),
    ) -> anyhow::Result<Self> {
        let docker = PrefixGuard::new();
        let image =
            std::env::var("CLAUDECLUSTER_TEST_IMAGE").unwrap_or_else(|_| DEFAULT_TEST_IMAGE.into());
        let runtime = DockerRuntime::connect(docker.prefix.clone()).await?;
        runtime.check_image(&image).await.context(
            "the end-to-end tests need the worker image: run `scripts/test.sh`, or `cargo build --workspace && target/debug/claudecluster image build`",
        )?;
        let api_key = opts.api_key.unwrap_or_else(|| {
            format!(
                "sk-ant-test-{}",
                crate::docker::unique_prefix().trim_matches('-')
            )
        });
        let model = cc_model_double::spawn(ModelDoubleConfig {
            api_key: Some(api_key.clone()),
            latency_ms: 0,
        })
        .await?;
        let git = GitServer::start().await?;
        let data = tempfile::tempdir()?;
        let store = SqliteStore::open(data.path())?;
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        // Sessions reach the gateway on their bridge's host address.
        let gateway = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
        let runtime = match std::env::var(SUBNET_POOL_ENV) {
            Ok(spec) if !spec.trim().is_empty() => {
                let pool = cc_runtime_docker::SubnetPool::parse(&spec, 28)
                    .with_context(|| format!("{SUBNET_POOL_ENV}={spec}"))?;
                runtime.with_subnet_pool(pool.cidr(), pool.subnet_prefix())?
            }
            _ => runtime,
        };
        let runtime = match container_runtime() {
            Some(name) => runtime.with_container_runtime(&name).await?,
            None => runtime,
        };
        let runtime = runtime
            .with_host_firewall(gateway.local_addr()?.port())
            .await?;
        let mut config = ManagerConfig::new(image, gateway.local_addr()?.port());
        config.allowed_repo_hosts = vec![git.addr().to_string()];
        let notices = opts.webhooks.as_ref().map(|_| {
            let (tx, rx) = cc_server::webhook::channel();
            config.notices = Some(tx);
            config.seal_key = Some(cc_core::secrets::SealKey::generate());
            rx
        });
        configure(&mut config);
        let manager = Manager::new(runtime, HttpAgent::new()?, store, config);
        let background = cc_core::reconciler::start(&manager);
        let webhooks = notices
            .zip(opts.webhooks.clone())
            .map(|(rx, rules)| cc_server::webhook::start(manager.clone(), rx, rules));
        let base = format!("http://{}", api.local_addr()?);
        let admin_token = format!("harness-admin-{}", cc_core::Token::generate().expose());
        let user = cc_core::identity::NewToken::generate(
            HARNESS_USER,
            cc_core::Role::User,
            Some("harness".into()),
            cc_core::now(),
        );
        cc_core::IdentityStore::insert_token(manager.store(), &user.record).await?;
        let server_config = ServerConfig {
            public_url: None,
            anthropic_upstream: opts.upstream.unwrap_or_else(|| model.base_url()),
            check_api_key: false,
            access: cc_server::AccessConfig {
                admin_token: Some(admin_token.clone()),
                audit_jsonl: Some(data.path().join("audit.jsonl")),
                max_streams_per_user: opts
                    .max_streams_per_user
                    .unwrap_or_default()
                    .max(cc_server::auth::DEFAULT_MAX_STREAMS_PER_USER),
                ..Default::default()
            },
            git: cc_server::GitConfig {
                mirror_dir: Some(data.path().join("git-mirrors")),
                forges: opts
                    .forge
                    .map(|(kind, api_url)| cc_server::forge::Forge {
                        kind,
                        host: git.addr().to_string(),
                        api_url,
                    })
                    .into_iter()
                    .chain(opts.git.forges)
                    .collect(),
                ..opts.git
            },
            peers: None,
            webhooks: opts.webhooks.unwrap_or_default(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(cc_server::serve(
            api,
            gateway,
            manager.clone(),
            server_config,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            client: Client::with_token(base.clone(), Some(user.token.clone()))?,
            admin: Client::with_token(base, Some(admin_token.clone()))?,
            admin_token,
            user_token: user.token,
            git,
            model,
            api_key,
            manager,
            stop: Some(stop),
            server: Some(server),
            data,
            _background: background,
            _webhooks: webhooks,
            docker,
        })
    }

    /// A create request for `repo_url` with the harness's key.
    pub fn create_request(&self, repo_url: &str, branch: Option<&str>) -> CreateSessionRequest {
        session_request(repo_url, branch, &self.api_key)
    }

    /// Ends every session and stops the server.
    pub async fn shutdown(mut self) {
        self.manager.terminate_all().await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Reads a stream until a message matches, collecting everything read.
pub async fn read_until(
    stream: &mut EventStream,
    timeout: Duration,
    mut done: impl FnMut(&ServerMessage) -> bool,
) -> anyhow::Result<Vec<ServerMessage>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .with_context(|| {
                format!(
                    "timed out after {timeout:?}; read so far: {}",
                    summary(&seen)
                )
            })??;
        let Some(msg) = next else {
            bail!("stream closed; read so far: {}", summary(&seen));
        };
        let stop = done(&msg);
        seen.push(msg);
        if stop {
            return Ok(seen);
        }
    }
}

/// Reads a stream until the session is `ready` (collecting everything
/// read); fails with what was read if it reaches `error` first.
pub async fn until_ready(
    stream: &mut EventStream,
    timeout: Duration,
) -> anyhow::Result<Vec<ServerMessage>> {
    let seen = read_until(stream, timeout, |m| {
        is_state(m, SessionState::Ready) || is_state(m, SessionState::Error)
    })
    .await?;
    if !seen
        .last()
        .is_some_and(|m| is_state(m, SessionState::Ready))
    {
        bail!("the session failed: {}", summary(&seen));
    }
    Ok(seen)
}

/// True for a `status` message with this state.
pub fn is_state(msg: &ServerMessage, state: SessionState) -> bool {
    matches!(msg, ServerMessage::Status { state: s, .. } if *s == state)
}

/// True for an `error` reporting a process killed for memory.
pub fn is_oom_report(msg: &ServerMessage) -> bool {
    matches!(msg, ServerMessage::Error { code: Some(c), .. } if c == "oom_kill")
}

/// How many `oom_kill` reports the session's log holds.
pub async fn oom_reports_logged(client: &Client, id: &str) -> anyhow::Result<u64> {
    let log = client.logs(id, 0, 10_000).await?;
    Ok(log.events.iter().filter(|m| is_oom_report(m)).count() as u64)
}

/// The tests' create request: `repo_url` (at `branch`), the user's
/// `api_key`, a 600 s lifetime, everything else the server's default.
pub fn session_request(
    repo_url: &str,
    branch: Option<&str>,
    api_key: &str,
) -> CreateSessionRequest {
    CreateSessionRequest {
        repo_url: repo_url.into(),
        branch: branch.map(Into::into),
        claude_api_key: api_key.into(),
        repo_token: None,
        config: Some(SessionConfigRequest {
            memory: None,
            cpu: None,
            timeout: Some(600),
            idle_timeout: None,
            egress: None,
        }),
        options: None,
    }
}

/// The concatenated `output` text of messages.
pub fn output_text(msgs: &[ServerMessage]) -> String {
    msgs.iter()
        .filter_map(|m| match m {
            ServerMessage::Output { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// A compact rendering of messages for failure messages.
pub fn summary(msgs: &[ServerMessage]) -> String {
    msgs.iter()
        .map(|m| match m {
            ServerMessage::Output { seq, text, .. } => format!("#{seq} output {text:?}"),
            ServerMessage::Status {
                seq, state, reason, ..
            } => {
                format!(
                    "#{seq} status {} {}",
                    state.as_str(),
                    reason.clone().unwrap_or_default()
                )
            }
            ServerMessage::Error { seq, message, .. } => format!("#{seq} error {message}"),
            ServerMessage::Command { seq, text, .. } => format!("#{seq} command {text:?}"),
            ServerMessage::Claude { seq, event, .. } => {
                format!(
                    "#{seq} claude {}",
                    event.get("type").and_then(|t| t.as_str()).unwrap_or("?")
                )
            }
            ServerMessage::TurnResult { seq, turn, .. } => format!(
                "#{seq} turnResult {} {}",
                turn.subtype,
                turn.error.clone().unwrap_or_default()
            ),
            ServerMessage::Keepalive { .. } => "keepalive".into(),
            ServerMessage::PermissionRequest {
                seq,
                request_id,
                tool,
                ..
            } => format!("#{seq} permissionRequest {request_id} {tool}"),
            ServerMessage::PermissionAnswer {
                seq,
                request_id,
                allow,
                source,
                ..
            } => format!("#{seq} permissionAnswer {request_id} allow={allow} {source}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}
