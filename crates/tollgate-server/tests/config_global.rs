//! `PUT /api/config/global` through the real router: any subset of the keys, omitted keys keep
//! their value, and a change made while another is being saved builds on it, never on what was in
//! force when its request arrived.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use serde_json::json;
use support::{send, service, service_over};
use tokio::sync::{Notify, Semaphore};
use tollgate_core::config::{ConfigBackend, ConfigDocument, ConfigError, ConfigManager};

/// Saves instantly until armed; the first save after arming reports itself and waits for a permit.
struct GatedBackend {
    armed: AtomicBool,
    entered: Notify,
    gate: Semaphore,
}

#[async_trait]
impl ConfigBackend for GatedBackend {
    async fn load(&self) -> Result<Option<ConfigDocument>, ConfigError> {
        Ok(None)
    }
    async fn save(&self, _: &ConfigDocument, _: u64) -> Result<(), ConfigError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            let _permit = self.gate.acquire().await.expect("gate open");
        }
        Ok(())
    }
}

/// Issue 18 item 6: `PUT /api/config/global` without `queue_timeout_ms` sent while a timeout
/// change is being saved keeps the new timeout once that change is acknowledged.
#[tokio::test]
async fn an_omitted_queue_timeout_keeps_a_concurrent_acknowledged_change() {
    let backend = Arc::new(GatedBackend {
        armed: AtomicBool::new(false),
        entered: Notify::new(),
        gate: Semaphore::new(0),
    });
    let config = ConfigManager::open(backend.clone(), None).await.unwrap();
    let svc = service_over(None, config);
    backend.armed.store(true, Ordering::SeqCst);

    let app = svc.app.clone();
    let timeout_change = tokio::spawn(async move {
        send(
            &app,
            Method::PUT,
            "/api/config/global",
            Some(r#"{"max_global_concurrent_requests":1000,"max_tenant_queue_size":100,"queue_timeout_ms":5000}"#),
            &[],
        )
        .await
    });
    backend.entered.notified().await;
    // The timeout change is being saved. A change of the other two settings arrives meanwhile.
    let app = svc.app.clone();
    let capacity_change = tokio::spawn(async move {
        send(
            &app,
            Method::PUT,
            "/api/config/global",
            Some(r#"{"max_global_concurrent_requests":7,"max_tenant_queue_size":3}"#),
            &[],
        )
        .await
    });
    // Let it get as far as it can (up to the writer lock) before the first save finishes.
    for _ in 0..20 {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    backend.gate.add_permits(1);
    let first = timeout_change.await.unwrap();
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.json()["global"]["queue_timeout_ms"], 5000);
    let second = capacity_change.await.unwrap();
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(
        second.json()["global"],
        serde_json::json!({"max_global_concurrent_requests": 7, "max_tenant_queue_size": 3, "queue_timeout_ms": 5000, "max_keys_per_tenant": 1_000_000, "new_keys_per_second": 1000, "max_request_window_seconds": 31_536_000}),
        "the acknowledged timeout change was undone"
    );
    let g = svc.state.engine().config().global;
    assert_eq!(g.queue_timeout_ms, 5000);
    assert_eq!(svc.state.engine().load().timeout.as_millis(), 5000);
}

async fn put_global(svc: &support::TestService, body: &str) -> support::Reply {
    send(&svc.app, Method::PUT, "/api/config/global", Some(body), &[]).await
}

/// Issue 12 item 1: any subset of the keys, including none; omitted (or null) keys keep their value.
#[tokio::test]
async fn any_subset_of_the_global_keys_may_be_given() {
    let svc = service(None);
    let r = put_global(&svc, r#"{"queue_timeout_ms":250}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json()["global"],
        json!({"max_global_concurrent_requests": 1000, "max_tenant_queue_size": 100, "queue_timeout_ms": 250, "max_keys_per_tenant": 1_000_000, "new_keys_per_second": 1000, "max_request_window_seconds": 31_536_000})
    );
    let r = put_global(&svc, r#"{"max_tenant_queue_size":0}"#).await;
    assert_eq!(
        r.json()["global"],
        json!({"max_global_concurrent_requests": 1000, "max_tenant_queue_size": 0, "queue_timeout_ms": 250, "max_keys_per_tenant": 1_000_000, "new_keys_per_second": 1000, "max_request_window_seconds": 31_536_000})
    );
    let r = put_global(
        &svc,
        r#"{"max_global_concurrent_requests":9,"queue_timeout_ms":null}"#,
    )
    .await;
    assert_eq!(
        r.json()["global"],
        json!({"max_global_concurrent_requests": 9, "max_tenant_queue_size": 0, "queue_timeout_ms": 250, "max_keys_per_tenant": 1_000_000, "new_keys_per_second": 1000, "max_request_window_seconds": 31_536_000})
    );
    let before = r.json()["version"].as_u64().unwrap();
    let r = put_global(&svc, "{}").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["global"]["max_global_concurrent_requests"], 9);
    assert_eq!(r.json()["version"].as_u64().unwrap(), before + 1);
    let load = svc.state.engine().load();
    assert_eq!(
        (load.capacity, load.max_queue, load.timeout.as_millis()),
        (9, 0, 250)
    );
}

/// A bad value in a partial body is refused with a clear error and changes nothing.
#[tokio::test]
async fn a_partial_global_change_is_validated_as_a_whole() {
    let svc = service(None);
    let v0 = svc.state.engine().config().version;
    for (body, field) in [
        (
            r#"{"max_global_concurrent_requests":0}"#,
            "max_global_concurrent_requests",
        ),
        (r#"{"queue_timeout_ms":600001}"#, "queue_timeout_ms"),
        (
            r#"{"max_tenant_queue_size":5,"queue_timeout_ms":0}"#,
            "queue_timeout_ms",
        ),
    ] {
        let r = put_global(&svc, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        assert_eq!(r.json()["error"], "invalid_argument", "{body}");
        let msg = r.json()["message"].as_str().unwrap().to_string();
        assert!(msg.contains(field), "{body}: {msg}");
    }
    let r = put_global(&svc, r#"{"queue_timeout":5}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let snap = svc.state.engine().config();
    assert_eq!(snap.version, v0, "nothing changed");
    assert_eq!(
        snap.global,
        tollgate_core::config::GlobalSettings::default()
    );
}

/// The OpenAPI document says every key is optional, with the ranges the server enforces.
#[test]
fn the_openapi_global_body_has_optional_keys_with_their_ranges() {
    let doc = serde_json::to_value(tollgate_server::api::openapi()).unwrap();
    let body = &doc["components"]["schemas"]["GlobalBody"];
    assert!(body.get("required").is_none(), "{body}");
    assert_eq!(body["additionalProperties"], false);
    for (key, min, max) in [
        ("max_global_concurrent_requests", 1, 1_000_000),
        ("max_tenant_queue_size", 0, 1_000_000),
        ("queue_timeout_ms", 1, 600_000),
    ] {
        let p = &body["properties"][key];
        assert_eq!(
            (p["minimum"].as_u64(), p["maximum"].as_u64()),
            (Some(min), Some(max)),
            "{key}: {p}"
        );
    }
}
