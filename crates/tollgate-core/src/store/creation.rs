//! How fast a tenant may create new keys: a token bucket per tenant, and one shared by every
//! tenant without a configuration (the pool), each holding one second's worth of tokens.
//!
//! Why a rate and not only a count: Redis keys cannot be counted per tenant without a write per
//! decision, but every key expires within its window, so a tenant creating at most `r` keys per
//! second with windows of at most `w` seconds holds at most `r * w + r` keys (per instance: each
//! instance keeps its own buckets). The memory store counts keys exactly and uses the rate too.

use std::collections::HashMap;
use std::hash::BuildHasher;

use parking_lot::Mutex;

use super::{KeyBound, KeyBounds};
use crate::clock::Micros;

/// A token bucket whose capacity is one second's worth of its rate. The rate is passed to each
/// call rather than stored, so a runtime change of the configured rate applies at once.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Micros,
}

impl Bucket {
    /// A full bucket.
    pub fn full(rate: u64, now: Micros) -> Self {
        Self {
            tokens: rate as f64,
            at: now,
        }
    }

    fn refill(&mut self, now: Micros, rate: u64) {
        let cap = rate as f64;
        let elapsed = now.saturating_sub(self.at) as f64;
        self.tokens = (self.tokens + elapsed * cap / 1_000_000.0).min(cap);
        self.at = self.at.max(now);
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Micros, rate: u64) -> bool {
        self.refill(now, rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Returns a token taken for a key that turned out to exist.
    pub fn give_back(&mut self, rate: u64) {
        self.tokens = (self.tokens + 1.0).min(rate as f64);
    }

    /// Whether the bucket has certainly refilled by `now`: one second after its last use it is
    /// full at any rate, so forgetting it then changes nothing.
    pub fn is_idle(&self, now: Micros) -> bool {
        now >= self.at.saturating_add(1_000_000)
    }
}

/// Whether `bounds` limit the creation rate at all.
fn rated(bounds: &KeyBounds) -> bool {
    bounds.new_keys_per_second != u64::MAX
}

const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    buckets: HashMap<Box<str>, Bucket, foldhash::fast::RandomState>,
    /// Size after the last clean-up; the next runs when the map has doubled since.
    cleaned_at: usize,
}

/// Tokens taken for one consuming call, to give back if the key existed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct Reservation {
    tenant: bool,
    pool: bool,
}

/// The per-tenant and pool buckets of one process (the Redis store's; the memory store keeps its
/// buckets beside its per-tenant key counts).
pub struct CreationLimiter {
    hasher: foldhash::fast::RandomState,
    shards: Box<[Mutex<Shard>]>,
    pool: Mutex<Option<Bucket>>,
}

impl Default for CreationLimiter {
    fn default() -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            pool: Mutex::new(None),
        }
    }
}

impl CreationLimiter {
    fn shard(&self, tenant: &str) -> &Mutex<Shard> {
        &self.shards[self.hasher.hash_one(tenant) as usize % SHARDS]
    }

    /// Takes a creation token for `tenant` (and the pool's, for an unconfigured tenant): both or
    /// neither, at time `now`. `Err` names the bound that has none left.
    pub fn reserve(
        &self,
        tenant: &str,
        bounds: KeyBounds,
        now: Micros,
    ) -> Result<Reservation, KeyBound> {
        if !rated(&bounds) {
            return Ok(Reservation::default());
        }
        let rate = bounds.new_keys_per_second;
        // The pool first: a flood of distinct tenant ids is refused here before it adds an entry.
        if bounds.pooled {
            let mut pool = self.pool.lock();
            let b = pool.get_or_insert_with(|| Bucket::full(rate, now));
            if !b.try_take(now, rate) {
                return Err(KeyBound::PoolRate { per_second: rate });
            }
        }
        let took = {
            let mut shard = self.shard(tenant).lock();
            let took = match shard.buckets.get_mut(tenant) {
                Some(b) => b.try_take(now, rate),
                None => {
                    let mut b = Bucket::full(rate, now);
                    let took = b.try_take(now, rate);
                    shard.buckets.insert(tenant.into(), b);
                    took
                }
            };
            if shard.buckets.len() >= (shard.cleaned_at * 2).max(64) {
                shard.buckets.retain(|_, b| !b.is_idle(now));
                shard.cleaned_at = shard.buckets.len();
            }
            took
        };
        if !took {
            if bounds.pooled {
                if let Some(b) = self.pool.lock().as_mut() {
                    b.give_back(rate);
                }
            }
            return Err(KeyBound::TenantRate { per_second: rate });
        }
        Ok(Reservation {
            tenant: true,
            pool: bounds.pooled,
        })
    }

    /// Gives back what `reserve` took, for a key that already existed.
    pub fn give_back(&self, tenant: &str, bounds: KeyBounds, r: Reservation) {
        let rate = bounds.new_keys_per_second;
        if r.tenant {
            if let Some(b) = self.shard(tenant).lock().buckets.get_mut(tenant) {
                b.give_back(rate);
            }
        }
        if r.pool {
            if let Some(b) = self.pool.lock().as_mut() {
                b.give_back(rate);
            }
        }
    }

    /// Tenants with a bucket in memory (for tests of the clean-up).
    pub fn tracked_tenants(&self) -> usize {
        self.shards.iter().map(|s| s.lock().buckets.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(rate: u64, pooled: bool) -> KeyBounds {
        KeyBounds {
            max_keys: 100,
            new_keys_per_second: rate,
            pooled,
        }
    }

    #[test]
    fn bucket_bursts_one_second_then_refills_at_the_rate() {
        let t0 = 5_000_000;
        let c = CreationLimiter::default();
        let b = bounds(10, false);
        for _ in 0..10 {
            assert!(c.reserve("t", b, t0).is_ok());
        }
        assert_eq!(
            c.reserve("t", b, t0),
            Err(KeyBound::TenantRate { per_second: 10 })
        );
        // Another tenant has its own bucket.
        assert!(c.reserve("u", b, t0).is_ok());
        assert!(c.reserve("t", b, t0 + 99_999).is_err());
        assert!(c.reserve("t", b, t0 + 100_000).is_ok());
        assert!(c.reserve("t", b, t0 + 100_000).is_err());
    }

    #[test]
    fn given_back_tokens_are_reusable_and_pool_is_shared() {
        let c = CreationLimiter::default();
        let b = bounds(2, true);
        let r = c.reserve("a", b, 0).unwrap();
        c.give_back("a", b, r);
        assert!(c.reserve("a", b, 0).is_ok());
        assert!(c.reserve("b", b, 0).is_ok());
        // The pool's two tokens are spent, whoever spent them.
        assert_eq!(
            c.reserve("c", b, 0),
            Err(KeyBound::PoolRate { per_second: 2 })
        );
        // A refused pooled tenant adds no bucket.
        assert_eq!(c.tracked_tenants(), 2);
    }

    #[test]
    fn idle_buckets_are_forgotten() {
        let c = CreationLimiter::default();
        let b = bounds(1_000_000, false);
        for i in 0..10_000 {
            assert!(c.reserve(&format!("t{i}"), b, 0).is_ok());
        }
        for i in 0..10_000 {
            assert!(c.reserve(&format!("u{i}"), b, 1_000_000).is_ok());
        }
        // The first 10,000 were idle for a second and are gone (clean-up is amortized, so some
        // of the second batch may already be counted but none of the first can remain beyond it).
        assert!(c.tracked_tenants() <= 10_000, "{}", c.tracked_tenants());
    }
}
