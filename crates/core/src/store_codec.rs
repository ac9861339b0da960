//! The row encoding every store backend shares: our own compact session
//! record as one column per field, and events as JSON, so SQLite and
//! PostgreSQL store the same values and decode them with the same checks.
//!
//! Encoding: times as unix milliseconds (truncated toward the past), states
//! as [`SessionState::as_str`], counters as `i64` (a value beyond
//! `i64::MAX` is refused, not wrapped), usage as JSON; an event as the JSON
//! of its [`ServerMessage`] with its `type` tag beside it in `kind`.
//! Decoding: whatever cannot be decoded (unknown state, bad id, unparsable
//! event, negative counter, unknown record version) is
//! [`StoreError::Corrupt`], never papered over. No IO here.

use crate::error::StoreError;
use crate::ids::SessionId;
use crate::seams::SessionRecord;
use cc_wire::api::{EgressMode, ServerMessage, SessionLimits, SessionState};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Layout version of a session row (its `record_version` column). Bumped
/// when the meaning of the columns changes; rows of other versions are
/// refused as corrupt rather than misread.
pub const RECORD_VERSION: i64 = 1;

/// A session record as its columns (everything except `id`).
pub struct SessionRow {
    pub container_id: Option<String>,
    pub state: &'static str,
    pub reason: Option<String>,
    pub repo_url: String,
    pub branch: Option<String>,
    pub memory_bytes: i64,
    pub cpu: f64,
    pub timeout_secs: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub expires_at_ms: i64,
    pub last_seq: i64,
    pub agent_seq: i64,
    pub owner: String,
    pub usage: String,
    pub egress: String,
    pub idle_timeout_secs: Option<i64>,
    pub lease_holder: Option<String>,
    pub lease_fence: i64,
}

impl SessionRow {
    pub fn encode(rec: &SessionRecord) -> Result<Self, StoreError> {
        Ok(Self {
            container_id: rec.container_id.clone(),
            state: rec.state.as_str(),
            reason: rec.reason.clone(),
            repo_url: rec.repo_url.clone(),
            branch: rec.branch.clone(),
            memory_bytes: to_i64("memory_bytes", rec.limits.memory_bytes)?,
            cpu: rec.limits.cpu,
            timeout_secs: to_i64("timeout_secs", rec.limits.timeout_secs)?,
            created_at_ms: to_ms("created_at", rec.created_at)?,
            updated_at_ms: to_ms("updated_at", rec.updated_at)?,
            expires_at_ms: to_ms("expires_at", rec.expires_at)?,
            last_seq: to_i64("last_seq", rec.last_seq)?,
            agent_seq: to_i64("agent_seq", rec.agent_seq)?,
            owner: rec.owner.clone(),
            usage: encode_usage(&rec.usage)?,
            egress: rec.limits.egress.as_str().to_owned(),
            idle_timeout_secs: rec
                .limits
                .idle_timeout_secs
                .map(|s| to_i64("idle_timeout_secs", s))
                .transpose()?,
            lease_holder: rec.lease.holder.clone(),
            lease_fence: to_i64("lease_fence", rec.lease.fence)?,
        })
    }
}

/// A session's usage as the `usage` column holds it.
pub fn encode_usage(u: &crate::SessionUsage) -> Result<String, StoreError> {
    let totals = serde_json::to_value(u.totals)
        .map_err(|e| StoreError::Backend(format!("encode usage: {e}")))?;
    Ok(serde_json::json!({
        "totals": totals,
        "processCostUsd": u.process_cost_usd,
        "oomKills": u.oom_kills,
    })
    .to_string())
}

/// The stored usage; a spend that is negative (as a forged cost left it
/// before spend was measured by the gateway) reads as 0, so it cannot keep
/// a budget open.
pub fn decode_usage(s: &str) -> Result<crate::SessionUsage, String> {
    if s.is_empty() {
        return Ok(crate::SessionUsage::default());
    }
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| format!("usage: {e}"))?;
    let mut totals: cc_wire::api::UsageTotals =
        serde_json::from_value(v["totals"].clone()).map_err(|e| format!("usage: {e}"))?;
    let sound = |c: f64| if c.is_finite() && c >= 0.0 { c } else { 0.0 };
    totals.cost_usd = sound(totals.cost_usd);
    Ok(crate::SessionUsage {
        totals,
        process_cost_usd: sound(v["processCostUsd"].as_f64().unwrap_or(0.0)),
        oom_kills: v["oomKills"].as_u64().unwrap_or(0),
    })
}

