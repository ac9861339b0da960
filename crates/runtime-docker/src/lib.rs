//! Docker runtime backend (bollard over the local Engine API).
//!
//! - [`DockerRuntime`]: one internal network, one workspace volume and one
//!   container per session, all named `<prefix><session-id>` and labelled
//!   with the session, so create is idempotent and a test run (own prefix)
//!   never touches resources it did not create.
//! - [`firewall`]: host INPUT rules so a session reaches only the gateway
//!   port on the host.
//! - [`image`]: builds the worker image without a registry.
//! - [`subnet`]: an optional pool of session subnets we own, beyond
//!   Docker's default address pools (about 30 networks).

pub mod firewall;
pub mod image;
mod observe;
mod runtime;
pub mod subnet;

pub use runtime::{DockerRuntime, DEFAULT_PREFIX, LABEL_PREFIX, SECCOMP_PROFILE};
pub use subnet::{Ipv4Cidr, SubnetPool};
