//! Per-request limits through the real router: URI size, header size, the end-to-end request
//! timeout; and a configuration store that cannot be written.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use support::{check_body, send, service, service_over, Binary};
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
    let load = svc.limiter.load();
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
    // Over the service's limits: a JSON 431 like every other error.
    let r = client
        .get(bin.url("/api/health"))
        .header("x-big", "a".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "headers_too_large", "{body}");
    let mut req = client.get(bin.url("/api/health"));
    for i in 0..100 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 431);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "headers_too_large", "{body}");
    // Just under both limits: served.
    let mut req = client
        .get(bin.url("/api/health"))
        .header("x-big", "a".repeat(15 * 1024));
    for i in 0..50 {
        req = req.header(format!("x-h{i}"), "v");
    }
    assert_eq!(req.send().await.unwrap().status(), 200);
    // Past what hyper reads at all: refused before routing (a bare 431), and still no harm done.
    let r = client
        .get(bin.url("/api/health"))
        .header("x-huge", "a".repeat(80 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let r = client.get(bin.url("/api/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(bin.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_through_the_accept_loop_finishes_accepted_requests() {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let cli = tollgate_server::cli::Cli::parse_from([
        "tollgate",
        "--data-dir",
        &dir.path().display().to_string(),
    ]);
    let service = tollgate_server::server::build(&cli.run).await.unwrap();
    let state = service.state.clone();
    let limiter = service.limiter.clone().expect("built from flags");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tollgate_server::server::run(
        listener,
        service,
        async move {
            let _ = stop_rx.await;
        },
        Duration::from_secs(10),
    ));
    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://{addr}{p}");
    let r = client
        .put(url("/api/config/global"))
        .json(&serde_json::json!({"max_global_concurrent_requests":1,"max_tenant_queue_size":5,"queue_timeout_ms":60000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Hold the only slot so the next decision is accepted but waits in its queue.
    let permit = limiter.load().acquire("holder", 1).await.unwrap();
    let pending = tokio::spawn({
        let client = client.clone();
        let u = url("/api/check_and_consume");
        async move {
            client
                .post(u)
                .json(&serde_json::json!({"tenant_id":"t","client_id":"c","action_type":"a","max_requests":5,"window_duration_seconds":60}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    for _ in 0..500 {
        if state.engine().load().queued == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(state.engine().load().queued, 1);
    stop_tx.send(()).unwrap();
    for _ in 0..500 {
        if state.is_draining() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(state.is_draining());
    // Once draining, a new connection is refused (or, if it raced the last accept, told so).
    let fresh = reqwest::Client::new();
    if let Ok(r) = fresh.get(url("/api/health")).send().await {
        assert_eq!(r.status(), 503);
    }
    // The accepted request completes once the slot frees, and the server then exits cleanly.
    drop(permit);
    assert_eq!(pending.await.unwrap().unwrap(), 200);
    server.await.unwrap().unwrap();
}

/// The data dir cannot be written (here: removed under the running service): a configuration
/// change answers 503 store_unavailable, the running configuration stays as it was, decisions go
/// on, and once the directory is back the same change goes through.
#[tokio::test]
async fn config_store_outage_is_a_503_and_changes_nothing() {
    use tollgate_core::config::{ConfigManager, FileBackend};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backend = Arc::new(FileBackend::new(&data).unwrap());
    let config = ConfigManager::open(backend, None).await.unwrap();
    let svc = service_over(None, config);
    let put = |max: u64| format!(r#"{{"max_requests":{max},"window_duration_seconds":60}}"#);
    let r = send(
        &svc.app,
        Method::PUT,
        "/api/config/tenant/t/action/a",
        Some(&put(5)),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let before = send(&svc.app, Method::GET, "/api/config/tenant/t", None, &[]).await;

    std::fs::remove_dir_all(&data).unwrap();
    let r = send(
        &svc.app,
        Method::PUT,
        "/api/config/tenant/t/action/a",
        Some(&put(9)),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.json()["error"], "store_unavailable");
    assert_eq!(r.headers["retry-after"], "1");
    // The client is not told where the data dir is.
    assert!(
        !r.text().contains(&data.display().to_string()),
        "{}",
        r.text()
    );
    let after = send(&svc.app, Method::GET, "/api/config/tenant/t", None, &[]).await;
    assert_eq!(
        after.body, before.body,
        "the failed change must not be applied"
    );
    let check = r#"{"tenant_id":"t","client_id":"c","action_type":"a"}"#;
    let r = send(
        &svc.app,
        Method::POST,
        "/api/check_and_consume",
        Some(check),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["limit"]["max_requests"], 5);

    std::fs::create_dir_all(&data).unwrap();
    let r = send(
        &svc.app,
        Method::PUT,
        "/api/config/tenant/t/action/a",
        Some(&put(9)),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let stored = std::fs::read_to_string(data.join("config.json")).unwrap();
    assert!(stored.contains("\"max_requests\": 9"), "{stored}");
}
