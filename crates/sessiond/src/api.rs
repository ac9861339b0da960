//! The HTTP API (see [`cc_wire::sessiond`] for the contract): routes, bearer
//! token authentication and JSON errors.
//!
//! Every request, including unknown routes, must carry
//! `Authorization: Bearer <SESSIOND_TOKEN>`; the token is compared in
//! constant time. Every error body is an [`ErrorBody`].

use crate::agent::{InitError, Session};
use crate::journal::{Journal, HEARTBEAT_INTERVAL};
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cc_wire::sessiond::{CommandAccepted, CommandRequest, ErrorBody, InitRequest};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Largest accepted command text, in bytes.
pub const MAX_COMMAND_BYTES: usize = 100_000;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    token: Arc<str>,
    session: Arc<Session>,
    journal: Arc<Journal>,
    /// Whether clients inside the container (see [`Peer::is_inside`]) are
    /// answered: only for running sessiond outside one (tests, development).
    allow_local: bool,
}

impl AppState {
    pub fn new(token: &str, session: Arc<Session>, journal: Arc<Journal>) -> Self {
        Self {
            token: token.into(),
            session,
            journal,
            allow_local: false,
        }
    }

    /// Answers clients on this machine too (`SESSIOND_ALLOW_LOCAL=1`).
    pub fn allowing_local(mut self, allow: bool) -> Self {
        self.allow_local = allow;
        self
    }
}

/// Both ends of a connection, for telling the orchestrator (on another
/// host or the container's bridge gateway) from a client in the container.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub remote: std::net::SocketAddr,
    pub local: Option<std::net::SocketAddr>,
}

impl Peer {
    /// Whether the client runs in this network namespace: it came from
    /// loopback or from the address it connected to. Containers hold no
    /// `CAP_NET_RAW`, so nothing in one can send from another address.
    pub fn is_inside(&self) -> bool {
        let ip = self.remote.ip().to_canonical();
        ip.is_loopback() || self.local.is_some_and(|l| l.ip().to_canonical() == ip)
    }
}

/// The listener sessiond serves on: TCP with `TCP_NODELAY` set on every
/// connection, since the journal streams small lines (without it, Nagle
/// holds each back until the orchestrator acknowledges the previous one).
pub struct NoDelayListener(pub tokio::net::TcpListener);

impl axum::serve::Listener for NoDelayListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.0).await;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY");
        }
        (tcp, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Peer {
    fn of(stream: &tokio::net::TcpStream, remote: std::net::SocketAddr) -> Self {
        Peer {
            remote,
            local: stream.local_addr().ok(),
        }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, NoDelayListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, NoDelayListener>) -> Self {
        Peer::of(stream.io(), *stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Peer::of(stream.io(), *stream.remote_addr())
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/init", post(init))
        .route("/v1/command", post(command))
        .route("/v1/interrupt", post(interrupt))
        .route("/v1/permissions/{request_id}", post(permission))
        .route("/v1/events", get(events))
        .route("/v1/diff", get(diff))
        .route("/v1/files", get(files))
        .route("/v1/push", post(push))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Applies to the fallbacks too: nothing answers without the token.
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// An error response: status plus [`ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_owned(),
            message: self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Compares without an early exit, so the time taken does not reveal how
/// much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// Whether `headers` carry `Authorization: Bearer <token>`.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let Some(presented) = value.as_bytes().strip_prefix(b"Bearer ") else {
        return false;
    };
    constant_time_eq(presented, token.as_bytes())
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // The token may be within the agent's reach (the container's init
    // process holds it in its environment), so a client inside the
    // container is refused whatever it presents.
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .map(|c| c.0);
    if !state.allow_local && peer.is_none_or(|p| p.is_inside()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "local_client",
            "sessiond answers only the orchestrator, not clients inside the session",
        )
        .into_response();
    }
    if !authorized(request.headers(), &state.token) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        )
        .into_response();
    }
    next.run(request).await
}

