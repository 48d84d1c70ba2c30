//! The OpenAPI document matches the router: every documented operation is routed, answers with a
//! documented status and a body of the documented shape, and every routed path is documented.

mod support;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use serde_json::Value;
use support::{send, service};

const TOKEN: &str = "openapi-test-token";

/// The routes DESIGN.md section 2 promises, plus the operator endpoints this service adds.
const EXPECTED: &[(&str, &str)] = &[
    ("post", "/api/check_and_consume"),
    ("get", "/api/status/{tenant}/{client}/{action}"),
    ("post", "/api/report"),
    ("post", "/api/refund"),
    ("get", "/api/health"),
    ("get", "/livez"),
    ("get", "/readyz"),
    ("get", "/api/config"),
    ("get", "/api/config/export"),
    ("post", "/api/config/batch"),
    ("put", "/api/config/global"),
    ("get", "/api/config/tenant/{tenant}"),
    ("delete", "/api/config/tenant/{tenant}"),
    ("put", "/api/config/tenant/{tenant}/weight"),
    ("delete", "/api/config/tenant/{tenant}/weight"),
    ("put", "/api/config/tenant/{tenant}/settings"),
    ("put", "/api/config/tenant/{tenant}/action/{action}"),
    ("delete", "/api/config/tenant/{tenant}/action/{action}"),
    (
        "put",
        "/api/config/tenant/{tenant}/client/{client}/action/{action}",
    ),
    (
        "delete",
        "/api/config/tenant/{tenant}/client/{client}/action/{action}",
    ),
    ("post", "/api/config/tenant/{tenant}/keys"),
    ("get", "/api/config/tenant/{tenant}/keys"),
    ("delete", "/api/config/tenant/{tenant}/keys/{key_id}"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/api/stats"),
    ("get", "/dashboard"),
    ("get", "/dashboard/app.js"),
    ("get", "/dashboard/app.css"),
];

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                out.insert((method.clone(), path.clone()));
            }
        }
    }
    out
}

