//! The server accepts what its OpenAPI document admits and the document states the rules the
//! server applies (issue 12 item 12). Each case here is a finding `scripts/openapi-fuzz`
//! (schemathesis) reported, pinned as a plain HTTP test through the real router.

mod support;

use axum::http::{Method, StatusCode};
use serde_json::Value;
use support::{send, service};

const TOKEN: &str = "agreement-test-token";

async fn call(
    app: &axum::Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let auth = format!("Bearer {TOKEN}");
    let r = send(app, method, uri, body, &[("authorization", auth.as_str())]).await;
    let json = if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    };
    (r.status, json)
}

/// JSON Schema's `integer` includes integral floats such as 224.0 and 1e3.
#[tokio::test]
async fn integral_floats_are_accepted_for_integer_fields() {
    let svc = service(Some(TOKEN));
    let app = &svc.app;
    let (s, b) = call(
        app,
        Method::PUT,
        "/api/config/tenant/t/weight",
        Some(r#"{"weight":749.0}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["weight"], 749);
    let (s, b) = call(
        app,
        Method::PUT,
        "/api/config/tenant/t/settings",
        Some(r#"{"weight":224.0,"max_keys":1e3}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["weight"], 224);
    assert_eq!(b["state_bounds"]["max_keys"], 1000);
    let (s, b) = call(
        app,
        Method::PUT,
        "/api/config/global",
        Some(r#"{"queue_timeout_ms":65535.0}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["global"]["queue_timeout_ms"], 65535);
    let (s, b) = call(app, Method::PUT, "/api/config/tenant/t/action/a", Some(r#"{"limits":[{"max_requests":3.0,"window_duration_seconds":60,"algorithm":"gcra","burst":2.0}]}"#)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = call(app, Method::POST, "/api/config/batch", Some(r#"{"changes":[{"op":"set_weight","tenant_id":"u","weight":2.0},{"op":"set_action","tenant_id":"u","action_type":"a","max_requests":5.0,"window_duration_seconds":60}]}"#)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = call(app, Method::POST, "/api/check_and_consume", Some(r#"{"tenant_id":"x","client_id":"c","action_type":"a","max_requests":5.0,"window_duration_seconds":60,"cost":2.0}"#)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["remaining_requests"], 3);
    let (s, b) = call(app, Method::POST, "/api/report", Some(r#"{"tenant_id":"x","client_id":"c","action_type":"a","max_requests":5,"window_duration_seconds":60,"cost":1.0}"#)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["remaining_requests"], 2);
}

/// Fractions and out-of-range integral floats are still refused, naming the field.
#[tokio::test]
async fn fractional_integers_are_still_refused() {
    let svc = service(Some(TOKEN));
    let app = &svc.app;
    for (uri, body) in [
        ("/api/config/tenant/t/weight", r#"{"weight":2.5}"#),
        ("/api/config/tenant/t/weight", r#"{"weight":1e10}"#),
        ("/api/config/global", r#"{"queue_timeout_ms":-1.0}"#),
    ] {
        let (s, b) = call(app, Method::PUT, uri, Some(body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        assert_eq!(b["error"], "invalid_argument", "{body}: {b}");
    }
    let (s, b) = call(app, Method::POST, "/api/check_and_consume", Some(r#"{"tenant_id":"x","client_id":"c","action_type":"a","max_requests":5.5,"window_duration_seconds":60}"#)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("max_requests"),
        "{b}"
    );
}

/// Every window the document admits (0.001 to one year) is accepted, rounded to the nearest
/// millisecond; the answer shows the window in force. Shorter windows are outside the document's
/// `minimum` and refused, never lengthened.
#[tokio::test]
async fn windows_between_milliseconds_are_rounded_and_shorter_ones_refused() {
    let svc = service(Some(TOKEN));
    let app = &svc.app;
    for (window, in_force) in [
        ("14380609.958988953", 14_380_609.959),
        ("0.001", 0.001),
        ("0.0014", 0.001),
        ("1.0016", 1.002),
    ] {
        let body = format!(
            r#"{{"tenant_id":"t","client_id":"{window}","action_type":"a","max_requests":1,"window_duration_seconds":{window}}}"#
        );
        let (s, b) = call(app, Method::POST, "/api/check_and_consume", Some(&body)).await;
        assert_eq!(s, StatusCode::OK, "{window}: {b}");
        assert_eq!(
            b["limit"]["window_duration_seconds"], in_force,
            "{window}: {b}"
        );
    }
    for window in ["5e-324", "0.0004", "0.000999"] {
        let body = format!(
            r#"{{"tenant_id":"t","client_id":"c","action_type":"a","max_requests":1,"window_duration_seconds":{window}}}"#
        );
        let (s, b) = call(app, Method::POST, "/api/check_and_consume", Some(&body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{window}: {b}");
        assert_eq!(b["error"], "invalid_argument", "{window}: {b}");
    }
    let uri = "/api/status/t/c/a?max_requests=2&window_duration_seconds=0.0001";
    let (s, b) = call(app, Method::GET, uri, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let uri = "/api/status/t/c/a?max_requests=2&window_duration_seconds=0.0016";
    let (s, b) = call(app, Method::GET, uri, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

/// The key-creation body is optional and the document writes it nullable: `null` issues an
/// unnamed key like an empty body.
#[tokio::test]
async fn null_key_creation_body_issues_an_unnamed_key() {
    let svc = service(Some(TOKEN));
    let (s, b) = call(
        &svc.app,
        Method::POST,
        "/api/config/tenant/t/keys",
        Some("null"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["name"], "");
}

/// In a list of limits, `null` means omitted as it does everywhere else; an explicit window of 0
/// is refused even where the window may be omitted (with `calendar`).
#[tokio::test]
async fn null_is_omitted_and_zero_window_is_refused_in_limits() {
    let svc = service(Some(TOKEN));
    let app = &svc.app;
    let body = r#"{"limits":[{"max_requests":1,"window_duration_seconds":1,"shadow":null,"burst":null,"name":null}]}"#;
    let (s, b) = call(
        app,
        Method::PUT,
        "/api/config/tenant/t/action/a",
        Some(body),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let body = r#"{"limits":[{"max_requests":1,"window_duration_seconds":null,"algorithm":"fixed_window","calendar":"day"}]}"#;
    let (s, b) = call(
        app,
        Method::PUT,
        "/api/config/tenant/t/action/b",
        Some(body),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for body in [
        r#"{"max_requests":1,"window_duration_seconds":0,"algorithm":"fixed_window","calendar":"day"}"#,
        r#"{"limits":[{"max_requests":1,"window_duration_seconds":0,"algorithm":"fixed_window","calendar":"day"}]}"#,
    ] {
        let (s, b) = call(
            app,
            Method::PUT,
            "/api/config/tenant/t/action/c",
            Some(body),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        assert!(
            b["message"]
                .as_str()
                .unwrap_or("")
                .contains("window_duration_seconds"),
            "{b}"
        );
    }
}

async fn document() -> Value {
    let svc = service(Some(TOKEN));
    let (s, doc) = call(&svc.app, Method::GET, "/api/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    doc
}

fn any_of_requires(schema: &Value, field: &str) -> bool {
    schema["anyOf"].as_array().into_iter().flatten().any(|alt| {
        alt["required"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r == field)
    })
}

/// The cross-field rules the server applies are in the document: the limit pair goes together,
/// a limit body is one limit or a list, `burst`/`calendar` follow `algorithm`, a batch change
/// holds only its op's fields, and no unreliable floating-point `multipleOf` is left.
#[tokio::test]
async fn document_states_the_cross_field_rules() {
    let doc = document().await;
    let schemas = &doc["components"]["schemas"];
    for name in ["CheckBody", "AdjustBody"] {
        assert!(
            any_of_requires(&schemas[name], "window_duration_seconds"),
            "{name}: {}",
            schemas[name]
        );
        assert!(
            schemas[name]["properties"]["tenant_id"]["pattern"].is_string(),
            "{name}"
        );
    }
    assert!(
        any_of_requires(&schemas["LimitBody"], "limits"),
        "{}",
        schemas["LimitBody"]
    );
    assert!(
        any_of_requires(&schemas["LimitSpec"], "algorithm"),
        "{}",
        schemas["LimitSpec"]
    );
    assert_eq!(schemas["LimitSpec"]["additionalProperties"], false);
    for change in schemas["BatchChange"]["oneOf"].as_array().expect("oneOf") {
        assert_eq!(change["additionalProperties"], false, "{change}");
    }
    let text = doc.to_string();
    assert!(
        !text.contains("multipleOf"),
        "multipleOf left in the document"
    );

    let status = &doc["paths"]["/api/status/{tenant}/{client}/{action}"]["get"]["parameters"];
    let limit = status
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap_or_else(|| panic!("no object parameter `limit`: {status}"));
    assert_eq!(limit["in"], "query");
    assert_eq!(limit["style"], "form");
    assert_eq!(limit["explode"], true);
    assert!(any_of_requires(&limit["schema"], "max_requests"), "{limit}");

    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if op.get("requestBody").is_some() {
                assert!(
                    op["responses"]["408"].is_object(),
                    "{method} {path} does not document 408"
                );
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                let is_id = p["in"] == "path" && p["name"] != "key_id";
                if is_id || p["name"] == "after" {
                    assert!(p["schema"]["pattern"].is_string(), "{method} {path}: {p}");
                }
            }
        }
    }
}
