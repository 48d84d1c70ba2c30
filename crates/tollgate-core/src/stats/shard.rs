//! One shard of the decision-path counters. Each thread records into the shard it was given on
//! first use, under that shard's own lock, so threads rarely meet on a lock and a record's work is
//! fixed: a few adds, one small-map lookup, and a scan of a fixed-size sketch.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::heavy::Sketch;
use super::histogram::Histogram;
use super::{DecisionOutcome, OUTCOMES};
use crate::limit::{Limit, RateKey};

/// Distinct tenants one shard counts by name within one sampling interval; the rest of that
/// interval's tenants are counted together as "other".
pub const SHARD_TENANTS: usize = 256;

/// Counts of one tenant since the last drain.
pub struct TenantCounts {
    pub name: String,
    pub outcomes: [u64; OUTCOMES],
}

#[derive(Default)]
pub struct Shard {
    pub outcomes: [u64; OUTCOMES],
    pub latency: Histogram,
    pub tenants: hashbrown::HashMap<u64, TenantCounts, foldhash::fast::FixedState>,
    /// Tenants past [`SHARD_TENANTS`] (or whose hash collides with another's).
    pub other: [u64; OUTCOMES],
    pub requests: Sketch,
    pub denials: Sketch,
}

/// What one shard counted since the last drain.
pub struct Drained {
    pub outcomes: [u64; OUTCOMES],
    pub latency: Histogram,
    pub tenants: Vec<TenantCounts>,
    pub other: [u64; OUTCOMES],
    pub requests: Vec<super::heavy::Counter>,
    pub denials: Vec<super::heavy::Counter>,
}

/// Pads a shard to its own cache lines so neighbouring shards' writes do not contend.
#[repr(align(128))]
#[derive(Default)]
pub struct Padded<T>(pub T);

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_SLOT: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// This thread's shard among `n` (a power of two).
pub fn shard_index(n: usize) -> usize {
    THREAD_SLOT.with(|s| *s) & (n - 1)
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        tenant_hash: u64,
        key_hash: u64,
        key: RateKey<'_>,
        outcome: DecisionOutcome,
        limit: Option<Limit>,
        micros: u64,
    ) {
        let o = outcome as usize;
        self.outcomes[o] += 1;
        self.latency.record(micros);
        let room = self.tenants.len() < SHARD_TENANTS;
        match self.tenants.get_mut(&tenant_hash) {
            Some(t) if t.name == key.tenant => t.outcomes[o] += 1,
            Some(_) => self.other[o] += 1,
            None if room => {
                let mut outcomes = [0; OUTCOMES];
                outcomes[o] = 1;
                self.tenants.insert(
                    tenant_hash,
                    TenantCounts {
                        name: key.tenant.to_owned(),
                        outcomes,
                    },
                );
            }
            None => self.other[o] += 1,
        }
        // Shed requests never reached a limit; the sketches rank keys by decisions made.
        if outcome != DecisionOutcome::Shed {
            self.requests.record(key_hash, key, limit);
        }
        if outcome == DecisionOutcome::Denied {
            self.denials.record(key_hash, key, limit);
        }
    }

    /// Takes the counts since the last drain. Tenants idle for a whole interval are forgotten;
    /// busy ones keep their entry (and its name's allocation) for the next.
    pub fn drain(&mut self) -> Drained {
        let mut tenants = Vec::new();
        self.tenants.retain(|_, t| {
            if t.outcomes.iter().all(|&c| c == 0) {
                return false;
            }
            tenants.push(TenantCounts {
                name: t.name.clone(),
                outcomes: std::mem::take(&mut t.outcomes),
            });
            true
        });
        let latency = self.latency.clone();
        self.latency.clear();
        Drained {
            outcomes: std::mem::take(&mut self.outcomes),
            latency,
            tenants,
            other: std::mem::take(&mut self.other),
            requests: self.requests.drain(),
            denials: self.denials.drain(),
        }
    }
}
