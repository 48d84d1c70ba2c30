//! Issue 19 item 6: the metrics overflow series cannot merge with a real tenant, request ids carry
//! no counter, and a short admin token is refused on a listener reachable from the network.

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use support::{check_body, parse_metrics, send, service, tollgate_command, Binary};
use tollgate_server::metrics::MAX_TENANT_LABELS;

#[tokio::test]
async fn tenant_named_other_keeps_its_own_series_apart_from_the_overflow() {
    let svc = service(None);
    let decide = |tenant: String| {
        let app = svc.app.clone();
        async move {
            let r = send(
                &app,
                Method::POST,
                "/api/check_and_consume",
                Some(&check_body(&tenant, 1000)),
                &[],
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        }
    };
    for _ in 0..3 {
        decide("other".into()).await;
    }
    // `other` holds one label; t0..t98 take the rest; t99..t101 overflow.
    for i in 0..MAX_TENANT_LABELS + 2 {
        decide(format!("t{i}")).await;
    }
    let text = send(&svc.app, Method::GET, "/metrics", None, &[])
        .await
        .text();
    let m = parse_metrics(&text);
    assert_eq!(
        m.get(r#"tollgate_decisions_total{api="http",outcome="allowed",tenant="other"}"#),
        Some(&3.0),
        "the tenant `other` counts only its own decisions"
    );
    assert_eq!(
        m.get(r#"tollgate_decisions_total{api="http",outcome="allowed",tenant_overflow="true"}"#),
        Some(&3.0),
        "tenants past the label budget count in the overflow series"
    );
    assert!(
        !m.contains_key(r#"tollgate_decisions_total{api="http",outcome="allowed",tenant="t99"}"#)
    );
    // The overflow series has no `tenant` label, so no tenant id can ever name it.
    assert!(text
        .lines()
        .filter(|l| l.contains("tenant_overflow="))
        .all(|l| !l.contains("tenant=\"")));
}

#[tokio::test]
async fn generated_request_ids_are_random_128_bit_hex() {
    let svc = service(None);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = send(&svc.app, Method::GET, "/api/health", None, &[]).await;
        let id = r.headers["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 32, "128 bits as hex: {id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id}"
        );
        ids.push(id);
    }
    // No shared per-process prefix and no counter: consecutive ids differ in their first half too.
    for pair in ids.windows(2) {
        assert_ne!(pair[0][..16], pair[1][..16], "{ids:?}");
    }
    // A sane client id is still echoed.
    let r = send(
        &svc.app,
        Method::GET,
        "/api/health",
        None,
        &[("x-request-id", "client-id-1")],
    )
    .await;
    assert_eq!(r.headers["x-request-id"], "client-id-1");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

async fn wait_for_exit(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    for _ in 0..200 {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

#[tokio::test]
async fn short_admin_token_is_refused_on_a_public_listener_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    // Non-loopback with a 15-character token: refused, by flag and by environment variable.
    for by_env in [false, true] {
        let mut cmd = tollgate_command();
        cmd.args(["--listen", "0.0.0.0:0", "--data-dir", &data])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if by_env {
            cmd.env("TOLLGATE_ADMIN_TOKEN", "fifteen-chars-x");
        } else {
            cmd.args(["--admin-token", "fifteen-chars-x"]);
        }
        let mut child = cmd.spawn().unwrap();
        let status = wait_for_exit(&mut child).await;
        let _ = child.kill();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(1), "{err}");
        assert!(err.contains("at least 16 characters"), "{err}");
    }

    // Non-loopback with a 16-character token starts and serves.
    let port = free_port();
    let mut child = tollgate_command()
        .args(["--listen", &format!("0.0.0.0:{port}"), "--data-dir", &data])
        .args(["--admin-token", "sixteen-chars-xy"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/api/config");
    let client = reqwest::Client::new();
    let mut served = None;
    for _ in 0..200 {
        if let Ok(r) = client
            .get(&url)
            .bearer_auth("sixteen-chars-xy")
            .send()
            .await
        {
            served = Some(r.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(served, Some(reqwest::StatusCode::OK));

    // Loopback keeps accepting a short token.
    let bin = Binary::start(&["--admin-token", "x"]).await;
    let r = client
        .get(bin.url("/api/config"))
        .bearer_auth("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
