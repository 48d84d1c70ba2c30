//! tollgate-core: the rate-limiting engine behind the `tollgate` service. No HTTP lives here.
//!
//! - [`clock`] — time sources (system, manual for tests, skewed).
//! - [`limit`] — limits, ids, costs, the injective key, and their validation.
//! - [`window`] — the exact sliding-window log of one key.
//! - [`policy`] — the limits of one key, their algorithms, and the store call deciding under them.
//! - [`algorithms`] — per-limit state of the four algorithms and the rules combining several limits.
//! - [`store`] — the `Store` trait (one atomic check-and-consume), the in-memory store, and the
//!   Redis store (one Lua script per decision) with its circuit breaker.
//! - [`redis_conn`] — one connection type over a Redis node or a Redis Cluster.
//! - [`config`] — the ConfigurationManager: limit hierarchy, weights, global settings, persistence.
//! - [`credentials`] — tenant API keys: issuing, stored form, verification.
//! - [`load`] — the TenantLoadManager: bounded concurrency with fair per-tenant queues.
//! - [`limiter`] — the orchestrator tying them together.
//! - [`engine`] — the one API both front ends call: decisions (one key or several at once), status,
//!   report, refund, configuration, statistics, health gauges, drain.
//! - [`outcome`] — how a decision ended (one classification for stats, metrics and logs) and the
//!   observer the engine reports decisions and store-call timings to.
//! - [`stats`] — live statistics for the dashboard: outcomes, latency, tenant shares, heavy hitters.
//! - [`whole_number`] — integer fields that also take integral floats, as JSON Schema does.
// One `unsafe` block in the crate, a prefetch hint (`store/memory/prefetch.rs`), allowed where it is.
#![deny(unsafe_code)]

pub mod algorithms;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod engine;
pub mod limit;
pub mod limiter;
pub mod load;
pub mod outcome;
pub mod policy;
pub mod redis_conn;
pub mod stats;
pub mod store;
pub mod whole_number;
pub mod window;

pub use engine::Engine;
pub use limit::{Limit, LimitSource, RateKey};
pub use limiter::{
    Decision, DecisionRequest, LimitError, Limiter, Outcome, StoreErrorPolicy, UnknownTenantPolicy,
};
pub use outcome::{Api, DecisionObserver, DecisionOutcome, DecisionSummary};
