//! `GET /api/stats` through the real router: figures after a scripted run of decisions equal the
//! known counts; the admin token guards it; the dashboard's page and assets are served.

mod support;

use axum::http::{Method, StatusCode};
use serde_json::Value;
use support::{send, service};

const TOKEN: &str = "stats-test-token";

async fn decide(app: &axum::Router, tenant: &str, client: &str, max: u64) -> StatusCode {
    let body = format!(
        r#"{{"tenant_id":"{tenant}","client_id":"{client}","action_type":"read","max_requests":{max},"window_duration_seconds":60}}"#
    );
    send(
        app,
        Method::POST,
        "/api/check_and_consume",
        Some(&body),
        &[],
    )
    .await
    .status
}

fn tenant<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == name)
        .unwrap_or_else(|| panic!("no tenant {name} in {stats}"))
}

#[tokio::test]
async fn stats_after_scripted_decisions_equal_the_known_counts() {
    let svc = service(Some(TOKEN));
    let app = &svc.app;
    // alpha: 8 calls on one key limited to 5 -> 5 allowed, 3 denied.
    for _ in 0..8 {
        decide(app, "alpha", "hot", 5).await;
    }
    // beta: 6 calls over 3 keys limited to 10 -> 6 allowed.
    for i in 0..6 {
        assert_eq!(
            decide(app, "beta", &format!("c{}", i % 3), 10).await,
            StatusCode::OK
        );
    }
    // Not decisions: invalid input is refused before the limiter decides anything.
    let bad = send(
        app,
        Method::POST,
        "/api/check_and_consume",
        Some(r#"{"tenant_id":"alpha","client_id":"x","action_type":"read"}"#),
        &[],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // Fail open: the store is down and policy is allow.
    svc.store
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(decide(app, "beta", "c0", 10).await, StatusCode::OK);
    svc.store
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);

    let auth = format!("Bearer {TOKEN}");
    let r = send(
        app,
        Method::GET,
        "/api/stats",
        None,
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let s = r.json();
    let totals = &s["service"]["totals"];
    assert_eq!(totals["allowed"], 11, "{s}");
    assert_eq!(totals["denied"], 3);
    assert_eq!(totals["fail_open"], 1);
    assert_eq!(totals["shed"], 0);
    assert_eq!(totals["shadow_denied"], 0);
    assert_eq!(totals["error"], 0);
    let alpha = tenant(&s, "alpha");
    assert_eq!(alpha["totals"]["allowed"], 5);
    assert_eq!(alpha["totals"]["denied"], 3);
    assert_eq!(alpha["denied_share"], 3.0 / 8.0);
    assert_eq!(alpha["weight"], 1);
    let beta = tenant(&s, "beta");
    assert_eq!(beta["totals"]["allowed"], 6);
    assert_eq!(beta["totals"]["fail_open"], 1);
    assert_eq!(s["tenants"].as_array().unwrap().len(), 2);
    let top = &s["heavy_hitters"]["by_requests"][0];
    assert_eq!(top["tenant_id"], "alpha");
    assert_eq!(top["client_id"], "hot");
    assert_eq!(top["count"], 8);
    assert_eq!(top["max_requests"], 5);
    assert_eq!(top["window_duration_seconds"], 60.0);
    let denials = s["heavy_hitters"]["by_denials"].as_array().unwrap();
    assert_eq!(denials.len(), 1);
    assert_eq!(denials[0]["count"], 3);
    assert_eq!(s["service"]["store_kind"], "memory");
    assert_eq!(s["service"]["store_healthy"], true);

    // A second read counts nothing twice.
    let again = send(
        app,
        Method::GET,
        "/api/stats",
        None,
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(again.json()["service"]["totals"], *totals);
}

#[tokio::test]
async fn stats_need_the_admin_token_when_one_is_set() {
    let svc = service(Some(TOKEN));
    let r = send(&svc.app, Method::GET, "/api/stats", None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "unauthorized");
    let wrong = send(
        &svc.app,
        Method::GET,
        "/api/stats",
        None,
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let open = service(None);
    let r = send(&open.app, Method::GET, "/api/stats", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn dashboard_page_and_assets_are_embedded_with_a_strict_policy() {
    let svc = service(Some(TOKEN));
    for (path, kind, needle) in [
        ("/dashboard", "text/html", "/dashboard/app.js"),
        ("/dashboard/app.js", "text/javascript", "/api/stats"),
        ("/dashboard/app.css", "text/css", ".share"),
    ] {
        let r = send(&svc.app, Method::GET, path, None, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let ct = r.headers["content-type"].to_str().unwrap();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        assert!(r.text().contains(needle), "{path} lacks {needle}");
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    }
    // Nothing in the page refers to another origin.
    let html = send(&svc.app, Method::GET, "/dashboard", None, &[])
        .await
        .text();
    assert!(!html.contains("http://") && !html.contains("https://"));
}
