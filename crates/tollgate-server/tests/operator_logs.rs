//! Issue 12 item 11: one log line per request; client errors at debug with their error code,
//! server errors at warn, latencies rounded to the microsecond, long paths cut.

mod support;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
use support::{check_body, send, service};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn lines(out: &Captured) -> Vec<serde_json::Value> {
    let bytes = out.0.lock().expect("lock").clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json log line"))
        .collect()
}

fn for_id<'a>(lines: &'a [serde_json::Value], id: &str) -> Vec<&'a serde_json::Value> {
    lines
        .iter()
        .filter(|l| l["fields"]["request_id"] == id)
        .collect()
}

#[tokio::test]
async fn client_errors_at_debug_with_code_server_errors_at_warn() {
    let out = Captured::default();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(out.clone())
        .with_ansi(false)
        .json()
        .finish();
    let _guard = tracing::subscriber::set_default(sub);
    let svc = service(None);
    let app = &svc.app;

    // no_limit: a client error, one debug line carrying its code.
    let body = r#"{"tenant_id":"t","client_id":"c","action_type":"a"}"#;
    let r = send(
        app,
        Method::POST,
        "/api/check_and_consume",
        Some(body),
        &[("x-request-id", "no-limit-1")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // A 5 KB path: 414, logged with the path cut.
    let long = format!("/api/status/{}/c/a", "p".repeat(5000));
    let r = send(
        app,
        Method::GET,
        &long,
        None,
        &[("x-request-id", "long-path-1")],
    )
    .await;
    assert_eq!(r.status, StatusCode::URI_TOO_LONG);

    // A store outage on status: a server error, at warn with its code.
    svc.store.down.store(true, Ordering::SeqCst);
    let r = send(
        app,
        Method::GET,
        "/api/status/t/c/a?max_requests=5&window_duration_seconds=60",
        None,
        &[("x-request-id", "outage-1")],
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    svc.store.down.store(false, Ordering::SeqCst);

    let r = send(
        app,
        Method::POST,
        "/api/check_and_consume",
        Some(&check_body("t", 5)),
        &[("x-request-id", "ok-1")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    let all = lines(&out);
    let no_limit = for_id(&all, "no-limit-1");
    assert_eq!(
        no_limit.len(),
        1,
        "exactly one line per request: {no_limit:#?}"
    );
    assert_eq!(no_limit[0]["level"], "DEBUG");
    assert_eq!(no_limit[0]["fields"]["error"], "no_limit");
    assert_eq!(no_limit[0]["fields"]["status"], 400);

    let long_path = for_id(&all, "long-path-1");
    assert_eq!(long_path.len(), 1, "{long_path:#?}");
    assert_eq!(long_path[0]["level"], "DEBUG");
    assert_eq!(long_path[0]["fields"]["error"], "uri_too_long");
    let logged = long_path[0]["fields"]["path"].as_str().expect("path");
    assert!(logged.len() < 300, "{} bytes logged", logged.len());
    assert!(logged.starts_with("/api/status/ppp"), "{logged}");

    let outage = for_id(&all, "outage-1");
    assert_eq!(outage.len(), 1, "{outage:#?}");
    assert_eq!(outage[0]["level"], "WARN");
    assert_eq!(outage[0]["fields"]["error"], "store_unavailable");

    for id in ["no-limit-1", "long-path-1", "outage-1", "ok-1"] {
        for l in for_id(&all, id) {
            // Rounded to the microsecond: at most three decimals of a millisecond.
            let text = l["fields"]["latency_ms"].to_string();
            let decimals = text.split('.').nth(1).map_or(0, str::len);
            assert!(decimals <= 3, "{id}: latency_ms {text}");
        }
    }
}
