//! Requests between orchestrator replicas sharing one store.
//!
//! Any replica answers any request; what only a session's owner can do (a
//! command, interrupt, diff, files, push, delete — anything that talks to
//! the session's sessiond or actor) is forwarded to the owner's API, found
//! through the session's lease (`cc_core::lease`). Reads (status, logs, the
//! stream) are served by whichever replica the client reached, from the
//! store.
//!
//! A forwarded request carries who asked and from where in one header,
//! [`FORWARDED_HEADER`], signed with HMAC-SHA256 under a key derived from the
//! replicas' shared secret key and bound to the method, the path and a time:
//! the owner trusts that principal instead of authenticating again (the
//! first replica did, with the client's token, allowlist and rate limits),
//! and no client can forge it without the key. A signature older than
//! [`MAX_AGE_MS`] is refused, so a captured header cannot be replayed later.
//! A forwarded request is never forwarded again: if the owner moved in
//! between, the client gets `503 session_moved` and retries.

use crate::api::ApiError;
use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use cc_core::identity::{hex, Principal, Role};
use cc_core::lease::Replica;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Duration;

/// The header a forwarded request carries (see the module docs).
pub const FORWARDED_HEADER: &str = "x-claudecluster-forwarded";
/// Longest a forwarded request's signature is good for: replicas' clocks
/// agree far better than this (NTP), and a forward takes milliseconds.
const MAX_AGE_MS: u64 = 60_000;
/// How long a replica waits for another to answer a forwarded request.
/// A turn's command returns once accepted and a push within a minute, so
/// this bounds only a replica that hangs.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a replica waits to connect to another: a dead one refuses or
/// stays silent; the client retries once its sessions moved (seconds).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The key replicas sign forwarded requests with (derived from the shared
/// secret key, never the key itself).
#[derive(Clone)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(…)")
    }
}

impl ClusterKey {
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }
}

/// How this replica reaches the others.
#[derive(Debug, Clone)]
pub struct Peers {
    key: ClusterKey,
    client: reqwest::Client,
}

/// Who asked, and from where, as a forwarded request says.
#[derive(Debug, Clone, PartialEq)]
pub struct Forwarded {
    pub principal: Principal,
    pub ip: Option<IpAddr>,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    user: String,
    admin: bool,
    session: Option<String>,
    ip: Option<IpAddr>,
    /// Unix milliseconds when it was signed.
    at: u64,
}

