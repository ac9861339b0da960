//! A real smart-HTTP git server for tests, the demo and benchmarks.
//!
//! Requests are served by the system's `git http-backend` (run as a CGI
//! program, one process per request) behind a small axum HTTP front, so
//! clients talk the genuine smart-HTTP protocol (v0 and v2, fetch and push)
//! over `http://127.0.0.1:PORT/<name>.git` — there is no `file://` shortcut.
//!
//! The HTTP front runs on its own OS thread with its own tokio runtime. That
//! keeps it serving even when the caller blocks its own runtime (for
//! example a `#[tokio::test]` that runs `git clone` through
//! `std::process::Command`), and lets [`Drop`] stop it deterministically.
//!
//! Request bodies are streamed into the CGI's stdin (no buffering beyond
//! the pipe; `CONTENT_LENGTH` is only set when the client sent a
//! `Content-Length`, otherwise `git http-backend` reads to EOF), and the
//! CGI's stdout is streamed back after its header block is parsed.
//! [`GitServer::require_content_length`] makes it refuse chunked bodies
//! with 411, as a CGI wrapper that cannot stream them does.
//!
//! The repository helpers ([`GitServer::create_repo`], [`GitServer::show`],
//! ...) are synchronous: they run the git CLI directly on the bare
//! repositories, never through the HTTP front.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{ChildStderr, ChildStdin};
use tokio::sync::oneshot;

/// Identity used for every commit the helpers create.
const USER_NAME: &str = "ClaudeCluster Test";
const USER_EMAIL: &str = "test@claudecluster.invalid";
/// Fixed commit date so fixture commits are reproducible.
const COMMIT_DATE: &str = "2024-01-01T00:00:00+00:00";
/// Largest CGI header block accepted from `git http-backend`.
const MAX_CGI_HEADER: usize = 64 * 1024;
/// Read size for streaming the CGI's stdout.
const READ_CHUNK: usize = 32 * 1024;

/// Where the bare repositories live.
enum Root {
    /// A fresh temporary directory, removed when the server is dropped.
    Temp(tempfile::TempDir),
    /// A caller-provided directory, left in place.
    Path(PathBuf),
}

impl Root {
    fn path(&self) -> &Path {
        match self {
            Root::Temp(dir) => dir.path(),
            Root::Path(path) => path,
        }
    }
}

/// State shared between the handle and the HTTP front.
struct Shared {
    root: PathBuf,
    total: AtomicU64,
    by_path: Mutex<HashMap<String, u64>>,
    /// The `Authorization` value every request must carry, when set.
    required_auth: Mutex<Option<String>>,
    /// Refuse request bodies without a `Content-Length` (411), as `git
    /// http-backend` behind a CGI wrapper that will not stream one does.
    require_length: std::sync::atomic::AtomicBool,
    /// Requests refused for that.
    refused_unframed: AtomicU64,
    /// Base URL every request is redirected to, when set.
    redirect: Mutex<Option<String>>,
}

impl Shared {
    fn record(&self, path: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut map = self.by_path.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(path.to_owned()).or_insert(0) += 1;
    }
}

/// A running smart-HTTP git server; see the module docs.
///
/// Dropping it stops serving (in-flight `git http-backend` processes are
/// killed) and removes the temporary root, if it owns one.
pub struct GitServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    // Declared last: removed only after the server thread has stopped.
    root: Root,
}

impl std::fmt::Debug for GitServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitServer")
            .field("addr", &self.addr)
            .field("root", &self.root.path())
            .finish_non_exhaustive()
    }
}

