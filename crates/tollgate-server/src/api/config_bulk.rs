//! Configuration at scale: `GET /api/config` in pages, `POST /api/config/batch` (many changes as
//! one), and `GET /api/config/export` (the whole configuration as JSON or TOML).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tollgate_core::config::{to_toml, Change};
use tollgate_core::limit::validate_id;
use tollgate_core::whole_number;
use tollgate_core::Limit;

use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::state::AppState;

/// Tenants per page when `limit` is not given.
pub const DEFAULT_PAGE_SIZE: usize = 1000;
/// The largest page.
pub const MAX_PAGE_SIZE: usize = 10_000;
/// The most changes one batch may hold (the body is also bounded to 64 KiB).
pub const MAX_BATCH_CHANGES: usize = 1000;

/// Which page of tenants to return.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Tenants per page, 1 ..= 10,000 (default 1,000).
    #[serde(default)]
    #[param(minimum = 1, maximum = 10_000)]
    limit: Option<u32>,
    /// Return tenants whose id sorts after this one (the previous page's `next_after`).
    #[serde(default)]
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    after: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/config",
    tag = "configuration",
    security(("admin_token" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "The global settings and one page of configured tenants, in tenant id order; `next_after` is the `after` of the next page (null on the last page)", body = super::schema::ConfigPage),
        (status = 400, description = "invalid_argument: a bad `limit` or `after`", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
    )
)]
pub async fn get_page(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = match q.limit {
        None => DEFAULT_PAGE_SIZE,
        Some(n) if (1..=MAX_PAGE_SIZE as u32).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::InvalidArgument(format!(
                "query string: limit must be an integer from 1 to {MAX_PAGE_SIZE}, got {n}"
            )))
        }
    };
    if let Some(after) = &q.after {
        validate_id("after", after).map_err(|e| ApiError::InvalidArgument(e.0))?;
    }
    let snap = state.engine().config_arc();
    let (page, next) = snap.page(q.after.as_deref(), limit);
    let tenants: BTreeMap<&str, _> = page
        .iter()
        .map(|(tid, _)| (tid.as_str(), snap.tenant_document(tid)))
        .collect();
    Ok(axum::Json(json!({
        "version": snap.version,
        "global": snap.global,
        "tenants": tenants,
        "next_after": next,
    }))
    .into_response())
}

/// The export format.
#[derive(Deserialize, Default, Clone, Copy, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    #[default]
    Json,
    Toml,
}

/// How to export.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `json` (default) or `toml` (usable as a `--config` file).
    #[serde(default)]
    format: Option<ExportFormat>,
}

#[utoipa::path(
    get,
    path = "/api/config/export",
    tag = "configuration",
    security(("admin_token" = [])),
    params(ExportQuery),
    responses(
        (status = 200, description = "The whole configuration: JSON in the shape of a stored document, or TOML usable as a `--config` file", content((super::schema::ConfigDocumentSchema = "application/json"), (String = "application/toml"))),
        (status = 400, description = "invalid_argument: a bad `format`", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 500, description = "internal: the configuration could not be serialised", body = crate::error::ErrorBody),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let snap = state.engine().config_arc();
    let format = q.format.unwrap_or_default();
    // Serialising a large configuration is CPU work; keep it off the request threads.
    let body = tokio::task::spawn_blocking(move || {
        let doc = snap.to_document();
        match format {
            ExportFormat::Json => serde_json::to_vec(&doc).map_err(|e| e.to_string()),
            ExportFormat::Toml => to_toml(&doc)
                .map(String::into_bytes)
                .map_err(|e| e.to_string()),
        }
    })
    .await
    .map_err(|e| ApiError::Internal(format!("export task failed: {e}")))?
    .map_err(|e| ApiError::Internal(format!("cannot serialise the configuration: {e}")))?;
    let content_type = match format {
        ExportFormat::Json => "application/json",
        ExportFormat::Toml => "application/toml",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// One change in a batch, named by `op`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchChange {
    /// Set a tenant's limit for an action (every client).
    SetAction {
        #[schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )]
        tenant_id: String,
        #[schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )]
        action_type: String,
        #[serde(deserialize_with = "whole_number::exact")]
        #[schema(minimum = 1, maximum = 1_000_000_000)]
        max_requests: u64,
        #[schema(minimum = 0.001, maximum = 31_536_000)]
        window_duration_seconds: f64,
    },
    /// Remove a tenant's limit for an action.
    DeleteAction {
        #[schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )]
        tenant_id: String,
        #[schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )]
        action_type: String,
    },
    /// Set one client's limit for an action.
    SetClient {
        #[schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )]
        tenant_id: String,
        #[schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )]
        client_id: String,
        #[schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )]
        action_type: String,
        #[serde(deserialize_with = "whole_number::exact")]
        #[schema(minimum = 1, maximum = 1_000_000_000)]
        max_requests: u64,
        #[schema(minimum = 0.001, maximum = 31_536_000)]
        window_duration_seconds: f64,
    },
    /// Remove one client's limit for an action.
    DeleteClient {
        #[schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )]
        tenant_id: String,
        #[schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )]
        client_id: String,
        #[schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )]
        action_type: String,
    },
    /// Set a tenant's fair-share weight.
    SetWeight {
        #[schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )]
        tenant_id: String,
        #[serde(deserialize_with = "whole_number::exact")]
        #[schema(minimum = 1, maximum = 1000)]
        weight: u32,
    },
}

/// Changes applied in order as one: all under one new version, or none.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// 1 ..= 1,000 changes (and the body at most 64 KiB).
    #[schema(min_items = 1, max_items = 1000)]
    changes: Vec<BatchChange>,
}

