//! `/api/config/tenant/{tenant}/keys*`: issue, list and revoke a tenant's API keys (admin).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tollgate_core::config::{Change, ConfigError};
use tollgate_core::credentials::{self, CredentialError};
use tollgate_core::limit::validate_id;

use crate::error::ApiError;
use crate::extract::{parse_json, Path, RawBody};
use crate::state::AppState;

fn tenant_id(value: &str) -> Result<(), ApiError> {
    validate_id("tenant_id", value).map_err(|e| ApiError::InvalidArgument(e.0))
}

fn now_unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Optional body of a key creation.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    /// Free text, at most 128 bytes, e.g. which service will hold the key.
    #[serde(default)]
    #[schema(max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    name: String,
}

/// A key just issued. `key` is shown this once; only its hash is kept.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IssuedKeyBody<'a> {
    tenant_id: &'a str,
    key_id: &'a str,
    /// `tg_<key_id>_<secret>`: send it as `Authorization: Bearer <key>`.
    key: &'a str,
    name: &'a str,
    /// Unix time, seconds.
    created_at: u64,
    version: u64,
}

/// One key, without its secret.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyView<'a> {
    key_id: &'a str,
    name: &'a str,
    /// Unix time, seconds.
    created_at: u64,
}

/// `GET /api/config/tenant/{tenant}/keys`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyList<'a> {
    tenant_id: &'a str,
    keys: Vec<KeyView<'a>>,
    version: u64,
}

/// `DELETE /api/config/tenant/{tenant}/keys/{key_id}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyDeleted {
    /// `deleted`.
    status: String,
    tenant_id: String,
    key_id: String,
    version: u64,
}

#[utoipa::path(
    post,
    path = "/api/config/tenant/{tenant}/keys",
    tag = "configuration",
    security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "Tenant id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    request_body(content = Option<NewKeyBody>, description = "Optional; an empty body issues an unnamed key"),
    responses(
        (status = 201, description = "Issued; the key is in this answer only", body = IssuedKeyBody),
        (status = 400, description = "invalid_json or invalid_argument (bad tenant id or name, or the tenant already holds 100 keys)", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = crate::error::ErrorBody),
        (status = 500, description = "internal: the stored configuration is unreadable, or the OS random number generator failed", body = crate::error::ErrorBody),
        (status = 503, description = "store_unavailable: the configuration store (data dir or Redis) could not be written and nothing changed; or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn create_key(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    tenant_id(&tenant)?;
    // The body is optional, and the document says so with `null`: no body, an empty one and
    // `null` all issue an unnamed key.
    let body: NewKeyBody = if matches!(body.trim_ascii(), b"" | b"null") {
        NewKeyBody::default()
    } else {
        parse_json(&body)?
    };
    let issued = credentials::issue(&body.name, now_unix_secs()).map_err(|e| match e {
        CredentialError::Invalid(m) => ApiError::InvalidArgument(m),
        CredentialError::Random(m) => ApiError::Internal(m),
    })?;
    let snap = state
        .engine()
        .update_config(Change::AddApiKey {
            tenant: tenant.clone(),
            key_id: issued.key_id.clone(),
            record: issued.record.clone(),
        })
        .await?;
    tracing::info!(tenant = %tenant, key_id = %issued.key_id, "tenant key issued");
    let bytes = serde_json::to_vec(&IssuedKeyBody {
        tenant_id: &tenant,
        key_id: &issued.key_id,
        key: issued.key(),
        name: &issued.record.name,
        created_at: issued.record.created_at,
        version: snap.version,
    })
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut resp = (StatusCode::CREATED, bytes).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // The answer carries a secret: no cache along the way may keep it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[utoipa::path(
    get,
    path = "/api/config/tenant/{tenant}/keys",
    tag = "configuration",
    security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "Tenant id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses(
        (status = 200, description = "The tenant's keys, without secrets, oldest first", body = KeyList),
        (status = 400, description = "invalid_argument: bad tenant id", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
    )
)]
pub async fn list_keys(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    tenant_id(&tenant)?;
    let snap = state.engine().config();
    let mut keys: Vec<KeyView> = snap
        .tenants
        .get(&tenant)
        .map(|t| {
            t.api_keys
                .iter()
                .map(|(id, r)| KeyView {
                    key_id: id,
                    name: &r.name,
                    created_at: r.created_at,
                })
                .collect()
        })
        .unwrap_or_default();
    keys.sort_by(|a, b| (a.created_at, a.key_id).cmp(&(b.created_at, b.key_id)));
    Ok(axum::Json(KeyList {
        tenant_id: &tenant,
        keys,
        version: snap.version,
    })
    .into_response())
}

#[utoipa::path(
    delete,
    path = "/api/config/tenant/{tenant}/keys/{key_id}",
    tag = "configuration",
    security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "Tenant id: 1-256 bytes of printable UTF-8", min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"), ("key_id" = String, Path, description = "The key's id (16 hex digits)")),
    responses(
        (status = 200, description = "Revoked; the key stops working at once on this instance and, in redis mode, within the configuration sync interval on the others", body = KeyDeleted),
        (status = 400, description = "invalid_argument: bad tenant id", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 404, description = "not_found: the tenant has no such key", body = crate::error::ErrorBody),
        (status = 500, description = "internal: the stored configuration is unreadable", body = crate::error::ErrorBody),
        (status = 503, description = "store_unavailable: the configuration store (data dir or Redis) could not be written and nothing changed; or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn delete_key(
    State(state): State<AppState>,
    Path((tenant, key_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    tenant_id(&tenant)?;
    let snap = state
        .engine()
        .update_config(Change::RemoveApiKey {
            tenant: tenant.clone(),
            key_id: key_id.clone(),
        })
        .await
        .map_err(|e| match e {
            // Not echoing a possibly hostile key id into the message.
            ConfigError::NotFound(_) => {
                ApiError::NotFound("this tenant has no key with that id".into())
            }
            e => e.into(),
        })?;
    tracing::info!(tenant = %tenant, key_id = %key_id, "tenant key revoked");
    Ok(axum::Json(KeyDeleted {
        status: "deleted".into(),
        tenant_id: tenant,
        key_id,
        version: snap.version,
    })
    .into_response())
}
