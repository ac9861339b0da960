//! The Kubernetes runtime: each session is one bare Pod in a configured
//! namespace (restricted Pod Security profile, limits from the session,
//! sessiond's token in a Secret), with a NetworkPolicy that admits only the
//! orchestrator. The orchestrator reaches sessiond at the Pod's IP; sessions
//! reach the gateway at a configured URL (a Service).
//!
//! - [`manifest`]: the objects, built without a cluster (`kube render`).
//! - [`observe`]: a Pod's status in the seam's terms.
//! - [`runtime`]: the seam over the API (kube-rs).

pub mod manifest;
pub mod observe;
pub mod runtime;
pub mod settings;

pub use runtime::KubernetesRuntime;
pub use settings::{KubeSettings, Seccomp};