/// Parses a JSON body, whatever its content type, into `T` or a 400.
fn parse_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), "bad_request", r.body_text()))?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("bad JSON: {e}"),
        )
    })
}

async fn health(State(state): State<AppState>) -> Response {
    Json(state.session.health()).into_response()
}

async fn init(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: InitRequest = parse_json(body)?;
    match state.session.init(request) {
        Ok(health) => Ok((StatusCode::ACCEPTED, Json(health)).into_response()),
        Err(InitError::AlreadyInitialized) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_initialized",
            "the session was initialized with a different request",
        )),
        Err(InitError::Invalid(why)) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", why))
        }
        Err(InitError::ShuttingDown) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            "sessiond is shutting down",
        )),
    }
}

async fn command(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CommandRequest = parse_json(body)?;
    if request.text.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "command text is empty",
        ));
    }
    if request.text.len() > MAX_COMMAND_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "command text is {} bytes; the limit is {MAX_COMMAND_BYTES}",
                request.text.len()
            ),
        ));
    }
    match state.session.command(request) {
        Ok(seq) => Ok((StatusCode::ACCEPTED, Json(CommandAccepted { seq })).into_response()),
        Err(not_ready) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            not_ready.message,
        )),
    }
}

/// Body of the `/v1/interrupt` answer.
#[derive(Serialize)]
struct Interrupted {
    interrupted: bool,
}

async fn diff(State(state): State<AppState>) -> Response {
    use cc_wire::sessiond::AgentState;
    let health = state.session.health();
    if !matches!(health.state, AgentState::Ready | AgentState::Busy) {
        return ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            format!("no checkout yet: session is {:?}", health.state).to_lowercase(),
        )
        .into_response();
    }
    match crate::diff::diff(state.session.config()).await {
        Ok(d) => Json(d).into_response(),
        Err(e) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "diff_failed", e).into_response()
        }
    }
}

async fn push(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    use crate::push::PushError;
    use cc_wire::sessiond::{AgentState, PushRequest};
    let request: PushRequest = parse_json(body)?;
    match state.session.health().state {
        AgentState::Ready => {}
        AgentState::Busy => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "busy",
                "a turn is running; push when it has finished",
            ))
        }
        other => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_ready",
                format!("no checkout to push: session is {other:?}").to_lowercase(),
            ))
        }
    }
    match crate::push::push(state.session.config(), &request).await {
        Ok(outcome) => Ok(Json(outcome).into_response()),
        Err(PushError::Invalid(m)) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m)),
        Err(PushError::Rejected(m)) => Err(ApiError::new(StatusCode::CONFLICT, "push_rejected", m)),
        Err(PushError::Refused(m)) => Err(ApiError::new(StatusCode::FORBIDDEN, "push_refused", m)),
        Err(PushError::Failed(m)) => Err(ApiError::new(StatusCode::BAD_GATEWAY, "push_failed", m)),
    }
}

#[derive(Deserialize)]
struct FilesQuery {
    /// Relative to the checkout; absent or empty is its root.
    #[serde(default)]
    path: String,
}

/// One file or directory of the checkout (see [`crate::files`]).
async fn files(
    State(state): State<AppState>,
    query: Result<Query<FilesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    use crate::files::FilesError;
    use cc_wire::sessiond::AgentState;
    let Query(query) =
        query.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", r.body_text()))?;
    let health = state.session.health();
    if !matches!(health.state, AgentState::Ready | AgentState::Busy) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            format!("no checkout yet: session is {:?}", health.state).to_lowercase(),
        ));
    }
    match crate::files::read(&state.session.config().repo_dir, &query.path).await {
        Ok(found) => Ok(Json(found).into_response()),
        Err(FilesError::Invalid(m)) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", m))
        }
        Err(FilesError::Forbidden(m)) => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden_path", m))
        }
        Err(FilesError::NotFound(m)) => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", m)),
        Err(FilesError::Internal(m)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "files_failed",
            m,
        )),
    }
}