pub fn to_i64(field: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v)
        .map_err(|_| StoreError::Backend(format!("{field} {v} is beyond what the store holds")))
}

/// Unix milliseconds, truncated toward the past.
pub fn to_ms(field: &str, t: SystemTime) -> Result<i64, StoreError> {
    let ms = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).ok(),
        Err(before) => {
            let d = before.duration();
            let whole = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
            i64::try_from(whole).ok().map(|m| -m)
        }
    };
    ms.ok_or_else(|| StoreError::Backend(format!("{field} is beyond what the store holds")))
}

pub fn from_ms(ms: i64) -> Option<SystemTime> {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    }
}

/// A `sessions` row as read, before validation.
pub struct RawSession {
    pub id: String,
    pub record_version: i64,
    pub container_id: Option<String>,
    pub state: String,
    pub reason: Option<String>,
    pub repo_url: String,
    pub branch: Option<String>,
    pub memory_bytes: i64,
    pub cpu: f64,
    pub timeout_secs: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub expires_at_ms: i64,
    pub last_seq: i64,
    pub agent_seq: i64,
    pub owner: String,
    pub usage: String,
    pub egress: String,
    pub idle_timeout_secs: Option<i64>,
    pub lease_holder: Option<String>,
    pub lease_fence: i64,
}

/// The columns [`RawSession`] reads, in its order. The lease columns
/// (`lease_holder`, `lease_fence`) come last; `lease_expires_ms` is the
/// store's own (judged by its clock) and never read into a record.
pub const SESSION_COLUMNS: &str = "id, record_version, container_id, state, reason, repo_url, \
     branch, memory_bytes, cpu, timeout_secs, created_at_ms, updated_at_ms, expires_at_ms, \
     last_seq, agent_seq, owner, usage, egress, idle_timeout_secs, lease_holder, lease_fence";

impl RawSession {
    /// Validates the row; a `record_version` other than
    /// [`RECORD_VERSION`] is corrupt rather than misread.
    pub fn decode(self) -> Result<SessionRecord, StoreError> {
        let name = self.id;
        let corrupt = |what: String| StoreError::Corrupt(format!("session {name}: {what}"));
        if self.record_version != RECORD_VERSION {
            return Err(corrupt(format!(
                "record version {} is not {}",
                self.record_version, RECORD_VERSION
            )));
        }
        let id = SessionId::parse(&name).ok_or_else(|| corrupt("malformed id".into()))?;
        let state = SessionState::parse(&self.state)
            .ok_or_else(|| corrupt(format!("unknown state {:?}", self.state)))?;
        let count = |field: &str, v: i64| {
            u64::try_from(v).map_err(|_| corrupt(format!("negative {field} {v}")))
        };
        let time = |field: &str, ms: i64| {
            from_ms(ms).ok_or_else(|| corrupt(format!("{field} {ms} ms is out of range")))
        };
        Ok(SessionRecord {
            id,
            container_id: self.container_id,
            state,
            reason: self.reason,
            repo_url: self.repo_url,
            branch: self.branch,
            limits: SessionLimits {
                memory_bytes: count("memory_bytes", self.memory_bytes)?,
                cpu: self.cpu,
                timeout_secs: count("timeout_secs", self.timeout_secs)?,
                egress: EgressMode::parse(&self.egress)
                    .ok_or_else(|| corrupt(format!("unknown egress mode {:?}", self.egress)))?,
                idle_timeout_secs: self
                    .idle_timeout_secs
                    .map(|s| count("idle_timeout_secs", s))
                    .transpose()?,
            },
            created_at: time("created_at", self.created_at_ms)?,
            updated_at: time("updated_at", self.updated_at_ms)?,
            expires_at: time("expires_at", self.expires_at_ms)?,
            last_seq: count("last_seq", self.last_seq)?,
            agent_seq: count("agent_seq", self.agent_seq)?,
            owner: self.owner,
            usage: decode_usage(&self.usage).map_err(corrupt)?,
            lease: crate::lease::Lease {
                holder: self.lease_holder,
                fence: count("lease_fence", self.lease_fence)?,
            },
        })
    }
}

