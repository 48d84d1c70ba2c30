//! tollgate-server: the HTTP JSON API over `tollgate-core`, and what the `tollgate` binary runs.
//!
//! - [`api`] — routes and handlers (decision, status, configuration, health).
//! - [`error`] — the JSON error type every failure becomes.
//! - [`extract`] — request extractors that answer bad input with that error.
//! - [`state`] — what handlers share.
//! - [`cli`] — flags and environment variables.
//! - [`config_sync`] — redis mode: applying configuration changed by other instances.
//! - [`server`] — building the service from flags, serving, graceful shutdown.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod config_sync;
pub mod error;
pub mod extract;
pub mod server;
pub mod state;
