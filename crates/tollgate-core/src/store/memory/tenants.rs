//! Per-tenant accounting of the memory store: how many keys each tenant tracks, how many of them
//! count against the pool unconfigured tenants share, and each one's key-creation bucket.
//!
//! Touched only when a key is inserted or swept, never on the decision of an existing key. Lock
//! order: a table shard, then a tenant shard here, then the pool.
//!
//! Which keys are pooled is not stored per key (it would grow every slot): a tenant counts how
//! many of its keys are pooled, and a swept key of a tenant with pooled keys releases one of those
//! first. Totals stay exact; a tenant's configuration changing only moves which of its keys count.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::super::creation::Bucket;
use super::super::{KeyBound, KeyBounds, KeyRefusal, StoreError};
use crate::clock::Micros;

const SHARDS: usize = 16;

/// No tenant (nor the pool) may track more than this fraction of the store's `--max-keys`, so a
/// few floods together cannot fill the process-wide budget.
pub const TENANT_SHARE_DIVISOR: usize = 4;

#[derive(Debug, Default)]
struct TenantState {
    keys: u64,
    /// Keys of this tenant counted in the pool too.
    pooled: u64,
    bucket: Option<Bucket>,
}

#[derive(Default)]
struct Pool {
    keys: u64,
    bucket: Option<Bucket>,
}

type Map = HashMap<Box<[u8]>, TenantState, foldhash::fast::RandomState>;

pub(super) struct Tenants {
    hasher: foldhash::fast::RandomState,
    shards: Box<[Mutex<Map>]>,
    pool: Mutex<Pool>,
    /// The most keys one tenant (or the pool) may track, whatever its configured budget.
    share: u64,
}

/// Takes one token from `bucket` (created full) unless the rate is unbounded.
fn take(bucket: &mut Option<Bucket>, rate: u64, now: Micros) -> bool {
    rate == u64::MAX
        || bucket
            .get_or_insert_with(|| Bucket::full(rate, now))
            .try_take(now, rate)
}

impl Tenants {
    pub(super) fn new(max_keys: usize) -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            pool: Mutex::default(),
            share: (max_keys / TENANT_SHARE_DIVISOR).max(1) as u64,
        }
    }

    fn shard(&self, tenant: &[u8]) -> &Mutex<Map> {
        &self.shards[self.hasher.hash_one(tenant) as usize % SHARDS]
    }

    /// Admits one new key of `tenant` under `bounds` and the process-wide `global` count (capped
    /// at `max_global`), counting it everywhere, or refuses it and changes nothing.
    pub(super) fn admit(
        &self,
        tenant: &str,
        bounds: KeyBounds,
        now: Micros,
        global: &AtomicUsize,
        max_global: usize,
    ) -> Result<(), StoreError> {
        let refuse = |bound| {
            Err(StoreError::TenantKeyBudget(KeyRefusal {
                tenant: tenant.to_string(),
                bound,
            }))
        };
        // Direct, unbounded use of the store (tests, embedding) keeps only `--max-keys`.
        let budget = if bounds.max_keys == u64::MAX {
            u64::MAX
        } else {
            bounds.max_keys.min(self.share)
        };
        let rate = bounds.new_keys_per_second;
        let mut shard = self.shard(tenant.as_bytes()).lock();
        let mut fresh = TenantState::default();
        let state = shard.get_mut(tenant.as_bytes()).unwrap_or(&mut fresh);
        if state.keys >= budget {
            return refuse(KeyBound::TenantKeys { max: budget });
        }
        let mut pool = bounds.pooled.then(|| self.pool.lock());
        if let Some(p) = &pool {
            if p.keys >= budget {
                return refuse(KeyBound::PoolKeys { max: budget });
            }
        }
        if global.fetch_add(1, Ordering::Relaxed) >= max_global {
            global.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::KeyBudgetExhausted { max: max_global });
        }
        // Tokens last: nothing is spent on a key refused for another reason. The pool's first,
        // so a refusal there leaves the tenant's bucket as it was.
        if let Some(p) = &mut pool {
            if !take(&mut p.bucket, rate, now) {
                global.fetch_sub(1, Ordering::Relaxed);
                return refuse(KeyBound::PoolRate { per_second: rate });
            }
        }
        if !take(&mut state.bucket, rate, now) {
            if let Some(p) = &mut pool {
                if let Some(b) = p.bucket.as_mut() {
                    b.give_back(rate);
                }
            }
            // A refused tenant without an entry gets none: a flood of new tenant ids adds nothing.
            global.fetch_sub(1, Ordering::Relaxed);
            return refuse(KeyBound::TenantRate { per_second: rate });
        }
        state.keys += 1;
        if let Some(p) = &mut pool {
            p.keys += 1;
            state.pooled += 1;
        }
        if !shard.contains_key(tenant.as_bytes()) {
            shard.insert(tenant.as_bytes().into(), fresh);
        }
        Ok(())
    }

    /// Uncounts one swept key of `tenant`.
    pub(super) fn release(&self, tenant: &[u8]) {
        let mut shard = self.shard(tenant).lock();
        let Some(state) = shard.get_mut(tenant) else {
            debug_assert!(false, "a swept key's tenant is always counted");
            return;
        };
        state.keys = state.keys.saturating_sub(1);
        if state.pooled > 0 {
            state.pooled -= 1;
            let mut pool = self.pool.lock();
            pool.keys = pool.keys.saturating_sub(1);
        }
    }

    /// Forgets tenants with no keys whose bucket has refilled, so the map holds only tenants with
    /// keys (bounded by the budgets) or recent creations (bounded by the rates).
    pub(super) fn forget_idle(&self, now: Micros) {
        for shard in self.shards.iter() {
            shard
                .lock()
                .retain(|_, s| s.keys > 0 || s.bucket.is_some_and(|b| !b.is_idle(now)));
        }
    }

    /// Calls `f` with each tenant's key count.
    pub(super) fn for_each(&self, f: &mut dyn FnMut(&str, u64)) {
        for shard in self.shards.iter() {
            for (tenant, s) in shard.lock().iter() {
                if s.keys > 0 {
                    f(&String::from_utf8_lossy(tenant), s.keys);
                }
            }
        }
    }

    /// Keys of `tenant`, and keys in the pool.
    pub(super) fn counts(&self, tenant: &str) -> (u64, u64) {
        let keys = self
            .shard(tenant.as_bytes())
            .lock()
            .get(tenant.as_bytes())
            .map_or(0, |s| s.keys);
        (keys, self.pool.lock().keys)
    }

    /// Tenants with an entry (for tests of `forget_idle`).
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}
