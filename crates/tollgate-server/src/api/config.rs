//! `/api/config*`: read and change limits, weights and global settings at runtime.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tollgate_core::config::{
    policy_spec, AlgorithmName, Change, GlobalPatch, LimitEntry, LimitSpec, TenantSettingsPatch,
};
use tollgate_core::limit::validate_id;
use tollgate_core::policy::Policy;
use tollgate_core::whole_number;
use tollgate_core::Limit;

use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::state::AppState;

/// Admits a configuration write only while the API is the source of truth. Listed first among a
/// write handler's arguments, so with `--config FILE` every write answers 409
/// `config_managed_by_file`, whatever its path or body.
pub struct ConfigWrite;

impl FromRequestParts<AppState> for ConfigWrite {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match state.config_file() {
            Some(path) => Err(ApiError::ConfigManagedByFile(path.display().to_string())),
            None => Ok(ConfigWrite),
        }
    }
}

fn id(field: &str, value: &str) -> Result<(), ApiError> {
    validate_id(field, value).map_err(|e| ApiError::InvalidArgument(e.0))
}

/// New global load settings: any subset of the keys; an omitted key keeps its value.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalBody {
    /// Decisions allowed in flight at once, 1 ..= 1,000,000.
    #[serde(default, deserialize_with = "whole_number::option")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    max_global_concurrent_requests: Option<u32>,
    /// Requests allowed to wait per tenant, 0 ..= 1,000,000.
    #[serde(default, deserialize_with = "whole_number::option")]
    #[schema(minimum = 0, maximum = 1_000_000)]
    max_tenant_queue_size: Option<u32>,
    /// How long a request may wait in its queue, 1 ..= 600,000 ms.
    #[serde(default, deserialize_with = "whole_number::option")]
    #[schema(minimum = 1, maximum = 600_000)]
    queue_timeout_ms: Option<u64>,
    /// Keys one tenant may have tracked, 1 ..= 1,000,000,000 (default 1,000,000; memory store; at
    /// most a quarter of `--max-keys` whatever is set). Unconfigured tenants also share one pool of
    /// this size.
    #[serde(default, deserialize_with = "whole_number::option")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    max_keys_per_tenant: Option<u64>,
    /// New keys one tenant may create per second, 1 ..= 1,000,000,000 (default 1,000; burst one
    /// second's worth). Unconfigured tenants also share one bucket of this rate.
    #[serde(default, deserialize_with = "whole_number::option")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    new_keys_per_second: Option<u64>,
    /// Longest window, in seconds, a limit sent with a request may set, 1 ..= 31,536,000
    /// (default 31,536,000).
    #[serde(default, deserialize_with = "whole_number::option")]
    #[schema(minimum = 1, maximum = 31_536_000)]
    max_request_window_seconds: Option<u64>,
}

#[utoipa::path(
    put,
    path = "/api/config/global",
    tag = "configuration",
    security(("admin_token" = [])),
    request_body = GlobalBody,
    responses(
        (status = 200, description = "Applied", body = super::schema::GlobalUpdated),
        (status = 400, description = "invalid_json, invalid_argument or no_limit", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 409, description = "config_managed_by_file: --config FILE is the source of truth; edit the file instead", body = crate::error::ErrorBody),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = crate::error::ErrorBody),
        (status = 500, description = "internal: the stored configuration is unreadable", body = crate::error::ErrorBody),
        (status = 503, description = "store_unavailable: the configuration store (data dir or Redis) could not be written and nothing changed; or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn put_global(
    _: ConfigWrite,
    State(state): State<AppState>,
    Json(body): Json<GlobalBody>,
) -> Result<Response, ApiError> {
    // Omitted keys are filled in from the configuration in force when the change is applied,
    // under the writer lock: reading them here could undo a change acknowledged meanwhile.
    let patch = GlobalPatch {
        max_global_concurrent_requests: body.max_global_concurrent_requests,
        max_tenant_queue_size: body.max_tenant_queue_size,
        queue_timeout_ms: body.queue_timeout_ms,
        max_keys_per_tenant: body.max_keys_per_tenant,
        new_keys_per_second: body.new_keys_per_second,
        max_request_window_seconds: body.max_request_window_seconds,
    };
    let snap = state.engine().update_config(Change::Global(patch)).await?;
    Ok(axum::Json(json!({
        "status": "updated",
        "global": snap.global,
        "version": snap.version,
    }))
    .into_response())
}

