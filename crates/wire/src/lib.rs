//! Wire types shared by every ClaudeCluster component. No IO lives here.
//!
//! - [`api`]: the public REST + WebSocket contract (client ⇄ orchestrator).
//!   Seed fields are never renamed or removed; extensions are additive.
//! - [`stream`]: the session stream's messages, in the seed's
//!   `{type, data}` envelope (re-exported from [`api`]).
//! - [`sessiond`]: the versioned contract between the orchestrator and the
//!   daemon inside every session container.
//! - [`render`]: turns Claude Code's stream-json events into the text a
//!   person would read in a terminal.

pub mod api;
pub mod render;
pub mod sessiond;
pub mod stream;
