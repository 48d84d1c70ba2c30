//! Building the service from flags and serving it until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tollgate_core::clock::{Clock, SkewedClock, SystemClock};
use tollgate_core::config::{
    parse_toml, ConfigBackend, ConfigDocument, ConfigError, ConfigManager, FileBackend,
    RedisConfigBackend,
};
use tollgate_core::redis_conn::RedisOptions;
use tollgate_core::store::{MemoryStore, RedisStore, RedisStoreOptions, Store};
use tollgate_core::{Limiter, StoreErrorPolicy, UnknownTenantPolicy};

use crate::api::router_with;
use crate::cli::{OnStoreError, RunArgs, StoreKind, UnknownTenants};
use crate::hardening::HttpLimits;
use crate::metrics::{InstrumentedStore, Metrics};
use crate::state::AppState;

/// Reads and validates a `--config` file.
pub fn read_config_file(path: &std::path::Path) -> anyhow::Result<ConfigDocument> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse_toml(path, &text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// What `run` needs besides the listener: the built service and its background tasks.
pub struct Service {
    pub state: AppState,
    /// Connection and request limits from the flags.
    pub http: HttpLimits,
    /// Background work that stops when dropped (the memory store's sweep).
    _background: Vec<Box<dyn std::any::Any + Send>>,
}

impl Service {
    /// A service around an already-built state with default HTTP limits (tests and embedding).
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            http: HttpLimits::default(),
            _background: Vec::new(),
        }
    }
}

/// Builds the store, configuration and limiter the flags describe.
pub async fn build(args: &RunArgs) -> anyhow::Result<Service> {
    args.validate().map_err(anyhow::Error::msg)?;
    let http = HttpLimits::from_args(&args.http)?;
    let seed = args.config.as_deref().map(read_config_file).transpose()?;
    let mut background: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let clock: Arc<dyn Clock> = if args.clock_offset_ms == 0 {
        Arc::new(SystemClock)
    } else {
        tracing::warn!(
            offset_ms = args.clock_offset_ms,
            "this instance's clock is deliberately offset (--clock-offset-ms)"
        );
        Arc::new(SkewedClock {
            inner: SystemClock,
            offset_micros: args.clock_offset_ms.saturating_mul(1000),
        })
    };
    let mut redis_sync = None;
    let (store, backend): (Arc<dyn Store>, Arc<dyn ConfigBackend>) = match args.store {
        StoreKind::Memory => {
            let store = MemoryStore::new(clock, args.max_keys);
            background.push(Box::new(store.spawn_sweeper(Duration::from_secs(1))));
            let backend = FileBackend::new(&args.data_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
            (Arc::new(store), Arc::new(backend))
        }
        StoreKind::Redis => {
            // The Redis store decides on Redis time; this instance's clock plays no part.
            let _ = clock;
            if args.redis_url.iter().all(|u| u.trim().is_empty()) {
                anyhow::bail!(
                    "--store redis needs --redis-url redis://host:port (repeat or comma-separate for Redis Cluster seed nodes)"
                );
            }
            let mut redis = RedisOptions::new(args.redis_url.clone());
            redis.command_timeout = Duration::from_millis(args.redis_timeout_ms.max(1));
            redis.force_cluster = args.redis_cluster;
            let store = RedisStore::connect(
                &redis,
                RedisStoreOptions {
                    key_prefix: format!("{}:", args.redis_prefix),
                    probe_interval: Duration::from_millis(args.redis_probe_interval_ms.max(1)),
                    ..RedisStoreOptions::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e} (--redis-url {})", args.redis_url.join(",")))?;
            let backend = Arc::new(RedisConfigBackend::new(
                store.connection().clone(),
                &args.redis_prefix,
                Duration::from_secs(2),
            ));
            redis_sync = Some(backend.clone());
            (Arc::new(store), backend)
        }
    };
    let config = open_config(backend, seed).await?;
    let policy = match args.on_store_error {
        OnStoreError::Allow => StoreErrorPolicy::Allow,
        OnStoreError::Deny => StoreErrorPolicy::Deny,
    };
    let metrics = Arc::new(Metrics::new());
    background.push(Box::new(metrics.spawn_upkeep(Duration::from_secs(5))));
    let store: Arc<dyn Store> = Arc::new(InstrumentedStore::new(store, metrics.clone()));
    let unknown_tenants = match args.unknown_tenants {
        UnknownTenants::Allow => UnknownTenantPolicy::Allow,
        UnknownTenants::Deny => UnknownTenantPolicy::Deny,
    };
    let limiter = Arc::new(
        Limiter::new(Arc::new(config), store, policy).with_unknown_tenants(unknown_tenants),
    );
    if let Some(backend) = redis_sync {
        background.push(Box::new(crate::config_sync::spawn(
            limiter.clone(),
            backend,
            args.redis_url.clone(),
        )));
    }
    let state = AppState::with_decision_auth(
        limiter,
        args.admin_token.clone(),
        metrics,
        args.decision_auth,
    );
    background.push(Box::new(crate::reload::reload_on_sighup(
        state.clone(),
        args.config.clone(),
    )?));
    Ok(Service {
        state,
        http,
        _background: background,
    })
}

/// Opens the stored configuration. Instances starting together over one Redis may race to store
/// the initial one; the loser retries and adopts the winner's.
async fn open_config(
    backend: Arc<dyn ConfigBackend>,
    seed: Option<ConfigDocument>,
) -> anyhow::Result<ConfigManager> {
    let mut attempts = 0;
    loop {
        match ConfigManager::open(backend.clone(), seed.clone()).await {
            Ok(c) => return Ok(c),
            Err(ConfigError::Conflict { .. }) if attempts < 3 => attempts += 1,
            Err(e) => return Err(anyhow::anyhow!("{e}")),
        }
    }
}

/// Serves until `shutdown` resolves, then drains: health answers `draining`, no new connections
/// are accepted, accepted requests finish; queued requests still waiting when `grace` runs out
/// are answered `shutting_down`.
pub async fn run(
    listener: TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    let state = service.state.clone();
    let app = router_with(state.clone(), &service.http);
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_state = state.clone();
    let signal = async move {
        shutdown.await;
        drain_state.begin_drain();
        tracing::info!(grace_secs = grace.as_secs_f64(), "shutdown begun; draining");
        let _ = drain_tx.send(());
    };
    let server = tokio::spawn(crate::listen::serve(listener, app, service.http, signal));
    // Wait for the drain to start, then give accepted work the grace period.
    if drain_rx.await.is_ok() {
        let limiter = state.limiter();
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        let mut server = server;
        tokio::select! {
            r = &mut server => { r.context("server task failed")??; }
            _ = &mut deadline => {
                tracing::warn!("grace period over; answering queued requests shutting_down");
                limiter.load().reject_all_queued();
                // Those answers take a moment to write; do not wait on idle connections forever.
                match tokio::time::timeout(Duration::from_secs(1), &mut server).await {
                    Ok(r) => r.context("server task failed")??,
                    Err(_) => tracing::warn!("connections still open after the grace period; closing"),
                }
            }
        }
    } else {
        server.await.context("server task failed")??;
    }
    drop(service);
    tracing::info!("shutdown complete");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
