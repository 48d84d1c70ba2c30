//! Prometheus metrics served at `GET /metrics`.
//!
//! Each service owns its own recorder (nothing is installed globally), so several services in one
//! process — tests, embedding — never mix their counts. Handles are registered once and cached:
//! recording a decision is a read-locked map lookup by `&str` plus atomic adds, no allocation.
//! Gauges that mirror state elsewhere (load manager, store, configuration) are refreshed when
//! scraped rather than on every request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use parking_lot::RwLock;
use tollgate_core::load::Shed;
use tollgate_core::policy::Op;
use tollgate_core::store::StoreError;
use tollgate_core::{DecisionObserver, DecisionSummary, Engine};

pub use tollgate_core::{Api, DecisionOutcome};

/// Tenants that get their own label value; decisions of later tenants count in the overflow series.
pub const MAX_TENANT_LABELS: usize = 100;
/// Limit names that get their own `limit` label value; later names count under
/// `limit_overflow="true"` (same reasoning as the tenant label).
pub const MAX_LIMIT_LABELS: usize = 100;

/// The label that marks the series shared by tenants past [`MAX_TENANT_LABELS`], as
/// `tenant_overflow="true"`. Those series carry no `tenant` label at all: every value a `tenant`
/// label could take is a valid tenant id (1–256 bytes without control characters), and an empty
/// value is the same as an absent label to Prometheus, so only a different label name cannot
/// collide with a real tenant (a tenant named `other` gets its own series like any other).
pub const OVERFLOW_LABEL: &str = "tenant_overflow";

static META: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Latency buckets, seconds: from 25 µs (an in-memory decision) to 10 s (a stalled backend).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric the service exports: name, kind, help. The README's metric list mirrors this.
pub const CATALOG: &[(&str, &str, &str)] = &[
    (
        "tollgate_decisions_total",
        "counter",
        "Decisions by front end (api: http, rls), tenant and outcome (allowed, denied, shed, fail_open, error, shadow_denied).",
    ),
    (
        "tollgate_limit_decisions_total",
        "counter",
        "Decisions by named limit (the reported one, or the shadow limit that would have denied) and outcome (allowed, denied, shadow_denied).",
    ),
    (
        "tollgate_decision_duration_seconds",
        "histogram",
        "Time from a parsed decision request (HTTP check_and_consume or RLS ShouldRateLimit) to its decision, queueing included, by api.",
    ),
    (
        "tollgate_queue_wait_seconds",
        "histogram",
        "Time admitted decisions waited in their tenant's queue.",
    ),
    (
        "tollgate_store_duration_seconds",
        "histogram",
        "Store call latency by operation (check_and_consume, status).",
    ),
    (
        "tollgate_store_errors_total",
        "counter",
        "Store calls that failed, by kind (unavailable, key_budget_exhausted).",
    ),
    (
        "tollgate_store_healthy",
        "gauge",
        "1 while the store is reachable, 0 otherwise.",
    ),
    (
        "tollgate_tracked_keys",
        "gauge",
        "Keys the store tracks (memory store).",
    ),
    (
        "tollgate_tracked_keys_per_tenant",
        "gauge",
        "Keys the store tracks per tenant (memory store; bounded tenant labels).",
    ),
    (
        "tollgate_key_budget_rejections_total",
        "counter",
        "New keys refused by a bound on state, by tenant (bounded labels) and bound (tenant_keys, pool_keys, tenant_rate, pool_rate, global_keys).",
    ),
    (
        "tollgate_load_in_flight",
        "gauge",
        "Decisions holding a load-manager slot.",
    ),
    (
        "tollgate_load_capacity",
        "gauge",
        "max_global_concurrent_requests in effect.",
    ),
    (
        "tollgate_load_queued",
        "gauge",
        "Requests waiting in tenant queues, all tenants.",
    ),
    (
        "tollgate_load_queued_per_tenant",
        "gauge",
        "Requests waiting per tenant (bounded tenant labels).",
    ),
    (
        "tollgate_load_dispatched_total",
        "counter",
        "Requests admitted by the load manager.",
    ),
    (
        "tollgate_load_dispatched_after_wait_total",
        "counter",
        "Admitted requests that had to queue first.",
    ),
    (
        "tollgate_load_cancelled_total",
        "counter",
        "Queued requests whose caller went away.",
    ),
    (
        "tollgate_load_rejections_total",
        "counter",
        "Requests shed by the load manager, by reason (tenant_queue_full, timeout, shutting_down).",
    ),
    (
        "tollgate_config_version",
        "gauge",
        "Version of the configuration in effect.",
    ),
    (
        "tollgate_config_reloads_total",
        "counter",
        "Config-file re-applications (SIGHUP or a change on disk) that changed the configuration or were rejected, by result (applied, rejected).",
    ),
    (
        "tollgate_build_info",
        "gauge",
        "Always 1; the labels carry the build's version.",
    ),
];

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.to_string()))
            .collect::<Vec<_>>(),
    )
}

