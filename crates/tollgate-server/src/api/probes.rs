//! Kubernetes-style probes: `GET /livez` (the process answers) and `GET /readyz` (this instance
//! should get traffic: store reachable, configuration loaded, not draining).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::state::AppState;

/// `GET /livez`: always `alive`, draining included; only a wedged or dead process fails it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LiveBody {
    /// Always `alive`.
    #[schema(example = "alive")]
    pub status: &'static str,
}

/// `GET /readyz`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReadyBody {
    /// `ready`, or the first reason it is not: `draining`, `degraded` (store unreachable),
    /// `config_not_loaded` (the stored configuration has not been read yet).
    pub status: &'static str,
    /// Every reason this instance is not ready, empty when ready.
    pub reasons: Vec<&'static str>,
    /// `memory` or `redis`.
    pub store: &'static str,
    /// Whether the store answers.
    pub store_reachable: bool,
    /// Whether the stored configuration is loaded.
    pub config_loaded: bool,
    /// Whether shutdown has begun.
    pub draining: bool,
}

#[utoipa::path(
    get,
    path = "/livez",
    tag = "operations",
    responses((status = 200, description = "The process is alive (also while draining)", body = LiveBody))
)]
pub async fn livez() -> Response {
    axum::Json(LiveBody { status: "alive" }).into_response()
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: store reachable, configuration loaded, not draining", body = ReadyBody),
        (status = 503, description = "Not ready; `reasons` says why (draining, degraded, config_not_loaded)", body = ReadyBody),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let engine = state.engine();
    let draining = state.is_draining();
    let store_reachable = engine.store_healthy();
    let config_loaded = engine.is_loaded();
    let mut reasons = Vec::new();
    if draining {
        reasons.push("draining");
    }
    if !store_reachable {
        reasons.push("degraded");
    }
    if !config_loaded {
        reasons.push("config_not_loaded");
    }
    let code = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = ReadyBody {
        status: reasons.first().copied().unwrap_or("ready"),
        reasons,
        store: engine.store_kind(),
        store_reachable,
        config_loaded,
        draining,
    };
    (code, axum::Json(body)).into_response()
}
