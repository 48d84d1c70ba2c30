//! Operator endpoints: `GET /metrics`.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Prometheus text exposition of the service's metrics.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics().render(state.limiter());
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
