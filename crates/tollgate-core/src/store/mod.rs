//! Where logs live. A store makes one atomic check-and-consume per decision; the limiter above it
//! never reads then writes, so concurrent callers (or instances) cannot both take the last slot.

pub mod breaker;
pub mod creation;
pub mod memory;
pub mod redis;
mod redis_batch;
mod redis_script_call;

use async_trait::async_trait;

use crate::limit::{Limit, RateKey};
use crate::policy::{Algorithm, ItemVerdict, LimitVerdict, Op, PolicyItem, PolicyVerdict};
use crate::window::Verdict;

pub use memory::MemoryStore;
pub use redis::{RedisStore, RedisStoreOptions};

/// Why a store could not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store tracks as many keys as it is allowed to; new keys are refused until some expire.
    #[error("the store already tracks its maximum of {max} keys; new keys are refused until idle ones expire (raise --max-keys)")]
    KeyBudgetExhausted { max: usize },
    /// The backend could not be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered, but the key's stored state was not a valid log (wrong type, truncated,
    /// edited, an older format). The store has reset the key; only this decision is affected.
    #[error("the stored state of key {key} was corrupt ({reason}) and has been reset")]
    Corrupt { key: String, reason: String },
    /// One tenant (or the pool unconfigured tenants share) reached its own bound on new keys;
    /// other tenants are unaffected.
    #[error("{0}")]
    TenantKeyBudget(KeyRefusal),
    /// The store cannot do what the call asks (a policy feature it does not implement).
    #[error("this store does not support {0}")]
    Unsupported(String),
}

/// The bounds on one tenant's state that a consuming call is made under, resolved by the limiter
/// from the configuration snapshot it already reads for the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyBounds {
    /// Keys the tenant may have tracked (memory store; capped by the store at its share of
    /// `--max-keys`).
    pub max_keys: u64,
    /// New keys the tenant may create per second; burst = one second's worth.
    pub new_keys_per_second: u64,
    /// The tenant has no configuration: its new keys also count against the one pool all
    /// unconfigured tenants share (same budget and rate as one tenant).
    pub pooled: bool,
}

impl KeyBounds {
    /// No per-tenant bound beyond the store's own (`check_and_consume` without bounds).
    pub const UNBOUNDED: KeyBounds = KeyBounds {
        max_keys: u64::MAX,
        new_keys_per_second: u64::MAX,
        pooled: false,
    };
}

/// Which bound refused a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBound {
    /// The tenant tracks `max` keys already.
    TenantKeys { max: u64 },
    /// Unconfigured tenants together track `max` keys already.
    PoolKeys { max: u64 },
    /// The tenant created its `per_second` new keys for now.
    TenantRate { per_second: u64 },
    /// Unconfigured tenants together created their `per_second` new keys for now.
    PoolRate { per_second: u64 },
}

impl KeyBound {
    /// Short name for metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyBound::TenantKeys { .. } => "tenant_keys",
            KeyBound::PoolKeys { .. } => "pool_keys",
            KeyBound::TenantRate { .. } => "tenant_rate",
            KeyBound::PoolRate { .. } => "pool_rate",
        }
    }
}

/// A new key refused by a per-tenant bound; the message names the tenant and its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRefusal {
    pub tenant: String,
    pub bound: KeyBound,
}

impl std::fmt::Display for KeyRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.tenant;
        match self.bound {
            KeyBound::TenantKeys { max } => write!(
                f,
                "tenant '{t}' already tracks its budget of {max} keys (max_keys_per_tenant, or the tenant's max_keys; at most a quarter of --max-keys); new clients and actions of this tenant are refused until idle ones expire, existing ones are unaffected"
            ),
            KeyBound::PoolKeys { max } => write!(
                f,
                "tenants without a configuration together already track their shared budget of {max} keys (max_keys_per_tenant; at most a quarter of --max-keys); new keys of tenant '{t}' are refused until idle ones expire; configure the tenant to give it its own budget"
            ),
            KeyBound::TenantRate { per_second } => write!(
                f,
                "tenant '{t}' is creating new keys faster than its {per_second} per second (new_keys_per_second); existing keys are unaffected; retry after the Retry-After delay"
            ),
            KeyBound::PoolRate { per_second } => write!(
                f,
                "tenants without a configuration together are creating new keys faster than their shared {per_second} per second (new_keys_per_second); new keys of tenant '{t}' are refused for now; retry after the Retry-After delay, or configure the tenant"
            ),
        }
    }
}