impl GitServer {
    /// Serve bare repositories under a fresh temporary root on
    /// `127.0.0.1:0` (an ephemeral port; see [`GitServer::addr`]).
    pub async fn start() -> anyhow::Result<GitServer> {
        let dir = tempfile::Builder::new()
            .prefix("cc-git-server-")
            .tempdir()
            .context("creating the git server's temporary root")?;
        Self::start_with(Root::Temp(dir), SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serve the bare repositories under `root` (created if missing, never
    /// removed) on `listen`.
    pub async fn start_at(root: PathBuf, listen: SocketAddr) -> anyhow::Result<GitServer> {
        std::fs::create_dir_all(&root)
            .with_context(|| format!("creating git server root {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("resolving git server root {}", root.display()))?;
        Self::start_with(Root::Path(root), listen).await
    }

    async fn start_with(root: Root, listen: SocketAddr) -> anyhow::Result<GitServer> {
        check_git_available()?;
        let shared = Arc::new(Shared {
            root: root.path().to_path_buf(),
            total: AtomicU64::new(0),
            by_path: Mutex::new(HashMap::new()),
            required_auth: Mutex::new(None),
            require_length: Default::default(),
            refused_unframed: AtomicU64::new(0),
            redirect: Mutex::new(None),
        });
        let (ready_tx, ready_rx) = oneshot::channel::<anyhow::Result<SocketAddr>>();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("git-http-server".into())
            .spawn(move || serve_thread(thread_shared, listen, ready_tx, shutdown_rx))
            .context("spawning the git server thread")?;
        let addr = match ready_rx.await {
            Ok(Ok(addr)) => addr,
            Ok(Err(err)) => {
                let _ = thread.join();
                return Err(err);
            }
            Err(_) => {
                let _ = thread.join();
                bail!("git server thread exited before binding");
            }
        };
        tracing::debug!(%addr, root = %root.path().display(), "git http server listening");
        Ok(GitServer {
            addr,
            shared,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
            root,
        })
    }

    /// From now on, every request must authenticate with HTTP Basic as
    /// `user:password` (a private repository's token); others get 401.
    pub fn require_basic_auth(&self, user: &str, password: &str) {
        use base64::Engine;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        *self
            .shared
            .required_auth
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(format!("Basic {encoded}"));
    }

    /// From now on, a request whose body comes without a `Content-Length`
    /// (sent chunked, or a POST with no length at all) is answered `411
    /// Length Required`, the way a CGI server that cannot pass a chunked
    /// body to `git http-backend` answers. git itself sends a length for
    /// every body within its `http.postBuffer` (1 MiB).
    pub fn require_content_length(&self) {
        self.shared.require_length.store(true, Ordering::Relaxed);
    }

    /// Requests refused with 411 (see [`Self::require_content_length`]).
    pub fn length_required_count(&self) -> u64 {
        self.shared.refused_unframed.load(Ordering::Relaxed)
    }

    /// From now on, every request is answered `302 Found` pointing at the
    /// same path and query under `base` (e.g. another server's
    /// `http://127.0.0.1:PORT`), as a moved or hostile server would.
    pub fn redirect_to(&self, base: &str) {
        *self
            .shared
            .redirect
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(base.trim_end_matches('/').to_owned());
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Clone URL of repository `name`: `http://127.0.0.1:PORT/<name>.git`.
    /// A trailing `.git` on `name` is accepted and not doubled.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{}.git", self.addr, strip_git_suffix(name))
    }

    /// Directory holding the bare repositories.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Filesystem path of bare repository `name` (`<root>/<name>.git`).
    pub fn repo_path(&self, name: &str) -> anyhow::Result<PathBuf> {
        repo_dir(self.root(), name)
    }

    /// Create bare repository `<name>.git` whose default branch `main` has
    /// one commit containing `files` (`(path, content)`, parent directories
    /// created as needed); returns its clone URL. Pushes are enabled.
    pub fn create_repo(&self, name: &str, files: &[(&str, &str)]) -> anyhow::Result<String> {
        create_bare_repo(self.root(), name, files)?;
        Ok(self.url(name))
    }

    /// Create branch `branch` in repository `repo`: one commit on top of
    /// `main` that adds or overwrites `files`. Fails if the branch exists.
    pub fn create_branch(
        &self,
        repo: &str,
        branch: &str,
        files: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let bare = existing_repo(self.root(), repo)?;
        let exists = git_output(
            &bare,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ],
        )?;
        if exists.status.success() {
            bail!("branch {branch:?} already exists in {repo:?}");
        }
        let scratch = scratch_dir()?;
        let work = scratch.path().join("work");
        let work_str = path_str(&work)?;
        run_git(
            scratch.path(),
            &["clone", "--quiet", path_str(&bare)?, work_str],
        )?;
        run_git(&work, &["checkout", "--quiet", "-b", branch])?;
        write_files(&work, files)?;
        commit_all(&work, &format!("Add branch {branch}"))?;
        run_git(&work, &["push", "--quiet", "origin", branch])?;
        Ok(())
    }

    /// Content of `path` at `rev` in bare repository `repo`
    /// (`git cat-file blob rev:path`), for assertions after a push.
    pub fn show(&self, repo: &str, rev: &str, path: &str) -> anyhow::Result<String> {
        let bare = existing_repo(self.root(), repo)?;
        let out = run_git(&bare, &["cat-file", "blob", &format!("{rev}:{path}")])?;
        String::from_utf8(out.stdout)
            .with_context(|| format!("{rev}:{path} in {repo:?} is not UTF-8"))
    }

    /// Branch names (without `refs/heads/`) of bare repository `repo`,
    /// sorted.
    pub fn branches(&self, repo: &str) -> anyhow::Result<Vec<String>> {
        let bare = existing_repo(self.root(), repo)?;
        let out = run_git(
            &bare,
            &["for-each-ref", "--format=%(refname)", "refs/heads/"],
        )?;
        let text = String::from_utf8(out.stdout).context("branch list is not UTF-8")?;
        let mut names: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("refs/heads/"))
            .map(str::to_owned)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Total number of HTTP requests received (including refused ones).
    pub fn request_count(&self) -> u64 {
        self.shared.total.load(Ordering::Relaxed)
    }

    /// Number of HTTP requests whose path (without query) ends with
    /// `suffix`, e.g. `"/git-upload-pack"` or `"sample.git/info/refs"`.
    pub fn request_count_for(&self, suffix: &str) -> u64 {
        let map = self
            .shared
            .by_path
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|(path, _)| path.ends_with(suffix))
            .map(|(_, n)| *n)
            .sum()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // `self.root` (a TempDir, if owned) is removed after this returns.
    }
}

// ---------------------------------------------------------------------------
// Server thread and HTTP front
// ---------------------------------------------------------------------------

fn serve_thread(
    shared: Arc<Shared>,
    listen: SocketAddr,
    ready: oneshot::Sender<anyhow::Result<SocketAddr>>,
    shutdown: oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("git-http-server-worker")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            let _ = ready.send(Err(
                anyhow::Error::new(err).context("building git server runtime")
            ));
            return;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(err) => {
                let _ =
                    ready
                        .send(Err(anyhow::Error::new(err)
                            .context(format!("binding git server to {listen}"))));
                return;
            }
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(err) => {
                let _ = ready.send(Err(anyhow::Error::new(err).context("reading bound address")));
                return;
            }
        };
        let app = Router::new().fallback(handle).with_state(shared);
        let server = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        );
        if ready.send(Ok(addr)).is_err() {
            return;
        }
        tokio::select! {
            res = server => {
                if let Err(err) = res {
                    tracing::error!(error = %err, "git http server failed");
                }
            }
            _ = shutdown => {}
        }
    });
    // Cancels connection tasks; dropping their children kills any
    // `git http-backend` still running (kill_on_drop).
    rt.shutdown_timeout(Duration::from_secs(2));
}

