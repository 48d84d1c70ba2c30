//! tollgate-server: the HTTP JSON API over `tollgate-core`, and what the `tollgate` binary runs.
//!
//! - [`access_log`] — per-request log lines and `X-Request-Id`.
//! - [`api`] — routes and handlers (decision, status, configuration, health, metrics, OpenAPI).
//! - [`error`] — the JSON error type every failure becomes.
//! - [`extract`] — request extractors that answer bad input with that error.
//! - [`state`] — what handlers share.
//! - [`metrics`] — Prometheus metrics and the instrumented store.
//! - [`cli`] — flags and environment variables.
//! - [`hardening`] — per-request timeout and size limits.
//! - [`listen`] — the accept loop: connection cap, header deadline, graceful shutdown.
//! - [`rls`] — the Envoy Rate Limit Service (gRPC) front end, with health and reflection.
//! - [`reload`] — applying the `--config` file again on SIGHUP.
//! - [`config_sync`] — redis mode: applying configuration changed by other instances.
//! - [`server`] — building the service from flags, serving, graceful shutdown.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod api;
pub mod cli;
pub mod config_sync;
pub mod error;
pub mod extract;
pub mod hardening;
pub mod listen;
pub mod metrics;
pub mod reload;
pub mod rls;
pub mod server;
pub mod state;
