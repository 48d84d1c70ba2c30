//! Redis mode: keeps this instance's configuration in step with the one stored in Redis.
//!
//! A change made through any instance is published on a channel; this task catches up when it
//! hears one, and also compares the stored version every poll interval so a missed message (a
//! dropped subscription, a Redis restart) delays a change by at most that interval. Catching up
//! reads only the records the change stream names since the version held (a gap reloads
//! everything in chunks; see `tollgate_core::config::RedisConfigBackend`). When Redis lost the
//! configuration, the same reconciliation stores this instance's again (see
//! `ConfigManager::refresh`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tollgate_core::config::RedisConfigBackend;
use tollgate_core::Limiter;

/// How often the stored version is compared even without a notification.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Stops the sync tasks when dropped.
pub struct ConfigSyncGuard(Vec<tokio::task::JoinHandle<()>>);

impl Drop for ConfigSyncGuard {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Starts the subscriber and the poller. `urls` are tried in turn for the subscription; in a
/// cluster any node will do, since a publish reaches every node.
pub fn spawn(
    limiter: Arc<Limiter>,
    backend: Arc<RedisConfigBackend>,
    urls: Vec<String>,
) -> ConfigSyncGuard {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let channel = backend.channel().to_string();
    // Held by the poller so `recv` never reports a closed channel (which would spin the loop).
    let keep_open = tx.clone();
    let subscriber = tokio::spawn(subscribe_forever(urls, channel, tx));
    let poller = tokio::spawn(async move {
        let _keep_open = keep_open;
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A problem that persists (Redis down, a corrupt key) is logged at warn once, not every
        // poll interval.
        let mut last_problem: Option<String> = None;
        let mut report = |problem: Option<String>| {
            if let Some(p) = &problem {
                if last_problem.as_ref() != Some(p) {
                    tracing::warn!(error = %p, "cannot keep the configuration in step with Redis");
                } else {
                    tracing::debug!(error = %p, "cannot keep the configuration in step with Redis");
                }
            } else if last_problem.is_some() {
                tracing::info!("configuration in step with Redis again");
            }
            last_problem = problem;
        };
        loop {
            let notified = tokio::select! {
                _ = tick.tick() => false,
                m = rx.recv() => m.is_some(),
            };
            if !notified {
                // A newer version is another instance's change; a missing or older one means
                // Redis lost data (restart without persistence, flush, failover). The manager
                // reconciles all three; equal needs nothing.
                match backend.stored_version().await {
                    Ok(v) if v == limiter.config().snapshot().version => {
                        report(None);
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        report(Some(e.to_string()));
                        continue;
                    }
                }
            }
            match limiter.refresh_config().await {
                Ok(changed) => {
                    if changed {
                        tracing::info!(
                            version = limiter.config().snapshot().version,
                            "applied the configuration stored in Redis"
                        );
                    }
                    report(None);
                }
                Err(e) => report(Some(e.to_string())),
            }
        }
    });
    ConfigSyncGuard(vec![subscriber, poller])
}

async fn subscribe_forever(urls: Vec<String>, channel: String, tx: tokio::sync::mpsc::Sender<()>) {
    // The same list the store connected with: `--redis-url "redis://a, redis://b"` is accepted
    // there, so a padded or empty entry must not cost the subscription a failed attempt (or, with
    // no URL left, index an empty list).
    let urls: Vec<&str> = urls
        .iter()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        return;
    }
    for url in urls.iter().cycle() {
        match subscribe_once(url, &channel, &tx).await {
            Ok(()) => tracing::debug!("configuration subscription ended; resubscribing"),
            Err(e) => tracing::debug!(
                error = %e,
                url = %crate::startup_log::redact_redis_url(url),
                "configuration subscription failed"
            ),
        }
        // The poller covers the gap; no need to hammer a Redis that is down.
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn subscribe_once(
    url: &str,
    channel: &str,
    tx: &tokio::sync::mpsc::Sender<()>,
) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut pubsub = tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub())
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting for the configuration subscription timed out",
            ))
        })??;
    pubsub.subscribe(channel).await?;
    // Something may have changed while we were not subscribed.
    let _ = tx.try_send(());
    let mut messages = pubsub.on_message();
    while messages.next().await.is_some() {
        // A full channel already holds a pending reload, which will read the newest version.
        let _ = tx.try_send(());
    }
    Ok(())
}
