//! The store chosen by value: [`AnyStore`] delegates every store seam
//! (sessions and events, leases, identity, audit, idempotency keys,
//! webhooks) to the backend `serve` and
//! `admin` opened — SQLite in the data directory by default, PostgreSQL
//! with `--database-url` — so the server stays generic over one type
//! (an enum over the closed set of backends, not a boxed trait object).

use anyhow::Context;
use cc_core::audit::{AuditEvent, AuditFilter, AuditRecord, AuditStore};
use cc_core::idempotency::{Claim, ClaimOutcome, IdempotencyStore};
use cc_core::identity::{ApiTokenRecord, IdentityStore};
use cc_core::lease::{Heartbeat, Leases, Replica};
use cc_core::webhook::{Attempt, Delivery, Due, Endpoint, NewDelivery, WebhookStore};
use cc_core::{SessionId, SessionRecord, Store, StoreError};
use cc_store_postgres::PostgresStore;
use cc_store_sqlite::SqliteStore;
use cc_wire::api::{ServerMessage, SessionState};
use std::path::Path;
use std::time::{Duration, SystemTime};

#[derive(Clone, Debug)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl AnyStore {
    /// PostgreSQL at `database_url` when given, else SQLite in `data_dir`.
    /// Errors name what failed but never repeat the URL (it may hold a
    /// password).
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> anyhow::Result<Self> {
        match database_url {
            Some(url) => PostgresStore::connect(url)
                .await
                .map(Self::Postgres)
                .context("opening the PostgreSQL database (--database-url)"),
            None => SqliteStore::open(data_dir)
                .map(Self::Sqlite)
                .with_context(|| format!("opening the data directory {}", data_dir.display())),
        }
    }

    /// Which backend, for the logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// `match` on the backend, calling the same method on either.
macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $call.await,
            AnyStore::Postgres($s) => $call.await,
        }
    };
}

impl Store for AnyStore {
    async fn insert_session(&self, rec: &SessionRecord) -> Result<(), StoreError> {
        delegate!(self, s => s.insert_session(rec))
    }
    async fn update_session(&self, rec: &SessionRecord) -> Result<(), StoreError> {
        delegate!(self, s => s.update_session(rec))
    }
    async fn get_session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        delegate!(self, s => s.get_session(id))
    }
    async fn list_sessions(&self, live_only: bool) -> Result<Vec<SessionRecord>, StoreError> {
        delegate!(self, s => s.list_sessions(live_only))
    }
    async fn sessions_in_state(
        &self,
        state: SessionState,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        delegate!(self, s => s.sessions_in_state(state))
    }
    async fn append_events(
        &self,
        id: &SessionId,
        events: &[ServerMessage],
        agent_seq: Option<u64>,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.append_events(id, events, agent_seq))
    }
    async fn record_change(
        &self,
        rec: &SessionRecord,
        events: &[ServerMessage],
        agent_seq: Option<u64>,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.record_change(rec, events, agent_seq))
    }
    async fn events(
        &self,
        id: &SessionId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<ServerMessage>, StoreError> {
        delegate!(self, s => s.events(id, since, limit))
    }
    async fn put_sealed_secrets(&self, id: &SessionId, sealed: &[u8]) -> Result<(), StoreError> {
        delegate!(self, s => s.put_sealed_secrets(id, sealed))
    }
    async fn sealed_secrets(&self, id: &SessionId) -> Result<Option<Vec<u8>>, StoreError> {
        delegate!(self, s => s.sealed_secrets(id))
    }
    async fn delete_sealed_secrets(&self, id: &SessionId) -> Result<(), StoreError> {
        delegate!(self, s => s.delete_sealed_secrets(id))
    }
    async fn purge_logs_before(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
        delegate!(self, s => s.purge_logs_before(cutoff))
    }
    async fn erase_owner_sessions(&self, owner: &str) -> Result<u64, StoreError> {
        delegate!(self, s => s.erase_owner_sessions(owner))
    }
}

