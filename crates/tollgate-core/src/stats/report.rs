//! The report `GET /api/stats` serves, built from the aggregate and the limiter's live gauges.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::aggregate::{add_into, merge, Aggregate, TenantTrack};
use super::fair::{max_min_shares, Demand};
use super::{DecisionOutcome, Gauges, OUTCOMES, RECENT_SECONDS, SHARE_INTERVAL_SECONDS};
use crate::config::Snapshot;
use crate::limiter::Limiter;

/// Heavy hitters listed per ranking.
pub const TOP_KEYS: usize = 10;

/// Decisions by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutcomeCounts {
    pub allowed: u64,
    pub denied: u64,
    /// Allowed, but a limit in shadow mode would have denied.
    pub shadow_denied: u64,
    /// Refused by the load manager (queue full, queue timeout, shutting down).
    pub shed: u64,
    /// Allowed uncounted while the store was down (`--on-store-error allow`).
    pub fail_open: u64,
    /// The store could not decide (`--on-store-error deny`, or a bound on state).
    pub error: u64,
}

impl From<[u64; OUTCOMES]> for OutcomeCounts {
    fn from(c: [u64; OUTCOMES]) -> Self {
        Self {
            allowed: c[DecisionOutcome::Allowed as usize],
            denied: c[DecisionOutcome::Denied as usize],
            shadow_denied: c[DecisionOutcome::ShadowDenied as usize],
            shed: c[DecisionOutcome::Shed as usize],
            fail_open: c[DecisionOutcome::FailOpen as usize],
            error: c[DecisionOutcome::Error as usize],
        }
    }
}

/// The service as a whole.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceStats {
    /// Every decision since start, by outcome.
    pub totals: OutcomeCounts,
    /// Decisions in the last closed second, by outcome.
    pub last_second: OutcomeCounts,
    /// Median decision latency (admission wait included) over the last 10 seconds, ms.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile of the same, ms.
    pub latency_p99_ms: Option<f64>,
    /// Decisions holding an admission slot now.
    pub in_flight: u64,
    /// `max_global_concurrent_requests` in effect.
    pub max_global_concurrent_requests: u64,
    /// Requests waiting in tenant queues now.
    pub queued: u64,
    /// `memory` or `redis`.
    pub store_kind: String,
    /// False while the store is unreachable (the Redis circuit breaker is open).
    pub store_healthy: bool,
    pub config_version: u64,
    pub uptime_seconds: f64,
}

/// One closed second.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPoint {
    /// Unix time of the second's end, seconds.
    pub t: u64,
    pub decisions: OutcomeCounts,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub in_flight: u64,
    pub queued: u64,
    pub max_global_concurrent_requests: u64,
}

/// One tenant's figures (or, with `other`, those of every tenant past the tracked ones).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantStats {
    /// The tenant id; null for the "other" row.
    pub tenant: Option<String>,
    /// True for the row of tenants not tracked by name.
    pub other: bool,
    /// Decisions since the tenant was first tracked, by outcome.
    pub totals: OutcomeCounts,
    /// Decisions per second over the last 5 closed seconds.
    pub decisions_per_second: f64,
    /// Share of the last minute's decisions that were denied (0..=1).
    pub denied_share: f64,
    /// Requests waiting in the tenant's queue now.
    pub queued: u64,
    /// Fair-share weight in effect.
    pub weight: u32,
    /// Share of all admission slots granted in the last 5 seconds that this tenant received (0..=1).
    pub admitted_share: f64,
    /// Its weighted max-min fair share of those slots, given what each tenant asked for (0..=1).
    pub fair_share: f64,
    /// Decisions per second, one per closed second of the last minute, oldest first.
    pub history: Vec<u64>,
}

