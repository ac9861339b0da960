//! What a relayed model call cost, read from the upstream's answer as it
//! passes: the gateway's own account of a session's spend, which budgets
//! are checked against (the container's reports are never trusted for it).
//!
//! Invariants:
//! - The answer is never held back: each chunk is observed and passed on
//!   as it came. A streamed answer's usage is read from its SSE
//!   `message_start` (`message.usage`) and `message_delta` (`usage`, whose
//!   counts are cumulative); a plain answer's from its JSON `usage`.
//! - Parser state is bounded: an SSE line is kept up to [`MAX_SSE_LINE`]
//!   (longer ones are skipped to their end unread), a JSON answer up to
//!   [`MAX_JSON_BODY`] (beyond, only its last [`JSON_TAIL`] bytes, where the
//!   API writes `usage`).
//! - Every token is charged once: what is due is the difference from what
//!   was already charged, so several `message_delta`s, or an answer cut off
//!   after `message_start`, are charged what they used.
//! - A stream dropped before its end (the client went away) is charged what
//!   it had shown so far.

use crate::AppManager;
use bytes::Bytes;
use cc_core::pricing::PriceTable;
use cc_core::{ModelSpend, Runtime, SessionId, Store};
use cc_wire::api::TokenUsage;
use futures_util::{Stream, StreamExt};
use serde_json::Value;

/// Longest SSE line read; usage lines are a few hundred bytes, and the
/// content deltas that can be longer are not needed.
pub(super) const MAX_SSE_LINE: usize = 64 * 1024;
/// Largest plain (non-streamed) answer kept whole to read its usage; an
/// answer's output is at most a model's output limit (~128k tokens, well
/// below this).
pub(super) const MAX_JSON_BODY: usize = 8 * 1024 * 1024;
/// What is kept of a longer plain answer: its end, where `usage` is.
pub(super) const JSON_TAIL: usize = 64 * 1024;

/// How the answer is framed.
enum Framing {
    Sse {
        line: Vec<u8>,
        /// The current line grew beyond [`MAX_SSE_LINE`]: skip to its end.
        skipping: bool,
    },
    Json {
        body: Vec<u8>,
        /// The body grew beyond [`MAX_JSON_BODY`]: `body` holds its tail.
        truncated: bool,
    },
}

/// The usage of one answer, as far as it has been read.
pub(super) struct Meter {
    framing: Framing,
    /// The model the upstream says answered (else the one asked for).
    model: String,
    usage: TokenUsage,
    charged: TokenUsage,
    prices: PriceTable,
}

impl Meter {
    /// A meter for an answer with this `content-type`, to a request for
    /// `model`.
    pub(super) fn new(content_type: &str, model: &str, prices: PriceTable) -> Self {
        let framing = if content_type.starts_with("text/event-stream") {
            Framing::Sse {
                line: Vec::new(),
                skipping: false,
            }
        } else {
            Framing::Json {
                body: Vec::new(),
                truncated: false,
            }
        };
        Self {
            framing,
            model: model.to_owned(),
            usage: TokenUsage::default(),
            charged: TokenUsage::default(),
            prices,
        }
    }

    /// Observes the next chunk of the answer.
    pub(super) fn feed(&mut self, chunk: &[u8]) {
        match &mut self.framing {
            Framing::Sse { line, skipping } => {
                let mut lines = Vec::new();
                for (i, piece) in chunk.split(|b| *b == b'\n').enumerate() {
                    if i > 0 {
                        // The previous piece ended a line.
                        if !*skipping {
                            lines.push(std::mem::take(line));
                        }
                        line.clear();
                        *skipping = false;
                    }
                    if *skipping {
                        continue;
                    }
                    if line.len() + piece.len() > MAX_SSE_LINE {
                        line.clear();
                        *skipping = true;
                    } else {
                        line.extend_from_slice(piece);
                    }
                }
                for l in lines {
                    self.on_sse_line(&l);
                }
            }
            Framing::Json { body, truncated } => {
                body.extend_from_slice(chunk);
                if body.len() > MAX_JSON_BODY {
                    let cut = body.len() - JSON_TAIL;
                    body.drain(..cut);
                    *truncated = true;
                }
            }
        }
    }

