//! The configuration as documents: what `GET /api/config` returns, what is persisted, and what a
//! `--config` TOML file holds — one shape for all three, so there is nothing to translate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::credentials::ApiKeyRecord;

/// A limit as the API and files spell it. Only the seed's two fields are required (a calendar
/// window may omit the window); the rest are written out only when set, so a plain sliding-log
/// limit reads and writes exactly as it always has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    #[serde(deserialize_with = "crate::whole_number::exact")]
    pub max_requests: u64,
    /// Window length; may be omitted (0 here) with `calendar`.
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "given_window"
    )]
    pub window_duration_seconds: f64,
    /// `sliding_log` (default), `gcra`, `sliding_window_counter` or `fixed_window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<AlgorithmName>,
    /// GCRA only: requests that may arrive at once (default `max_requests`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole_number::option"
    )]
    pub burst: Option<u64>,
    /// fixed_window only: align to a UTC calendar period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<crate::policy::Calendar>,
    /// A label reported in responses and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Decide and count, but never deny.
    #[serde(default, skip_serializing_if = "is_false", deserialize_with = "flag")]
    pub shadow: bool,
}

/// 0 stands for "omitted" (a calendar window) only inside; an explicit 0 (or -0) is kept as -0.0
/// so `policy_spec` refuses it like any other non-positive window instead of reading it as
/// "omitted". `null` is omitted, as for every optional field. Other values are checked (with
/// their location) by `policy_spec`.
fn given_window<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(match Option::<f64>::deserialize(d)? {
        None => 0.0,
        // Matches -0.0 too (float patterns compare with ==).
        Some(0.0) => -0.0,
        Some(w) => w,
    })
}

/// `shadow`: `null` is omitted, i.e. false.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Option::<bool>::deserialize(d).map(|b| b.unwrap_or(false))
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The algorithm names configuration accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmName {
    SlidingLog,
    Gcra,
    SlidingWindowCounter,
    FixedWindow,
}

impl LimitSpec {
    /// The seed's limit: a sliding log.
    pub fn new(max_requests: u64, window_duration_seconds: f64) -> Self {
        Self {
            max_requests,
            window_duration_seconds,
            ..Self::default()
        }
    }
}

/// What one action (or client action) is limited by: one limit, or `{"limits": [...]}` (1..=8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, try_from = "RawEntry")]
pub enum LimitEntry {
    One(LimitSpec),
    Many { limits: Vec<LimitSpec> },
}

/// Either form in one struct, so a misspelt field gets serde's readable "unknown field" message
/// rather than an untagged enum's "did not match any variant".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(default, deserialize_with = "crate::whole_number::option")]
    max_requests: Option<u64>,
    #[serde(default, deserialize_with = "given_window")]
    window_duration_seconds: f64,
    algorithm: Option<AlgorithmName>,
    #[serde(default, deserialize_with = "crate::whole_number::option")]
    burst: Option<u64>,
    calendar: Option<crate::policy::Calendar>,
    name: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    shadow: bool,
    limits: Option<Vec<LimitSpec>>,
}

impl TryFrom<RawEntry> for LimitEntry {
    type Error = String;

    fn try_from(r: RawEntry) -> Result<Self, String> {
        match (r.limits, r.max_requests) {
            (Some(limits), None) => Ok(LimitEntry::Many { limits }),
            (Some(_), Some(_)) => Err(
                "give either one limit (max_requests, ...) or \"limits\": [ ... ], not both".into(),
            ),
            (None, Some(max_requests)) => Ok(LimitEntry::One(LimitSpec {
                max_requests,
                window_duration_seconds: r.window_duration_seconds,
                algorithm: r.algorithm,
                burst: r.burst,
                calendar: r.calendar,
                name: r.name,
                shadow: r.shadow,
            })),
            (None, None) => Err("missing field `max_requests` (or `limits`)".into()),
        }
    }
}

impl From<LimitSpec> for LimitEntry {
    fn from(s: LimitSpec) -> Self {
        LimitEntry::One(s)
    }
}

impl LimitEntry {
    pub fn specs(&self) -> &[LimitSpec] {
        match self {
            LimitEntry::One(s) => std::slice::from_ref(s),
            LimitEntry::Many { limits } => limits,
        }
    }
}

