//! Tenant isolation of state through the real router (issue 16): a flooding tenant gets clear
//! 503s naming its own budget while another tenant's new and existing clients are answered
//! exactly, on the memory store and on Redis; the bounds change at runtime through the API; the
//! cap on request windows answers 400 with the allowed maximum; metrics count keys and refusals
//! per tenant.

#[path = "../../tollgate-core/tests/support/redis_server.rs"]
mod redis_server;
mod support;

use std::sync::Arc;
use std::time::Instant;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use support::{parse_metrics, send, Reply};
use tollgate_core::clock::SystemClock;
use tollgate_core::config::{ConfigDocument, ConfigManager};
use tollgate_core::redis_conn::RedisOptions;
use tollgate_core::store::{MemoryStore, RedisStore, RedisStoreOptions, Store};
use tollgate_core::{Limiter, StoreErrorPolicy};
use tollgate_server::state::AppState;

fn app_over(store: Arc<dyn Store>) -> axum::Router {
    let config = ConfigManager::in_memory(ConfigDocument::default()).unwrap();
    let limiter = Arc::new(Limiter::new(
        Arc::new(config),
        store,
        StoreErrorPolicy::Allow,
    ));
    tollgate_server::api::router(AppState::new(limiter, None))
}

async fn check(app: &axum::Router, tenant: &str, client: &str, window: Option<f64>) -> Reply {
    let mut body = json!({"tenant_id": tenant, "client_id": client, "action_type": "login"});
    if let Some(w) = window {
        body["max_requests"] = json!(5);
        body["window_duration_seconds"] = json!(w);
    }
    send(
        app,
        Method::POST,
        "/api/check_and_consume",
        Some(&body.to_string()),
        &[],
    )
    .await
}

async fn put(app: &axum::Router, uri: &str, body: Value) -> Reply {
    send(app, Method::PUT, uri, Some(&body.to_string()), &[]).await
}

