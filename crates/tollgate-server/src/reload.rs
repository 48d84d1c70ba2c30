//! Reloading the `--config` file on SIGHUP.
//!
//! The file is applied as one [`Change::ReplaceAll`]: a decision sees either the old
//! configuration or the new one, never a mix. The file is authoritative when reloaded — limits,
//! weights and global settings changed through the API since are replaced by what the file says
//! (and persisted, so every instance and a restart agree). Tenant API keys are the exception: a
//! tenant whose entry in the file lists none keeps its keys (see `Change::ReplaceAll`). A file
//! that cannot be read or parsed, or
//! that fails validation, changes nothing; its problems are logged at warn with their locations.

use std::path::{Path, PathBuf};

use tollgate_core::config::Change;

use crate::server::read_config_file;
use crate::state::AppState;

/// Reads, validates and applies `path`; returns the new configuration version.
pub async fn reload_config_file(state: &AppState, path: &Path) -> anyhow::Result<u64> {
    let owned = path.to_path_buf();
    let parsed = tokio::task::spawn_blocking(move || read_config_file(&owned))
        .await
        .map_err(|e| anyhow::anyhow!("config reader task failed: {e}"))?;
    let result = match parsed {
        Ok(doc) => state
            .limiter()
            .update_config(Change::ReplaceAll(doc))
            .await
            .map(|snap| snap.version)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) => Err(e),
    };
    state.metrics().record_reload(result.is_ok());
    result
}

/// Stops listening for SIGHUP when dropped.
pub struct ReloadGuard(tokio::task::JoinHandle<()>);

impl Drop for ReloadGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reloads `path` on every SIGHUP. Without a file, SIGHUP is logged and ignored rather than
/// killing the process (its default action).
#[cfg(unix)]
pub fn reload_on_sighup(state: AppState, path: Option<PathBuf>) -> anyhow::Result<ReloadGuard> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("cannot listen for SIGHUP: {e}"))?;
    Ok(ReloadGuard(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let Some(path) = &path else {
                tracing::warn!("SIGHUP received but no --config file was given; nothing to reload");
                continue;
            };
            match reload_config_file(&state, path).await {
                Ok(version) => {
                    tracing::info!(file = %path.display(), version, "configuration reloaded")
                }
                Err(e) => tracing::warn!(
                    file = %path.display(),
                    problems = %format!("{e:#}"),
                    "configuration reload rejected; the running configuration is unchanged"
                ),
            }
        }
    })))
}

#[cfg(not(unix))]
pub fn reload_on_sighup(_: AppState, _: Option<PathBuf>) -> anyhow::Result<ReloadGuard> {
    Ok(ReloadGuard(tokio::spawn(async {})))
}
