//! The HTTP API: routes, admin authentication, and JSON answers for unknown routes and methods.

mod config;
mod decision;
mod health;
mod ops;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::extract::MAX_BODY_BYTES;
use crate::hardening::HttpLimits;
use crate::state::AppState;

/// Every route of the service, with the default [`HttpLimits`]. Separate from serving so tests
/// drive it without a socket.
pub fn router(state: AppState) -> Router {
    router_with(state, &HttpLimits::default())
}

/// Every route of the service under the given limits.
pub fn router_with(state: AppState, limits: &HttpLimits) -> Router {
    let admin = Router::new()
        .route("/api/config", get(config::get_all))
        .route("/api/config/global", put(config::put_global))
        .route("/api/config/tenant/{tenant}", get(config::get_tenant))
        .route(
            "/api/config/tenant/{tenant}/weight",
            put(config::put_weight),
        )
        .route(
            "/api/config/tenant/{tenant}/action/{action}",
            put(config::put_action).delete(config::delete_action),
        )
        .route(
            "/api/config/tenant/{tenant}/client/{client}/action/{action}",
            put(config::put_client).delete(config::delete_client),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .route("/api/check_and_consume", post(decision::check_and_consume))
        .route(
            "/api/status/{tenant}/{client}/{action}",
            get(decision::status),
        )
        .route("/api/health", get(health::health))
        .route("/metrics", get(ops::metrics))
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            crate::hardening::limit_request,
        ))
        .layer(middleware::from_fn(crate::access_log::log_requests))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see the API reference in the README".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The token of an `Authorization: Bearer <token>` value (RFC 6750): the scheme is matched
/// case-insensitively (RFC 9110 auth-schemes are), one or more spaces follow it, and the token
/// is the rest, which must be non-empty and contain no further space. Anything else — `Basic`,
/// a bare `Bearer`, trailing words — is `None`.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii_start();
    (!token.is_empty() && !token.contains(&b' ')).then_some(token)
}

/// Requires `Authorization: Bearer <token>` when an admin token is configured.
async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.inner.admin_token {
        let mut values = req
            .headers()
            .get_all(axum::http::header::AUTHORIZATION)
            .iter();
        // More than one Authorization header is ambiguous: refuse rather than pick one.
        let given = match (values.next(), values.next()) {
            (Some(v), None) => bearer_token(v.as_bytes()).unwrap_or(b""),
            _ => b"",
        };
        // Constant-time so response timing does not reveal how much of a guess was right.
        let ok: bool = given.ct_eq(token.as_bytes()).into();
        if !ok {
            return ApiError::Unauthorized(
                "configuration calls need the header 'Authorization: Bearer <admin token>'".into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}
