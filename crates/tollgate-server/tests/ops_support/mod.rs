//! Helpers shared by the operations tests: a service over a memory store that can be switched
//! "down", and a one-call HTTP client over the real router.
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
use tollgate_server::metrics::{InstrumentedStore, Metrics};
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

pub struct TestService {
    pub state: AppState,
    pub store: Arc<SwitchableStore>,
    pub app: axum::Router,
}

pub fn service(token: Option<&str>) -> TestService {
    service_with(token, ConfigDocument::default())
}

pub fn service_with(token: Option<&str>, doc: ConfigDocument) -> TestService {
    let store = Arc::new(SwitchableStore {
        inner: MemoryStore::new(Arc::new(SystemClock), 1_000_000),
        down: AtomicBool::new(false),
    });
    let metrics = Arc::new(Metrics::new());
    let instrumented: Arc<dyn Store> =
        Arc::new(InstrumentedStore::new(store.clone(), metrics.clone()));
    let config = ConfigManager::in_memory(doc).expect("valid config");
    let limiter = Arc::new(Limiter::new(
        Arc::new(config),
        instrumented,
        StoreErrorPolicy::Allow,
    ));
    let state = AppState::with_metrics(limiter, token.map(String::from), metrics);
    let app = tollgate_server::api::router(state.clone());
    TestService { state, store, app }
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
