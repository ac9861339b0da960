//! The audit log's record and its hash chain (pure: no IO).
//!
//! Every record has a `seq` (1, 2, …), the `prev_hash` of the record before
//! it (64 zeros for the first) and `hash = sha256(prev_hash || canonical
//! JSON of the hashed fields)`. Editing, removing or reordering any record
//! breaks the chain at that record, which [`verify`] names.
//!
//! Personal fields (actor, source IP) are not hashed directly: the chain
//! covers `personal_digest = sha256(nonce || actor || source IP)` with a
//! random per-record nonce. Erasing a user removes the actor, IP and nonce
//! but keeps the digest, so the chain still verifies and the erased values
//! cannot be recovered by guessing (the nonce is gone).
//!
//! What `detail` may hold (decided here, enforced by the callers): no
//! secrets ever — no API key, no token, and no command text (a command may
//! contain anything the user typed, and the audit log outlives session
//! logs); commands are recorded by their length only.

use crate::error::StoreError;
use crate::identity::{hex, random_hex};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::future::Future;

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Actor of records the server writes on its own (no person acted).
pub const SYSTEM_ACTOR: &str = "system";
/// What erased personal fields read as.
pub const REDACTED: &str = "[erased]";

/// One thing that happened, before it is chained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// RFC 3339 with milliseconds.
    pub time: String,
    /// User name, or `anonymous`.
    pub actor: String,
    pub source_ip: Option<String>,
    /// `session.create`, `auth.failure`, `admin.token.create`, …
    pub action: String,
    pub session_id: Option<String>,
    /// `ok`, `denied`, `error`, or a short error code.
    pub outcome: String,
    pub detail: Option<String>,
}

/// An audit record the core writes on its own (a permission question, an
/// answer no person gave, an idle session put to sleep); the server chains
/// it (see `Manager::audit_events`).
pub(crate) fn core_event(
    actor: &str,
    action: &str,
    session: &str,
    outcome: &str,
    detail: String,
) -> AuditEvent {
    AuditEvent {
        time: crate::time::rfc3339(crate::time::now()),
        actor: actor.to_owned(),
        source_ip: None,
        action: action.to_owned(),
        session_id: Some(session.to_owned()),
        outcome: outcome.to_owned(),
        detail: Some(detail),
    }
}

/// A chained record as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub seq: u64,
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Random per record; `None` once the personal fields were erased.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub personal_digest: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The fields the hash covers, in a fixed order (serde_json writes struct
/// fields in declaration order, so this is the canonical JSON).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Hashed<'a> {
    seq: u64,
    time: &'a str,
    action: &'a str,
    session_id: Option<&'a str>,
    outcome: &'a str,
    detail: Option<&'a str>,
    personal_digest: &'a str,
}

fn personal_digest(nonce: &str, actor: &str, ip: Option<&str>) -> String {
    let mut h = Sha256::new();
    for part in [nonce, actor, ip.unwrap_or("")] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex(&h.finalize())
}

fn chain_hash(prev_hash: &str, seq: u64, event: &AuditEvent, digest: &str) -> String {
    let body = serde_json::to_vec(&Hashed {
        seq,
        time: &event.time,
        action: &event.action,
        session_id: event.session_id.as_deref(),
        outcome: &event.outcome,
        detail: event.detail.as_deref(),
        personal_digest: digest,
    })
    .expect("serialising plain strings cannot fail");
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(&body);
    hex(&h.finalize())
}

impl AuditRecord {
    /// Chains `event` after a record with `prev_seq` / `prev_hash`.
    pub fn chain(prev_seq: u64, prev_hash: &str, event: AuditEvent) -> Self {
        let seq = prev_seq + 1;
        let nonce = random_hex(16);
        let digest = personal_digest(&nonce, &event.actor, event.source_ip.as_deref());
        let hash = chain_hash(prev_hash, seq, &event, &digest);
        Self {
            seq,
            event,
            nonce: Some(nonce),
            personal_digest: digest,
            prev_hash: prev_hash.to_owned(),
            hash,
        }
    }

    /// Removes the personal fields, keeping the chain valid.
    pub fn redact(&mut self) {
        self.event.actor = REDACTED.into();
        self.event.source_ip = None;
        self.nonce = None;
    }