fn plain(status: StatusCode, msg: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], msg).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let raw_path = req.uri().path().to_owned();
    shared.record(&raw_path);
    let redirect = shared
        .redirect
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(base) = redirect {
        let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = format!("{base}{path_and_query}");
        return (StatusCode::FOUND, [(header::LOCATION, location)], "moved\n").into_response();
    }
    let required = shared
        .required_auth
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(expected) = required {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"git\"")],
                "authentication required\n",
            )
                .into_response();
        }
    }
    if shared.require_length.load(Ordering::Relaxed) && !has_length(&req) {
        shared.refused_unframed.fetch_add(1, Ordering::Relaxed);
        return plain(
            StatusCode::LENGTH_REQUIRED,
            "a Content-Length is required\n",
        );
    }
    let method = req.method().clone();
    let span = tracing::debug_span!("git_http", %method, path = %raw_path);
    let _enter = span.enter();

    let path_info = match sanitize_path(&raw_path) {
        Ok(p) => p,
        Err(reason) => {
            tracing::warn!(reason, "refusing request path");
            return plain(StatusCode::BAD_REQUEST, "bad request path\n");
        }
    };
    let query = req.uri().query().unwrap_or("").to_owned();
    drop(_enter);

    match run_cgi(&shared.root, peer, path_info, query, req).await {
        Ok(resp) => resp,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), path = %raw_path, "git http-backend failed");
            plain(StatusCode::BAD_GATEWAY, "git http-backend failed\n")
        }
    }
}

