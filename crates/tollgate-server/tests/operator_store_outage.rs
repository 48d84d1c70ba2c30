//! Issue 12 item 7: during a store outage, messages say what is actually true for the policy in
//! force — status cannot read the store, decisions fail open under `allow` and are refused
//! under `deny`.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use support::{check_body, send, service, SwitchableStore};
use tollgate_core::clock::SystemClock;
use tollgate_core::config::{ConfigDocument, ConfigManager};
use tollgate_core::store::{MemoryStore, Store};
use tollgate_core::{Limiter, StoreErrorPolicy};
use tollgate_server::state::AppState;

const STATUS: &str = "/api/status/t/c/a?max_requests=5&window_duration_seconds=60";

#[tokio::test]
async fn status_during_an_outage_under_allow_does_not_claim_deny() {
    let svc = service(None);
    svc.store.down.store(true, Ordering::SeqCst);

    // Decisions fail open under the default policy...
    let r = send(
        &svc.app,
        Method::POST,
        "/api/check_and_consume",
        Some(&check_body("t", 5)),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["status"], "fail_open");

    // ...so status must not say the service denies on store errors.
    let r = send(&svc.app, Method::GET, STATUS, None, &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    let j = r.json();
    assert_eq!(j["error"], "store_unavailable");
    let msg = j["message"].as_str().unwrap_or_default();
    assert!(!msg.contains("configured to deny"), "{msg}");
    assert!(!msg.contains("deny on store errors"), "{msg}");
    assert!(msg.contains("status"), "{msg}");
    assert!(msg.contains("fail_open"), "{msg}");

    // The outage ends: status answers again.
    svc.store.down.store(false, Ordering::SeqCst);
    let r = send(&svc.app, Method::GET, STATUS, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn decision_refused_under_deny_says_deny() {
    let store = Arc::new(SwitchableStore {
        inner: MemoryStore::new(Arc::new(SystemClock), 1_000),
        down: AtomicBool::new(true),
    });
    let config = Arc::new(ConfigManager::in_memory(ConfigDocument::default()).expect("config"));
    let dyn_store: Arc<dyn Store> = store.clone();
    let limiter = Arc::new(Limiter::new(config, dyn_store, StoreErrorPolicy::Deny));
    let app = tollgate_server::api::router(AppState::new(limiter, None));
    let r = send(
        &app,
        Method::POST,
        "/api/check_and_consume",
        Some(&check_body("t", 5)),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    let j = r.json();
    assert_eq!(j["error"], "store_unavailable");
    let msg = j["message"].as_str().unwrap_or_default();
    assert!(msg.contains("--on-store-error deny"), "{msg}");
}
