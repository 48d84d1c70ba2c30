//! `--unknown-tenants deny` through the real binary: decisions and status calls for tenants
//! without configuration are 403 `unknown_tenant` and create no state; configured tenants work.

mod support;

use support::{scrape_value, Binary};

const TOKEN: &str = "unknown-tenants-test-token";

fn check(tenant: &str) -> serde_json::Value {
    serde_json::json!({"tenant_id": tenant, "client_id": "c", "action_type": "a",
        "max_requests": 5, "window_duration_seconds": 60})
}

#[tokio::test]
async fn deny_refuses_unconfigured_tenants_with_403_and_creates_nothing() {
    let bin = Binary::start(&["--unknown-tenants", "deny", "--admin-token", TOKEN]).await;
    let client = reqwest::Client::new();
    for i in 0..20 {
        let tenant = format!("ghost-{i}");
        let r = client
            .post(bin.url("/api/check_and_consume"))
            .json(&check(&tenant))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unknown_tenant", "{body}");
        assert!(body["message"].as_str().unwrap().contains("configur"));
        let r = client
            .get(bin.url(&format!(
                "/api/status/{tenant}/c/a?max_requests=5&window_duration_seconds=60"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unknown_tenant", "{body}");
    }
    assert_eq!(
        scrape_value(&bin, "tollgate_tracked_keys").await,
        Some(0.0),
        "no key was created for an unknown tenant"
    );
    assert_eq!(
        scrape_value(&bin, "tollgate_load_dispatched_total").await,
        Some(0.0)
    );

    // A configured tenant is decided as usual.
    let r = client
        .put(bin.url("/api/config/tenant/acme/action/a"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"max_requests": 2, "window_duration_seconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for expected in [200, 200, 429] {
        let r = client
            .post(bin.url("/api/check_and_consume"))
            .json(&check("acme"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected);
    }
    assert_eq!(scrape_value(&bin, "tollgate_tracked_keys").await, Some(1.0));
    assert!(bin.stop().await.success());
}

#[tokio::test]
async fn allow_is_the_default() {
    let bin = Binary::start(&[]).await;
    let r = reqwest::Client::new()
        .post(bin.url("/api/check_and_consume"))
        .json(&check("anyone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(bin.stop().await.success());
}