    fn on_sse_line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        match event.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let message = &event["message"];
                if let Some(m) = message.get("model").and_then(Value::as_str) {
                    self.model = m.chars().take(200).collect();
                }
                if let Some(u) = message.get("usage") {
                    overlay(&mut self.usage, u);
                }
            }
            Some("message_delta") => {
                if let Some(u) = event.get("usage") {
                    overlay(&mut self.usage, u);
                }
            }
            _ => {}
        }
    }

    /// The spend read since the last call, if any (for a streamed answer;
    /// a plain one is read at its end, see [`Self::finish`]).
    pub(super) fn due(&mut self) -> Option<ModelSpend> {
        let tokens = TokenUsage {
            input_tokens: self
                .usage
                .input_tokens
                .saturating_sub(self.charged.input_tokens),
            output_tokens: self
                .usage
                .output_tokens
                .saturating_sub(self.charged.output_tokens),
            cache_creation_input_tokens: self
                .usage
                .cache_creation_input_tokens
                .saturating_sub(self.charged.cache_creation_input_tokens),
            cache_read_input_tokens: self
                .usage
                .cache_read_input_tokens
                .saturating_sub(self.charged.cache_read_input_tokens),
        };
        if tokens == TokenUsage::default() {
            return None;
        }
        self.charged = self.usage;
        Some(ModelSpend {
            cost_usd: self.prices.cost(&self.model, &tokens),
            tokens,
        })
    }

    /// The answer ended (or was dropped): what it still owes.
    pub(super) fn finish(&mut self) -> Option<ModelSpend> {
        if let Framing::Json { body, truncated } = &mut self.framing {
            let body = std::mem::take(body);
            let answer = if *truncated {
                tail_usage(&body)
            } else {
                serde_json::from_slice::<Value>(&body).ok()
            };
            if let Some(answer) = answer {
                if let Some(m) = answer.get("model").and_then(Value::as_str) {
                    self.model = m.chars().take(200).collect();
                }
                if let Some(u) = answer.get("usage") {
                    overlay(&mut self.usage, u);
                }
            }
        }
        self.due()
    }
}

/// Sets each token count `u` holds (a non-negative integer; anything else
/// is ignored), keeping the others.
fn overlay(usage: &mut TokenUsage, u: &Value) {
    let set = |field: &mut u64, key: &str| {
        if let Some(n) = u.get(key).and_then(Value::as_u64) {
            *field = n.min(cc_core::pricing::MAX_TOKENS_PER_CALL);
        }
    };
    set(&mut usage.input_tokens, "input_tokens");
    set(&mut usage.output_tokens, "output_tokens");
    set(
        &mut usage.cache_creation_input_tokens,
        "cache_creation_input_tokens",
    );
    set(
        &mut usage.cache_read_input_tokens,
        "cache_read_input_tokens",
    );
}

/// From the tail of a long JSON answer: `{"model", "usage"}` read from the
/// last `"usage":` object in it (the API writes it after the content).
fn tail_usage(tail: &[u8]) -> Option<Value> {
    const KEY: &[u8] = b"\"usage\":";
    let at = tail.windows(KEY.len()).rposition(|w| w == KEY)?;
    let rest = &tail[at + KEY.len()..];
    let usage = serde_json::Deserializer::from_slice(rest)
        .into_iter::<Value>()
        .next()?
        .ok()?;
    Some(serde_json::json!({ "usage": usage }))
}

/// The answer's body, passed on chunk by chunk while `meter` reads it; what
/// it costs goes to the session's spend as soon as it is known (before the
/// chunk that shows it reaches the client, so Claude Code's turn cannot end
/// before its cost is on its way to the session).
pub(super) fn metered<R: Runtime, S: Store>(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    meter: Meter,
    manager: AppManager<R, S>,
    peers: Option<crate::cluster::Peers>,
    session: SessionId,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let state = Metered {
        meter: Some(meter),
        manager,
        peers,
        session,
    };
    futures_util::stream::unfold(
        (Box::pin(body), state),
        |(mut body, mut state)| async move {
            match body.next().await {
                Some(Ok(chunk)) => {
                    if let Some(meter) = state.meter.as_mut() {
                        meter.feed(&chunk);
                        if let Some(spend) = meter.due() {
                            state.charge(spend).await;
                        }
                    }
                    Some((Ok(chunk), (body, state)))
                }
                Some(Err(e)) => {
                    state.end().await;
                    Some((Err(std::io::Error::other(e)), (body, state)))
                }
                None => {
                    state.end().await;
                    None
                }
            }
        },
    )
}

