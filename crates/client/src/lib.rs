//! Typed client for the ClaudeCluster API, used by the CLI, the tests, the
//! benchmarks and the demo. Speaks only the public contract in
//! `cc_wire::api`.

use cc_wire::api::{
    ApiErrorBody, ClientMessage, CommandRequest, CommandResponse, CreateSessionRequest,
    CreateSessionResponse, DeleteResponse, LogsResponse, ServerMessage, SessionStatus,
};
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the ClaudeCluster server: {0}")]
    Transport(String),
    /// The server answered something this client does not understand.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl ClientError {
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer` on every request and WebSocket.
    token: Option<String>,
}

/// Most requests answer at once; create waits for a container to start.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

impl Client {
    /// `base` is the server's URL, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: impl Into<String>) -> Result<Self, ClientError> {
        Self::with_token(base, None)
    }

    /// A client that authenticates with `token` (`Authorization: Bearer`).
    pub fn with_token(base: impl Into<String>, token: Option<String>) -> Result<Self, ClientError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| {
                    ClientError::Protocol("the token is not a valid header value".into())
                })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .default_headers(headers)
            .build()
            .map_err(|e| ClientError::Transport(root_cause(&e)))?;
        Ok(Self {
            base: base.into().trim_end_matches('/').to_owned(),
            http,
            token,
        })
    }

    /// `GET /healthz`: whether the server answers at all.
    pub async fn healthz(&self) -> Result<(), ClientError> {
        let resp = self
            .http
            .get(format!("{}/healthz", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| ClientError::Transport(root_cause(&e)))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(ClientError::Api {
                status: status.as_u16(),
                code: format!("http_{}", status.as_u16()),
                message: status.canonical_reason().unwrap_or("error").to_owned(),
            })
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    pub async fn create(
        &self,
        req: &CreateSessionRequest,
    ) -> Result<CreateSessionResponse, ClientError> {
        send(self.http.post(self.url("/sessions/create")).json(req)).await
    }

    /// [`Client::create`] with an `Idempotency-Key`: retrying with the same
    /// key and request answers with the session the first attempt made.
    pub async fn create_idempotent(
        &self,
        req: &CreateSessionRequest,
        key: &str,
    ) -> Result<CreateSessionResponse, ClientError> {
        let post = self.http.post(self.url("/sessions/create"));
        send(post.header("Idempotency-Key", key).json(req)).await
    }

    /// Registers a webhook endpoint; the answer carries its secret (shown
    /// once).
    pub async fn create_webhook(
        &self,
        req: &cc_wire::api::WebhookRequest,
    ) -> Result<cc_wire::api::CreatedWebhook, ClientError> {
        send(self.http.post(self.url("/webhooks")).json(req)).await
    }

    /// The webhook endpoints this token may see.
    pub async fn webhooks(&self) -> Result<Vec<cc_wire::api::WebhookInfo>, ClientError> {
        send(self.http.get(self.url("/webhooks"))).await
    }

    /// An endpoint's deliveries, newest first.
    pub async fn webhook_deliveries(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<cc_wire::api::WebhookDelivery>, ClientError> {
        let url = self.url(&format!("/webhooks/{id}/deliveries"));
        send(self.http.get(url).query(&[("limit", limit)])).await
    }

    pub async fn delete_webhook(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        send(self.http.delete(self.url(&format!("/webhooks/{id}")))).await
    }

    pub async fn status(&self, id: &str) -> Result<SessionStatus, ClientError> {
        send(self.http.get(self.url(&format!("/sessions/{id}/status")))).await
    }

    pub async fn list(&self, all: bool) -> Result<Vec<SessionStatus>, ClientError> {
        send(self.http.get(self.url("/sessions")).query(&[("all", all)])).await
    }

    pub async fn command(&self, id: &str, command: &str) -> Result<CommandResponse, ClientError> {
        self.command_with(
            id,
            &CommandRequest {
                command: command.into(),
                model: None,
                permission_mode: None,
            },
        )
        .await
    }

    /// A turn with per-turn overrides (`model`, `permissionMode`).
    pub async fn command_with(
        &self,
        id: &str,
        body: &CommandRequest,
    ) -> Result<CommandResponse, ClientError> {
        send(
            self.http
                .post(self.url(&format!("/sessions/{id}/command")))
                .json(&body),
        )
        .await
    }

    /// Forks a session (see [`cc_wire::api::ForkRequest`]): new sessions
    /// from a copy of its workspace and conversation.
    pub async fn fork(
        &self,
        id: &str,
        req: &cc_wire::api::ForkRequest,
    ) -> Result<cc_wire::api::ForkResponse, ClientError> {
        send(
            self.http
                .post(self.url(&format!("/sessions/{id}/fork")))
                .json(req),
        )
        .await
    }

    /// Puts a `ready` session to sleep (`409 session_busy` during a turn).
    pub async fn sleep(&self, id: &str) -> Result<SessionStatus, ClientError> {
        send(self.http.post(self.url(&format!("/sessions/{id}/sleep")))).await
    }

    /// Wakes a sleeping session; it is `starting` in the answer.
    pub async fn wake(&self, id: &str) -> Result<SessionStatus, ClientError> {
        send(self.http.post(self.url(&format!("/sessions/{id}/wake")))).await
    }

    pub async fn interrupt(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        send(
            self.http
                .post(self.url(&format!("/sessions/{id}/interrupt"))),
        )
        .await
    }

    /// Answers a permission question the session waits on (a
    /// `permissionRequest`); the first answer wins, a later one is `409
    /// permission_already_answered`.
    pub async fn answer_permission(
        &self,
        id: &str,
        request_id: &str,
        answer: &cc_wire::api::PermissionResponse,
    ) -> Result<cc_wire::api::PermissionAnswered, ClientError> {
        // Claude Code's request ids are URL-safe; anything else is
        // escaped rather than allowed to reshape the path.
        let rid = path_segment(request_id);
        send(
            self.http
                .post(self.url(&format!("/sessions/{id}/permissions/{rid}")))
                .json(answer),
        )
        .await
    }

    /// The session's changes against the commit it started from.
    pub async fn diff(&self, id: &str) -> Result<cc_wire::api::SessionDiff, ClientError> {
        send(self.http.get(self.url(&format!("/sessions/{id}/diff")))).await
    }

    /// A file or directory of the session's checkout; `path` is relative
    /// to it (`""`: its root).
    pub async fn files(
        &self,
        id: &str,
        path: &str,
    ) -> Result<cc_wire::api::SessionPath, ClientError> {
        send(
            self.http
                .get(self.url(&format!("/sessions/{id}/files")))
                .query(&[("path", path)]),
        )
        .await
    }

    /// Pushes the session's work to a branch (and opens a pull request when
    /// `req.pull_request` is set).
    pub async fn push(
        &self,
        id: &str,
        req: &cc_wire::api::PushRequest,
    ) -> Result<cc_wire::api::PushResponse, ClientError> {
        send(
            self.http
                .post(self.url(&format!("/sessions/{id}/push")))
                .json(req),
        )
        .await
    }

    pub async fn logs(
        &self,
        id: &str,
        since: u64,
        limit: usize,
    ) -> Result<LogsResponse, ClientError> {
        send(
            self.http
                .get(self.url(&format!("/sessions/{id}/logs")))
                .query(&[("since", since as usize), ("limit", limit)]),
        )
        .await
    }

    pub async fn delete(&self, id: &str) -> Result<DeleteResponse, ClientError> {
        send(self.http.delete(self.url(&format!("/sessions/{id}")))).await
    }

    /// Opens the session's WebSocket, receiving every event after `since`
    /// (`0`: the whole log), then live ones.
    pub async fn stream(&self, id: &str, since: u64) -> Result<EventStream, ClientError> {
        self.open_stream(id, &format!("?since={since}")).await
    }

    /// Opens the session's WebSocket as a seed client does, without
    /// `since`: one `status` with the session's current state, then live
    /// events only.
    pub async fn stream_from_now(&self, id: &str) -> Result<EventStream, ClientError> {
        self.open_stream(id, "").await
    }

    async fn open_stream(&self, id: &str, query: &str) -> Result<EventStream, ClientError> {
        let ws_base = self
            .base
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        let url = format!("{ws_base}/api/v1/sessions/{id}/stream{query}");
        EventStream::connect_with_token(&url, self.token.as_deref()).await
    }
}

