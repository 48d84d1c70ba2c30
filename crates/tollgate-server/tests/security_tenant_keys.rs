//! Tenant credentials (`--decision-auth tenant-keys`), issue 19 item 5: keys are issued, listed
//! and revoked through the admin API; a tenant's key cannot read or spend another tenant's quota;
//! an unauthenticated caller learns nothing about which tenants exist.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use support::{send, tollgate_command, Reply};
use tollgate_core::clock::SystemClock;
use tollgate_core::config::{ConfigDocument, ConfigManager};
use tollgate_core::store::{MemoryStore, Store};
use tollgate_core::{Limiter, StoreErrorPolicy};
use tollgate_server::metrics::Metrics;
use tollgate_server::state::{AppState, DecisionAuth};

const ADMIN: &str = "tenant-keys-admin-token";

struct Svc {
    app: axum::Router,
    store: Arc<MemoryStore>,
}

fn service(auth: DecisionAuth) -> Svc {
    let store = Arc::new(MemoryStore::new(Arc::new(SystemClock), 10_000));
    let config = ConfigManager::in_memory(ConfigDocument::default()).unwrap();
    let limiter = Arc::new(Limiter::new(
        Arc::new(config),
        store.clone(),
        StoreErrorPolicy::Allow,
    ));
    let state =
        AppState::with_decision_auth(limiter, Some(ADMIN.into()), Arc::new(Metrics::new()), auth);
    Svc {
        app: tollgate_server::api::router(state),
        store,
    }
}

fn admin() -> (&'static str, String) {
    ("authorization", format!("Bearer {ADMIN}"))
}

async fn admin_send(app: &axum::Router, method: Method, uri: &str, body: Option<&str>) -> Reply {
    let (k, v) = admin();
    send(app, method, uri, body, &[(k, &v)]).await
}