impl Peers {
    pub fn new(key: ClusterKey) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(FORWARD_TIMEOUT)
            // Replicas talk to each other directly; an environment proxy
            // would see the signed header.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { key, client })
    }

    /// The header value for a request `method path` on behalf of `who`.
    pub fn sign(&self, who: &Forwarded, method: &Method, path: &str) -> String {
        self.sign_at(who, method, path, cc_core::now_ms())
    }

    fn sign_at(&self, who: &Forwarded, method: &Method, path: &str, at: u64) -> String {
        let claims = Claims {
            user: who.principal.user.clone(),
            admin: who.principal.role == Role::Admin,
            session: who.principal.session.clone(),
            ip: who.ip,
            at,
        };
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&claims).unwrap_or_default());
        let mac = hmac(&self.key.0, &[method.as_str(), path, &body]);
        format!("{body}.{}", hex(&mac))
    }

    /// The principal a forwarded request acts for, if its header is ours,
    /// fresh and made for this method and path.
    pub fn verify(&self, value: &str, method: &Method, path: &str) -> Option<Forwarded> {
        self.verify_at(value, method, path, cc_core::now_ms())
    }

    fn verify_at(&self, value: &str, method: &Method, path: &str, now: u64) -> Option<Forwarded> {
        let (body, mac) = value.split_once('.')?;
        let expected = hex(&hmac(&self.key.0, &[method.as_str(), path, body]));
        if !cc_core::ids::secret_eq(&expected, mac) {
            return None;
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .ok()?;
        let c: Claims = serde_json::from_slice(&raw).ok()?;
        if now.abs_diff(c.at) > MAX_AGE_MS {
            return None;
        }
        Some(Forwarded {
            principal: Principal {
                user: c.user,
                role: if c.admin { Role::Admin } else { Role::User },
                session: c.session,
            },
            ip: c.ip,
        })
    }

    /// Sends `method path` with `body` to the replica that owns session
    /// `id`, on behalf of `who`, and returns its answer as it gave it;
    /// `None` when the session is (now) this replica's to serve. An owner
    /// that refuses the connection (killed, stopped) is asked again, each
    /// time through the session's lease, until its lease has run out and
    /// the session was taken over — here or by another replica — for at
    /// most [`OWNER_WAIT`]. Only a refused connection is retried: once the
    /// request may have reached the owner, its fate is the answer.
    #[allow(clippy::too_many_arguments)]
    pub async fn to_owner<R: cc_core::Runtime, S: crate::ServerStore>(
        &self,
        manager: &crate::AppManager<R, S>,
        id: &str,
        who: &Forwarded,
        method: Method,
        path: &str,
        content_type: Option<&HeaderValue>,
        body: bytes::Bytes,
    ) -> Option<Response> {
        let deadline = tokio::time::Instant::now() + OWNER_WAIT;
        loop {
            let owner = match manager.route(id).await {
                Ok(cc_core::Route::Here) => return None,
                Ok(cc_core::Route::Replica(r)) => r,
                Err(e) => return Some(ApiError::from(e).into_response()),
            };
            match self
                .forward(
                    &owner,
                    who,
                    method.clone(),
                    path,
                    content_type,
                    body.clone(),
                )
                .await
            {
                Ok(answer) => return Some(answer),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(replica = %owner.id, error = %e, "the session's replica refused; waiting for its lease to run out");
                    tokio::time::sleep(OWNER_RETRY).await;
                }
                Err(e) => {
                    tracing::warn!(replica = %owner.id, url = %owner.url, error = %e, "the session's replica does not answer");
                    return Some(unreachable(&owner));
                }
            }
        }
    }

    /// One try of [`Self::to_owner`]: `Err` when the connection could not
    /// be made (nothing reached the owner).
    async fn forward(
        &self,
        to: &Replica,
        who: &Forwarded,
        method: Method,
        path: &str,
        content_type: Option<&HeaderValue>,
        body: bytes::Bytes,
    ) -> Result<Response, reqwest::Error> {
        let url = format!("{}{path}", to.url.trim_end_matches('/'));
        let mut req = self
            .client
            .request(method.clone(), &url)
            .header(FORWARDED_HEADER, self.sign(who, &method, path));
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct.clone());
        }
        let answer = match req.body(body).send().await {
            Ok(a) => a,
            Err(e) if e.is_connect() => return Err(e),
            Err(e) => {
                tracing::warn!(replica = %to.id, url = %to.url, error = %e, "forwarding to the session's replica failed");
                return Ok(unreachable(to));
            }
        };
        let status = answer.status();
        let content_type = answer.headers().get(reqwest::header::CONTENT_TYPE).cloned();
        let bytes = match answer.bytes().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(replica = %to.id, error = %e, "reading the session's replica's answer failed");
                return Ok(unreachable(to));
            }
        };
        let mut resp = Response::new(Body::from(bytes));
        *resp.status_mut() = status;
        if let Some(ct) = content_type {
            resp.headers_mut().insert(reqwest::header::CONTENT_TYPE, ct);
        }
        Ok(resp)
    }
}

/// Longest a request waits for a dead owner's sessions to move: a lease
/// runs out [`cc_core::lease::LEASE_TTL`] after its last renewal, and the
/// takeover follows within a scan.
const OWNER_WAIT: Duration = Duration::from_secs(10);
/// Pause between asks while an owner refuses connections.
const OWNER_RETRY: Duration = Duration::from_millis(250);

