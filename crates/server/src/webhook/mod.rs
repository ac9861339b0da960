//! Webhooks (see `cc_core::webhook`): the notices of the sessions this
//! replica runs become deliveries queued in the store, one per endpoint
//! that wants them, and every replica attempts whatever is due — signed,
//! without following redirects, only to addresses the policy allows —
//! retrying with backoff until the endpoint answers 2xx or the attempts
//! run out. The endpoints' API is `crate::api::webhooks`.

mod deliver;

use crate::{AppManager, ServerStore};
use cc_core::secrets::{open_bytes, seal_bytes, SealKey};
use cc_core::webhook::{generate_id, Endpoint, NewDelivery, Notice, NoticeSender, WebhookStore};
use cc_core::{from_epoch_ms, rfc3339, Runtime};
use cc_wire::api::WebhookEvent;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Notify;

pub use deliver::{check_url, Sender, UrlRefusal};

/// Who may register endpoints where.
#[derive(Debug, Clone, Default)]
pub struct WebhookConfig {
    /// Hosts users (not only administrators) may register endpoints on
    /// (`host`, `host:port`, `*.domain`, as the egress allowlist).
    pub user_hosts: Vec<String>,
    /// `host:port`s exempt from the public-address rule, as
    /// `--allow-repo-host` is for repositories (a receiver on the host or
    /// a private network).
    pub allow_hosts: Vec<String>,
}

/// The channel the core's notices arrive on: the sender goes in the
/// manager's configuration, the receiver to [`start`].
pub fn channel() -> (NoticeSender, UnboundedReceiver<Notice>) {
    tokio::sync::mpsc::unbounded_channel()
}

/// The associated data of an endpoint's sealed secret: bound to the
/// endpoint, so a sealed blob cannot be moved to another.
fn secret_context(endpoint_id: &str) -> Vec<u8> {
    format!("webhook:{endpoint_id}").into_bytes()
}

pub(crate) fn seal_secret(key: &SealKey, endpoint_id: &str, secret: &str) -> Vec<u8> {
    seal_bytes(key, &secret_context(endpoint_id), secret.as_bytes())
}

pub(crate) fn open_secret(key: &SealKey, endpoint_id: &str, sealed: &[u8]) -> Option<String> {
    let plain = open_bytes(key, &secret_context(endpoint_id), sealed).ok()?;
    String::from_utf8(plain).ok()
}

/// The webhook tasks; dropping this stops them.
pub struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts queueing this replica's notices and delivering what is due.
/// Without a sealing key nothing can be signed: notices are dropped and
/// the API refuses registrations.
pub fn start<R: Runtime, S: ServerStore>(
    manager: AppManager<R, S>,
    notices: UnboundedReceiver<Notice>,
    config: WebhookConfig,
) -> Background {
    let wake = Arc::new(Notify::new());
    let queue = tokio::spawn(queue_notices(manager.clone(), notices, wake.clone()));
    let sender = Sender::new(&config.allow_hosts);
    let deliver = tokio::spawn(deliver::run(manager, sender, wake));
    Background {
        tasks: vec![queue, deliver],
    }
}

/// How often a store failure while queueing is retried before the notice
/// is dropped (and logged).
const QUEUE_TRIES: u32 = 5;

async fn queue_notices<R: Runtime, S: ServerStore>(
    manager: AppManager<R, S>,
    mut notices: UnboundedReceiver<Notice>,
    wake: Arc<Notify>,
) {
    while let Some(notice) = notices.recv().await {
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=QUEUE_TRIES {
            match queue(manager.store(), &notice).await {
                Ok(0) => break,
                Ok(_) => {
                    wake.notify_one();
                    break;
                }
                Err(e) if attempt == QUEUE_TRIES => {
                    tracing::error!(error = %e, session = %notice.session, event = notice.kind.as_str(), "webhook deliveries lost: the store refused them");
                }
                Err(e) => {
                    tracing::warn!(error = %e, session = %notice.session, "queueing webhook deliveries; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}

/// Queues one delivery of `notice` per endpoint that wants it; how many.
async fn queue<S: WebhookStore>(store: &S, notice: &Notice) -> Result<usize, cc_core::StoreError> {
    let endpoints: Vec<Endpoint> = store
        .endpoints()
        .await?
        .into_iter()
        .filter(|e| e.wants(notice))
        .collect();
    if endpoints.is_empty() {
        return Ok(0);
    }
    let time = rfc3339(from_epoch_ms(notice.at_ms));
    let deliveries: Vec<NewDelivery> = endpoints
        .iter()
        .map(|e| {
            let id = generate_id("whd");
            let body = WebhookEvent {
                id: id.clone(),
                kind: notice.kind.as_str().into(),
                session_id: notice.session.to_string(),
                time: time.clone(),
                data: notice.data.clone(),
            };
            NewDelivery {
                id,
                endpoint_id: e.id.clone(),
                session: notice.session.clone(),
                kind: notice.kind,
                body: serde_json::to_string(&body).expect("a JSON value serialises"),
                created_at: SystemTime::now(),
            }
        })
        .collect();
    store.enqueue_deliveries(&deliveries).await?;
    Ok(deliveries.len())
}
