//! Request logging: one line per request with its id (client errors at debug), the id echoed in
//! `X-Request-Id`, and the admin token never in the log.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
use support::{check_body, send, service};

const TOKEN: &str = "s3cret-admin-token-4f1c9e";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
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

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn capture(json: bool) -> (Captured, tracing::subscriber::DefaultGuard) {
    let out = Captured::default();
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(out.clone())
        .with_ansi(false);
    let guard = if json {
        tracing::subscriber::set_default(builder.json().finish())
    } else {
        tracing::subscriber::set_default(builder.finish())
    };
    (out, guard)
}

#[tokio::test]
async fn every_request_logged_with_its_id_and_failures_at_warn() {
    let (out, _guard) = capture(true);
    let svc = service(Some(TOKEN));
    let app = &svc.app;

    // A sane client id is echoed and logged.
    let r = send(
        app,
        Method::GET,
        "/api/health",
        None,
        &[("x-request-id", "client-id_42.a:b")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-request-id"], "client-id_42.a:b");

    // An id with unsafe characters or too long is replaced by a generated one.
    for bad in ["has space", "quote\"x", &"x".repeat(129)] {
        let r = send(
            app,
            Method::GET,
            "/api/health",
            None,
            &[("x-request-id", bad)],
        )
        .await;
        let id = r.headers["x-request-id"].to_str().unwrap().to_string();
        assert_ne!(id, bad);
        assert!(
            tollgate_server::access_log::is_sane_request_id(id.as_bytes()),
            "{id}"
        );
    }
    // Generated ids are unique.
    let a = send(app, Method::GET, "/api/health", None, &[]).await;
    let b = send(app, Method::GET, "/api/health", None, &[]).await;
    assert_ne!(a.headers["x-request-id"], b.headers["x-request-id"]);
    let failed_id = "failing-request-1";
    let r = send(
        app,
        Method::POST,
        "/api/check_and_consume",
        Some("{not json"),
        &[("x-request-id", failed_id)],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.headers["x-request-id"], failed_id);
    // A denial is an ordinary answer, not a failure.
    let denied_id = "denied-request-1";
    for _ in 0..2 {
        send(
            app,
            Method::POST,
            "/api/check_and_consume",
            Some(&check_body("t", 1)),
            &[("x-request-id", denied_id)],
        )
        .await;
    }

    let lines: Vec<serde_json::Value> = out
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json log line"))
        .collect();
    let find = |id: &str, level: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["level"] == level && l["fields"]["request_id"] == id)
            .collect()
    };
    let ok = find("client-id_42.a:b", "DEBUG");
    assert_eq!(ok.len(), 1, "{lines:#?}");
    assert_eq!(ok[0]["fields"]["method"], "GET");
    assert_eq!(ok[0]["fields"]["path"], "/api/health");
    assert_eq!(ok[0]["fields"]["status"], 200);
    assert!(ok[0]["fields"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(find("client-id_42.a:b", "WARN").is_empty());
    // A client error is logged once, at debug, with its code (issue 12 item 11).
    let failed = find(failed_id, "DEBUG");
    assert_eq!(failed.len(), 1, "{lines:#?}");
    assert_eq!(failed[0]["fields"]["status"], 400);
    assert_eq!(failed[0]["fields"]["error"], "invalid_json");
    assert!(find(failed_id, "WARN").is_empty(), "{lines:#?}");
    assert_eq!(find(denied_id, "DEBUG").len(), 2);
    assert!(
        find(denied_id, "WARN").is_empty(),
        "429 is not logged as a failure"
    );
}

#[tokio::test]
async fn admin_token_never_logged() {
    for json in [false, true] {
        let (out, _guard) = capture(json);
        let svc = service(Some(TOKEN));
        let app = &svc.app;
        let bearer = format!("Bearer {TOKEN}");
        let wrong = format!("Bearer {TOKEN}-wrong");
        for auth in [bearer.as_str(), wrong.as_str()] {
            send(
                app,
                Method::GET,
                "/api/config",
                None,
                &[("authorization", auth)],
            )
            .await;
            send(
                app,
                Method::PUT,
                "/api/config/tenant/acme/action/login",
                Some(r#"{"max_requests":5,"window_duration_seconds":60}"#),
                &[("authorization", auth)],
            )
            .await;
            send(
                app,
                Method::PUT,
                "/api/config/global",
                Some("{bad"),
                &[("authorization", auth)],
            )
            .await;
            // The token as a query string is not logged either.
            send(
                app,
                Method::GET,
                &format!("/api/config?token={TOKEN}"),
                None,
                &[("authorization", auth)],
            )
            .await;
        }
        let text = out.text();
        assert!(text.contains("/api/config"), "requests were logged: {text}");
        assert!(text.contains("401"), "the failed auth was logged: {text}");
        assert!(!text.contains(TOKEN), "token leaked into the log: {text}");
    }
}
