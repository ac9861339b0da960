//! The session core: what a session is and how it lives.
//!
//! Owns the lifecycle state machine, one actor per live session (all
//! operations on a session are serialised through it), the event log
//! sequencing, and the credential registry the gateway consults. It talks
//! to the outside world only through three seams, each taking and returning
//! our own types:
//! - [`Runtime`]: where containers run (Docker today);
//! - [`Agent`]: the sessiond daemon inside a session's container;
//! - [`Store`]: where sessions and their events persist.
//!
//! No HTTP framework, container SDK or database driver is used here.

pub mod addresses;
pub mod audit;
pub mod config;
pub mod credentials;
pub mod error;
pub mod idempotency;
pub mod identity;
pub mod ids;
pub mod lease;
pub mod metrics;
pub mod options;
pub mod policy;
pub mod pricing;
pub mod push;
pub mod reconciler;
pub mod seams;
pub mod secrets;
pub mod session;
pub mod store_codec;
mod time;
pub mod webhook;

pub use audit::{AuditEvent, AuditFilter, AuditRecord, AuditStore};
pub use config::{IdleAction, LimitsPolicy, ManagerConfig};
pub use credentials::{CredentialRegistry, SessionCredentials};
pub use error::{AgentError, CoreError, RuntimeError, StoreError};
pub use idempotency::IdempotencyStore;
pub use identity::{IdentityStore, Principal, Role};
pub use ids::{SessionId, Token};
pub use lease::{Heartbeat, Lease, Leases, Replica};
pub use push::{session_branch, PushPolicy, PushRefusal};
pub use seams::{
    Agent, AgentEndpoint, ContainerStatus, EventStream, Placement, ResourceUsage, Runtime,
    RuntimeEvent, RuntimeEventKind, RuntimeEventStream, SessionRecord, SessionSpec, Started, Store,
    LABEL_MANAGED, LABEL_SESSION,
};
pub use session::{CreateSession, Manager, Route, Subscription};
pub use session::{ModelSpend, SessionUsage};
pub use time::{epoch_ms, from_epoch_ms, now, now_ms, rfc3339, rfc3339_to_ms};
