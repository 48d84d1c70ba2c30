//! Fuzz-style property tests: many random and mutated requests to every route through the real
//! router. No 5xx other than the documented 503s, no panic, every error a JSON error body, and
//! afterwards the service is healthy and its configuration is what it was (or, for authorized
//! configuration calls, changed only by the calls that succeeded).

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::service;
use tower::ServiceExt;

const TOKEN: &str = "fuzz-admin-token";

/// 503 codes the API documents; any other 5xx is a bug.
const DOCUMENTED_503: &[&str] = &[
    "tenant_queue_full",
    "queue_timeout",
    "shutting_down",
    "store_unavailable",
    "key_budget_exhausted",
    "request_timeout",
];

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/check_and_consume"),
    ("GET", "/api/status/{t}/{c}/{a}"),
    ("GET", "/api/health"),
    ("GET", "/metrics"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/config"),
    ("PUT", "/api/config/global"),
    ("GET", "/api/config/tenant/{t}"),
    ("PUT", "/api/config/tenant/{t}/weight"),
    ("PUT", "/api/config/tenant/{t}/action/{a}"),
    ("DELETE", "/api/config/tenant/{t}/action/{a}"),
    ("PUT", "/api/config/tenant/{t}/client/{c}/action/{a}"),
    ("DELETE", "/api/config/tenant/{t}/client/{c}/action/{a}"),
];

const CONFIG_ROUTES: std::ops::Range<usize> = 5..ROUTES.len();

/// A valid body for a route, as (field, JSON value text) pairs, so mutations can work per field.
fn fields(path: &str) -> Vec<(&'static str, &'static str)> {
    match path {
        "/api/check_and_consume" => vec![
            ("tenant_id", "\"acme\""),
            ("client_id", "\"u1\""),
            ("action_type", "\"login\""),
            ("max_requests", "5"),
            ("window_duration_seconds", "60"),
            ("cost", "1"),
        ],
        "/api/config/global" => vec![
            ("max_global_concurrent_requests", "100"),
            ("max_tenant_queue_size", "10"),
            ("queue_timeout_ms", "1000"),
        ],
        p if p.ends_with("/weight") => vec![("weight", "2")],
        p if p.contains("/action/") => {
            vec![("max_requests", "5"), ("window_duration_seconds", "60")]
        }
        _ => vec![],
    }
}

const ODD_VALUES: &[&str] = &[
    "null",
    "true",
    "false",
    "-1",
    "0",
    "1",
    "0.0001",
    "0.25",
    "1.5",
    "1e309",
    "-1e309",
    "1e-400",
    "NaN",
    "Infinity",
    "18446744073709551615",
    "18446744073709551616",
    "1000000001",
    "31536000",
    "31536000.001",
    "4294967296",
    "\"\"",
    "\"5\"",
    "\"\\u0000\"",
    "\"a\\nb\"",
    "[]",
    "{}",
    "[1]",
    "{\"a\":1}",
    "\"\u{1F600}\"",
    "01",
    "-0",
    "2.5e3",
];

const ODD_IDS: &[&str] = &[
    "acme",
    "a",
    "a:b",
    "b%3Ac",
    "",
    "%00",
    "%0A",
    "%7F",
    "%FF%FE",
    "a%2Fb",
    "%20",
    "..",
    ".",
    "%E2%80%8B",
    "%F0%9F%98%80",
    "*",
    "a%25b",
    "%C3%A9t%C3%A9",
];

#[derive(Debug, Clone)]
enum BodyMutation {
    Valid,
    ReplaceValue(usize, usize),
    DropField(usize),
    UnknownField,
    DuplicateField(usize, usize),
    Truncate(usize),
    RandomBytes(Vec<u8>),
    Nested(usize),
    Oversized,
    Empty,
    NotAnObject(usize),
}

fn body_mutation() -> impl Strategy<Value = BodyMutation> {
    prop_oneof![
        2 => Just(BodyMutation::Valid),
        6 => (any::<usize>(), 0..ODD_VALUES.len()).prop_map(|(f, v)| BodyMutation::ReplaceValue(f, v)),
        2 => any::<usize>().prop_map(BodyMutation::DropField),
        1 => Just(BodyMutation::UnknownField),
        1 => (any::<usize>(), 0..ODD_VALUES.len()).prop_map(|(f, v)| BodyMutation::DuplicateField(f, v)),
        2 => any::<usize>().prop_map(BodyMutation::Truncate),
        2 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(BodyMutation::RandomBytes),
        1 => (1usize..300).prop_map(BodyMutation::Nested),
        1 => Just(BodyMutation::Oversized),
        1 => Just(BodyMutation::Empty),
        1 => (0..ODD_VALUES.len()).prop_map(BodyMutation::NotAnObject),
    ]
}

