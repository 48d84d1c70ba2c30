//! Building the service from flags and serving it until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tollgate_core::clock::{Clock, SkewedClock, SystemClock};
use tollgate_core::config::{
    ConfigBackend, ConfigDocument, ConfigError, ConfigManager, EmbeddedBackend, RedisConfigBackend,
};
use tollgate_core::redis_conn::RedisOptions;
use tollgate_core::stats::{self, Stats};
use tollgate_core::store::{MemoryStore, RedisStore, RedisStoreOptions, Store};
use tollgate_core::{Limiter, StoreErrorPolicy, UnknownTenantPolicy};

use crate::api::router_with;
use crate::cli::{OnStoreError, RunArgs, StoreKind, UnknownTenants};
use crate::hardening::HttpLimits;
use crate::metrics::Metrics;
use crate::state::AppState;

pub use crate::config_file::read_config_file;

/// What `run` needs besides the listener: the built service and its background tasks.
pub struct Service {
    pub state: AppState,
    /// Connection and request limits from the flags.
    pub http: HttpLimits,
    /// After the shutdown signal: how long to keep serving with readiness 503 `draining` before
    /// the listener closes.
    pub drain_delay: Duration,
    /// The Envoy RLS (gRPC) listener, when enabled; served alongside HTTP by [`run`].
    pub rls: Option<TcpListener>,
    /// The limiter the flags describe, for embedding code and tests that need its parts (the load
    /// manager, the store); `None` for a service around a given state. Front ends use
    /// `state.engine()` and nothing else.
    pub limiter: Option<Arc<Limiter>>,
    /// Background work that stops when dropped (the memory store's sweep).
    _background: Vec<Box<dyn std::any::Any + Send>>,
}

impl Service {
    /// A service around an already-built state with default HTTP limits (tests and embedding).
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            http: HttpLimits::default(),
            drain_delay: Duration::ZERO,
            rls: None,
            limiter: None,
            _background: Vec::new(),
        }
    }
}

/// Builds the store, configuration and limiter the flags describe.
pub async fn build(args: &RunArgs) -> anyhow::Result<Service> {
    args.validate().map_err(anyhow::Error::msg)?;
    let http = HttpLimits::from_args(&args.http)?;
    // try_from: a huge value (1e30) would make Duration::from_secs_f64 panic.
    let drain_delay = Duration::try_from_secs_f64(args.drain_delay).map_err(|_| {
        anyhow::anyhow!(
            "--drain-delay must be a non-negative number of seconds, got {}",
            args.drain_delay
        )
    })?;
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
    // Set when Redis could not be reached at start-up: connect in the background instead.
    let mut late_redis = None;
    let (store, backend): (Arc<dyn Store>, Arc<dyn ConfigBackend>) = match args.store {
        StoreKind::Memory => {
            let store = MemoryStore::new(clock, args.max_keys);
            background.push(Box::new(store.spawn_sweeper(Duration::from_secs(1))));
            let backend =
                EmbeddedBackend::new(&args.data_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
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
            // A URL that cannot mean anything is the operator's to fix: retrying it in the
            // background would only hide the mistake.
            for url in args
                .redis_url
                .iter()
                .map(|u| u.trim())
                .filter(|u| !u.is_empty())
            {
                redis::Client::open(url).map_err(|e| {
                    anyhow::anyhow!("--redis-url {url} is not a valid Redis URL: {e}")
                })?;
            }
            let mut redis = RedisOptions::new(args.redis_url.clone());
            redis.command_timeout = Duration::from_millis(args.redis_timeout_ms.max(1));
            redis.force_cluster = args.redis_cluster;
            let store_options = RedisStoreOptions {
                key_prefix: format!("{}:", args.redis_prefix),
                probe_interval: Duration::from_millis(args.redis_probe_interval_ms.max(1)),
                batch_in_flight: args.redis_batch_in_flight,
                ..RedisStoreOptions::default()
            };
            match RedisStore::connect(&redis, store_options.clone()).await {
                Ok(store) => {
                    let backend = Arc::new(RedisConfigBackend::new(
                        store.connection().clone(),
                        &args.redis_prefix,
                        Duration::from_secs(2),
                    ));
                    redis_sync = Some(backend.clone());
                    (Arc::new(store), backend)
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        redis_url = %args
                            .redis_url
                            .iter()
                            .map(|u| crate::startup_log::redact_redis_url(u))
                            .collect::<Vec<_>>()
                            .join(","),
                        on_store_error = ?args.on_store_error,
                        "Redis is not reachable; serving anyway (decisions per --on-store-error, readiness 503) and connecting as soon as it answers"
                    );
                    let connector = crate::late_redis::Connector {
                        redis,
                        store_options: store_options.clone(),
                        prefix: args.redis_prefix.clone(),
                        retry: store_options.probe_interval,
                        store: Arc::default(),
                        backend: Arc::default(),
                    };
                    let pair: (Arc<dyn Store>, Arc<dyn ConfigBackend>) =
                        (connector.store.clone(), connector.backend.clone());
                    late_redis = Some(connector);
                    pair
                }
            }
        }
    };
    let config = if late_redis.is_some() {
        ConfigManager::pending(backend, seed).map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        open_config(backend, seed).await?
    };
    let policy = match args.on_store_error {
        OnStoreError::Allow => StoreErrorPolicy::Allow,
        OnStoreError::Deny => StoreErrorPolicy::Deny,
    };
    let metrics = Arc::new(Metrics::new());
    background.push(Box::new(metrics.spawn_upkeep(Duration::from_secs(5))));
    let unknown_tenants = match args.unknown_tenants {
        UnknownTenants::Allow => UnknownTenantPolicy::Allow,
        UnknownTenants::Deny => UnknownTenantPolicy::Deny,
    };
    let limiter = Arc::new(
        Limiter::new(Arc::new(config), store, policy)
            .with_unknown_tenants(unknown_tenants)
            .with_stats(Arc::new(Stats::default()))
            .with_shadow(args.shadow),
    );
    background.push(Box::new(stats::spawn_sampler(
        limiter.clone(),
        Duration::from_secs(1),
    )));
    if let Some(backend) = redis_sync {
        background.push(Box::new(crate::config_sync::spawn(
            limiter.clone(),
            backend,
            args.redis_url.clone(),
        )));
    }
    if let Some(connector) = late_redis {
        background.push(Box::new(connector.spawn(limiter.clone())));
    }
    let state = AppState::with_decision_auth(
        limiter.clone(),
        args.admin_token.clone(),
        metrics,
        args.decision_auth,
    );
    let watch = match &args.config {
        Some(path) => {
            state.manage_config_by_file(path.clone());
            tracing::info!(
                file = %path.display(),
                "configuration source: the --config file. It replaces the stored configuration now, is re-applied on SIGHUP and when it changes on disk; API configuration writes answer 409 config_managed_by_file"
            );
            Some(crate::config_file::FileWatch::start(&state, path.clone()).await?)
        }
        None => {
            tracing::info!(
                store = args.store.name(),
                "configuration source: the API. Changes are persisted (data dir or Redis) and kept across restarts"
            );
            None
        }
    };
    background.push(Box::new(crate::reload::reload_on_sighup(
        state.clone(),
        watch,
    )?));
    Ok(Service {
        state,
        http,
        drain_delay,
        rls: None,
        limiter: Some(limiter),
        _background: background,
    })
}

