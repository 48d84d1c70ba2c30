//! The DistributedRateLimiter: validates a request, resolves its limit from the configuration,
//! waits for admission from the load manager, and asks the store for the decision.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Change, ConfigError, ConfigManager, Snapshot};
use crate::limit::{validate_cost, InvalidArgument, Limit, LimitSource, RateKey};
use crate::load::{LoadManager, Shed};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub limit: Limit,
    pub source: LimitSource,
    /// Time spent queued in the load manager.
    pub waited: Duration,
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
        }
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
    ) -> Result<(Limit, LimitSource, u32, KeyBounds), LimitError> {
        key.validate()?;
        let snap = self.config.snapshot();
        let g = &snap.global;
        let tenant = snap.tenants.get(key.tenant).map(|t| &**t);
        // Under `Deny`, a tenant with no configuration entry is refused before anything else.
        if tenant.is_none() && self.unknown_tenants == UnknownTenantPolicy::Deny {
            return Err(LimitError::UnknownTenant);
        }
        let (limit, source) = Snapshot::resolve_in(tenant, key.client, key.action, requested)
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
        if source == LimitSource::Request
            && limit.window_micros > max_window.saturating_mul(1_000_000)
        {
            return Err(InvalidArgument(format!(
                "window_duration_seconds {} is longer than the {max_window} seconds allowed for limits sent with a request for tenant '{}' (max_request_window_seconds); send a shorter window or configure a limit",
                limit.window_seconds(),
                key.tenant
            ))
            .into());
        }
        Ok((limit, source, weight, bounds))
    }

    /// The decision path: validate, resolve, admit, decide.
    pub async fn check_and_consume(
        &self,
        req: DecisionRequest<'_>,
    ) -> Result<Decision, LimitError> {
        let (limit, source, weight, bounds) = self.resolve(req.key, req.requested)?;
        validate_cost(req.cost, &limit)?;
        let permit = self.load.acquire(req.key.tenant, weight).await?;
        let result = self
            .store
            .check_and_consume_bounded(req.key, limit, req.cost, bounds)
            .await;
        let waited = permit.waited;
        drop(permit);
        let outcome = match result {
            Ok(v) => Outcome::Decided(v),
            Err(e) if e.is_transient() && self.policy == StoreErrorPolicy::Allow => {
                Outcome::FailOpen {
                    now: crate::clock::Clock::now_micros(&crate::clock::SystemClock),
                }
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Decision {
            outcome,
            limit,
            source,
            waited,
        })
    }

    /// Usage of a key under its effective limit, consuming nothing.
    pub async fn status(
        &self,
        key: RateKey<'_>,
        requested: Option<Limit>,
    ) -> Result<(Verdict, Limit, LimitSource), LimitError> {
        let (limit, source, _, _) = self.resolve(key, requested)?;
        let v = self.store.status(key, limit).await?;
        Ok((v, limit, source))
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