/// The session a request must reach the owner for, if it is one of those
/// operations: `DELETE …/sessions/{id}` and `…/{id}/command|interrupt|diff|
/// files|push|permissions/{requestId}`.
fn owner_only<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix("/api/v1/sessions/")?;
    match rest.split_once('/') {
        None if method == Method::DELETE => Some(rest),
        Some((id, "command" | "interrupt" | "push" | "sleep" | "wake" | "fork"))
            if method == Method::POST =>
        {
            Some(id)
        }
        Some((id, verb)) if method == Method::POST && verb.starts_with("permissions/") => Some(id),
        Some((id, "diff" | "files")) if method == Method::GET => Some(id),
        _ => None,
    }
}

/// Inside authentication: sends operations on sessions another replica
/// owns to that replica, acting for the authenticated principal; the rest
/// runs here.
pub async fn middleware<R: cc_core::Runtime, S: crate::ServerStore>(
    axum::extract::State(st): axum::extract::State<crate::api::AppState<R, S>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(peers) = st.config.peers.as_ref() else {
        return next.run(req).await;
    };
    let Some(id) = owner_only(req.method(), req.uri().path()).map(str::to_owned) else {
        return next.run(req).await;
    };
    match st.manager.route(&id).await {
        Ok(cc_core::Route::Here) => return next.run(req).await,
        Ok(cc_core::Route::Replica(_)) => {}
        Err(e) => return ApiError::from(e).into_response(),
    }
    if req.headers().contains_key(FORWARDED_HEADER) {
        // Forwarded here, owned elsewhere: it moved in between.
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "session_moved",
            "the session moved to another orchestrator replica while the request was on its way; retry",
        )
        .into_response();
    }
    let (Some(principal), ip) = (
        req.extensions().get::<Principal>().cloned(),
        req.extensions()
            .get::<crate::auth::ClientIp>()
            .and_then(|c| c.0),
    ) else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let content_type = parts.headers.get(reqwest::header::CONTENT_TYPE).cloned();
    let Ok(body) = axum::body::to_bytes(body, crate::api::MAX_BODY_BYTES).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is too large",
        )
        .into_response();
    };
    let who = Forwarded { principal, ip };
    match peers
        .to_owner(
            &st.manager,
            &id,
            &who,
            parts.method.clone(),
            &path,
            content_type.as_ref(),
            body.clone(),
        )
        .await
    {
        Some(answer) => answer,
        // Taken over here while we waited: served here.
        None => {
            next.run(axum::extract::Request::from_parts(parts, Body::from(body)))
                .await
        }
    }
}

/// Path of the internal endpoint that takes a model call's spend measured
/// by another replica's gateway.
pub fn spend_path(session: &cc_core::SessionId) -> String {
    format!("/internal/v1/sessions/{session}/spend")
}

impl Peers {
    /// Adds a model call this replica's gateway measured to the session
    /// another replica runs.
    pub async fn send_spend(
        &self,
        to: &Replica,
        session: &cc_core::SessionId,
        spend: &cc_core::ModelSpend,
    ) -> anyhow::Result<()> {
        let path = spend_path(session);
        let who = Forwarded {
            principal: Principal {
                user: "replica".into(),
                role: Role::User,
                session: Some(session.to_string()),
            },
            ip: None,
        };
        let answer = self
            .client
            .post(format!("{}{path}", to.url.trim_end_matches('/')))
            .header(FORWARDED_HEADER, self.sign(&who, &Method::POST, &path))
            .json(spend)
            .send()
            .await?;
        anyhow::ensure!(
            answer.status().is_success(),
            "the replica answered {}",
            answer.status()
        );
        Ok(())
    }
}

/// The replicas' internal endpoints, outside the API's authentication:
/// each request must carry a valid [`FORWARDED_HEADER`].
pub fn router<R: cc_core::Runtime, S: crate::ServerStore>(
    state: crate::api::AppState<R, S>,
) -> axum::Router {
    axum::Router::new()
        .route(
            "/internal/v1/sessions/{id}/spend",
            axum::routing::post(take_spend::<R, S>),
        )
        .with_state(state)
}

