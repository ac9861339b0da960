//! A scripted fake of the GitHub and GitLab pull-request APIs.
//!
//! It stands in for an API we cannot reach from tests (no network to
//! github.com or gitlab.com, no tokens), and speaks the real request and
//! response shapes of the endpoints `cc_server::forge` calls:
//! - GitHub (`api_url` = `http://127.0.0.1:PORT/api/v3`, an Enterprise
//!   Server's layout): `POST /repos/{owner}/{repo}/pulls`;
//! - GitLab (`api_url` = `http://127.0.0.1:PORT/api/v4`):
//!   `POST /projects/{url-encoded path}/merge_requests`.
//!
//! It checks a request the way the real API does, in the same order:
//! GitHub refuses a request without `User-Agent` (403), a missing or wrong
//! token (401 `{"message":"Bad credentials"}`), an unsupported
//! `X-GitHub-Api-Version` (400), a body that is not a JSON object (400),
//! and missing or empty `title`/`head`/`base` or `head == base` (422
//! `{"message":"Validation Failed","errors":[...]}`). GitLab refuses a
//! missing or wrong token (401 `{"message":"401 Unauthorized"}`), missing
//! or empty parameters (400 `{"error":"title is missing"}`, `... is
//! empty`) and equal branches
//! (422). Success is 201 with `number`/`iid` counting from 1 and
//! `html_url`/`web_url` under `api_url` (`{api_url}/owner/repo/pull/1`,
//! `{api_url}/group/repo/-/merge_requests/1`). Any other path is a 404.
//!
//! Every request is recorded ([`FakeForge::requests`]) before it is
//! answered, and [`FakeForge::fail_next`] scripts the next answer(s) — for
//! refusals the fake cannot produce itself, like "A pull request already
//! exists".
//!
//! Like [`crate::git_server`], it serves from its own OS thread and tokio
//! runtime, so it keeps answering while a test blocks its own runtime, and
//! [`Drop`] stops it.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use cc_server::forge::ForgeKind;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// Largest request body read; a pull request's JSON is far smaller.
const MAX_BODY: usize = 1024 * 1024;

/// The GitHub API version the fake accepts in `X-GitHub-Api-Version`.
const GITHUB_API_VERSION: &str = "2022-11-28";

const GITHUB_DOCS: &str = "https://docs.github.com/rest";

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path as sent, still percent-encoded, without the query.
    pub path: String,
    /// Header names lowercased; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON; `Null` when empty, a JSON string of the raw text
    /// when it is not JSON.
    pub body: Value,
}

