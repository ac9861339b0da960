//! HTTP client for sessiond (contract: `cc_wire::sessiond`).
//!
//! sessiond runs in the container, within reach of whatever runs there, so
//! everything it answers is untrusted input with bounded size: a journal
//! line beyond [`MAX_JOURNAL_LINE`] is read to its end without being kept
//! and arrives as a marker in its place (same `seq`); any other answer
//! beyond [`MAX_ANSWER_BYTES`] is refused.

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

/// Longest journal line kept: sessiond cuts Claude Code's lines at 1 MiB
/// (`MAX_LINE_BYTES` there); this leaves room for the entry around one and
/// its JSON escaping. Longer lines are replaced by a marker.
pub const MAX_JOURNAL_LINE: usize = 2 * 1024 * 1024;
/// Largest answer read from a plain call: above the largest legitimate one
/// (a diff's two 4 MiB texts, escaped; a 1 MiB file in base64).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

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
    let bytes = read_capped(resp).await?;
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

/// The whole body, within [`MAX_ANSWER_BYTES`].
async fn read_capped(resp: reqwest::Response) -> Result<Vec<u8>, AgentError> {
    let mut body = Vec::new();
    let mut chunks = resp.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(transport)?;
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(AgentError::Protocol(format!(
                "the session agent's answer is larger than {} MiB",
                MAX_ANSWER_BYTES >> 20
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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

    async fn answer_permission(
        &self,
        ep: &AgentEndpoint,
        request_id: &str,
        answer: &cc_wire::sessiond::PermissionAnswer,
    ) -> Result<cc_wire::sessiond::PermissionDecision, AgentError> {
        // The id was checked (`cc_core::session::permissions`): it cannot
        // change the path.
        let url = format!("{}/v1/permissions/{request_id}", ep.base_url);
        self.call(self.calls.post(url).json(answer), ep).await
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

/// Splits a byte stream into JSON lines; empty lines are heartbeats. A line
/// beyond [`MAX_JOURNAL_LINE`] is not kept: its start is held until its
/// `seq` can be read, the rest is discarded as it arrives, and a marker
/// entry with that `seq` takes its place.
fn ndjson(
    bytes: impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static,
) -> impl futures_util::Stream<Item = Result<JournalEntry, AgentError>> + Send + 'static {
    futures_util::stream::unfold(
        (Box::pin(bytes), Lines::default(), false),
        |(mut bytes, mut lines, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(item) = lines.next_entry() {
                    return Some((item, (bytes, lines, false)));
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => lines.push(chunk.chunk()),
                    Some(Err(e)) => return Some((Err(transport(e)), (bytes, lines, true))),
                    None => return None,
                }
            }
        },
    )
}

/// What is kept of a journal stream between chunks: at most
/// [`MAX_JOURNAL_LINE`] bytes of the current line.
#[derive(Default)]
struct Lines {
    buf: BytesMut,
    /// The current line grew beyond the limit: its `seq` (if its start
    /// showed one) and how long it is so far; its bytes are discarded.
    oversized: Option<(Option<u64>, usize)>,
    /// Entries complete and ready.
    ready: std::collections::VecDeque<Result<JournalEntry, AgentError>>,
}

impl Lines {
    fn push(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|b| *b == b'\n');
            let (part, rest) = match newline {
                Some(i) => (&chunk[..i], &chunk[i + 1..]),
                None => (chunk, &[][..]),
            };
            match &mut self.oversized {
                Some((_, len)) => *len += part.len(),
                None if self.buf.len() + part.len() > MAX_JOURNAL_LINE => {
                    let seq = leading_seq(&self.buf);
                    self.oversized = Some((seq, self.buf.len() + part.len()));
                    self.buf.clear();
                }
                None => self.buf.extend_from_slice(part),
            }
            if newline.is_some() {
                self.end_line();
            }
            chunk = rest;
        }
    }

    fn end_line(&mut self) {
        let line = self.buf.split();
        match self.oversized.take() {
            Some((Some(seq), len)) => self.ready.push_back(Ok(JournalEntry {
                seq,
                ts: String::new(),
                event: cc_wire::sessiond::AgentEvent::Stderr {
                    line: format!(
                        "[journal entry of {len} bytes dropped: longer than the {MAX_JOURNAL_LINE} bytes the orchestrator reads]"
                    ),
                },
            })),
            Some((None, len)) => self.ready.push_back(Err(AgentError::Protocol(format!(
                "a journal line of {len} bytes without a leading seq"
            )))),
            None if line.iter().all(u8::is_ascii_whitespace) => {}
            None => self.ready.push_back(
                serde_json::from_slice::<JournalEntry>(&line)
                    .map_err(|e| AgentError::Protocol(format!("bad journal line: {e}"))),
            ),
        }
    }

    fn next_entry(&mut self) -> Option<Result<JournalEntry, AgentError>> {
        self.ready.pop_front()
    }
}

/// The `seq` of an entry from the start of its line (`{"seq":N,...`, the
/// order sessiond writes).
fn leading_seq(start: &[u8]) -> Option<u64> {
    let rest = start.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn an_oversized_journal_line_becomes_a_marker_without_being_kept() {
        let small = |seq: u64| {
            format!(
                r#"{{"seq":{seq},"ts":"2026-01-01T00:00:00Z","event":{{"type":"stderr","line":"x"}}}}"#
            )
        };
        let huge = format!(
            r#"{{"seq":2,"ts":"t","event":{{"type":"claude","data":{{"type":"result","pad":"{}"}}}}}}"#,
            "p".repeat(3 * MAX_JOURNAL_LINE)
        );
        let stream = format!("{}\n\n{huge}\n{}\n", small(1), small(3)).into_bytes();
        // In chunks the size sessiond's writes might have.
        let chunks: Vec<reqwest::Result<bytes::Bytes>> = stream
            .chunks(64 * 1024)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let entries: Vec<JournalEntry> = ndjson(futures_util::stream::iter(chunks))
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        match &entries[1].event {
            cc_wire::sessiond::AgentEvent::Stderr { line } => {
                assert!(line.contains("dropped") && line.len() < 200, "{line}")
            }
            other => panic!("{other:?}"),
        }
        // What is held between chunks stays within the limit.
        let mut lines = Lines::default();
        for chunk in huge.as_bytes().chunks(64 * 1024) {
            lines.push(chunk);
            assert!(lines.buf.len() <= MAX_JOURNAL_LINE);
        }
    }
}
