//! Access control in front of the API: IP allowlist, rate limits, who the
//! caller is, and the audit trail of what they did.
//!
//! Every API request passes [`middleware`] in this order (the OpenAPI
//! document only passes step 1; the probes and metrics of `api::health` are
//! routed outside it):
//! 1. the IP allowlist (`403 ip_not_allowed`; audited once per address
//!    and at most 64 times in all per minute, since no rate limit applies
//!    yet);
//! 2. the per-IP rate limit (`429 rate_limited` + `Retry-After`);
//! 3. authentication — `Authorization: Bearer <token>` or `?token=` (for
//!    browsers' WebSockets): the bootstrap admin token, an API token
//!    (`cct_…`, looked up by its SHA-256) or a session access token
//!    (`ccs_…`, valid for one session until it expires). Failures are
//!    `401 unauthorized` and audited;
//! 4. the per-token rate limit.
//!
//! The authenticated [`Principal`] and the [`ClientIp`] are put in the
//! request's extensions for the handlers; a `token` query parameter is
//! removed from the URI before the handlers see it.
//!
//! Open mode: with no admin token and no API token at all, requests without
//! credentials act as the administrator `local` — but only when
//! [`AccessConfig::open_when_no_tokens`] is set, which `serve` does only for
//! a loopback listener (and `serve` refuses any other listener without
//! tokens), and only for requests addressed to loopback and sent by no
//! foreign web page ([`open_mode`]: `403 host_not_allowed`,
//! `403 origin_not_allowed`, audited), so a DNS-rebinding or cross-origin
//! page cannot act as the administrator.

pub mod connections;
pub mod container_audit;
pub mod ip;
pub mod open_mode;
pub mod rate_limit;

use crate::api::{ApiError, AppState};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cc_core::audit::{AuditEvent, AuditStore};
use cc_core::identity::{
    self, IdentityStore, Principal, Role, SessionTokenError, SessionTokenKey, ANONYMOUS,
    BOOTSTRAP_ADMIN,
};
use cc_core::webhook::WebhookStore;
use cc_core::{now, rfc3339, IdempotencyStore, Runtime, Store};
use ip::Cidr;
use rate_limit::{Decision, RateLimit, RateLimiter};
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The user requests act as in open mode.
pub const OPEN_MODE_USER: &str = "local";
/// Session WebSockets one user may hold open at once (a CLI per session
/// and a few browser tabs); each holds a subscription to a session's log.
pub const DEFAULT_MAX_STREAMS_PER_USER: usize = 64;
/// Default lifetime of a session access token handed out in `endpoints`.
pub const DEFAULT_SESSION_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// What the server's store must offer: sessions, identities, the audit
/// log, idempotency keys and webhooks.
pub trait ServerStore:
    Store + IdentityStore + AuditStore + IdempotencyStore + WebhookStore
{
}
impl<T: Store + IdentityStore + AuditStore + IdempotencyStore + WebhookStore> ServerStore for T {}

/// Access-control settings.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// The bootstrap administrator token (from configuration or
    /// `CLAUDECLUSTER_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// Allow requests without credentials while no token exists at all.
    pub open_when_no_tokens: bool,
    /// Clients allowed to use the API; empty means any.
    pub allow_ips: Vec<Cidr>,
    /// Limit per client IP and per token; `None` disables rate limiting.
    pub rate_limit: Option<RateLimit>,
    /// Live sessions one user may have; `None` for no limit.
    pub max_sessions_per_user: Option<usize>,
    /// Session WebSockets one user may hold open at once.
    pub max_streams_per_user: usize,
    /// Lifetime of the session access tokens in `endpoints` (never beyond
    /// the session's own expiry).
    pub session_token_ttl: Duration,
    /// Where audit records are also written as JSON lines.
    pub audit_jsonl: Option<PathBuf>,
    /// Key of session access tokens; random per process when unset.
    pub session_token_key: Option<[u8; 32]>,
    /// Serve the API over TLS with these files.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Bearer token `GET /metrics` requires; open when unset.
    pub metrics_token: Option<String>,
    /// Timeouts and connection caps of the API listener.
    pub api_connections: connections::Limits,
    /// Timeouts and connection caps of the gateway listener (per IP is per
    /// session there).
    pub gateway_connections: connections::Limits,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            admin_token: None,
            open_when_no_tokens: false,
            allow_ips: Vec::new(),
            rate_limit: None,
            max_sessions_per_user: None,
            max_streams_per_user: DEFAULT_MAX_STREAMS_PER_USER,
            session_token_ttl: DEFAULT_SESSION_TOKEN_TTL,
            audit_jsonl: None,
            session_token_key: None,
            tls: None,
            metrics_token: None,
            api_connections: connections::Limits::API,
            gateway_connections: connections::Limits::GATEWAY,
        }
    }
}

