//! HTTP routes of the double (axum).
//!
//! This module owns the shared server state (config, id counter, recorded
//! requests), authentication, request recording, latency injection and
//! turning a scripted reply into a streaming or non-streaming HTTP response.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};

use crate::api_error::error_response;
use crate::message::{estimate_tokens, AssistantMessage};
use crate::request::RequestView;
use crate::script::{decide, Block, Reply};
use crate::{sse, ModelDoubleConfig, RecordedRequest};

/// State shared by all requests of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    config: ModelDoubleConfig,
    next_id: AtomicU64,
    requests: Mutex<Vec<RecordedRequest>>,
}

impl Shared {
    pub(crate) fn new(config: ModelDoubleConfig) -> Self {
        Self {
            config,
            next_id: AtomicU64::new(1),
            requests: Mutex::new(Vec::new()),
        }
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn clear_requests(&self) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn record(&self, request: RecordedRequest) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
    }
}

/// The router: `/_double/requests` for inspection, everything else goes to
/// [`api`], which accepts `.../v1/messages` under any path prefix.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/_double/requests",
            get(list_requests).delete(clear_requests),
        )
        .route("/v1/messages", post(api))
        .route("/v1/messages/count_tokens", post(api))
        .fallback(api)
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

async fn list_requests(State(shared): State<Arc<Shared>>) -> Json<Vec<RecordedRequest>> {
    Json(shared.requests())
}

async fn clear_requests(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.clear_requests();
    StatusCode::NO_CONTENT
}

/// Dispatches on the path suffix so a base-URL prefix is tolerated.
async fn api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if method == Method::POST && path.ends_with("/v1/messages") {
        messages(&shared, path, &headers, &body).await
    } else if method == Method::POST && path.ends_with("/v1/messages/count_tokens") {
        count_tokens(&shared, &headers, &body).await
    } else if path.ends_with("/api/hello") {
        // Claude Code's connectivity probe (HEAD) when non-essential traffic is on.
        StatusCode::OK.into_response()
    } else {
        tracing::info!(%method, %uri, "unexpected request");
        error_response(404, &format!("model double: no route for {method} {path}"))
    }
}

/// The credential presented: `x-api-key`, else `Authorization: Bearer`.
fn credential(headers: &HeaderMap) -> Option<String> {
    let header_str = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(key) = header_str(header::HeaderName::from_static("x-api-key")) {
        return Some(key.to_owned());
    }
    let auth = header_str(header::AUTHORIZATION)?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Header names and values for logging, with credentials hidden.
fn redacted(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let shown = if name == header::AUTHORIZATION || name.as_str() == "x-api-key" {
                "<redacted>".to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_owned(), shown)
        })
        .collect()
}

fn authorized(config: &ModelDoubleConfig, credential: Option<&str>) -> bool {
    config
        .api_key
        .as_deref()
        .is_none_or(|key| credential == Some(key))
}

async fn delay(config: &ModelDoubleConfig) {
    if config.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(config.latency_ms)).await;
    }
}

async fn count_tokens(shared: &Shared, headers: &HeaderMap, body: &Bytes) -> Response {
    delay(&shared.config).await;
    if !authorized(&shared.config, credential(headers).as_deref()) {
        return error_response(401, "model double: invalid x-api-key");
    }
    Json(json!({"input_tokens": estimate_tokens(body.len())})).into_response()
}

