//! Operator endpoints: `GET /metrics` and `GET /api/openapi.json`.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use std::sync::OnceLock;

use crate::state::AppState;

/// The rendered OpenAPI document; the same for every router, so rendered once.
static OPENAPI_JSON: OnceLock<String> = OnceLock::new();

pub(super) fn publish_openapi(doc: &utoipa::openapi::OpenApi) {
    OPENAPI_JSON.get_or_init(|| doc.to_json().unwrap_or_else(|_| "{}".into()));
}

/// Prometheus text exposition of the service's metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics().render(state.engine());
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// This API's OpenAPI 3 document, generated from the routes themselves.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document", body = Object, content_type = "application/json"))
)]
pub async fn openapi_json() -> Response {
    let text = OPENAPI_JSON.get().cloned().unwrap_or_else(|| "{}".into());
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
