//! Signed lifecycle webhooks: what happened to a session, POSTed to the
//! endpoints its owner (or an administrator) registered.
//!
//! The core only *notices* events ([`Notice`], sent on the manager's
//! [`NoticeSender`] as the session's log records them); the server turns
//! each notice into one delivery per matching endpoint, queued in the store
//! ([`WebhookStore`]), and every replica delivers what is due. Invariants
//! (proven by the store conformance suite on every backend):
//! - A delivery is attempted by one replica at a time: a claim locks it for
//!   a while ([`WebhookStore::claim_due`]); a replica that dies mid-attempt
//!   loses the lock and another retries (at least once, never twice at
//!   once).
//! - Deliveries of one session to one endpoint go out in the order they
//!   were queued: a later one waits until the earlier is delivered or
//!   given up.
//!
//! Each delivery is signed ([`signature`]) with the endpoint's secret,
//! which is stored sealed ([`crate::secrets::seal_bytes`]).

use crate::error::StoreError;
use crate::ids::SessionId;
use std::future::Future;
use std::time::{Duration, SystemTime};

/// Header: the delivery's ID (the same on every retry).
pub const HEADER_ID: &str = "ClaudeCluster-Webhook-Id";
/// Header: when this attempt was signed, in Unix seconds.
pub const HEADER_TIMESTAMP: &str = "ClaudeCluster-Webhook-Timestamp";
/// Header: `v1=<hex HMAC-SHA256>` (see [`signature`]).
pub const HEADER_SIGNATURE: &str = "ClaudeCluster-Webhook-Signature";

/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: u32 = 12;
/// Wait before the first retry; each further retry waits twice as long.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between two attempts. With [`MAX_ATTEMPTS`], a delivery is
/// given up about 45 minutes after its first attempt.
pub const MAX_RETRY: Duration = Duration::from_secs(15 * 60);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// The session was created (its container is starting).
    SessionCreated,
    /// The session became ready for its first command.
    SessionReady,
    /// A turn finished: its summary, cost and the session's totals.
    TurnFinished,
    /// The session ended in error.
    SessionError,
    /// The session ended.
    SessionTerminated,
    /// The session's work was pushed to a branch.
    SessionPushed,
    /// A pull (merge) request was opened for it.
    PullRequestOpened,
    /// The session went to sleep (idle, or asked to).
    SessionSleeping,
    /// A sleeping session is waking (`session.ready` follows).
    SessionWoken,
    /// The running turn waits for a person to allow or deny a tool.
    PermissionRequested,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        Self::SessionCreated,
        Self::SessionReady,
        Self::TurnFinished,
        Self::SessionError,
        Self::SessionTerminated,
        Self::SessionPushed,
        Self::PullRequestOpened,
        Self::SessionSleeping,
        Self::SessionWoken,
        Self::PermissionRequested,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionCreated => "session.created",
            Self::SessionReady => "session.ready",
            Self::TurnFinished => "turn.finished",
            Self::SessionError => "session.error",
            Self::SessionTerminated => "session.terminated",
            Self::SessionPushed => "session.pushed",
            Self::PullRequestOpened => "pull_request.opened",
            Self::SessionSleeping => "session.sleeping",
            Self::SessionWoken => "session.woken",
            Self::PermissionRequested => "permission.requested",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Something a session's webhooks may be told.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub kind: EventKind,
    pub session: SessionId,
    /// The session's owner: their endpoints hear of it.
    pub owner: String,
    /// When it happened, in Unix milliseconds.
    pub at_ms: u64,
    /// The event's own fields (the delivery body's `data`).
    pub data: serde_json::Value,
}

/// Where the core sends its notices; the server's dispatcher receives them.
pub type NoticeSender = tokio::sync::mpsc::UnboundedSender<Notice>;