    pub fn is_redacted(&self) -> bool {
        self.nonce.is_none()
    }
}

/// The first record that does not verify, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {seq} does not verify: {reason}")]
pub struct ChainBroken {
    pub seq: u64,
    pub reason: String,
}

/// Checks a whole log, oldest first. Returns the number of records.
pub fn verify<'a>(records: impl IntoIterator<Item = &'a AuditRecord>) -> Result<u64, ChainBroken> {
    let mut prev_seq = 0;
    let mut prev_hash = GENESIS_HASH.to_owned();
    for r in records {
        let broken = |reason: String| ChainBroken { seq: r.seq, reason };
        if r.seq != prev_seq + 1 {
            return Err(broken(format!(
                "sequence jumps from {prev_seq} to {} (a record was removed or inserted)",
                r.seq
            )));
        }
        if r.prev_hash != prev_hash {
            return Err(broken(
                "its prev_hash is not the previous record's hash".into(),
            ));
        }
        if let Some(nonce) = &r.nonce {
            let d = personal_digest(nonce, &r.event.actor, r.event.source_ip.as_deref());
            if d != r.personal_digest {
                return Err(broken("actor or source IP was changed".into()));
            }
        }
        if chain_hash(&r.prev_hash, r.seq, &r.event, &r.personal_digest) != r.hash {
            return Err(broken("its content does not match its hash".into()));
        }
        prev_seq = r.seq;
        prev_hash = r.hash.clone();
    }
    Ok(prev_seq)
}

/// Filters of `GET /api/v1/audit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// Exact action, or a prefix ending in `.` (`session.`).
    pub action: Option<String>,
    pub session_id: Option<String>,
    /// Records with `seq > since`.
    pub since: u64,
    pub limit: usize,
}

/// The append-only audit table.
pub trait AuditStore: Send + Sync + 'static {
    /// Chains and appends one event (atomically with reading the tail).
    fn append_audit(
        &self,
        event: AuditEvent,
    ) -> impl Future<Output = Result<AuditRecord, StoreError>> + Send;
    /// Records matching the filter, oldest first.
    fn audit_records(
        &self,
        filter: &AuditFilter,
    ) -> impl Future<Output = Result<Vec<AuditRecord>, StoreError>> + Send;
    /// Redacts the personal fields of every record whose actor is `user`;
    /// returns how many.
    fn redact_audit_actor(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(action: &str) -> AuditEvent {
        AuditEvent {
            time: "2026-01-01T00:00:00.000Z".into(),
            actor: "alice".into(),
            source_ip: Some("127.0.0.1".into()),
            action: action.into(),
            session_id: None,
            outcome: "ok".into(),
            detail: None,
        }
    }

    fn log(n: usize) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let (seq, hash) = out
                .last()
                .map_or((0, GENESIS_HASH.to_owned()), |r| (r.seq, r.hash.clone()));
            out.push(AuditRecord::chain(seq, &hash, ev(&format!("a{i}"))));
        }
        out
    }

    #[test]
    fn a_chain_verifies() {
        assert_eq!(verify(&log(5)), Ok(5));
        assert_eq!(verify(&[]), Ok(0));
    }

    #[test]
    fn any_edit_names_the_record() {
        let mut l = log(5);
        l[2].event.outcome = "denied".into();
        assert_eq!(verify(&l).unwrap_err().seq, 3);

        let mut l = log(5);
        l[3].event.actor = "mallory".into();
        assert_eq!(verify(&l).unwrap_err().seq, 4);

        let mut l = log(5);
        l.remove(1);
        assert_eq!(verify(&l).unwrap_err().seq, 3);
    }

    #[test]
    fn redaction_keeps_the_chain() {
        let mut l = log(4);
        l[1].redact();
        assert_eq!(verify(&l), Ok(4));
        assert_eq!(l[1].event.actor, REDACTED);
        // …but redacted records still cannot be edited.
        l[1].event.action = "x".into();
        assert_eq!(verify(&l).unwrap_err().seq, 2);
    }

    #[test]
    fn json_round_trips() {
        let r = &log(1)[0];
        let text = serde_json::to_string(r).unwrap();
        assert!(text.contains("\"prevHash\""), "{text}");
        let back: AuditRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, r);
    }
}
