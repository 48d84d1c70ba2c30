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
//! - [`head_deadline`] — the request-head deadline per connection, without a timer per request.
//! - [`late_redis`] — redis mode: serving while Redis is unreachable at start-up, connecting later.
//! - [`listen`] — the accept loop: connection cap, header deadline, graceful shutdown.
//! - [`config_file`] — `--config FILE` as the source of truth: applying it, finding changes.
//! - [`probe`] — `tollgate probe URL`: a dependency-free HTTP health check for containers.
//! - [`rls`] — the Envoy Rate Limit Service (gRPC) front end, with health and reflection.
//! - [`request_layer`] — the one layer every request passes: request id, limits, timeout, log.
//! - [`reload`] — the task re-applying the `--config` file on SIGHUP and on changes on disk.
//! - [`startup_log`] — the start-up summary line.
//! - [`config_sync`] — redis mode: applying configuration changed by other instances.
//! - [`server`] — building the service from flags, serving, graceful shutdown.
//! - [`shutdown`] — drain delay and answering requests still running when the grace period ends.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod api;
pub mod cli;
pub mod config_file;
pub mod config_sync;
pub mod error;
pub mod extract;
pub mod hardening;
pub mod head_deadline;
pub mod late_redis;
pub mod listen;
pub mod metrics;
pub mod probe;
pub mod reload;
pub mod request_layer;
pub mod rls;
pub mod server;
pub mod shutdown;
pub mod startup_log;
pub mod state;