impl RecordedRequest {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

struct Shared {
    kind: ForgeKind,
    token: String,
    api_url: String,
    /// The API's path prefix on the fake (`/api/v3` or `/api/v4`).
    prefix: &'static str,
    requests: Mutex<Vec<RecordedRequest>>,
    scripted: Mutex<VecDeque<(StatusCode, Value)>>,
    /// Number given to the next pull/merge request.
    next_number: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake forge API; see the module docs. Dropping it stops it.
pub struct FakeForge {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeForge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeForge")
            .field("kind", &self.shared.kind)
            .field("api_url", &self.shared.api_url)
            .finish_non_exhaustive()
    }
}

impl FakeForge {
    /// Serves `kind`'s API on `127.0.0.1:0`, accepting only
    /// `expected_token`. Usable from sync and async code alike: the port is
    /// bound before this returns, and connections wait in its backlog until
    /// the server thread accepts them.
    pub fn start(kind: ForgeKind, expected_token: &str) -> anyhow::Result<FakeForge> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .context("binding the fake forge to 127.0.0.1:0")?;
        listener
            .set_nonblocking(true)
            .context("making the fake forge's listener non-blocking")?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let prefix = match kind {
            ForgeKind::GitHub => "/api/v3",
            ForgeKind::GitLab => "/api/v4",
        };
        let shared = Arc::new(Shared {
            kind,
            token: expected_token.to_owned(),
            api_url: format!("http://{addr}{prefix}"),
            prefix,
            requests: Mutex::new(Vec::new()),
            scripted: Mutex::new(VecDeque::new()),
            next_number: AtomicU64::new(1),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fake-forge-worker")
            .enable_all()
            .build()
            .context("building the fake forge's runtime")?;
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let thread = std::thread::Builder::new()
            .name("fake-forge".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(err) => {
                            tracing::error!(error = %err, "fake forge cannot use its listener");
                            return;
                        }
                    };
                    tokio::select! {
                        res = axum::serve(listener, app) => {
                            if let Err(err) = res {
                                tracing::error!(error = %err, "fake forge failed");
                            }
                        }
                        _ = shutdown_rx => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .context("spawning the fake forge thread")?;
        tracing::debug!(%kind, %addr, "fake forge listening");
        Ok(FakeForge {
            addr,
            shared,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }

    /// Which API it speaks.
    pub fn kind(&self) -> ForgeKind {
        self.shared.kind
    }

    /// The bound address; `host[:port]` of a repository URL it serves is
    /// `addr().to_string()`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// API base URL, without a trailing slash:
    /// `http://127.0.0.1:PORT/api/v3` (GitHub) or `.../api/v4` (GitLab).
    pub fn api_url(&self) -> String {
        self.shared.api_url.clone()
    }

    /// Every request received so far, oldest first (refused ones too).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Answers the next request not yet scripted with `status` and
    /// `json_body`, whatever it asks; calls queue up in order. The request
    /// is still recorded; no number is used up.
    ///
    /// # Panics
    /// If `status` is not a valid HTTP status code.
    pub fn fail_next(&self, status: u16, json_body: Value) {
        let status = StatusCode::from_u16(status).expect("fail_next: an HTTP status code");
        lock(&self.shared.scripted).push_back((status, json_body));
    }
}

impl Drop for FakeForge {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP front
// ---------------------------------------------------------------------------

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let json_body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let path = parts.uri.path().to_owned();
    lock(&shared.requests).push(RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        headers,
        body: json_body,
    });
    if let Some((status, body)) = lock(&shared.scripted).pop_front() {
        return answer(status, body);
    }
    // What the real API would have failed to parse is not an object.
    let object = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object);
    match shared.kind {
        ForgeKind::GitHub => github(&shared, &parts.method, &path, &parts.headers, object),
        ForgeKind::GitLab => gitlab(&shared, &parts.method, &path, &parts.headers, object),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A string field that is present and not blank.
fn field<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

fn github(
    shared: &Shared,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Option<Value>,
) -> Response {
    if header_str(headers, "user-agent").is_none_or(|ua| ua.trim().is_empty()) {
        return answer(
            StatusCode::FORBIDDEN,
            json!({
                "message": "Request forbidden by administrative rules. Please make sure your \
                            request has a User-Agent header \
                            (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required).",
            }),
        );
    }
    let presented = header_str(headers, "authorization").and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("token "))
    });
    if presented != Some(shared.token.as_str()) {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials", "documentation_url": GITHUB_DOCS, "status": "401"}),
        );
    }
    if let Some(version) = header_str(headers, "x-github-api-version") {
        if version != GITHUB_API_VERSION {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({
                    "message": format!("API version '{version}' is not supported."),
                    "documentation_url": GITHUB_DOCS,
                }),
            );
        }
    }
    let not_found = || {
        answer(
            StatusCode::NOT_FOUND,
            json!({"message": "Not Found", "documentation_url": GITHUB_DOCS, "status": "404"}),
        )
    };
    let Some(rest) = path.strip_prefix(shared.prefix) else {
        return not_found();
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let ["", "repos", owner, repo, "pulls"] = segments.as_slice() else {
        return not_found();
    };
    if owner.is_empty() || repo.is_empty() || method != Method::POST {
        return not_found();
    }
    let Some(body) = body else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"message": "Problems parsing JSON", "documentation_url": GITHUB_DOCS, "status": "400"}),
        );
    };
    let mut errors = Vec::new();
    for name in ["title", "head", "base"] {
        match body.get(name) {
            None | Some(Value::Null) => errors.push(json!({
                "resource": "PullRequest", "field": name, "code": "missing_field",
                "message": format!("{name} wasn't supplied."),
            })),
            Some(_) if field(&body, name).is_none() => errors.push(json!({
                "resource": "PullRequest", "field": name, "code": "invalid",
                "message": format!("{name} is invalid."),
            })),
            Some(_) => {}
        }
    }
    if !matches!(body.get("draft"), None | Some(Value::Bool(_))) {
        errors.push(json!({
            "resource": "PullRequest", "field": "draft", "code": "invalid",
            "message": "draft is not a boolean.",
        }));
    }
    if let (Some(head), Some(base)) = (field(&body, "head"), field(&body, "base")) {
        if head == base {
            errors.push(json!({
                "resource": "PullRequest", "code": "custom",
                "message": format!("No commits between {base} and {head}"),
            }));
        }
    }
    if !errors.is_empty() {
        return answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({
                "message": "Validation Failed",
                "errors": errors,
                "documentation_url": GITHUB_DOCS,
                "status": "422",
            }),
        );
    }
    let n = shared.next_number.fetch_add(1, Ordering::Relaxed);
    answer(
        StatusCode::CREATED,
        json!({
            "id": 1_000_000 + n,
            "number": n,
            "state": "open",
            "title": body["title"],
            "body": body.get("body").cloned().unwrap_or(Value::Null),
            "draft": body.get("draft").cloned().unwrap_or(Value::Bool(false)),
            "head": {"ref": body["head"]},
            "base": {"ref": body["base"]},
            "url": format!("{}/repos/{owner}/{repo}/pulls/{n}", shared.api_url),
            "html_url": format!("{}/{owner}/{repo}/pull/{n}", shared.api_url),
        }),
    )
}

