//! State shared by all handlers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use subtle::ConstantTimeEq;
use tollgate_core::{Engine, Limiter};

pub use crate::cli::DecisionAuth;
use crate::metrics::Metrics;

/// Cheap-to-clone handle given to every handler.
#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Shared>,
}

pub struct Shared {
    /// The one API into the core; reports decisions and store calls to `metrics`.
    engine: Engine,
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

    /// Like [`AppState::new`], recording into `metrics` (shared with the caller).
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
        let engine = Engine::new(limiter).with_observer(metrics.clone());
        Self {
            inner: Arc::new(Shared {
                engine,
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

    /// The engine: every call into the core goes through it.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
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

    /// Whether `given` is the configured admin token (false when none is configured). The one
    /// comparison every admin check uses: constant-time, so response timing does not reveal how
    /// much of a guess was right.
    pub fn is_admin(&self, given: &[u8]) -> bool {
        self.inner
            .admin_token
            .as_ref()
            .is_some_and(|t| bool::from(given.ct_eq(t.as_bytes())))
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Ends the grace period: requests still running are answered `shutting_down`.
    pub fn end_grace(&self) {
        self.inner.grace_over.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tollgate_core::config::{ConfigDocument, ConfigManager};
    use tollgate_core::store::MemoryStore;
    use tollgate_core::{Limiter, StoreErrorPolicy};

    use super::AppState;

    fn state(token: Option<&str>) -> AppState {
        let config = ConfigManager::in_memory(ConfigDocument::default()).unwrap();
        let store = Arc::new(MemoryStore::new(
            Arc::new(tollgate_core::clock::SystemClock),
            10,
        ));
        let limiter = Limiter::new(Arc::new(config), store, StoreErrorPolicy::Allow);
        AppState::new(Arc::new(limiter), token.map(String::from))
    }

    #[test]
    fn admin_token_matches_only_itself() {
        let s = state(Some("s3cret"));
        assert!(s.is_admin(b"s3cret"));
        for wrong in [&b""[..], b"s3cre", b"s3cret ", b"S3CRET", b"s3cres"] {
            assert!(!s.is_admin(wrong), "{wrong:?}");
        }
        // With no admin token configured nothing is the admin token, not even an empty one.
        let open = state(None);
        assert!(!open.is_admin(b""));
        assert!(!open.is_admin(b"s3cret"));
    }
}
