//! Live statistics for the dashboard and `GET /api/stats`: decisions by outcome, decision latency,
//! per-tenant figures with admission shares next to fair shares, and heavy-hitter keys.
//!
//! Cost on the decision path: one call per decision into a per-thread shard (its own lock, so
//! threads rarely meet), doing a fixed amount of work whatever the number of keys or tenants.
//! Once a second a sampler ([`spawn_sampler`]) drains the shards into the aggregate, which keeps
//! a ring of the last [`HISTORY_SECONDS`] seconds. Memory is bounded: per shard at most
//! [`shard::SHARD_TENANTS`] tenant entries and two sketches of [`heavy::K`] counters; in the
//! aggregate at most `max_tenants` tenants (the rest are folded into one "other" row), tenants idle
//! for [`TENANT_IDLE_SECONDS`] are dropped to make room for active ones.

mod aggregate;
pub mod fair;
pub mod heavy;
pub mod histogram;
mod report;
mod shard;

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::limit::{Limit, RateKey};
use crate::limiter::Limiter;

use aggregate::Aggregate;
pub use report::{
    HeavyHitter, HeavyHitters, HistoryPoint, OutcomeCounts, ServiceStats, StatsReport, TenantStats,
};
use shard::{Padded, Shard};

/// Seconds of history kept for the service charts.
pub const HISTORY_SECONDS: usize = 300;
/// Seconds of history kept per tenant and for heavy hitters.
pub const RECENT_SECONDS: usize = 60;
/// Closed seconds that rates and admission shares are computed over.
pub const SHARE_INTERVAL_SECONDS: usize = 5;
/// A tracked tenant with no decision for this long gives its row up.
pub const TENANT_IDLE_SECONDS: u32 = 60;
/// Tenants tracked by name unless configured otherwise.
pub const DEFAULT_MAX_TENANTS: usize = 200;

/// How a decision request ended, as counted here: the one classification the engine, metrics and
/// front ends share.
pub use crate::outcome::{DecisionOutcome, OUTCOMES};

/// The collector; share it behind an `Arc`.
pub struct Stats {
    shards: Box<[Padded<Mutex<Shard>>]>,
    hasher: foldhash::fast::FixedState,
    aggregate: Mutex<Aggregate>,
    started: Instant,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TENANTS)
    }
}

impl Stats {
    /// A collector tracking at most `max_tenants` tenants by name.
    pub fn new(max_tenants: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let n = (cores * 2).next_power_of_two().clamp(4, 64);
        Self {
            shards: (0..n).map(|_| Padded::default()).collect(),
            hasher: foldhash::fast::FixedState::with_seed(0x746f_6c6c_6761_7465),
            aggregate: Mutex::new(Aggregate::new(max_tenants.max(1))),
            started: Instant::now(),
        }
    }

    /// Records one decision (the engine calls this for every decision of either front end).
    pub fn record_outcome(
        &self,
        key: RateKey<'_>,
        outcome: DecisionOutcome,
        limit: Option<Limit>,
        took: Duration,
    ) {
        let tenant_hash = self.hasher.hash_one(key.tenant);
        let key_hash = self.hasher.hash_one((key.tenant, key.client, key.action));
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let shard = &self.shards[shard::shard_index(self.shards.len())].0;
        shard
            .lock()
            .record(tenant_hash, key_hash, key, outcome, limit, micros);
    }

    /// Folds what the shards counted into the aggregate (without closing the current second).
    fn collect(&self, agg: &mut Aggregate) {
        for s in self.shards.iter() {
            let drained = s.0.lock().drain();
            agg.absorb(drained);
        }
    }

    /// Closes the current second: what was counted in it joins the history, with the gauges
    /// sampled now. The sampler calls this once a second; tests call it to step time.
    pub fn tick(&self, unix_seconds: u64, gauges: Gauges) {
        let mut agg = self.aggregate.lock();
        self.collect(&mut agg);
        agg.close_second(unix_seconds, gauges);
    }

    /// Everything the dashboard shows, with the limiter's live gauges. Counts include the
    /// decisions of the second in progress, so totals are exact at any moment.
    pub fn report(&self, limiter: &Limiter) -> StatsReport {
        let context = report::Context::from_limiter(limiter, self.started.elapsed());
        let mut agg = self.aggregate.lock();
        self.collect(&mut agg);
        report::build(&agg, &context)
    }
}

/// Load-manager gauges sampled with each second.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub in_flight: usize,
    pub queued: usize,
    pub capacity: usize,
}

impl Gauges {
    pub fn of(limiter: &Limiter) -> Self {
        let s = limiter.load().snapshot();
        Self {
            in_flight: s.in_flight,
            queued: s.queued,
            capacity: s.capacity,
        }
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Stops the sampler when dropped.
pub struct SamplerGuard(tokio::task::JoinHandle<()>);

impl Drop for SamplerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Samples `limiter`'s statistics once per `every` (one second for the dashboard); no-op task if
/// the limiter collects none.
pub fn spawn_sampler(limiter: Arc<Limiter>, every: Duration) -> SamplerGuard {
    SamplerGuard(tokio::spawn(async move {
        let Some(stats) = limiter.stats().cloned() else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            stats.tick(unix_seconds(), Gauges::of(&limiter));
        }
    }))
}
