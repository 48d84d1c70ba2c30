//! The narrow API both front ends (HTTP, Envoy RLS) call: decide one key or several at once,
//! read a key's status, report and refund, read and change the configuration, the live
//! statistics, the service's health gauges and the drain hook. Front ends never reach into the
//! limiter's parts (its configuration manager, store or load manager); what they need is here.
//!
//! There is one decision path, [`Engine::decide`]'s: resolve every item's policy, check its cost,
//! wait for admission, one `Store::apply`, fail open if allowed to. The single-key HTTP decision is
//! that path with one item (inline storage, no heap allocation of its own). The engine owns every
//! store call, so it times them and reports them, with every decision, to the registered
//! [`DecisionObserver`] and to the dashboard statistics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use crate::clock::{Clock, Micros, SystemClock};
use crate::config::{Change, ConfigError, Snapshot};
use crate::limit::{Limit, LimitSource, RateKey};
use crate::limiter::{Decision, DecisionRequest, LimitError, Limiter, Outcome, StoreErrorPolicy};
use crate::load::{LoadCounters, LoadSnapshot};
use crate::outcome::{Api, DecisionObserver, DecisionOutcome, DecisionSummary};
use crate::policy::{ItemVerdict, LimitVerdict, Op, Policy, PolicyItem, PolicyVerdict};
use crate::stats::StatsReport;
use crate::store::StoreError;
use crate::window::Verdict;

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
    /// Index in the policy of the limit the answer reports (see [`reported_index`]).
    pub reported: usize,
}

impl ItemDecision {
    /// The limit the answer reports (the first non-shadow limit that denied, else the one with
    /// the fewest remaining) and its state; `None` when the store did not decide this item.
    pub fn reported(&self) -> Option<(&Limit, &LimitVerdict)> {
        let (r, v) = (self.resolved.as_ref()?, self.verdict.as_ref()?);
        Some((
            &r.policy.limits.get(self.reported)?.limit,
            v.limits.get(self.reported)?,
        ))
    }

    fn unlimited() -> Self {
        Self {
            resolved: None,
            verdict: None,
            reported: 0,
        }
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
    /// One per item, in the caller's order (inline for one item).
    pub items: SmallVec<[ItemDecision; 1]>,
    /// Time spent queued in the load manager.
    pub waited: Duration,
}

impl Decisions {
    /// How this call ended.
    pub fn outcome(&self) -> DecisionOutcome {
        let shadow_denied = self.items.iter().any(|i| {
            i.verdict
                .as_ref()
                .is_some_and(|v| v.shadow_denied.is_some())
        });
        DecisionOutcome::classify(self.fail_open, self.allowed, shadow_denied)
    }

    /// The item a call is counted under: the first that denied, else the first limited one, else
    /// the first.
    fn headline(&self) -> Option<usize> {
        self.items
            .iter()
            .position(|i| i.verdict.as_ref().is_some_and(|v| !v.allowed))
            .or_else(|| self.items.iter().position(|i| i.resolved.is_some()))
    }
}

/// What a call does with a key that has no limit, and with a cost no limit can ever hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// The HTTP decision: both are the caller's error (`no_limit`, `invalid_argument`).
    Strict,
    /// Envoy's RLS semantics: the key is not limited; the request is over the limit.
    Lenient,
}

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    limiter: Arc<Limiter>,
    observer: Option<Arc<dyn DecisionObserver>>,
    api: Api,
}

impl Engine {
    /// The engine over `limiter`, for the HTTP front end, reporting to no observer.
    pub fn new(limiter: Arc<Limiter>) -> Self {
        Self {
            limiter,
            observer: None,
            api: Api::Http,
        }
    }