#[utoipa::path(
    get,
    path = "/api/config/tenant/{tenant}",
    tag = "configuration",
    security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "Tenant id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses(
        (status = 200, description = "The tenant's limits and weight (defaults when none are set)", body = super::schema::TenantView),
        (status = 400, description = "invalid_json, invalid_argument or no_limit", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
    )
)]
pub async fn get_tenant(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    id("tenant_id", &tenant)?;
    let snap = state.engine().config();
    let doc = snap.tenant_document(&tenant);
    Ok(axum::Json(json!({
        "tenant_id": tenant,
        "weight": doc.weight,
        "actions": doc.actions,
        "clients": doc.clients,
        "state_bounds": state_bounds(&snap, &tenant),
        "version": snap.version,
    }))
    .into_response())
}

/// The tenant's bounds on state as they apply, and which are its own.
fn state_bounds(snap: &tollgate_core::config::Snapshot, tenant: &str) -> serde_json::Value {
    let g = &snap.global;
    let t = snap.tenants.get(tenant);
    let own = |f: fn(&tollgate_core::config::TenantLimits) -> Option<u64>| t.and_then(|t| f(t));
    let max_keys = own(|t| t.max_keys);
    let rate = own(|t| t.new_keys_per_second);
    let window = own(|t| t.max_request_window_seconds);
    json!({
        "configured": t.is_some(),
        "max_keys": max_keys.unwrap_or(g.max_keys_per_tenant),
        "new_keys_per_second": rate.unwrap_or(g.new_keys_per_second),
        "max_request_window_seconds": window.unwrap_or(g.max_request_window_seconds),
        "overrides": {
            "max_keys": max_keys,
            "new_keys_per_second": rate,
            "max_request_window_seconds": window,
        },
    })
}

/// A limit: `max_requests` 1..=10^9, `window_duration_seconds` > 0 and <= 31,536,000, and
/// optionally `algorithm`, `burst`, `calendar`, `name`, `shadow`; or `{"limits": [ ... ]}` with
/// 1 to 8 such limits (README "Policies").
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitBody {
    /// Required unless `limits` is given. 1 ..= 1,000,000,000.
    #[serde(default, deserialize_with = "whole_number::option")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    max_requests: Option<u64>,
    /// Seconds, > 0 and <= 31,536,000, rounded to the nearest millisecond (at least one); may
    /// be omitted with `calendar` (fixed_window).
    #[schema(minimum = 0.001, maximum = 31_536_000.0)]
    window_duration_seconds: Option<f64>,
    #[schema(value_type = Option<super::schema::AlgorithmSchema>)]
    algorithm: Option<AlgorithmName>,
    /// gcra only: 1 ..= 1,000,000,000, and burst × window / max_requests at most 2^53 µs (about
    /// 285 years).
    #[serde(default, deserialize_with = "whole_number::option")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    burst: Option<u64>,
    #[schema(value_type = Option<super::schema::CalendarSchema>)]
    calendar: Option<tollgate_core::policy::Calendar>,
    /// 1-64 printable ASCII characters.
    #[schema(min_length = 1, max_length = 64, pattern = "^[ -~]{1,64}$")]
    name: Option<String>,
    shadow: Option<bool>,
    /// Several limits instead of one (then give no other field).
    #[schema(value_type = Option<Vec<super::schema::LimitSpecSchema>>, min_items = 1, max_items = 8)]
    limits: Option<Vec<LimitSpec>>,
}

/// What a limit body sets: the seed's one sliding-log limit, or a policy.
enum Limits {
    One(Limit),
    Policy(Policy),
}

