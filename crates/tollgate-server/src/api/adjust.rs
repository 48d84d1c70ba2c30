//! `POST /api/report` and `POST /api/refund`: charge a cost known only after the work is done, or
//! give back what a failed request consumed. Same limit resolution and authentication as a
//! decision; the answer is the key's state after the call, in a decision's shape.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use tollgate_core::policy::Op;
use tollgate_core::whole_number;
use tollgate_core::{DecisionRequest, RateKey};

use super::decision::{decision_response, requested_limit};
use super::tenant_auth::Credential;
use crate::error::ApiError;
use crate::extract::Json;
use crate::state::AppState;

/// A report or refund. `max_requests` and `window_duration_seconds` go together and are used only
/// when no client or action limit is configured.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustBody {
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
    #[serde(default, deserialize_with = "whole_number::option")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    max_requests: Option<u64>,
    /// Seconds, rounded to the nearest millisecond (at least one).
    #[serde(default)]
    #[schema(minimum = 0.001, maximum = 31_536_000.0)]
    window_duration_seconds: Option<f64>,
    /// 1 ..= the smallest max_requests (gcra: burst) of the limits that apply.
    #[serde(deserialize_with = "whole_number::exact")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    cost: u64,
}

async fn adjust(
    state: AppState,
    credential: Credential,
    body: AdjustBody,
    op: Op,
) -> Result<Response, ApiError> {
    credential.check(&state, &body.tenant_id)?;
    let requested = requested_limit(body.max_requests, body.window_duration_seconds)?;
    let key = RateKey::new(&body.tenant_id, &body.client_id, &body.action_type);
    let decision = state
        .engine()
        .adjust(
            op,
            DecisionRequest {
                key,
                requested,
                cost: body.cost,
            },
        )
        .await
        .map_err(|e| {
            ApiError::from(e).with_store_context(
                "reports and refunds change stored state and cannot be made until the store is back; retry after the Retry-After delay",
            )
        })?;
    decision_response(&decision, "processed")
}

#[utoipa::path(
    post,
    path = "/api/report",
    tag = "decisions",
    security((), ("tenant_key" = []), ("admin_token" = [])),
    request_body = AdjustBody,
    responses(
        (status = 200, description = "Consumed `cost` on every limit without checking (it may go over); the state after it", body = super::decision::DecisionBody),
        (status = 400, description = "invalid_json, invalid_argument or no_limit", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized (with --decision-auth tenant-keys)", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 403, description = "forbidden or unknown_tenant", body = crate::error::ErrorBody),
        (status = 408, description = "body_timeout", body = crate::error::ErrorBody),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = crate::error::ErrorBody),
        (status = 414, description = "uri_too_long", body = crate::error::ErrorBody),
        (status = 431, description = "headers_too_large", body = crate::error::ErrorBody),
        (status = 503, description = "Shed, store_unavailable, key_budget_exhausted or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn report(
    State(state): State<AppState>,
    credential: Credential,
    Json(body): Json<AdjustBody>,
) -> Result<Response, ApiError> {
    adjust(state, credential, body, Op::Report).await
}

#[utoipa::path(
    post,
    path = "/api/refund",
    tag = "decisions",
    security((), ("tenant_key" = []), ("admin_token" = [])),
    request_body = AdjustBody,
    responses(
        (status = 200, description = "Gave back up to `cost` of what the key consumed in its current window (never below zero); the state after it", body = super::decision::DecisionBody),
        (status = 400, description = "invalid_json, invalid_argument or no_limit", body = crate::error::ErrorBody),
        (status = 401, description = "unauthorized (with --decision-auth tenant-keys)", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 403, description = "forbidden or unknown_tenant", body = crate::error::ErrorBody),
        (status = 408, description = "body_timeout", body = crate::error::ErrorBody),
        (status = 413, description = "payload_too_large: body over 64 KiB", body = crate::error::ErrorBody),
        (status = 414, description = "uri_too_long", body = crate::error::ErrorBody),
        (status = 431, description = "headers_too_large", body = crate::error::ErrorBody),
        (status = 503, description = "Shed, store_unavailable, key_budget_exhausted or request_timeout", body = crate::error::ErrorBody, headers(("Retry-After" = u64))),
    )
)]
pub async fn refund(
    State(state): State<AppState>,
    credential: Credential,
    Json(body): Json<AdjustBody>,
) -> Result<Response, ApiError> {
    adjust(state, credential, body, Op::Refund).await
}
