//! Where logs live. A store makes one atomic check-and-consume per decision; the limiter above it
//! never reads then writes, so concurrent callers (or instances) cannot both take the last slot.

pub mod breaker;
pub mod memory;
pub mod redis;

use async_trait::async_trait;

use crate::limit::{Limit, RateKey};
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

    /// Reports the key's usage under `limit` without consuming anything.
    async fn status(&self, key: RateKey<'_>, limit: Limit) -> Result<Verdict, StoreError>;

    /// Whether the backend is reachable right now (cheap; no I/O for the memory store).
    fn is_healthy(&self) -> bool {
        true
    }

    /// Keys currently tracked, where the store knows it cheaply.
    fn tracked_keys(&self) -> Option<u64> {
        None
    }

    /// Short name for logs and health output.
    fn kind(&self) -> &'static str;
}
