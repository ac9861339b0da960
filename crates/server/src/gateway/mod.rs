//! The gateway: what a session container may reach on the orchestrator.
//!
//! Served on its own listener, which sessions reach on their network's
//! gateway address. Every request must carry the session's token; the
//! gateway adds the real credentials on the way out, so they never enter
//! the container.
//! - `/anthropic/{session}/v1/...`: relay to the Anthropic API
//!   ([`anthropic`]);
//! - `/git/{session}/{info/refs | git-upload-pack | git-receive-pack}`:
//!   relay to the session's repository ([`git`]), pushes only under the
//!   push rules ([`push`]); the repository's host must still pass the
//!   public-address check of create, and the relay connects only to
//!   addresses that pass it;
//! - `CONNECT host:port`: tunnels to allowlisted hosts ([`proxy`]).

mod anthropic;
mod git;
mod proxy;
pub mod push;

use crate::auth::Access;
use crate::ServerStore;
use crate::{AppManager, ServerConfig};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, Response, StatusCode};
use axum::routing::any;
use axum::Router;
use cc_core::{Runtime, SessionCredentials, SessionId, Store};
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct GatewayState<R, S> {
    pub manager: AppManager<R, S>,
    pub config: Arc<ServerConfig>,
    pub access: Arc<Access>,
    pub client: reqwest::Client,
    /// The client of the git relay: resolves a repository's host itself
    /// and connects only to public addresses (see [`PublicOnly`]).
    pub git_client: reqwest::Client,
    pub mirrors: Arc<push::Mirrors>,
    /// One push at a time per session (they share its mirror).
    pub push_locks: Arc<Mutex<HashMap<SessionId, Arc<tokio::sync::Mutex<()>>>>>,
    /// The upstream's default branch per session, once asked (a session
    /// created without `branch` started from it).
    pub default_branches: Arc<Mutex<HashMap<SessionId, String>>>,
    /// Memory for push bodies, all sessions together.
    pub push_budget: Arc<push::PushBudget>,
}

impl<R, S> Clone for GatewayState<R, S> {
    fn clone(&self) -> Self {
        Self {
            manager: self.manager.clone(),
            config: self.config.clone(),
            access: self.access.clone(),
            client: self.client.clone(),
            git_client: self.git_client.clone(),
            mirrors: self.mirrors.clone(),
            push_locks: self.push_locks.clone(),
            default_branches: self.default_branches.clone(),
            push_budget: self.push_budget.clone(),
        }
    }
}

/// Upstream connection setup; long responses (streamed turns, big clones)
/// are not bounded, only connecting is.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn router<R: Runtime, S: ServerStore>(
    manager: AppManager<R, S>,
    config: Arc<ServerConfig>,
    access: Arc<Access>,
) -> Router {
    let builder = || {
        reqwest::Client::builder()
            .connect_timeout(UPSTREAM_CONNECT_TIMEOUT)
            // A redirect could lead the relay somewhere the policy never checked.
            .redirect(reqwest::redirect::Policy::none())
    };
    let client = builder()
        .build()
        .expect("building the gateway's HTTP client");
    let allowed_repo_hosts = manager.config().allowed_repo_hosts.clone();
    let git_client = builder()
        .dns_resolver(Arc::new(PublicOnly::new(&allowed_repo_hosts)))
        .build()
        .expect("building the git relay's HTTP client");
    // Unique per router: each prunes the mirrors of sessions it does not know.
    static ROUTERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mirror_root = config.git.mirror_dir.clone().unwrap_or_else(|| {
        let n = ROUTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::env::temp_dir().join(format!("claudecluster-mirrors-{}-{n}", std::process::id()))
    });
    let state = GatewayState {
        manager,
        config,
        access,
        client,
        git_client,
        mirrors: Arc::new(push::Mirrors::new(mirror_root).allowing(allowed_repo_hosts)),
        push_locks: Arc::default(),
        default_branches: Arc::default(),
        push_budget: Arc::new(push::PushBudget::new(push::MAX_PUSH_BYTES_IN_FLIGHT)),
    };
    Router::new()
        .route(
            "/anthropic/{session}/{*rest}",
            any(anthropic::relay::<R, S>),
        )
        .route("/git/{session}/{*rest}", any(git::relay::<R, S>))
        .fallback(proxy::connect_or_not_found::<R, S>)
        .with_state(state)
}

