//! Policies: the limits that apply to one (tenant, client, action) key, each with its algorithm,
//! and the one store operation that decides under all of them at once.
//!
//! The semantics (formulas per algorithm, how several limits combine, shadow limits, report and
//! refund, which state survives a configuration change) are written down once in the README's
//! "Policies" section; the memory store and the Redis script implement them literally and a
//! conformance suite holds them to a reference model.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::clock::Micros;
use crate::limit::{Limit, RateKey};
use crate::store::KeyBounds;

/// Most limits one key may carry.
pub const MAX_LIMITS_PER_KEY: usize = 8;

/// Calendar periods a fixed window can be aligned to (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Calendar {
    /// Midnight to midnight.
    Day,
    /// Monday 00:00 to the next Monday 00:00 (ISO weeks).
    Week,
    /// The 1st 00:00 to the next month's 1st 00:00.
    Month,
}

/// How one limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// The exact sliding-window log (the default).
    SlidingLog,
    /// Generic cell rate algorithm: `max_requests` per window, up to `burst` at once.
    Gcra { burst: u64 },
    /// Two epoch-aligned buckets weighted by overlap; O(1) state, approximate.
    SlidingWindowCounter,
    /// Epoch-aligned buckets of the window's length, or calendar periods.
    FixedWindow { calendar: Option<Calendar> },
}

impl Algorithm {
    /// The name used in configuration, responses and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::SlidingLog => "sliding_log",
            Algorithm::Gcra { .. } => "gcra",
            Algorithm::SlidingWindowCounter => "sliding_window_counter",
            Algorithm::FixedWindow { .. } => "fixed_window",
        }
    }
}

/// One limit of a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyLimit {
    /// `max_requests` and the window (for calendar windows: the longest period, used only for
    /// validation; the store computes the current period).
    pub limit: Limit,
    pub algorithm: Algorithm,
    /// Decide and count, but never deny (a would-be denial consumes nothing on this limit).
    pub shadow: bool,
    /// Operator's label, reported in responses and metrics.
    pub name: Option<Arc<str>>,
}

impl PolicyLimit {
    /// The seed's limit: an exact sliding-window log, not shadowed, unnamed.
    pub fn sliding_log(limit: Limit) -> Self {
        Self {
            limit,
            algorithm: Algorithm::SlidingLog,
            shadow: false,
            name: None,
        }
    }

    /// Requests that fit at once: `burst` for GCRA, `max_requests` otherwise.
    pub fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra { burst } => burst,
            _ => self.limit.max_requests,
        }
    }
}

/// The limits of one key (1..=[`MAX_LIMITS_PER_KEY`]), in the order the operator gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub limits: Arc<[PolicyLimit]>,
}

impl Policy {
    /// A policy of the seed's one sliding-window limit.
    pub fn single(limit: Limit) -> Self {
        Self {
            limits: Arc::from([PolicyLimit::sliding_log(limit)]),
        }
    }
}

/// What a store call does to every limit of every item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Check all limits; consume on all of them only if every (non-shadow) limit allows.
    Consume,
    /// Read the state; consume nothing.
    Status,
    /// Consume the cost without checking (it may go over the limit).
    Report,
    /// Give back up to the cost of what the key consumed inside its current window.
    Refund,
}

/// One key and its policy in a store call.
#[derive(Debug, Clone, Copy)]
pub struct PolicyItem<'a> {
    pub key: RateKey<'a>,
    pub policy: &'a Policy,
    pub cost: u64,
    /// The tenant's bounds on creating new keys (consuming ops only).
    pub bounds: KeyBounds,
    /// The service runs with `--shadow`: every limit of this item is a shadow limit.
    pub shadow_all: bool,
}

impl PolicyItem<'_> {
    /// Whether limit `i` of this item is a shadow limit.
    pub fn is_shadow(&self, i: usize) -> bool {
        self.shadow_all || self.policy.limits[i].shadow
    }
}

/// The state of one limit after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitVerdict {
    /// This limit alone would allow the call (always true for report and refund).
    pub allowed: bool,
    /// Requests (cost units) still available now.
    pub remaining: u64,
    /// When the limit is fully available again (µs).
    pub reset_at: Micros,
    /// When a request of the asked cost would next fit this limit; `None` when it fits now.
    pub retry_at: Option<Micros>,
}

/// The answer for one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemVerdict {
    /// Every non-shadow limit of this item allowed.
    pub allowed: bool,
    /// One entry per limit of the item's policy, in policy order.
    pub limits: SmallVec<[LimitVerdict; 2]>,
    /// Index of the first shadow limit that would have denied, when one did.
    pub shadow_denied: Option<usize>,
}

impl ItemVerdict {
    /// The limit the answer reports: the first non-shadow limit that denied, else the one with the
    /// fewest requests remaining (ties: the first).
    pub fn reported(&self, item: &PolicyItem<'_>) -> usize {
        if let Some(i) =
            (0..self.limits.len()).find(|&i| !self.limits[i].allowed && !item.is_shadow(i))
        {
            return i;
        }
        let mut best = 0;
        for (i, l) in self.limits.iter().enumerate() {
            if l.remaining < self.limits[best].remaining {
                best = i;
            }
        }
        best
    }
}

/// The answer for a whole store call: items are decided together, all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVerdict {
    /// Every item allowed (consume); then every item consumed, else none did.
    pub allowed: bool,
    /// The store's clock at the decision.
    pub now: Micros,
    pub items: SmallVec<[ItemVerdict; 1]>,
}