/// The lease rows' encoding (see `crate::lease`), shared by both stores.
pub mod lease {
    use crate::error::StoreError;
    use crate::ids::SessionId;

    /// The states a lease can be claimed in (an SQL condition on
    /// `sessions`): anything but an ended session. A sleeping session is
    /// claimed by the replica that wakes or ends it.
    pub const LIVE: &str = "state NOT IN ('terminated', 'error')";

    /// The states a lease is renewed and taken over in: a session with a
    /// container. Nobody runs a sleeping session, so no replica keeps its
    /// lease and none takes it over; it waits in the store to be woken.
    pub const AWAKE: &str = "state NOT IN ('terminated', 'error', 'sleeping')";

    /// A stored session ID, or [`StoreError::Corrupt`].
    pub fn session_id(what: &str, s: &str) -> Result<SessionId, StoreError> {
        SessionId::parse(s)
            .ok_or_else(|| StoreError::Corrupt(format!("{what}: malformed id {s:?}")))
    }

    /// A stored fencing number, or [`StoreError::Corrupt`] when negative.
    pub fn fence(id: &str, f: i64) -> Result<u64, StoreError> {
        u64::try_from(f)
            .map_err(|_| StoreError::Corrupt(format!("session {id}: negative lease_fence {f}")))
    }

    /// A replica's held resources as its `held` column stores them.
    pub fn encode_held(held: &[SessionId]) -> Result<String, StoreError> {
        serde_json::to_string(&held.iter().map(|id| id.as_str()).collect::<Vec<_>>())
            .map_err(|e| StoreError::Backend(format!("encode held resources: {e}")))
    }

    /// Adds the resources in `replica`'s `held` column to `into`.
    pub fn decode_held(
        replica: &str,
        held: &str,
        into: &mut std::collections::BTreeSet<SessionId>,
    ) -> Result<(), StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("replica {replica}: held {what}"));
        let ids: Vec<String> = serde_json::from_str(held).map_err(|e| corrupt(e.to_string()))?;
        for id in ids {
            into.insert(SessionId::parse(&id).ok_or_else(|| corrupt(format!("id {id:?}")))?);
        }
        Ok(())
    }
}

/// An event ready to insert: `(seq, kind, payload)`.
pub struct EventRow {
    pub seq: u64,
    pub kind: String,
    pub payload: String,
}

pub fn encode_event(id: &SessionId, ev: &ServerMessage) -> Result<EventRow, StoreError> {
    let value = serde_json::to_value(ev)
        .map_err(|e| StoreError::Backend(format!("encode event for session {id}: {e}")))?;
    let kind = value
        .get("type")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| {
            StoreError::Backend(format!("event for session {id} encodes without a type tag"))
        })?
        .to_owned();
    Ok(EventRow {
        seq: ev.seq(),
        kind,
        payload: value.to_string(),
    })
}

pub fn decode_event(id: &SessionId, seq: i64, payload: &str) -> Result<ServerMessage, StoreError> {
    let corrupt = |e: serde_json::Error| {
        StoreError::Corrupt(format!("session {id} event {seq}: unparsable payload: {e}"))
    };
    let value: serde_json::Value = serde_json::from_str(payload).map_err(corrupt)?;
    let ev: ServerMessage = serde_json::from_value(legacy_event(value)).map_err(corrupt)?;
    if i64::try_from(ev.seq()).ok() != Some(seq) {
        return Err(StoreError::Corrupt(format!(
            "session {id} event {seq}: payload carries seq {}",
            ev.seq()
        )));
    }
    Ok(ev)
}