/// A registered endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `wh_<hex>`.
    pub id: String,
    /// Who registered it.
    pub owner: String,
    /// Registered by an administrator: hears of every user's sessions;
    /// otherwise only of its owner's.
    pub all_sessions: bool,
    pub url: String,
    /// What it hears of; empty: everything.
    pub events: Vec<EventKind>,
    pub description: Option<String>,
    /// The signing secret, sealed.
    pub sealed_secret: Vec<u8>,
    pub created_at: SystemTime,
}

impl Endpoint {
    /// Whether this endpoint hears of `notice`.
    pub fn wants(&self, notice: &Notice) -> bool {
        (self.all_sessions || self.owner == notice.owner)
            && (self.events.is_empty() || self.events.contains(&notice.kind))
    }
}

/// A delivery's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not delivered yet; attempted when due.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Given up after [`MAX_ATTEMPTS`] or a refusal to retry.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One event for one endpoint, as queued.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// `whd_<hex>`: the body's `id` and the ID header, the same on every
    /// attempt, so a receiver can drop a repeat.
    pub id: String,
    pub endpoint_id: String,
    pub session: SessionId,
    pub kind: EventKind,
    /// The JSON body, exactly as it is sent and signed.
    pub body: String,
    pub created_at: SystemTime,
}

/// A delivery and how it went so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: String,
    pub endpoint_id: String,
    pub session: SessionId,
    pub kind: EventKind,
    pub state: DeliveryState,
    pub attempts: u32,
    /// The HTTP status of the last attempt, when one came back.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub created_at: SystemTime,
    /// When the next attempt is due (pending deliveries).
    pub next_attempt_at: Option<SystemTime>,
    /// When it was delivered or given up.
    pub finished_at: Option<SystemTime>,
}

/// A delivery claimed for an attempt, with what the attempt needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub delivery: Delivery,
    pub body: String,
    pub url: String,
    pub sealed_secret: Vec<u8>,
}

/// How an attempt went.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered {
        status: u16,
    },
    /// Failed; try again at `at`.
    Retry {
        status: Option<u16>,
        error: String,
        at: SystemTime,
    },
    /// Failed for the last time.
    GiveUp {
        status: Option<u16>,
        error: String,
    },
}

