//! Per-request limits through the real router: URI size and the end-to-end request timeout.

mod ops_support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use ops_support::{check_body, send, service, Binary};
use tollgate_server::hardening::{HttpLimits, MAX_URI_BYTES};

#[tokio::test]
async fn over_long_uri_is_a_json_414() {
    let svc = service(None);
    let long = "x".repeat(MAX_URI_BYTES);
    let r = send(
        &svc.app,
        Method::GET,
        &format!("/api/status/{long}/c/a"),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::URI_TOO_LONG);
    assert_eq!(r.json()["error"], "uri_too_long");
    // Just under the limit is routed normally (here: an invalid, over-256-byte id).
    let id = "x".repeat(MAX_URI_BYTES - "/api/status//c/a".len());
    let r = send(
        &svc.app,
        Method::GET,
        &format!("/api/status/{id}/c/a"),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_argument");
}

#[tokio::test]
async fn request_past_its_timeout_gets_503_and_frees_its_queue_place() {
    let svc = service(None);
    let limits = HttpLimits {
        request_timeout: Duration::from_millis(200),
        ..HttpLimits::default()
    };
    let app = tollgate_server::api::router_with(svc.state.clone(), &limits);
    let r = send(
        &app,
        Method::PUT,
        "/api/config/global",
        Some(r#"{"max_global_concurrent_requests":1,"max_tenant_queue_size":5,"queue_timeout_ms":600000}"#),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let load = svc.state.limiter().load();
    let permit = load.acquire("holder", 1).await.unwrap();
    // Queued behind the held slot, with a queue timeout far past the request timeout.
    let r = send(
        &app,
        Method::POST,
        "/api/check_and_consume",
        Some(&check_body("t", 5)),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"], "request_timeout");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(
        load.snapshot().queued,
        0,
        "the timed-out request left its queue"
    );
    drop(permit);
    assert_eq!(load.snapshot().in_flight, 0);
    let r = send(
        &app,
        Method::POST,
        "/api/check_and_consume",
        Some(&check_body("t", 5)),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn oversized_request_head_is_refused_and_service_stays_up() {
    let bin = Binary::start(&[]).await;
    let client = reqwest::Client::new();
    let r = client
        .get(bin.url("/api/health"))
        .header("x-big", "a".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let mut req = client.get(bin.url("/api/health"));
    for i in 0..100 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 431);
    let r = client.get(bin.url("/api/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(bin.stop().await.success());
}
