//! The DistributedRateLimiter's parts and rules: the configuration, store and load manager, how a
//! key's limit is resolved and a cost validated. Decisions go through [`crate::engine::Engine`],
//! the one API the front ends call.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Change, ConfigError, ConfigManager, Snapshot};
use crate::limit::{InvalidArgument, Limit, LimitSource, RateKey};
use crate::load::{LoadManager, Shed};
use crate::policy::{ItemVerdict, Policy};
use crate::stats::Stats;
use crate::store::{KeyBounds, Store, StoreError};
use crate::window::Verdict;

/// What to answer when the store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreErrorPolicy {
    /// Fail open: allow the request and say so (`status: fail_open`).
    #[default]
    Allow,
    /// Fail closed: answer `store_unavailable`.
    Deny,
}

/// What to do with a decision or status call for a tenant that has no configuration entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownTenantPolicy {
    /// Decide it like any other (with the request's own limit).
    #[default]
    Allow,
    /// Refuse it with [`LimitError::UnknownTenant`] before any state is read or created, so
    /// invented tenant ids cost the store nothing.
    Deny,
}

/// One decision request, borrowed from the caller's parsed input.
#[derive(Debug, Clone, Copy)]
pub struct DecisionRequest<'a> {
    pub key: RateKey<'a>,
    /// The limit the caller sent, used when no configured limit applies.
    pub requested: Option<Limit>,
    pub cost: u64,
}

/// How a decision was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The store decided; see `verdict.allowed`.
    Decided(Verdict),
    /// The store was unreachable and policy is `allow`: admitted without counting.
    FailOpen { now: crate::clock::Micros },
}

/// A decision and what it was made under.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The reported limit's figures (see [`Decision::reported`]).
    pub outcome: Outcome,
    /// The reported limit's `max_requests` and window.
    pub limit: Limit,
    pub source: LimitSource,
    /// Time spent queued in the load manager.
    pub waited: Duration,
    /// The policy decided under.
    pub policy: Policy,
    /// Every limit's answer; `None` when failed open.
    pub verdict: Option<ItemVerdict>,
    /// Index in `policy` of the limit the answer reports: the first non-shadow limit that denied,
    /// else the one with the fewest requests remaining.
    pub reported: usize,
    /// Every limit was a shadow limit (`--shadow`).
    pub shadow_all: bool,
}

impl Decision {
    /// Whether limit `i` counted as a shadow limit.
    pub fn is_shadow(&self, i: usize) -> bool {
        self.shadow_all || self.policy.limits.get(i).is_some_and(|l| l.shadow)
    }
}