/// Longest message a denial may tell the model.
pub const MAX_DENIAL_BYTES: usize = 10_000;

/// Answers a permission question (see [`crate::agent`]).
async fn permission(
    State(state): State<AppState>,
    axum::extract::Path(request_id): axum::extract::Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    use crate::agent::AnswerError;
    let answer: cc_wire::sessiond::PermissionAnswer = parse_json(body)?;
    if answer
        .message
        .as_ref()
        .is_some_and(|m| m.len() > MAX_DENIAL_BYTES)
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the message is longer than {MAX_DENIAL_BYTES} bytes"),
        ));
    }
    match state.session.answer(&request_id, answer) {
        Ok(decision) => Ok(Json(decision).into_response()),
        Err(AnswerError::Unknown) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_request",
            "Claude Code asked no such permission question",
        )),
        Err(AnswerError::AlreadySettled) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_answered",
            "this permission question was settled already",
        )),
    }
}

async fn interrupt(State(state): State<AppState>) -> Response {
    let interrupted = state.session.interrupt();
    (StatusCode::ACCEPTED, Json(Interrupted { interrupted })).into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    since: u64,
    #[serde(default)]
    follow: bool,
}

async fn events(
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", r.body_text()))?;
    let stream = state
        .journal
        .stream(query.since, query.follow, HEARTBEAT_INTERVAL);
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use std::path::PathBuf;

    #[test]
    fn constant_time_eq_matches_eq() {
        for (a, b) in [
            ("", ""),
            ("a", "a"),
            ("secret", "secret"),
            ("secret", "secreT"),
            ("secret", "secret2"),
            ("", "x"),
            ("abc", "ab"),
        ] {
            assert_eq!(
                constant_time_eq(a.as_bytes(), b.as_bytes()),
                a == b,
                "{a} {b}"
            );
        }
    }

    #[test]
    fn bearer_header_parsing() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "tok"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        assert!(authorized(&h, "tok"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok2"),
        );
        assert!(!authorized(&h, "tok"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic tok"));
        assert!(!authorized(&h, "tok"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("tok"));
        assert!(!authorized(&h, "tok"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(!authorized(&h, "tok"));
    }

    /// Serves the router on a free local port.
    async fn serve() -> String {
        let config = Arc::new(Config {
            token: "tok".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            claude_bin: "/nonexistent/claude".into(),
            repo_dir: PathBuf::from("/nonexistent/repo"),
            claude_config_dir: None,
            path: "/usr/bin:/bin".into(),
            home: "/tmp".into(),
            allow_local: true,
        });
        let journal = Arc::new(Journal::new());
        let session = Session::new(Arc::clone(&config), Arc::clone(&journal));
        let app = router(AppState::new(&config.token, session, journal).allowing_local(true));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn connections_are_accepted_without_nagle() {
        use axum::serve::Listener;
        let mut l = NoDelayListener(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = l.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = l.accept().await;
        assert!(accepted.nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_client_inside_the_container_is_refused_even_with_the_token() {
        let config = Arc::new(Config {
            token: "tok".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            claude_bin: "/nonexistent/claude".into(),
            repo_dir: PathBuf::from("/nonexistent/repo"),
            claude_config_dir: None,
            path: "/usr/bin:/bin".into(),
            home: "/tmp".into(),
            allow_local: false,
        });
        let journal = Arc::new(Journal::new());
        let session = Session::new(Arc::clone(&config), Arc::clone(&journal));
        let app = router(AppState::new(&config.token, session, journal))
            .into_make_service_with_connect_info::<Peer>();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let resp = reqwest::Client::new()
            .get(format!("http://{addr}/v1/health"))
            .bearer_auth("tok")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "local_client", "{body}");

        let peer = |remote: &str, local: &str| Peer {
            remote: remote.parse().unwrap(),
            local: Some(local.parse().unwrap()),
        };
        assert!(peer("127.0.0.1:5", "127.0.0.1:7700").is_inside());
        assert!(peer("172.18.0.2:5", "172.18.0.2:7700").is_inside());
        assert!(peer("[::ffff:172.18.0.2]:5", "172.18.0.2:7700").is_inside());
        assert!(!peer("172.18.0.1:5", "172.18.0.2:7700").is_inside());
    }

    #[tokio::test]
    async fn every_route_requires_the_token() {
        let base = serve().await;
        let client = reqwest::Client::new();
        for (method, path) in [
            (reqwest::Method::GET, "/v1/health"),
            (reqwest::Method::POST, "/v1/init"),
            (reqwest::Method::POST, "/v1/command"),
            (reqwest::Method::POST, "/v1/interrupt"),
            (reqwest::Method::GET, "/v1/events"),
            (reqwest::Method::GET, "/v1/files"),
            (reqwest::Method::GET, "/nope"),
        ] {
            for auth in [None, Some("Bearer wrong"), Some("Bearer tok2"), Some("tok")] {
                let mut req = client.request(method.clone(), format!("{base}{path}"));
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                let resp = req.send().await.unwrap();
                assert_eq!(resp.status(), 401, "{method} {path} {auth:?}");
                let body: ErrorBody = resp.json().await.unwrap();
                assert_eq!(body.code, "unauthorized");
            }
        }
        let resp = client
            .get(format!("{base}/v1/health"))
            .bearer_auth("tok")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let health: cc_wire::sessiond::Health = resp.json().await.unwrap();
        assert_eq!(health.state, cc_wire::sessiond::AgentState::Idle);
        assert_eq!(health.last_seq, 0);
    }

    #[tokio::test]
    async fn json_errors() {
        let base = serve().await;
        let client = reqwest::Client::new();
        let check = |resp: reqwest::Response, status: u16, code: &'static str| async move {
            assert_eq!(resp.status(), status);
            let body: ErrorBody = resp.json().await.unwrap();
            assert_eq!(body.code, code, "{}", body.message);
        };
        let post = |path: &str, body: &str| {
            client
                .post(format!("{base}{path}"))
                .bearer_auth("tok")
                .body(body.to_owned())
                .send()
        };
        check(post("/v1/init", "{").await.unwrap(), 400, "bad_request").await;
        check(post("/v1/command", "{}").await.unwrap(), 400, "bad_request").await;
        check(
            post("/v1/command", r#"{"text":""}"#).await.unwrap(),
            400,
            "bad_request",
        )
        .await;
        let big = serde_json::to_string(&CommandRequest {
            text: "x".repeat(MAX_COMMAND_BYTES + 1),
            model: None,
            permission_mode: None,
        })
        .unwrap();
        check(post("/v1/command", &big).await.unwrap(), 413, "too_large").await;
        check(
            post("/v1/command", r#"{"text":"hi"}"#).await.unwrap(),
            409,
            "not_ready",
        )
        .await;
        check(post("/v1/nope", "").await.unwrap(), 404, "not_found").await;
        check(
            client
                .get(format!("{base}/v1/init"))
                .bearer_auth("tok")
                .send()
                .await
                .unwrap(),
            405,
            "method_not_allowed",
        )
        .await;
        check(
            client
                .get(format!("{base}/v1/events?since=x"))
                .bearer_auth("tok")
                .send()
                .await
                .unwrap(),
            400,
            "bad_request",
        )
        .await;
        // No checkout before init.
        check(
            client
                .get(format!("{base}/v1/files?path=README.md"))
                .bearer_auth("tok")
                .send()
                .await
                .unwrap(),
            409,
            "not_ready",
        )
        .await;
        let resp = post("/v1/interrupt", "").await.unwrap();
        assert_eq!(resp.status(), 202);
        assert_eq!(
            resp.json::<serde_json::Value>().await.unwrap(),
            serde_json::json!({"interrupted": false})
        );
    }
}
