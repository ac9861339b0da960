//! The orchestrator's network face.
//!
//! - [`api`]: the public REST + WebSocket API. Handlers only turn requests
//!   into calls on the session core; they never touch the runtime.
//! - [`gateway`]: the only way out of a session container — the Anthropic
//!   API relay (swaps the session token for the user's key) and the git
//!   relay (clone/fetch of the session's repository).
//! - [`agent_client`]: the HTTP client for sessiond, the core's `Agent`.
//! - [`forge`]: opening pull (merge) requests through GitHub and GitLab APIs.
//!
//! [`serve`] takes its listeners and shutdown signal as arguments so tests
//! bind port 0 and stop it when they like; both listeners run
//! [`auth::connections::serve`] (header-read and idle timeouts, connection
//! caps per client IP and in all).

pub mod agent_client;
pub mod api;
pub mod auth;
pub mod cluster;
pub mod console;
pub mod forge;
pub mod gateway;
pub mod metrics;
pub mod otel;
pub mod tls;
pub mod upstream_check;
pub mod webhook;

pub use agent_client::HttpAgent;

pub use auth::{AccessConfig, ServerStore};
use axum::serve::ListenerExt;
use cc_core::{Manager, Runtime};
use std::future::Future;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// Stream messages and relayed chunks are small writes: without
/// `TCP_NODELAY`, Nagle holds each back until the peer acknowledges the
/// previous one (up to its delayed-ACK timer, ~40 ms).
fn no_delay(tcp: &mut TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "setting TCP_NODELAY");
    }
}

/// The manager as the server drives it.
pub type AppManager<R, S> = Manager<R, HttpAgent, S>;

/// Settings of the HTTP face.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Base URL clients use to reach the API (`http://host:port`); taken
    /// from the request's `Host` header when unset.
    pub public_url: Option<String>,
    /// Where the Anthropic relay forwards (`https://api.anthropic.com`).
    pub anthropic_upstream: String,
    /// Ask `anthropic_upstream` whether it accepts a session's Claude API
    /// key before creating the session (see [`upstream_check`]).
    pub check_api_key: bool,
    /// Tokens, limits, allowlist and audit (see [`auth`]).
    pub access: auth::AccessConfig,
    /// Pushes and pull requests.
    pub git: GitConfig,
    /// The other replicas sharing the store, when there are any: requests
    /// on sessions they own are forwarded to them (see [`cluster`]).
    pub peers: Option<cluster::Peers>,
    /// Who may register webhook endpoints where.
    pub webhooks: webhook::WebhookConfig,
}

/// How a session's work leaves it: the push rules the git relay enforces
/// and the forges pull requests are opened on.
#[derive(Debug, Clone, Default)]
pub struct GitConfig {
    pub push: cc_core::PushPolicy,
    /// Forges beyond github.com and gitlab.com (tried first).
    pub forges: Vec<forge::Forge>,
    /// Where the relay keeps bare mirrors for its fast-forward check; a
    /// directory under the system's temporary directory when unset.
    pub mirror_dir: Option<std::path::PathBuf>,
}

pub const DEFAULT_ANTHROPIC_UPSTREAM: &str = "https://api.anthropic.com";

/// Refuses an API address beyond loopback while no token is configured at
/// all (no admin token, no API token): such a server would be open.
pub async fn check_exposure<S: cc_core::IdentityStore>(
    addr: std::net::SocketAddr,
    access: &AccessConfig,
    store: &S,
) -> std::io::Result<()> {
    if addr.ip().to_canonical().is_loopback() || access.admin_token.is_some() {
        return Ok(());
    }
    if store.active_tokens().await.map_err(std::io::Error::other)? > 0 {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "refusing to serve the API on {addr} without any API token: set \
             --admin-token (CLAUDECLUSTER_ADMIN_TOKEN) or create one with \
             `claudecluster admin token create`, or listen on loopback"
        ),
    ))
}

/// Serves the API and the gateway until `shutdown` resolves; in-flight
/// requests finish first.
///
/// Refuses (before serving anything) an API listener beyond loopback while
/// no token is configured at all (no admin token and no API token), and
/// push prefixes that overlap the sessions' own branches.
pub async fn serve<R: Runtime, S: ServerStore>(
    api_listener: TcpListener,
    gateway_listener: TcpListener,
    manager: AppManager<R, S>,
    mut config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    config
        .git
        .push
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let addr = api_listener.local_addr()?;
    check_exposure(addr, &config.access, manager.store()).await?;
    config.access.open_when_no_tokens = addr.ip().to_canonical().is_loopback();
    if let Some(path) = &config.access.audit_jsonl {
        auth::open_append(path)?;
    }
    let config = Arc::new(config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let access = Arc::new(auth::Access::new(config.access.clone()));
    if config.peers.is_some() {
        tokio::spawn(cluster::share_limits(
            manager.clone(),
            access.clone(),
            stop_rx.clone(),
        ));
    }
    let gateway_router = gateway::router(manager.clone(), config.clone(), access.clone());
    tokio::spawn(auth::container_audit::follow(
        manager.clone(),
        access.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(auth::container_audit::follow_core(
        manager.clone(),
        access.clone(),
        stop_rx.clone(),
    ));
    let app = api::router_with_access(manager.clone(), config.clone(), access);
    let api_limits = config.access.api_connections;
    let api: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
        match &config.access.tls {
            Some(files) => {
                let tls = tls::TlsListener::new(api_listener, tls::acceptor(files)?)?;
                Box::pin(auth::connections::serve(
                    tls,
                    app,
                    api_limits,
                    stop_rx.clone(),
                ))
            }
            None => Box::pin(auth::connections::serve(
                api_listener.tap_io(no_delay),
                app,
                api_limits,
                stop_rx.clone(),
            )),
        };
    let gateway = auth::connections::serve(
        gateway_listener.tap_io(no_delay),
        gateway_router.layer(axum::middleware::from_fn(metrics::count_gateway)),
        config.access.gateway_connections,
        stop_rx,
    );
    tokio::try_join!(api, gateway)?;
    Ok(())
}
