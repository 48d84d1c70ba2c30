//! Issue 12 item 8: `RateLimit-Reset` of a brand-new key never exceeds the window, while the
//! body's `reset_time_seconds` is never early. Driven by a manual clock at many sub-second offsets.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use tollgate_core::clock::ManualClock;
use tollgate_core::config::{ConfigDocument, ConfigManager};
use tollgate_core::store::MemoryStore;
use tollgate_core::{Limiter, StoreErrorPolicy};
use tollgate_server::api::router;
use tollgate_server::state::AppState;
use tower::ServiceExt;

const T0: u64 = 1_800_000_000_000_000; // µs

async fn first_decision(now: u64, window: &str) -> (u64, u64, u64) {
    let clock = ManualClock::new(now);
    let store = Arc::new(MemoryStore::new(Arc::new(clock.clone()), 10_000));
    let config = Arc::new(ConfigManager::in_memory(ConfigDocument::default()).expect("config"));
    let limiter = Arc::new(Limiter::new(config, store, StoreErrorPolicy::Allow));
    let app = router(AppState::new(limiter, None));
    let body = format!(
        r#"{{"tenant_id":"t","client_id":"c","action_type":"a","max_requests":5,"window_duration_seconds":{window}}}"#
    );
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/check_and_consume")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request");
    let resp = app.oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    let header: u64 = resp.headers()["ratelimit-reset"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("integer");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .expect("body");
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    let reset_time = json["reset_time_seconds"]
        .as_u64()
        .expect("reset_time_seconds");
    let remaining = json["remaining_requests"].as_u64().expect("remaining");
    assert_eq!(remaining, 4);
    (header, reset_time, now)
}

#[tokio::test]
async fn reset_header_of_a_new_key_never_exceeds_the_window() {
    for offset in [0, 1, 999, 123_456, 500_000, 999_999, 1_000_001] {
        let (header, reset_time, now) = first_decision(T0 + offset, "60").await;
        assert!(
            header <= 60,
            "offset {offset}: RateLimit-Reset {header} > 60"
        );
        assert!(
            header >= 59,
            "offset {offset}: RateLimit-Reset {header} too small"
        );
        // Never early: the key's first request leaves the window no earlier than this.
        assert!(
            reset_time * 1_000_000 >= now + 60_000_000,
            "offset {offset}: reset_time_seconds {reset_time} is before now + window"
        );
    }
}

#[tokio::test]
async fn reset_header_with_a_fractional_window_rounds_up_to_at_most_the_window_ceiling() {
    for offset in [0, 250_000, 999_999] {
        let (header, reset_time, now) = first_decision(T0 + offset, "1.5").await;
        assert!(
            header <= 2,
            "offset {offset}: RateLimit-Reset {header} > ceil(1.5)"
        );
        assert!(reset_time * 1_000_000 >= now + 1_500_000, "offset {offset}");
    }
}