/// A meter with where its spend goes.
struct Metered<R: Runtime, S: Store> {
    /// `None` once the answer ended and was charged.
    meter: Option<Meter>,
    manager: AppManager<R, S>,
    /// Where the spend of a session another replica runs goes.
    peers: Option<crate::cluster::Peers>,
    session: SessionId,
}

impl<R: Runtime, S: Store> Metered<R, S> {
    async fn charge(&self, spend: ModelSpend) {
        charge(&self.manager, self.peers.as_ref(), &self.session, spend).await;
    }

    async fn end(&mut self) {
        if let Some(spend) = self.meter.take().and_then(|mut m| m.finish()) {
            self.charge(spend).await;
        }
    }
}

impl<R: Runtime, S: Store> Drop for Metered<R, S> {
    fn drop(&mut self) {
        // The client went away mid-answer: charge what was used so far.
        if let Some(spend) = self.meter.take().and_then(|mut m| m.finish()) {
            let manager = self.manager.clone();
            let peers = self.peers.clone();
            let session = self.session.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    drop(rt.spawn(async move {
                        charge(&manager, peers.as_ref(), &session, spend).await
                    }))
                }
                // Only at shutdown: nothing is left to record it with.
                Err(_) => tracing::warn!(session = %session, cost_usd = spend.cost_usd,
                    "a model call's spend was lost at shutdown"),
            }
        }
    }
}

/// Adds the spend to the session: here when this replica runs it, else at
/// the replica that does (its actor owns the session's totals).
async fn charge<R: Runtime, S: Store>(
    manager: &AppManager<R, S>,
    peers: Option<&crate::cluster::Peers>,
    session: &SessionId,
    spend: ModelSpend,
) {
    tracing::debug!(
        session = %session,
        cost_usd = spend.cost_usd,
        input_tokens = spend.tokens.input_tokens,
        output_tokens = spend.tokens.output_tokens,
        "model call metered"
    );
    if let Some(peers) = peers {
        if charge_owner(manager, peers, session, spend).await.is_err() {
            // The owner died: its sessions move within seconds (here, or
            // to another replica), so the spend is carried there, in the
            // background, while the answer goes on to the session.
            let (manager, peers, session) = (manager.clone(), peers.clone(), session.clone());
            tokio::spawn(async move {
                for _ in 0..SPEND_RETRIES {
                    tokio::time::sleep(SPEND_RETRY_EVERY).await;
                    if charge_owner(&manager, &peers, &session, spend)
                        .await
                        .is_ok()
                    {
                        return;
                    }
                }
                tracing::error!(session = %session, cost_usd = spend.cost_usd,
                    "a model call's spend was lost: the session's replica never answered");
            });
        }
        return;
    }
    if let Err(e) = manager.record_spend(session, spend).await {
        tracing::error!(session = %session, error = %e, "recording a model call's spend");
    }
}