/// Percent-decode the request path and refuse traversal or odd bytes.
fn sanitize_path(raw: &str) -> Result<String, &'static str> {
    let decoded = percent_decode(raw).ok_or("invalid percent-encoding")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "path is not UTF-8")?;
    if !decoded.starts_with('/') {
        return Err("path is not absolute");
    }
    if decoded.contains('\0') || decoded.contains('\\') {
        return Err("path contains NUL or backslash");
    }
    if decoded.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err("path contains a dot segment");
    }
    Ok(decoded)
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Whether the request's body is framed by a `Content-Length`: a chunked
/// body is not, nor a POST without any length.
fn has_length(req: &Request) -> bool {
    let headers = req.headers();
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return false;
    }
    headers.contains_key(header::CONTENT_LENGTH) || req.method() != axum::http::Method::POST
}

/// CGI meta-variables derived from the request headers.
fn header_env(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (name, value) in headers {
        let Ok(value) = value.to_str() else { continue };
        if name == header::CONTENT_TYPE {
            env.push(("CONTENT_TYPE".to_owned(), value.to_owned()));
            continue;
        }
        if name == header::CONTENT_LENGTH {
            if value.trim().parse::<u64>().is_ok() {
                env.push(("CONTENT_LENGTH".to_owned(), value.trim().to_owned()));
            }
            continue;
        }
        // httpoxy: never forward a client-controlled HTTP_PROXY.
        if name.as_str() == "proxy" || name == header::AUTHORIZATION {
            continue;
        }
        if name.as_str() == "git-protocol" {
            env.push(("GIT_PROTOCOL".to_owned(), value.to_owned()));
        }
        let var = format!(
            "HTTP_{}",
            name.as_str().to_ascii_uppercase().replace('-', "_")
        );
        env.push((var, value.to_owned()));
    }
    env
}

async fn run_cgi(
    root: &Path,
    peer: SocketAddr,
    path_info: String,
    query: String,
    req: Request,
) -> anyhow::Result<Response> {
    let (parts, body) = req.into_parts();
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .envs(base_env())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", format!("{:?}", parts.version))
        .env("SERVER_SOFTWARE", "cc-testkit-git-http-server")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", &path_info)
        .env("QUERY_STRING", &query)
        .env("REMOTE_ADDR", peer.ip().to_string())
        .env("REMOTE_USER", "anonymous")
        .envs(header_env(&parts.headers))
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("spawning git http-backend")?;
    let stdin = child.stdin.take().context("http-backend stdin")?;
    let mut stdout = child.stdout.take().context("http-backend stdout")?;
    let stderr = child.stderr.take().context("http-backend stderr")?;

    tokio::spawn(pump_request_body(body, stdin));
    tokio::spawn(log_stderr(stderr, path_info.clone()));
    tokio::spawn(async move {
        match child.wait().await {
            Ok(status) if status.success() => {}
            Ok(status) => tracing::debug!(%status, path = %path_info, "git http-backend exited"),
            Err(err) => tracing::warn!(error = %err, "waiting for git http-backend"),
        }
    });

    // Read the CGI header block.
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let (head_len, body_start) = loop {
        if let Some(found) = find_header_end(&buf) {
            break found;
        }
        if buf.len() > MAX_CGI_HEADER {
            bail!("CGI header block exceeds {MAX_CGI_HEADER} bytes");
        }
        buf.reserve(READ_CHUNK);
        let n = stdout
            .read_buf(&mut buf)
            .await
            .context("reading http-backend stdout")?;
        if n == 0 {
            bail!("git http-backend exited without sending headers");
        }
    };
    let head = buf.split_to(body_start);
    let head = std::str::from_utf8(&head[..head_len]).context("CGI headers are not UTF-8")?;
    let mut builder = Response::builder();
    let mut status = StatusCode::OK;
    let mut saw_location = false;
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            tracing::warn!(line, "ignoring malformed CGI header");
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .with_context(|| format!("bad CGI Status header {value:?}"))?;
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            tracing::warn!(line, "ignoring invalid CGI header");
            continue;
        };
        if name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        if name == header::LOCATION {
            saw_location = true;
        }
        builder = builder.header(name, value);
    }
    if saw_location && status == StatusCode::OK {
        status = StatusCode::FOUND;
    }

    let first = buf.freeze();
    let stream =
        futures_util::stream::unfold((Some(first), Some(stdout)), |(first, stdout)| async move {
            if let Some(chunk) = first.filter(|c| !c.is_empty()) {
                return Some((Ok::<Bytes, std::io::Error>(chunk), (None, stdout)));
            }
            let mut stdout = stdout?;
            let mut chunk = BytesMut::with_capacity(READ_CHUNK);
            match stdout.read_buf(&mut chunk).await {
                Ok(0) => None,
                Ok(_) => Some((Ok(chunk.freeze()), (None, Some(stdout)))),
                Err(err) => Some((Err(err), (None, None))),
            }
        });
    builder
        .status(status)
        .body(Body::from_stream(stream))
        .context("building response")
}