impl StoreError {
    /// Transient errors are the ones the fail-open/closed policy applies to: an outage, or a
    /// corrupt key that the store has already repaired (the next decision on it succeeds). The
    /// rest are answers.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::Corrupt { .. }
        )
    }
}

/// A backend for sliding-window logs.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Consumes `cost` under `limit` for `key` if it fits, atomically, all or nothing.
    async fn check_and_consume(
        &self,
        key: RateKey<'_>,
        limit: Limit,
        cost: u64,
    ) -> Result<Verdict, StoreError>;

    /// `check_and_consume` under the tenant's bounds on new keys: an existing key is decided as
    /// ever; a new one is refused with [`StoreError::TenantKeyBudget`] past a bound. The limiter
    /// calls this. The default ignores the bounds: stores that create keys override it, and so
    /// must every wrapper around a store.
    async fn check_and_consume_bounded(
        &self,
        key: RateKey<'_>,
        limit: Limit,
        cost: u64,
        bounds: KeyBounds,
    ) -> Result<Verdict, StoreError> {
        let _ = bounds;
        self.check_and_consume(key, limit, cost).await
    }

    /// Reports the key's usage under `limit` without consuming anything.
    async fn status(&self, key: RateKey<'_>, limit: Limit) -> Result<Verdict, StoreError>;

    /// Applies `op` to every item under its whole policy, atomically: for `Consume`, either every
    /// item's non-shadow limits allow and all of them consume, or nothing is consumed (see the
    /// README's "Policies"). On Redis Cluster, items whose keys live in different slots cannot
    /// share a script; the store then decides them one by one and never over-admits.
    ///
    /// The default covers only what the seed had (one item, one sliding-log limit, consume or
    /// status) by delegating to the methods above; stores override it for the rest, and every
    /// wrapper around a store must forward it.
    async fn apply(&self, op: Op, items: &[PolicyItem<'_>]) -> Result<PolicyVerdict, StoreError> {
        let [item] = items else {
            return Err(StoreError::Unsupported("several keys in one call".into()));
        };
        let [pl] = &*item.policy.limits else {
            return Err(StoreError::Unsupported("several limits on one key".into()));
        };
        if pl.algorithm != Algorithm::SlidingLog || item.is_shadow(0) {
            return Err(StoreError::Unsupported(format!(
                "algorithm {} or shadow limits",
                pl.algorithm.as_str()
            )));
        }
        let v = match op {
            Op::Consume => {
                self.check_and_consume_bounded(item.key, pl.limit, item.cost, item.bounds)
                    .await?
            }
            Op::Status => self.status(item.key, pl.limit).await?,
            Op::Report | Op::Refund => {
                return Err(StoreError::Unsupported("report and refund".into()))
            }
        };
        let lv = LimitVerdict {
            allowed: v.allowed,
            remaining: v.remaining(&pl.limit),
            reset_at: v.reset_at,
            retry_at: v.retry_at,
        };
        Ok(PolicyVerdict {
            allowed: v.allowed,
            now: v.now,
            items: smallvec::smallvec![ItemVerdict {
                allowed: v.allowed,
                limits: smallvec::smallvec![lv],
                shadow_denied: None,
            }],
        })
    }

    /// Whether the backend is reachable right now (cheap; no I/O for the memory store).
    fn is_healthy(&self) -> bool {
        true
    }

    /// Keys currently tracked, where the store knows it cheaply.
    fn tracked_keys(&self) -> Option<u64> {
        None
    }

    /// Calls `f` with each tenant's tracked keys, where the store counts them (memory store).
    fn for_each_tenant_keys(&self, f: &mut dyn FnMut(&str, u64)) {
        let _ = f;
    }

    /// Short name for logs and health output.
    fn kind(&self) -> &'static str;
}
