//! OpenAPI schemas for bodies the handlers build with `json!` or take from the core crate (which
//! has no OpenAPI dependency). Each mirrors its handler's output field for field; the OpenAPI
//! tests compare real responses against these schemas so they cannot drift silently.
#![allow(dead_code)]

use std::collections::BTreeMap;

use utoipa::ToSchema;

/// Which configured (or requested) limit applied.
#[derive(ToSchema)]
#[schema(as = LimitSource)]
#[allow(non_camel_case_types)]
pub enum LimitSourceSchema {
    client,
    action,
    request,
}

/// A limit's algorithm.
#[derive(ToSchema, serde::Serialize)]
#[schema(as = Algorithm)]
#[allow(non_camel_case_types)]
pub enum AlgorithmSchema {
    sliding_log,
    gcra,
    sliding_window_counter,
    fixed_window,
}

/// A UTC calendar period a fixed window can be aligned to.
#[derive(ToSchema, serde::Serialize)]
#[schema(as = Calendar)]
#[allow(non_camel_case_types)]
pub enum CalendarSchema {
    day,
    week,
    month,
}

/// A limit as the API spells it.
#[derive(ToSchema, serde::Serialize)]
#[schema(as = LimitSpec)]
pub struct LimitSpecSchema {
    /// 1 ..= 1,000,000,000.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub max_requests: u64,
    /// Seconds, > 0 and <= 31,536,000, rounded to the nearest millisecond (at least one); may
    /// be omitted with `calendar` (fixed_window).
    #[schema(minimum = 0.001, maximum = 31_536_000.0)]
    pub window_duration_seconds: Option<f64>,
    /// Default `sliding_log`.
    pub algorithm: Option<AlgorithmSchema>,
    /// gcra only: 1 ..= 1,000,000,000 (default max_requests), and burst × window / max_requests
    /// at most 2^53 µs (about 285 years).
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub burst: Option<u64>,
    /// fixed_window only.
    pub calendar: Option<CalendarSchema>,
    /// 1-64 printable ASCII characters.
    #[schema(min_length = 1, max_length = 64, pattern = "^[ -~]{1,64}$")]
    pub name: Option<String>,
    /// Decide and count, never deny.
    pub shadow: Option<bool>,
}

/// Several limits on one key.
#[derive(ToSchema, serde::Serialize)]
#[schema(as = LimitList)]
pub struct LimitListSchema {
    /// 1 to 8 limits, no two with the same algorithm and window.
    #[schema(min_items = 1, max_items = 8)]
    pub limits: Vec<LimitSpecSchema>,
}

/// One limit, or several.
#[derive(ToSchema, serde::Serialize)]
#[serde(untagged)]
#[schema(as = LimitEntry)]
pub enum LimitEntrySchema {
    One(LimitSpecSchema),
    Many(LimitListSchema),
}

/// Load-management settings shared by all tenants.
#[derive(ToSchema)]
#[schema(as = GlobalSettings)]
pub struct GlobalSettingsSchema {
    pub max_global_concurrent_requests: u32,
    pub max_tenant_queue_size: u32,
    pub queue_timeout_ms: u64,
    /// Keys one tenant may have tracked (memory store); also the size of the pool shared by
    /// unconfigured tenants.
    pub max_keys_per_tenant: u64,
    /// New keys one tenant may create per second; also the shared pool's rate.
    pub new_keys_per_second: u64,
    /// Longest window a request-supplied limit may set, in seconds.
    pub max_request_window_seconds: u64,
}

/// One tenant's limits and fair-share weight.
#[derive(ToSchema)]
#[schema(as = TenantDocument)]
pub struct TenantDocumentSchema {
    pub weight: u32,
    /// Action → limit, for every client of the tenant.
    pub actions: BTreeMap<String, LimitEntrySchema>,
    /// Client → action → limit; wins over `actions`.
    pub clients: BTreeMap<String, BTreeMap<String, LimitEntrySchema>>,
    /// The tenant's own key budget; absent = `global.max_keys_per_tenant`.
    pub max_keys: Option<u64>,
    /// The tenant's own key-creation rate; absent = `global.new_keys_per_second`.
    pub new_keys_per_second: Option<u64>,
    /// The tenant's own cap on request windows; absent = `global.max_request_window_seconds`.
    pub max_request_window_seconds: Option<u64>,
    /// Key id → the tenant's API key, hashed; omitted when the tenant has none. Managed through
    /// `/api/config/tenant/{tenant}/keys`.
    pub api_keys: Option<BTreeMap<String, ApiKeyRecordSchema>>,
}

/// A tenant API key as stored: never the key itself.
#[derive(ToSchema)]
#[schema(as = ApiKeyRecord)]
pub struct ApiKeyRecordSchema {
    pub name: String,
    /// Lowercase hex SHA-256 of the whole key.
    pub sha256: String,
    /// Unix time, seconds.
    pub created_at: u64,
}

/// The whole configuration (`GET /api/config`; also the `--config` file's shape).
#[derive(ToSchema)]
#[schema(as = ConfigDocument)]
pub struct ConfigDocumentSchema {
    pub version: u64,
    pub global: GlobalSettingsSchema,
    pub tenants: BTreeMap<String, TenantDocumentSchema>,
}