/// The innermost cause of an error ("connection refused"), which is what a
/// person needs; reqwest's own message only names the request.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

async fn send<T: DeserializeOwned>(req: reqwest::RequestBuilder) -> Result<T, ClientError> {
    let resp = req
        .send()
        .await
        .map_err(|e| ClientError::Transport(root_cause(&e)))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ClientError::Transport(root_cause(&e)))?;
    if status.is_success() {
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    } else {
        // An answer without the JSON error body (a proxy, another server)
        // still carries its status, which is what the caller acts on.
        let body: ApiErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|_| ApiErrorBody {
            code: format!("http_{}", status.as_u16()),
            message: non_json_message(status, &bytes),
        });
        Err(ClientError::Api {
            status: status.as_u16(),
            code: body.code,
            message: body.message,
        })
    }
}

fn non_json_message(status: reqwest::StatusCode, body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect();
    if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    }
}

/// A session's WebSocket.
pub struct EventStream {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl EventStream {
    /// Connects to a full WebSocket URL (e.g. `endpoints.websocket`).
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        Self::connect_with_token(url, None).await
    }

    /// Connects sending `Authorization: Bearer <token>` when there is one.
    pub async fn connect_with_token(url: &str, token: Option<&str>) -> Result<Self, ClientError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = url
            .into_client_request()
            .map_err(|e| ClientError::Protocol(format!("bad WebSocket URL {url}: {e}")))?;
        if let Some(t) = token {
            let value = format!("Bearer {t}").parse().map_err(|_| {
                ClientError::Protocol("the token is not a valid header value".into())
            })?;
            req.headers_mut().insert("authorization", value);
        }
        // Commands and keepalives are small writes: no Nagle delay.
        match tokio_tungstenite::connect_async_with_config(req, None, true).await {
            Ok((ws, _)) => Ok(Self { ws }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body = resp.body().as_deref().unwrap_or_default();
                match serde_json::from_slice::<ApiErrorBody>(body) {
                    Ok(b) => Err(ClientError::Api {
                        status,
                        code: b.code,
                        message: b.message,
                    }),
                    Err(_) => Err(ClientError::Api {
                        status,
                        code: format!("http_{status}"),
                        message: format!("WebSocket refused: HTTP {status}"),
                    }),
                }
            }
            Err(e) => Err(ClientError::Transport(root_cause(&e))),
        }
    }

    /// The next message; `None` when the server closed the stream (the
    /// session ended and everything was delivered).
    pub async fn next(&mut self) -> Result<Option<ServerMessage>, ClientError> {
        while let Some(msg) = self.ws.next().await {
            match msg.map_err(|e| ClientError::Transport(root_cause(&e)))? {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str())
                        .map(Some)
                        .map_err(|e| ClientError::Protocol(format!("{e}: {t}")))
                }
                Message::Close(_) => return Ok(None),
                _ => {}
            }
        }
        Ok(None)
    }

    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        let text = serde_json::to_string(msg).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))
    }

    pub async fn command(&mut self, command: &str) -> Result<(), ClientError> {
        self.send(&ClientMessage::command(command)).await
    }

    /// Answers a `permissionRequest` on the socket (`permissionResponse`).
    pub async fn answer_permission(
        &mut self,
        request_id: &str,
        allow: bool,
        message: Option<&str>,
        always: bool,
    ) -> Result<(), ClientError> {
        self.send(&ClientMessage::PermissionResponse(
            cc_wire::api::PermissionResponse {
                request_id: Some(request_id.to_owned()),
                allow,
                message: message.map(str::to_owned),
                always: always.then_some(true),
            },
        ))
        .await
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// `s` as one URL path segment: unreserved characters kept, the rest
/// percent-encoded.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
