//! Attempts of due deliveries, on every replica: claim a batch (locked in
//! the store for this replica), send each signed, record how it went.

use super::open_secret;
use crate::gateway::PublicOnly;
use crate::{AppManager, ServerStore};
use cc_core::addresses::{resolve_checked, AddressRefusal};
use cc_core::webhook::{
    retry_delay, signature, Attempt, Due, WebhookStore, HEADER_ID, HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
};
use cc_core::Runtime;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Longest one attempt may take, connecting included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed delivery stays this replica's: well past an
/// attempt, so only a replica that died loses it to another.
const LOCK: Duration = Duration::from_secs(60);
/// Deliveries attempted at once.
const BATCH: usize = 16;
/// How often the store is asked for due deliveries when nothing woke the
/// loop (retries coming due, deliveries another replica queued).
const POLL: Duration = Duration::from_millis(500);
/// How often finished deliveries past their keep time are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Why a URL cannot receive deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlRefusal {
    /// `invalid_webhook_url`, `webhook_host_unresolvable` or
    /// `webhook_host_not_allowed` (the last a 403, the others 400).
    pub code: &'static str,
    pub message: String,
}

/// Sends deliveries: no redirects followed, only to addresses the policy
/// allows (checked before sending and again by the connection's resolver).
#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
    allow_hosts: Arc<Vec<String>>,
}

impl Sender {
    pub fn new(allow_hosts: &[String]) -> Self {
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PublicOnly::new(allow_hosts)))
            .user_agent(concat!("ClaudeCluster-Webhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("building the webhook client");
        Self {
            http,
            allow_hosts: Arc::new(allow_hosts.to_vec()),
        }
    }

    /// One signed attempt: the 2xx status, or the failure (with the
    /// status when the endpoint answered).
    pub async fn send(
        &self,
        url: &str,
        id: &str,
        body: &str,
        secret: &str,
    ) -> Result<u16, (Option<u16>, String)> {
        let u = check_url(url, &self.allow_hosts)
            .await
            .map_err(|r| (None, r.message))?;
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let resp = self
            .http
            .post(u)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(HEADER_ID, id)
            .header(HEADER_TIMESTAMP, ts.to_string())
            .header(HEADER_SIGNATURE, signature(secret, ts, id, body.as_bytes()))
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| (None, describe(&e)))?;
        let status = resp.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else if status.is_redirection() {
            Err((
                Some(status.as_u16()),
                format!("HTTP {status}: redirects are not followed"),
            ))
        } else {
            Err((Some(status.as_u16()), format!("HTTP {status}")))
        }
    }
}

/// Checks `url` as registration and every attempt do: `http` or
/// `https`, a host, no credentials, and every address it resolves to
/// public unless its `host:port` is in `allow_hosts`.
pub async fn check_url(url: &str, allow_hosts: &[String]) -> Result<reqwest::Url, UrlRefusal> {
    let invalid = |m: String| UrlRefusal {
        code: "invalid_webhook_url",
        message: m,
    };
    let u = reqwest::Url::parse(url).map_err(|e| invalid(format!("url: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(invalid("url must be http:// or https://".into()));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(invalid(
            "url must not carry credentials; deliveries are signed instead".into(),
        ));
    }
    let host = u
        .host_str()
        .ok_or_else(|| invalid("url has no host".into()))?
        .to_owned();
    let port = u
        .port_or_known_default()
        .ok_or_else(|| invalid("url has no port".into()))?;
    let hp = if host.contains(':') {
        format!("{host}:{port}")
    } else {
        format!(
            "{}:{port}",
            host.trim_start_matches('[').trim_end_matches(']')
        )
    };
    let exact = allow_hosts.iter().any(|a| a.eq_ignore_ascii_case(&hp));
    resolve_checked(&host, port, exact)
        .await
        .map_err(|e| match e {
            AddressRefusal::Unresolvable { host, reason } => UrlRefusal {
                code: "webhook_host_unresolvable",
                message: format!("webhook host {host} cannot be resolved: {reason}"),
            },
            AddressRefusal::NotPublic { addr, why, .. } => UrlRefusal {
                code: "webhook_host_not_allowed",
                message: format!(
                    "webhook host {hp} is not allowed: it resolves to {why} address {addr}; \
                 an administrator can allow it with --allow-webhook-host {hp}"
                ),
            },
        })?;
    Ok(u)
}

/// A transport failure in a line (reqwest's chain of causes).
fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        format!("timed out after {}s", ATTEMPT_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// The delivery loop of one replica.
pub(super) async fn run<R: Runtime, S: ServerStore>(
    manager: AppManager<R, S>,
    sender: Sender,
    wake: Arc<Notify>,
) {
    let holder = manager.config().replica.id.clone();
    let seal = manager.config().seal_key.clone();
    let store = manager.store();
    let mut last_purge: Option<tokio::time::Instant> = None;
    loop {
        if last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
            last_purge = Some(tokio::time::Instant::now());
            let before = SystemTime::now() - cc_core::store_codec::webhook::KEEP_FINISHED;
            if let Err(e) = store.purge_deliveries(before).await {
                tracing::warn!(error = %e, "purging old webhook deliveries");
            }
        }
        let due = match store
            .claim_due(&holder, SystemTime::now(), LOCK, BATCH)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "claiming due webhook deliveries");
                Vec::new()
            }
        };
        if due.is_empty() {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            continue;
        }
        let attempts = due
            .into_iter()
            .map(|d| attempt(store, &sender, seal.as_ref(), &holder, d));
        futures_util::future::join_all(attempts).await;
    }
}

async fn attempt<S: WebhookStore>(
    store: &S,
    sender: &Sender,
    seal: Option<&cc_core::secrets::SealKey>,
    holder: &str,
    due: Due,
) {
    let d = &due.delivery;
    let secret = seal.and_then(|k| open_secret(k, &d.endpoint_id, &due.sealed_secret));
    let outcome = match secret {
        None => Attempt::GiveUp {
            status: None,
            error: "the endpoint's secret does not open with this server's key".into(),
        },
        Some(secret) => match sender.send(&due.url, &d.id, &due.body, &secret).await {
            Ok(status) => Attempt::Delivered { status },
            Err((status, error)) => match retry_delay(d.attempts, jitter()) {
                Some(wait) => Attempt::Retry {
                    status,
                    error,
                    at: SystemTime::now() + wait,
                },
                None => Attempt::GiveUp { status, error },
            },
        },
    };
    match store
        .record_attempt(&d.id, holder, &outcome, SystemTime::now())
        .await
    {
        Ok(true) => tracing::debug!(delivery = %d.id, ?outcome, "webhook attempt"),
        Ok(false) => {
            tracing::warn!(delivery = %d.id, "a webhook attempt outlived its lock; another replica retries it")
        }
        Err(e) => tracing::warn!(delivery = %d.id, error = %e, "recording a webhook attempt"),
    }
}

/// A number in `[0, 1)` that differs between attempts (the sub-second
/// clock): enough to spread retries, no cryptography needed.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    f64::from(nanos % 1_000_000) / 1_000_000.0
}