impl Leases for AnyStore {
    async fn heartbeat(&self, beat: &Heartbeat<'_>) -> Result<Vec<(SessionId, u64)>, StoreError> {
        delegate!(self, s => s.heartbeat(beat))
    }
    async fn claim(
        &self,
        id: &SessionId,
        replica: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError> {
        delegate!(self, s => s.claim(id, replica, ttl))
    }
    async fn release(&self, id: &SessionId, replica: &str) -> Result<(), StoreError> {
        delegate!(self, s => s.release(id, replica))
    }
    async fn unowned(&self) -> Result<Vec<SessionId>, StoreError> {
        delegate!(self, s => s.unowned())
    }
    async fn holder(&self, id: &SessionId) -> Result<Option<Replica>, StoreError> {
        delegate!(self, s => s.holder(id))
    }
    async fn held_by_replicas(&self) -> Result<Vec<SessionId>, StoreError> {
        delegate!(self, s => s.held_by_replicas())
    }
    async fn lock_job(&self, job: &str, replica: &str, ttl: Duration) -> Result<bool, StoreError> {
        delegate!(self, s => s.lock_job(job, replica, ttl))
    }

    async fn unlock_job(&self, job: &str, replica: &str) -> Result<(), StoreError> {
        delegate!(self, s => s.unlock_job(job, replica))
    }

    async fn replicas(&self) -> Result<Vec<Replica>, StoreError> {
        delegate!(self, s => s.replicas())
    }
    // Not async, so not through `delegate!`.
    fn event_feed(&self) -> Option<tokio::sync::broadcast::Receiver<SessionId>> {
        match self {
            Self::Sqlite(s) => s.event_feed(),
            Self::Postgres(s) => s.event_feed(),
        }
    }
}

impl IdentityStore for AnyStore {
    async fn insert_token(&self, rec: &ApiTokenRecord) -> Result<(), StoreError> {
        delegate!(self, s => s.insert_token(rec))
    }
    async fn token_by_hash(&self, hash: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        delegate!(self, s => s.token_by_hash(hash))
    }
    async fn list_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
        delegate!(self, s => s.list_tokens())
    }
    async fn revoke_token(&self, id: &str, at: SystemTime) -> Result<bool, StoreError> {
        delegate!(self, s => s.revoke_token(id, at))
    }
    async fn active_tokens(&self) -> Result<u64, StoreError> {
        delegate!(self, s => s.active_tokens())
    }
    async fn delete_user_tokens(&self, user: &str) -> Result<u64, StoreError> {
        delegate!(self, s => s.delete_user_tokens(user))
    }
}

impl IdempotencyStore for AnyStore {
    async fn claim_idempotency_key(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        delegate!(self, s => s.claim_idempotency_key(claim))
    }
    async fn complete_idempotency_key(
        &self,
        user: &str,
        key: &str,
        session: &SessionId,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.complete_idempotency_key(user, key, session))
    }
    async fn release_idempotency_key(&self, user: &str, key: &str) -> Result<(), StoreError> {
        delegate!(self, s => s.release_idempotency_key(user, key))
    }
    async fn delete_user_idempotency_keys(&self, user: &str) -> Result<u64, StoreError> {
        delegate!(self, s => s.delete_user_idempotency_keys(user))
    }
}

impl WebhookStore for AnyStore {
    async fn insert_endpoint(&self, e: &Endpoint) -> Result<(), StoreError> {
        delegate!(self, s => s.insert_endpoint(e))
    }
    async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        delegate!(self, s => s.endpoints())
    }
    async fn delete_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        delegate!(self, s => s.delete_endpoint(id))
    }
    async fn enqueue_deliveries(&self, deliveries: &[NewDelivery]) -> Result<(), StoreError> {
        delegate!(self, s => s.enqueue_deliveries(deliveries))
    }
    async fn claim_due(
        &self,
        holder: &str,
        now: SystemTime,
        lock_for: Duration,
        limit: usize,
    ) -> Result<Vec<Due>, StoreError> {
        delegate!(self, s => s.claim_due(holder, now, lock_for, limit))
    }
    async fn record_attempt(
        &self,
        id: &str,
        holder: &str,
        attempt: &Attempt,
        at: SystemTime,
    ) -> Result<bool, StoreError> {
        delegate!(self, s => s.record_attempt(id, holder, attempt, at))
    }
    async fn deliveries(
        &self,
        endpoint_id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        delegate!(self, s => s.deliveries(endpoint_id, limit))
    }
    async fn purge_deliveries(&self, before: SystemTime) -> Result<u64, StoreError> {
        delegate!(self, s => s.purge_deliveries(before))
    }
    async fn delete_user_endpoints(&self, user: &str) -> Result<u64, StoreError> {
        delegate!(self, s => s.delete_user_endpoints(user))
    }
}

impl AuditStore for AnyStore {
    async fn append_audit(&self, event: AuditEvent) -> Result<AuditRecord, StoreError> {
        delegate!(self, s => s.append_audit(event))
    }
    async fn audit_records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        delegate!(self, s => s.audit_records(filter))
    }
    async fn redact_audit_actor(&self, user: &str) -> Result<u64, StoreError> {
        delegate!(self, s => s.redact_audit_actor(user))
    }
}