fn limit(max_requests: u64, window: f64) -> Result<Limit, String> {
    Limit::new(max_requests, window).map_err(|e| e.0)
}

fn ids(pairs: &[(&str, &str)]) -> Result<(), String> {
    pairs
        .iter()
        .try_for_each(|(field, value)| validate_id(field, value).map_err(|e| e.0))
}

impl BatchChange {
    fn into_change(self) -> Result<Change, String> {
        Ok(match self {
            BatchChange::SetAction {
                tenant_id,
                action_type,
                max_requests,
                window_duration_seconds,
            } => {
                ids(&[("tenant_id", &tenant_id), ("action_type", &action_type)])?;
                Change::SetAction {
                    limit: limit(max_requests, window_duration_seconds)?,
                    tenant: tenant_id,
                    action: action_type,
                }
            }
            BatchChange::DeleteAction {
                tenant_id,
                action_type,
            } => {
                ids(&[("tenant_id", &tenant_id), ("action_type", &action_type)])?;
                Change::DeleteAction {
                    tenant: tenant_id,
                    action: action_type,
                }
            }
            BatchChange::SetClient {
                tenant_id,
                client_id,
                action_type,
                max_requests,
                window_duration_seconds,
            } => {
                ids(&[
                    ("tenant_id", &tenant_id),
                    ("client_id", &client_id),
                    ("action_type", &action_type),
                ])?;
                Change::SetClient {
                    limit: limit(max_requests, window_duration_seconds)?,
                    tenant: tenant_id,
                    client: client_id,
                    action: action_type,
                }
            }
            BatchChange::DeleteClient {
                tenant_id,
                client_id,
                action_type,
            } => {
                ids(&[
                    ("tenant_id", &tenant_id),
                    ("client_id", &client_id),
                    ("action_type", &action_type),
                ])?;
                Change::DeleteClient {
                    tenant: tenant_id,
                    client: client_id,
                    action: action_type,
                }
            }
            BatchChange::SetWeight { tenant_id, weight } => {
                ids(&[("tenant_id", &tenant_id)])?;
                Change::Weight {
                    tenant: tenant_id,
                    weight,
                }
            }
        })
    }
}

#[utoipa::path(
    post,
    path = "/api/config/batch",
    tag = "configuration",
    security(("admin_token" = [])),
    request_body = BatchBody,
    responses(
        (status = 200, description = "Every change applied, under one new version", body = super::schema::BatchApplied),
        (status = 400, description = "invalid_json or invalid_argument (the message names the change, e.g. `changes[3]`); nothing was applied", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 404, description = "not_found: a change deletes something that does not exist; nothing was applied", body = crate::error::ErrorBody),
        (status = 409, description = "config_managed_by_file: --config FILE is the source of truth; edit the file instead", body = crate::error::ErrorBody),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = crate::error::ErrorBody),
        (status = 500, description = "internal: the stored configuration is unreadable", body = crate::error::ErrorBody),
        (status = 503, description = "store_unavailable: the configuration store (data dir or Redis) could not be written and nothing changed; or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn post_batch(
    _: super::config::ConfigWrite,
    State(state): State<AppState>,
    Json(body): Json<BatchBody>,
) -> Result<Response, ApiError> {
    let n = body.changes.len();
    if !(1..=MAX_BATCH_CHANGES).contains(&n) {
        return Err(ApiError::InvalidArgument(format!(
            "changes must hold from 1 to {MAX_BATCH_CHANGES} changes, got {n}"
        )));
    }
    let changes = body
        .changes
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            c.into_change()
                .map_err(|m| ApiError::InvalidArgument(format!("changes[{i}]: {m}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let snap = state.engine().update_config(Change::Batch(changes)).await?;
    Ok(axum::Json(json!({
        "status": "applied",
        "changes": n,
        "version": snap.version,
    }))
    .into_response())
}
