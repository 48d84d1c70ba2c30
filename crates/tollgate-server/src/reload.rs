//! The task that keeps the `--config` file in force: it re-applies the file on SIGHUP and polls it
//! for changes on disk (see [`crate::config_file`]).

use tokio::time::MissedTickBehavior;

use crate::config_file::{FileWatch, POLL};
use crate::state::AppState;

/// Stops the task when dropped.
pub struct ReloadGuard(tokio::task::JoinHandle<()>);

impl Drop for ReloadGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Re-applies the file on every SIGHUP and on every change on disk. Without a file, SIGHUP is
/// logged and ignored rather than killing the process (its default action).
#[cfg(unix)]
pub fn reload_on_sighup(state: AppState, watch: Option<FileWatch>) -> anyhow::Result<ReloadGuard> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("cannot listen for SIGHUP: {e}"))?;
    Ok(ReloadGuard(tokio::spawn(async move {
        let Some(mut watch) = watch else {
            while hup.recv().await.is_some() {
                tracing::warn!("SIGHUP received but no --config file was given; nothing to reload");
            }
            return;
        };
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                signal = hup.recv() => {
                    if signal.is_none() {
                        return;
                    }
                    watch.on_sighup(&state).await;
                }
                _ = poll.tick() => watch.on_poll(&state).await,
            }
        }
    })))
}

#[cfg(not(unix))]
pub fn reload_on_sighup(state: AppState, watch: Option<FileWatch>) -> anyhow::Result<ReloadGuard> {
    Ok(ReloadGuard(tokio::spawn(async move {
        let Some(mut watch) = watch else { return };
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            poll.tick().await;
            watch.on_poll(&state).await;
        }
    })))
}
