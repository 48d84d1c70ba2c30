//! The narrow API the front ends (HTTP, Envoy RLS) call: decide several keys at once, read a key's
//! status, and the service's health. Front ends never reach into the limiter's parts (its
//! configuration snapshot, store or load manager); what they need is here.

use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;

use crate::clock::{Clock, Micros, SystemClock};
use crate::limit::{Limit, LimitSource, RateKey};
use crate::limiter::{LimitError, Limiter, StoreErrorPolicy};
use crate::policy::{ItemVerdict, LimitVerdict, Op, Policy, PolicyItem, PolicyVerdict};
use crate::store::{KeyBounds, StoreError};

/// One key of a decision and what it costs.
#[derive(Debug, Clone, Copy)]
pub struct DecideItem<'a> {
    pub key: RateKey<'a>,
    /// The limit the caller supplies, used when no client or action limit is configured.
    pub fallback: Option<Limit>,
    pub cost: u64,
}

/// The policy an item was decided under, and which level of the hierarchy supplied it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub policy: Policy,
    pub source: LimitSource,
}

/// The answer for one item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemDecision {
    /// `None`: no limit applies to this item; it is not limited and the store was not asked.
    pub resolved: Option<Resolved>,
    /// The store's answer for this item; `None` when not limited or when the decision failed open.
    pub verdict: Option<ItemVerdict>,
}

impl ItemDecision {
    /// The limit the answer reports (the first non-shadow limit that denied, else the one with
    /// the fewest remaining) and its state; `None` when the store did not decide this item.
    pub fn reported(&self) -> Option<(&Limit, &LimitVerdict)> {
        let (r, v) = (self.resolved.as_ref()?, self.verdict.as_ref()?);
        let i = reported_index(v, &r.policy);
        Some((&r.policy.limits.get(i)?.limit, v.limits.get(i)?))
    }
}

/// The answer for a whole call: every limited item allowed and consumed, or none consumed.
#[derive(Debug, Clone, PartialEq)]
pub struct Decisions {
    pub allowed: bool,
    /// The store could not decide and policy is allow: admitted without counting.
    pub fail_open: bool,
    /// The decision's time (the store's clock; the local clock when failing open).
    pub now: Micros,
    /// One per item, in the caller's order.
    pub items: Vec<ItemDecision>,
    /// Time spent queued in the load manager.
    pub waited: Duration,
}

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    limiter: Arc<Limiter>,
}

impl Engine {
    pub fn new(limiter: Arc<Limiter>) -> Self {
        Self { limiter }
    }

    /// Decides every item together: the call is allowed only if every limited item is, and then
    /// every one consumes its cost; otherwise nothing is consumed. Items without a limit are not
    /// limited. Ids are validated and costs checked against each item's limit before anything is
    /// admitted or counted.
    pub async fn decide(&self, items: &[DecideItem<'_>]) -> Result<Decisions, LimitError> {
        let l = &*self.limiter;
        let mut resolved: Vec<Option<Resolved>> = Vec::with_capacity(items.len());
        let mut bounds: SmallVec<[KeyBounds; 4]> = SmallVec::new();
        let mut admission: Option<(&str, u32)> = None;
        for it in items {
            match l.resolve(it.key, it.fallback) {
                Ok((policy, source, weight, b)) => {
                    l.validate_cost(it.cost, &policy)?;
                    admission.get_or_insert((it.key.tenant, weight));
                    bounds.push(b);
                    resolved.push(Some(Resolved { policy, source }));
                }
                Err(LimitError::NoLimit) => resolved.push(None),
                Err(e) => return Err(e),
            }
        }
        let Some((tenant, weight)) = admission else {
            // Nothing is limited: nothing to admit, count or ask the store.
            return Ok(Decisions {
                allowed: true,
                fail_open: false,
                now: SystemClock.now_micros(),
                items: resolved
                    .into_iter()
                    .map(|resolved| ItemDecision {
                        resolved,
                        verdict: None,
                    })
                    .collect(),
                waited: Duration::ZERO,
            });
        };
        let policy_items: Vec<PolicyItem<'_>> = items
            .iter()
            .zip(&resolved)
            .filter_map(|(it, r)| Some((it, r.as_ref()?)))
            .zip(&bounds)
            .map(|((it, r), b)| PolicyItem {
                key: it.key,
                policy: &r.policy,
                cost: it.cost,
                bounds: *b,
                shadow_all: l.shadow(),
            })
            .collect();
        let permit = l.load().acquire(tenant, weight).await?;
        let result = apply_consume(l, &policy_items).await;
        let waited = permit.waited;
        drop(permit);
        drop(policy_items);
        let verdict = match result {
            Ok(v) => v,
            Err(e) if e.is_transient() && l.store_error_policy() == StoreErrorPolicy::Allow => {
                return Ok(Decisions {
                    allowed: true,
                    fail_open: true,
                    now: SystemClock.now_micros(),
                    items: resolved
                        .into_iter()
                        .map(|resolved| ItemDecision {
                            resolved,
                            verdict: None,
                        })
                        .collect(),
                    waited,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let mut verdicts = verdict.items.into_iter();
        let items = resolved
            .into_iter()
            .map(|resolved| {
                let verdict = if resolved.is_some() {
                    verdicts.next()
                } else {
                    None
                };
                ItemDecision { resolved, verdict }
            })
            .collect();
        Ok(Decisions {
            allowed: verdict.allowed,
            fail_open: false,
            now: verdict.now,
            items,
            waited,
        })
    }

    /// Usage of a key under its effective limit, consuming nothing.
    pub async fn status(
        &self,
        key: RateKey<'_>,
        fallback: Option<Limit>,
    ) -> Result<crate::Decision, LimitError> {
        self.limiter.status(key, fallback).await
    }

    /// Whether the store is reachable right now (no I/O).
    pub fn store_healthy(&self) -> bool {
        self.limiter.store().is_healthy()
    }
}

/// Index of the limit an item's answer reports: the first that denied, else the one with the
/// fewest remaining (ties: the first).
fn reported_index(v: &ItemVerdict, policy: &Policy) -> usize {
    if let Some(i) = (0..v.limits.len()).find(|&i| !v.limits[i].allowed && !policy.limits[i].shadow)
    {
        return i;
    }
    let mut best = 0;
    for (i, lv) in v.limits.iter().enumerate() {
        if lv.remaining < v.limits[best].remaining {
            best = i;
        }
    }
    best
}

/// One atomic store call over every item (on Redis Cluster, items in different slots are decided
/// one by one by the store, never over-admitting).
async fn apply_consume(l: &Limiter, items: &[PolicyItem<'_>]) -> Result<PolicyVerdict, StoreError> {
    l.store().apply(Op::Consume, items).await
}