async fn take_spend<R: cc_core::Runtime, S: crate::ServerStore>(
    axum::extract::State(st): axum::extract::State<crate::api::AppState<R, S>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let Some(session) = cc_core::SessionId::parse(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let path = spend_path(&session);
    let signed = headers
        .get(FORWARDED_HEADER)
        .and_then(|v| v.to_str().ok())
        .zip(st.config.peers.as_ref())
        .and_then(|(v, peers)| peers.verify(v, &Method::POST, &path));
    if signed.is_none_or(|f| f.principal.session.as_deref() != Some(session.as_str())) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "only another replica may report spend",
        )
        .into_response();
    }
    let Ok(spend) = serde_json::from_slice::<cc_core::ModelSpend>(&body) else {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "not a spend")
            .into_response();
    };
    match st.manager.record_spend(&session, spend).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// One user's creates, one at a time across replicas, so two creates on
/// two replicas cannot both pass the per-user session limit. A job lock in
/// the store, renewed while the create runs and released on drop; a replica
/// that dies holding it blocks the user's creates for at most
/// [`CREATE_LOCK_TTL`].
pub struct UserCreateLock<R: cc_core::Runtime, S: crate::ServerStore> {
    manager: crate::AppManager<R, S>,
    job: String,
    /// This acquisition's own holder name (the replica and a nonce), so a
    /// late release can never free a later holder's lock.
    holder: String,
    renew: tokio::task::JoinHandle<()>,
}

/// How long a user's create lock holds without renewal (it is renewed
/// every third of it while the create runs).
const CREATE_LOCK_TTL: Duration = cc_core::lease::LEASE_TTL;
/// Longest a create waits for the user's other create: long enough for a
/// dead holder's lock to run out.
const CREATE_LOCK_WAIT: Duration = Duration::from_secs(20);
/// Pause between tries for a user's create lock another replica holds.
const CREATE_LOCK_RETRY: Duration = Duration::from_millis(20);

impl<R: cc_core::Runtime, S: crate::ServerStore> UserCreateLock<R, S> {
    pub async fn acquire(manager: &crate::AppManager<R, S>, user: &str) -> Result<Self, ApiError> {
        let job = format!("create:{user}");
        let holder = format!(
            "{}/{}",
            manager.config().replica.id,
            &cc_core::Token::generate().expose()[..12]
        );
        let deadline = tokio::time::Instant::now() + CREATE_LOCK_WAIT;
        loop {
            let held =
                cc_core::Leases::lock_job(manager.store(), &job, &holder, CREATE_LOCK_TTL).await?;
            if held {
                let renew = {
                    let (manager, job, holder) = (manager.clone(), job.clone(), holder.clone());
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(CREATE_LOCK_TTL / 3).await;
                            let store = manager.store();
                            if let Err(e) =
                                cc_core::Leases::lock_job(store, &job, &holder, CREATE_LOCK_TTL)
                                    .await
                            {
                                tracing::warn!(%job, error = %e, "renewing a create lock");
                            }
                        }
                    })
                };
                return Ok(Self {
                    manager: manager.clone(),
                    job,
                    holder,
                    renew,
                });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "another create of yours is still running; retry",
                ));
            }
            tokio::time::sleep(CREATE_LOCK_RETRY).await;
        }
    }
}

impl<R: cc_core::Runtime, S: crate::ServerStore> Drop for UserCreateLock<R, S> {
    fn drop(&mut self) {
        self.renew.abort();
        let (manager, job) = (self.manager.clone(), std::mem::take(&mut self.job));
        let holder = std::mem::take(&mut self.holder);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = cc_core::Leases::unlock_job(manager.store(), &job, &holder).await {
                    tracing::warn!(%job, error = %e, "releasing a create lock (it expires by itself)");
                }
            });
        }
    }
}

/// Keeps the rate limits shared among the live replicas (each enforces its
/// share, see `crate::auth::rate_limit`), re-counted as often as replicas
/// renew their leases, until `stop`.
pub async fn share_limits<R: cc_core::Runtime, S: crate::ServerStore>(
    manager: crate::AppManager<R, S>,
    access: std::sync::Arc<crate::auth::Access>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(cc_core::lease::RENEW_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match cc_core::Leases::replicas(manager.store()).await {
            Ok(live) => access.set_replicas(u32::try_from(live.len()).unwrap_or(u32::MAX)),
            Err(e) => tracing::warn!(error = %e, "counting the live replicas"),
        }
    }
}