/// The access-control state shared by all requests.
pub struct Access {
    pub config: AccessConfig,
    limiter: Option<RateLimiter>,
    /// Audit rows of requests the IP allowlist refuses (made before any
    /// rate limit applies, so bounded on their own).
    ip_refusal_audits: rate_limit::AuditThrottle,
    pub(crate) session_key: SessionTokenKey,
    jsonl: Mutex<Option<std::fs::File>>,
    /// One lock per user held while creating, so two concurrent creates
    /// cannot both pass the session limit.
    create_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Open session WebSockets per user.
    streams: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open session WebSocket of a user, counted until dropped.
pub struct StreamPermit {
    streams: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut map = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.user);
            }
        }
    }
}

impl Access {
    pub fn new(config: AccessConfig) -> Self {
        Self {
            limiter: config.rate_limit.map(RateLimiter::new),
            ip_refusal_audits: Default::default(),
            session_key: config
                .session_token_key
                .map_or_else(SessionTokenKey::generate, SessionTokenKey::from_bytes),
            jsonl: Mutex::new(None),
            create_locks: Mutex::new(HashMap::new()),
            streams: Default::default(),
            config,
        }
    }

    /// How many replicas share the rate limits (see `rate_limit`).
    pub fn set_replicas(&self, n: u32) {
        if let Some(l) = &self.limiter {
            l.set_replicas(n);
        }
    }

    pub(crate) fn create_lock(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.create_locks.lock().unwrap_or_else(|p| p.into_inner());
        // Drop locks nobody holds, so the map does not grow with users.
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(user.to_owned()).or_default().clone()
    }

    /// Counts one more session WebSocket for `user`; `None` when the user
    /// already holds [`AccessConfig::max_streams_per_user`].
    pub fn open_stream(&self, user: &str) -> Option<StreamPermit> {
        let mut map = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(user.to_owned()).or_default();
        if *n >= self.config.max_streams_per_user {
            return None;
        }
        *n += 1;
        Some(StreamPermit {
            streams: self.streams.clone(),
            user: user.to_owned(),
        })
    }

    fn write_jsonl(&self, rec: &cc_core::AuditRecord) {
        let Some(path) = &self.config.audit_jsonl else {
            return;
        };
        let mut guard = self.jsonl.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            match open_append(path) {
                Ok(f) => *guard = Some(f),
                Err(e) => {
                    tracing::error!(error = %e, path = %path.display(), "opening audit.jsonl")
                }
            }
        }
        if let Some(f) = guard.as_mut() {
            // One write per line: appends from several writers never mix.
            let line = serde_json::to_string(rec).unwrap_or_default() + "\n";
            if let Err(e) = f.write_all(line.as_bytes()) {
                tracing::error!(error = %e, "writing audit.jsonl");
            }
        }
    }
}

/// Opens (creating, mode 0600 on unix) a file for appending.
pub fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// The client's address as the server saw it.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    pub fn text(&self) -> Option<String> {
        self.0.map(|ip| ip.to_canonical().to_string())
    }
}

