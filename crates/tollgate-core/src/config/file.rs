//! Persistence of the configuration to a JSON file (memory mode), and parsing of `--config` TOML.
//!
//! Writes go to a temporary file that is fsynced and then renamed over the real one, so a crash
//! mid-write leaves either the old or the new configuration, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{ConfigBackend, ConfigDocument, ConfigError};

/// Keeps the configuration in `<data_dir>/config.json`.
#[derive(Debug)]
pub struct FileBackend {
    path: PathBuf,
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
        Ok(Self {
            path: data_dir.join("config.json"),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_atomically(&self, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &self.path)) {
            // A full disk leaves a truncated temporary: remove it, so it neither holds the space
            // the next write needs nor looks like a configuration to whoever inspects the dir.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // Make the rename itself durable.
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ConfigBackend for FileBackend {
    async fn load(&self) -> Result<Option<ConfigDocument>, ConfigError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ConfigError::Corrupt(format!(
                    "cannot read {}: {e}",
                    self.path.display()
                )))
            }
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            ConfigError::Corrupt(format!(
                "{} is not a valid tollgate configuration: {e} (fix or remove the file)",
                self.path.display()
            ))
        })
    }

    async fn save(&self, doc: &ConfigDocument, _expected_version: u64) -> Result<(), ConfigError> {
        // One process owns a data dir, so there is no concurrent writer to compare versions with.
        let bytes =
            serde_json::to_vec_pretty(doc).map_err(|e| ConfigError::Persist(e.to_string()))?;
        let this = FileBackend {
            path: self.path.clone(),
        };
        tokio::task::spawn_blocking(move || this.write_atomically(&bytes))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Change, ConfigManager};
    use crate::limit::Limit;
    use std::sync::Arc;

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
        assert!(!dir.path().join("config.json.tmp").exists());
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