impl LimitBody {
    fn limits(self) -> Result<Limits, ApiError> {
        // A window that is given must be valid even where it may be omitted (with `calendar`):
        // 0 is not "omitted".
        if let Some(w) = self.window_duration_seconds {
            tollgate_core::limit::window_micros(w).map_err(|e| ApiError::InvalidArgument(e.0))?;
        }
        let entry = match (self.limits, self.max_requests) {
            (Some(limits), None)
                if self.window_duration_seconds.is_none()
                    && self.algorithm.is_none()
                    && self.burst.is_none()
                    && self.calendar.is_none()
                    && self.name.is_none()
                    && self.shadow.is_none() =>
            {
                LimitEntry::Many { limits }
            }
            (Some(_), _) => {
                return Err(ApiError::InvalidArgument(
                    "give either one limit (max_requests, window_duration_seconds, ...) or \"limits\": [ ... ], not both".into(),
                ))
            }
            (None, None) => {
                return Err(ApiError::InvalidArgument(
                    "max_requests is required (or \"limits\": [ ... ])".into(),
                ))
            }
            (None, Some(max_requests)) => {
                let plain = self.algorithm.is_none()
                    && self.burst.is_none()
                    && self.calendar.is_none()
                    && self.name.is_none()
                    && self.shadow.is_none();
                if plain {
                    let w = self.window_duration_seconds.ok_or_else(|| {
                        ApiError::InvalidArgument(
                            "missing field `window_duration_seconds`".into(),
                        )
                    })?;
                    return Limit::new(max_requests, w)
                        .map(Limits::One)
                        .map_err(|e| ApiError::InvalidArgument(e.0));
                }
                LimitEntry::One(LimitSpec {
                    max_requests,
                    window_duration_seconds: self.window_duration_seconds.unwrap_or(0.0),
                    algorithm: self.algorithm,
                    burst: self.burst,
                    calendar: self.calendar,
                    name: self.name,
                    shadow: self.shadow.unwrap_or(false),
                })
            }
        };
        policy_spec::policy(&entry)
            .map(Limits::Policy)
            .map_err(|ps| {
                ApiError::InvalidArgument(
                    ps.into_iter()
                        .map(|(path, m)| {
                            if path.is_empty() {
                                m
                            } else {
                                format!("{}: {m}", path.trim_start_matches('.'))
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })
    }
}

fn limit_json(l: &Limit) -> serde_json::Value {
    json!({"max_requests": l.max_requests, "window_duration_seconds": l.window_seconds()})
}

fn limits_json(l: &Limits) -> serde_json::Value {
    match l {
        Limits::One(l) => limit_json(l),
        Limits::Policy(p) => serde_json::to_value(policy_spec::entry(p)).unwrap_or_default(),
    }
}

#[utoipa::path(
    put,
    path = "/api/config/tenant/{tenant}/action/{action}",
    tag = "configuration",
    security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "Tenant id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"), ("action" = String, Path, description = "Action type: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    request_body = LimitBody,
    responses(
        (status = 200, description = "Applied", body = super::schema::ActionUpdated),
        (status = 400, description = "invalid_json, invalid_argument or no_limit", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 409, description = "config_managed_by_file: --config FILE is the source of truth; edit the file instead", body = crate::error::ErrorBody),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = crate::error::ErrorBody),
        (status = 500, description = "internal: the stored configuration is unreadable", body = crate::error::ErrorBody),
        (status = 503, description = "store_unavailable: the configuration store (data dir or Redis) could not be written and nothing changed; or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn put_action(
    _: ConfigWrite,
    State(state): State<AppState>,
    Path((tenant, action)): Path<(String, String)>,
    Json(body): Json<LimitBody>,
) -> Result<Response, ApiError> {
    id("tenant_id", &tenant)?;
    id("action_type", &action)?;
    let limits = body.limits()?;
    let change = match &limits {
        Limits::One(limit) => Change::SetAction {
            tenant: tenant.clone(),
            action: action.clone(),
            limit: *limit,
        },
        Limits::Policy(policy) => Change::SetActionPolicy {
            tenant: tenant.clone(),
            action: action.clone(),
            policy: policy.clone(),
        },
    };
    let snap = state.engine().update_config(change).await?;
    Ok(axum::Json(json!({
        "status": "updated",
        "tenant_id": tenant,
        "action_type": action,
        "limit": limits_json(&limits),
        "version": snap.version,
    }))
    .into_response())
}

#[utoipa::path(
    delete,
    path = "/api/config/tenant/{tenant}/action/{action}",
    tag = "configuration",
    security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "Tenant id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"), ("action" = String, Path, description = "Action type: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses(
        (status = 200, description = "Applied", body = super::schema::ActionDeleted),
        (status = 400, description = "invalid_json, invalid_argument or no_limit", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 409, description = "config_managed_by_file: --config FILE is the source of truth; edit the file instead", body = crate::error::ErrorBody),
        (status = 404, description = "not_found: nothing to delete", body = crate::error::ErrorBody),
        (status = 500, description = "internal: the stored configuration is unreadable", body = crate::error::ErrorBody),
        (status = 503, description = "store_unavailable: the configuration store (data dir or Redis) could not be written and nothing changed; or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn delete_action(
    _: ConfigWrite,
    State(state): State<AppState>,
    Path((tenant, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    id("tenant_id", &tenant)?;
    id("action_type", &action)?;
    let snap = state
        .engine()
        .update_config(Change::DeleteAction {
            tenant: tenant.clone(),
            action: action.clone(),
        })
        .await?;
    Ok(axum::Json(json!({
        "status": "deleted",
        "tenant_id": tenant,
        "action_type": action,
        "version": snap.version,
    }))
    .into_response())
}

#[utoipa::path(
    put,
    path = "/api/config/tenant/{tenant}/client/{client}/action/{action}",
    tag = "configuration",
    security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "Tenant id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"), ("client" = String, Path, description = "Client id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"), ("action" = String, Path, description = "Action type: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    request_body = LimitBody,
    responses(
        (status = 200, description = "Applied", body = super::schema::ClientUpdated),
        (status = 400, description = "invalid_json, invalid_argument or no_limit", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 409, description = "config_managed_by_file: --config FILE is the source of truth; edit the file instead", body = crate::error::ErrorBody),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = crate::error::ErrorBody),
        (status = 500, description = "internal: the stored configuration is unreadable", body = crate::error::ErrorBody),
        (status = 503, description = "store_unavailable: the configuration store (data dir or Redis) could not be written and nothing changed; or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn put_client(
    _: ConfigWrite,
    State(state): State<AppState>,
    Path((tenant, client, action)): Path<(String, String, String)>,
    Json(body): Json<LimitBody>,
) -> Result<Response, ApiError> {
    id("tenant_id", &tenant)?;
    id("client_id", &client)?;
    id("action_type", &action)?;
    let limits = body.limits()?;
    let change = match &limits {
        Limits::One(limit) => Change::SetClient {
            tenant: tenant.clone(),
            client: client.clone(),
            action: action.clone(),
            limit: *limit,
        },
        Limits::Policy(policy) => Change::SetClientPolicy {
            tenant: tenant.clone(),
            client: client.clone(),
            action: action.clone(),
            policy: policy.clone(),
        },
    };
    let snap = state.engine().update_config(change).await?;
    Ok(axum::Json(json!({
        "status": "updated",
        "tenant_id": tenant,
        "client_id": client,
        "action_type": action,
        "limit": limits_json(&limits),
        "version": snap.version,
    }))
    .into_response())
}

#[utoipa::path(
    delete,
    path = "/api/config/tenant/{tenant}/client/{client}/action/{action}",
    tag = "configuration",
    security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "Tenant id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"), ("client" = String, Path, description = "Client id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"), ("action" = String, Path, description = "Action type: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses(
        (status = 200, description = "Applied", body = super::schema::ClientDeleted),
        (status = 400, description = "invalid_json, invalid_argument or no_limit", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 409, description = "config_managed_by_file: --config FILE is the source of truth; edit the file instead", body = crate::error::ErrorBody),
        (status = 404, description = "not_found: nothing to delete", body = crate::error::ErrorBody),
        (status = 500, description = "internal: the stored configuration is unreadable", body = crate::error::ErrorBody),
        (status = 503, description = "store_unavailable: the configuration store (data dir or Redis) could not be written and nothing changed; or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn delete_client(
    _: ConfigWrite,
    State(state): State<AppState>,
    Path((tenant, client, action)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    id("tenant_id", &tenant)?;
    id("client_id", &client)?;
    id("action_type", &action)?;
    let snap = state
        .engine()
        .update_config(Change::DeleteClient {
            tenant: tenant.clone(),
            client: client.clone(),
            action: action.clone(),
        })
        .await?;
    Ok(axum::Json(json!({
        "status": "deleted",
        "tenant_id": tenant,
        "client_id": client,
        "action_type": action,
        "version": snap.version,
    }))
    .into_response())
}

/// A fair-share weight, 1..=1000 (default 1).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightBody {
    #[serde(deserialize_with = "whole_number::exact")]
    #[schema(minimum = 1, maximum = 1000)]
    weight: u32,
}

#[utoipa::path(
    put,
    path = "/api/config/tenant/{tenant}/weight",
    tag = "configuration",
    security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "Tenant id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    request_body = WeightBody,
    responses(
        (status = 200, description = "Applied", body = super::schema::WeightUpdated),
        (status = 400, description = "invalid_json, invalid_argument or no_limit", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 409, description = "config_managed_by_file: --config FILE is the source of truth; edit the file instead", body = crate::error::ErrorBody),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = crate::error::ErrorBody),
        (status = 500, description = "internal: the stored configuration is unreadable", body = crate::error::ErrorBody),
        (status = 503, description = "store_unavailable: the configuration store (data dir or Redis) could not be written and nothing changed; or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn put_weight(
    _: ConfigWrite,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Json(body): Json<WeightBody>,
) -> Result<Response, ApiError> {
    id("tenant_id", &tenant)?;
    let snap = state
        .engine()
        .update_config(Change::Weight {
            tenant: tenant.clone(),
            weight: body.weight,
        })
        .await?;
    Ok(axum::Json(json!({
        "status": "updated",
        "tenant_id": tenant,
        "weight": body.weight,
        "version": snap.version,
    }))
    .into_response())
}

/// `Some(v)` for any present value, `null` included, so an omitted field (`None`) differs from an
/// explicit `null` (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    whole_number::option(d).map(Some)
}

/// Some of a tenant's settings. An omitted field keeps its value; for the bounds on state, `null`
/// removes the tenant's own value so the global one applies again.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSettingsBody {
    /// Fair-share weight, 1..=1000.
    #[serde(default, deserialize_with = "whole_number::option")]
    #[schema(minimum = 1, maximum = 1000)]
    weight: Option<u32>,
    /// Keys this tenant may have tracked, 1..=10^9 (memory store; at most a quarter of
    /// `--max-keys` whatever is set).
    #[serde(default, alias = "max_keys_per_tenant", deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1_000_000_000)]
    max_keys: Option<Option<u64>>,
    /// New keys this tenant may create per second, 1..=10^9; burst one second's worth.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1_000_000_000)]
    new_keys_per_second: Option<Option<u64>>,
    /// Longest window, in seconds (1..=31,536,000), a limit sent with a request may set.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 31_536_000)]
    max_request_window_seconds: Option<Option<u64>>,
}

#[utoipa::path(
    put,
    path = "/api/config/tenant/{tenant}/settings",
    tag = "configuration",
    security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "Tenant id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    request_body = TenantSettingsBody,
    responses(
        (status = 200, description = "Applied", body = super::schema::TenantSettingsUpdated),
        (status = 400, description = "invalid_json, invalid_argument or no_limit", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 409, description = "config_managed_by_file: --config FILE is the source of truth; edit the file instead", body = crate::error::ErrorBody),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = crate::error::ErrorBody),
        (status = 500, description = "internal: the stored configuration is unreadable", body = crate::error::ErrorBody),
        (status = 503, description = "store_unavailable: the configuration store (data dir or Redis) could not be written and nothing changed; or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn put_settings(
    _: ConfigWrite,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Json(body): Json<TenantSettingsBody>,
) -> Result<Response, ApiError> {
    id("tenant_id", &tenant)?;
    let snap = state
        .engine()
        .update_config(Change::TenantSettings {
            tenant: tenant.clone(),
            patch: TenantSettingsPatch {
                weight: body.weight,
                max_keys: body.max_keys,
                new_keys_per_second: body.new_keys_per_second,
                max_request_window_seconds: body.max_request_window_seconds,
            },
        })
        .await?;
    let weight = snap.tenants.get(&tenant).map_or(1, |t| t.weight);
    Ok(axum::Json(json!({
        "status": "updated",
        "tenant_id": tenant,
        "weight": weight,
        "state_bounds": state_bounds(&snap, &tenant),
        "version": snap.version,
    }))
    .into_response())
}

#[utoipa::path(
    delete,
    path = "/api/config/tenant/{tenant}",
    tag = "configuration",
    security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "Tenant id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses(
        (status = 200, description = "Removed the tenant's limits, weight and bounds on state; its API keys stay", body = super::schema::TenantDeleted),
        (status = 400, description = "invalid_argument: a malformed tenant id", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 404, description = "not_found: the tenant has no limits, weight or settings of its own", body = crate::error::ErrorBody),
        (status = 409, description = "config_managed_by_file: --config FILE is the source of truth; edit the file instead", body = crate::error::ErrorBody),
        (status = 500, description = "internal: the stored configuration is unreadable", body = crate::error::ErrorBody),
        (status = 503, description = "store_unavailable: the configuration store (data dir or Redis) could not be written and nothing changed; or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn delete_tenant(
    _: ConfigWrite,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    id("tenant_id", &tenant)?;
    // What was removed is read just before the change; only another admin's change to this
    // tenant in between (API mode) could make the report differ from what the change removed.
    let before = state.engine().config_arc();
    let snap = state
        .engine()
        .update_config(Change::DeleteTenant {
            tenant: tenant.clone(),
        })
        .await?;
    let mut removed = before.tenant_document(&tenant);
    let api_keys_kept = removed.api_keys.len();
    removed.api_keys.clear();
    Ok(axum::Json(json!({
        "status": "deleted",
        "tenant_id": tenant,
        "removed": {
            "weight": removed.weight,
            "actions": removed.actions,
            "clients": removed.clients,
            "state_bound_overrides": {
                "max_keys": removed.max_keys,
                "new_keys_per_second": removed.new_keys_per_second,
                "max_request_window_seconds": removed.max_request_window_seconds,
            },
        },
        "api_keys_kept": api_keys_kept,
        "version": snap.version,
    }))
    .into_response())
}

#[utoipa::path(
    delete,
    path = "/api/config/tenant/{tenant}/weight",
    tag = "configuration",
    security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "Tenant id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses(
        (status = 200, description = "The tenant's weight is back to the default, 1", body = super::schema::WeightDeleted),
        (status = 400, description = "invalid_argument: a malformed tenant id", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 404, description = "not_found: the tenant has no weight of its own", body = crate::error::ErrorBody),
        (status = 409, description = "config_managed_by_file: --config FILE is the source of truth; edit the file instead", body = crate::error::ErrorBody),
        (status = 500, description = "internal: the stored configuration is unreadable", body = crate::error::ErrorBody),
        (status = 503, description = "store_unavailable: the configuration store (data dir or Redis) could not be written and nothing changed; or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn delete_weight(
    _: ConfigWrite,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    id("tenant_id", &tenant)?;
    let before = state.engine().config_arc();
    let snap = state
        .engine()
        .update_config(Change::ResetWeight {
            tenant: tenant.clone(),
        })
        .await?;
    Ok(axum::Json(json!({
        "status": "deleted",
        "tenant_id": tenant,
        "removed_weight": before.tenant_document(&tenant).weight,
        "weight": 1,
        "version": snap.version,
    }))
    .into_response())
}