/// Who did what, for one audit record.
pub struct Audit<'a> {
    pub actor: &'a str,
    pub ip: ClientIp,
    pub action: &'a str,
    pub session_id: Option<&'a str>,
    pub outcome: &'a str,
    pub detail: Option<String>,
}

/// Appends an audit record to the store and `audit.jsonl`. A failure is
/// logged, never hidden, but does not fail the request it describes.
pub async fn audit<R: Runtime, S: ServerStore>(st: &AppState<R, S>, a: Audit<'_>) {
    audit_to(st.manager.store(), &st.access, a).await;
}

/// [`audit`] outside a request.
pub async fn audit_to<S: AuditStore>(store: &S, access: &Access, a: Audit<'_>) {
    let event = AuditEvent {
        time: rfc3339(now()),
        actor: a.actor.to_owned(),
        source_ip: a.ip.text(),
        action: a.action.to_owned(),
        session_id: a.session_id.map(str::to_owned),
        outcome: a.outcome.to_owned(),
        detail: a.detail,
    };
    match store.append_audit(event).await {
        Ok(rec) => access.write_jsonl(&rec),
        Err(e) => tracing::error!(error = %e, action = a.action, "writing the audit log failed"),
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

pub fn rate_limited(retry_after: u64) -> Response {
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests; retry after {retry_after} s"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// The session ID a path names (`/api/v1/sessions/{id}[/…]`).
fn path_session(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/api/v1/sessions/")?;
    let id = rest.split('/').next()?;
    (!id.is_empty() && id != "create").then_some(id)
}

/// Takes `token=` out of the query string; returns it and the new URI.
fn take_query_token(uri: &Uri) -> (Option<String>, Option<Uri>) {
    let Some(q) = uri.query() else {
        return (None, None);
    };
    let mut token = None;
    let kept: Vec<&str> = q
        .split('&')
        .filter(|kv| match kv.strip_prefix("token=") {
            Some(v) => {
                token = Some(v.to_owned());
                false
            }
            None => true,
        })
        .collect();
    if token.is_none() {
        return (None, None);
    }
    let path_q = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_q.parse().ok();
    (token, Uri::from_parts(parts).ok())
}

/// The access-control middleware (see the module docs).
pub async fn middleware<R: Runtime, S: ServerStore>(
    State(st): State<AppState<R, S>>,
    mut req: Request,
    next: Next,
) -> Response {
    let ip = ClientIp(
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
    );
    // Another replica forwarded a request it authenticated (see
    // `crate::cluster`): it acts for the principal it names.
    if let Some(value) = req.headers().get(crate::cluster::FORWARDED_HEADER) {
        let path = req
            .uri()
            .path_and_query()
            .map_or("", |p| p.as_str())
            .to_owned();
        let verified = st.config.peers.as_ref().and_then(|peers| {
            peers.verify(value.to_str().unwrap_or_default(), req.method(), &path)
        });
        let Some(fwd) = verified else {
            return unauthorized("the forwarded request's signature is not valid").into_response();
        };
        req.extensions_mut().insert(fwd.principal);
        req.extensions_mut().insert(ClientIp(fwd.ip));
        return next.run(req).await;
    }
    let access = &st.access;
    if !access.config.allow_ips.is_empty()
        && !ip
            .0
            .is_some_and(|a| access.config.allow_ips.iter().any(|c| c.contains(a)))
    {
        let key = ip.text().unwrap_or_default();
        if access.ip_refusal_audits.allow(&key, Instant::now()) {
            audit(
                &st,
                Audit {
                    actor: ANONYMOUS,
                    ip,
                    action: "auth.failure",
                    session_id: None,
                    outcome: "ip_not_allowed",
                    detail: None,
                },
            )
            .await;
        }
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "ip_not_allowed",
            "this address may not use the API",
        )
        .into_response();
    }
    // The API's description is public (the allowlist still applies).
    if req.uri().path() == crate::api::openapi::OPENAPI_PATH {
        return next.run(req).await;
    }
    if let Some(limiter) = &access.limiter {
        let key = format!("ip:{}", ip.text().unwrap_or_default());
        if let Some(resp) = limit(&st, limiter, &key, ANONYMOUS, ip).await {
            return resp;
        }
    }

    let (query_token, new_uri) = take_query_token(req.uri());
    if let Some(uri) = new_uri {
        *req.uri_mut() = uri;
    }
    let header_token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or("")
                .trim()
                .to_owned()
        });
    let token = header_token.or(query_token);
    let path_id = path_session(req.uri().path()).map(str::to_owned);
    let principal = match authenticate(&st, token.as_deref(), path_id.as_deref()).await {
        Ok(p) => p,
        Err((err, detail)) => {
            audit(
                &st,
                Audit {
                    actor: ANONYMOUS,
                    ip,
                    action: "auth.failure",
                    session_id: path_id.as_deref(),
                    outcome: "unauthorized",
                    detail: Some(detail),
                },
            )
            .await;
            return err.into_response();
        }
    };
    // Open mode is the one principal without a credential.
    if principal.1.is_none() {
        if let Err(err) = open_mode::check(req.headers(), req.uri()) {
            audit(
                &st,
                Audit {
                    actor: ANONYMOUS,
                    ip,
                    action: "auth.failure",
                    session_id: path_id.as_deref(),
                    outcome: err.code,
                    detail: None,
                },
            )
            .await;
            return err.into_response();
        }
    }
    if let Some(limiter) = &access.limiter {
        let key = match &principal.1 {
            Some(k) => format!("token:{k}"),
            None => format!("user:{}", principal.0.user),
        };
        if let Some(resp) = limit(&st, limiter, &key, &principal.0.user, ip).await {
            return resp;
        }
    }
    req.extensions_mut().insert(principal.0);
    req.extensions_mut().insert(ip);
    next.run(req).await
}