/// The git relay's resolver: a name resolves only to public addresses
/// (see [`cc_core::addresses`]) unless the admin allowed a repository
/// host of that name (`--allow-repo-host`). The relay checked the
/// repository's `host:port` exactly before sending ([`check_upstream`]);
/// this makes the connection itself go only where that check would allow,
/// whatever the name resolves to by then. IP-literal URLs never reach a
/// resolver: the check before sending covers them.
struct PublicOnly {
    allowed_names: Vec<String>,
}

impl PublicOnly {
    fn new(allowed_repo_hosts: &[String]) -> Self {
        let allowed_names = allowed_repo_hosts
            .iter()
            .map(|hp| {
                let host = hp.rsplit_once(':').map_or(hp.as_str(), |(h, _)| h);
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_ascii_lowercase()
            })
            .collect();
        Self { allowed_names }
    }
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let allowed = self.allowed_names.contains(&host);
        Box::pin(async move {
            let addrs = cc_core::addresses::resolve_checked(&host, 0, allowed).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A refused repository host as the gateway answers it: 403 for a host the
/// policy refuses, 502 for one that does not resolve.
fn refusal_of(e: &cc_core::CoreError) -> Response<Body> {
    let status = match e {
        cc_core::CoreError::Forbidden { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_GATEWAY,
    };
    refuse(status, &e.to_string())
}

/// Refuses a request whose repository the policy does not let the relay
/// reach now: its host allowed exactly (`--allow-repo-host`), or resolving
/// only to public addresses — the check made at create, made again for
/// every request, since what a name resolves to changes.
#[allow(clippy::result_large_err)] // the refusal is the handler's answer
async fn check_upstream<R: Runtime, S: Store>(
    st: &GatewayState<R, S>,
    repo_url: &str,
) -> Result<(), Response<Body>> {
    let repo = cc_core::policy::parse_repo_url(repo_url).map_err(|e| refusal_of(&e))?;
    let allowed = &st.manager.config().allowed_repo_hosts;
    cc_core::policy::check_repo_host(&repo, allowed)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "git relay: repository host refused");
            refusal_of(&e)
        })
}

/// Hop-by-hop and framing headers are never forwarded.
fn is_hop_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// Turns an upstream response into ours, streaming the body.
fn relay_response(resp: reqwest::Response) -> Response<Body> {
    let mut out = Response::builder().status(resp.status().as_u16());
    if let Some(h) = out.headers_mut() {
        for (k, v) in resp.headers() {
            if !is_hop_header(k) {
                h.append(k.clone(), v.clone());
            }
        }
    }
    let body = Body::from_stream(resp.bytes_stream().map_err(std::io::Error::other));
    out.body(body)
        .unwrap_or_else(|_| refuse(StatusCode::BAD_GATEWAY, "bad upstream response"))
}

fn refuse(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "type": "error",
        "error": { "type": "gateway_error", "message": message },
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

/// The session named in the path, if the request carries its token.
#[allow(clippy::result_large_err)] // the refusal is the handler's answer
fn authenticate<R: Runtime, S: Store>(
    st: &GatewayState<R, S>,
    session: &str,
    headers: &HeaderMap,
) -> Result<(SessionId, Arc<SessionCredentials>), Response<Body>> {
    let Some(session) = SessionId::parse(session) else {
        return Err(refuse(StatusCode::UNAUTHORIZED, "unknown session"));
    };
    match presented_token(headers).and_then(|t| st.manager.credentials().authenticate(&session, t))
    {
        Some(creds) => Ok((session, creds)),
        None => Err(refuse(StatusCode::UNAUTHORIZED, "invalid session token")),
    }
}

/// The request's body, streamed to the upstream as it arrives.
fn streamed_body(req: axum::extract::Request) -> reqwest::Body {
    reqwest::Body::wrap_stream(
        req.into_body()
            .into_data_stream()
            .map_err(std::io::Error::other),
    )
}

/// The bearer token of a request, from `x-api-key` or `Authorization`.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
}
