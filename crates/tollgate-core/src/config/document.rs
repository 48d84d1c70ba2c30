//! The configuration as documents: what `GET /api/config` returns, what is persisted, and what a
//! `--config` TOML file holds — one shape for all three, so there is nothing to translate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::credentials::ApiKeyRecord;

/// A limit as the API and files spell it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    pub max_requests: u64,
    pub window_duration_seconds: f64,
}

/// Load-management settings shared by all tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalSettings {
    /// Decisions allowed in flight at once; beyond it requests queue per tenant.
    pub max_global_concurrent_requests: u32,
    /// Requests allowed to wait per tenant; beyond it they are rejected at once.
    pub max_tenant_queue_size: u32,
    /// How long a request may wait in its queue before it is answered `timeout`.
    #[serde(default = "default_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
}

pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 1000;
pub const MAX_CONCURRENCY: u32 = 1_000_000;
pub const MAX_QUEUE_SIZE: u32 = 1_000_000;
pub const MAX_QUEUE_TIMEOUT_MS: u64 = 600_000;
pub const MAX_WEIGHT: u32 = 1_000;

fn default_queue_timeout_ms() -> u64 {
    DEFAULT_QUEUE_TIMEOUT_MS
}

impl Default for GlobalSettings {
    fn default() -> Self {
        Self {
            max_global_concurrent_requests: 1000,
            max_tenant_queue_size: 100,
            queue_timeout_ms: DEFAULT_QUEUE_TIMEOUT_MS,
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
    pub actions: BTreeMap<String, LimitSpec>,
    /// Client-specific limits: client id → action → limit. These win over `actions`.
    #[serde(default)]
    pub clients: BTreeMap<String, BTreeMap<String, LimitSpec>>,
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
        out
    }
}

/// Checks a weight from the API or a file.
pub fn weight_problem(weight: u32) -> Option<String> {
    (!(1..=MAX_WEIGHT).contains(&weight))
        .then(|| format!("weight must be an integer from 1 to {MAX_WEIGHT}, got {weight}"))
}
