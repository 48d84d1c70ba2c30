//! Graceful shutdown with requests waiting in the load manager: those served within the grace
//! period answer normally, the rest get 503 `shutting_down`; every client gets a full response.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::SlowStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_core::config::{ConfigDocument, ConfigManager, GlobalSettings};
use tollgate_core::store::MemoryStore;
use tollgate_core::{Limiter, StoreErrorPolicy};
use tollgate_server::server::{run, Service};
use tollgate_server::state::AppState;

async fn post(addr: std::net::SocketAddr, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /api/check_and_consume HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .await
        .expect("a full response, no reset");
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").expect("complete headers");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).expect("a complete JSON body"),
    )
}

#[tokio::test]
async fn queued_requests_are_served_or_told_shutting_down() {
    let doc = ConfigDocument {
        global: GlobalSettings {
            max_global_concurrent_requests: 1,
            max_tenant_queue_size: 50,
            queue_timeout_ms: 60_000,
            ..Default::default()
        },
        ..Default::default()
    };
    let config = Arc::new(ConfigManager::in_memory(doc).unwrap());
    let limiter = Arc::new(Limiter::new(
        config,
        // 200 ms per decision, so requests queue behind the one slot.
        Arc::new(SlowStore {
            inner: MemoryStore::default(),
            delay: Duration::from_millis(200),
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
        Duration::from_millis(500),
    ));

    let body = r#"{"tenant_id":"t","client_id":"c","action_type":"a","max_requests":100,"window_duration_seconds":60}"#;
    let clients: Vec<_> = (0..8).map(|_| tokio::spawn(post(addr, body))).collect();
    // Let all eight arrive: one runs, seven wait in the tenant's queue.
    for _ in 0..100 {
        if state.engine().load().queued == 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(state.engine().load().queued, 7);
    stop_tx.send(()).unwrap();

    let mut served = 0;
    let mut shut = 0;
    for c in clients {
        let (status, v) = c.await.unwrap();
        match status {
            200 => {
                assert_eq!(v["allowed"], true);
                served += 1;
            }
            503 => {
                assert_eq!(v["error"], "shutting_down", "{v}");
                assert_eq!(v["allowed"], false);
                shut += 1;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    // 200 ms per decision and a 500 ms grace: the running one plus two or three queued ones finish.
    assert!((2..=4).contains(&served), "served {served}");
    assert_eq!(served + shut, 8);
    server.await.unwrap().unwrap();
    let snap = state.engine().load();
    assert_eq!((snap.in_flight, snap.queued), (0, 0));
}
