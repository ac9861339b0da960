//! Ownership of live sessions across orchestrator replicas.
//!
//! Every live session has one owner replica: the one that runs its actor,
//! follows its sessiond and writes its events. Ownership is a lease kept in
//! the store, beside the session's row: the holder's replica ID, an expiry
//! and a fencing number. Invariants (proven by the store conformance suite
//! on every backend):
//! - A claim succeeds only when nobody holds a valid lease (none, expired,
//!   or the claimant's own), and every successful claim by another replica
//!   raises the fencing number, so a takeover is always a new fence.
//! - A session write ([`crate::Store::update_session`],
//!   [`crate::Store::record_change`]) carrying a fencing number older than
//!   the stored one is refused with [`crate::StoreError::Fenced`] and
//!   writes nothing: a replica that lost its lease (a pause longer than the
//!   lease, a network cut) cannot overwrite its successor's work.
//! - Expiry is judged by the store's clock (PostgreSQL's `now()` for every
//!   replica alike), never by comparing two replicas' clocks.
//!
//! Replicas renew every lease they hold with one heartbeat
//! ([`Leases::heartbeat`]) every [`RENEW_EVERY`]; a replica that stops
//! renewing loses its sessions [`LEASE_TTL`] later, and another replica's
//! takeover loop (`crate::reconciler::takeover`) claims and adopts them.

use crate::error::StoreError;
use crate::ids::SessionId;
use std::future::Future;
use std::time::Duration;

/// How long a lease holds without renewal. Short enough that a dead
/// replica's sessions move within the 10 s the platform promises (lease +
/// one takeover scan + adoption), long enough that a replica under load
/// (a garbage-collecting database, a busy core) renews in time.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often a replica renews its leases: a third of the lease, so two
/// heartbeats may fail before anything is lost.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often a replica looks for sessions whose owner stopped renewing.
pub const TAKEOVER_SCAN_EVERY: Duration = Duration::from_secs(1);

/// A session's lease as its record carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lease {
    /// The replica that holds (or last held) the session; `None` for a
    /// session no replica ever claimed (written by a build without leases).
    pub holder: Option<String>,
    /// The fencing number of the holder's claim; writes carrying a smaller
    /// one are refused.
    pub fence: u64,
}

/// One orchestrator replica as the others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Stable for the life of the process; unique among live replicas.
    pub id: String,
    /// Base URL of the replica's API as the other replicas reach it, for
    /// operations on the sessions it owns (`http://10.0.0.7:8080`).
    pub url: String,
}

/// A replica's heartbeat: what it announces and what it keeps.
#[derive(Debug, Clone)]
pub struct Heartbeat<'a> {
    pub replica: &'a Replica,
    /// Runtime resources the replica owns outside any session record (its
    /// warm pool), so no other replica removes them as orphans.
    pub held: &'a [SessionId],
    pub ttl: Duration,
}

/// The lease seam of a store shared by replicas.
pub trait Leases: Send + Sync + 'static {
    /// Records the replica as alive (with its URL and held resources) until
    /// `ttl` from now, renews every session lease it holds for as long, and
    /// returns the live sessions whose leases it holds, with their fences.
    /// A session missing from the answer was taken over: its actor must
    /// stop without touching the session.
    fn heartbeat(
        &self,
        beat: &Heartbeat<'_>,
    ) -> impl Future<Output = Result<Vec<(SessionId, u64)>, StoreError>> + Send;
    /// Takes the lease of a live session nobody holds validly (none,
    /// expired, or `replica`'s own) for `ttl`, and returns the new fencing
    /// number; `None` when another replica's lease is valid or the session
    /// has ended or does not exist.
    fn claim(
        &self,
        id: &SessionId,
        replica: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
    /// Lets `replica`'s lease on the session go now (a replica that stops
    /// and leaves its sessions running), so another claims it at once.
    /// Does nothing when the replica does not hold it.
    fn release(
        &self,
        id: &SessionId,
        replica: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Live sessions whose lease is missing or expired: for a replica to
    /// claim and adopt.
    fn unowned(&self) -> impl Future<Output = Result<Vec<SessionId>, StoreError>> + Send;
    /// The replica whose lease on the session is valid now, if any.
    fn holder(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<Replica>, StoreError>> + Send;
    /// The replicas whose heartbeat has not expired, this one included.
    fn replicas(&self) -> impl Future<Output = Result<Vec<Replica>, StoreError>> + Send;
    /// Resources held by live replicas (see [`Heartbeat::held`]).
    fn held_by_replicas(&self) -> impl Future<Output = Result<Vec<SessionId>, StoreError>> + Send;
    /// Takes (or renews) the cluster-wide lock `job` for `ttl` when it is
    /// free, expired or already `replica`'s: background work that must run
    /// once across replicas (the orphan sweep). `true` when held now.
    fn lock_job(
        &self,
        job: &str,
        replica: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Lets `replica`'s lock `job` go now; nothing when another holds it.
    fn unlock_job(
        &self,
        job: &str,
        replica: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Wakes when any replica appended events to any session (the session's
    /// ID), so readers of sessions owned elsewhere follow them without
    /// polling; `None` when the store has no such feed (a store one process
    /// owns: every event is appended in this process).
    fn event_feed(&self) -> Option<tokio::sync::broadcast::Receiver<SessionId>>;
}
