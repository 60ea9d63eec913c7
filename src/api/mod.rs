//! The control plane over HTTP, under the reserved `/_/` prefix.
//!
//! Answered by the gateway core that received the request, from that core's
//! route snapshot; nothing here blocks the executor.

pub mod admin;
pub mod console;
