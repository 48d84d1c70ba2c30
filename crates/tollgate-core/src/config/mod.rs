//! The ConfigurationManager: the limit hierarchy (client > tenant action > request), tenant
//! weights and global load settings; validated, versioned, persisted through a backend, and read
//! lock-free by every decision.

mod document;
mod file;
mod redis;
mod snapshot;

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;

pub use document::{
    ConfigDocument, ConfigProblem, GlobalSettings, LimitSpec, TenantDocument,
    DEFAULT_QUEUE_TIMEOUT_MS,
};
pub use file::{parse_toml, FileBackend};
pub use redis::RedisConfigBackend;
pub use snapshot::{Snapshot, TenantLimits};

use crate::credentials::ApiKeyRecord;
use crate::limit::{validate_id, Limit};

/// Why a configuration change or load failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// Another writer changed the stored configuration first; reload and retry.
    #[error("configuration changed concurrently (stored version {stored})")]
    Conflict { stored: u64 },
    #[error("could not persist configuration: {0}")]
    Persist(String),
    #[error("{0}")]
    Corrupt(String),
}

/// Where configuration is kept between runs (a file in memory mode, Redis in redis mode).
#[async_trait]
pub trait ConfigBackend: Send + Sync + 'static {
    /// The stored configuration, `None` when nothing has been stored yet.
    async fn load(&self) -> Result<Option<ConfigDocument>, ConfigError>;
    /// Stores `doc` if the stored version is still `expected_version` (0 = nothing stored).
    async fn save(&self, doc: &ConfigDocument, expected_version: u64) -> Result<(), ConfigError>;
}

/// A backend that keeps nothing; for tests and embedding.
#[derive(Debug, Default)]
pub struct NoPersistence;

#[async_trait]
impl ConfigBackend for NoPersistence {
    async fn load(&self) -> Result<Option<ConfigDocument>, ConfigError> {
        Ok(None)
    }
    async fn save(&self, _: &ConfigDocument, _: u64) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// One change requested through the API (or a reload).
#[derive(Debug, Clone)]
pub enum Change {
    Global(GlobalSettings),
    SetAction {
        tenant: String,
        action: String,
        limit: Limit,
    },
    DeleteAction {
        tenant: String,
        action: String,
    },
    SetClient {
        tenant: String,
        client: String,
        action: String,
        limit: Limit,
    },
    DeleteClient {
        tenant: String,
        client: String,
        action: String,
    },
    Weight {
        tenant: String,
        weight: u32,
    },
    /// Replace everything (a reloaded config file), as one atomic change.
    ReplaceAll(ConfigDocument),
    /// Give `tenant` an API key (see [`crate::credentials::issue`]).
    AddApiKey {
        tenant: String,
        key_id: String,
        record: ApiKeyRecord,
    },
    /// Revoke one of `tenant`'s API keys; `NotFound` when it has no such key.
    RemoveApiKey {
        tenant: String,
        key_id: String,
    },
}

/// Holds the current configuration and serializes changes to it.
pub struct ConfigManager {
    current: ArcSwap<Snapshot>,
    /// Changes are read-modify-write of the whole snapshot plus a backend save; one at a time.
    writer: tokio::sync::Mutex<()>,
    backend: Arc<dyn ConfigBackend>,
}

impl ConfigManager {
    /// Loads the stored configuration; when nothing is stored yet, starts from `seed` (e.g. the
    /// `--config` file) or defaults, and stores that.
    pub async fn open(
        backend: Arc<dyn ConfigBackend>,
        seed: Option<ConfigDocument>,
    ) -> Result<Self, ConfigError> {
        let snapshot = match backend.load().await? {
            Some(doc) => {
                if seed.is_some() {
                    // Runtime changes since the first start live in the store; a seed file must
                    // not silently undo them on every restart.
                    tracing::info!(
                        version = doc.version,
                        "stored configuration found; the --config file only seeds an empty store and was not applied"
                    );
                }
                Snapshot::from_document(&doc).map_err(|p| {
                    ConfigError::Corrupt(format!("stored configuration is invalid: {}", join(&p)))
                })?
            }
            None => {
                let mut doc = seed.unwrap_or_default();
                doc.version = doc.version.max(1);
                let snap =
                    Snapshot::from_document(&doc).map_err(|p| ConfigError::Invalid(join(&p)))?;
                backend.save(&snap.to_document(), 0).await?;
                snap
            }
        };
        Ok(Self {
            current: ArcSwap::from_pointee(snapshot),
            writer: tokio::sync::Mutex::new(()),
            backend,
        })
    }