/// How often, and how long, a spend whose owner did not take it is carried
/// on: long enough for a dead replica's lease to run out (6 s) and its
/// sessions to be taken over.
const SPEND_RETRIES: u32 = 10;
const SPEND_RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Records the spend at the session's owner: this replica or another.
async fn charge_owner<R: Runtime, S: Store>(
    manager: &AppManager<R, S>,
    peers: &crate::cluster::Peers,
    session: &SessionId,
    spend: ModelSpend,
) -> Result<(), ()> {
    let result = match manager.route(session.as_str()).await {
        Ok(cc_core::Route::Replica(owner)) => peers
            .send_spend(&owner, session, &spend)
            .await
            .map_err(|e| format!("replica {}: {e}", owner.id)),
        Ok(cc_core::Route::Here) => manager
            .record_spend(session, spend)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(format!("finding the session's replica: {e}")),
    };
    result.map_err(|e| {
        tracing::warn!(session = %session, error = %e, "recording a model call's spend");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(events: &[Value]) -> Vec<u8> {
        events
            .iter()
            .flat_map(|e| {
                format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()).into_bytes()
            })
            .collect()
    }

    fn sonnet(i: u64, o: u64, w: u64, r: u64) -> f64 {
        (i as f64 * 3.0 + o as f64 * 15.0 + w as f64 * 3.75 + r as f64 * 0.3) / 1e6
    }

    #[test]
    fn a_stream_is_charged_its_usage_once_in_any_chunking() {
        let stream = frames(&[
            serde_json::json!({"type":"message_start","message":{"model":"claude-sonnet-4-5-20250929",
                "usage":{"input_tokens":1200,"cache_creation_input_tokens":100,
                "cache_read_input_tokens":5000,"output_tokens":1}}}),
            serde_json::json!({"type":"ping"}),
            serde_json::json!({"type":"content_block_delta","index":0,
                "delta":{"type":"text_delta","text":"x".repeat(MAX_SSE_LINE * 2)}}),
            serde_json::json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},
                "usage":{"output_tokens":300}}),
            serde_json::json!({"type":"message_stop"}),
        ]);
        for size in [1, 7, 4096, stream.len()] {
            let mut m = Meter::new("text/event-stream", "claude-opus-4", PriceTable::default());
            let mut spent = Vec::new();
            for chunk in stream.chunks(size) {
                m.feed(chunk);
                spent.extend(m.due());
            }
            spent.extend(m.finish());
            let tokens: u64 = spent.iter().map(|s| s.tokens.output_tokens).sum();
            let cost: f64 = spent.iter().map(|s| s.cost_usd).sum();
            assert_eq!(tokens, 300, "chunks of {size}");
            assert!(
                (cost - sonnet(1200, 300, 100, 5000)).abs() < 1e-12,
                "{cost}"
            );
        }
    }

    #[test]
    fn a_cut_off_stream_is_charged_what_it_showed_and_bad_counts_are_ignored() {
        let stream = frames(&[serde_json::json!({"type":"message_start","message":{
            "usage":{"input_tokens":1000,"output_tokens":-5,"cache_read_input_tokens":"9"}}})]);
        let mut m = Meter::new(
            "text/event-stream",
            "claude-sonnet-4-5",
            PriceTable::default(),
        );
        m.feed(&stream);
        let s = m.due().unwrap();
        assert_eq!(
            s.tokens,
            TokenUsage {
                input_tokens: 1000,
                ..Default::default()
            }
        );
        assert!(m.finish().is_none());
    }

    #[test]
    fn a_plain_answer_is_charged_at_its_end_even_when_long() {
        let answer = serde_json::json!({"type":"message","model":"claude-haiku-4-5",
            "content":[{"type":"text","text":"\"usage\":{\"input_tokens\":99999999} ".repeat(1000)}],
            "usage":{"input_tokens":10,"output_tokens":20}})
        .to_string();
        let mut m = Meter::new(
            "application/json",
            "claude-sonnet-4-5",
            PriceTable::default(),
        );
        m.feed(answer.as_bytes());
        assert!(m.due().is_none());
        let s = m.finish().unwrap();
        assert_eq!((s.tokens.input_tokens, s.tokens.output_tokens), (10, 20));
        assert!((s.cost_usd - (10.0 * 1.0 + 20.0 * 5.0) / 1e6).abs() < 1e-12);

        // Beyond what is kept whole, the tail still holds the usage.
        let big = serde_json::json!({"type":"message","content":[{"type":"text",
            "text":"y".repeat(MAX_JSON_BODY + 10)}],"usage":{"input_tokens":7,"output_tokens":8}})
        .to_string();
        let mut m = Meter::new(
            "application/json",
            "claude-sonnet-4-5",
            PriceTable::default(),
        );
        for chunk in big.as_bytes().chunks(1 << 20) {
            m.feed(chunk);
        }
        if let Framing::Json { body, .. } = &m.framing {
            assert!(body.len() <= MAX_JSON_BODY);
        }
        let s = m.finish().unwrap();
        assert_eq!((s.tokens.input_tokens, s.tokens.output_tokens), (7, 8));
    }
}
