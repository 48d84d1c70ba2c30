//! `GET /metrics` after a scripted run through the real router reports exact counts.

mod support;

use std::sync::atomic::Ordering;

use axum::http::{Method, StatusCode};
use support::{check_body, parse_metrics, send, service};
use tollgate_server::metrics::MAX_TENANT_LABELS;

const CHECK: &str = "/api/check_and_consume";

async fn decide(app: &axum::Router, tenant: &str, max: u64) -> StatusCode {
    send(
        app,
        Method::POST,
        CHECK,
        Some(&check_body(tenant, max)),
        &[],
    )
    .await
    .status
}

async fn scrape(app: &axum::Router) -> std::collections::BTreeMap<String, f64> {
    let r = send(app, Method::GET, "/metrics", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    parse_metrics(&r.text())
}

fn get(m: &std::collections::BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("missing series {series}; have {:#?}", m.keys()))
}

fn decisions(tenant: &str, outcome: &str) -> String {
    format!("tollgate_decisions_total{{api=\"http\",outcome=\"{outcome}\",tenant=\"{tenant}\"}}")
}

#[tokio::test]
async fn scripted_run_exact_counts() {
    let svc = service(None);
    let app = &svc.app;
    let initial_version = svc.state.engine().config().version;

    // Capacity 1 and one queue place per tenant, so queueing and shedding are deterministic.
    let r = send(
        app,
        Method::PUT,
        "/api/config/global",
        Some(r#"{"max_global_concurrent_requests":1,"max_tenant_queue_size":1,"queue_timeout_ms":60000}"#),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    for _ in 0..3 {
        assert_eq!(decide(app, "acme", 3).await, StatusCode::OK);
    }
    for _ in 0..2 {
        assert_eq!(decide(app, "acme", 3).await, StatusCode::TOO_MANY_REQUESTS);
    }
    for _ in 0..2 {
        assert_eq!(decide(app, "beta", 10).await, StatusCode::OK);
    }
    // Not decisions: rejected before reaching the limiter's verdict.
    let r = send(
        app,
        Method::POST,
        CHECK,
        Some(r#"{"tenant_id":"acme","client_id":"c","action_type":"a"}"#),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Hold the only slot; one acme request queues, the next two are shed (queue full).
    let permit = svc.limiter.load().acquire("holder", 1).await.unwrap();
    let queued = tokio::spawn({
        let app = app.clone();
        async move { decide(&app, "acme", 3).await }
    });
    for _ in 0..10_000 {
        if svc.state.engine().load().queued == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(svc.state.engine().load().queued, 1);
    for _ in 0..2 {
        assert_eq!(
            decide(app, "acme", 3).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let m = scrape(app).await;
    assert_eq!(get(&m, "tollgate_load_in_flight"), 1.0);
    assert_eq!(get(&m, "tollgate_load_capacity"), 1.0);
    assert_eq!(get(&m, "tollgate_load_queued"), 1.0);
    assert_eq!(
        get(&m, "tollgate_load_queued_per_tenant{tenant=\"acme\"}"),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "tollgate_load_rejections_total{reason=\"tenant_queue_full\"}"
        ),
        2.0
    );
    drop(permit);
    assert_eq!(queued.await.unwrap(), StatusCode::TOO_MANY_REQUESTS);

    // Store outage with the allow policy: fail open.
    svc.store.down.store(true, Ordering::SeqCst);
    assert_eq!(decide(app, "beta", 10).await, StatusCode::OK);
    let m = scrape(app).await;
    assert_eq!(get(&m, "tollgate_store_healthy"), 0.0);
    svc.store.down.store(false, Ordering::SeqCst);

    // More distinct tenants than labels: acme and beta hold two labels, so of t0..=t100 the
    // first MAX_TENANT_LABELS - 2 get their own and the rest count in the overflow series.
    let extra = MAX_TENANT_LABELS + 1;
    for i in 0..extra {
        assert_eq!(decide(app, &format!("t{i}"), 5).await, StatusCode::OK);
    }

    let m = scrape(app).await;
    assert_eq!(get(&m, &decisions("acme", "allowed")), 3.0);
    assert_eq!(get(&m, &decisions("acme", "denied")), 3.0);
    assert_eq!(get(&m, &decisions("acme", "shed")), 2.0);
    assert_eq!(get(&m, &decisions("acme", "fail_open")), 0.0);
    assert_eq!(get(&m, &decisions("beta", "allowed")), 2.0);
    assert_eq!(get(&m, &decisions("beta", "fail_open")), 1.0);
    assert_eq!(get(&m, &decisions("beta", "denied")), 0.0);
    let labelled = MAX_TENANT_LABELS - 2;
    for i in 0..labelled {
        assert_eq!(get(&m, &decisions(&format!("t{i}"), "allowed")), 1.0);
    }
    for i in labelled..extra {
        assert!(!m.contains_key(&decisions(&format!("t{i}"), "allowed")));
    }
    assert_eq!(
        get(
            &m,
            "tollgate_decisions_total{api=\"http\",outcome=\"allowed\",tenant_overflow=\"true\"}"
        ),
        (extra - labelled) as f64
    );
    let tenant_labels: std::collections::BTreeSet<&str> = m
        .keys()
        .filter(|k| k.starts_with("tollgate_decisions_total{"))
        .filter_map(|k| k.split("tenant=\"").nth(1))
        .filter_map(|t| t.split('"').next())
        .collect();
    assert_eq!(tenant_labels.len(), MAX_TENANT_LABELS, "bounded");

    let allowed = 3 + 2 + extra;
    let denied = 3;
    let shed = 2;
    let fail_open = 1;
    let decided = allowed + denied + shed + fail_open;
    assert_eq!(
        get(&m, "tollgate_decision_duration_seconds_count{api=\"http\"}"),
        decided as f64
    );
    // Every admitted decision records its queue wait; shed ones were never admitted.
    assert_eq!(
        get(&m, "tollgate_queue_wait_seconds_count"),
        (decided - shed) as f64
    );
    assert_eq!(
        get(
            &m,
            "tollgate_store_duration_seconds_count{op=\"check_and_consume\"}"
        ),
        (decided - shed) as f64
    );
    assert_eq!(
        get(&m, "tollgate_store_errors_total{kind=\"unavailable\"}"),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "tollgate_store_errors_total{kind=\"key_budget_exhausted\"}"
        ),
        0.0
    );
    assert_eq!(get(&m, "tollgate_store_healthy"), 1.0);
    // Keys: acme, beta and one per extra tenant.
    assert_eq!(get(&m, "tollgate_tracked_keys"), (2 + extra) as f64);
    assert_eq!(get(&m, "tollgate_load_in_flight"), 0.0);
    assert_eq!(get(&m, "tollgate_load_queued"), 0.0);
    assert_eq!(
        get(&m, "tollgate_load_queued_per_tenant{tenant=\"acme\"}"),
        0.0
    );
    // Admitted: every non-shed decision, plus the slot the test held.
    assert_eq!(
        get(&m, "tollgate_load_dispatched_total"),
        (decided - shed + 1) as f64
    );
    assert_eq!(get(&m, "tollgate_load_dispatched_after_wait_total"), 1.0);
    assert_eq!(
        get(
            &m,
            "tollgate_load_rejections_total{reason=\"tenant_queue_full\"}"
        ),
        2.0
    );
    assert_eq!(
        get(&m, "tollgate_load_rejections_total{reason=\"timeout\"}"),
        0.0
    );
    assert_eq!(
        get(&m, "tollgate_config_version"),
        (initial_version + 1) as f64
    );
    assert_eq!(
        get(
            &m,
            &format!(
                "tollgate_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    // Histograms have buckets, not summaries.
    assert!(m.contains_key("tollgate_decision_duration_seconds_bucket{api=\"http\",le=\"+Inf\"}"));
}

#[tokio::test]
async fn status_calls_are_not_decisions() {
    let svc = service(None);
    let r = send(
        &svc.app,
        Method::GET,
        "/api/status/acme/c/a?max_requests=5&window_duration_seconds=60",
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let m = scrape(&svc.app).await;
    assert!(!m
        .keys()
        .any(|k| k.starts_with("tollgate_decisions_total{") && k.contains("acme")));
    assert_eq!(
        get(&m, "tollgate_store_duration_seconds_count{op=\"status\"}"),
        1.0
    );
}
