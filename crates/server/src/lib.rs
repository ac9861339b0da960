//! The orchestrator's network face.
//!
//! - [`api`]: the public REST + WebSocket API. Handlers only turn requests
//!   into calls on the session core; they never touch the runtime.
//! - [`gateway`]: the only way out of a session container — the Anthropic
//!   API relay (swaps the session token for the user's key) and the git
//!   relay (clone/fetch of the session's repository).
//! - [`agent_client`]: the HTTP client for sessiond, the core's `Agent`.
//!
//! [`serve`] takes its listeners and shutdown signal as arguments so tests
//! bind port 0 and stop it when they like.

pub mod agent_client;
pub mod api;
pub mod gateway;

pub use agent_client::HttpAgent;

use cc_core::{Manager, Runtime, Store};
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use tokio::net::TcpListener;

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
}

pub const DEFAULT_ANTHROPIC_UPSTREAM: &str = "https://api.anthropic.com";

/// Serves the API and the gateway until `shutdown` resolves; in-flight
/// requests finish first.
pub async fn serve<R: Runtime, S: Store>(
    api_listener: TcpListener,
    gateway_listener: TcpListener,
    manager: AppManager<R, S>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = axum::serve(
        api_listener,
        api::router(manager.clone(), config.clone())
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()));
    let gateway = axum::serve(gateway_listener, gateway::router(manager, config))
        .with_graceful_shutdown(stopped(stop_rx));
    tokio::try_join!(api.into_future(), gateway.into_future())?;
    Ok(())
}
