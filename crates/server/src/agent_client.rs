//! HTTP client for sessiond (contract: `cc_wire::sessiond`).

use bytes::{Buf, BytesMut};
use cc_core::{Agent, AgentEndpoint, AgentError, EventStream};
use cc_wire::sessiond::{
    CommandAccepted, CommandRequest, ErrorBody, Health, InitRequest, JournalEntry, PROTOCOL_VERSION,
};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Connecting to a container on the same host takes microseconds; a
/// longer wait means it is not listening yet.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Plain calls (health, init, command) answer at once.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// A push runs git against the relay and the repository's server.
const PUSH_TIMEOUT: Duration = Duration::from_secs(300);
/// sessiond sends a heartbeat line every 10 s on a followed journal;
/// three missed heartbeats mean the connection is dead.
const FOLLOW_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct HttpAgent {
    calls: reqwest::Client,
    follows: reqwest::Client,
}

impl HttpAgent {
    pub fn new() -> Result<Self, reqwest::Error> {
        let base = || {
            reqwest::Client::builder()
                // Containers are reached directly, never through a proxy.
                .no_proxy()
                .connect_timeout(CONNECT_TIMEOUT)
        };
        Ok(Self {
            calls: base().timeout(CALL_TIMEOUT).build()?,
            follows: base().read_timeout(FOLLOW_READ_TIMEOUT).build()?,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        ep: &AgentEndpoint,
    ) -> Result<T, AgentError> {
        let resp = req
            .bearer_auth(ep.token.expose())
            .send()
            .await
            .map_err(transport)?;
        decode(resp).await
    }
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, AgentError> {
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(transport)?;
    if status.is_success() {
        serde_json::from_slice(&bytes)
            .map_err(|e| AgentError::Protocol(format!("unexpected answer: {e}")))
    } else {
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or(ErrorBody {
            code: "unknown".into(),
            message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        });
        Err(AgentError::Refused {
            status: status.as_u16(),
            code: body.code,
            message: body.message,
        })
    }
}

fn transport(e: reqwest::Error) -> AgentError {
    AgentError::Unreachable(e.to_string())
}

impl Agent for HttpAgent {
    async fn health(&self, ep: &AgentEndpoint) -> Result<Health, AgentError> {
        let h: Health = self
            .call(self.calls.get(format!("{}/v1/health", ep.base_url)), ep)
            .await?;
        if h.protocol_version != PROTOCOL_VERSION {
            return Err(AgentError::Version {
                expected: PROTOCOL_VERSION,
                found: h.protocol_version,
            });
        }
        Ok(h)
    }

    async fn init(&self, ep: &AgentEndpoint, req: &InitRequest) -> Result<Health, AgentError> {
        self.call(
            self.calls
                .post(format!("{}/v1/init", ep.base_url))
                .json(req),
            ep,
        )
        .await
    }

    async fn command(
        &self,
        ep: &AgentEndpoint,
        body: &CommandRequest,
    ) -> Result<CommandAccepted, AgentError> {
        self.call(
            self.calls
                .post(format!("{}/v1/command", ep.base_url))
                .json(body),
            ep,
        )
        .await
    }

    async fn interrupt(&self, ep: &AgentEndpoint) -> Result<(), AgentError> {
        let _: serde_json::Value = self
            .call(self.calls.post(format!("{}/v1/interrupt", ep.base_url)), ep)
            .await?;
        Ok(())
    }

    async fn diff(&self, ep: &AgentEndpoint) -> Result<cc_wire::api::SessionDiff, AgentError> {
        self.call(self.calls.get(format!("{}/v1/diff", ep.base_url)), ep)
            .await
    }

    async fn files(
        &self,
        ep: &AgentEndpoint,
        path: &str,
    ) -> Result<cc_wire::api::SessionPath, AgentError> {
        let url = format!("{}/v1/files", ep.base_url);
        self.call(self.calls.get(url).query(&[("path", path)]), ep)
            .await
    }

    async fn push(
        &self,
        ep: &AgentEndpoint,
        req: &cc_wire::sessiond::PushRequest,
    ) -> Result<cc_wire::sessiond::PushOutcome, AgentError> {
        let url = format!("{}/v1/push", ep.base_url);
        // A push may wait for the relay's fast-forward check and the server.
        let call = self.calls.post(url).timeout(PUSH_TIMEOUT).json(req);
        self.call(call, ep).await
    }

    async fn follow(&self, ep: &AgentEndpoint, since: u64) -> Result<EventStream, AgentError> {
        let resp = self
            .follows
            .get(format!("{}/v1/events", ep.base_url))
            .query(&[("since", since.to_string()), ("follow", "true".into())])
            .bearer_auth(ep.token.expose())
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(decode::<serde_json::Value>(resp)
                .await
                .err()
                .unwrap_or_else(|| AgentError::Protocol("journal request failed".into())));
        }
        Ok(ndjson(resp.bytes_stream()).boxed())
    }
}

/// Splits a byte stream into JSON lines; empty lines are heartbeats.
fn ndjson(
    bytes: impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static,
) -> impl futures_util::Stream<Item = Result<JournalEntry, AgentError>> + Send + 'static {
    futures_util::stream::unfold(
        (Box::pin(bytes), BytesMut::new(), false),
        |(mut bytes, mut buf, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line = buf.split_to(pos + 1);
                    let line = &line[..pos];
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let item = serde_json::from_slice::<JournalEntry>(line)
                        .map_err(|e| AgentError::Protocol(format!("bad journal line: {e}")));
                    return Some((item, (bytes, buf, false)));
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(chunk.chunk()),
                    Some(Err(e)) => return Some((Err(transport(e)), (bytes, buf, true))),
                    None => return None,
                }
            }
        },
    )
}
