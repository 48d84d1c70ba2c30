//! A corrupt Redis key through the real router (issue 19, item 4): the decision on that key is
//! answered per `--on-store-error` (fail_open, or 503 `store_unavailable` JSON), counted in
//! `tollgate_store_errors_total{kind="corrupt"}`, the service stays healthy (the breaker does not
//! open), and another tenant's decisions stay exact.

#[path = "../../tollgate-core/tests/support/redis_server.rs"]
mod redis_server;
mod support;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use redis_server::{skip_without_redis, RedisServer};
use support::{parse_metrics, send};
use tollgate_core::config::{ConfigDocument, ConfigManager};
use tollgate_core::redis_conn::RedisOptions;
use tollgate_core::store::{RedisStore, RedisStoreOptions};
use tollgate_core::{Limiter, RateKey, StoreErrorPolicy};
use tollgate_server::state::AppState;

const CHECK: &str = "/api/check_and_consume";

fn body(tenant: &str) -> String {
    format!(
        r#"{{"tenant_id":"{tenant}","client_id":"c","action_type":"a","max_requests":5,"window_duration_seconds":600}}"#
    )
}

async fn app_over(server: &RedisServer, policy: StoreErrorPolicy) -> (axum::Router, RedisStore) {
    let store = RedisStore::connect(
        &RedisOptions::new(vec![server.url()]),
        RedisStoreOptions::default(),
    )
    .await
    .expect("connect to the test redis");
    let config = ConfigManager::in_memory(ConfigDocument::default()).unwrap();
    let limiter = Arc::new(Limiter::new(
        Arc::new(config),
        Arc::new(store.clone()),
        policy,
    ));
    let state = AppState::new(limiter, None);
    (tollgate_server::api::router(state), store)
}

async fn corrupt_with_a_list(server: &RedisServer, store: &RedisStore, tenant: &str) {
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let name = store.redis_key(RateKey::new(tenant, "c", "a"));
    let _: () = redis::cmd("DEL")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg(&name)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_corrupt_key_is_answered_per_policy_counted_and_isolated() {
    if skip_without_redis("a_corrupt_key_is_answered_per_policy") {
        return;
    }
    let server = RedisServer::start();
    for policy in [StoreErrorPolicy::Deny, StoreErrorPolicy::Allow] {
        let (app, store) = app_over(&server, policy).await;
        let victim = format!("victim-{policy:?}");
        let bad = format!("bad-{policy:?}");
        let mut victim_allowed = 0;
        for round in 0..8 {
            corrupt_with_a_list(&server, &store, &bad).await;
            let r = send(&app, Method::POST, CHECK, Some(&body(&bad)), &[]).await;
            let j = r.json();
            match policy {
                StoreErrorPolicy::Deny => {
                    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{j}");
                    assert_eq!(j["error"], "store_unavailable");
                    assert!(j["message"].as_str().unwrap().contains("corrupt"), "{j}");
                }
                StoreErrorPolicy::Allow => {
                    assert_eq!(r.status, StatusCode::OK, "{j}");
                    assert_eq!(j["status"], "fail_open");
                }
            }
            let r = send(&app, Method::POST, CHECK, Some(&body(&victim)), &[]).await;
            let j = r.json();
            assert_ne!(
                j["status"], "fail_open",
                "round {round}: victim failed open"
            );
            victim_allowed += (r.status == StatusCode::OK) as u32;
            let h = send(&app, Method::GET, "/api/health", None, &[]).await;
            assert_eq!(h.status, StatusCode::OK, "round {round}: still healthy");
        }
        assert_eq!(
            victim_allowed, 5,
            "{policy:?}: the victim got exactly its limit"
        );
        let m = send(&app, Method::GET, "/metrics", None, &[]).await;
        let m = parse_metrics(&m.text());
        assert_eq!(m["tollgate_store_errors_total{kind=\"corrupt\"}"], 8.0);
        assert_eq!(m["tollgate_store_errors_total{kind=\"unavailable\"}"], 0.0);
        assert_eq!(m["tollgate_store_healthy"], 1.0);
    }
}
