//! Test support shared by the integration tests, the benchmarks and the demo.
//!
//! - [`git_server`]: a real smart-HTTP git server (`git http-backend` behind
//!   a small HTTP front) serving bare repositories the test creates.
//! - [`fake_forge`]: a scripted fake of the GitHub and GitLab pull-request
//!   APIs, speaking their real request and response shapes.
//! - [`docker`]: a unique resource prefix per run and cleanup on drop, so
//!   tests sharing one Docker engine never touch each other's resources.
//! - [`ports`]: ports outside the kernel's ephemeral range, for a port a
//!   test rebinds after a restart or needs closed.
//! - [`tcp_relay`]: a TCP relay a test cuts, to lose a server (PostgreSQL)
//!   while a client uses it.
//! - [`fake_runtime`]: a stateful in-memory runtime, and
//!   [`conformance`]: the runtime seam's suite that it, Docker and every
//!   other backend pass.
//! - [`process_runtime`]: sessions as local sessiond processes (the real
//!   sessiond, a fake or real Claude Code), for whole sessions without
//!   Docker.
//! - [`webhook_receiver`]: a webhook endpoint that keeps what it is sent
//!   and fails the first deliveries on request.
//! - [`otlp_receiver`]: an OpenTelemetry collector (OTLP/HTTP, JSON)
//!   that keeps the spans it is sent.
//! - [`harness`]: an orchestrator on real Docker with a model double and a
//!   git server, reached through the public API only.

pub mod conformance;
pub mod docker;
pub mod fake_forge;
pub mod fake_runtime;
pub mod git_server;
pub mod harness;
pub mod otlp_receiver;
pub mod ports;
pub mod process_runtime;
pub mod tcp_relay;
pub mod webhook_receiver;

pub use harness::Harness;
