//! `GET /api/health`: 200 while serving, 503 `draining` once shutdown begins, 503 `degraded`
//! while the store is unreachable.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/api/health",
    tag = "operations",
    responses(
        (status = 200, description = "healthy", body = super::schema::HealthBody),
        (status = 503, description = "draining (shutdown begun) or degraded (store unreachable)", body = super::schema::HealthBody),
    )
)]
pub async fn health(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "draining"})),
        )
            .into_response();
    }
    let engine = state.engine();
    let load = engine.load();
    let healthy = engine.store_healthy();
    let body = json!({
        "status": if healthy { "healthy" } else { "degraded" },
        "store": engine.store_kind(),
        "config_version": engine.config().version,
        "in_flight": load.in_flight,
        "queued": load.queued,
    });
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}
