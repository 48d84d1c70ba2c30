//! Limit policies over HTTP through the real router: several limits, the algorithms, shadow
//! limits and `--shadow`, report and refund, per-limit metrics, and invalid policies.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tollgate_core::clock::ManualClock;
use tollgate_core::config::{ConfigDocument, ConfigManager};
use tollgate_core::store::MemoryStore;
use tollgate_core::{Limiter, StoreErrorPolicy};
use tollgate_server::api::router;
use tollgate_server::state::AppState;
use tower::ServiceExt;

/// 2026-11-30 00:00 UTC.
const T0: u64 = 1_795_996_800_000_000;

struct App {
    router: Router,
    clock: ManualClock,
}

fn app(shadow: bool) -> App {
    let clock = ManualClock::new(T0);
    let config = Arc::new(ConfigManager::in_memory(ConfigDocument::default()).unwrap());
    let store = Arc::new(MemoryStore::new(Arc::new(clock.clone()), 10_000));
    let limiter =
        Arc::new(Limiter::new(config, store, StoreErrorPolicy::Allow).with_shadow(shadow));
    let state = AppState::new(limiter, Some("admin".into()));
    App {
        router: router(state),
        clock,
    }
}

async fn call(
    app: &App,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, "Bearer admin");
    if body.is_some() {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    let req = b
        .body(body.map_or_else(Body::empty, |v| Body::from(v.to_string())))
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, headers, body)
}

async fn put_action(app: &App, body: Value) -> (StatusCode, Value) {
    let (s, _, b) = call(
        app,
        Method::PUT,
        "/api/config/tenant/t/action/a",
        Some(body),
    )
    .await;
    (s, b)
}

async fn check(app: &App) -> (StatusCode, axum::http::HeaderMap, Value) {
    let body = json!({"tenant_id": "t", "client_id": "c", "action_type": "a"});
    call(app, Method::POST, "/api/check_and_consume", Some(body)).await
}

#[tokio::test]
async fn two_windows_report_the_stricter_limit_and_every_limit() {
    let app = app(false);
    let (s, b) = put_action(
        &app,
        json!({"limits": [
            {"max_requests": 2, "window_duration_seconds": 1, "name": "per-second"},
            {"max_requests": 3, "window_duration_seconds": 60, "name": "per-minute"}
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["limit"]["limits"][1]["name"], "per-minute");
    let (s, h, b) = check(&app).await;
    assert_eq!(s, StatusCode::OK);
    // 1 left of 2 per second, 2 left of 3 per minute: the second is the one reported.
    assert_eq!(b["limit"]["name"], "per-second");
    assert_eq!(b["remaining_requests"], 1);
    assert_eq!(b["limits"].as_array().unwrap().len(), 2);
    assert_eq!(b["limits"][1]["remaining_requests"], 2);
    assert_eq!(h["ratelimit-limit"], "2");
    assert_eq!(h["ratelimit-remaining"], "1");
    check(&app).await;
    let (s, _, b) = check(&app).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(b["limit"]["name"], "per-second");
    // A second later the per-second limit has room, the per-minute one has one left.
    app.clock.advance(1_000_000);
    let (s, h, b) = check(&app).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["limit"]["name"], "per-minute");
    assert_eq!(h["ratelimit-limit"], "3");
    assert_eq!(b["remaining_requests"], 0);
    app.clock.advance(1_000_000);
    let (s, _, b) = check(&app).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(b["limit"]["name"], "per-minute");
    // The document reads back as written.
    let (_, _, doc) = call(&app, Method::GET, "/api/config/tenant/t", None).await;
    assert_eq!(
        doc["actions"]["a"]["limits"][0]["name"], "per-second",
        "{doc}"
    );
}

#[tokio::test]
async fn shadow_limit_never_denies_and_says_so_and_metrics_count_it() {
    let app = app(false);
    put_action(
        &app,
        json!({"max_requests": 1, "window_duration_seconds": 10, "shadow": true, "name": "trial"}),
    )
    .await;
    let (s, _, b) = check(&app).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b.get("shadow_denied").is_none(), "{b}");
    let (s, _, b) = check(&app).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["allowed"], true);
    assert_eq!(b["shadow_denied"], true);
    assert_eq!(b["shadow_limit"]["name"], "trial");
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let text = String::from_utf8(
        axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("tollgate_decisions_total{")
                && l.contains("outcome=\"shadow_denied\"")
                && l.contains("tenant=\"t\"")
                && l.ends_with(" 1")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("tollgate_limit_decisions_total{")
                && l.contains("limit=\"trial\"")
                && l.contains("outcome=\"shadow_denied\"")
                && l.ends_with(" 1")),
        "{text}"
    );
}

