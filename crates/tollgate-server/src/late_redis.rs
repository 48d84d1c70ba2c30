//! Redis unreachable at start-up. Rather than exit (a crash loop under a supervisor, while the
//! same outage at runtime is served per `--on-store-error`), the service starts with stand-ins:
//! a store that answers "unavailable" (so decisions follow the policy and health says
//! `degraded`), and a configuration backend that cannot be read (so the configuration is
//! pending and `/readyz` says `config_not_loaded`). A background task connects as soon as Redis
//! answers, puts the real store and backend behind the stand-ins, loads the stored
//! configuration, and starts the configuration sync.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use tollgate_core::config::{
    Commit, ConfigBackend, ConfigDocument, ConfigError, RedisConfigBackend, Snapshot,
};
use tollgate_core::limit::{Limit, RateKey};
use tollgate_core::policy::{Op, PolicyItem, PolicyVerdict};
use tollgate_core::redis_conn::RedisOptions;
use tollgate_core::store::{KeyBounds, RedisStore, RedisStoreOptions, Store, StoreError};
use tollgate_core::window::Verdict;
use tollgate_core::Limiter;

const NOT_YET: &str = "Redis has not been reachable since start-up";

/// The Redis store once connected; until then every call is [`StoreError::Unavailable`].
#[derive(Default)]
pub struct LateRedisStore {
    inner: OnceLock<RedisStore>,
}

impl LateRedisStore {
    fn get(&self) -> Result<&RedisStore, StoreError> {
        self.inner
            .get()
            .ok_or_else(|| StoreError::Unavailable(NOT_YET.into()))
    }
}

#[async_trait]
impl Store for LateRedisStore {
    async fn check_and_consume(
        &self,
        key: RateKey<'_>,
        limit: Limit,
        cost: u64,
    ) -> Result<Verdict, StoreError> {
        self.get()?.check_and_consume(key, limit, cost).await
    }

    async fn check_and_consume_bounded(
        &self,
        key: RateKey<'_>,
        limit: Limit,
        cost: u64,
        bounds: KeyBounds,
    ) -> Result<Verdict, StoreError> {
        self.get()?
            .check_and_consume_bounded(key, limit, cost, bounds)
            .await
    }

    async fn status(&self, key: RateKey<'_>, limit: Limit) -> Result<Verdict, StoreError> {
        self.get()?.status(key, limit).await
    }

    async fn apply(&self, op: Op, items: &[PolicyItem<'_>]) -> Result<PolicyVerdict, StoreError> {
        self.get()?.apply(op, items).await
    }

    fn is_healthy(&self) -> bool {
        self.inner.get().is_some_and(|s| s.is_healthy())
    }

    fn tracked_keys(&self) -> Option<u64> {
        self.inner.get().and_then(|s| s.tracked_keys())
    }

    fn for_each_tenant_keys(&self, f: &mut dyn FnMut(&str, u64)) {
        if let Some(s) = self.inner.get() {
            s.for_each_tenant_keys(f)
        }
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// The Redis configuration backend once connected; until then it cannot be read or written.
#[derive(Default)]
pub struct LateConfigBackend {
    inner: OnceLock<Arc<RedisConfigBackend>>,
}

impl LateConfigBackend {
    fn get(&self) -> Result<&RedisConfigBackend, ConfigError> {
        self.inner
            .get()
            .map(|b| &**b)
            .ok_or_else(|| ConfigError::Persist(NOT_YET.into()))
    }
}

#[async_trait]
impl ConfigBackend for LateConfigBackend {
    async fn load(&self) -> Result<Option<ConfigDocument>, ConfigError> {
        self.get()?.load().await
    }
    async fn save(&self, doc: &ConfigDocument, expected_version: u64) -> Result<(), ConfigError> {
        self.get()?.save(doc, expected_version).await
    }
    // Forwarded so a change stores only the records it touched, as with a direct backend.
    async fn commit(&self, commit: &Commit<'_>, expected_version: u64) -> Result<(), ConfigError> {
        self.get()?.commit(commit, expected_version).await
    }
    async fn commit_records(
        &self,
        commit: &Commit<'_>,
        expected_version: u64,
    ) -> Result<u64, ConfigError> {
        self.get()?.commit_records(commit, expected_version).await
    }
    // Forwarded so catching up reads only what changed.
    async fn load_onto(&self, base: &Snapshot) -> Result<Option<Snapshot>, ConfigError> {
        self.get()?.load_onto(base).await
    }
}

/// What the connecting task needs.
pub struct Connector {
    pub redis: RedisOptions,
    pub store_options: RedisStoreOptions,
    pub prefix: String,
    /// Pause between attempts.
    pub retry: Duration,
    pub store: Arc<LateRedisStore>,
    pub backend: Arc<LateConfigBackend>,
}

/// Stops the connecting task (and the configuration sync it started) when dropped.
pub struct ConnectorGuard(tokio::task::JoinHandle<()>);

impl Drop for ConnectorGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Connector {
    /// Connects in the background, then loads the stored configuration into `limiter` and keeps
    /// it in step with Redis.
    pub fn spawn(self, limiter: Arc<Limiter>) -> ConnectorGuard {
        ConnectorGuard(tokio::spawn(self.run(limiter)))
    }

    async fn run(self, limiter: Arc<Limiter>) {
        let store = loop {
            match RedisStore::connect(&self.redis, self.store_options.clone()).await {
                Ok(store) => break store,
                Err(e) => tracing::debug!(error = %e, "Redis still unreachable"),
            }
            tokio::time::sleep(self.retry).await;
        };
        let backend = Arc::new(RedisConfigBackend::new(
            store.connection().clone(),
            &self.prefix,
            Duration::from_secs(2),
        ));
        // The backend first: a decision that sees the store connected may change the
        // configuration next, and must find where it is stored.
        let _ = self.backend.inner.set(backend.clone());
        let _ = self.store.inner.set(store);
        tracing::info!("connected to Redis; loading the stored configuration");
        // Until this succeeds the configuration is a placeholder; the sync below would not notice
        // an empty store (its version, 0, equals the placeholder's).
        let mut logged = false;
        loop {
            match limiter.refresh_config().await {
                Ok(_) => break,
                Err(e) if !logged => {
                    tracing::warn!(error = %e, "cannot load the configuration from Redis yet; retrying");
                    logged = true;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot load the configuration from Redis yet")
                }
            }
            tokio::time::sleep(self.retry).await;
        }
        tracing::info!(
            version = limiter.config().snapshot().version,
            "configuration loaded from Redis; serving normally"
        );
        let _sync = crate::config_sync::spawn(limiter, backend, self.redis.urls.clone());
        std::future::pending::<()>().await;
    }
}