/// Load-management settings shared by all tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalSettings {
    /// Decisions allowed in flight at once; beyond it requests queue per tenant.
    #[serde(default = "default_max_global_concurrent_requests")]
    pub max_global_concurrent_requests: u32,
    /// Requests allowed to wait per tenant; beyond it they are rejected at once.
    #[serde(default = "default_max_tenant_queue_size")]
    pub max_tenant_queue_size: u32,
    /// How long a request may wait in its queue before it is answered `timeout`.
    #[serde(default = "default_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
    /// Keys one tenant may have tracked (memory store), unless the tenant sets its own
    /// `max_keys`. Unconfigured tenants also share one pool of this size.
    #[serde(default = "default_max_keys_per_tenant")]
    pub max_keys_per_tenant: u64,
    /// New keys one tenant may create per second (both stores; burst = one second's worth),
    /// unless the tenant sets its own. Unconfigured tenants also share one bucket of this rate.
    #[serde(default = "default_new_keys_per_second")]
    pub new_keys_per_second: u64,
    /// Longest window a request-supplied limit may set, in seconds, unless the tenant sets its
    /// own. Configured limits are the operator's and are not capped.
    #[serde(default = "default_max_request_window_seconds")]
    pub max_request_window_seconds: u64,
}

/// A change to some of the global settings: `None` keeps the value in force when the change is
/// applied (under the configuration's writer lock, so it never undoes a concurrent change).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GlobalPatch {
    pub max_global_concurrent_requests: Option<u32>,
    pub max_tenant_queue_size: Option<u32>,
    pub queue_timeout_ms: Option<u64>,
    pub max_keys_per_tenant: Option<u64>,
    pub new_keys_per_second: Option<u64>,
    pub max_request_window_seconds: Option<u64>,
}

impl GlobalPatch {
    /// `current` with the given settings replaced.
    pub fn apply_to(&self, current: &GlobalSettings) -> GlobalSettings {
        GlobalSettings {
            max_global_concurrent_requests: self
                .max_global_concurrent_requests
                .unwrap_or(current.max_global_concurrent_requests),
            max_tenant_queue_size: self
                .max_tenant_queue_size
                .unwrap_or(current.max_tenant_queue_size),
            queue_timeout_ms: self.queue_timeout_ms.unwrap_or(current.queue_timeout_ms),
            max_keys_per_tenant: self
                .max_keys_per_tenant
                .unwrap_or(current.max_keys_per_tenant),
            new_keys_per_second: self
                .new_keys_per_second
                .unwrap_or(current.new_keys_per_second),
            max_request_window_seconds: self
                .max_request_window_seconds
                .unwrap_or(current.max_request_window_seconds),
        }
    }
}

pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 1000;
pub const MAX_CONCURRENCY: u32 = 1_000_000;
pub const MAX_QUEUE_SIZE: u32 = 1_000_000;
pub const MAX_QUEUE_TIMEOUT_MS: u64 = 600_000;
pub const MAX_WEIGHT: u32 = 1_000;
pub const DEFAULT_MAX_KEYS_PER_TENANT: u64 = 1_000_000;
pub const DEFAULT_NEW_KEYS_PER_SECOND: u64 = 1_000;
/// The default cap on request-supplied windows: the longest window any limit may have.
pub const DEFAULT_MAX_REQUEST_WINDOW_SECONDS: u64 = crate::limit::MAX_WINDOW_SECONDS as u64;
pub const MAX_KEYS_PER_TENANT: u64 = 1_000_000_000;
pub const MAX_NEW_KEYS_PER_SECOND: u64 = 1_000_000_000;

// Every global setting has a default, so a `[global]` table may give any subset of them.
fn default_max_global_concurrent_requests() -> u32 {
    GlobalSettings::default().max_global_concurrent_requests
}

fn default_max_tenant_queue_size() -> u32 {
    GlobalSettings::default().max_tenant_queue_size
}

fn default_max_keys_per_tenant() -> u64 {
    DEFAULT_MAX_KEYS_PER_TENANT
}

fn default_new_keys_per_second() -> u64 {
    DEFAULT_NEW_KEYS_PER_SECOND
}

fn default_max_request_window_seconds() -> u64 {
    DEFAULT_MAX_REQUEST_WINDOW_SECONDS
}

fn default_queue_timeout_ms() -> u64 {
    DEFAULT_QUEUE_TIMEOUT_MS
}

impl Default for GlobalSettings {
    fn default() -> Self {
        Self {
            max_global_concurrent_requests: 1000,
            max_tenant_queue_size: 100,
            queue_timeout_ms: DEFAULT_QUEUE_TIMEOUT_MS,
            max_keys_per_tenant: DEFAULT_MAX_KEYS_PER_TENANT,
            new_keys_per_second: DEFAULT_NEW_KEYS_PER_SECOND,
            max_request_window_seconds: DEFAULT_MAX_REQUEST_WINDOW_SECONDS,
        }
    }
}