    /// An unpersisted manager holding `doc`; for tests and benchmarks.
    pub fn in_memory(doc: ConfigDocument) -> Result<Self, ConfigError> {
        let snap = Snapshot::from_document(&doc).map_err(|p| ConfigError::Invalid(join(&p)))?;
        Ok(Self {
            current: ArcSwap::from_pointee(snap),
            writer: tokio::sync::Mutex::new(()),
            backend: Arc::new(NoPersistence),
        })
    }

    /// The current configuration. Lock-free; hold it only for the duration of one decision.
    #[inline]
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    pub fn snapshot_arc(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Validates and applies one change, persists it, and publishes the new snapshot.
    pub async fn apply(&self, change: Change) -> Result<Arc<Snapshot>, ConfigError> {
        let _writer = self.writer.lock().await;
        // A conflict means another instance wrote first: take its version and redo the change on it.
        for _ in 0..5 {
            let cur = self.current.load_full();
            let mut next = build(&cur, &change)?;
            next.version = cur.version + 1;
            match self.backend.save(&next.to_document(), cur.version).await {
                Ok(()) => {
                    let next = Arc::new(next);
                    self.current.store(next.clone());
                    return Ok(next);
                }
                Err(ConfigError::Conflict { .. }) => {
                    self.refresh_locked().await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ConfigError::Persist(
            "too many concurrent configuration changes; retry".into(),
        ))
    }

    /// Re-reads the backend and adopts its configuration if it is newer (redis mode: another
    /// instance changed it). Returns true when something changed.
    pub async fn refresh(&self) -> Result<bool, ConfigError> {
        let _writer = self.writer.lock().await;
        self.refresh_locked().await
    }

    async fn refresh_locked(&self) -> Result<bool, ConfigError> {
        let Some(doc) = self.backend.load().await? else {
            return Ok(false);
        };
        if doc.version <= self.current.load().version {
            return Ok(false);
        }
        let snap = Snapshot::from_document(&doc).map_err(|p| {
            ConfigError::Corrupt(format!("stored configuration is invalid: {}", join(&p)))
        })?;
        self.current.store(Arc::new(snap));
        Ok(true)
    }
}

fn join(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The snapshot `change` makes of `cur` (version not yet bumped).
fn build(cur: &Snapshot, change: &Change) -> Result<Snapshot, ConfigError> {
    let invalid = |e: crate::limit::InvalidArgument| ConfigError::Invalid(e.0);
    let mut next = cur.clone();
    let tenant_mut = |next: &mut Snapshot, tenant: &str| -> Result<TenantLimits, ConfigError> {
        validate_id("tenant_id", tenant).map_err(invalid)?;
        Ok(next
            .tenants
            .get(tenant)
            .map(|t| (**t).clone())
            .unwrap_or_else(|| TenantLimits {
                weight: 1,
                ..Default::default()
            }))
    };
    let put = |next: &mut Snapshot, tenant: &str, t: TenantLimits| {
        if t.is_default() {
            next.tenants.remove(tenant);
        } else {
            next.tenants.insert(tenant.to_string(), Arc::new(t));
        }
    };
    match change {
        Change::Global(g) => {
            let p = g.problems("");
            if !p.is_empty() {
                return Err(ConfigError::Invalid(join(&p)));
            }
            next.global = *g;
        }
        Change::SetAction {
            tenant,
            action,
            limit,
        } => {
            validate_id("action_type", action).map_err(invalid)?;
            let mut t = tenant_mut(&mut next, tenant)?;
            t.actions.insert(action.clone(), *limit);
            put(&mut next, tenant, t);
        }
        Change::DeleteAction { tenant, action } => {
            let mut t = tenant_mut(&mut next, tenant)?;
            if t.actions.remove(action).is_none() {
                return Err(ConfigError::NotFound(format!(
                    "tenant '{tenant}' has no limit for action '{action}'"
                )));
            }
            put(&mut next, tenant, t);
        }
        Change::SetClient {
            tenant,
            client,
            action,
            limit,
        } => {
            validate_id("client_id", client).map_err(invalid)?;
            validate_id("action_type", action).map_err(invalid)?;
            let mut t = tenant_mut(&mut next, tenant)?;
            t.clients
                .entry(client.clone())
                .or_default()
                .insert(action.clone(), *limit);
            put(&mut next, tenant, t);
        }
        Change::DeleteClient {
            tenant,
            client,
            action,
        } => {
            let mut t = tenant_mut(&mut next, tenant)?;
            let removed = match t.clients.get_mut(client) {
                Some(m) => {
                    let r = m.remove(action).is_some();
                    if m.is_empty() {
                        t.clients.remove(client);
                    }
                    r
                }
                None => false,
            };
            if !removed {
                return Err(ConfigError::NotFound(format!(
                    "tenant '{tenant}' has no limit for client '{client}' and action '{action}'"
                )));
            }
            put(&mut next, tenant, t);
        }
        Change::Weight { tenant, weight } => {
            if let Some(m) = document::weight_problem(*weight) {
                return Err(ConfigError::Invalid(m));
            }
            let mut t = tenant_mut(&mut next, tenant)?;
            t.weight = *weight;
            put(&mut next, tenant, t);
        }
        Change::ReplaceAll(doc) => {
            next = Snapshot::from_document(doc).map_err(|p| ConfigError::Invalid(join(&p)))?;
        }
        Change::AddApiKey {
            tenant,
            key_id,
            record,
        } => {
            if let Some(m) = crate::credentials::record_problem(key_id, record) {
                return Err(ConfigError::Invalid(m));
            }
            if next.key_owners.contains_key(key_id) {
                return Err(ConfigError::Invalid(format!(
                    "key id '{key_id}' is already in use"
                )));
            }
            let mut t = tenant_mut(&mut next, tenant)?;
            if t.api_keys.len() >= crate::credentials::MAX_KEYS_PER_TENANT {
                return Err(ConfigError::Invalid(format!(
                    "tenant '{tenant}' already holds {} keys, the most allowed; revoke one first",
                    crate::credentials::MAX_KEYS_PER_TENANT
                )));
            }
            t.api_keys.insert(key_id.clone(), record.clone());
            put(&mut next, tenant, t);
            next.key_owners.insert(key_id.clone(), tenant.clone());
        }
        Change::RemoveApiKey { tenant, key_id } => {
            let mut t = tenant_mut(&mut next, tenant)?;
            if t.api_keys.remove(key_id).is_none() {
                return Err(ConfigError::NotFound(format!(
                    "tenant '{tenant}' has no key '{key_id}'"
                )));
            }
            put(&mut next, tenant, t);
            next.key_owners.remove(key_id);
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::LimitSource;

    fn l(m: u64, w: f64) -> Limit {
        Limit::new(m, w).unwrap()
    }

    #[tokio::test]
    async fn precedence_client_over_action_over_request() {
        let cm = ConfigManager::in_memory(ConfigDocument::default()).unwrap();
        let req = Some(l(5, 1.0));
        assert_eq!(
            cm.snapshot().resolve("t", "c", "a", req),
            Some((l(5, 1.0), LimitSource::Request))
        );
        assert_eq!(cm.snapshot().resolve("t", "c", "a", None), None);
        cm.apply(Change::SetAction {
            tenant: "t".into(),
            action: "a".into(),
            limit: l(10, 2.0),
        })
        .await
        .unwrap();
        assert_eq!(
            cm.snapshot().resolve("t", "c", "a", req),
            Some((l(10, 2.0), LimitSource::Action))
        );
        cm.apply(Change::SetClient {
            tenant: "t".into(),
            client: "c".into(),
            action: "a".into(),
            limit: l(20, 3.0),
        })
        .await
        .unwrap();
        assert_eq!(
            cm.snapshot().resolve("t", "c", "a", req),
            Some((l(20, 3.0), LimitSource::Client))
        );
        // Another client of the same tenant still gets the action limit.
        assert_eq!(
            cm.snapshot().resolve("t", "other", "a", req),
            Some((l(10, 2.0), LimitSource::Action))
        );
        assert_eq!(cm.snapshot().version, 2);
        let e = cm
            .apply(Change::DeleteClient {
                tenant: "t".into(),
                client: "nobody".into(),
                action: "a".into(),
            })
            .await;
        assert!(matches!(e, Err(ConfigError::NotFound(_))));
        assert_eq!(cm.snapshot().version, 2, "a failed change bumps nothing");
    }

    #[tokio::test]
    async fn document_round_trip() {
        let cm = ConfigManager::in_memory(ConfigDocument::default()).unwrap();
        cm.apply(Change::SetClient {
            tenant: "t".into(),
            client: "c".into(),
            action: "a".into(),
            limit: l(20, 0.25),
        })
        .await
        .unwrap();
        cm.apply(Change::Weight {
            tenant: "u".into(),
            weight: 3,
        })
        .await
        .unwrap();
        let doc = cm.snapshot().to_document();
        let back = Snapshot::from_document(&doc).unwrap();
        assert_eq!(&back, &**cm.snapshot());
        assert_eq!(
            doc.tenants["t"].clients["c"]["a"].window_duration_seconds,
            0.25
        );
    }
}