/// Events written before the stream took the seed's `{type, data}`
/// envelope held their fields beside `type`, with RFC 3339 timestamps; they
/// are read as the envelope they would be now. Current payloads pass as
/// they are.
fn legacy_event(mut value: serde_json::Value) -> serde_json::Value {
    let Some(obj) = value.as_object_mut() else {
        return value;
    };
    if obj.contains_key("data") {
        return value;
    }
    let ty = obj.remove("type").unwrap_or_default();
    if let Some(ts) = obj.get("timestamp").and_then(|t| t.as_str()) {
        let ms = crate::rfc3339_to_ms(ts).unwrap_or(0);
        obj.insert("timestamp".into(), ms.into());
    }
    serde_json::json!({ "type": ty, "data": std::mem::take(obj) })
}

/// The idempotency keys' encoding (see `crate::idempotency`), shared by
/// both stores.
pub mod idempotency {
    use super::{from_ms, to_ms};
    use crate::error::StoreError;
    use crate::idempotency::{KeyEntry, CLAIM_ABANDONED_AFTER, KEY_TTL};
    use std::time::SystemTime;

    /// The SQL condition (on `idempotency_keys`, with the two cut-offs of
    /// [`cutoffs`] as parameters `$expired` and `$abandoned`) of an entry
    /// that no longer holds its key: older than
    /// [`crate::idempotency::KEY_TTL`], or uncompleted and older than
    /// [`crate::idempotency::CLAIM_ABANDONED_AFTER`]. An entry from the
    /// claimant's future (a clock that went back) holds.
    pub fn dead(expired: &str, abandoned: &str) -> String {
        format!(
            "(created_at_ms <= {expired} OR (session_id IS NULL AND created_at_ms <= {abandoned}))"
        )
    }

    /// `(expired, abandoned)`: entries created at or before the first are
    /// past [`KEY_TTL`]; uncompleted ones at or before the second are past
    /// [`CLAIM_ABANDONED_AFTER`].
    pub fn cutoffs(at: SystemTime) -> Result<(i64, i64), StoreError> {
        let at = to_ms("claim time", at)?;
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Ok((
            at.saturating_sub(ms(KEY_TTL)),
            at.saturating_sub(ms(CLAIM_ABANDONED_AFTER)),
        ))
    }

    /// A stored entry, or [`StoreError::Corrupt`].
    pub fn entry(
        key: &str,
        request_hash: String,
        session: Option<String>,
        created_at_ms: i64,
    ) -> Result<KeyEntry, StoreError> {
        let corrupt =
            |what: String| StoreError::Corrupt(format!("idempotency key {key:?}: {what}"));
        Ok(KeyEntry {
            request_hash,
            session: session
                .map(|s| {
                    crate::SessionId::parse(&s).ok_or_else(|| corrupt(format!("session {s:?}")))
                })
                .transpose()?,
            created_at: from_ms(created_at_ms)
                .ok_or_else(|| corrupt("created_at out of range".into()))?,
        })
    }
}

/// The webhook tables' encoding (see `crate::webhook`), shared by both
/// stores.
pub mod webhook {
    use super::{from_ms, to_ms};
    use crate::error::StoreError;
    use crate::webhook::{Attempt, Delivery, DeliveryState, Endpoint, EventKind};
    use std::time::SystemTime;

