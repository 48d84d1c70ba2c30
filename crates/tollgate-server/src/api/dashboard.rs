//! `GET /dashboard` and its script and style sheet, embedded in the binary. The page holds no data
//! of its own: every figure comes from `GET /api/stats` (and the configuration panel from
//! `GET /api/config`), which need the admin token when one is set; the page asks for it and keeps
//! it in the tab's sessionStorage.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

const HTML: &str = include_str!("../../assets/dashboard.html");
const JS: &str = include_str!("../../assets/dashboard.js");
const CSS: &str = include_str!("../../assets/dashboard.css");

/// Only this origin's own script, style and API; tenant ids are shown as text, never markup, and
/// this policy is the second line of defence.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// The live dashboard.
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "operations",
    responses((status = 200, description = "The dashboard page; its data comes from /api/stats", body = String, content_type = "text/html"))
)]
pub async fn page() -> Response {
    asset(HTML, "text/html; charset=utf-8")
}

/// The dashboard's script.
#[utoipa::path(
    get,
    path = "/dashboard/app.js",
    tag = "operations",
    responses((status = 200, description = "The dashboard's script", body = String, content_type = "text/javascript"))
)]
pub async fn script() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

/// The dashboard's style sheet.
#[utoipa::path(
    get,
    path = "/dashboard/app.css",
    tag = "operations",
    responses((status = 200, description = "The dashboard's style sheet", body = String, content_type = "text/css"))
)]
pub async fn style() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}