fn render_body(path: &str, m: &BodyMutation) -> Vec<u8> {
    let mut f: Vec<(String, String)> = fields(path)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let obj = |f: &[(String, String)]| {
        let inner: Vec<String> = f.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", inner.join(","))
    };
    match m {
        BodyMutation::Valid => obj(&f).into_bytes(),
        BodyMutation::ReplaceValue(i, v) => {
            if !f.is_empty() {
                let n = f.len();
                f[i % n].1 = ODD_VALUES[*v].to_string();
            }
            obj(&f).into_bytes()
        }
        BodyMutation::DropField(i) => {
            if !f.is_empty() {
                let n = f.len();
                f.remove(i % n);
            }
            obj(&f).into_bytes()
        }
        BodyMutation::UnknownField => {
            f.push(("surprise".into(), "1".into()));
            obj(&f).into_bytes()
        }
        BodyMutation::DuplicateField(i, v) => {
            if !f.is_empty() {
                let n = f.len();
                let k = f[i % n].0.clone();
                f.push((k, ODD_VALUES[*v].to_string()));
            }
            obj(&f).into_bytes()
        }
        BodyMutation::Truncate(at) => {
            let s = obj(&f).into_bytes();
            s[..at % (s.len() + 1)].to_vec()
        }
        BodyMutation::RandomBytes(b) => b.clone(),
        BodyMutation::Nested(depth) => {
            format!("{}{}", "[".repeat(*depth), "]".repeat(*depth)).into_bytes()
        }
        BodyMutation::Oversized => {
            f.push(("pad".into(), format!("\"{}\"", "x".repeat(70 * 1024))));
            obj(&f).into_bytes()
        }
        BodyMutation::Empty => Vec::new(),
        BodyMutation::NotAnObject(v) => ODD_VALUES[*v].as_bytes().to_vec(),
    }
}

#[derive(Debug, Clone)]
struct FuzzRequest {
    route: usize,
    method_override: Option<&'static str>,
    ids: [usize; 3],
    long_id: Option<usize>,
    query: Option<(usize, usize)>,
    body: BodyMutation,
    content_type: Option<&'static str>,
    auth: Option<String>,
    request_id: Option<String>,
}

fn fuzz_request(
    routes: std::ops::Range<usize>,
    auth: BoxedStrategy<Option<String>>,
) -> impl Strategy<Value = FuzzRequest> {
    (
        routes,
        prop_oneof![
            9 => Just(None),
            1 => prop::sample::select(vec!["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"]).prop_map(Some),
        ],
        [0..ODD_IDS.len(), 0..ODD_IDS.len(), 0..ODD_IDS.len()],
        prop_oneof![9 => Just(None), 1 => (250usize..300).prop_map(Some)],
        prop_oneof![1 => Just(None), 3 => (0..ODD_VALUES.len(), 0..ODD_VALUES.len()).prop_map(Some)],
        body_mutation(),
        prop_oneof![
            6 => Just(Some("application/json")),
            1 => Just(None),
            1 => Just(Some("text/plain")),
            1 => Just(Some("application/json; charset=latin1")),
        ],
        auth,
        prop_oneof![3 => Just(None), 1 => "[ -~]{0,140}".prop_map(Some)],
    )
        .prop_map(|(route, method_override, ids, long_id, query, body, content_type, auth, request_id)| FuzzRequest {
            route,
            method_override,
            ids,
            long_id,
            query,
            body,
            content_type,
            auth,
            request_id,
        })
}

fn build(req: &FuzzRequest) -> Request<Body> {
    let (method, template) = ROUTES[req.route];
    let method = req.method_override.unwrap_or(method);
    let id = |i: usize| -> String {
        match req.long_id {
            Some(n) if i == 0 => "x".repeat(n),
            _ => ODD_IDS[req.ids[i]].to_string(),
        }
    };
    let mut uri = template
        .replace("{t}", &id(0))
        .replace("{c}", &id(1))
        .replace("{a}", &id(2));
    if let Some((m, w)) = req.query {
        let enc = |s: &str| {
            s.replace('%', "%25")
                .replace(' ', "%20")
                .replace('"', "%22")
                .replace('#', "%23")
                .replace('&', "%26")
                .replace('\\', "%5C")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace('[', "%5B")
                .replace(']', "%5D")
                .replace('\n', "%0A")
                .replace('\u{1F600}', "%F0%9F%98%80")
        };
        uri = format!(
            "{uri}?max_requests={}&window_duration_seconds={}",
            enc(ODD_VALUES[m]),
            enc(ODD_VALUES[w])
        );
    }
    let mut b = Request::builder().method(method).uri(&uri);
    if let Some(ct) = req.content_type {
        b = b.header("content-type", ct);
    }
    if let Some(a) = &req.auth {
        b = b.header("authorization", a);
    }
    if let Some(id) = &req.request_id {
        b = b.header("x-request-id", id);
    }
    b.body(Body::from(render_body(template, &req.body)))
        .unwrap_or_else(|e| panic!("test built an invalid request {uri}: {e}"))
}

