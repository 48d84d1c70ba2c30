//! Persistence of the configuration to a JSON file (memory mode), and parsing of `--config` TOML.
//!
//! Writes go to a temporary file of their own that is fsynced and then renamed over the real one,
//! so a crash mid-write leaves either the old or the new configuration, never half of one. Writes
//! never overlap: the configuration manager holds its writer lock until a write is over, even when
//! the caller that asked for it has gone away.

use std::io::Write;
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::sync::Arc;

use async_trait::async_trait;

use super::{ConfigBackend, ConfigDocument, ConfigError};

/// Keeps the configuration in `<data_dir>/config.json`.
pub struct FileBackend {
    path: PathBuf,
    /// Runs in the blocking write once the temporary file exists, before anything is written to
    /// it (`false`), and when the write is over (`true`); lets tests hold a write at its most
    /// fragile point and know when it is done.
    #[cfg(test)]
    write_hook: Option<Arc<dyn Fn(bool) + Send + Sync>>,
}

impl std::fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBackend")
            .field("path", &self.path)
            .finish()
    }
}

impl FileBackend {
    /// Uses `data_dir`, creating it if needed.
    pub fn new(data_dir: &Path) -> Result<Self, ConfigError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            ConfigError::Persist(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        Self::remove_stale_temp_files(data_dir);
        Ok(Self {
            path: data_dir.join("config.json"),
            #[cfg(test)]
            write_hook: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` to a temporary file of its own (a unique name, so no two writes can ever
    /// share one, even if one outlived its caller), fsyncs it, and renames it over `path`.
    fn write_atomically(
        path: &Path,
        bytes: &[u8],
        before_write: impl FnOnce(),
    ) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(TEMP_SUFFIX)
            .tempfile_in(dir)?;
        before_write();
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        // On failure the temporary file is removed when `tmp` drops.
        tmp.persist(path).map_err(|e| e.error)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Removes temporary files a crash left behind mid-write (one process owns a data dir).
    fn remove_stale_temp_files(data_dir: &Path) {
        let Ok(entries) = std::fs::read_dir(data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Reads a whole-document JSON file (`config.json`); `None` when there is none.
pub(super) fn read_document(path: &Path) -> Result<Option<ConfigDocument>, ConfigError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ConfigError::Corrupt(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        ConfigError::Corrupt(format!(
            "{} is not a valid tollgate configuration: {e} (fix or remove the file)",
            path.display()
        ))
    })
}

/// Temporary files are `config.json.<random>.tmp` next to `config.json`.
const TEMP_PREFIX: &str = "config.json.";
const TEMP_SUFFIX: &str = ".tmp";

#[async_trait]
impl ConfigBackend for FileBackend {
    async fn load(&self) -> Result<Option<ConfigDocument>, ConfigError> {
        read_document(&self.path)
    }

    async fn save(&self, doc: &ConfigDocument, _expected_version: u64) -> Result<(), ConfigError> {
        // One process owns a data dir, so there is no concurrent writer to compare versions with.
        let bytes =
            serde_json::to_vec_pretty(doc).map_err(|e| ConfigError::Persist(e.to_string()))?;
        let path = self.path.clone();
        #[cfg(test)]
        let hook = self.write_hook.clone();
        #[cfg(test)]
        let hook_at = move |done: bool| {
            if let Some(h) = &hook {
                h(done);
            }
        };
        #[cfg(not(test))]
        let hook_at = |_: bool| {};
        tokio::task::spawn_blocking(move || {
            let r = Self::write_atomically(&path, &bytes, || hook_at(false));
            hook_at(true);
            r
        })
        .await
        .map_err(|e| ConfigError::Persist(e.to_string()))?
        .map_err(|e| ConfigError::Persist(format!("{}: {e}", self.path.display())))
    }
}

/// Parses a TOML configuration file's text; errors name the file, line and problem.
pub fn parse_toml(path: &Path, text: &str) -> Result<ConfigDocument, ConfigError> {
    let doc: ConfigDocument = toml::from_str(text)
        .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
    super::Snapshot::from_document(&doc).map_err(|problems| {
        let list = problems
            .iter()
            .map(|p| format!("{}: {p}", path.display()))
            .collect::<Vec<_>>()
            .join("\n");
        ConfigError::Invalid(list)
    })?;
    Ok(doc)
}

/// The configuration as a `--config` TOML file.
pub fn to_toml(doc: &ConfigDocument) -> Result<String, ConfigError> {
    toml::to_string(doc).map_err(|e| ConfigError::Persist(format!("cannot write TOML: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Change, ConfigManager};
    use crate::limit::Limit;

    #[tokio::test]
    async fn persists_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let cm = ConfigManager::open(Arc::new(FileBackend::new(dir.path()).unwrap()), None)
            .await
            .unwrap();
        cm.apply(Change::SetAction {
            tenant: "t".into(),
            action: "a".into(),
            limit: Limit::new(7, 1.5).unwrap(),
        })
        .await
        .unwrap();
        let again = ConfigManager::open(Arc::new(FileBackend::new(dir.path()).unwrap()), None)
            .await
            .unwrap();
        assert_eq!(&**again.snapshot(), &**cm.snapshot());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["config.json"], "no temporary file is left behind");
    }

    #[tokio::test]
    async fn temporary_files_left_by_a_crash_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json.a1B2c3.tmp"), b"{half").unwrap();
        std::fs::write(dir.path().join("notes.tmp"), b"not ours").unwrap();
        FileBackend::new(dir.path()).unwrap();
        assert!(!dir.path().join("config.json.a1B2c3.tmp").exists());
        assert!(dir.path().join("notes.tmp").exists());
    }

    /// Issue 18 item 5: a change whose caller goes away (request timeout, client disconnect)
    /// while its write is under way must not let that write land after, or into, a later
    /// acknowledged change's file.
    #[tokio::test]
    async fn a_change_dropped_mid_save_cannot_overwrite_a_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let entered_tx = std::sync::Mutex::new(Some(entered_tx));
        let release_rx = std::sync::Mutex::new(release_rx);
        let hook_armed = armed.clone();
        let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hook_finished = finished.clone();
        let mut backend = FileBackend::new(dir.path()).unwrap();
        // The first write after arming stops once its temporary file exists, until released.
        backend.write_hook = Some(Arc::new(move |done| {
            if done {
                hook_finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            } else if hook_armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                if let Some(tx) = entered_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                let _ = release_rx.lock().unwrap().recv();
            }
        }));
        let cm = Arc::new(ConfigManager::open(Arc::new(backend), None).await.unwrap());
        let limit = |n| Limit::new(n, 1.0).unwrap();
        finished.store(0, std::sync::atomic::Ordering::SeqCst);
        armed.store(true, std::sync::atomic::Ordering::SeqCst);

        // The first change's caller gives up while its write is held.
        let first = cm.apply(Change::SetAction {
            tenant: "t".into(),
            action: "first".into(),
            limit: limit(1),
        });
        tokio::select! {
            r = first => panic!("the first save was held, yet it finished: {r:?}"),
            _ = entered_rx => {}
        }
        // A second change is made and acknowledged (with a longer document than the first).
        let cm2 = cm.clone();
        let second = tokio::spawn(async move {
            cm2.apply(Change::SetClient {
                tenant: "t".into(),
                client: "a-client-with-a-long-name".into(),
                action: "second".into(),
                limit: limit(2),
            })
            .await
        });
        // Give the second change every chance to run its save now, as it could before the fix.
        for _ in 0..20 {
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        release_tx.send(()).unwrap();
        let acknowledged = second.await.unwrap().unwrap();
        assert!(acknowledged
            .resolve("t", "a-client-with-a-long-name", "second", None)
            .is_some());

        // Both writes, the abandoned one included, are over before the disk is read.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while finished.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the writes never finished"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // What is on disk is what is in force, and it holds the acknowledged change.
        let on_disk = FileBackend::new(dir.path()).unwrap().load().await;
        let on_disk = on_disk
            .unwrap_or_else(|e| panic!("the stored file is unreadable: {e}"))
            .unwrap();
        assert_eq!(on_disk, cm.snapshot().to_document());
        let stored = crate::config::Snapshot::from_document(&on_disk).unwrap();
        assert!(stored
            .resolve("t", "a-client-with-a-long-name", "second", None)
            .is_some());
        assert!(stored.version >= acknowledged.version);
    }

    #[tokio::test]
    async fn corrupt_file_is_reported_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), b"{not json").unwrap();
        let r = ConfigManager::open(Arc::new(FileBackend::new(dir.path()).unwrap()), None).await;
        let Err(ConfigError::Corrupt(msg)) = r else {
            panic!("expected corrupt error")
        };
        assert!(msg.contains("config.json"), "{msg}");
    }

    #[test]
    fn toml_problems_have_locations() {
        let text = r#"
[global]
max_global_concurrent_requests = 0
max_tenant_queue_size = 10

[tenants.acme.actions.login]
max_requests = 5
window_duration_seconds = -1
"#;
        let Err(ConfigError::Invalid(msg)) = parse_toml(Path::new("x.toml"), text) else {
            panic!("expected invalid")
        };
        assert!(
            msg.contains("x.toml: global.max_global_concurrent_requests"),
            "{msg}"
        );
        assert!(msg.contains("tenants.acme.actions.login"), "{msg}");
        let ok = "[tenants.acme]\nweight = 2\n[tenants.acme.clients.vip.login]\nmax_requests = 9\nwindow_duration_seconds = 0.5\n";
        let doc = parse_toml(Path::new("y.toml"), ok).unwrap();
        assert_eq!(doc.tenants["acme"].weight, 2);
    }
}
