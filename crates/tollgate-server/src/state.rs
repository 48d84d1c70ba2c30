//! State shared by all handlers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tollgate_core::Limiter;

pub use crate::cli::DecisionAuth;
use crate::metrics::Metrics;

/// Cheap-to-clone handle given to every handler.
#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Shared>,
}

pub struct Shared {
    pub limiter: Arc<Limiter>,
    /// Set when shutdown begins; health turns 503 `draining` from then on.
    pub draining: AtomicBool,
    /// When set, `/api/config*` requires `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// What `GET /metrics` reports.
    pub metrics: Arc<Metrics>,
    /// Who may call the decision API.
    pub decision_auth: DecisionAuth,
    /// Set with `--config`: the file is the source of truth and API config writes answer 409.
    config_file: OnceLock<PathBuf>,
    /// Turns true when the shutdown grace period is over; requests still running then are
    /// answered 503 `shutting_down` (see [`crate::shutdown`]).
    pub grace_over: tokio::sync::watch::Sender<bool>,
    /// Turns true with `draining`, for listeners that must react (the RLS health service).
    pub drain_signal: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    pub fn new(limiter: Arc<Limiter>, admin_token: Option<String>) -> Self {
        Self::with_metrics(limiter, admin_token, Arc::new(Metrics::new()))
    }

    /// Like [`AppState::new`], sharing `metrics` (e.g. with an [`crate::metrics::InstrumentedStore`]).
    pub fn with_metrics(
        limiter: Arc<Limiter>,
        admin_token: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::with_decision_auth(limiter, admin_token, metrics, DecisionAuth::None)
    }

    /// Like [`AppState::with_metrics`], with the decision API's authentication mode.
    pub fn with_decision_auth(
        limiter: Arc<Limiter>,
        admin_token: Option<String>,
        metrics: Arc<Metrics>,
        decision_auth: DecisionAuth,
    ) -> Self {
        Self {
            inner: Arc::new(Shared {
                limiter,
                draining: AtomicBool::new(false),
                admin_token,
                metrics,
                decision_auth,
                config_file: OnceLock::new(),
                grace_over: tokio::sync::watch::Sender::new(false),
                drain_signal: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn limiter(&self) -> &Limiter {
        &self.inner.limiter
    }

    /// Makes `path` the source of truth for the configuration (see `crate::config_file`); set
    /// once, at start-up, before serving.
    pub fn manage_config_by_file(&self, path: PathBuf) {
        let _ = self.inner.config_file.set(path);
    }

    /// The `--config` file when it is the source of truth; `None` when the API is.
    pub fn config_file(&self) -> Option<&Path> {
        self.inner.config_file.get().map(PathBuf::as_path)
    }

    pub fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.inner.drain_signal.send_replace(true);
    }

    /// Resolves once shutdown has begun.
    pub fn drain_begun(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.drain_signal.subscribe();
        async move {
            let _ = rx.wait_for(|d| *d).await;
        }
    }

    /// The engine API over this state's limiter, for front ends.
    pub fn engine(&self) -> tollgate_core::engine::Engine {
        tollgate_core::engine::Engine::new(self.inner.limiter.clone())
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Ends the grace period: requests still running are answered `shutting_down`.
    pub fn end_grace(&self) {
        self.inner.grace_over.send_replace(true);
    }
}