/// Copy the request body into the CGI's stdin, then close it.
async fn pump_request_body(body: Body, mut stdin: ChildStdin) {
    let mut data = body.into_data_stream();
    while let Some(chunk) = data.next().await {
        match chunk {
            Ok(bytes) => {
                if let Err(err) = stdin.write_all(&bytes).await {
                    // http-backend may answer (e.g. 404) without reading.
                    tracing::debug!(error = %err, "http-backend stopped reading its input");
                    return;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "reading request body");
                return;
            }
        }
    }
    if let Err(err) = stdin.shutdown().await {
        tracing::debug!(error = %err, "closing http-backend stdin");
    }
}

async fn log_stderr(stderr: ChildStderr, path: String) {
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => tracing::warn!(path = %path, "git http-backend: {line}"),
            Ok(None) => return,
            Err(err) => {
                tracing::debug!(error = %err, "reading http-backend stderr");
                return;
            }
        }
    }
}

/// Offset of the end of the CGI header block and of the body start.
fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    let lf = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

// ---------------------------------------------------------------------------
// git CLI helpers
// ---------------------------------------------------------------------------

/// Environment for every git process we start: the caller's environment is
/// dropped so user/system config, `GIT_DIR` and proxies cannot interfere.
fn base_env() -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ("HOME".into(), std::env::temp_dir().into_os_string()),
        ("LANG".into(), "C".into()),
        ("LC_ALL".into(), "C".into()),
    ];
    for var in ["PATH", "TMPDIR"] {
        if let Some(v) = std::env::var_os(var) {
            env.push((var.into(), v));
        }
    }
    env
}