/// Where endpoints and their deliveries persist.
pub trait WebhookStore: Send + Sync + 'static {
    fn insert_endpoint(&self, e: &Endpoint) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every endpoint, oldest first.
    fn endpoints(&self) -> impl Future<Output = Result<Vec<Endpoint>, StoreError>> + Send;
    /// Deletes an endpoint and its deliveries; `false` when there is none.
    fn delete_endpoint(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Queues deliveries, due at once, in the order given.
    fn enqueue_deliveries(
        &self,
        deliveries: &[NewDelivery],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Up to `limit` pending deliveries due at `now`, each the oldest
    /// pending one of its session and endpoint, not locked by another
    /// attempt; locks them for `holder` until `now + lock_for` and counts
    /// the attempt.
    fn claim_due(
        &self,
        holder: &str,
        now: SystemTime,
        lock_for: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Due>, StoreError>> + Send;
    /// Records how `holder`'s attempt went and unlocks the delivery;
    /// `false` (nothing written) when the lock is no longer `holder`'s.
    fn record_attempt(
        &self,
        id: &str,
        holder: &str,
        attempt: &Attempt,
        at: SystemTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// An endpoint's deliveries, newest first.
    fn deliveries(
        &self,
        endpoint_id: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;
    /// Deletes deliveries delivered or given up before `before`. Returns
    /// how many.
    fn purge_deliveries(
        &self,
        before: SystemTime,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Deletes every endpoint `user` registered, with their deliveries
    /// (erasure). Returns how many endpoints.
    fn delete_user_endpoints(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// The signature header's value for one attempt:
/// `v1=` and the lower-case hex HMAC-SHA256, keyed with the endpoint's
/// secret (its UTF-8 bytes), of `"{timestamp}.{id}."` followed by the raw
/// body.
pub fn signature(secret: &str, timestamp: u64, id: &str, body: &[u8]) -> String {
    let mut msg = format!("{timestamp}.{id}.").into_bytes();
    msg.extend_from_slice(body);
    format!(
        "v1={}",
        crate::identity::hex(&crate::identity::hmac_sha256(secret.as_bytes(), &msg))
    )
}

/// A new endpoint secret: `whsec_` and 32 random bytes in hex.
pub fn generate_secret() -> String {
    format!("whsec_{}", crate::identity::random_hex(32))
}

/// A new ID with `prefix` (`wh`, `whd`).
pub fn generate_id(prefix: &str) -> String {
    format!("{prefix}_{}", crate::identity::random_hex(12))
}

/// How long to wait after failed attempt number `attempts` (1-based):
/// [`FIRST_RETRY`] doubled per attempt, up to [`MAX_RETRY`], with `jitter`
/// (in `[0, 1)`) spreading it over 75–125 % so endpoints that came back are
/// not hit by every queued retry at once. `None`: give up.
pub fn retry_delay(attempts: u32, jitter: f64) -> Option<Duration> {
    if attempts >= MAX_ATTEMPTS {
        return None;
    }
    let base = FIRST_RETRY
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
        .min(MAX_RETRY);
    Some(base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("session.hibernating"), None);
    }

    #[test]
    fn signatures_are_hmac_sha256_over_timestamp_id_and_body() {
        // Computed independently: printf '1700000000.whd_1.{"a":1}' |
        // openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            signature("whsec_test", 1_700_000_000, "whd_1", br#"{"a":1}"#),
            "v1=49d71c890ade61ec11fc11378665b6eb649d259dd41c352610007075ecad8f95"
        );
        let s = generate_secret();
        assert!(s.starts_with("whsec_") && s.len() == 70, "{s}");
        assert_ne!(
            signature(&s, 1, "whd_1", b"{}"),
            signature(&s, 2, "whd_1", b"{}")
        );
    }

    #[test]
    fn retries_back_off_with_jitter_and_end() {
        assert_eq!(retry_delay(1, 0.5), Some(FIRST_RETRY));
        assert_eq!(retry_delay(2, 0.5), Some(FIRST_RETRY * 2));
        assert_eq!(retry_delay(1, 0.0), Some(FIRST_RETRY.mul_f64(0.75)));
        assert_eq!(retry_delay(30, 0.5), None);
        assert_eq!(retry_delay(MAX_ATTEMPTS - 1, 0.5), Some(MAX_RETRY));
        assert_eq!(retry_delay(MAX_ATTEMPTS, 0.5), None);
        let total: Duration = (1..MAX_ATTEMPTS)
            .map(|n| retry_delay(n, 0.5).unwrap())
            .sum();
        assert!(
            total > Duration::from_secs(30 * 60) && total < Duration::from_secs(60 * 60),
            "{total:?}"
        );
    }

    #[test]
    fn endpoints_hear_their_owners_sessions_and_their_events() {
        let notice = Notice {
            kind: EventKind::TurnFinished,
            session: SessionId::generate(),
            owner: "alice".into(),
            at_ms: 0,
            data: serde_json::json!({}),
        };
        let mut e = Endpoint {
            id: "wh_1".into(),
            owner: "alice".into(),
            all_sessions: false,
            url: "https://hooks.example/".into(),
            events: vec![],
            description: None,
            sealed_secret: vec![],
            created_at: SystemTime::UNIX_EPOCH,
        };
        assert!(e.wants(&notice));
        e.events = vec![EventKind::SessionReady];
        assert!(!e.wants(&notice));
        e.events = vec![EventKind::TurnFinished];
        e.owner = "bob".into();
        assert!(!e.wants(&notice));
        e.all_sessions = true;
        assert!(e.wants(&notice));
    }
}
