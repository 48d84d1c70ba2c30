//! Redis mode: keeps this instance's configuration in step with the one stored in Redis.
//!
//! A change made through any instance is published on a channel; this task reloads when it hears
//! one, and also compares the stored version every poll interval so a missed message (a dropped
//! subscription, a Redis restart) delays a change by at most that interval.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tollgate_core::config::{ConfigBackend, RedisConfigBackend};
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
        loop {
            let notified = tokio::select! {
                _ = tick.tick() => false,
                m = rx.recv() => m.is_some(),
            };
            if !notified {
                match backend.stored_version().await {
                    Ok(v) if v > limiter.config().snapshot().version => {}
                    Ok(0) => {
                        // Redis lost the configuration (restarted without persistence, flushed):
                        // put ours back so changes can be made and other instances keep it.
                        let doc = limiter.config().snapshot().to_document();
                        match backend.save(&doc, 0).await {
                            Ok(()) => tracing::warn!(
                                version = doc.version,
                                "configuration was missing from Redis; stored this instance's"
                            ),
                            Err(e) => {
                                tracing::debug!(error = %e, "could not restore the configuration")
                            }
                        }
                        continue;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot poll the configuration version");
                        continue;
                    }
                }
            }
            match limiter.refresh_config().await {
                Ok(true) => tracing::info!(
                    version = limiter.config().snapshot().version,
                    "applied configuration changed by another instance"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot reload the configuration from Redis"),
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
            Err(e) => tracing::debug!(error = %e, url, "configuration subscription failed"),
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