/// Per-tenant handles, registered when a tenant first gets a label.
struct TenantHandles {
    /// Indexed by [`Api`], then by [`DecisionOutcome`].
    decisions: [[Counter; tollgate_core::outcome::OUTCOMES]; 2],
    queued: Gauge,
    tracked_keys: Gauge,
    /// Indexed like [`BUDGET_BOUNDS`].
    budget_rejections: [Counter; 5],
}

/// The `bound` label values of `tollgate_key_budget_rejections_total`.
const BUDGET_BOUNDS: [&str; 5] = [
    "tenant_keys",
    "pool_keys",
    "tenant_rate",
    "pool_rate",
    "global_keys",
];

/// Which bound a store error is, as an index into [`BUDGET_BOUNDS`]; `None` if not a budget error.
fn budget_bound(e: &StoreError) -> Option<usize> {
    let name = match e {
        StoreError::TenantKeyBudget(r) => r.bound.as_str(),
        StoreError::KeyBudgetExhausted { .. } => "global_keys",
        _ => return None,
    };
    BUDGET_BOUNDS.iter().position(|b| *b == name)
}

/// The service's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    tenants: RwLock<HashMap<Box<str>, TenantHandles>>,
    other: TenantHandles,
    /// `tollgate_limit_decisions_total` per named limit: allowed, denied, shadow_denied.
    limits: RwLock<HashMap<Box<str>, [Counter; 3]>>,
    other_limit: [Counter; 3],
    /// Indexed by [`Api`].
    decision_duration: [Histogram; 2],
    queue_wait: Histogram,
    store_check_duration: Histogram,
    store_status_duration: Histogram,
    store_unavailable: Counter,
    store_key_budget: Counter,
    store_corrupt: Counter,
    store_healthy: Gauge,
    tracked_keys: Gauge,
    in_flight: Gauge,
    capacity: Gauge,
    queued: Gauge,
    dispatched: Counter,
    dispatched_after_wait: Counter,
    cancelled: Counter,
    rejected_queue_full: Counter,
    rejected_timeout: Counter,
    rejected_shutdown: Counter,
    config_version: Gauge,
    reload_applied: Counter,
    reload_rejected: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .expect("the bucket list is non-empty")
            .build_recorder();
        for (name, kind, help) in CATALOG {
            let n = KeyName::from_const_str(name);
            let h = SharedString::const_str(help);
            match *kind {
                "counter" => recorder.describe_counter(n, None, h),
                "gauge" => recorder.describe_gauge(n, None, h),
                _ => recorder.describe_histogram(n, None, h),
            }
        }
        let c = |name, labels: &[(&'static str, &str)]| {
            recorder.register_counter(&key(name, labels), &META)
        };
        let g = |name, labels: &[(&'static str, &str)]| {
            recorder.register_gauge(&key(name, labels), &META)
        };
        let h = |name, labels: &[(&'static str, &str)]| {
            recorder.register_histogram(&key(name, labels), &META)
        };
        g(
            "tollgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
        )
        .set(1.0);
        let rejections = "tollgate_load_rejections_total";
        let store_errors = "tollgate_store_errors_total";
        let store_duration = "tollgate_store_duration_seconds";
        let reloads = "tollgate_config_reloads_total";
        Self {
            other: tenant_handles(&recorder, (OVERFLOW_LABEL, "true")),
            tenants: RwLock::new(HashMap::new()),
            other_limit: limit_counters(&recorder, ("limit_overflow", "true")),
            limits: RwLock::new(HashMap::new()),
            decision_duration: Api::ALL.map(|api| {
                h(
                    "tollgate_decision_duration_seconds",
                    &[("api", api.as_str())],
                )
            }),
            queue_wait: h("tollgate_queue_wait_seconds", &[]),
            store_check_duration: h(store_duration, &[("op", "check_and_consume")]),
            store_status_duration: h(store_duration, &[("op", "status")]),
            store_unavailable: c(store_errors, &[("kind", "unavailable")]),
            store_key_budget: c(store_errors, &[("kind", "key_budget_exhausted")]),
            store_corrupt: c(store_errors, &[("kind", "corrupt")]),
            store_healthy: g("tollgate_store_healthy", &[]),
            tracked_keys: g("tollgate_tracked_keys", &[]),
            in_flight: g("tollgate_load_in_flight", &[]),
            capacity: g("tollgate_load_capacity", &[]),
            queued: g("tollgate_load_queued", &[]),
            dispatched: c("tollgate_load_dispatched_total", &[]),
            dispatched_after_wait: c("tollgate_load_dispatched_after_wait_total", &[]),
            cancelled: c("tollgate_load_cancelled_total", &[]),
            rejected_queue_full: c(rejections, &[("reason", Shed::QueueFull.as_str())]),
            rejected_timeout: c(rejections, &[("reason", Shed::Timeout.as_str())]),
            rejected_shutdown: c(rejections, &[("reason", Shed::ShuttingDown.as_str())]),
            config_version: g("tollgate_config_version", &[]),
            reload_applied: c(reloads, &[("result", "applied")]),
            reload_rejected: c(reloads, &[("result", "rejected")]),
            handle: recorder.handle(),
            recorder,
        }
    }

    /// Calls `f` with the handles of `tenant`'s label, registering it while labels remain.
    fn with_tenant<R>(&self, tenant: &str, f: impl FnOnce(&TenantHandles) -> R) -> R {
        {
            let map = self.tenants.read();
            if let Some(t) = map.get(tenant) {
                return f(t);
            }
            if map.len() >= MAX_TENANT_LABELS {
                return f(&self.other);
            }
        }
        let mut map = self.tenants.write();
        if !map.contains_key(tenant) && map.len() < MAX_TENANT_LABELS {
            map.insert(
                tenant.into(),
                tenant_handles(&self.recorder, ("tenant", tenant)),
            );
        }
        f(map.get(tenant).unwrap_or(&self.other))
    }

    /// Records one decision of either front end: its outcome, duration and queue wait, the
    /// bound behind a refused new key, and the named limit it was decided under.
    pub fn record_outcome(&self, d: &DecisionSummary<'_>) {
        let api = d.api as usize;
        self.decision_duration[api].record(d.took);
        if let Some(w) = d.waited {
            self.queue_wait.record(w);
        }
        if let Some(i) = d.store_error.and_then(budget_bound) {
            self.with_tenant(d.key.tenant, |t| t.budget_rejections[i].increment(1));
        }
        self.with_tenant(d.key.tenant, |t| {
            t.decisions[api][d.outcome as usize].increment(1)
        });
        if let Some(name) = d.limit_name {
            let i = match d.outcome {
                DecisionOutcome::Allowed => 0,
                DecisionOutcome::Denied => 1,
                DecisionOutcome::ShadowDenied => 2,
                _ => return,
            };
            self.with_limit(name, |c| c[i].increment(1));
        }
    }

    /// Calls `f` with the counters of limit `name`, registering it while labels remain.
    fn with_limit<R>(&self, name: &str, f: impl FnOnce(&[Counter; 3]) -> R) -> R {
        {
            let map = self.limits.read();
            if let Some(c) = map.get(name) {
                return f(c);
            }
            if map.len() >= MAX_LIMIT_LABELS {
                return f(&self.other_limit);
            }
        }
        let mut map = self.limits.write();
        if !map.contains_key(name) && map.len() < MAX_LIMIT_LABELS {
            map.insert(name.into(), limit_counters(&self.recorder, ("limit", name)));
        }
        f(map.get(name).unwrap_or(&self.other_limit))
    }

    pub fn record_reload(&self, applied: bool) {
        if applied {
            self.reload_applied.increment(1);
        } else {
            self.reload_rejected.increment(1);
        }
    }

    /// Records one store call the engine made.
    pub fn record_store(&self, op: Op, took: Duration, err: Option<&StoreError>) {
        let hist = match op {
            Op::Status => &self.store_status_duration,
            Op::Consume | Op::Report | Op::Refund => &self.store_check_duration,
        };
        hist.record(took);
        match err {
            Some(StoreError::Unavailable(_)) => self.store_unavailable.increment(1),
            Some(StoreError::KeyBudgetExhausted { .. } | StoreError::TenantKeyBudget(_)) => {
                self.store_key_budget.increment(1)
            }
            Some(StoreError::Corrupt { .. }) => self.store_corrupt.increment(1),
            Some(StoreError::Unsupported(_)) | None => {}
        }
    }

    /// Refreshes the gauges that mirror other components, then renders the exposition text.
    pub fn render(&self, engine: &Engine) -> String {
        self.store_healthy
            .set(if engine.store_healthy() { 1.0 } else { 0.0 });
        if let Some(n) = engine.tracked_keys() {
            self.tracked_keys.set(n as f64);
        }
        let snap = engine.load();
        self.in_flight.set(snap.in_flight as f64);
        self.capacity.set(snap.capacity as f64);
        self.queued.set(snap.queued as f64);
        let counters = engine.load_counters();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        self.dispatched.absolute(get(&counters.dispatched));
        self.dispatched_after_wait
            .absolute(get(&counters.dispatched_after_wait));
        self.cancelled.absolute(get(&counters.cancelled));
        self.rejected_queue_full
            .absolute(get(&counters.rejected_queue_full));
        self.rejected_timeout
            .absolute(get(&counters.rejected_timeout));
        self.rejected_shutdown
            .absolute(get(&counters.rejected_shutdown));
        self.config_version.set(engine.config().version as f64);
        // Zero every labelled queue first: a tenant whose queue emptied must not keep its last value.
        let per_tenant = engine.queued_per_tenant();
        {
            let map = self.tenants.read();
            for t in map.values() {
                t.queued.set(0.0);
            }
            self.other.queued.set(0.0);
        }
        for (tenant, n) in per_tenant {
            self.with_tenant(&tenant, |t| t.queued.increment(n as f64));
        }
        // Same for keys per tenant; tenants past the label budget add up under the overflow label.
        {
            let map = self.tenants.read();
            for t in map.values() {
                t.tracked_keys.set(0.0);
            }
            self.other.tracked_keys.set(0.0);
        }
        engine.for_each_tenant_keys(&mut |tenant, n| {
            self.with_tenant(tenant, |t| t.tracked_keys.increment(n as f64))
        });
        self.handle.render()
    }

    /// Folds recorded histogram samples into their buckets; call periodically so samples do not
    /// pile up between scrapes.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Runs [`Metrics::run_upkeep`] every `every` until the returned guard is dropped.
    pub fn spawn_upkeep(self: &Arc<Self>, every: Duration) -> UpkeepGuard {
        let me = Arc::downgrade(self);
        UpkeepGuard(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match me.upgrade() {
                    Some(m) => m.run_upkeep(),
                    None => return,
                }
            }
        }))
    }
}

