//! `GET /api/stats`: the live statistics the dashboard draws, as JSON.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use tollgate_core::stats::StatsReport;

use crate::error::ApiError;
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/api/stats",
    tag = "operations",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Decisions by outcome (totals, last second, 5 minutes of history), latency, load, store state, per-tenant figures with admission and fair shares, heavy-hitter keys of the last minute", body = StatsReport),
        (status = 401, description = "unauthorized: missing or wrong `Authorization: Bearer <admin token>`", body = crate::error::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 404, description = "not_found: this service was built without statistics", body = crate::error::ErrorBody),
    )
)]
pub async fn stats(State(state): State<AppState>) -> Result<Response, ApiError> {
    let report = state
        .engine()
        .stats()
        .ok_or_else(|| ApiError::NotFound("this service collects no statistics".into()))?;
    Ok(axum::Json(report).into_response())
}
