//! The HTTP API through the real router (no socket): every endpoint, every error code, the limit
//! precedence, and a table of malformed or hostile requests.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use support::SlowStore;
use tollgate_core::clock::ManualClock;
use tollgate_core::config::{ConfigDocument, ConfigManager};
use tollgate_core::limit::{Limit, RateKey};
use tollgate_core::store::{MemoryStore, Store, StoreError};
use tollgate_core::window::Verdict;
use tollgate_core::{Limiter, StoreErrorPolicy};
use tollgate_server::api::router;
use tollgate_server::state::AppState;
use tower::ServiceExt;

const T0: u64 = 1_800_000_000_000_000; // µs

struct App {
    router: Router,
    state: AppState,
    clock: ManualClock,
}

fn app_with(store: Arc<dyn Store>, clock: ManualClock, token: Option<&str>) -> App {
    let config = Arc::new(ConfigManager::in_memory(ConfigDocument::default()).unwrap());
    let limiter = Arc::new(Limiter::new(config, store, StoreErrorPolicy::Allow));
    let state = AppState::new(limiter, token.map(str::to_string));
    App {
        router: router(state.clone()),
        state,
        clock,
    }
}

fn app() -> App {
    let clock = ManualClock::new(T0);
    app_with(
        Arc::new(MemoryStore::new(Arc::new(clock.clone()), 10_000)),
        clock.clone(),
        None,
    )
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn send(router: &Router, req: Request<Body>) -> Resp {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("non-JSON body ({e}): {}", String::from_utf8_lossy(&bytes)))
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn req(method: Method, uri: &str, body: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if body.is_some() {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    b.body(body.map_or_else(Body::empty, |s| Body::from(s.to_string())))
        .unwrap()
}

async fn call(app: &App, method: Method, uri: &str, body: Option<Value>) -> Resp {
    let text = body.map(|b| b.to_string());
    send(&app.router, req(method, uri, text.as_deref())).await
}

async fn check(app: &App, body: Value) -> Resp {
    call(app, Method::POST, "/api/check_and_consume", Some(body)).await
}

fn decision(t: &str, c: &str, a: &str) -> Value {
    json!({"tenant_id": t, "client_id": c, "action_type": a, "max_requests": 3, "window_duration_seconds": 10})
}

#[tokio::test]
async fn allows_up_to_the_limit_then_denies_with_retry_information() {
    let app = app();
    for i in 0..3u64 {
        let r = check(&app, decision("t", "c", "a")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["allowed"], true);
        assert_eq!(r.body["status"], "processed");
        assert_eq!(r.body["remaining_requests"], 2 - i);
        assert_eq!(r.body["limit"]["source"], "request");
        assert_eq!(r.body["limit"]["max_requests"], 3);
        assert_eq!(r.body["limit"]["window_duration_seconds"], 10.0);
        assert_eq!(r.headers["ratelimit-limit"], "3");
        assert_eq!(
            r.headers["ratelimit-remaining"],
            (2 - i).to_string().as_str()
        );
        // The first request leaves exactly 10 s after it was made (entries carry their newest
        // request's time, never a rounded-up one), so the reset is T0 + 10 s, not a second later.
        assert_eq!(r.body["reset_time_seconds"], T0 / 1_000_000 + 10);
        app.clock.advance(1_000_000);
    }
    let r = check(&app, decision("t", "c", "a")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.body["allowed"], false);
    assert_eq!(r.body["remaining_requests"], 0);
    let retry = r.body["retry_after_seconds"].as_f64().unwrap();
    assert!(
        (7.0..=7.001).contains(&retry),
        "retry_after_seconds {retry}"
    );
    // Exactly 7 s (the oldest request leaves at T0 + 10 s), so the header, rounded up, is 7.
    assert_eq!(r.headers[header::RETRY_AFTER], "7");
    assert_eq!(r.headers["ratelimit-remaining"], "0");
    // Obeying retry_after_seconds is enough.
    app.clock.advance((retry * 1_000_000.0) as u64);
    let r = check(&app, decision("t", "c", "a")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn cost_is_all_or_nothing_and_validated() {
    let app = app();
    let mut body = decision("t", "c", "a");
    body["cost"] = json!(2);
    assert_eq!(
        check(&app, body.clone()).await.body["remaining_requests"],
        1
    );
    let r = check(&app, body.clone()).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.body["remaining_requests"], 1,
        "a denied cost consumes nothing"
    );
    body["cost"] = json!(1);
    assert_eq!(check(&app, body.clone()).await.status, StatusCode::OK);
    body["cost"] = json!(4);
    let r = check(&app, body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "invalid_argument");
}

#[tokio::test]
async fn precedence_client_then_action_then_request() {
    let app = app();
    let body = decision("acme", "vip", "login");
    assert_eq!(
        check(&app, body.clone()).await.body["limit"]["source"],
        "request"
    );

    let r = call(
        &app,
        Method::PUT,
        "/api/config/tenant/acme/action/login",
        Some(json!({"max_requests": 100, "window_duration_seconds": 60})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = check(&app, body.clone()).await;
    assert_eq!(r.body["limit"]["source"], "action");
    assert_eq!(r.body["limit"]["max_requests"], 100);

    let r = call(
        &app,
        Method::PUT,
        "/api/config/tenant/acme/client/vip/action/login",
        Some(json!({"max_requests": 1000, "window_duration_seconds": 0.5})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = check(&app, body.clone()).await;
    assert_eq!(r.body["limit"]["source"], "client");
    assert_eq!(r.body["limit"]["window_duration_seconds"], 0.5);
    // Other clients of the tenant still get the action limit, other tenants the request's.
    assert_eq!(
        check(&app, decision("acme", "other", "login")).await.body["limit"]["source"],
        "action"
    );
    assert_eq!(
        check(&app, decision("zeta", "vip", "login")).await.body["limit"]["source"],
        "request"
    );

    // A configured limit applies even when the request sends none; without any: no_limit.
    let bare = json!({"tenant_id": "acme", "client_id": "vip", "action_type": "login"});
    assert_eq!(
        check(&app, bare.clone()).await.body["limit"]["source"],
        "client"
    );
    let none = json!({"tenant_id": "zeta", "client_id": "vip", "action_type": "login"});
    let r = check(&app, none).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "no_limit");

    let r = call(
        &app,
        Method::DELETE,
        "/api/config/tenant/acme/client/vip/action/login",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        check(&app, body.clone()).await.body["limit"]["source"],
        "action"
    );
    let r = call(
        &app,
        Method::DELETE,
        "/api/config/tenant/acme/action/login",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(check(&app, body).await.body["limit"]["source"], "request");

    // Deleting what is not there is 404.
    for path in [
        "/api/config/tenant/acme/action/login",
        "/api/config/tenant/acme/client/vip/action/login",
    ] {
        let r = call(&app, Method::DELETE, path, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.body["error"], "not_found");
    }
}

#[tokio::test]
async fn changing_a_limit_keeps_the_log() {
    let app = app();
    let path = "/api/config/tenant/t/action/a";
    call(
        &app,
        Method::PUT,
        path,
        Some(json!({"max_requests": 10, "window_duration_seconds": 60})),
    )
    .await;
    let bare = json!({"tenant_id": "t", "client_id": "c", "action_type": "a"});
    for _ in 0..5 {
        assert_eq!(check(&app, bare.clone()).await.status, StatusCode::OK);
    }
    call(
        &app,
        Method::PUT,
        path,
        Some(json!({"max_requests": 5, "window_duration_seconds": 60})),
    )
    .await;
    let r = check(&app, bare.clone()).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the 5 already logged count under the new limit"
    );
    call(
        &app,
        Method::PUT,
        path,
        Some(json!({"max_requests": 6, "window_duration_seconds": 60})),
    )
    .await;
    let r = check(&app, bare).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["remaining_requests"], 0);
}

#[tokio::test]
async fn status_reports_without_consuming() {
    let app = app();
    check(&app, decision("t", "c", "a")).await;
    let uri = "/api/status/t/c/a?max_requests=3&window_duration_seconds=10";
    for _ in 0..3 {
        let r = call(&app, Method::GET, uri, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["current_requests"], 1);
        assert_eq!(r.body["remaining_requests"], 2);
        assert_eq!(r.body["limit"]["source"], "request");
        assert_eq!(r.body["reset_time_seconds"], T0 / 1_000_000 + 10);
        assert_eq!(r.headers["ratelimit-remaining"], "2");
    }
    let r = call(&app, Method::GET, "/api/status/t/c/a", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "no_limit");
    // Percent-encoded ids reach the same key as the JSON body's.
    check(&app, decision("org/a b", "c", "a")).await;
    let r = call(
        &app,
        Method::GET,
        "/api/status/org%2Fa%20b/c/a?max_requests=3&window_duration_seconds=10",
        None,
    )
    .await;
    assert_eq!(r.body["current_requests"], 1);
    assert_eq!(r.body["tenant_id"], "org/a b");
}

#[tokio::test]
async fn keys_are_injective() {
    let app = app();
    let one = json!({"tenant_id": "a:b", "client_id": "c", "action_type": "x", "max_requests": 1, "window_duration_seconds": 60});
    let two = json!({"tenant_id": "a", "client_id": "b:c", "action_type": "x", "max_requests": 1, "window_duration_seconds": 60});
    assert_eq!(check(&app, one.clone()).await.status, StatusCode::OK);
    assert_eq!(
        check(&app, two).await.status,
        StatusCode::OK,
        "a different key, not the same one"
    );
    assert_eq!(check(&app, one).await.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn configuration_endpoints() {
    let app = app();
    let r = call(&app, Method::GET, "/api/config", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["global"]["max_global_concurrent_requests"], 1000);
    let v0 = r.body["version"].as_u64().unwrap();

    let r = call(
        &app,
        Method::PUT,
        "/api/config/global",
        Some(json!({"max_global_concurrent_requests": 200, "max_tenant_queue_size": 50})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["global"],
        json!({"max_global_concurrent_requests": 200, "max_tenant_queue_size": 50, "queue_timeout_ms": 1000,
               "max_keys_per_tenant": 1_000_000, "new_keys_per_second": 1000,
               "max_request_window_seconds": 31_536_000})
    );
    assert_eq!(r.body["version"], v0 + 1);
    let load = app.state.engine().load();
    assert_eq!(
        (load.capacity, load.max_queue),
        (200, 50),
        "global settings take effect at once"
    );

    let r = call(&app, Method::PUT, "/api/config/global",
        Some(json!({"max_global_concurrent_requests": 300, "max_tenant_queue_size": 0, "queue_timeout_ms": 250}))).await;
    assert_eq!(r.body["global"]["queue_timeout_ms"], 250);
    assert_eq!(
        app.state.engine().load().timeout,
        Duration::from_millis(250)
    );

    call(
        &app,
        Method::PUT,
        "/api/config/tenant/acme/action/login",
        Some(json!({"max_requests": 5, "window_duration_seconds": 1.5})),
    )
    .await;
    call(
        &app,
        Method::PUT,
        "/api/config/tenant/acme/client/bob/action/login",
        Some(json!({"max_requests": 9, "window_duration_seconds": 2})),
    )
    .await;
    let r = call(
        &app,
        Method::PUT,
        "/api/config/tenant/acme/weight",
        Some(json!({"weight": 3})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["weight"], 3);

    let r = call(&app, Method::GET, "/api/config/tenant/acme", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["tenant_id"], "acme");
    assert_eq!(r.body["weight"], 3);
    assert_eq!(
        r.body["actions"]["login"],
        json!({"max_requests": 5, "window_duration_seconds": 1.5})
    );
    assert_eq!(
        r.body["clients"]["bob"]["login"],
        json!({"max_requests": 9, "window_duration_seconds": 2.0})
    );

    // An unconfigured tenant reads as defaults.
    let r = call(&app, Method::GET, "/api/config/tenant/nobody", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["weight"], 1);
    assert_eq!(r.body["actions"], json!({}));

    let r = call(&app, Method::GET, "/api/config", None).await;
    assert_eq!(r.body["tenants"]["acme"]["weight"], 3);
    assert_eq!(r.body["version"], v0 + 5);
}

#[tokio::test]
async fn health_and_draining() {
    let app = app();
    let r = call(&app, Method::GET, "/api/health", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "healthy");
    app.state.begin_drain();
    let r = call(&app, Method::GET, "/api/health", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body, json!({"status": "draining"}));
}

#[tokio::test]
async fn admin_token_guards_config_only() {
    let clock = ManualClock::new(T0);
    let app = app_with(
        Arc::new(MemoryStore::new(Arc::new(clock.clone()), 100)),
        clock,
        Some("s3cret"),
    );
    let r = call(&app, Method::GET, "/api/config", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"], "unauthorized");
    let ok = Request::builder()
        .uri("/api/config")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app.router, ok).await.status, StatusCode::OK);
    let wrong = Request::builder()
        .uri("/api/config")
        .header(header::AUTHORIZATION, "Bearer s3cre")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&app.router, wrong).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Decisions stay open.
    assert_eq!(
        check(&app, decision("t", "c", "a")).await.status,
        StatusCode::OK
    );
}

/// A store that refuses every key: the key budget reached.
struct FullStore;

#[async_trait]
impl Store for FullStore {
    async fn check_and_consume(
        &self,
        _: RateKey<'_>,
        _: Limit,
        _: u64,
    ) -> Result<Verdict, StoreError> {
        Err(StoreError::KeyBudgetExhausted { max: 7 })
    }
    async fn status(&self, _: RateKey<'_>, _: Limit) -> Result<Verdict, StoreError> {
        Err(StoreError::KeyBudgetExhausted { max: 7 })
    }
    fn kind(&self) -> &'static str {
        "full"
    }
}

#[tokio::test]
async fn key_budget_exhausted_is_a_clear_503() {
    let store = MemoryStore::new(Arc::new(ManualClock::new(T0)), 1);
    let app = app_with(Arc::new(store), ManualClock::new(T0), None);
    assert_eq!(
        check(&app, decision("t", "c", "a")).await.status,
        StatusCode::OK
    );
    let r = check(&app, decision("t", "c2", "a")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["error"], "key_budget_exhausted");
    assert!(r.body["message"].as_str().unwrap().contains("--max-keys"));
    // The policy for outages (fail open) does not apply to a full store.
    let app = app_with(Arc::new(FullStore), ManualClock::new(T0), None);
    assert_eq!(
        check(&app, decision("t", "c", "a")).await.body["error"],
        "key_budget_exhausted"
    );
}

#[tokio::test(start_paused = true)]
async fn saturation_sheds_with_queue_full_and_timeout() {
    let clock = ManualClock::new(T0);
    let store = SlowStore {
        inner: MemoryStore::new(Arc::new(clock.clone()), 100),
        delay: Duration::from_millis(100),
    };
    let app = app_with(Arc::new(store), clock, None);
    call(&app, Method::PUT, "/api/config/global",
        Some(json!({"max_global_concurrent_requests": 1, "max_tenant_queue_size": 1, "queue_timeout_ms": 150}))).await;
    let body = json!({"tenant_id": "t", "client_id": "c", "action_type": "a", "max_requests": 100, "window_duration_seconds": 60});
    // One runs, one waits, the third finds the tenant's queue full; a fourth, queued behind the
    // second, times out after 150 ms.
    let a = tokio::spawn({
        let r = app.router.clone();
        let b = body.to_string();
        async move { send(&r, req(Method::POST, "/api/check_and_consume", Some(&b))).await }
    });
    tokio::task::yield_now().await;
    let b = tokio::spawn({
        let r = app.router.clone();
        let b = body.to_string();
        async move { send(&r, req(Method::POST, "/api/check_and_consume", Some(&b))).await }
    });
    tokio::task::yield_now().await;
    let c = check(&app, body.clone()).await;
    assert_eq!(c.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(c.body["allowed"], false);
    assert_eq!(c.body["status"], "rejected");
    assert_eq!(c.body["reason"], "tenant_queue_full");
    assert!(c.headers.contains_key(header::RETRY_AFTER));
    let a = a.await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["queue_wait_ms"], 0.0);
    let b = b.await.unwrap();
    assert_eq!(b.status, StatusCode::OK);
    let waited = b.body["queue_wait_ms"].as_f64().unwrap();
    assert!(
        (99.0..=101.0).contains(&waited),
        "queued behind one 100 ms decision: {waited}"
    );

    // Timeout: capacity 1 held by a 100 ms decision, then a waiter with a 50 ms timeout.
    call(&app, Method::PUT, "/api/config/global",
        Some(json!({"max_global_concurrent_requests": 1, "max_tenant_queue_size": 5, "queue_timeout_ms": 50}))).await;
    let a = tokio::spawn({
        let r = app.router.clone();
        let b = body.to_string();
        async move { send(&r, req(Method::POST, "/api/check_and_consume", Some(&b))).await }
    });
    tokio::task::yield_now().await;
    let t = check(&app, body).await;
    assert_eq!(t.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(t.body["status"], "timeout");
    assert_eq!(t.body["allowed"], false);
    assert!(t.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(a.await.unwrap().status, StatusCode::OK);
    let load = app.state.engine().load();
    assert_eq!((load.in_flight, load.queued), (0, 0), "nothing leaked");
}

/// Each case: method, path, body, extra header, expected status, expected error code.
/// Method, path, body, extra header, expected status, expected error code.
type Case = (
    Method,
    String,
    Option<String>,
    Option<(&'static str, &'static str)>,
    u16,
    &'static str,
);

fn hostile_cases() -> Vec<Case> {
    let ok =
        |extra: &str| format!(r#"{{"tenant_id":"h","client_id":"c","action_type":"a"{extra}}}"#);
    let long = "x".repeat(257);
    let cc = "/api/check_and_consume".to_string();
    let p = |s: &str| Some(s.to_string());
    vec![
        (Method::POST, cc.clone(), p("{"), None, 400, "invalid_json"),
        (Method::POST, cc.clone(), p(""), None, 400, "invalid_json"),
        (
            Method::POST,
            cc.clone(),
            p("not json"),
            None,
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            cc.clone(),
            p(r#"{"tenant_id":"t",}"#),
            None,
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            cc.clone(),
            p("[1,2,3]"),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p("null"),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(
                r#"{"client_id":"c","action_type":"a","max_requests":1,"window_duration_seconds":1}"#,
            ),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(r#"{"tenant_id":7,"client_id":"c","action_type":"a"}"#),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(r#"{"tenant_id":null,"client_id":"c","action_type":"a"}"#),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&ok(r#","max_requests":"10","window_duration_seconds":1"#)),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&ok(r#","max_requests":10.5,"window_duration_seconds":1"#)),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&ok(r#","max_requests":-1,"window_duration_seconds":1"#)),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&ok(r#","max_requests":0,"window_duration_seconds":1"#)),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&ok(
                r#","max_requests":1000000001,"window_duration_seconds":1"#,
            )),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&ok(r#","max_requests":1e30,"window_duration_seconds":1"#)),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&ok(r#","max_requests":5,"window_duration_seconds":0"#)),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&ok(r#","max_requests":5,"window_duration_seconds":-3"#)),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&ok(
                r#","max_requests":5,"window_duration_seconds":31536001"#,
            )),
            None,
            400,
            "invalid_argument",
        ),
        // Shorter than the millisecond resolution (the document's minimum is 0.001).
        (
            Method::POST,
            cc.clone(),
            p(&ok(r#","max_requests":5,"window_duration_seconds":0.0001"#)),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&ok(r#","max_requests":5,"window_duration_seconds":"1"#)),
            None,
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&ok(r#","max_requests":5"#)),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&ok(r#","window_duration_seconds":5"#)),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&ok(
                r#","max_requests":5,"window_duration_seconds":5,"cost":0"#,
            )),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&ok(
                r#","max_requests":5,"window_duration_seconds":5,"cost":6"#,
            )),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&ok(
                r#","max_requests":5,"window_duration_seconds":5,"cost":-1"#,
            )),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(
                r#"{"tenant_id":"","client_id":"c","action_type":"a","max_requests":1,"window_duration_seconds":1}"#,
            ),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(&format!(
                r#"{{"tenant_id":"{long}","client_id":"c","action_type":"a","max_requests":1,"window_duration_seconds":1}}"#
            )),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(
                r#"{"tenant_id":"t\u0000","client_id":"c","action_type":"a","max_requests":1,"window_duration_seconds":1}"#,
            ),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::POST,
            cc.clone(),
            p(
                r#"{"tenant_id":"t","client_id":"c\n","action_type":"a","max_requests":1,"window_duration_seconds":1}"#,
            ),
            None,
            400,
            "invalid_argument",
        ),
        (Method::POST, cc.clone(), p(&ok("")), None, 400, "no_limit"),
        (
            Method::POST,
            cc.clone(),
            Some(format!(
                r#"{{"tenant_id":"t","pad":"{}"}}"#,
                "x".repeat(70_000)
            )),
            None,
            413,
            "payload_too_large",
        ),
        (
            Method::GET,
            cc.clone(),
            None,
            None,
            405,
            "method_not_allowed",
        ),
        (
            Method::DELETE,
            "/api/health".into(),
            None,
            None,
            405,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/api/nope".into(),
            None,
            None,
            404,
            "not_found",
        ),
        (Method::GET, "/".into(), None, None, 404, "not_found"),
        (
            Method::GET,
            "/api/status/t/c".into(),
            None,
            None,
            404,
            "not_found",
        ),
        (
            Method::GET,
            "/api/status/t/c/a?max_requests=abc&window_duration_seconds=1".into(),
            None,
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::GET,
            "/api/status/t/c/a?max_requests=5".into(),
            None,
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::GET,
            "/api/status/t/c/a?max_requests=5&window_duration_seconds=nan".into(),
            None,
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::GET,
            "/api/status/t%00/c/a?max_requests=5&window_duration_seconds=1".into(),
            None,
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::GET,
            "/api/status/t%FF/c/a?max_requests=5&window_duration_seconds=1".into(),
            None,
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/api/config/global".into(),
            p(r#"{"max_global_concurrent_requests":0,"max_tenant_queue_size":1}"#),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/api/config/global".into(),
            // Keys may be omitted (they keep their value); one given out of range still fails.
            p(r#"{"max_global_concurrent_requests":10,"queue_timeout_ms":600001}"#),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/api/config/global".into(),
            p(r#"{"max_global_concurrent_requests":10,"max_tenant_queue_size":-1}"#),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/api/config/global".into(),
            p(
                r#"{"max_global_concurrent_requests":10,"max_tenant_queue_size":1,"queue_timeout_ms":0}"#,
            ),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/api/config/global".into(),
            p(r#"{"max_global_concurrent_requests":10,"max_tenant_queue_size":1,"bogus":1}"#),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/api/config/tenant/t/action/a".into(),
            p(r#"{"max_requests":0,"window_duration_seconds":1}"#),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/api/config/tenant/t/action/a".into(),
            p(r#"{"max_requests":5}"#),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/api/config/tenant/t/action/a".into(),
            p("{]"),
            None,
            400,
            "invalid_json",
        ),
        (
            Method::PUT,
            format!("/api/config/tenant/{long}/action/a"),
            p(r#"{"max_requests":5,"window_duration_seconds":1}"#),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/api/config/tenant/t/client/c/action/a".into(),
            p(r#"{"max_requests":5,"window_duration_seconds":"soon"}"#),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/api/config/tenant/t/client/c%0A/action/a".into(),
            p(r#"{"max_requests":5,"window_duration_seconds":1}"#),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/api/config/tenant/t/weight".into(),
            p(r#"{"weight":0}"#),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/api/config/tenant/t/weight".into(),
            p(r#"{"weight":1.5}"#),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/api/config/tenant/t/weight".into(),
            p(r#"{"weight":100000}"#),
            None,
            400,
            "invalid_argument",
        ),
        (
            Method::DELETE,
            "/api/config/tenant/t/action/never".into(),
            None,
            None,
            404,
            "not_found",
        ),
        (
            Method::DELETE,
            "/api/config/tenant/t/client/c/action/never".into(),
            None,
            None,
            404,
            "not_found",
        ),
        (
            Method::POST,
            "/api/config/global".into(),
            p("{}"),
            None,
            405,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/api/config/tenant/t/action/a".into(),
            None,
            None,
            405,
            "method_not_allowed",
        ),
        // Content type is not policed: curl's default form type still works.
        (
            Method::POST,
            cc,
            p(r#"{"tenant_id":"t","client_id":"c","action_type":"a"}"#),
            Some(("content-type", "application/x-www-form-urlencoded")),
            200,
            "",
        ),
    ]
}

#[tokio::test]
async fn hostile_requests_get_documented_json_errors_and_change_nothing() {
    let app = app();
    // Some state to protect.
    call(
        &app,
        Method::PUT,
        "/api/config/tenant/t/action/a",
        Some(json!({"max_requests": 50, "window_duration_seconds": 60})),
    )
    .await;
    call(
        &app,
        Method::PUT,
        "/api/config/tenant/t/client/c/action/a",
        Some(json!({"max_requests": 40, "window_duration_seconds": 60})),
    )
    .await;
    let before = call(&app, Method::GET, "/api/config", None).await.body;
    let cases = hostile_cases();
    assert!(cases.len() >= 30);
    for (i, (method, path, body, extra, status, code)) in cases.into_iter().enumerate() {
        let mut b = Request::builder().method(method.clone()).uri(&path);
        if let Some((k, v)) = extra {
            b = b.header(k, v);
        } else if body.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        let r = send(
            &app.router,
            b.body(body.map_or_else(Body::empty, Body::from)).unwrap(),
        )
        .await;
        assert_eq!(
            r.status.as_u16(),
            status,
            "case {i}: {method} {path}: {:?}",
            r.body
        );
        if status >= 400 {
            assert_eq!(
                r.body["error"], code,
                "case {i}: {method} {path}: {:?}",
                r.body
            );
            let msg = r.body["message"].as_str().unwrap_or("");
            assert!(
                msg.len() > 10,
                "case {i}: a message that says what is wrong: {msg:?}"
            );
            assert_eq!(
                r.headers[header::CONTENT_TYPE],
                "application/json",
                "case {i}"
            );
        }
    }
    let r = call(&app, Method::GET, "/api/health", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        call(&app, Method::GET, "/api/config", None).await.body,
        before
    );
    // The data is intact: the client limit still governs, with one request (the text/plain case) logged.
    let r = call(&app, Method::GET, "/api/status/t/c/a", None).await;
    assert_eq!(r.body["limit"]["max_requests"], 40);
    assert_eq!(r.body["current_requests"], 1);
}
