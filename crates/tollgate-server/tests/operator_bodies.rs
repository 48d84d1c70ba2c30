//! Issue 12 items 4 and 9 through the real router: bodies are strict JSON objects, and a bad
//! number, shape or query string gets a message that names the field, its allowed range and
//! what was given (shortened).

mod support;

use axum::http::{Method, StatusCode};
use support::{send, service};

const CHECK: &str = "/api/check_and_consume";

async fn refused(method: Method, uri: &str, body: Option<&str>, token: Option<&str>) -> String {
    let svc = service(token);
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    let r = send(&svc.app, method, uri, body, &headers).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "{uri} {body:?}: {}",
        r.text()
    );
    let j = r.json();
    let code = j["error"].as_str().unwrap_or_default().to_string();
    assert!(
        code == "invalid_argument" || code == "invalid_json",
        "{uri} {body:?}: {j}"
    );
    j["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn unknown_field_on_check_and_consume_is_refused_and_named() {
    let body = r#"{"tenant_id":"t","client_id":"c","action_type":"a","max_requests":5,"window_duration_seconds":60,"costs":5}"#;
    let msg = refused(Method::POST, CHECK, Some(body), None).await;
    assert!(msg.contains("costs"), "{msg}");
}

#[tokio::test]
async fn a_correct_body_is_still_accepted() {
    let svc = service(None);
    let body = r#"{"tenant_id":"t","client_id":"c","action_type":"a","max_requests":5,"window_duration_seconds":60,"cost":2}"#;
    let r = send(&svc.app, Method::POST, CHECK, Some(body), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["remaining_requests"], 3);
}

#[tokio::test]
async fn array_bodies_are_refused_everywhere() {
    // An array with the fields in declaration order used to fill the struct.
    let arr = r#"["t","c","a",5,60,1]"#;
    let msg = refused(Method::POST, CHECK, Some(arr), None).await;
    assert!(
        msg.contains("JSON object") && msg.contains("array"),
        "{msg}"
    );
    let msg = refused(Method::POST, CHECK, Some("[]"), None).await;
    assert!(
        msg.contains("JSON object") && msg.contains("array"),
        "{msg}"
    );
    assert!(!msg.contains("elements"), "{msg}");
    for (method, uri, body) in [
        (Method::PUT, "/api/config/tenant/t/weight", "[3]"),
        (Method::PUT, "/api/config/tenant/t/action/a", "[5, 60]"),
        (Method::PUT, "/api/config/global", "[100]"),
        (Method::PUT, "/api/config/tenant/t/settings", "[2]"),
        (Method::POST, "/api/config/tenant/t/keys", "[\"svc\"]"),
    ] {
        let msg = refused(
            method,
            uri,
            Some(body),
            Some("admin-token-0123456789abcdef"),
        )
        .await;
        assert!(msg.contains("JSON object"), "{uri}: {msg}");
    }
}

#[tokio::test]
async fn scalar_bodies_say_what_they_are() {
    let msg = refused(Method::POST, CHECK, Some("42"), None).await;
    assert!(
        msg.contains("JSON object") && msg.contains("number"),
        "{msg}"
    );
    let msg = refused(Method::POST, CHECK, Some("\"x\""), None).await;
    assert!(msg.contains("string"), "{msg}");
}

fn check_with(field_values: &str) -> String {
    format!(r#"{{"tenant_id":"t","client_id":"c","action_type":"a",{field_values}}}"#)
}

#[tokio::test]
async fn readable_huge_integer() {
    let body = check_with(r#""max_requests":99999999999999999999999,"window_duration_seconds":60"#);
    let msg = refused(Method::POST, CHECK, Some(&body), None).await;
    assert!(msg.contains("max_requests"), "{msg}");
    assert!(msg.contains("1 to 1000000000"), "{msg}");
    assert!(msg.contains("99999999999999999999999"), "{msg}");
    assert!(
        !msg.contains("floating point") && !msg.contains("u64"),
        "{msg}"
    );
}

#[tokio::test]
async fn readable_huge_window_is_shortened() {
    let body = check_with(r#""max_requests":5,"window_duration_seconds":1e300"#);
    let msg = refused(Method::POST, CHECK, Some(&body), None).await;
    assert!(msg.contains("window_duration_seconds"), "{msg}");
    assert!(msg.contains("31536000"), "{msg}");
    assert!(msg.contains("1e300"), "{msg}");
    assert!(msg.len() < 200, "{} bytes: {msg}", msg.len());
    // Same through the configuration API.
    let msg = refused(
        Method::PUT,
        "/api/config/tenant/t/action/a",
        Some(r#"{"max_requests":5,"window_duration_seconds":1e300}"#),
        Some("admin-token-0123456789abcdef"),
    )
    .await;
    assert!(msg.contains("1e300") && msg.len() < 200, "{msg}");
}

#[tokio::test]
async fn readable_wrong_type_names_rule_and_given_value_shortened() {
    let long = "x".repeat(5000);
    let body = check_with(&format!(
        r#""max_requests":"{long}","window_duration_seconds":60"#
    ));
    let msg = refused(Method::POST, CHECK, Some(&body), None).await;
    assert!(
        msg.starts_with("max_requests must be a whole number"),
        "{msg}"
    );
    assert!(msg.contains("5002 characters"), "{msg}");
    assert!(msg.len() < 200, "{} bytes", msg.len());

    let msg = refused(Method::POST, CHECK, Some(r#"{"tenant_id":5}"#), None).await;
    assert!(msg.contains("tenant_id must be a string"), "{msg}");
    assert!(msg.contains("got 5"), "{msg}");
}

#[tokio::test]
async fn readable_missing_field() {
    let msg = refused(Method::POST, CHECK, Some(r#"{"tenant_id":"t"}"#), None).await;
    assert!(msg.contains("client_id is required"), "{msg}");
    assert!(!msg.contains("line 1"), "{msg}");
}

#[tokio::test]
async fn readable_bad_query_string() {
    let msg = refused(
        Method::GET,
        "/api/status/t/c/a?max_requests=abc&window_duration_seconds=60",
        None,
        None,
    )
    .await;
    assert!(!msg.contains("Failed to deserialize"), "{msg}");
    assert!(
        msg.contains("max_requests must be a whole number from 1 to 1000000000"),
        "{msg}"
    );
    assert!(msg.contains("got abc"), "{msg}");

    let msg = refused(
        Method::GET,
        "/api/status/t/c/a?max_requests=5&window_duration_seconds=soon",
        None,
        None,
    )
    .await;
    assert!(msg.contains("window_duration_seconds must be"), "{msg}");
    assert!(msg.contains("got soon"), "{msg}");
}