async fn issue(app: &axum::Router, tenant: &str) -> (String, String) {
    let r = admin_send(
        app,
        Method::POST,
        &format!("/api/config/tenant/{tenant}/keys"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let j = r.json();
    (
        j["key_id"].as_str().unwrap().to_string(),
        j["key"].as_str().unwrap().to_string(),
    )
}

fn check(tenant: &str, cost: u64) -> String {
    format!(
        r#"{{"tenant_id":"{tenant}","client_id":"c","action_type":"a","max_requests":1000,"window_duration_seconds":600,"cost":{cost}}}"#
    )
}

async fn decide(app: &axum::Router, tenant: &str, cost: u64, auth: Option<&str>) -> Reply {
    let header = auth.map(|a| format!("Bearer {a}"));
    let headers: Vec<(&str, &str)> = header
        .as_deref()
        .map(|h| vec![("authorization", h)])
        .unwrap_or_default();
    send(
        app,
        Method::POST,
        "/api/check_and_consume",
        Some(&check(tenant, cost)),
        &headers,
    )
    .await
}

async fn status(app: &axum::Router, tenant: &str, auth: Option<&str>) -> Reply {
    let header = auth.map(|a| format!("Bearer {a}"));
    let headers: Vec<(&str, &str)> = header
        .as_deref()
        .map(|h| vec![("authorization", h)])
        .unwrap_or_default();
    send(
        app,
        Method::GET,
        &format!("/api/status/{tenant}/c/a?max_requests=1000&window_duration_seconds=600"),
        None,
        &headers,
    )
    .await
}

#[tokio::test]
async fn keys_are_issued_once_listed_without_secret_and_revoked() {
    let svc = service(DecisionAuth::TenantKeys);
    let app = &svc.app;
    // The admin token is required.
    let r = send(app, Method::POST, "/api/config/tenant/acme/keys", None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let r = admin_send(
        app,
        Method::POST,
        "/api/config/tenant/acme/keys",
        Some(r#"{"name":"billing service"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.headers["cache-control"], "no-store");
    let j = r.json();
    let key_id = j["key_id"].as_str().unwrap().to_string();
    let key = j["key"].as_str().unwrap().to_string();
    assert_eq!(j["name"], "billing service");
    assert!(j["created_at"].as_u64().unwrap() > 1_600_000_000);
    assert!(key.starts_with(&format!("tg_{key_id}_")), "{key}");
    assert_eq!(key.len(), 84);
    let (second_id, _) = issue(app, "acme").await;

    let r = admin_send(app, Method::GET, "/api/config/tenant/acme/keys", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let keys = r.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    let secret = &key[20..];
    assert!(!r.text().contains(secret), "listing shows no secret");
    // Nor does the whole configuration.
    let r = admin_send(app, Method::GET, "/api/config", None).await;
    assert!(!r.text().contains(secret));
    assert!(r.json()["tenants"]["acme"]["api_keys"][&key_id]["sha256"].is_string());

    // Bad bodies.
    for body in [r#"{"nme":"x"}"#, r#"{"name":"a\nb"}"#, "{oops"] {
        let r = admin_send(
            app,
            Method::POST,
            "/api/config/tenant/acme/keys",
            Some(body),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
    }
    let long = format!(r#"{{"name":"{}"}}"#, "x".repeat(129));
    let r = admin_send(
        app,
        Method::POST,
        "/api/config/tenant/acme/keys",
        Some(&long),
    )
    .await;
    assert_eq!(r.json()["error"], "invalid_argument");

    // The key works, then is revoked and stops working; revoking again is 404.
    assert_eq!(
        decide(app, "acme", 1, Some(&key)).await.status,
        StatusCode::OK
    );
    let del = format!("/api/config/tenant/acme/keys/{key_id}");
    let r = admin_send(app, Method::DELETE, &del, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["status"], "deleted");
    assert_eq!(
        decide(app, "acme", 1, Some(&key)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = admin_send(app, Method::DELETE, &del, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"], "not_found");
    let r = admin_send(
        app,
        Method::DELETE,
        &format!("/api/config/tenant/other/keys/{second_id}"),
        None,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "a key is revoked only through its tenant"
    );
}

#[tokio::test]
async fn another_tenants_key_can_neither_read_nor_spend_and_strangers_learn_nothing() {
    let svc = service(DecisionAuth::TenantKeys);
    let app = &svc.app;
    // Tenant A has a configured limit of 3 per 600 s for client c.
    let r = admin_send(
        app,
        Method::PUT,
        "/api/config/tenant/alpha/client/c/action/a",
        Some(r#"{"max_requests":3,"window_duration_seconds":600}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let (_, key_a) = issue(app, "alpha").await;
    let (_, key_b) = issue(app, "beta").await;

    // B's key: A's status and A's quota are out of reach (403), and nothing was created.
    let r = status(app, "alpha", Some(&key_b)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.json()["error"], "forbidden");
    assert!(
        !r.text().contains("max_requests"),
        "no limit leaks: {}",
        r.text()
    );
    let r = decide(app, "alpha", 3, Some(&key_b)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The forbidden message is the same for an existing and a non-existing tenant.
    let r2 = decide(app, "no-such-tenant", 3, Some(&key_b)).await;
    assert_eq!((r2.status, r2.body.clone()), (r.status, r.body.clone()));
    assert_eq!(
        svc.store.tracked_keys(),
        Some(0),
        "no state was read into being"
    );

    // A's own key sees its full quota: B spent nothing.
    let r = status(app, "alpha", Some(&key_a)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["current_requests"], 0);
    assert_eq!(r.json()["remaining_requests"], 3);
    assert_eq!(
        decide(app, "alpha", 3, Some(&key_a)).await.status,
        StatusCode::OK
    );
    // B's key works for B; the admin token works for anyone.
    assert_eq!(
        decide(app, "beta", 1, Some(&key_b)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        status(app, "alpha", Some(ADMIN)).await.json()["current_requests"],
        3
    );

    // Unauthenticated callers get one and the same answer whatever they ask about: a configured
    // tenant, a tenant with keys, a tenant that does not exist; no key, a garbage one, a forged
    // one, an admin-looking one.
    let flipped = if key_a.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{flipped}", &key_a[..key_a.len() - 1]);
    let mut answers = std::collections::BTreeSet::new();
    for tenant in ["alpha", "beta", "no-such-tenant"] {
        for auth in [
            None,
            Some("garbage"),
            Some(forged.as_str()),
            Some("tenant-keys-admin-tokenx"),
        ] {
            for r in [
                decide(app, tenant, 1, auth).await,
                status(app, tenant, auth).await,
            ] {
                assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{tenant} {auth:?}");
                assert_eq!(r.headers["www-authenticate"], "Bearer");
                answers.insert(r.body);
            }
        }
    }
    assert_eq!(answers.len(), 1, "every refusal is identical: {answers:?}");
    let only = String::from_utf8(answers.into_iter().next().unwrap()).unwrap();
    assert!(only.contains("\"error\":\"unauthorized\""), "{only}");
    // Two Authorization headers are ambiguous: refused.
    let (k, v) = admin();
    let key_header = format!("Bearer {key_a}");
    let r = send(
        app,
        Method::POST,
        "/api/check_and_consume",
        Some(&check("alpha", 1)),
        &[(k, &v), ("authorization", &key_header)],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A's quota is exactly where A left it.
    assert_eq!(
        status(app, "alpha", Some(&key_a)).await.json()["current_requests"],
        3
    );
}

#[tokio::test]
async fn without_tenant_keys_the_decision_api_stays_open() {
    let svc = service(DecisionAuth::None);
    assert_eq!(
        decide(&svc.app, "anyone", 1, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        status(&svc.app, "anyone", None).await.status,
        StatusCode::OK
    );
}

/// The binary on `port` over `data`, with the decision auth mode from the environment.
fn spawn(port: u16, data: &std::path::Path) -> std::process::Child {
    tollgate_command()
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .args(["--admin-token", ADMIN])
        .env("TOLLGATE_DECISION_AUTH", "tenant-keys")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/api/health")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("tollgate did not become healthy");
}

#[tokio::test]
async fn keys_persist_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let body = serde_json::json!({"tenant_id":"acme","client_id":"c","action_type":"a","max_requests":5,"window_duration_seconds":60});

    let mut child = spawn(port, &data);
    wait_healthy(&client, &base).await;
    let r = client
        .post(format!("{base}/api/config/tenant/acme/keys"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<serde_json::Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let decide = |auth: Option<String>| {
        let mut req = client
            .post(format!("{base}/api/check_and_consume"))
            .json(&body);
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        req.send()
    };
    assert_eq!(decide(None).await.unwrap().status(), 401);
    assert_eq!(decide(Some(key.clone())).await.unwrap().status(), 200);
    let _ = child.kill();
    let _ = child.wait();

    let mut child = spawn(port, &data);
    wait_healthy(&client, &base).await;
    let after = decide(Some(key.clone())).await.unwrap().status();
    let unauth = decide(None).await.unwrap().status();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(after, 200, "the key survived the restart");
    assert_eq!(unauth, 401);
}
