//! The admin token on every `/api/config*` route: a table of missing, wrong, malformed and
//! correct `Authorization` headers. Decision, status, health and operator endpoints stay open.

mod support;

use axum::http::{Method, StatusCode};
use support::{check_body, send, service, Binary};

const TOKEN: &str = "Adm1n-t0ken_for.tests~";

/// Every configuration route, in an order where each DELETE finds what the PUT before it made.
fn config_routes() -> Vec<(Method, &'static str, Option<&'static str>)> {
    let limit = Some(r#"{"max_requests":5,"window_duration_seconds":60}"#);
    vec![
        (Method::GET, "/api/config", None),
        (
            Method::PUT,
            "/api/config/global",
            Some(r#"{"max_global_concurrent_requests":10,"max_tenant_queue_size":5}"#),
        ),
        (Method::GET, "/api/config/tenant/acme", None),
        (
            Method::PUT,
            "/api/config/tenant/acme/weight",
            Some(r#"{"weight":2}"#),
        ),
        (Method::PUT, "/api/config/tenant/acme/action/login", limit),
        (Method::DELETE, "/api/config/tenant/acme/action/login", None),
        (
            Method::PUT,
            "/api/config/tenant/acme/client/u1/action/login",
            limit,
        ),
        (
            Method::DELETE,
            "/api/config/tenant/acme/client/u1/action/login",
            None,
        ),
    ]
}

fn rejected_headers() -> Vec<(&'static str, Vec<String>)> {
    let t = TOKEN;
    vec![
        ("missing", vec![]),
        ("empty value", vec![String::new()]),
        ("wrong token", vec!["Bearer wrong".into()]),
        ("token plus a character", vec![format!("Bearer {t}x")]),
        (
            "token prefix",
            vec![format!("Bearer {}", &t[..t.len() - 1])],
        ),
        ("token without scheme", vec![t.to_string()]),
        ("Bearer without token", vec!["Bearer".into()]),
        ("Bearer and a space only", vec!["Bearer ".into()]),
        ("Basic credentials", vec![format!("Basic {t}")]),
        ("other scheme", vec![format!("Token {t}")]),
        ("scheme glued to token", vec![format!("Bearer{t}")]),
        ("trailing word", vec![format!("Bearer {t} extra")]),
        ("trailing space", vec![format!("Bearer {t} ")]),
        ("quoted token", vec![format!("Bearer \"{t}\"")]),
        ("token with comma", vec![format!("Bearer {t},")]),
        ("tab separator", vec![format!("Bearer\t{t}")]),
        (
            "two headers, one right",
            vec![format!("Bearer {t}"), "Bearer wrong".into()],
        ),
        (
            "two right headers",
            vec![format!("Bearer {t}"), format!("Bearer {t}")],
        ),
    ]
}

fn accepted_headers() -> Vec<(&'static str, String)> {
    let t = TOKEN;
    vec![
        ("canonical", format!("Bearer {t}")),
        ("lowercase scheme", format!("bearer {t}")),
        ("uppercase scheme", format!("BEARER {t}")),
        ("several spaces", format!("Bearer   {t}")),
    ]
}

#[tokio::test]
async fn auth_table_on_every_config_route() {
    let svc = service(Some(TOKEN));
    let version = || svc.state.engine().config().version;
    let mut checked = 0;
    for (name, values) in rejected_headers() {
        for (method, path, body) in config_routes() {
            let before = version();
            let headers: Vec<(&str, &str)> = values
                .iter()
                .map(|v| ("authorization", v.as_str()))
                .collect();
            let r = send(&svc.app, method.clone(), path, body, &headers).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{name}: {method} {path}"
            );
            assert_eq!(r.json()["error"], "unauthorized", "{name}: {method} {path}");
            assert!(r.json()["message"].as_str().unwrap().contains("Bearer"));
            assert_eq!(r.headers["www-authenticate"], "Bearer");
            assert_eq!(
                version(),
                before,
                "{name}: {method} {path} changed the config"
            );
            assert!(!r.text().contains(TOKEN), "the token is never echoed");
            checked += 1;
        }
    }
    for (name, value) in accepted_headers() {
        for (method, path, body) in config_routes() {
            let r = send(
                &svc.app,
                method.clone(),
                path,
                body,
                &[("authorization", &value)],
            )
            .await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{name}: {method} {path}: {}",
                r.text()
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        config_routes().len() * (rejected_headers().len() + accepted_headers().len())
    );
}

#[tokio::test]
async fn unknown_config_paths_do_not_reveal_more_than_unknown_paths() {
    let svc = service(Some(TOKEN));
    // Authentication comes first on routed config paths; unrouted ones are plain 404s.
    let r = send(&svc.app, Method::GET, "/api/config/nope", None, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(&svc.app, Method::POST, "/api/config", None, &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn decision_and_operator_endpoints_stay_open() {
    let svc = service(Some(TOKEN));
    for auth in [None, Some("Bearer wrong"), Some("Basic x")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let r = send(
            &svc.app,
            Method::POST,
            "/api/check_and_consume",
            Some(&check_body("t", 100)),
            &headers,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{auth:?}");
        let r = send(
            &svc.app,
            Method::GET,
            "/api/status/t/c/a?max_requests=100&window_duration_seconds=60",
            None,
            &headers,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{auth:?}");
        for path in ["/api/health", "/metrics", "/api/openapi.json"] {
            let r = send(&svc.app, Method::GET, path, None, &headers).await;
            assert_eq!(r.status, StatusCode::OK, "{path} {auth:?}");
        }
    }
}

#[tokio::test]
async fn without_a_token_config_routes_are_open() {
    let svc = service(None);
    for (method, path, body) in config_routes() {
        let r = send(&svc.app, method.clone(), path, body, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{method} {path}: {}", r.text());
    }
}

#[tokio::test]
async fn binary_enforces_the_token_and_rejects_unusable_ones() {
    let bin = Binary::start(&["--admin-token", TOKEN]).await;
    let client = reqwest::Client::new();
    let r = client.get(bin.url("/api/config")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(bin.url("/api/config"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!bin.stderr().contains(TOKEN));
    assert!(bin.stop().await.success());

    for bad in ["", "has space"] {
        let dir = tempfile::tempdir().unwrap();
        let out = support::tollgate_command()
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(["--admin-token", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--admin-token must be"), "{err}");
    }
}