/// Sends one request and checks the response; returns its status.
async fn exercise(app: &axum::Router, req: &FuzzRequest) -> Result<StatusCode, TestCaseError> {
    let http = build(req);
    let head = http.method() == Method::HEAD;
    let resp = app.clone().oneshot(http).await.expect("infallible");
    let status = resp.status();
    assert!(resp.headers().contains_key("x-request-id"));
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    if status == StatusCode::TOO_MANY_REQUESTS {
        // A denial is a decision, not an error.
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("decision JSON");
        prop_assert_eq!(&v["allowed"], &serde_json::json!(false));
    } else if (status.is_client_error() || status.is_server_error()) && !head {
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            TestCaseError::fail(format!(
                "{status} without a JSON body ({e}): {:?} for {req:?}",
                String::from_utf8_lossy(&bytes)
            ))
        })?;
        let code = v["error"].as_str().unwrap_or("");
        prop_assert!(
            !code.is_empty() && v["message"].is_string(),
            "bad error body {v} for {req:?}"
        );
        if status.is_server_error() {
            prop_assert!(
                status == StatusCode::SERVICE_UNAVAILABLE && DOCUMENTED_503.contains(&code),
                "undocumented {status} {code} for {req:?}"
            );
        }
    }
    Ok(status)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // Shrinking would replay against a service already changed by later cases.
        max_shrink_iters: 0,
        ..Config::default()
    })
}

#[test]
fn ten_thousand_unauthorized_requests_change_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let svc = service(Some(TOKEN));
    let config_before = svc.state.engine().config().to_document();
    let auth = prop_oneof![
        2 => Just(None),
        1 => Just(Some("Bearer wrong".to_string())),
        1 => Just(Some(format!("Basic {TOKEN}"))),
        1 => Just(Some(format!("Bearer {TOKEN}x"))),
        1 => "[ -~]{0,40}".prop_map(Some),
    ]
    .boxed();
    let counts = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    runner(10_000)
        .run(&fuzz_request(0..ROUTES.len(), auth), |req| {
            let status = rt.block_on(exercise(&svc.app, &req))?;
            *counts.borrow_mut().entry(status.as_u16()).or_default() += 1;
            if CONFIG_ROUTES.contains(&req.route) && req.method_override.is_none() {
                // Config calls stop at authentication; only a path with an empty id segment may
                // fail to match a route first.
                let path = build(&req).uri().path().to_string();
                let empty_segment = path.contains("//") || path.ends_with('/');
                prop_assert!(
                    status == StatusCode::UNAUTHORIZED
                        || (empty_segment && status == StatusCode::NOT_FOUND),
                    "{} for {:?}",
                    status,
                    req
                );
            }
            Ok(())
        })
        .unwrap();
    let counts = counts.into_inner();
    let total: u32 = counts.values().sum();
    eprintln!("status mix over {total} requests: {counts:?}");
    assert!(total >= 10_000, "{counts:?}");
    // The mix reached real handlers, not only the auth layer and the parsers.
    for s in [200, 400, 401] {
        assert!(
            counts.get(&s).copied().unwrap_or(0) > 100,
            "too few {s}: {counts:?}"
        );
    }
    rt.block_on(async {
        let r = support::send(&svc.app, Method::GET, "/api/health", None, &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["status"], "healthy");
        let r = support::send(
            &svc.app,
            Method::POST,
            "/api/check_and_consume",
            Some(&support::check_body("after-fuzz", 1)),
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    });
    assert_eq!(svc.state.engine().config().to_document(), config_before);
    assert_eq!(svc.state.engine().load().in_flight, 0);
    assert_eq!(svc.state.engine().load().queued, 0);
}

#[test]
fn authorized_config_fuzz_changes_config_only_on_success() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let svc = service(Some(TOKEN));
    let auth = Just(Some(format!("Bearer {TOKEN}"))).boxed();
    let successes = std::cell::Cell::new(0u32);
    let failures = std::cell::Cell::new(0u32);
    runner(3_000)
        .run(&fuzz_request(CONFIG_ROUTES, auth), |req| {
            let before = svc.state.engine().config_arc();
            let status = rt.block_on(exercise(&svc.app, &req))?;
            let after = svc.state.engine().config_arc();
            let method = req.method_override.unwrap_or(ROUTES[req.route].0);
            if status.is_success() && method != "GET" && method != "HEAD" {
                successes.set(successes.get() + 1);
                prop_assert_eq!(after.version, before.version + 1, "{:?}", req);
            } else {
                if !status.is_success() {
                    failures.set(failures.get() + 1);
                }
                prop_assert_eq!(
                    &*after,
                    &*before,
                    "{} changed the config: {:?}",
                    status,
                    req
                );
            }
            Ok(())
        })
        .unwrap();
    let (successes, failures) = (successes.get(), failures.get());
    assert!(
        successes > 50 && failures > 500,
        "successes {successes}, failures {failures}"
    );
    // Whatever was applied is still a valid configuration, and the service still decides.
    let doc = svc.state.engine().config().to_document();
    tollgate_core::config::Snapshot::from_document(&doc).expect("valid config");
    rt.block_on(async {
        let r = support::send(&svc.app, Method::GET, "/api/health", None, &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        let r = support::send(
            &svc.app,
            Method::POST,
            "/api/check_and_consume",
            Some(&support::check_body("after-fuzz", 1)),
            &[],
        )
        .await;
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::TOO_MANY_REQUESTS,
            "{}",
            r.text()
        );
    });
}