/// One heavy-hitter key.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeavyHitter {
    pub tenant_id: String,
    pub client_id: String,
    pub action_type: String,
    /// Counted decisions (or denials) in the window; may overcount by at most `error`.
    pub count: u64,
    pub error: u64,
    /// The limit of the key's latest decision.
    pub max_requests: Option<u64>,
    pub window_duration_seconds: Option<f64>,
}

/// Top keys over the last minute, from a fixed-size Space-Saving sketch.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeavyHitters {
    /// Seconds the counts cover (up to 60, plus the second in progress).
    pub window_seconds: u64,
    pub by_requests: Vec<HeavyHitter>,
    pub by_denials: Vec<HeavyHitter>,
}

/// Everything `GET /api/stats` answers.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsReport {
    pub service: ServiceStats,
    /// The last 5 minutes, one point per second, oldest first.
    pub history: Vec<HistoryPoint>,
    /// Tracked tenants, busiest first; tenants past `tenants_tracked_max` share the `other` row.
    pub tenants: Vec<TenantStats>,
    pub tenants_tracked_max: u64,
    pub heavy_hitters: HeavyHitters,
}

/// What the report needs from outside the collector.
pub struct Context {
    pub uptime: Duration,
    pub gauges: Gauges,
    pub queued: HashMap<String, usize>,
    pub store_kind: &'static str,
    pub store_healthy: bool,
    pub config: Arc<Snapshot>,
}

impl Context {
    pub fn from_limiter(limiter: &Limiter, uptime: Duration) -> Self {
        Self {
            uptime,
            gauges: Gauges::of(limiter),
            queued: limiter.load().queued_per_tenant().into_iter().collect(),
            store_kind: limiter.store().kind(),
            store_healthy: limiter.store().is_healthy(),
            config: arc_swap::Guard::into_inner(limiter.config().snapshot()),
        }
    }
}

fn ms(micros: Option<u64>) -> Option<f64> {
    micros.map(|m| m as f64 / 1000.0)
}

fn sum(rows: impl Iterator<Item = [u64; OUTCOMES]>) -> [u64; OUTCOMES] {
    let mut out = [0; OUTCOMES];
    for r in rows {
        add_into(&mut out, &r);
    }
    out
}

fn admitted(c: &[u64; OUTCOMES]) -> u64 {
    c.iter().sum::<u64>() - c[DecisionOutcome::Shed as usize]
}

/// Counts of the last `n` closed seconds.
fn last(track: &TenantTrack, n: usize) -> [u64; OUTCOMES] {
    sum(track.recent.iter().rev().take(n).copied())
}

pub fn build(agg: &Aggregate, ctx: &Context) -> StatsReport {
    let mut latency = agg.current_latency.clone();
    for h in &agg.recent_latency {
        latency.add(h);
    }
    let service = ServiceStats {
        totals: agg.totals.into(),
        last_second: agg
            .history
            .back()
            .map_or([0; OUTCOMES], |s| s.outcomes)
            .into(),
        latency_p50_ms: ms(latency.quantile(0.5)),
        latency_p99_ms: ms(latency.quantile(0.99)),
        in_flight: ctx.gauges.in_flight as u64,
        max_global_concurrent_requests: ctx.gauges.capacity as u64,
        queued: ctx.gauges.queued as u64,
        store_kind: ctx.store_kind.to_owned(),
        store_healthy: ctx.store_healthy,
        config_version: ctx.config.version,
        uptime_seconds: ctx.uptime.as_secs_f64(),
    };
    let history = agg
        .history
        .iter()
        .map(|s| HistoryPoint {
            t: s.unix_seconds,
            decisions: s.outcomes.into(),
            latency_p50_ms: ms(s.p50_micros),
            latency_p99_ms: ms(s.p99_micros),
            in_flight: s.gauges.in_flight as u64,
            queued: s.gauges.queued as u64,
            max_global_concurrent_requests: s.gauges.capacity as u64,
        })
        .collect();
    StatsReport {
        service,
        history,
        tenants: tenants(agg, ctx),
        tenants_tracked_max: agg.max_tenants as u64,
        heavy_hitters: heavy_hitters(agg),
    }
}