/// Opens the stored configuration; `seed` (the `--config` file) is stored when nothing is, and is
/// applied over what is stored afterwards anyway. Instances starting together over one Redis may
/// race to store the initial one; the loser retries and adopts the winner's.
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

/// Serves until `shutdown` resolves, then drains: health and readiness answer `draining` at once
/// while the listener keeps serving for the service's drain delay; then no new connections are
/// accepted and accepted requests get `grace` to finish. Queued requests still waiting when it
/// runs out are answered `shutting_down`, and so are requests still running.
pub async fn run(
    listener: TcpListener,
    mut service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    let state = service.state.clone();
    // RLS health turns NOT_SERVING as the drain begins; its listener stops once HTTP has finished.
    let (rls_stop, rls_stopped) = tokio::sync::oneshot::channel::<()>();
    let rls = service.rls.take().map(|l| {
        tokio::spawn(crate::rls::serve(l, state.clone(), async {
            let _ = rls_stopped.await;
        }))
    });
    let app = router_with(state.clone(), &service.http);
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_state = state.clone();
    let drain_delay = service.drain_delay;
    let signal = async move {
        shutdown.await;
        drain_state.begin_drain();
        tracing::info!(
            drain_delay_secs = drain_delay.as_secs_f64(),
            grace_secs = grace.as_secs_f64(),
            "shutdown begun; readiness is 503 draining, still serving for the drain delay"
        );
        // Load balancers need a probe interval or two to take this instance out; refusing
        // connections before then would fail requests that could have been served.
        tokio::time::sleep(drain_delay).await;
        tracing::info!("closing the listener; accepted requests get the grace period");
        let _ = drain_tx.send(());
    };
    let server = tokio::spawn(crate::listen::serve(listener, app, service.http, signal));
    // Wait for the listener to close, then give accepted work the grace period.
    if drain_rx.await.is_ok() {
        let engine = state.engine();
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        let mut server = server;
        tokio::select! {
            r = &mut server => { r.context("server task failed")??; }
            _ = &mut deadline => {
                tracing::warn!("grace period over; answering queued and running requests shutting_down");
                engine.reject_all_queued();
                state.end_grace();
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
    if let Some(rls) = rls {
        let _ = rls_stop.send(());
        // Open health watches never end by themselves; do not wait on them past a moment.
        match tokio::time::timeout(Duration::from_secs(1), rls).await {
            Ok(r) => r.context("RLS server task failed")??,
            Err(_) => tracing::warn!("RLS connections still open after shutdown; closing"),
        }
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
