//! Test support shared by the integration tests, the benchmarks and the demo.
//!
//! - [`git_server`]: a real smart-HTTP git server (`git http-backend` behind
//!   a small HTTP front) serving bare repositories the test creates.
//! - [`fake_forge`]: a scripted fake of the GitHub and GitLab pull-request
//!   APIs, speaking their real request and response shapes.
//! - [`docker`]: a unique resource prefix per run and cleanup on drop, so
//!   tests sharing one Docker engine never touch each other's resources.
//! - [`harness`]: an orchestrator on real Docker with a model double and a
//!   git server, reached through the public API only.

pub mod docker;
pub mod fake_forge;
pub mod git_server;
pub mod harness;

pub use harness::Harness;
