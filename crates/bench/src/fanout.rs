//! Stream fan-out: many WebSocket watchers on one session while it streams
//! a turn. Delivery lag of each event at each watcher is its receive time
//! minus the event's own `timestamp` (stamped by the orchestrator when the
//! event was logged; the orchestrator runs in this process, so both come
//! from one clock; timestamps have millisecond resolution).

use crate::session::{delete, err, ready_session, run_turn, TURN_TIMEOUT};
use crate::stats::Summary;
use cc_testkit::harness::is_state;
use cc_testkit::Harness;
use cc_wire::api::SessionState;
use futures_util::future::join_all;
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FanoutResult {
    pub watchers: usize,
    /// Events of the turn each watcher received.
    pub events_per_watcher: Option<Summary>,
    pub lag_ms: Option<Summary>,
    /// Watchers that missed events or failed.
    pub incomplete_watchers: usize,
    pub errors: Vec<String>,
}

/// Streams word by word for two seconds: many small events.
const TURN: &str = "slow: 2000 one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty";

pub async fn measure(h: &Harness, repo_url: &str, watchers: usize) -> FanoutResult {
    let mut errors = Vec::new();
    let mut lags = Vec::new();
    let mut counts = Vec::new();
    let mut incomplete = 0;
    match ready_session(h, repo_url).await {
        Err(e) => errors.push(e),
        Ok(mut s) => {
            // Warm: Claude Code has started before the watched turn.
            if let Err(e) = run_turn(&mut s.ws, "say: warming up").await {
                errors.push(e);
            }
            let since = match h.client.status(&s.id).await {
                Ok(st) => st.last_seq,
                Err(e) => {
                    errors.push(e.to_string());
                    0
                }
            };
            let mut streams = Vec::new();
            for _ in 0..watchers {
                match h.client.stream(&s.id, since).await {
                    Ok(ws) => streams.push(ws),
                    Err(e) => errors.push(format!("watcher: {e}")),
                }
            }
            let tasks: Vec<_> = streams
                .into_iter()
                .map(|ws| tokio::spawn(watch(ws)))
                .collect();
            // The turn is sent by REST, so no watcher is also the sender.
            match h.client.command(&s.id, TURN).await {
                Ok(_) => {}
                Err(e) => errors.push(format!("command: {e}")),
            }
            let mut all = Vec::new();
            for r in join_all(tasks).await {
                match r {
                    Ok(Ok(w)) => all.push(w),
                    Ok(Err(e)) => {
                        incomplete += 1;
                        errors.push(e);
                    }
                    Err(e) => {
                        incomplete += 1;
                        errors.push(e.to_string());
                    }
                }
            }
            let most = all.iter().map(Vec::len).max().unwrap_or(0);
            for w in all {
                if w.len() < most {
                    incomplete += 1;
                }
                counts.push(w.len() as f64);
                lags.extend(w);
            }
            s.ws.close().await;
            if let Err(e) = delete(&h.client, &s.id).await {
                errors.push(e);
            }
        }
    }
    errors.truncate(5);
    FanoutResult {
        watchers,
        events_per_watcher: Summary::of_values(&counts),
        lag_ms: Summary::of_values(&lags),
        incomplete_watchers: incomplete,
        errors,
    }
}

/// Reads one watcher's stream until the turn's closing `ready`; returns the
/// lag of every event, in milliseconds.
async fn watch(mut ws: cc_client::EventStream) -> Result<Vec<f64>, String> {
    let mut lags = Vec::new();
    let mut busy = false;
    let deadline = tokio::time::Instant::now() + TURN_TIMEOUT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "watcher timed out".to_owned())?
            .map_err(err)?
            .ok_or("stream closed")?;
        let received = SystemTime::now();
        let at = UNIX_EPOCH + Duration::from_millis(msg.timestamp());
        let lag = received.duration_since(at).unwrap_or(Duration::ZERO);
        lags.push(lag.as_secs_f64() * 1e3);
        if is_state(&msg, SessionState::Busy) {
            busy = true;
        }
        if (busy && is_state(&msg, SessionState::Ready)) || is_state(&msg, SessionState::Error) {
            ws.close().await;
            return Ok(lags);
        }
    }
}