    /// Reports every store call and decision to `observer` (the server's metrics).
    pub fn with_observer(mut self, observer: Arc<dyn DecisionObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The same engine, counting its decisions under front end `api`.
    pub fn for_api(&self, api: Api) -> Self {
        Self {
            api,
            ..self.clone()
        }
    }

    /// Decides one key: allowed and consumed, or denied and nothing consumed. A key with no
    /// limit is `NoLimit`; a cost over what the limit can ever hold is `Invalid`.
    pub async fn check_and_consume(
        &self,
        req: DecisionRequest<'_>,
    ) -> Result<Decision, LimitError> {
        let started = self.clock_start();
        let item = DecideItem {
            key: req.key,
            fallback: req.requested,
            cost: req.cost,
        };
        let result = self
            .run(std::slice::from_ref(&item), Strictness::Strict)
            .await
            .and_then(|d| self.single(d));
        if let Some(started) = started {
            self.record_single(req.key, &result, started.elapsed());
        }
        result
    }

    /// Decides every item together: the call is allowed only if every limited item is, and then
    /// every one consumes its cost; otherwise nothing is consumed. Items without a limit are not
    /// limited, and an item whose cost exceeds what its limit can ever hold makes the call denied
    /// (consuming nothing), as Envoy's rate limit service answers both. Ids are validated before
    /// anything is admitted or counted.
    pub async fn decide(&self, items: &[DecideItem<'_>]) -> Result<Decisions, LimitError> {
        let started = self.clock_start();
        let result = self.run(items, Strictness::Lenient).await;
        if let Some(started) = started {
            self.record_many(items, &result, started.elapsed());
        }
        result
    }

    /// Usage of a key under its effective limit, consuming nothing.
    pub async fn status(
        &self,
        key: RateKey<'_>,
        requested: Option<Limit>,
    ) -> Result<Decision, LimitError> {
        let l = &*self.limiter;
        let (policy, source, _, bounds) = l.resolve(key, requested)?;
        let item = PolicyItem {
            key,
            policy: &policy,
            cost: 1,
            bounds,
            shadow_all: l.shadow(),
        };
        let v = self.apply(Op::Status, std::slice::from_ref(&item)).await?;
        self.adjusted(v, &item, source, Duration::ZERO)
    }

    /// Report (consume without checking) or refund `req.cost` on the key's policy; the answer is
    /// the state after it.
    pub async fn adjust(&self, op: Op, req: DecisionRequest<'_>) -> Result<Decision, LimitError> {
        let l = &*self.limiter;
        let (policy, source, weight, bounds) = l.resolve(req.key, req.requested)?;
        l.validate_cost(req.cost, &policy)?;
        let permit = l.load().acquire(req.key.tenant, weight).await?;
        let item = PolicyItem {
            key: req.key,
            policy: &policy,
            cost: req.cost,
            bounds,
            shadow_all: l.shadow(),
        };
        let v = self.apply(op, std::slice::from_ref(&item)).await?;
        let waited = permit.waited;
        drop(permit);
        self.adjusted(v, &item, source, waited)
    }

    /// Consumes `req.cost` without checking (it may go over the limit).
    pub async fn report(&self, req: DecisionRequest<'_>) -> Result<Decision, LimitError> {
        self.adjust(Op::Report, req).await
    }

    /// Gives back up to `req.cost` of what the key consumed inside its current window.
    pub async fn refund(&self, req: DecisionRequest<'_>) -> Result<Decision, LimitError> {
        self.adjust(Op::Refund, req).await
    }

    /// The configuration in force.
    pub fn config(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.limiter.config().snapshot()
    }

    /// The configuration in force, to keep past an await or hand to another thread.
    pub fn config_arc(&self) -> Arc<Snapshot> {
        self.limiter.config().snapshot_arc()
    }

    /// Whether the stored configuration has been loaded (false while Redis was unreachable since
    /// start-up and a placeholder is in force).
    pub fn is_loaded(&self) -> bool {
        self.limiter.config().is_loaded()
    }

    /// Applies a configuration change; new global settings take effect as it is published.
    pub async fn update_config(&self, change: Change) -> Result<Arc<Snapshot>, ConfigError> {
        self.limiter.update_config(change).await
    }

    /// Brings the configuration in force into agreement with the stored one; true when it changed.
    pub async fn refresh_config(&self) -> Result<bool, ConfigError> {
        self.limiter.refresh_config().await
    }

    /// The dashboard's statistics; `None` when this service collects none.
    pub fn stats(&self) -> Option<StatsReport> {
        self.limiter.stats().map(|s| s.report(&self.limiter))
    }

    /// Whether the store is reachable right now (no I/O).
    pub fn store_healthy(&self) -> bool {
        self.limiter.store().is_healthy()
    }

    /// `memory`, `redis`, ...
    pub fn store_kind(&self) -> &'static str {
        self.limiter.store().kind()
    }

    /// Keys the store tracks, when it knows (memory store).
    pub fn tracked_keys(&self) -> Option<u64> {
        self.limiter.store().tracked_keys()
    }

    /// Calls `f` with every tenant's tracked key count (memory store).
    pub fn for_each_tenant_keys(&self, f: &mut dyn FnMut(&str, u64)) {
        self.limiter.store().for_each_tenant_keys(f)
    }

    /// Admission now: capacity, in flight, queued.
    pub fn load(&self) -> LoadSnapshot {
        self.limiter.load().snapshot()
    }

    /// Admission counters since start.
    pub fn load_counters(&self) -> &LoadCounters {
        self.limiter.load().counters()
    }

    /// Requests waiting per tenant now.
    pub fn queued_per_tenant(&self) -> Vec<(String, usize)> {
        self.limiter.load().queued_per_tenant()
    }

    /// Drain: answers every queued request `shutting_down` (the grace period is over).
    pub fn reject_all_queued(&self) {
        self.limiter.load().reject_all_queued()
    }

    /// Starts timing a decision when anyone records it (no clock read otherwise).
    fn clock_start(&self) -> Option<Instant> {
        (self.observer.is_some() || self.limiter.stats().is_some()).then(Instant::now)
    }

    /// The one decision path.
    async fn run(
        &self,
        items: &[DecideItem<'_>],
        strictness: Strictness,
    ) -> Result<Decisions, LimitError> {
        let l = &*self.limiter;
        let shadow_all = l.shadow();
        let mut resolved: SmallVec<[ItemDecision; 1]> = SmallVec::with_capacity(items.len());
        let mut bounds: SmallVec<[crate::store::KeyBounds; 1]> = SmallVec::new();
        let mut admission: Option<(&str, u32)> = None;
        let mut never_fits = false;
        for it in items {
            match l.resolve(it.key, it.fallback) {
                Ok((policy, source, weight, b)) => {
                    match l.validate_cost(it.cost, &policy) {
                        Ok(()) => {}
                        Err(e) if strictness == Strictness::Strict => return Err(e.into()),
                        Err(_) => never_fits = true,
                    }
                    admission.get_or_insert((it.key.tenant, weight));
                    bounds.push(b);
                    resolved.push(ItemDecision {
                        resolved: Some(Resolved { policy, source }),
                        verdict: None,
                        reported: 0,
                    });
                }
                Err(LimitError::NoLimit) if strictness == Strictness::Lenient => {
                    resolved.push(ItemDecision::unlimited())
                }
                Err(e) => return Err(e),
            }
        }
        let Some((tenant, weight)) = admission else {
            // Nothing is limited: nothing to admit, count or ask the store.
            return Ok(Decisions {
                allowed: true,
                fail_open: false,
                now: SystemClock.now_micros(),
                items: resolved,
                waited: Duration::ZERO,
            });
        };
        let policy_items: SmallVec<[PolicyItem<'_>; 1]> = items
            .iter()
            .zip(&resolved)
            .filter_map(|(it, d)| Some((it, d.resolved.as_ref()?)))
            .zip(&bounds)
            .map(|((it, r), b)| PolicyItem {
                key: it.key,
                policy: &r.policy,
                cost: it.cost,
                bounds: *b,
                shadow_all,
            })
            .collect();
        if never_fits {
            // A request that can never fit is over the limit; read the state for the answer's
            // figures without consuming or taking an admission slot.
            let read = self.apply(Op::Status, &policy_items).await;
            let costs: SmallVec<[(bool, u64); 1]> = policy_items
                .iter()
                .map(|p| (l.validate_cost(p.cost, p.policy).is_err(), p.cost))
                .collect();
            drop(policy_items);
            return Ok(over_cost(shadow_all, resolved, read.ok(), &costs));
        }
        let permit = l.load().acquire(tenant, weight).await?;
        let result = self.apply(Op::Consume, &policy_items).await;
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
                    items: resolved,
                    waited,
                });
            }
            Err(e) => return Err(e.into()),
        };
        fill(&mut resolved, verdict.items, shadow_all);
        Ok(Decisions {
            allowed: verdict.allowed,
            fail_open: false,
            now: verdict.now,
            items: resolved,
            waited,
        })
    }

    /// One atomic store call over every item (on Redis Cluster, items in different slots are
    /// decided one by one by the store, never over-admitting), timed for the observer.
    async fn apply(&self, op: Op, items: &[PolicyItem<'_>]) -> Result<PolicyVerdict, StoreError> {
        let store = self.limiter.store();
        let Some(observer) = &self.observer else {
            return store.apply(op, items).await;
        };
        let started = Instant::now();
        let result = store.apply(op, items).await;
        observer.store_call(op, started.elapsed(), result.as_ref().err());
        result
    }

    /// A one-item call's answer in the single-key shape.
    fn single(&self, d: Decisions) -> Result<Decision, LimitError> {
        let shadow_all = self.limiter.shadow();
        let (allowed, now, waited) = (d.allowed, d.now, d.waited);
        // A strict one-item call resolves its item or fails with NoLimit.
        let Some(ItemDecision {
            resolved: Some(Resolved { policy, source }),
            verdict,
            reported,
        }) = d.items.into_iter().next()
        else {
            return Err(LimitError::NoLimit);
        };
        let Some(iv) = verdict else {
            // Failed open, or a store that answered no verdict for the item (treated as "no
            // state"): admitted uncounted.
            return Ok(Decision {
                outcome: Outcome::FailOpen { now },
                limit: policy.limits[0].limit,
                source,
                waited,
                policy,
                verdict: None,
                reported: 0,
                shadow_all,
            });
        };
        let pl = &policy.limits[reported];
        let lv = iv.limits.get(reported).copied();
        let verdict = Verdict {
            allowed: iv.allowed && allowed,
            used: lv.map_or(0, |l| pl.capacity().saturating_sub(l.remaining)),
            reset_at: lv.map_or(now, |l| l.reset_at),
            retry_at: lv.and_then(|l| l.retry_at),
            now,
        };
        Ok(Decision {
            outcome: Outcome::Decided(verdict),
            limit: pl.limit,
            source,
            waited,
            policy,
            verdict: Some(iv),
            reported,
            shadow_all,
        })
    }

    /// A report, refund or status answer in the single-key shape.
    fn adjusted(
        &self,
        v: PolicyVerdict,
        item: &PolicyItem<'_>,
        source: LimitSource,
        waited: Duration,
    ) -> Result<Decision, LimitError> {
        let mut items: SmallVec<[ItemDecision; 1]> = SmallVec::new();
        items.push(ItemDecision {
            resolved: Some(Resolved {
                policy: item.policy.clone(),
                source,
            }),
            verdict: None,
            reported: 0,
        });
        let now = v.now;
        let allowed = v.allowed;
        fill(&mut items, v.items, item.shadow_all);
        self.single(Decisions {
            allowed,
            fail_open: false,
            now,
            items,
            waited,
        })
    }

    fn record_single(
        &self,
        key: RateKey<'_>,
        result: &Result<Decision, LimitError>,
        took: Duration,
    ) {
        let Some(outcome) = DecisionOutcome::of(result) else {
            return;
        };
        let d = result.as_ref().ok();
        let summary = DecisionSummary {
            api: self.api,
            key,
            outcome,
            took,
            waited: d.map(|d| d.waited),
            store_error: store_error(result),
            limit: d.map(|d| d.limit),
            limit_name: d.and_then(|d| {
                let named = d
                    .verdict
                    .as_ref()
                    .and_then(|iv| iv.shadow_denied)
                    .unwrap_or(d.reported);
                d.policy.limits.get(named)?.name.as_deref()
            }),
        };
        self.record(&summary);
    }

    fn record_many(
        &self,
        items: &[DecideItem<'_>],
        result: &Result<Decisions, LimitError>,
        took: Duration,
    ) {
        let outcome = match result {
            Ok(d) => d.outcome(),
            Err(e) => match DecisionOutcome::of_error(e) {
                Some(o) => o,
                None => return,
            },
        };
        let d = result.as_ref().ok();
        let at = d.and_then(Decisions::headline).unwrap_or(0);
        let Some(key) = items.get(at).map(|it| it.key) else {
            return;
        };
        let resolved = d
            .and_then(|d| d.items.get(at))
            .and_then(|i| Some((i, i.resolved.as_ref()?)));
        let summary = DecisionSummary {
            api: self.api,
            key,
            outcome,
            took,
            waited: d.map(|d| d.waited),
            store_error: match result {
                Err(LimitError::Store(e)) => Some(e),
                _ => None,
            },
            limit: resolved.and_then(|(i, r)| Some(r.policy.limits.get(i.reported)?.limit)),
            limit_name: resolved.and_then(|(i, r)| {
                let named = i
                    .verdict
                    .as_ref()
                    .and_then(|v| v.shadow_denied)
                    .unwrap_or(i.reported);
                r.policy.limits.get(named)?.name.as_deref()
            }),
        };
        self.record(&summary);
    }

    fn record(&self, summary: &DecisionSummary<'_>) {
        if let Some(stats) = self.limiter.stats() {
            stats.record_outcome(summary.key, summary.outcome, summary.limit, summary.took);
        }
        if let Some(observer) = &self.observer {
            observer.decision(summary);
        }
    }
}

fn store_error(result: &Result<Decision, LimitError>) -> Option<&StoreError> {
    match result {
        Err(LimitError::Store(e)) => Some(e),
        _ => None,
    }
}

/// Puts the store's verdicts on the limited items, in order, with the limit each reports.
fn fill(items: &mut [ItemDecision], verdicts: SmallVec<[ItemVerdict; 1]>, shadow_all: bool) {
    let mut verdicts = verdicts.into_iter();
    for d in items.iter_mut() {
        let Some(r) = &d.resolved else { continue };
        d.verdict = verdicts.next();
        if let Some(v) = &d.verdict {
            d.reported = reported_index(v, &r.policy, shadow_all);
        }
    }
}

/// Index of the limit an item's answer reports: the first non-shadow limit that denied, else the
/// one with the fewest remaining (ties: the first); within the policy's bounds.
fn reported_index(v: &ItemVerdict, policy: &Policy, shadow_all: bool) -> usize {
    let n = v.limits.len().min(policy.limits.len());
    if n == 0 {
        return 0;
    }
    if let Some(i) = (0..n).find(|&i| {
        let can_deny = !shadow_all && !policy.limits[i].shadow;
        can_deny && !v.limits[i].allowed
    }) {
        return i;
    }
    let mut best = 0;
    for i in 0..n {
        if v.limits[i].remaining < v.limits[best].remaining {
            best = i;
        }
    }
    best
}

/// The answer when some item's cost exceeds what its limit can ever hold: denied, nothing
/// consumed. `read` is the state of every limited item (`None` when the store could not be read);
/// `costs[j]` says whether limited item `j` can never fit, and its cost.
fn over_cost(
    shadow_all: bool,
    mut items: SmallVec<[ItemDecision; 1]>,
    read: Option<PolicyVerdict>,
    costs: &[(bool, u64)],
) -> Decisions {
    let now = read
        .as_ref()
        .map_or_else(|| SystemClock.now_micros(), |v| v.now);
    let mut verdicts = read.map(|v| v.items.into_iter());
    let mut j = 0;
    for d in items.iter_mut() {
        let Some(r) = &d.resolved else { continue };
        let mut v = verdicts.as_mut().and_then(|it| it.next());
        if let Some(&(true, cost)) = costs.get(j) {
            // Unread state is reported as nothing left: the request is refused either way.
            let mut iv = v.take().unwrap_or_else(|| ItemVerdict {
                allowed: false,
                limits: r
                    .policy
                    .limits
                    .iter()
                    .map(|_| LimitVerdict {
                        allowed: true,
                        remaining: 0,
                        reset_at: now,
                        retry_at: None,
                    })
                    .collect(),
                shadow_denied: None,
            });
            iv.allowed = false;
            // Every limit that can deny and cannot hold the cost denies it, with no time at
            // which it would fit.
            for (lv, pl) in iv.limits.iter_mut().zip(r.policy.limits.iter()) {
                if !(shadow_all || pl.shadow) && cost > pl.capacity() {
                    lv.allowed = false;
                    lv.retry_at = None;
                }
            }
            v = Some(iv);
        }
        if let Some(iv) = &v {
            d.reported = reported_index(iv, &r.policy, shadow_all);
        }
        d.verdict = v;
        j += 1;
    }
    Decisions {
        allowed: false,
        fail_open: false,
        now,
        items,
        waited: Duration::ZERO,
    }
}
