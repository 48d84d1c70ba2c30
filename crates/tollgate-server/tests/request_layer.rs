//! The one per-request layer through the real router: every answer it makes itself (limits,
//! timeout, shutdown) carries the request id and the JSON error, a request that waits is
//! answered normally, and the request timeout covers a body still on its way.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode};
use futures_util::StreamExt;
use support::{check_body, send, service, SlowStore};
use tollgate_core::config::ConfigManager;
use tollgate_core::store::MemoryStore;
use tollgate_core::{Limiter, StoreErrorPolicy};
use tollgate_server::hardening::{BodyLimits, HttpLimits, MAX_HEADERS};
use tollgate_server::state::AppState;
use tower::ServiceExt;

fn slow_state(delay: Duration) -> AppState {
    let config = Arc::new(ConfigManager::in_memory(Default::default()).unwrap());
    let limiter = Arc::new(Limiter::new(
        config,
        Arc::new(SlowStore {
            inner: MemoryStore::default(),
            delay,
        }),
        StoreErrorPolicy::Allow,
    ));
    AppState::new(limiter, None)
}

#[tokio::test]
async fn a_request_that_waits_is_answered_normally_with_its_id() {
    // The store call sleeps, so the route is still pending after its first poll.
    let app = tollgate_server::api::router(slow_state(Duration::from_millis(50)));
    let r = send(
        &app,
        Method::POST,
        "/api/check_and_consume",
        Some(&check_body("t", 5)),
        &[("x-request-id", "waits-1")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["allowed"], true);
    assert_eq!(r.headers["x-request-id"], "waits-1");
}

#[tokio::test]
async fn request_timeout_answer_carries_the_request_id() {
    let limits = HttpLimits {
        request_timeout: Duration::from_millis(100),
        ..HttpLimits::default()
    };
    let app = tollgate_server::api::router_with(slow_state(Duration::from_secs(30)), &limits);
    let r = send(
        &app,
        Method::POST,
        "/api/check_and_consume",
        Some(&check_body("t", 5)),
        &[("x-request-id", "late-1")],
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"], "request_timeout");
    assert_eq!(r.headers["x-request-id"], "late-1");
}

#[tokio::test]
async fn request_timeout_covers_a_body_still_arriving() {
    let svc = service(None);
    // The body limits alone would wait a minute; the request timeout is what answers.
    let limits = HttpLimits {
        request_timeout: Duration::from_millis(150),
        body: BodyLimits {
            timeout: Duration::from_secs(60),
            min_rate: 0,
        },
        ..HttpLimits::default()
    };
    let app = tollgate_server::api::router_with(svc.state.clone(), &limits);
    let first = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(Bytes::from_static(b"{\"tenant_id\":"))
    });
    let body = Body::from_stream(first.chain(futures_util::stream::pending()));
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/check_and_consume")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("x-request-id"));
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "request_timeout", "{v}");
    // Nothing was decided, and the service answers the next request.
    let r = send(
        &app,
        Method::POST,
        "/api/check_and_consume",
        Some(&check_body("t", 5)),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["remaining_requests"], 4);
}

#[tokio::test]
async fn request_arriving_after_the_grace_period_is_answered_shutting_down() {
    let svc = service(None);
    svc.state.end_grace();
    let r = send(
        &svc.app,
        Method::POST,
        "/api/check_and_consume",
        Some(&check_body("t", 5)),
        &[("x-request-id", "after-grace-1")],
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"], "shutting_down");
    assert_eq!(r.json()["allowed"], false);
    assert_eq!(r.headers["x-request-id"], "after-grace-1");
    assert_eq!(svc.state.engine().load().in_flight, 0);
}

#[tokio::test]
async fn too_many_headers_is_a_json_431_with_the_request_id() {
    let svc = service(None);
    let names: Vec<String> = (0..MAX_HEADERS).map(|i| format!("x-h{i}")).collect();
    let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    headers.push(("x-request-id", "heads-1"));
    let r = send(&svc.app, Method::GET, "/api/health", None, &headers).await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(r.json()["error"], "headers_too_large");
    assert_eq!(r.headers["x-request-id"], "heads-1");
    // One field fewer is served.
    headers.remove(0);
    let r = send(&svc.app, Method::GET, "/api/health", None, &headers).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-request-id"], "heads-1");
}
