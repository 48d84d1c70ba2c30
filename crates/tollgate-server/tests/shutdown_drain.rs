//! Issue 12 items 5 and 6: on SIGTERM readiness turns 503 `draining` at once while the listener
//! keeps serving for `--drain-delay`; `/livez` stays 200; then the listener closes. A request
//! still running when `--shutdown-grace` ends is answered 503 `shutting_down`, not cut off.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Binary, SlowStore};
use tokio::net::TcpListener;
use tollgate_core::config::ConfigManager;
use tollgate_core::store::MemoryStore;
use tollgate_core::{Limiter, StoreErrorPolicy};
use tollgate_server::server::{run, Service};
use tollgate_server::state::AppState;

const BODY: &str = r#"{"tenant_id":"t","client_id":"c","action_type":"a","max_requests":100,"window_duration_seconds":60}"#;

/// A client that never reuses a connection, so every request proves the listener still accepts.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = client.get(url).send().await.expect("answered");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

async fn decide(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .expect("answered");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

fn memory_state() -> AppState {
    let config = Arc::new(ConfigManager::in_memory(Default::default()).unwrap());
    let limiter = Arc::new(Limiter::new(
        config,
        Arc::new(MemoryStore::default()),
        StoreErrorPolicy::Allow,
    ));
    AppState::new(limiter, None)
}

#[tokio::test]
async fn drain_delay_keeps_serving_while_readiness_says_draining() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = |p: &str| format!("http://{addr}{p}");
    let mut service = Service::new(memory_state());
    let delay = Duration::from_secs(3);
    service.drain_delay = delay;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(
        listener,
        service,
        async move {
            let _ = stop_rx.await;
        },
        Duration::from_secs(1),
    ));
    let client = fresh_client();

    let (code, ready) = get(&client, &url("/readyz")).await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["reasons"], serde_json::json!([]));
    let (code, live) = get(&client, &url("/livez")).await;
    assert_eq!((code, live["status"].as_str()), (200, Some("alive")));

    stop_tx.send(()).unwrap();
    let stopped = Instant::now();
    // Readiness turns at once (the signal is handled on another task: wait for it, bounded).
    let mut ready = (0, Value::Null);
    for _ in 0..200 {
        ready = get(&client, &url("/readyz")).await;
        if ready.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert_eq!(ready.1["status"], "draining");
    assert_eq!(ready.1["draining"], true);
    assert_eq!(ready.1["reasons"], serde_json::json!(["draining"]));
    let (code, health) = get(&client, &url("/api/health")).await;
    assert_eq!((code, health["status"].as_str()), (503, Some("draining")));
    // Still alive, and decisions are still served on new connections during the drain delay.
    let (code, live) = get(&client, &url("/livez")).await;
    assert_eq!((code, live["status"].as_str()), (200, Some("alive")));
    let (code, v) = decide(&client, &url("/api/check_and_consume")).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["allowed"], true);
    assert!(
        stopped.elapsed() < delay,
        "the checks above took longer than the drain delay; the test proves nothing"
    );

    server.await.unwrap().unwrap();
    assert!(
        stopped.elapsed() >= delay,
        "the listener closed before the drain delay"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after the drain"
    );
}

#[tokio::test]
async fn request_running_when_grace_ends_is_answered_shutting_down() {
    let config = Arc::new(ConfigManager::in_memory(Default::default()).unwrap());
    let limiter = Arc::new(Limiter::new(
        config,
        // Far longer than the grace period: the decision is still running when it ends.
        Arc::new(SlowStore {
            inner: MemoryStore::default(),
            delay: Duration::from_secs(30),
        }),
        StoreErrorPolicy::Allow,
    ));
    let state = AppState::new(limiter, None);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(
        listener,
        Service::new(state.clone()),
        async move {
            let _ = stop_rx.await;
        },
        Duration::from_millis(300),
    ));
    let client = fresh_client();
    let url = format!("http://{addr}/api/check_and_consume");
    let pending = tokio::spawn(async move { decide(&client, &url).await });
    for _ in 0..400 {
        if state.engine().load().in_flight == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(state.engine().load().in_flight, 1);
    stop_tx.send(()).unwrap();

    let (code, v) = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("answered at the end of the grace period, not after the store call")
        .unwrap();
    assert_eq!(code, 503, "{v}");
    assert_eq!(v["error"], "shutting_down", "{v}");
    assert_eq!(v["allowed"], false);
    assert_eq!(v["reason"], "shutting_down");
    server.await.unwrap().unwrap();
    let snap = state.engine().load();
    assert_eq!((snap.in_flight, snap.queued), (0, 0), "no slot leaked");
}

#[tokio::test]
async fn binary_reads_drain_delay_from_the_environment() {
    let bin = Binary::start_env(&[], &[("TOLLGATE_DRAIN_DELAY", "3")]).await;
    let client = fresh_client();
    bin.signal("TERM");
    let mut ready = (0, Value::Null);
    for _ in 0..200 {
        ready = get(&client, &bin.url("/readyz")).await;
        if ready.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert_eq!(ready.1["status"], "draining");
    let (code, v) = decide(&client, &bin.url("/api/check_and_consume")).await;
    assert_eq!(code, 200, "served during the drain delay: {v}");
    let (code, _) = get(&client, &bin.url("/livez")).await;
    assert_eq!(code, 200);
    let status = bin.wait_exit().await;
    assert!(status.success(), "{status}");
}