/// `quiet` gets a configured limit of 3 per 600 s and an existing client with 2 used.
async fn quiet_setup(app: &axum::Router) {
    let r = put(
        app,
        "/api/config/tenant/quiet/action/login",
        json!({"max_requests": 3, "window_duration_seconds": 600}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for used in 1..=2 {
        let r = check(app, "quiet", "old", None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["remaining_requests"], 3 - used);
    }
}

/// After the flood: exactly one more for the existing client, then 429; new clients 200.
async fn quiet_is_exact(app: &axum::Router) {
    let r = check(app, "quiet", "old", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["remaining_requests"], 0);
    assert_eq!(r.json()["status"], "processed");
    let r = check(app, "quiet", "old", None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    for i in 0..5 {
        let r = check(app, "quiet", &format!("new-{i}"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.json()["remaining_requests"], 2);
        assert_eq!(r.json()["status"], "processed");
    }
}

/// Floods distinct client ids of `noisy`; returns (allowed, the last refusal).
async fn flood(app: &axum::Router, n: usize) -> (u64, Option<Reply>) {
    let mut allowed = 0;
    let mut refusal = None;
    for i in 0..n {
        let r = check(app, "noisy", &format!("c{i}"), Some(600.0)).await;
        match r.status {
            StatusCode::OK => {
                assert_eq!(r.json()["status"], "processed");
                allowed += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(r.json()["error"], "key_budget_exhausted", "{}", r.text());
                assert!(r.headers.contains_key("retry-after"));
                refusal = Some(r);
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    (allowed, refusal)
}

/// The issue's exact scenario: `--max-keys 100`, `noisy` floods, `quiet`'s new client is 200.
#[tokio::test]
async fn memory_flood_leaves_quiet_tenant_exact() {
    let store = MemoryStore::new(Arc::new(SystemClock), 100);
    let app = app_over(Arc::new(store.clone()));
    quiet_setup(&app).await;
    let (allowed, refusal) = flood(&app, 200).await;
    assert_eq!(allowed, 25, "a quarter of --max-keys");
    let msg = refusal.unwrap().json()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("tenant 'noisy'") && msg.contains("budget of 25 keys"),
        "{msg}"
    );
    quiet_is_exact(&app).await;
    assert!(store.key_count() <= 100);

    let r = send(&app, Method::GET, "/metrics", None, &[]).await;
    let m = parse_metrics(&r.text());
    assert_eq!(
        m[r#"tollgate_key_budget_rejections_total{bound="tenant_keys",tenant="noisy"}"#],
        175.0
    );
    assert_eq!(
        m[r#"tollgate_tracked_keys_per_tenant{tenant="noisy"}"#],
        25.0
    );
    assert_eq!(
        m[r#"tollgate_tracked_keys_per_tenant{tenant="quiet"}"#],
        6.0
    );
}

#[tokio::test]
async fn bounds_change_at_runtime_through_the_api() {
    let store = MemoryStore::new(Arc::new(SystemClock), 1_000_000);
    let app = app_over(Arc::new(store.clone()));
    quiet_setup(&app).await;
    // Global default, partial: omitted settings keep their values.
    let r = put(
        &app,
        "/api/config/global",
        json!({"max_global_concurrent_requests": 1000, "max_tenant_queue_size": 100,
               "max_keys_per_tenant": 30, "max_request_window_seconds": 3600}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["global"]["max_keys_per_tenant"], 30);
    assert_eq!(r.json()["global"]["new_keys_per_second"], 1000);

    // The request-window cap: 400 naming the allowed maximum.
    let r = check(&app, "someone", "c", Some(31_536_000.0)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_argument");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("3600 seconds"));
    assert_eq!(
        check(&app, "noisy", "c0", Some(600.0)).await.status,
        StatusCode::OK
    );

    let (allowed, refusal) = flood(&app, 50).await;
    assert_eq!(allowed, 30, "c0 (existing) and 29 new keys");
    assert!(refusal.unwrap().text().contains("30 keys"));

    // Per tenant, next to its weight.
    let r = put(
        &app,
        "/api/config/tenant/noisy/settings",
        json!({"max_keys": 40, "max_request_window_seconds": 600}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let b = &r.json()["state_bounds"];
    assert_eq!(b["configured"], true);
    assert_eq!(b["max_keys"], 40);
    assert_eq!(b["overrides"]["new_keys_per_second"], Value::Null);
    let (allowed, refusal) = flood(&app, 50).await;
    assert_eq!(
        allowed, 40,
        "its 30 existing keys, and 10 new up to its own 40"
    );
    assert!(refusal.unwrap().text().contains("budget of 40 keys"));
    let r = check(&app, "noisy", "x", Some(600.5)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("600 seconds"));

    let r = send(&app, Method::GET, "/api/config/tenant/noisy", None, &[]).await;
    assert_eq!(r.json()["state_bounds"]["max_request_window_seconds"], 600);
    let r = send(&app, Method::GET, "/api/config", None, &[]).await;
    assert_eq!(r.json()["tenants"]["noisy"]["max_keys"], 40);
    assert_eq!(r.json()["global"]["max_keys_per_tenant"], 30);

    // `null` removes the override; bad values are refused and change nothing.
    let r = put(
        &app,
        "/api/config/tenant/noisy/settings",
        json!({"max_keys": null}),
    )
    .await;
    assert_eq!(r.json()["state_bounds"]["max_keys"], 30);
    for bad in [
        json!({"max_keys": 0}),
        json!({"new_keys_per_second": -1}),
        json!({"max_request_window_seconds": 31_536_001u64}),
        json!({"weight": 0}),
        json!({"budget": 5}),
    ] {
        let r = put(&app, "/api/config/tenant/noisy/settings", bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text());
    }
    let r = send(&app, Method::GET, "/api/config/tenant/noisy", None, &[]).await;
    assert_eq!(r.json()["state_bounds"]["max_request_window_seconds"], 600);
    quiet_is_exact(&app).await;
}

/// The same scenario over Redis, where the bound is the creation rate.
#[tokio::test]
async fn redis_flood_leaves_quiet_tenant_exact() {
    if redis_server::skip_without_redis("redis isolation over http") {
        return;
    }
    let server = redis_server::RedisServer::start();
    let store = RedisStore::connect(
        &RedisOptions::new(vec![server.url()]),
        RedisStoreOptions::default(),
    )
    .await
    .unwrap();
    let app = app_over(Arc::new(store));
    quiet_setup(&app).await;
    let r = put(
        &app,
        "/api/config/global",
        json!({"max_global_concurrent_requests": 1000, "max_tenant_queue_size": 100,
               "new_keys_per_second": 10}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let started = Instant::now();
    let (allowed, refusal) = flood(&app, 300).await;
    let secs = started.elapsed().as_secs() + 1;
    assert!(
        allowed >= 10 && allowed <= 10 * (secs + 1),
        "{allowed} in {secs} s"
    );
    let msg = refusal.unwrap().json()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("10 per second"), "{msg}");
    quiet_is_exact(&app).await;
}
