//! `GET /api/health`: 200 while serving, 503 `draining` once shutdown begins, 503 `degraded`
//! while the store is unreachable.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
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
    // A typed body rather than `json!`: the probe is polled often, and building a map of owned
    // strings for five fields was most of its handler's allocations. Fields in the order `json!`
    // wrote them (sorted), so the body is byte for byte what it was.
    let body = Health {
        config_version: engine.config().version,
        in_flight: load.in_flight,
        queued: load.queued,
        status: if healthy { "healthy" } else { "degraded" },
        store: engine.store_kind(),
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

#[derive(Serialize)]
struct Health {
    config_version: u64,
    in_flight: usize,
    queued: usize,
    status: &'static str,
    store: &'static str,
}