fn git_command(dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("git");
    cmd.env_clear()
        .envs(base_env())
        .env("GIT_AUTHOR_DATE", COMMIT_DATE)
        .env("GIT_COMMITTER_DATE", COMMIT_DATE)
        .args(["-c", &format!("user.name={USER_NAME}")])
        .args(["-c", &format!("user.email={USER_EMAIL}")])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

/// Run git in `dir` and return its output, whatever the exit status.
fn git_output(dir: &Path, args: &[&str]) -> anyhow::Result<Output> {
    git_command(dir)
        .args(args)
        .output()
        .with_context(|| format!("running git {}", args.join(" ")))
}

/// Run git in `dir`; fail with its stderr unless it succeeds.
fn run_git(dir: &Path, args: &[&str]) -> anyhow::Result<Output> {
    let out = git_output(dir, args)?;
    if !out.status.success() {
        bail!(
            "git {} (in {}) failed with {}: {}",
            args.join(" "),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn check_git_available() -> anyhow::Result<()> {
    let out = std::process::Command::new("git")
        .env_clear()
        .envs(base_env())
        .arg("--version")
        .output()
        .context("the git CLI is required by the test git server but could not be run")?;
    if !out.status.success() {
        bail!(
            "`git --version` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("path {} is not UTF-8", p.display()))
}

fn strip_git_suffix(name: &str) -> &str {
    name.strip_suffix(".git").unwrap_or(name)
}

/// A relative path made only of normal components.
fn check_relative(kind: &str, p: &str) -> anyhow::Result<()> {
    let path = Path::new(p);
    if p.is_empty()
        || p.contains('\\')
        || !path.components().all(|c| matches!(c, Component::Normal(_)))
    {
        bail!("invalid {kind} {p:?}: must be a non-empty relative path without `..`");
    }
    Ok(())
}

fn repo_dir(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let name = strip_git_suffix(name);
    check_relative("repository name", name)?;
    Ok(root.join(format!("{name}.git")))
}

fn existing_repo(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = repo_dir(root, name)?;
    if !dir.is_dir() {
        bail!(
            "repository {name:?} does not exist under {}",
            root.display()
        );
    }
    Ok(dir)
}

fn scratch_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("cc-git-work-")
        .tempdir()
        .context("creating a scratch work tree")
}

fn write_files(work: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    for (rel, content) in files {
        check_relative("file path", rel)?;
        let dest = work.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&dest, content).with_context(|| format!("writing {}", dest.display()))?;
    }
    Ok(())
}

fn commit_all(work: &Path, message: &str) -> anyhow::Result<()> {
    run_git(work, &["add", "--all"])?;
    run_git(
        work,
        &[
            "commit",
            "--quiet",
            "--allow-empty",
            "--no-verify",
            "-m",
            message,
        ],
    )?;
    Ok(())
}

/// Create `<root>/<name>.git` with one commit on `main` holding `files`.
fn create_bare_repo(root: &Path, name: &str, files: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
    let bare = repo_dir(root, name)?;
    if bare.exists() {
        bail!("repository {name:?} already exists at {}", bare.display());
    }
    let bare_str = path_str(&bare)?.to_owned();
    let scratch = scratch_dir()?;
    let work = scratch.path();
    run_git(work, &["init", "--quiet", "-b", "main"])?;
    write_files(work, files)?;
    commit_all(work, "Initial commit")?;
    if let Some(parent) = bare.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    run_git(
        work,
        &["init", "--quiet", "--bare", "-b", "main", &bare_str],
    )?;
    run_git(&bare, &["config", "http.receivepack", "true"])?;
    run_git(&bare, &["config", "http.uploadpack", "true"])?;
    run_git(
        work,
        &["push", "--quiet", &bare_str, "main:refs/heads/main"],
    )?;
    Ok(bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_refuses_traversal() {
        assert!(sanitize_path("/a.git/info/refs").is_ok());
        assert!(sanitize_path("/../etc/passwd").is_err());
        assert!(sanitize_path("/a.git/%2e%2e/%2E%2E/x").is_err());
        assert!(sanitize_path("/a.git/./x").is_err());
        assert!(sanitize_path("/a%zz").is_err());
        assert!(sanitize_path("/a%00b").is_err());
        assert_eq!(
            sanitize_path("/my%20repo.git").as_deref(),
            Ok("/my repo.git")
        );
    }

    #[test]
    fn header_end_detection() {
        assert_eq!(find_header_end(b"A: b\r\n\r\nbody"), Some((4, 8)));
        assert_eq!(find_header_end(b"A: b\n\nbody"), Some((4, 6)));
        assert_eq!(find_header_end(b"A: b\r\n"), None);
    }

    #[test]
    fn repo_names_are_checked() {
        let root = Path::new("/r");
        assert_eq!(repo_dir(root, "x").ok(), Some(PathBuf::from("/r/x.git")));
        assert_eq!(
            repo_dir(root, "x.git").ok(),
            Some(PathBuf::from("/r/x.git"))
        );
        assert_eq!(
            repo_dir(root, "o/x").ok(),
            Some(PathBuf::from("/r/o/x.git"))
        );
        assert!(repo_dir(root, "../x").is_err());
        assert!(repo_dir(root, "/x").is_err());
        assert!(repo_dir(root, "").is_err());
    }
}