/// One page of the configuration.
#[derive(ToSchema)]
pub struct ConfigPage {
    pub version: u64,
    pub global: GlobalSettingsSchema,
    /// Up to `limit` configured tenants, in tenant id order.
    pub tenants: BTreeMap<String, TenantDocumentSchema>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_after: Option<String>,
}

/// A batch applied.
#[derive(ToSchema)]
pub struct BatchApplied {
    /// `applied`.
    pub status: String,
    /// How many changes the batch held.
    pub changes: usize,
    /// The configuration version every change of the batch carries.
    pub version: u64,
}

/// A tenant's bounds on state as they apply to it.
#[derive(ToSchema)]
pub struct StateBounds {
    /// Whether the tenant has a configuration; without one its new keys also count against the
    /// pool all unconfigured tenants share.
    pub configured: bool,
    pub max_keys: u64,
    pub new_keys_per_second: u64,
    pub max_request_window_seconds: u64,
    /// The tenant's own values (`null` = the global one applies).
    pub overrides: StateBoundOverrides,
}

/// A tenant's own bounds on state; `null` where the global value applies.
#[derive(ToSchema)]
pub struct StateBoundOverrides {
    pub max_keys: Option<u64>,
    pub new_keys_per_second: Option<u64>,
    pub max_request_window_seconds: Option<u64>,
}

/// `GET /api/config/tenant/{tenant}`.
#[derive(ToSchema)]
pub struct TenantView {
    pub tenant_id: String,
    pub weight: u32,
    pub actions: BTreeMap<String, LimitEntrySchema>,
    pub clients: BTreeMap<String, BTreeMap<String, LimitEntrySchema>>,
    pub state_bounds: StateBounds,
    pub version: u64,
}

/// `PUT /api/config/tenant/{tenant}/settings`.
#[derive(ToSchema)]
pub struct TenantSettingsUpdated {
    /// `updated`.
    pub status: String,
    pub tenant_id: String,
    pub weight: u32,
    pub state_bounds: StateBounds,
    pub version: u64,
}

/// `PUT /api/config/global`.
#[derive(ToSchema)]
pub struct GlobalUpdated {
    /// `updated`.
    pub status: String,
    pub global: GlobalSettingsSchema,
    pub version: u64,
}

/// `PUT /api/config/tenant/{tenant}/weight`.
#[derive(ToSchema)]
pub struct WeightUpdated {
    pub status: String,
    pub tenant_id: String,
    pub weight: u32,
    pub version: u64,
}

/// `PUT /api/config/tenant/{tenant}/action/{action}`.
#[derive(ToSchema)]
pub struct ActionUpdated {
    pub status: String,
    pub tenant_id: String,
    pub action_type: String,
    pub limit: LimitEntrySchema,
    pub version: u64,
}

/// `DELETE /api/config/tenant/{tenant}/action/{action}`.
#[derive(ToSchema)]
pub struct ActionDeleted {
    /// `deleted`.
    pub status: String,
    pub tenant_id: String,
    pub action_type: String,
    pub version: u64,
}

/// `PUT /api/config/tenant/{tenant}/client/{client}/action/{action}`.
#[derive(ToSchema)]
pub struct ClientUpdated {
    pub status: String,
    pub tenant_id: String,
    pub client_id: String,
    pub action_type: String,
    pub limit: LimitEntrySchema,
    pub version: u64,
}

/// `DELETE /api/config/tenant/{tenant}/client/{client}/action/{action}`.
#[derive(ToSchema)]
pub struct ClientDeleted {
    pub status: String,
    pub tenant_id: String,
    pub client_id: String,
    pub action_type: String,
    pub version: u64,
}

/// What `DELETE /api/config/tenant/{tenant}` removed.
#[derive(ToSchema)]
pub struct TenantRemoved {
    /// The weight the tenant had (1 when it had none of its own).
    pub weight: u32,
    pub actions: BTreeMap<String, LimitSpecSchema>,
    pub clients: BTreeMap<String, BTreeMap<String, LimitSpecSchema>>,
    pub state_bound_overrides: StateBoundOverrides,
}

/// `DELETE /api/config/tenant/{tenant}`.
#[derive(ToSchema)]
pub struct TenantDeleted {
    /// `deleted`.
    pub status: String,
    pub tenant_id: String,
    pub removed: TenantRemoved,
    /// The tenant's API keys, which stay (revoke them with `DELETE .../keys/{key_id}`).
    pub api_keys_kept: u64,
    pub version: u64,
}

/// `DELETE /api/config/tenant/{tenant}/weight`.
#[derive(ToSchema)]
pub struct WeightDeleted {
    /// `deleted`.
    pub status: String,
    pub tenant_id: String,
    /// The weight the tenant had.
    pub removed_weight: u32,
    /// The weight now: the default, 1.
    pub weight: u32,
    pub version: u64,
}

/// `GET /api/health`. While draining only `status` is present.
#[derive(ToSchema)]
pub struct HealthBody {
    /// `healthy`, `degraded` (store unreachable) or `draining` (shutting down).
    pub status: String,
    pub store: Option<String>,
    pub config_version: Option<u64>,
    pub in_flight: Option<u64>,
    pub queued: Option<u64>,
}
