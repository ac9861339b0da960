//! An OpenTelemetry collector for tests: `POST /v1/traces` in OTLP's JSON
//! encoding, kept as a flat list of spans with their service's name.

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One received span.
#[derive(Debug, Clone)]
pub struct Span {
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub kind: i64,
    pub start_ns: u128,
    pub end_ns: u128,
    /// The raw span object.
    pub raw: Value,
}

impl Span {
    /// A string or integer attribute as text.
    pub fn attr(&self, key: &str) -> Option<String> {
        let attrs = self.raw["attributes"].as_array()?;
        let v = &attrs.iter().find(|a| a["key"] == key)?["value"];
        ["stringValue", "intValue"]
            .iter()
            .find_map(|k| v[k].as_str().map(str::to_owned))
            .or_else(|| v["doubleValue"].as_f64().map(|f| f.to_string()))
            .or_else(|| v["boolValue"].as_bool().map(|b| b.to_string()))
    }
}

fn spans_of(body: &Value) -> Result<Vec<Span>, String> {
    let mut out = Vec::new();
    for rs in body["resourceSpans"].as_array().ok_or("no resourceSpans")? {
        let service = rs["resource"]["attributes"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["key"] == "service.name"))
            .and_then(|x| x["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_owned();
        for ss in rs["scopeSpans"].as_array().ok_or("no scopeSpans")? {
            for s in ss["spans"].as_array().ok_or("no spans")? {
                let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
                let nanos = |k: &str| {
                    s[k].as_str()
                        .and_then(|n| n.parse::<u128>().ok())
                        .ok_or(format!("{k} is not a decimal string"))
                };
                out.push(Span {
                    service: service.clone(),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_span_id: text("parentSpanId"),
                    name: text("name"),
                    kind: s["kind"].as_i64().unwrap_or_default(),
                    start_ns: nanos("startTimeUnixNano")?,
                    end_ns: nanos("endTimeUnixNano")?,
                    raw: s.clone(),
                });
            }
        }
    }
    Ok(out)
}

pub struct OtlpReceiver {
    addr: std::net::SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    /// Every request body, raw (to search for what must not be there).
    bodies: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    pub async fn start() -> std::io::Result<Self> {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, b) = (spans.clone(), bodies.clone());
        let app = Router::new().route(
            "/v1/traces",
            post(move |Json(body): Json<Value>| {
                let (s, b) = (s.clone(), b.clone());
                async move {
                    b.lock().expect("bodies").push(body.to_string());
                    match spans_of(&body) {
                        Ok(got) => {
                            s.lock().expect("spans").extend(got);
                            (StatusCode::OK, Json(serde_json::json!({})))
                        }
                        Err(e) => (
                            StatusCode::BAD_REQUEST,
                            Json(serde_json::json!({ "message": e })),
                        ),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            spans,
            bodies,
            task,
        })
    }

    /// The collector's base URL (`--otlp-endpoint`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("spans").clone()
    }

    /// Every request body received, concatenated.
    pub fn raw(&self) -> String {
        self.bodies.lock().expect("bodies").join("\n")
    }

    /// Waits (up to `timeout`) until `done` holds for the spans received.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[Span]) -> bool,
    ) -> anyhow::Result<Vec<Span>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.spans();
            if done(&got) {
                return Ok(got);
            }
            if tokio::time::Instant::now() >= deadline {
                let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
                anyhow::bail!("the collector got only these spans: {names:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