#[tokio::test]
async fn global_shadow_flag_allows_what_would_be_denied() {
    let app = app(true);
    put_action(
        &app,
        json!({"max_requests": 1, "window_duration_seconds": 10}),
    )
    .await;
    check(&app).await;
    let (s, _, b) = check(&app).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["shadow_denied"], true);
}

#[tokio::test]
async fn gcra_and_calendar_limits_over_http() {
    let app = app(false);
    let (s, b) = put_action(
        &app,
        json!({"max_requests": 10, "window_duration_seconds": 1, "algorithm": "gcra", "burst": 2}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for _ in 0..2 {
        assert_eq!(check(&app).await.0, StatusCode::OK);
    }
    let (s, h, b) = check(&app).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(b["limit"]["algorithm"], "gcra");
    assert_eq!(b["retry_after_seconds"], 0.1);
    assert_eq!(h["ratelimit-limit"], "2", "burst is the capacity");
    let (s, b) = put_action(
        &app,
        json!({"max_requests": 1, "algorithm": "fixed_window", "calendar": "day"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(check(&app).await.0, StatusCode::OK);
    let (s, _, b) = check(&app).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(b["limit"]["window_duration_seconds"], 86_400.0);
    assert_eq!(b["reset_time_seconds"], T0 / 1_000_000 + 86_400);
}

#[tokio::test]
async fn report_goes_over_the_limit_and_refund_gives_back() {
    let app = app(false);
    put_action(
        &app,
        json!({"max_requests": 5, "window_duration_seconds": 10}),
    )
    .await;
    let body =
        |cost: u64| json!({"tenant_id": "t", "client_id": "c", "action_type": "a", "cost": cost});
    let (s, _, b) = call(&app, Method::POST, "/api/report", Some(body(4))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["remaining_requests"], 1);
    let (_, _, b) = call(&app, Method::POST, "/api/report", Some(body(4))).await;
    assert_eq!(b["remaining_requests"], 0);
    assert_eq!(check(&app).await.0, StatusCode::TOO_MANY_REQUESTS);
    let (s, _, b) = call(&app, Method::POST, "/api/refund", Some(body(5))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["remaining_requests"], 2);
    let (_, _, b) = call(&app, Method::POST, "/api/refund", Some(body(5))).await;
    assert_eq!(b["remaining_requests"], 5, "never below zero");
    let (s, _, b) = call(&app, Method::POST, "/api/refund", Some(body(0))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"], "invalid_argument");
}

#[tokio::test]
async fn invalid_policies_are_refused_readably() {
    let app = app(false);
    for (body, says) in [
        (
            json!({"max_requests": 5, "window_duration_seconds": 1, "burst": 3}),
            "burst applies only",
        ),
        (
            json!({"max_requests": 5, "window_duration_seconds": 1, "algorithm": "gcra", "burst": 0}),
            "burst must be",
        ),
        (
            json!({"max_requests": 5, "calendar": "day"}),
            "calendar applies only",
        ),
        (
            json!({"max_requests": 5, "window_duration_seconds": 1, "name": ""}),
            "name must be",
        ),
        (
            json!({"max_requests": 5, "window_duration_seconds": 1, "name": "x".repeat(65)}),
            "name must be",
        ),
        (json!({"limits": []}), "1 to 8"),
        (
            json!({"limits": (0..9).map(|i| json!({"max_requests": 1, "window_duration_seconds": i + 1})).collect::<Vec<_>>()}),
            "1 to 8",
        ),
        (
            json!({"limits": [{"max_requests": 1, "window_duration_seconds": 1}, {"max_requests": 2, "window_duration_seconds": 1}]}),
            "same algorithm and window",
        ),
        (
            json!({"max_requests": 5, "algorithm": "fixed_window"}),
            "window_duration_seconds",
        ),
    ] {
        let (s, b) = put_action(&app, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {b}");
        assert_eq!(b["error"], "invalid_argument", "{body} -> {b}");
        assert!(
            b["message"].as_str().unwrap().contains(says),
            "{body} -> {b}"
        );
    }
    // The service is still healthy and the refused bodies left nothing behind.
    let (_, _, doc) = call(&app, Method::GET, "/api/config/tenant/t", None).await;
    assert_eq!(doc["actions"], json!({}));
}
