//! Helpers shared by the server's integration tests: stores that misbehave on purpose (switched
//! "down", or slow), a service over them, a one-call HTTP client over the real router, and the
//! real binary started on a free port.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use tollgate_core::clock::SystemClock;
use tollgate_core::config::{ConfigDocument, ConfigManager};
use tollgate_core::limit::{Limit, RateKey};
use tollgate_core::store::{MemoryStore, Store, StoreError};
use tollgate_core::window::Verdict;
use tollgate_core::{Limiter, StoreErrorPolicy};
use tollgate_server::state::AppState;
use tower::ServiceExt;

/// A real memory store that answers `Unavailable` while `down` is set, to drive fail-open.
pub struct SwitchableStore {
    pub inner: MemoryStore,
    pub down: AtomicBool,
}

#[async_trait]
impl Store for SwitchableStore {
    async fn check_and_consume(
        &self,
        key: RateKey<'_>,
        limit: Limit,
        cost: u64,
    ) -> Result<Verdict, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("switched off by the test".into()));
        }
        self.inner.check_and_consume(key, limit, cost).await
    }
    async fn status(&self, key: RateKey<'_>, limit: Limit) -> Result<Verdict, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("switched off by the test".into()));
        }
        self.inner.status(key, limit).await
    }
    async fn apply(
        &self,
        op: tollgate_core::policy::Op,
        items: &[tollgate_core::policy::PolicyItem<'_>],
    ) -> Result<tollgate_core::policy::PolicyVerdict, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("switched off by the test".into()));
        }
        self.inner.apply(op, items).await
    }
    fn is_healthy(&self) -> bool {
        !self.down.load(Ordering::SeqCst)
    }
    fn tracked_keys(&self) -> Option<u64> {
        self.inner.tracked_keys()
    }
    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// A real memory store that takes `delay` per decision, so requests pile up in the load manager.
pub struct SlowStore {
    pub inner: MemoryStore,
    pub delay: std::time::Duration,
}

#[async_trait]
impl Store for SlowStore {
    async fn check_and_consume(
        &self,
        key: RateKey<'_>,
        limit: Limit,
        cost: u64,
    ) -> Result<Verdict, StoreError> {
        tokio::time::sleep(self.delay).await;
        self.inner.check_and_consume_sync(key, limit, cost)
    }
    async fn status(&self, key: RateKey<'_>, limit: Limit) -> Result<Verdict, StoreError> {
        Ok(self.inner.status_sync(key, limit))
    }
    fn kind(&self) -> &'static str {
        "slow"
    }
}

pub struct TestService {
    pub state: AppState,
    /// The limiter behind `state`, for tests that hold admission slots.
    pub limiter: Arc<Limiter>,
    pub store: Arc<SwitchableStore>,
    pub app: axum::Router,
}

pub fn service(token: Option<&str>) -> TestService {
    service_with(token, ConfigDocument::default())
}

pub fn service_with(token: Option<&str>, doc: ConfigDocument) -> TestService {
    service_over(token, ConfigManager::in_memory(doc).expect("valid config"))
}

/// A service over a given configuration manager (e.g. one persisting to a data dir).
pub fn service_over(token: Option<&str>, config: ConfigManager) -> TestService {
    let store = Arc::new(SwitchableStore {
        inner: MemoryStore::new(Arc::new(SystemClock), 1_000_000),
        down: AtomicBool::new(false),
    });
    let limiter = Arc::new(
        Limiter::new(Arc::new(config), store.clone(), StoreErrorPolicy::Allow)
            .with_stats(Arc::new(tollgate_core::stats::Stats::default())),
    );
    let state = AppState::new(limiter.clone(), token.map(String::from));
    let app = tollgate_server::api::router(state.clone());
    TestService {
        state,
        limiter,
        store,
        app,
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request through the router. `headers` are added as given.
pub async fn send(
    app: &axum::Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .expect("valid request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body")
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// Parses Prometheus text into `name{sorted labels}` -> value, labels as `k="v"` joined by `,`.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value.parse().expect("numeric value");
        let key = match series.split_once('{') {
            None => series.to_string(),
            Some((name, rest)) => {
                let labels = rest.strip_suffix('}').expect("closing brace");
                let mut parts: Vec<&str> = split_labels(labels);
                parts.sort();
                format!("{name}{{{}}}", parts.join(","))
            }
        };
        out.insert(key, value);
    }
    out
}

fn split_labels(s: &str) -> Vec<&str> {
    // Label values here never contain `",`, so splitting on it is exact.
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("\",") {
        parts.push(&rest[..=i]);
        rest = &rest[i + 2..];
    }
    if !rest.is_empty() {
        parts.push(rest);
    }
    parts
}

pub fn check_body(tenant: &str, max: u64) -> String {
    format!(
        r#"{{"tenant_id":"{tenant}","client_id":"c","action_type":"a","max_requests":{max},"window_duration_seconds":60}}"#
    )
}

/// A `tollgate` process started by a test, on a free loopback port with its own data dir; killed
/// when dropped.
pub struct Binary {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
    pub stderr_path: std::path::PathBuf,
}

/// The binary with no TOLLGATE_* variable inherited from the environment.
pub fn tollgate_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    for (k, _) in std::env::vars() {
        if k.starts_with("TOLLGATE_") {
            cmd.env_remove(k);
        }
    }
    // Tests run binaries side by side: the default RLS port would collide; RLS tests pass
    // --rls-listen themselves.
    cmd.env("TOLLGATE_RLS_LISTEN", "off");
    cmd
}

impl Binary {
    /// Starts the binary with `args` (plus --listen and --data-dir) and waits until it is healthy.
    pub async fn start(args: &[&str]) -> Binary {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, args).await
    }

    pub async fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Binary {
        Self::start_in_env(dir, args, &[]).await
    }

    /// Like [`Binary::start`], with environment variables set for the process.
    pub async fn start_env(args: &[&str], envs: &[(&str, &str)]) -> Binary {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in_env(dir, args, envs).await
    }

    pub async fn start_in_env(
        dir: tempfile::TempDir,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Binary {
        Self::start_probed(dir, args, envs, "/api/health").await
    }

    /// Starts the binary and waits until it is alive (`/livez`), healthy or not.
    pub async fn start_alive(args: &[&str]) -> Binary {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_probed(dir, args, &[], "/livez").await
    }

    /// Starts the binary and waits until `probe` answers 2xx.
    pub async fn start_probed(
        dir: tempfile::TempDir,
        args: &[&str],
        envs: &[(&str, &str)],
        probe: &str,
    ) -> Binary {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let child = tollgate_command()
            .args(["--listen", &addr.to_string()])
            .args(["--data-dir", &dir.path().join("data").display().to_string()])
            .args(args)
            .env("TOLLGATE_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn tollgate");
        let mut me = Binary {
            child,
            addr,
            dir,
            stderr_path,
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("tollgate exited early ({status}): {}", me.stderr());
            }
            if let Ok(r) = client.get(me.url(probe)).send().await {
                if r.status().is_success() {
                    return me;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("tollgate did not answer {probe}: {}", me.stderr());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    pub async fn stop(self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit().await
    }

    /// Waits (bounded) for the process to exit, after a signal sent earlier.
    pub async fn wait_exit(mut self) -> std::process::ExitStatus {
        for _ in 0..400 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("tollgate did not exit after SIGTERM: {}", self.stderr());
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One value of a scraped metrics series, or None.
pub async fn scrape_value(bin: &Binary, series: &str) -> Option<f64> {
    let text = reqwest::get(bin.url("/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    parse_metrics(&text).get(series).copied()
}
