//! What the sampler keeps between reads: totals, the ring of past seconds, tracked tenants and the
//! heavy hitters of the last minute. Touched only by the sampler and by readers, never by a
//! decision.

use std::collections::{HashMap, VecDeque};

use super::heavy::{self, Counter};
use super::histogram::Histogram;
use super::shard::Drained;
use super::{Gauges, HISTORY_SECONDS, OUTCOMES, RECENT_SECONDS, TENANT_IDLE_SECONDS};

/// Closed seconds whose latency histograms are kept for the current p50/p99.
pub const LATENCY_SECONDS: usize = 10;

/// One closed second of the service.
#[derive(Debug, Clone)]
pub struct Second {
    pub unix_seconds: u64,
    pub outcomes: [u64; OUTCOMES],
    pub p50_micros: Option<u64>,
    pub p99_micros: Option<u64>,
    pub gauges: Gauges,
}

/// One tenant's counts.
#[derive(Debug, Default, Clone)]
pub struct TenantTrack {
    pub totals: [u64; OUTCOMES],
    /// The second in progress.
    pub current: [u64; OUTCOMES],
    /// Closed seconds, newest last, at most [`RECENT_SECONDS`].
    pub recent: VecDeque<[u64; OUTCOMES]>,
    /// Closed seconds in a row without a decision.
    pub idle: u32,
}

impl TenantTrack {
    fn add(&mut self, counts: &[u64; OUTCOMES]) {
        add_into(&mut self.totals, counts);
        add_into(&mut self.current, counts);
    }

    fn close(&mut self) {
        if self.current.iter().all(|&c| c == 0) {
            self.idle = self.idle.saturating_add(1);
        } else {
            self.idle = 0;
        }
        self.recent.push_back(std::mem::take(&mut self.current));
        if self.recent.len() > RECENT_SECONDS {
            self.recent.pop_front();
        }
    }
}

pub struct Aggregate {
    pub max_tenants: usize,
    pub totals: [u64; OUTCOMES],
    pub current: [u64; OUTCOMES],
    pub current_latency: Histogram,
    pub recent_latency: VecDeque<Histogram>,
    pub history: VecDeque<Second>,
    pub tenants: HashMap<String, TenantTrack>,
    /// Tenants past `max_tenants`, together.
    pub other: TenantTrack,
    /// Heavy-hitter counters of the second in progress, by requests and by denials.
    pub current_requests: Vec<Counter>,
    pub current_denials: Vec<Counter>,
    /// Each closed second's top keys (merged over shards), newest last.
    pub heavy: VecDeque<(Vec<Counter>, Vec<Counter>)>,
}

/// Adds `src` to `dst`, outcome by outcome.
pub fn add_into(dst: &mut [u64; OUTCOMES], src: &[u64; OUTCOMES]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// Sums counters of the same key; the result is sorted by count, largest first.
pub fn merge<'a>(lists: impl Iterator<Item = &'a Counter>) -> Vec<Counter> {
    let mut by_key: HashMap<u64, Counter> = HashMap::new();
    for c in lists {
        by_key
            .entry(c.hash)
            .and_modify(|m| {
                m.count += c.count;
                m.error += c.error;
                if c.limit.is_some() {
                    m.limit = c.limit;
                }
            })
            .or_insert_with(|| c.clone());
    }
    let mut out: Vec<Counter> = by_key.into_values().collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.tenant, &a.client, &a.action).cmp(&(&b.tenant, &b.client, &b.action)))
    });
    out
}

impl Aggregate {
    pub fn new(max_tenants: usize) -> Self {
        Self {
            max_tenants,
            totals: [0; OUTCOMES],
            current: [0; OUTCOMES],
            current_latency: Histogram::default(),
            recent_latency: VecDeque::new(),
            history: VecDeque::new(),
            tenants: HashMap::new(),
            other: TenantTrack::default(),
            current_requests: Vec::new(),
            current_denials: Vec::new(),
            heavy: VecDeque::new(),
        }
    }

    pub fn absorb(&mut self, d: Drained) {
        add_into(&mut self.totals, &d.outcomes);
        add_into(&mut self.current, &d.outcomes);
        self.current_latency.add(&d.latency);
        for t in d.tenants {
            if let Some(track) = self.tenants.get_mut(&t.name) {
                track.add(&t.outcomes);
            } else if self.tenants.len() < self.max_tenants {
                // A newcomer's earlier seconds are zero: align its ring with the others'.
                let mut track = TenantTrack {
                    recent: VecDeque::from(vec![[0; OUTCOMES]; self.other.recent.len()]),
                    ..TenantTrack::default()
                };
                track.add(&t.outcomes);
                self.tenants.insert(t.name, track);
            } else {
                self.other.add(&t.outcomes);
            }
        }
        self.other.add(&d.other);
        self.current_requests.extend(d.requests);
        self.current_denials.extend(d.denials);
    }

    pub fn close_second(&mut self, unix_seconds: u64, gauges: Gauges) {
        let latency = std::mem::take(&mut self.current_latency);
        self.history.push_back(Second {
            unix_seconds,
            outcomes: std::mem::take(&mut self.current),
            p50_micros: latency.quantile(0.5),
            p99_micros: latency.quantile(0.99),
            gauges,
        });
        if self.history.len() > HISTORY_SECONDS {
            self.history.pop_front();
        }
        self.recent_latency.push_back(latency);
        if self.recent_latency.len() > LATENCY_SECONDS {
            self.recent_latency.pop_front();
        }
        for t in self.tenants.values_mut() {
            t.close();
        }
        self.other.close();
        // Idle rows make room for tenants that are active now.
        self.tenants.retain(|_, t| t.idle < TENANT_IDLE_SECONDS);
        let mut requests = merge(std::mem::take(&mut self.current_requests).iter());
        let mut denials = merge(std::mem::take(&mut self.current_denials).iter());
        requests.truncate(heavy::K);
        denials.truncate(heavy::K);
        self.heavy.push_back((requests, denials));
        if self.heavy.len() > RECENT_SECONDS {
            self.heavy.pop_front();
        }
    }
}