fn gitlab(
    shared: &Shared,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Option<Value>,
) -> Response {
    let presented = header_str(headers, "private-token")
        .or_else(|| header_str(headers, "authorization").and_then(|v| v.strip_prefix("Bearer ")));
    if presented != Some(shared.token.as_str()) {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"message": "401 Unauthorized"}),
        );
    }
    let not_found = || answer(StatusCode::NOT_FOUND, json!({"error": "404 Not Found"}));
    let Some(rest) = path.strip_prefix(shared.prefix) else {
        return not_found();
    };
    let segments: Vec<&str> = rest.split('/').collect();
    // The project is one segment: an unencoded `/` makes it another route.
    let ["", "projects", id, "merge_requests"] = segments.as_slice() else {
        return not_found();
    };
    if method != Method::POST {
        return not_found();
    }
    let Some(project) = percent_decode(id).filter(|p| p.contains('/')) else {
        return answer(
            StatusCode::NOT_FOUND,
            json!({"message": "404 Project Not Found"}),
        );
    };
    let Some(body) = body else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "source_branch is missing, target_branch is missing, title is missing"}),
        );
    };
    let missing: Vec<String> = ["source_branch", "target_branch", "title"]
        .iter()
        .filter_map(|name| match body.get(*name) {
            None | Some(Value::Null) => Some(format!("{name} is missing")),
            Some(_) if field(&body, name).is_none() => Some(format!("{name} is empty")),
            Some(_) => None,
        })
        .collect();
    if !missing.is_empty() {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": missing.join(", ")}),
        );
    }
    if field(&body, "source_branch") == field(&body, "target_branch") {
        return answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": ["You can't use same project/branch for source and target"]}),
        );
    }
    let n = shared.next_number.fetch_add(1, Ordering::Relaxed);
    let title = field(&body, "title").unwrap_or_default();
    answer(
        StatusCode::CREATED,
        json!({
            "id": 1_000_000 + n,
            "iid": n,
            "state": "opened",
            "title": title,
            "description": body.get("description").cloned().unwrap_or(Value::Null),
            "source_branch": body["source_branch"],
            "target_branch": body["target_branch"],
            "draft": title.starts_with("Draft:"),
            "web_url": format!("{}/{project}/-/merge_requests/{n}", shared.api_url),
        }),
    )
}

/// `%XX` escapes decoded; `None` for a malformed escape or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("g%2Fsub%2Fr").as_deref(), Some("g/sub/r"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }
}