fn tenants(agg: &Aggregate, ctx: &Context) -> Vec<TenantStats> {
    let closed = agg.other.recent.len().min(SHARE_INTERVAL_SECONDS);
    let mut rows: Vec<(Option<&str>, &TenantTrack)> = agg
        .tenants
        .iter()
        .map(|(name, t)| (Some(name.as_str()), t))
        .collect();
    if agg.other.totals.iter().any(|&c| c > 0) {
        rows.push((None, &agg.other));
    }
    let weight = |name: Option<&str>| {
        name.and_then(|n| ctx.config.tenants.get(n))
            .map_or(1, |t| t.weight.max(1))
    };
    // Admission over the share interval: the closed seconds plus the one in progress.
    let window: Vec<[u64; OUTCOMES]> = rows
        .iter()
        .map(|(_, t)| sum([last(t, closed), t.current].into_iter()))
        .collect();
    let demands: Vec<Demand> = rows
        .iter()
        .zip(&window)
        .map(|((name, _), w)| Demand {
            wanted: w.iter().sum::<u64>() as f64,
            weight: weight(*name) as f64,
        })
        .collect();
    let slots: u64 = window.iter().map(admitted).sum();
    let fair = max_min_shares(slots as f64, &demands);
    let share = |x: f64| if slots == 0 { 0.0 } else { x / slots as f64 };
    let mut out: Vec<TenantStats> = rows
        .iter()
        .zip(window.iter().zip(fair))
        .map(|((name, t), (w, fair))| {
            let minute = sum([last(t, RECENT_SECONDS), t.current].into_iter());
            let decided = minute.iter().sum::<u64>() - minute[DecisionOutcome::Shed as usize];
            TenantStats {
                tenant: name.map(str::to_owned),
                other: name.is_none(),
                totals: t.totals.into(),
                decisions_per_second: if closed == 0 {
                    0.0
                } else {
                    last(t, closed).iter().sum::<u64>() as f64 / closed as f64
                },
                denied_share: if decided == 0 {
                    0.0
                } else {
                    minute[DecisionOutcome::Denied as usize] as f64 / decided as f64
                },
                queued: name.and_then(|n| ctx.queued.get(n)).copied().unwrap_or(0) as u64,
                weight: weight(*name),
                admitted_share: share(admitted(w) as f64),
                fair_share: share(fair),
                history: t.recent.iter().map(|s| s.iter().sum()).collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.decisions_per_second
            .total_cmp(&a.decisions_per_second)
            .then_with(|| {
                let total = |t: &TenantStats| t.history.iter().sum::<u64>();
                total(b).cmp(&total(a))
            })
            .then_with(|| a.tenant.cmp(&b.tenant))
    });
    out
}

fn heavy_hitters(agg: &Aggregate) -> HeavyHitters {
    let view = |list: Vec<super::heavy::Counter>| -> Vec<HeavyHitter> {
        list.into_iter()
            .take(TOP_KEYS)
            .map(|c| HeavyHitter {
                tenant_id: c.tenant,
                client_id: c.client,
                action_type: c.action,
                count: c.count,
                error: c.error,
                max_requests: c.limit.map(|l| l.max_requests),
                window_duration_seconds: c.limit.map(|l| l.window_seconds()),
            })
            .collect()
    };
    let requests = merge(
        agg.heavy
            .iter()
            .flat_map(|(r, _)| r.iter())
            .chain(agg.current_requests.iter()),
    );
    let denials = merge(
        agg.heavy
            .iter()
            .flat_map(|(_, d)| d.iter())
            .chain(agg.current_denials.iter()),
    );
    HeavyHitters {
        window_seconds: agg.heavy.len() as u64,
        by_requests: view(requests),
        by_denials: view(denials),
    }
}
