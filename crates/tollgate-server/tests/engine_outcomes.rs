//! One decision outcome for both front ends: every decision, HTTP or Envoy RLS, counts once in
//! the dashboard statistics (`GET /api/stats`) and once in `/metrics` under its `api` label, and
//! both classify it the same way (a shadow denial is `shadow_denied` in both).

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use serde_json::Value;
use support::{send, service_with, TestService};
use tollgate_core::config::parse_toml;
use tonic::transport::Channel;

const CONFIG: &str = r#"
[tenants.shop.actions]
user = { max_requests = 3, window_duration_seconds = 60 }
trial = { limits = [
  { max_requests = 100, window_duration_seconds = 60, name = "enforced" },
  { max_requests = 1, window_duration_seconds = 30, name = "trial", shadow = true },
] }
"#;

fn svc() -> TestService {
    let doc = parse_toml(std::path::Path::new("outcomes.toml"), CONFIG).expect("valid config");
    service_with(None, doc)
}

async fn decide(svc: &TestService, client: &str, action: &str) -> (StatusCode, Value) {
    let body = format!(r#"{{"tenant_id":"shop","client_id":"{client}","action_type":"{action}"}}"#);
    let r = send(
        &svc.app,
        Method::POST,
        "/api/check_and_consume",
        Some(&body),
        &[],
    )
    .await;
    (r.status, r.json())
}

async fn stats(svc: &TestService) -> Value {
    let r = send(&svc.app, Method::GET, "/api/stats", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

async fn metrics(svc: &TestService) -> std::collections::BTreeMap<String, f64> {
    let r = send(&svc.app, Method::GET, "/metrics", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    support::parse_metrics(&r.text())
}

fn decisions(m: &std::collections::BTreeMap<String, f64>, api: &str, outcome: &str) -> f64 {
    let series =
        format!(r#"tollgate_decisions_total{{api="{api}",outcome="{outcome}",tenant="shop"}}"#);
    m.get(&series)
        .copied()
        .unwrap_or_else(|| panic!("no series {series}"))
}

#[tokio::test]
async fn a_shadow_denial_is_shadow_denied_in_stats_and_in_metrics() {
    let svc = svc();
    let (s, b) = decide(&svc, "ann", "trial").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.get("shadow_denied").is_none(), "{b}");
    // The shadow limit (1 per minute) would deny the second; the enforced one allows it.
    let (s, b) = decide(&svc, "ann", "trial").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["shadow_denied"], true, "{b}");

    let st = stats(&svc).await;
    let totals = &st["service"]["totals"];
    assert_eq!(totals["allowed"], 1, "{st}");
    assert_eq!(totals["shadow_denied"], 1, "{st}");
    assert_eq!(totals["denied"], 0, "{st}");
    let shop = &st["tenants"][0];
    assert_eq!(shop["tenant"], "shop");
    assert_eq!(shop["totals"]["shadow_denied"], 1, "{st}");

    let m = metrics(&svc).await;
    assert_eq!(decisions(&m, "http", "allowed"), 1.0);
    assert_eq!(decisions(&m, "http", "shadow_denied"), 1.0);
    assert_eq!(decisions(&m, "http", "denied"), 0.0);
}

/// An RLS client; the listener stops when it is dropped.
struct Rls {
    client: RateLimitServiceClient<Channel>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_rls(svc: &TestService) -> Rls {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tollgate_server::rls::serve(
        listener,
        svc.state.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    for _ in 0..100 {
        if let Ok(c) = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            return Rls {
                client: RateLimitServiceClient::new(c),
                _stop: stop,
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("RLS listener did not come up on {addr}");
}

fn rls_request(client: &str) -> RateLimitRequest {
    RateLimitRequest {
        domain: "shop".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "user".into(),
                value: client.into(),
            }],
            ..Default::default()
        }],
        hits_addend: 0,
    }
}

#[tokio::test]
async fn every_decision_of_either_front_end_counts_once_in_stats_and_once_in_metrics() {
    let svc = svc();
    let mut rls = start_rls(&svc).await;
    // RLS: 4 on a key limited to 3 -> 3 allowed, 1 denied.
    let mut codes = Vec::new();
    for _ in 0..4 {
        let r = rls
            .client
            .should_rate_limit(rls_request("rita"))
            .await
            .unwrap();
        codes.push(r.into_inner().overall_code);
    }
    assert_eq!(
        codes,
        [Code::Ok, Code::Ok, Code::Ok, Code::OverLimit].map(|c| c as i32)
    );
    // HTTP: 2 allowed on another key.
    for _ in 0..2 {
        assert_eq!(decide(&svc, "hugo", "user").await.0, StatusCode::OK);
    }

    let st = stats(&svc).await;
    let totals = &st["service"]["totals"];
    assert_eq!(totals["allowed"], 5, "{st}");
    assert_eq!(totals["denied"], 1, "{st}");
    let shop = &st["tenants"][0];
    assert_eq!(shop["totals"]["allowed"], 5, "{st}");
    assert_eq!(shop["totals"]["denied"], 1, "{st}");
    // The RLS key is a heavy hitter under its own (tenant, client, action) with its limit.
    let top = &st["heavy_hitters"]["by_requests"][0];
    assert_eq!(top["client_id"], "rita", "{st}");
    assert_eq!(top["action_type"], "user");
    assert_eq!(top["count"], 4);
    assert_eq!(top["max_requests"], 3);
    assert_eq!(st["heavy_hitters"]["by_denials"][0]["client_id"], "rita");

    let m = metrics(&svc).await;
    assert_eq!(decisions(&m, "rls", "allowed"), 3.0);
    assert_eq!(decisions(&m, "rls", "denied"), 1.0);
    assert_eq!(decisions(&m, "http", "allowed"), 2.0);
    assert_eq!(decisions(&m, "http", "denied"), 0.0);
    assert_eq!(
        m.get(r#"tollgate_decision_duration_seconds_count{api="rls"}"#),
        Some(&4.0)
    );
    assert_eq!(
        m.get(r#"tollgate_decision_duration_seconds_count{api="http"}"#),
        Some(&2.0)
    );
    // The engine times its store calls: six decisions, six consuming store calls.
    assert_eq!(
        m.get(r#"tollgate_store_duration_seconds_count{op="check_and_consume"}"#),
        Some(&6.0)
    );
}