/// Why no decision was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{0}")]
    Invalid(#[from] InvalidArgument),
    #[error("no limit is configured for this tenant, client and action, and the request gave none; send max_requests and window_duration_seconds or configure a limit")]
    NoLimit,
    #[error("{0}")]
    Shed(#[from] Shed),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("this tenant has no configuration and the service refuses unconfigured tenants; ask the operator to configure it")]
    UnknownTenant,
}

/// The orchestrator; cheap to share behind an `Arc`.
pub struct Limiter {
    config: Arc<ConfigManager>,
    store: Arc<dyn Store>,
    load: LoadManager,
    policy: StoreErrorPolicy,
    unknown_tenants: UnknownTenantPolicy,
    /// Live statistics for the dashboard; `None` collects nothing.
    stats: Option<Arc<Stats>>,
    shadow: bool,
}

impl Limiter {
    pub fn new(
        config: Arc<ConfigManager>,
        store: Arc<dyn Store>,
        policy: StoreErrorPolicy,
    ) -> Self {
        let load = LoadManager::new(&config.snapshot().global);
        // Every snapshot put in force reconfigures admission as it is published (under the
        // configuration's writer lock), including one adopted from another instance by a change
        // that then failed: admission never runs on settings that are no longer in force.
        let follower = load.clone();
        config.on_change(move |snap| follower.configure(&snap.global));
        Self {
            config,
            store,
            load,
            policy,
            unknown_tenants: UnknownTenantPolicy::Allow,
            stats: None,
            shadow: false,
        }
    }

    /// Whether every limit is in shadow mode (`--shadow`).
    pub fn shadow(&self) -> bool {
        self.shadow
    }

    /// Puts every limit in shadow mode (`--shadow`): decide and count, never deny.
    pub fn with_shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Records every decision into `stats` (see [`crate::stats`]).
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Self {
        self.stats = Some(stats);
        self
    }

    pub fn stats(&self) -> Option<&Arc<Stats>> {
        self.stats.as_ref()
    }

    /// Sets what happens to calls for tenants without configuration (default: allowed).
    pub fn with_unknown_tenants(mut self, policy: UnknownTenantPolicy) -> Self {
        self.unknown_tenants = policy;
        self
    }

    pub fn config(&self) -> &ConfigManager {
        &self.config
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    pub fn load(&self) -> &LoadManager {
        &self.load
    }

    /// What decisions answer when the store cannot be reached.
    pub fn store_error_policy(&self) -> StoreErrorPolicy {
        self.policy
    }

    /// Resolves the limit for `key`, the tenant's weight and its bounds on state, and checks the
    /// ids, the unknown-tenant policy and a request-supplied window against the tenant's cap; no
    /// I/O, one tenant lookup.
    pub(crate) fn resolve(
        &self,
        key: RateKey<'_>,
        requested: Option<Limit>,
    ) -> Result<(Policy, LimitSource, u32, KeyBounds), LimitError> {
        key.validate()?;
        let snap = self.config.snapshot();
        let g = &snap.global;
        let tenant = snap.tenants.get(key.tenant).map(|t| &**t);
        // Under `Deny`, a tenant with no configuration entry is refused before anything else.
        if tenant.is_none() && self.unknown_tenants == UnknownTenantPolicy::Deny {
            return Err(LimitError::UnknownTenant);
        }
        let (policy, source) = Snapshot::resolve_in(tenant, key.client, key.action, requested)
            .ok_or(LimitError::NoLimit)?;
        let (weight, bounds, max_window) = match tenant {
            Some(t) => (
                t.weight,
                KeyBounds {
                    max_keys: t.max_keys.unwrap_or(g.max_keys_per_tenant),
                    new_keys_per_second: t.new_keys_per_second.unwrap_or(g.new_keys_per_second),
                    pooled: false,
                },
                t.max_request_window_seconds
                    .unwrap_or(g.max_request_window_seconds),
            ),
            None => (
                1,
                KeyBounds {
                    max_keys: g.max_keys_per_tenant,
                    new_keys_per_second: g.new_keys_per_second,
                    pooled: true,
                },
                g.max_request_window_seconds,
            ),
        };
        // Configured limits are the operator's; only a caller's own window is capped, since it
        // decides how long the keys it creates live.
        if let (LimitSource::Request, Some(limit)) = (source, requested) {
            if limit.window_micros > max_window.saturating_mul(1_000_000) {
                return Err(InvalidArgument(format!(
                    "window_duration_seconds {} is longer than the {max_window} seconds allowed for limits sent with a request for tenant '{}' (max_request_window_seconds); send a shorter window or configure a limit",
                    limit.window_seconds(),
                    key.tenant
                ))
                .into());
            }
        }
        Ok((policy, source, weight, bounds))
    }

    /// The cost must fit every limit that can deny: `max_requests`, or a GCRA limit's burst.
    pub(crate) fn validate_cost(&self, cost: u64, policy: &Policy) -> Result<(), InvalidArgument> {
        let cap = policy
            .limits
            .iter()
            .filter(|l| !(self.shadow || l.shadow))
            .map(|l| l.capacity())
            .min();
        // With every limit in shadow, a cost still has to be one that some limit could admit.
        let cap = cap.or_else(|| policy.limits.iter().map(|l| l.capacity()).max());
        match cap {
            Some(c) if (1..=c).contains(&cost) => Ok(()),
            Some(c) if policy.limits.len() == 1 => Err(InvalidArgument(format!(
                "cost must be an integer from 1 to max_requests ({c}), got {cost}"
            ))),
            c => Err(InvalidArgument(format!(
                "cost must be an integer from 1 to {} (the smallest max_requests, or burst for gcra, of the limits that apply), got {cost}",
                c.unwrap_or(0)
            ))),
        }
    }

    /// Applies a configuration change; new global settings take effect as it is published.
    pub async fn update_config(&self, change: Change) -> Result<Arc<Snapshot>, ConfigError> {
        self.config.apply(change).await
    }

    /// Brings the configuration in force into agreement with the stored one (see
    /// [`ConfigManager::refresh`]); true when the configuration in force changed.
    pub async fn refresh_config(&self) -> Result<bool, ConfigError> {
        self.config.refresh().await
    }
}