/// A valid request for an operation: concrete URI and body.
fn sample(method: &str, path: &str) -> (String, Option<&'static str>) {
    let limit = Some(r#"{"max_requests":5,"window_duration_seconds":60}"#);
    let uri = path
        .replace("{tenant}", "acme")
        .replace("{client}", "u1")
        .replace("{action}", "login");
    let body = match (method, path) {
        ("post", "/api/check_and_consume") => Some(
            r#"{"tenant_id":"acme","client_id":"u1","action_type":"login","max_requests":5,"window_duration_seconds":60,"cost":1}"#,
        ),
        ("post", "/api/report" | "/api/refund") => Some(
            r#"{"tenant_id":"acme","client_id":"u1","action_type":"login","max_requests":5,"window_duration_seconds":60,"cost":1}"#,
        ),
        ("put", "/api/config/global") => Some(
            r#"{"max_global_concurrent_requests":10,"max_tenant_queue_size":5,"queue_timeout_ms":500}"#,
        ),
        ("put", "/api/config/tenant/{tenant}/weight") => Some(r#"{"weight":2}"#),
        ("post", "/api/config/batch") => Some(
            r#"{"changes":[{"op":"set_action","tenant_id":"acme","action_type":"batch","max_requests":5,"window_duration_seconds":60},{"op":"set_weight","tenant_id":"acme","weight":2}]}"#,
        ),
        ("put", "/api/config/tenant/{tenant}/settings") => Some(
            r#"{"weight":2,"max_keys":100,"new_keys_per_second":null,"max_request_window_seconds":3600}"#,
        ),
        ("put", _) => limit,
        _ => None,
    };
    let uri = if path.starts_with("/api/status/") {
        format!("{uri}?max_requests=5&window_duration_seconds=60")
    } else {
        uri
    };
    (uri, body)
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// Checks a JSON body against an object schema: no undocumented field, every required one present.
fn check_shape(doc: &Value, schema: &Value, body: &Value, what: &str) {
    let schema = resolve(doc, schema);
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return; // free-form (e.g. the OpenAPI document itself)
    };
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("{what}: body is not an object: {body}"));
    for key in obj.keys() {
        assert!(
            props.contains_key(key),
            "{what}: field '{key}' is not in the schema"
        );
    }
    for req in schema["required"].as_array().into_iter().flatten() {
        let req = req.as_str().unwrap();
        assert!(
            obj.contains_key(req),
            "{what}: required field '{req}' missing: {body}"
        );
    }
    for (key, value) in obj {
        let sub = resolve(doc, &props[key]);
        if sub.get("properties").is_some() && value.is_object() {
            check_shape(doc, sub, value, &format!("{what}.{key}"));
        }
    }
}

fn check_response(doc: &Value, method: &str, path: &str, status: StatusCode, body: &[u8]) {
    let op = &doc["paths"][path][method];
    let resp = &op["responses"][status.as_str()];
    assert!(
        resp.is_object(),
        "{method} {path} answered {status}, which its documentation does not list"
    );
    if let Some(schema) = resp["content"]["application/json"].get("schema") {
        let body: Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{method} {path}: documented JSON, got {e}"));
        check_shape(doc, schema, &body, &format!("{method} {path} {status}"));
    }
}

#[tokio::test]
async fn document_is_served_and_matches_the_generator() {
    let svc = service(None);
    let r = send(&svc.app, Method::GET, "/api/openapi.json", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/json");
    let served = r.json();
    let generated = serde_json::to_value(tollgate_server::api::openapi()).unwrap();
    assert_eq!(served, generated);
    assert!(served["openapi"].as_str().unwrap().starts_with("3."));
}

#[tokio::test]
async fn every_route_documented_and_every_documented_operation_routed() {
    let doc = serde_json::to_value(tollgate_server::api::openapi()).unwrap();
    let documented = operations(&doc);
    let expected: BTreeSet<(String, String)> = EXPECTED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, expected,
        "documented operations differ from the routes"
    );

    let svc = service(Some(TOKEN));
    let auth = format!("Bearer {TOKEN}");
    // PUTs and POSTs before DELETEs so every delete finds its target; the whole tenant last.
    let mut ordered: Vec<_> = documented.iter().collect();
    ordered.sort_by_key(|(m, p)| match (m.as_str(), p.as_str()) {
        ("delete", "/api/config/tenant/{tenant}") => 2,
        ("delete", _) => 1,
        _ => 0,
    });
    let mut key_id = String::new();
    for (method, path) in ordered {
        let (uri, body) = sample(method, path);
        let uri = uri.replace("{key_id}", &key_id);
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = send(&svc.app, m, &uri, body, &[("authorization", &auth)]).await;
        assert!(
            r.status.is_success(),
            "{method} {uri}: {} {}",
            r.status,
            r.text()
        );
        check_response(&doc, method, path, r.status, &r.body);
        if method == "post" && path.ends_with("/keys") {
            key_id = r.json()["key_id"].as_str().unwrap().to_string();
        }
    }

    // Errors carry the documented error shape.
    let cases: [(Method, &str, Option<&str>, &str, &str); 4] = [
        (
            Method::POST,
            "/api/check_and_consume",
            Some("{oops"),
            "post",
            "/api/check_and_consume",
        ),
        (
            Method::GET,
            "/api/status/acme/u1/login",
            None,
            "get",
            "/api/status/{tenant}/{client}/{action}",
        ),
        (
            Method::PUT,
            "/api/config/global",
            Some(r#"{"max_global_concurrent_requests":0,"max_tenant_queue_size":1}"#),
            "put",
            "/api/config/global",
        ),
        (
            Method::DELETE,
            "/api/config/tenant/nobody/action/none",
            None,
            "delete",
            "/api/config/tenant/{tenant}/action/{action}",
        ),
    ];
    for (m, uri, body, method, path) in cases {
        let r = send(&svc.app, m, uri, body, &[("authorization", &auth)]).await;
        assert!(r.status.is_client_error(), "{uri}: {}", r.status);
        check_response(&doc, method, path, r.status, &r.body);
    }
    let r = send(&svc.app, Method::GET, "/api/config", None, &[]).await;
    check_response(&doc, "get", "/api/config", r.status, &r.body);

    // Config operations and statistics declare the admin bearer scheme; decisions the optional tenant key (or
    // the admin token); the rest none.
    for (method, path) in &documented {
        let sec = &doc["paths"][path][method]["security"];
        if path.starts_with("/api/config") || path == "/api/stats" {
            assert_eq!(
                sec[0]["admin_token"],
                serde_json::json!([]),
                "{method} {path}"
            );
        } else if path.starts_with("/api/check_and_consume")
            || path.starts_with("/api/status")
            || path == "/api/report"
            || path == "/api/refund"
        {
            assert_eq!(
                sec,
                &serde_json::json!([{}, {"tenant_key": []}, {"admin_token": []}]),
                "{method} {path}"
            );
        } else {
            assert!(sec.is_null(), "{method} {path} should be open");
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["tenant_key"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn undocumented_paths_and_methods_are_not_routed() {
    let svc = service(None);
    for path in [
        "/",
        "/api",
        "/api/checks",
        "/api/config/tenants",
        "/api/status/a/b",
        "/metrics/x",
    ] {
        let r = send(&svc.app, Method::GET, path, None, &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.json()["error"], "not_found");
    }
    let doc = serde_json::to_value(tollgate_server::api::openapi()).unwrap();
    let documented = operations(&doc);
    for (_, path) in &documented {
        for method in ["get", "put", "post", "delete", "patch"] {
            if documented.contains(&(method.to_string(), path.clone())) {
                continue;
            }
            let (uri, body) = sample("get", path);
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = send(&svc.app, m, &uri, body, &[]).await;
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(r.json()["error"], "method_not_allowed");
        }
    }
}