async fn limit<R: Runtime, S: ServerStore>(
    st: &AppState<R, S>,
    limiter: &RateLimiter,
    key: &str,
    actor: &str,
    ip: ClientIp,
) -> Option<Response> {
    match limiter.check(key, Instant::now()) {
        Decision::Allow => None,
        Decision::Deny {
            retry_after_secs,
            audit: first,
        } => {
            if first {
                audit(
                    st,
                    Audit {
                        actor,
                        ip,
                        action: "limit.hit",
                        session_id: None,
                        outcome: "rate_limited",
                        detail: Some(format!("{} limit", key.split(':').next().unwrap_or("rate"))),
                    },
                )
                .await;
            }
            Some(rate_limited(retry_after_secs))
        }
    }
}

/// The principal and the rate-limit key of its credential, or the error
/// and an audit detail (never the token itself).
async fn authenticate<R: Runtime, S: ServerStore>(
    st: &AppState<R, S>,
    token: Option<&str>,
    path_id: Option<&str>,
) -> Result<(Principal, Option<String>), (ApiError, String)> {
    let store = st.manager.store();
    // A store that cannot be reached answers 503 (retry later), any other
    // failure 500.
    let internal = |e: cc_core::StoreError| {
        tracing::error!(error = %e, "reading tokens");
        (ApiError::from(e), "store error".to_owned())
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        if st.access.config.admin_token.is_none()
            && st.access.config.open_when_no_tokens
            && store.active_tokens().await.map_err(internal)? == 0
        {
            return Ok((
                Principal {
                    user: OPEN_MODE_USER.into(),
                    role: Role::Admin,
                    session: None,
                },
                None,
            ));
        }
        return Err((
            unauthorized("send `Authorization: Bearer <API token>`"),
            "no token".into(),
        ));
    };
    if let Some(admin) = &st.access.config.admin_token {
        if cc_core::ids::secret_eq(admin, token) {
            return Ok((
                Principal {
                    user: BOOTSTRAP_ADMIN.into(),
                    role: Role::Admin,
                    session: None,
                },
                Some(BOOTSTRAP_ADMIN.into()),
            ));
        }
    }
    if token.starts_with(identity::SESSION_TOKEN_PREFIX) {
        let Some(id) = path_id else {
            return Err((
                unauthorized("a session token only opens its own session's endpoints"),
                "session token off its session".into(),
            ));
        };
        return match st.access.session_key.check(token, id, now()) {
            Ok(()) => {
                // The session's owner acts; an unknown session is a 404 later.
                let owner = st
                    .manager
                    .get(id)
                    .await
                    .map(|r| r.owner)
                    .unwrap_or_default();
                Ok((
                    Principal {
                        user: owner,
                        role: Role::User,
                        session: Some(id.to_owned()),
                    },
                    Some(format!("session:{id}")),
                ))
            }
            Err(SessionTokenError::Expired) => Err((
                unauthorized(
                    "the session token has expired; get a fresh one from the session's status",
                ),
                "expired session token".into(),
            )),
            Err(SessionTokenError::WrongSession) => Err((
                unauthorized("the session token belongs to another session"),
                "session token of another session".into(),
            )),
            Err(SessionTokenError::Malformed) => Err((
                unauthorized("the session token is not valid"),
                "forged or malformed session token".into(),
            )),
        };
    }
    let rec = if identity::is_api_token(token) {
        store
            .token_by_hash(&identity::hash_token(token))
            .await
            .map_err(internal)?
    } else {
        None
    };
    match rec {
        Some(r) if r.revoked_at.is_none() => Ok((
            Principal {
                user: r.user,
                role: r.role,
                session: None,
            },
            Some(r.id),
        )),
        Some(r) => Err((
            unauthorized("the API token was revoked"),
            format!("revoked token {}", r.id),
        )),
        None => Err((
            unauthorized("the API token is not valid"),
            "unknown token".into(),
        )),
    }
}