/// The answer when the session's replica cannot be reached: its sessions
/// move to another replica once its lease runs out, so retrying works.
fn unreachable(to: &Replica) -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "replica_unreachable",
        format!(
            "the orchestrator replica running this session ({}) does not answer; \
             its sessions move to another replica within seconds, retry",
            to.id
        ),
    )
    .into_response()
}

/// HMAC-SHA256 of the parts, each followed by a newline.
fn hmac(key: &[u8; 32], parts: &[&str]) -> [u8; 32] {
    let msg: String = parts.iter().flat_map(|p| [*p, "\n"]).collect();
    cc_core::identity::hmac_sha256(key, msg.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(k: u8) -> Peers {
        Peers::new(ClusterKey::new([k; 32])).unwrap()
    }

    #[test]
    fn operations_on_a_session_go_to_its_owner_and_reads_stay() {
        let s = "/api/v1/sessions/abc";
        for (method, path) in [
            (Method::DELETE, s.to_owned()),
            (Method::POST, format!("{s}/command")),
            (Method::POST, format!("{s}/interrupt")),
            (Method::POST, format!("{s}/push")),
            (Method::POST, format!("{s}/permissions/r-1")),
            (Method::GET, format!("{s}/diff")),
            (Method::GET, format!("{s}/files")),
        ] {
            assert_eq!(owner_only(&method, &path), Some("abc"), "{method} {path}");
        }
        for (method, path) in [
            (Method::GET, s.to_owned()),
            (Method::GET, format!("{s}/status")),
            (Method::GET, format!("{s}/logs")),
            (Method::GET, format!("{s}/permissions/r-1")),
            (Method::POST, format!("{s}/permission")),
        ] {
            assert_eq!(owner_only(&method, &path), None, "{method} {path}");
        }
    }

    fn alice() -> Forwarded {
        Forwarded {
            principal: Principal {
                user: "alice".into(),
                role: Role::User,
                session: None,
            },
            ip: Some("203.0.113.7".parse().unwrap()),
        }
    }

    #[test]
    fn hmac_is_rfc_2104_hmac_sha256() {
        // Python: hmac.new(b"\x01" * 32, b"a\nb\n", "sha256").hexdigest()
        assert_eq!(
            hex(&hmac(&[1; 32], &["a", "b"])),
            "4a2b6deb5422be876b41281745780b16a4b5f69ae98598204d3ec596a82c085a"
        );
    }

    #[test]
    fn a_signed_request_verifies_only_for_its_method_path_key_and_time() {
        let p = peers(7);
        let path = "/api/v1/sessions/abc/command";
        let v = p.sign_at(&alice(), &Method::POST, path, 1_000_000);
        assert_eq!(
            p.verify_at(&v, &Method::POST, path, 1_000_500),
            Some(alice())
        );
        assert_eq!(p.verify_at(&v, &Method::DELETE, path, 1_000_500), None);
        assert_eq!(
            p.verify_at(
                &v,
                &Method::POST,
                "/api/v1/sessions/other/command",
                1_000_500
            ),
            None
        );
        assert_eq!(peers(8).verify_at(&v, &Method::POST, path, 1_000_500), None);
        assert_eq!(
            p.verify_at(&v, &Method::POST, path, 1_000_000 + MAX_AGE_MS + 1),
            None
        );
        // A changed claim (an admin instead of alice) breaks the signature.
        let (body, mac) = v.split_once('.').unwrap();
        let mut claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(body)
                .unwrap(),
        )
        .unwrap();
        claims["admin"] = true.into();
        let forged = format!(
            "{}.{mac}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&claims).unwrap())
        );
        assert_eq!(p.verify_at(&forged, &Method::POST, path, 1_000_500), None);
        assert_eq!(p.verify_at("garbage", &Method::POST, path, 1_000_500), None);
    }
}
