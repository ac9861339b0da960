//! The gateway: what a session container may reach on the orchestrator.
//!
//! Served on its own listener, which sessions reach on their network's
//! gateway address. Every request must carry the session's token; the
//! gateway adds the real credentials on the way out, so they never enter
//! the container.
//! - `/anthropic/{session}/v1/messages` (and `.../count_tokens`): relay
//!   to the Anthropic API under the admin's model policy and budgets
//!   ([`anthropic`]), each answer's usage metered as it passes into the
//!   session's spend ([`meter`]);
//! - `/git/{session}/{info/refs | git-upload-pack | git-receive-pack}`:
//!   relay to the session's repository ([`git`]), pushes only under the
//!   push rules ([`push`]); the repository's host must still pass the
//!   public-address check of create, and the relay connects only to
//!   addresses that pass it;
//! - `CONNECT host:port`: tunnels to allowlisted hosts ([`proxy`]).

mod anthropic;
mod git;
mod meter;
mod proxy;
pub mod push;

use crate::auth::Access;
use crate::ServerStore;
use crate::{AppManager, ServerConfig};
use axum::body::Body;
use axum::http::header::CONTENT_LENGTH;
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
    /// Memory for Anthropic request bodies, all sessions together.
    pub body_budget: Arc<push::PushBudget>,
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
            body_budget: self.body_budget.clone(),
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
        body_budget: Arc::new(push::PushBudget::new(anthropic::MAX_BODIES_IN_FLIGHT)),
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

/// The git relay's (and the webhook sender's) resolver: a name resolves
/// only to public addresses (see [`cc_core::addresses`]) unless the admin
/// allowed a host of that name (`--allow-repo-host`, `--allow-webhook-host`). The relay checked the
/// repository's `host:port` exactly before sending ([`check_upstream`]);
/// this makes the connection itself go only where that check would allow,
/// whatever the name resolves to by then. IP-literal URLs never reach a
/// resolver: the check before sending covers them.
pub(crate) struct PublicOnly {
    allowed_names: Vec<String>,
}

impl PublicOnly {
    pub(crate) fn new(allowed_repo_hosts: &[String]) -> Self {
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
    let out = response_head(&resp);
    let body = Body::from_stream(resp.bytes_stream().map_err(std::io::Error::other));
    out.body(body)
        .unwrap_or_else(|_| refuse(StatusCode::BAD_GATEWAY, "bad upstream response"))
}

/// The status and end-to-end headers of an upstream answer.
fn response_head(resp: &reqwest::Response) -> axum::http::response::Builder {
    let mut out = Response::builder().status(resp.status().as_u16());
    if let Some(h) = out.headers_mut() {
        for (k, v) in resp.headers() {
            if !is_hop_header(k) {
                h.append(k.clone(), v.clone());
            }
        }
    }
    out
}

/// A refusal in the Anthropic API's error shape (`{"type": "error",
/// "error": {"type", "message"}}`), which Claude Code reads and shows; the
/// error type is the one the Anthropic API gives for the status.
fn refuse(status: StatusCode, message: &str) -> Response<Body> {
    let kind = match status.as_u16() {
        400 | 411 | 415 => "invalid_request_error",
        401 | 407 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    };
    let body = serde_json::json!({
        "type": "error",
        "error": { "type": kind, "message": message },
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

/// The session named in the path, if the request carries its token (a
/// session this replica runs, or one another replica runs: see
/// `Manager::session_credentials`).
#[allow(clippy::result_large_err)] // the refusal is the handler's answer
async fn authenticate<R: Runtime, S: Store>(
    st: &GatewayState<R, S>,
    session: &str,
    headers: &HeaderMap,
) -> Result<(SessionId, Arc<SessionCredentials>), Response<Body>> {
    let Some(session) = SessionId::parse(session) else {
        return Err(refuse(StatusCode::UNAUTHORIZED, "unknown session"));
    };
    let creds = match presented_token(headers) {
        Some(t) => st.manager.session_credentials(&session, t).await,
        None => None,
    };
    match creds {
        Some(creds) => Ok((session, creds)),
        None => Err(refuse(StatusCode::UNAUTHORIZED, "invalid session token")),
    }
}

/// Sets the request's body on the way upstream, streamed as it arrives and
/// framed as the client framed it: a body that came with a `Content-Length`
/// leaves with the same length (a git server behind a CGI wrapper reads
/// only that many bytes, and an empty body without it), one that came
/// chunked leaves chunked. hyper has already checked that the client's
/// length is one number, and ends the body with an error if fewer bytes
/// arrive, so the upstream never gets a body shorter than announced.
fn with_streamed_body(
    upstream: reqwest::RequestBuilder,
    req: axum::extract::Request,
) -> reqwest::RequestBuilder {
    use axum::body::HttpBody as _;
    let declared = req.headers().contains_key(CONTENT_LENGTH);
    let upstream = match req.body().size_hint().exact() {
        Some(length) if declared => upstream.header(CONTENT_LENGTH, length),
        _ => upstream,
    };
    upstream.body(reqwest::Body::wrap_stream(
        req.into_body()
            .into_data_stream()
            .map_err(std::io::Error::other),
    ))
}

/// Why a request body was not read whole ([`read_whole`]).
enum BodyError {
    /// It came with a `Content-Encoding`: what it says cannot be checked.
    Compressed,
    /// Longer than the relay takes (declared or as it arrived).
    TooLarge,
    /// The gateway's memory for bodies in flight is taken.
    Busy,
    /// The client broke off; the cause.
    Broken(String),
}

/// The whole request body, unencoded, of at most `max` bytes, held within
/// the gateway's memory for bodies in flight (`held` grows as it arrives).
async fn read_whole(
    req: axum::extract::Request,
    held: &mut push::Reservation,
    max: usize,
) -> Result<bytes::Bytes, BodyError> {
    use futures_util::StreamExt;
    let headers = req.headers();
    let encoded = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() != b"identity");
    if encoded {
        return Err(BodyError::Compressed);
    }
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut stream = req.into_body().into_data_stream();
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Broken(e.to_string()))?;
        let len = body.len() + chunk.len();
        if len > max {
            return Err(BodyError::TooLarge);
        }
        if !held.grow_to(len) {
            return Err(BodyError::Busy);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
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