/// The stable code a core error maps to, for audit outcomes.
pub fn error_code(e: &cc_core::CoreError) -> &'static str {
    use cc_core::CoreError as E;
    match e {
        E::Invalid { code, .. }
        | E::Forbidden { code, .. }
        | E::Missing { code, .. }
        | E::Conflict { code, .. } => code,
        E::NotFound(_) => "session_not_found",
        E::Unavailable(_) => "unavailable",
        E::Fenced(_) => "session_moved",
        E::Internal(_) => "internal",
    }
}

/// Refuses a session access token where a user's own token is needed.
pub fn require_user_token(p: &Principal) -> Result<(), ApiError> {
    if p.session.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a session token cannot do this; use an API token",
        ));
    }
    Ok(())
}

/// Refuses anyone but an administrator.
pub fn require_admin(p: &Principal) -> Result<(), ApiError> {
    if !p.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this needs an administrator token",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_token_is_taken_out() {
        let uri: Uri = "/api/v1/sessions/ab/logs?since=3&token=ccs_x.1.y&limit=2"
            .parse()
            .unwrap();
        let (t, u) = take_query_token(&uri);
        assert_eq!(t.as_deref(), Some("ccs_x.1.y"));
        assert_eq!(
            u.unwrap().to_string(),
            "/api/v1/sessions/ab/logs?since=3&limit=2"
        );
        let uri: Uri = "/x?token=a".parse().unwrap();
        assert_eq!(take_query_token(&uri).1.unwrap().to_string(), "/x");
        assert_eq!(take_query_token(&"/x?a=1".parse().unwrap()).0, None);
    }

    #[test]
    fn path_sessions() {
        assert_eq!(path_session("/api/v1/sessions/abc/stream"), Some("abc"));
        assert_eq!(path_session("/api/v1/sessions/abc"), Some("abc"));
        assert_eq!(path_session("/api/v1/sessions/create"), None);
        assert_eq!(path_session("/api/v1/sessions"), None);
    }
}
