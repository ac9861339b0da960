//! API throughput: `GET /api/v1/sessions/{id}/status` on loopback from
//! concurrent clients for a bounded time (every request goes to this
//! process's own listener on 127.0.0.1).

use crate::session::{delete, ready_session};
use crate::stats::Summary;
use cc_testkit::Harness;
use futures_util::future::join_all;
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiResult {
    pub clients: usize,
    pub seconds: f64,
    pub requests: usize,
    pub errors: usize,
    pub requests_per_sec: f64,
    pub latency_ms: Option<Summary>,
    pub error_samples: Vec<String>,
}

pub async fn measure(
    h: &Harness,
    repo_url: &str,
    clients: usize,
    duration: Duration,
) -> Result<ApiResult, String> {
    let s = ready_session(h, repo_url).await?;
    let started = Instant::now();
    let deadline = started + duration;
    let results = join_all((0..clients).map(|_| {
        let client = h.client.clone();
        let id = s.id.clone();
        tokio::spawn(async move {
            let mut times = Vec::new();
            let mut errors = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.status(&id).await {
                    Ok(_) => times.push(t.elapsed()),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (times, errors)
        })
    }))
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let mut times = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok((t, e)) => {
                times.extend(t);
                errors.extend(e);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    s.ws.close().await;
    delete(&h.client, &s.id).await?;
    let requests = times.len() + errors.len();
    Ok(ApiResult {
        clients,
        seconds,
        requests,
        errors: errors.len(),
        requests_per_sec: times.len() as f64 / seconds,
        latency_ms: Summary::of(&times),
        error_samples: errors.into_iter().take(5).collect(),
    })
}
