//! A webhook endpoint for tests: an HTTP server on loopback that keeps
//! every delivery it is sent (headers and raw body) and answers `500` to
//! the first `fail_first` of them, then `204`, so a test sees the retries.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    /// Whether the signature is `secret`'s over this request, and its
    /// timestamp within five minutes of now.
    pub fn verifies(&self, secret: &str) -> bool {
        let Ok(ts) = self.timestamp.parse::<u64>() else {
            return false;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let expected = cc_core::webhook::signature(secret, ts, &self.id, &self.body);
        now.abs_diff(ts) <= 300
            && self
                .signature
                .split(' ')
                .any(|s| cc_core::ids::secret_eq(s, &expected))
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a delivery's body is JSON")
    }
}

#[derive(Default)]
struct State {
    fail_first: usize,
    received: Vec<Received>,
}

pub struct WebhookReceiver {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

impl WebhookReceiver {
    /// Listens on a free loopback port.
    pub async fn start(fail_first: usize) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State {
            fail_first,
            received: Vec::new(),
        }));
        let st = state.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let st = st.clone();
                async move {
                    let mut st = st.lock().expect("receiver state");
                    let status = if st.received.len() < st.fail_first {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    };
                    let r = Received {
                        id: header(&headers, cc_core::webhook::HEADER_ID),
                        timestamp: header(&headers, cc_core::webhook::HEADER_TIMESTAMP),
                        signature: header(&headers, cc_core::webhook::HEADER_SIGNATURE),
                        body: body.to_vec(),
                        status: status.as_u16(),
                    };
                    st.received.push(r);
                    status
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    /// `host:port`, as `--allow-webhook-host` takes it.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// From now on, fails the requests until `n` have arrived in all.
    pub fn set_fail_first(&self, n: usize) {
        self.state.lock().expect("receiver state").fail_first = n;
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("receiver state").received.clone()
    }

    /// Waits (up to `timeout`) until `done` holds for what arrived.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> anyhow::Result<Vec<Received>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if done(&got) {
                return Ok(got);
            }
            if tokio::time::Instant::now() >= deadline {
                let bodies: Vec<String> = got
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                    .collect();
                anyhow::bail!("the webhook receiver got only: {bodies:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
