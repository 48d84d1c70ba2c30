//! The HTTP API: routes, admin authentication, and JSON answers for unknown routes and methods.

mod adjust;
mod config;
mod config_bulk;
mod dashboard;
mod decision;
mod health;
mod ops;
mod probes;
mod schema;
mod schema_rules;
mod stats;
mod tenant_auth;
mod tenant_keys;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::hardening::HttpLimits;
use crate::state::AppState;

/// Every route of the service, with the default [`HttpLimits`]. Separate from serving so tests
/// drive it without a socket.
pub fn router(state: AppState) -> Router {
    router_with(state, &HttpLimits::default())
}

/// The API's routes, public and admin, each registered with its OpenAPI operation: the one list
/// both the router and `GET /api/openapi.json` are made from, so they cannot disagree.
fn routes() -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    let public = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(decision::check_and_consume))
        .routes(routes!(decision::status))
        .routes(routes!(adjust::report))
        .routes(routes!(adjust::refund))
        .routes(routes!(health::health))
        .routes(routes!(probes::livez))
        .routes(routes!(probes::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_json))
        .routes(routes!(dashboard::page))
        .routes(routes!(dashboard::script))
        .routes(routes!(dashboard::style));
    let admin = OpenApiRouter::new()
        .routes(routes!(config_bulk::get_page))
        .routes(routes!(config_bulk::export))
        .routes(routes!(config_bulk::post_batch))
        .routes(routes!(config::put_global))
        .routes(routes!(config::get_tenant, config::delete_tenant))
        .routes(routes!(config::put_weight, config::delete_weight))
        .routes(routes!(config::put_settings))
        .routes(routes!(config::put_action, config::delete_action))
        .routes(routes!(config::put_client, config::delete_client))
        .routes(routes!(tenant_keys::create_key, tenant_keys::list_keys))
        .routes(routes!(tenant_keys::delete_key))
        .routes(routes!(stats::stats));
    (public, admin)
}

/// The OpenAPI 3 document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (public, admin) = routes();
    let mut doc = public.merge(admin).into_openapi();
    schema_rules::apply(&mut doc);
    doc
}

/// Every route of the service under the given limits.
pub fn router_with(state: AppState, limits: &HttpLimits) -> Router {
    let (public, admin) = routes();
    let admin = admin.route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let (router, mut doc) = public.merge(admin).split_for_parts();
    schema_rules::apply(&mut doc);
    ops::publish_openapi(&doc);
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(crate::request_layer::RequestLayer::new(
            state.clone(),
            limits,
        ))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tollgate",
        description = "Multi-tenant rate limiter: exact sliding-window decisions, runtime limits per tenant, client and action, fair per-tenant load management."
    ),
    modifiers(&AdminTokenScheme),
    tags(
        (name = "decisions", description = "Rate-limit decisions; open to every caller, or with --decision-auth tenant-keys to holders of a key of the tenant (or the admin token)"),
        (name = "configuration", description = "Limits, weights and global settings; need the admin token when one is set"),
        (name = "operations", description = "Health, probes, metrics and this document; open"),
    )
)]
struct ApiDoc;

/// Declares the bearer scheme the configuration routes' `security` refers to.
struct AdminTokenScheme;

impl utoipa::Modify for AdminTokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The --admin-token value, as `Authorization: Bearer <token>`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "tenant_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "With --decision-auth tenant-keys: a key of the request's tenant (`tg_<key_id>_<secret>`, issued by POST /api/config/tenant/{tenant}/keys), or the admin token, as `Authorization: Bearer <key>`",
                    ))
                    .build(),
            ),
        );
    }
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
    if state.inner.admin_token.is_some() {
        let mut values = req
            .headers()
            .get_all(axum::http::header::AUTHORIZATION)
            .iter();
        // More than one Authorization header is ambiguous: refuse rather than pick one.
        let given = match (values.next(), values.next()) {
            (Some(v), None) => bearer_token(v.as_bytes()).unwrap_or(b""),
            _ => b"",
        };
        if !state.is_admin(given) {
            return ApiError::Unauthorized(
                "configuration calls need the header 'Authorization: Bearer <admin token>'".into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}