async fn messages(shared: &Shared, path: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(body).ok().filter(Value::is_object);
    let view = parsed
        .as_ref()
        .map(RequestView::from_json)
        .unwrap_or_default();
    let api_key = credential(headers);
    tracing::info!(
        path,
        model = %view.model,
        stream = view.stream,
        tools = view.tool_names.len(),
        prompt = %view.typed_prompt(),
        tool_result = view.tool_result.is_some(),
        "messages request"
    );
    tracing::debug!(headers = ?redacted(headers), "messages request headers");
    tracing::debug!(body = %String::from_utf8_lossy(body), "messages request body");
    shared.record(RecordedRequest {
        path: path.to_owned(),
        model: view.model.clone(),
        system: view.system.clone(),
        typed_prompt: view.typed_prompt().to_owned(),
        api_key: api_key.clone(),
        stream: view.stream,
        tool_names: view.tool_names.clone(),
        max_tokens: view.max_tokens,
        tool_result: view.tool_result.clone(),
        tool_result_is_error: view.tool_result_is_error,
    });

    delay(&shared.config).await;
    if !authorized(&shared.config, api_key.as_deref()) {
        return error_response(401, "model double: invalid x-api-key");
    }
    if parsed.is_none() {
        return error_response(400, "model double: request body is not a JSON object");
    }

    let input_tokens = estimate_tokens(body.len());
    let mut next_id = || shared.next_id();
    let (msg, pacing) = match decide(&view) {
        Reply::Error { status } => {
            return error_response(status, &format!("model double: scripted {status}"));
        }
        Reply::Message { blocks } => (
            AssistantMessage::build(&blocks, &view.model, input_tokens, &mut next_id),
            None,
        ),
        Reply::Slow { text, duration } => (
            AssistantMessage::build(
                &[Block::Text(text)],
                &view.model,
                input_tokens,
                &mut next_id,
            ),
            Some(duration),
        ),
    };
    let request_id = format!("req_double_{}", shared.next_id());

    if !view.stream {
        if let Some(duration) = pacing {
            tokio::time::sleep(duration).await;
        }
        return ([("request-id", request_id)], Json(msg.to_json())).into_response();
    }
    let frames = match pacing {
        None => msg_frames_now(&msg),
        Some(duration) => slow_frames(&msg, duration),
    };
    (
        [
            (
                header::CONTENT_TYPE.as_str(),
                "text/event-stream".to_owned(),
            ),
            (header::CACHE_CONTROL.as_str(), "no-cache".to_owned()),
            ("request-id", request_id),
        ],
        Body::from_stream(paced_stream(msg.id.clone(), frames)),
    )
        .into_response()
}

/// All frames of a message, without delays.
fn msg_frames_now(msg: &AssistantMessage) -> Vec<(Duration, Bytes)> {
    sse::message_frames(msg)
        .into_iter()
        .map(|f| (Duration::ZERO, f))
        .collect()
}

/// Frames of a single-text message whose words are spread over `duration`.
fn slow_frames(msg: &AssistantMessage, duration: Duration) -> Vec<(Duration, Bytes)> {
    let block = msg.content.first().cloned().unwrap_or(Value::Null);
    let text = block.get("text").and_then(Value::as_str).unwrap_or("");
    let words = sse::words(text);
    let step = duration / u32::try_from(words.len().max(1)).unwrap_or(u32::MAX);
    let mut frames: Vec<(Duration, Bytes)> = sse::head(msg)
        .into_iter()
        .chain([sse::block_start(0, &block)])
        .map(|f| (Duration::ZERO, f))
        .collect();
    frames.extend(words.iter().map(|w| (step, sse::text_delta(0, w))));
    if words.is_empty() {
        frames.push((duration, sse::text_delta(0, "")));
    }
    frames.extend(
        [sse::block_stop(0)]
            .into_iter()
            .chain(sse::tail(msg))
            .map(|f| (Duration::ZERO, f)),
    );
    frames
}

/// Logs when a stream is dropped (client gone) before its last frame.
struct StreamProgress {
    message_id: String,
    sent: Arc<AtomicUsize>,
    total: usize,
}

impl Drop for StreamProgress {
    fn drop(&mut self) {
        let sent = self.sent.load(Ordering::Relaxed);
        if sent < self.total {
            tracing::info!(
                message_id = %self.message_id,
                sent,
                total = self.total,
                "client went away; stream stopped"
            );
        }
    }
}

/// A body stream that waits before each frame; dropping it stops the work.
fn paced_stream(
    message_id: String,
    frames: Vec<(Duration, Bytes)>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    let sent = Arc::new(AtomicUsize::new(0));
    let progress = StreamProgress {
        message_id,
        sent: Arc::clone(&sent),
        total: frames.len(),
    };
    stream::iter(frames).then(move |(wait, frame)| {
        let _keep_alive = &progress;
        let sent = Arc::clone(&sent);
        async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            sent.fetch_add(1, Ordering::Relaxed);
            Ok(frame)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn credential_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        assert_eq!(credential(&h).as_deref(), Some("tok"));
        h.insert("x-api-key", HeaderValue::from_static("key"));
        assert_eq!(credential(&h).as_deref(), Some("key"));
        let cfg = ModelDoubleConfig {
            api_key: Some("key".into()),
            latency_ms: 0,
        };
        assert!(authorized(&cfg, Some("key")));
        assert!(!authorized(&cfg, Some("tok")));
        assert!(!authorized(&cfg, None));
        assert!(authorized(&ModelDoubleConfig::default(), None));
    }
}