    /// The columns of `webhook_endpoints`, in [`RawEndpoint`]'s order.
    pub const ENDPOINT_COLUMNS: &str =
        "id, owner, all_sessions, url, events, description, sealed_secret, created_at_ms";
    /// The columns of `webhook_deliveries` a [`Delivery`] is read from, in
    /// [`RawDelivery`]'s order.
    pub const DELIVERY_COLUMNS: &str = "id, endpoint_id, session_id, kind, state, attempts, \
         last_status, last_error, created_at_ms, next_attempt_ms, finished_at_ms";
    /// [`DELIVERY_COLUMNS`] of the table under `alias` (`d.id, d.endpoint_id, …`).
    pub fn delivery_columns_of(alias: &str) -> String {
        DELIVERY_COLUMNS
            .split(", ")
            .map(|c| format!("{alias}.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Finished deliveries are kept this long for the delivery log.
    pub const KEEP_FINISHED: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

    /// An endpoint's row.
    pub struct RawEndpoint {
        pub id: String,
        pub owner: String,
        pub all_sessions: bool,
        pub url: String,
        pub events: String,
        pub description: Option<String>,
        pub sealed_secret: Vec<u8>,
        pub created_at_ms: i64,
    }

    /// A delivery's row.
    pub struct RawDelivery {
        pub id: String,
        pub endpoint_id: String,
        pub session_id: String,
        pub kind: String,
        pub state: String,
        pub attempts: i64,
        pub last_status: Option<i64>,
        pub last_error: Option<String>,
        pub created_at_ms: i64,
        pub next_attempt_ms: Option<i64>,
        pub finished_at_ms: Option<i64>,
    }

    pub fn encode_events(events: &[EventKind]) -> String {
        serde_json::to_string(&events.iter().map(|k| k.as_str()).collect::<Vec<_>>())
            .expect("strings serialise")
    }

    pub fn encode_endpoint(e: &Endpoint) -> Result<RawEndpoint, StoreError> {
        Ok(RawEndpoint {
            id: e.id.clone(),
            owner: e.owner.clone(),
            all_sessions: e.all_sessions,
            url: e.url.clone(),
            events: encode_events(&e.events),
            description: e.description.clone(),
            sealed_secret: e.sealed_secret.clone(),
            created_at_ms: to_ms("created_at", e.created_at)?,
        })
    }

    pub fn decode_endpoint(r: RawEndpoint) -> Result<Endpoint, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("webhook {}: {what}", r.id));
        let names: Vec<String> =
            serde_json::from_str(&r.events).map_err(|e| corrupt(format!("events: {e}")))?;
        let events = names
            .iter()
            .map(|n| EventKind::parse(n).ok_or_else(|| corrupt(format!("unknown event {n:?}"))))
            .collect::<Result<_, _>>()?;
        Ok(Endpoint {
            created_at: from_ms(r.created_at_ms)
                .ok_or_else(|| corrupt("created_at out of range".into()))?,
            id: r.id,
            owner: r.owner,
            all_sessions: r.all_sessions,
            url: r.url,
            events,
            description: r.description,
            sealed_secret: r.sealed_secret,
        })
    }

    pub fn decode_delivery(r: RawDelivery) -> Result<Delivery, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("delivery {}: {what}", r.id));
        let time = |what: &str, ms: i64| {
            from_ms(ms).ok_or_else(|| corrupt(format!("{what} out of range")))
        };
        Ok(Delivery {
            session: crate::SessionId::parse(&r.session_id)
                .ok_or_else(|| corrupt(format!("session {:?}", r.session_id)))?,
            kind: EventKind::parse(&r.kind)
                .ok_or_else(|| corrupt(format!("unknown event {:?}", r.kind)))?,
            state: DeliveryState::parse(&r.state)
                .ok_or_else(|| corrupt(format!("unknown state {:?}", r.state)))?,
            attempts: u32::try_from(r.attempts)
                .map_err(|_| corrupt(format!("attempts {}", r.attempts)))?,
            last_status: r
                .last_status
                .map(|s| u16::try_from(s).map_err(|_| corrupt(format!("status {s}"))))
                .transpose()?,
            created_at: time("created_at", r.created_at_ms)?,
            next_attempt_at: r
                .next_attempt_ms
                .map(|ms| time("next_attempt", ms))
                .transpose()?,
            finished_at: r
                .finished_at_ms
                .map(|ms| time("finished_at", ms))
                .transpose()?,
            last_error: r.last_error,
            endpoint_id: r.endpoint_id,
            id: r.id,
        })
    }

    /// An attempt's outcome as the columns it sets: `(state, last_status,
    /// last_error, next_attempt_ms, finished_at_ms)`.
    pub type AttemptColumns = (
        &'static str,
        Option<i64>,
        Option<String>,
        Option<i64>,
        Option<i64>,
    );

    pub fn attempt_columns(a: &Attempt, at: SystemTime) -> Result<AttemptColumns, StoreError> {
        let at = to_ms("attempt time", at)?;
        Ok(match a {
            Attempt::Delivered { status } => (
                DeliveryState::Delivered.as_str(),
                Some(i64::from(*status)),
                None,
                None,
                Some(at),
            ),
            Attempt::Retry {
                status,
                error,
                at: next,
            } => (
                DeliveryState::Pending.as_str(),
                status.map(i64::from),
                Some(error.clone()),
                Some(to_ms("next attempt", *next)?),
                None,
            ),
            Attempt::GiveUp { status, error } => (
                DeliveryState::Failed.as_str(),
                status.map(i64::from),
                Some(error.clone()),
                None,
                Some(at),
            ),
        })
    }

    /// The condition (on `webhook_deliveries d`, with `now` as the SQL
    /// parameter `now`) of a delivery an attempt may claim: pending, due,
    /// unlocked, and the oldest pending one of its session and endpoint.
    pub fn claimable(now: &str) -> String {
        format!(
            "d.state = 'pending' AND d.next_attempt_ms <= {now} \
             AND (d.locked_until_ms IS NULL OR d.locked_until_ms <= {now}) \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e \
                 WHERE e.endpoint_id = d.endpoint_id AND e.session_id = d.session_id \
                 AND e.state = 'pending' AND e.seq < d.seq)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_negative_spend_reads_as_nothing_spent() {
        let mut u = crate::SessionUsage::default();
        u.totals.cost_usd = 0.25;
        u.oom_kills = 2;
        assert_eq!(decode_usage(&encode_usage(&u).unwrap()).unwrap(), u);
        u.totals.cost_usd = -999.95;
        u.process_cost_usd = -1000.0;
        let back = decode_usage(&encode_usage(&u).unwrap()).unwrap();
        assert_eq!((back.totals.cost_usd, back.process_cost_usd), (0.0, 0.0));
    }

    #[test]
    fn millisecond_conversion_truncates_toward_the_past() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let ms = to_ms("t", t).unwrap();
        assert_eq!(ms, 1_700_000_000_123);
        assert_eq!(
            from_ms(ms),
            Some(UNIX_EPOCH + Duration::from_millis(ms as u64))
        );

        let before = UNIX_EPOCH - Duration::new(1, 500_000);
        let ms = to_ms("t", before).unwrap();
        assert_eq!(ms, -1_001);
        assert_eq!(from_ms(ms), Some(UNIX_EPOCH - Duration::from_millis(1_001)));
        assert_eq!(to_ms("t", UNIX_EPOCH).unwrap(), 0);
    }

    #[test]
    fn counters_beyond_i64_are_refused() {
        assert!(to_i64("x", u64::MAX).is_err());
        assert_eq!(to_i64("x", 7).unwrap(), 7);
    }

    #[test]
    fn event_kind_is_the_type_tag() {
        let id = SessionId::generate();
        let ev = ServerMessage::Status {
            seq: 3,
            state: SessionState::Ready,
            timestamp: 1_704_067_200_000,
            reason: None,
        };
        let row = encode_event(&id, &ev).unwrap();
        assert_eq!(row.kind, "status");
        assert_eq!(row.seq, 3);
        assert_eq!(decode_event(&id, 3, &row.payload).unwrap(), ev);
        assert!(matches!(
            decode_event(&id, 4, &row.payload),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn events_stored_before_the_envelope_read_as_the_envelope() {
        let id = SessionId::generate();
        let old =
            r#"{"type":"status","seq":3,"state":"ready","timestamp":"2024-01-01T00:00:00.000Z"}"#;
        assert_eq!(
            decode_event(&id, 3, old).unwrap(),
            ServerMessage::Status {
                seq: 3,
                state: SessionState::Ready,
                timestamp: 1_704_067_200_000,
                reason: None,
            }
        );
        let old = r#"{"type":"output","seq":4,"text":"hi","timestamp":"2024-01-01T00:00:00.001Z","event":{"type":"assistant"}}"#;
        assert_eq!(
            decode_event(&id, 4, old).unwrap(),
            ServerMessage::Output {
                seq: 4,
                text: "hi".into(),
                timestamp: 1_704_067_200_001,
                event: Some(serde_json::json!({"type": "assistant"})),
            }
        );
        assert!(matches!(
            decode_event(&id, 5, r#"{"type":"status","seq":5}"#),
            Err(StoreError::Corrupt(_))
        ));
    }
}
