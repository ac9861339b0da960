//! `cc-model-double`: a scriptable fake of the Anthropic Messages API.
//!
//! The real Claude Code CLI accepts it as its model endpoint (point
//! `ANTHROPIC_BASE_URL` at it). Replies are deterministic and chosen by the
//! first line of the conversation's last typed user prompt:
//!
//! | prompt | reply |
//! |---|---|
//! | `bash: <command>` | `tool_use` of `Bash`; after the tool result: ``Ran `<command>`.`` + output |
//! | `write: <path>` + lines | `tool_use` of `Write` with the lines; then `Wrote <path>.` |
//! | `say: <text>` | exactly `<text>` |
//! | `recall` | `You said before: "p1", "p2"` (earlier typed prompts, or `nothing`) |
//! | `slow: <ms> <text>` | `<text>` streamed word by word over `<ms>` ms |
//! | `error: <status>` | HTTP `<status>` with Anthropic's error JSON |
//! | anything else | `Model double here. You asked: <prompt>` |
//!
//! A tool call takes two requests: the `tool_use` answer, then the follow-up
//! carrying the `tool_result`, answered with text. A user message that Claude
//! Code delivers mid-turn (wrapped in "The user sent a new message while you
//! were working: ...", next to a tool result) counts as a new typed prompt.
//! Requests are recorded and served as JSON at `GET /_double/requests`
//! (`DELETE` clears them).
//!
//! This module owns the public API: configuration, recorded requests,
//! [`serve`] and the in-process [`spawn`] / [`ModelDouble`] handle.

#![forbid(unsafe_code)]

mod api_error;
mod message;
mod request;
mod script;
mod server;
mod sse;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::server::Shared;

/// Configuration of a double.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelDoubleConfig {
    /// When set, requests presenting another `x-api-key` / bearer token get 401.
    pub api_key: Option<String>,
    /// Delay before the first byte of every API response.
    pub latency_ms: u64,
}

/// One `/v1/messages` request as the double saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Request path (without query), e.g. `/v1/messages`.
    pub path: String,
    /// The requested model.
    pub model: String,
    /// The system prompt flattened to one string.
    pub system: String,
    /// The typed prompt of the conversation's last typed user turn.
    pub typed_prompt: String,
    /// The credential presented (`x-api-key`, else the bearer token).
    pub api_key: Option<String>,
    /// Whether a streamed response was requested.
    pub stream: bool,
    /// Names of the tools offered.
    pub tool_names: Vec<String>,
    /// The `max_tokens` field.
    pub max_tokens: Option<u64>,
    /// The text of the `tool_result` the request carries (the follow-up
    /// after a tool call), as the model receives it.
    pub tool_result: Option<String>,
    /// Whether that `tool_result` is marked `is_error` (a failed or
    /// refused tool).
    pub tool_result_is_error: bool,
}

/// Serves the double on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: ModelDoubleConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_shared(listener, Arc::new(Shared::new(config)), shutdown).await
}

async fn serve_shared(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, server::router(shared))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Starts a double on `127.0.0.1:0` in a background task.
pub async fn spawn(config: ModelDoubleConfig) -> io::Result<ModelDouble> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(config));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_shared(listener, Arc::clone(&shared), async move {
        // Either an explicit signal or the handle being dropped stops the server.
        let _ = stopped.await;
    }));
    Ok(ModelDouble {
        addr,
        shared,
        stop: Some(stop),
        task: Some(task),
    })
}

/// A running in-process double; dropping it shuts the server down.
#[derive(Debug)]
pub struct ModelDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl ModelDouble {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, suitable for `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `/v1/messages` requests received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.clear_requests();
    }

    /// Stops the server and waits until open connections have finished.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for ModelDouble {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