/// Handles of one tenant's series; `label` is `("tenant", id)`, or the overflow label.
fn limit_counters(recorder: &PrometheusRecorder, label: (&'static str, &str)) -> [Counter; 3] {
    ["allowed", "denied", "shadow_denied"].map(|outcome| {
        recorder.register_counter(
            &key(
                "tollgate_limit_decisions_total",
                &[label, ("outcome", outcome)],
            ),
            &META,
        )
    })
}

fn tenant_handles(recorder: &PrometheusRecorder, label: (&'static str, &str)) -> TenantHandles {
    let name = "tollgate_decisions_total";
    TenantHandles {
        decisions: Api::ALL.map(|api| {
            DecisionOutcome::ALL.map(|outcome| {
                recorder.register_counter(
                    &key(
                        name,
                        &[label, ("api", api.as_str()), ("outcome", outcome.as_str())],
                    ),
                    &META,
                )
            })
        }),
        queued: recorder.register_gauge(&key("tollgate_load_queued_per_tenant", &[label]), &META),
        tracked_keys: recorder
            .register_gauge(&key("tollgate_tracked_keys_per_tenant", &[label]), &META),
        budget_rejections: BUDGET_BOUNDS.map(|bound| {
            recorder.register_counter(
                &key(
                    "tollgate_key_budget_rejections_total",
                    &[label, ("bound", bound)],
                ),
                &META,
            )
        }),
    }
}

/// Stops the upkeep task when dropped.
pub struct UpkeepGuard(tokio::task::JoinHandle<()>);

impl Drop for UpkeepGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The engine reports its store calls and decisions here.
impl DecisionObserver for Metrics {
    fn store_call(&self, op: Op, took: Duration, error: Option<&StoreError>) {
        self.record_store(op, took, error);
    }

    fn decision(&self, summary: &DecisionSummary<'_>) {
        self.record_outcome(summary);
    }
}