fn default_weight() -> u32 {
    1
}

/// One tenant's limits and fair-share weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantDocument {
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Limits per action for every client of the tenant.
    #[serde(default)]
    pub actions: BTreeMap<String, LimitEntry>,
    /// Client-specific limits: client id → action → limit. These win over `actions`.
    #[serde(default)]
    pub clients: BTreeMap<String, BTreeMap<String, LimitEntry>>,
    /// This tenant's own `max_keys_per_tenant`; absent = the global one. The global setting's
    /// name is accepted too (DESIGN.md calls the per-tenant value by it).
    #[serde(
        default,
        alias = "max_keys_per_tenant",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_keys: Option<u64>,
    /// This tenant's own `new_keys_per_second`; absent = the global one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_keys_per_second: Option<u64>,
    /// This tenant's own `max_request_window_seconds`; absent = the global one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_window_seconds: Option<u64>,
    /// The tenant's API keys (hashed), key id → key; used with `--decision-auth tenant-keys`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub api_keys: BTreeMap<String, ApiKeyRecord>,
}

impl Default for TenantDocument {
    fn default() -> Self {
        Self {
            weight: 1,
            actions: BTreeMap::new(),
            clients: BTreeMap::new(),
            max_keys: None,
            new_keys_per_second: None,
            max_request_window_seconds: None,
            api_keys: BTreeMap::new(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigDocument {
    /// Incremented by every change; lets instances and clients tell configurations apart.
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub global: GlobalSettings,
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantDocument>,
}

/// One thing wrong with a configuration, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted path to the offending value, e.g. `tenants.acme.actions.login.max_requests`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl GlobalSettings {
    /// Every problem with these settings (empty when valid).
    pub fn problems(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut check = |ok: bool, field: &str, message: String| {
            if !ok {
                out.push(ConfigProblem {
                    path: format!("{prefix}{field}"),
                    message,
                });
            }
        };
        let c = self.max_global_concurrent_requests;
        check(
            (1..=MAX_CONCURRENCY).contains(&c),
            "max_global_concurrent_requests",
            format!("must be an integer from 1 to {MAX_CONCURRENCY}, got {c}"),
        );
        let q = self.max_tenant_queue_size;
        check(
            q <= MAX_QUEUE_SIZE,
            "max_tenant_queue_size",
            format!("must be an integer from 0 to {MAX_QUEUE_SIZE}, got {q}"),
        );
        let t = self.queue_timeout_ms;
        check(
            (1..=MAX_QUEUE_TIMEOUT_MS).contains(&t),
            "queue_timeout_ms",
            format!("must be an integer from 1 to {MAX_QUEUE_TIMEOUT_MS}, got {t}"),
        );
        for (field, message) in [
            (
                "max_keys_per_tenant",
                max_keys_problem(self.max_keys_per_tenant),
            ),
            (
                "new_keys_per_second",
                new_keys_problem(self.new_keys_per_second),
            ),
            (
                "max_request_window_seconds",
                request_window_problem(self.max_request_window_seconds),
            ),
        ] {
            if let Some(m) = message {
                check(false, field, m);
            }
        }
        out
    }
}

/// Checks a per-tenant key budget (global default or a tenant's own).
pub fn max_keys_problem(n: u64) -> Option<String> {
    (!(1..=MAX_KEYS_PER_TENANT).contains(&n))
        .then(|| format!("must be an integer from 1 to {MAX_KEYS_PER_TENANT}, got {n}"))
}

/// Checks a key-creation rate (global default or a tenant's own).
pub fn new_keys_problem(n: u64) -> Option<String> {
    (!(1..=MAX_NEW_KEYS_PER_SECOND).contains(&n))
        .then(|| format!("must be an integer from 1 to {MAX_NEW_KEYS_PER_SECOND}, got {n}"))
}

/// Checks a cap on request-supplied windows (global default or a tenant's own).
pub fn request_window_problem(n: u64) -> Option<String> {
    (!(1..=DEFAULT_MAX_REQUEST_WINDOW_SECONDS).contains(&n)).then(|| {
        format!(
            "must be an integer from 1 to {DEFAULT_MAX_REQUEST_WINDOW_SECONDS} (seconds), got {n}"
        )
    })
}

/// Checks a weight from the API or a file.
pub fn weight_problem(weight: u32) -> Option<String> {
    (!(1..=MAX_WEIGHT).contains(&weight))
        .then(|| format!("weight must be an integer from 1 to {MAX_WEIGHT}, got {weight}"))
}
