//! Configuration at scale through the real router (issue 17): `GET /api/config` pages in tenant
//! id order, `POST /api/config/batch` applies all or nothing under one version, and
//! `GET /api/config/export` gives the whole configuration back as JSON or TOML.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tollgate_core::clock::ManualClock;
use tollgate_core::config::{parse_toml, ConfigDocument, ConfigManager};
use tollgate_core::store::MemoryStore;
use tollgate_core::{Limiter, StoreErrorPolicy};
use tollgate_server::api::router;
use tollgate_server::state::AppState;
use tower::ServiceExt;

fn app_with(tenants: usize) -> Router {
    let mut doc = ConfigDocument::default();
    for i in 0..tenants {
        doc.tenants.insert(
            format!("t{i:04}"),
            serde_json::from_value(
                json!({"actions": {"a": {"max_requests": i + 1, "window_duration_seconds": 60.0}}}),
            )
            .unwrap(),
        );
    }
    let config = Arc::new(ConfigManager::in_memory(doc).unwrap());
    let clock = ManualClock::new(1_800_000_000_000_000);
    let store = Arc::new(MemoryStore::new(Arc::new(clock), 10_000));
    let limiter = Arc::new(Limiter::new(config, store, StoreErrorPolicy::Allow));
    router(AppState::new(limiter, None))
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

async fn json_call(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (s, b) = call(app, method, uri, body).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

#[tokio::test]
async fn pages_cover_every_tenant_once_in_order() {
    let app = app_with(2500);
    // Without parameters: today's fields, the first 1,000 tenants, and where to go on.
    let (s, first) = json_call(&app, Method::GET, "/api/config", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(first["global"]["max_global_concurrent_requests"], 1000);
    assert!(first["version"].as_u64().is_some());
    assert_eq!(first["tenants"].as_object().unwrap().len(), 1000);
    assert_eq!(first["next_after"], "t0999");

    let mut seen: Vec<String> = Vec::new();
    let mut uri = "/api/config?limit=700".to_string();
    loop {
        let (s, page) = json_call(&app, Method::GET, &uri, None).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        seen.extend(page["tenants"].as_object().unwrap().keys().cloned());
        match page["next_after"].as_str() {
            Some(next) => uri = format!("/api/config?limit=700&after={next}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..2500).map(|i| format!("t{i:04}")).collect();
    assert_eq!(seen, expected);

    // A small configuration fits one page, with nothing after it.
    let (_, small) = json_call(&app_with(3), Method::GET, "/api/config", None).await;
    assert_eq!(small["tenants"].as_object().unwrap().len(), 3);
    assert_eq!(small["next_after"], Value::Null);
}

#[tokio::test]
async fn bad_page_parameters_are_clear_400s() {
    let app = app_with(3);
    for uri in [
        "/api/config?limit=0",
        "/api/config?limit=10001",
        "/api/config?limit=abc",
        "/api/config?after=",
        "/api/config?pages=2",
    ] {
        let (s, body) = json_call(&app, Method::GET, uri, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"], "invalid_argument", "{uri}: {body}");
    }
}

#[tokio::test]
async fn a_batch_applies_everything_under_one_version_or_nothing() {
    let app = app_with(0);
    let (_, before) = json_call(&app, Method::GET, "/api/config", None).await;
    let v0 = before["version"].as_u64().unwrap();
    let batch = json!({"changes": [
        {"op": "set_action", "tenant_id": "acme", "action_type": "login", "max_requests": 5, "window_duration_seconds": 60},
        {"op": "set_client", "tenant_id": "acme", "client_id": "vip", "action_type": "login", "max_requests": 50, "window_duration_seconds": 60},
        {"op": "set_weight", "tenant_id": "beta", "weight": 3},
    ]});
    let (s, body) = json_call(&app, Method::POST, "/api/config/batch", Some(batch)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["changes"], 3);
    assert_eq!(body["version"], v0 + 1);
    let (_, acme) = json_call(&app, Method::GET, "/api/config/tenant/acme", None).await;
    assert_eq!(acme["actions"]["login"]["max_requests"], 5);
    assert_eq!(acme["clients"]["vip"]["login"]["max_requests"], 50);

    // A change that cannot apply (nothing to delete) or is invalid refuses the whole batch.
    for (bad, code, needle) in [
        (
            json!({"op": "delete_action", "tenant_id": "nobody", "action_type": "x"}),
            StatusCode::NOT_FOUND,
            "nobody",
        ),
        (
            json!({"op": "set_action", "tenant_id": "acme", "action_type": "x", "max_requests": 0, "window_duration_seconds": 60}),
            StatusCode::BAD_REQUEST,
            "changes[1]",
        ),
        (
            json!({"op": "set_weight", "tenant_id": "acme", "weight": 0}),
            StatusCode::BAD_REQUEST,
            "weight",
        ),
    ] {
        let batch = json!({"changes": [
            {"op": "set_action", "tenant_id": "acme", "action_type": "login", "max_requests": 99, "window_duration_seconds": 60},
            bad,
        ]});
        let (s, body) = json_call(&app, Method::POST, "/api/config/batch", Some(batch)).await;
        assert_eq!(s, code, "{body}");
        assert!(body["message"].as_str().unwrap().contains(needle), "{body}");
        let (_, acme) = json_call(&app, Method::GET, "/api/config/tenant/acme", None).await;
        assert_eq!(
            acme["actions"]["login"]["max_requests"], 5,
            "nothing applied"
        );
        assert_eq!(acme["version"], v0 + 1);
    }

    // Malformed batches.
    for bad in [
        json!({"changes": []}),
        json!({"changes": [{"op": "explode", "tenant_id": "a"}]}),
        json!({"changes": [{"op": "set_weight", "tenant_id": "a", "weight": 2, "extra": 1}]}),
        json!({"changes": [{"op": "set_weight", "tenant_id": "", "weight": 2}]}),
        json!([1, 2]),
    ] {
        let (s, body) = json_call(&app, Method::POST, "/api/config/batch", Some(bad.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn export_gives_the_whole_configuration_as_json_and_toml() {
    let app = app_with(1500);
    let (s, bytes) = call(&app, Method::GET, "/api/config/export", None).await;
    assert_eq!(s, StatusCode::OK);
    let doc: ConfigDocument = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc.tenants.len(), 1500, "the export is not paged");
    let (s, bytes) = call(&app, Method::GET, "/api/config/export?format=toml", None).await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(bytes).unwrap();
    let back = parse_toml(std::path::Path::new("export.toml"), &text).unwrap();
    assert_eq!(back.tenants, doc.tenants);
    assert_eq!(back.global, doc.global);
    let (s, body) = json_call(&app, Method::GET, "/api/config/export?format=yaml", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
}
