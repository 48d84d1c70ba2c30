//! The ConfigurationManager: the limit hierarchy (client > tenant action > request), tenant
//! weights and global load settings; validated, versioned, persisted through a backend, and read
//! lock-free by every decision.

mod document;
mod embedded;
mod file;
pub mod policy_spec;
mod redis;
mod snapshot;
mod sorted_map;
mod tenant_map;

use std::sync::Arc;

use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use async_trait::async_trait;

pub use document::{
    AlgorithmName, ConfigDocument, ConfigProblem, GlobalPatch, GlobalSettings, LimitEntry,
    LimitSpec, TenantDocument, DEFAULT_MAX_KEYS_PER_TENANT, DEFAULT_MAX_REQUEST_WINDOW_SECONDS,
    DEFAULT_NEW_KEYS_PER_SECOND, DEFAULT_QUEUE_TIMEOUT_MS,
};
pub use embedded::{stored_tenant_count, EmbeddedBackend, DATABASE_FILE, IMPORTED_SUFFIX};
pub use file::{parse_toml, to_toml, FileBackend};
pub use redis::{LoadStats, RedisConfigBackend};
pub use snapshot::{Snapshot, SnapshotBuilder, TenantLimits};
pub use sorted_map::SortedMap;
pub use tenant_map::{Tenant, TenantMap};

use crate::credentials::ApiKeyRecord;
use crate::limit::{validate_id, Limit};
use crate::policy::Policy;

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
    /// The stored configuration, validated; `None` when nothing is stored. Backends that can read
    /// their records one by one override it to build the snapshot as they read (see
    /// [`SnapshotBuilder`]), never holding the whole document; the default loads the document.
    async fn load_snapshot(&self) -> Result<Option<Snapshot>, ConfigError> {
        self.load()
            .await?
            .map(|doc| stored_snapshot(&doc))
            .transpose()
    }
    /// Stores `doc` if the stored version is still `expected_version` (0 = nothing stored).
    async fn save(&self, doc: &ConfigDocument, expected_version: u64) -> Result<(), ConfigError>;
    /// Stores one change if the stored version is still `expected_version`: all of it or none.
    /// Backends with per-record storage write only the records `commit` names, so a change costs
    /// the same at ten tenants and at a million; the default stores the whole document.
    async fn commit(&self, commit: &Commit<'_>, expected_version: u64) -> Result<(), ConfigError> {
        self.save(&commit.next.to_document(), expected_version)
            .await
    }
    /// [`ConfigBackend::commit`] for backends that check each touched record rather than the
    /// whole version: a change to other records stored meanwhile does not stop this one. Returns
    /// the version it was stored under; one other than `commit.next.version` means other changes
    /// were stored first, and the caller must read them (see [`ConfigBackend::load_onto`]).
    async fn commit_records(
        &self,
        commit: &Commit<'_>,
        expected_version: u64,
    ) -> Result<u64, ConfigError> {
        self.commit(commit, expected_version)
            .await
            .map(|()| commit.next.version)
    }
    /// The stored configuration, built on `base` (the one in force) where the backend can tell
    /// what changed since, so catching up costs the size of the change; `None` when nothing is
    /// stored. The default loads everything.
    async fn load_onto(&self, base: &Snapshot) -> Result<Option<Snapshot>, ConfigError> {
        let _ = base;
        self.load()
            .await?
            .map(|doc| stored_snapshot(&doc))
            .transpose()
    }
}

/// One change as a backend stores it: the configuration after it and the records it touched.
#[derive(Debug)]
pub struct Commit<'a> {
    /// The configuration after the change, carrying the new version.
    pub next: &'a Snapshot,
    /// True when the global settings changed.
    pub global: bool,
    /// Tenants whose record changed, in id order: each is stored as `next` has it, or removed
    /// when `next` no longer configures it.
    pub tenants: &'a [String],
}

impl Commit<'_> {
    /// The stored form of each touched tenant (`None` = remove its record).
    pub fn records(&self) -> impl Iterator<Item = (&str, Option<TenantDocument>)> + '_ {
        self.tenants.iter().map(|t| {
            let doc = self
                .next
                .tenants
                .contains_key(t.as_str())
                .then(|| self.next.tenant_document(t));
            (t.as_str(), doc)
        })
    }
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
    /// Some or all global settings; omitted ones keep the value in force when it is applied.
    Global(GlobalPatch),
    SetAction {
        tenant: String,
        action: String,
        limit: Limit,
    },
    DeleteAction {
        tenant: String,
        action: String,
    },
    /// A tenant's action limited by a policy (several limits, other algorithms); `SetAction` is
    /// the one-sliding-log case.
    SetActionPolicy {
        tenant: String,
        action: String,
        policy: Policy,
    },
    /// A client's action limited by a policy.
    SetClientPolicy {
        tenant: String,
        client: String,
        action: String,
        policy: Policy,
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
    /// Change some of a tenant's settings (weight, bounds on its state) at once.
    TenantSettings {
        tenant: String,
        patch: TenantSettingsPatch,
    },
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
    /// Remove all of `tenant`'s limits (action and client), its weight and its bounds on state;
    /// its API keys stay (they are revoked one by one). `NotFound` when there is nothing of that.
    DeleteTenant {
        tenant: String,
    },
    /// Put `tenant`'s weight back to the default (1); `NotFound` when it has none of its own.
    ResetWeight {
        tenant: String,
    },
    /// Several changes applied in order as one: all of them under one new version, or none
    /// (the first that fails is reported and nothing is applied or stored).
    Batch(Vec<Change>),
}

/// A partial update of a tenant's settings: `None` keeps a value as it is; for the bounds on
/// state, `Some(None)` removes the tenant's override so the global value applies again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantSettingsPatch {
    pub weight: Option<u32>,
    pub max_keys: Option<Option<u64>>,
    pub new_keys_per_second: Option<Option<u64>>,
    pub max_request_window_seconds: Option<Option<u64>>,
}

/// The highest configuration version tollgate writes or accepts: 2^53 - 1, the largest integer
/// that JSON readers using doubles (JavaScript, Lua inside Redis) still hold exactly. A version
/// grows by one per change, so no real deployment gets near it; a stored version beyond it was
/// written by hand or is corrupt, and is refused rather than wrapped.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// Called with every snapshot put in force, in the order they are put in force.
type Observer = Box<dyn Fn(&Snapshot) + Send + Sync>;

/// Holds the current configuration and serializes changes to it.
pub struct ConfigManager {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwap<Snapshot>,
    /// Changes are read-modify-write of the whole snapshot plus a backend save; one at a time.
    writer: tokio::sync::Mutex<()>,
    backend: Arc<dyn ConfigBackend>,
    /// Held while a snapshot is published and its observers run, so observers see snapshots in
    /// publication order and a new observer cannot miss one.
    observers: parking_lot::Mutex<Vec<Observer>>,
    /// False while a [`ConfigManager::pending`] manager has not read the backend yet.
    loaded: AtomicBool,
}

impl ConfigManager {
    /// Loads the stored configuration; when nothing is stored yet, starts from `seed` (e.g. the
    /// `--config` file) or defaults, and stores that.
    pub async fn open(
        backend: Arc<dyn ConfigBackend>,
        seed: Option<ConfigDocument>,
    ) -> Result<Self, ConfigError> {
        let snapshot = match backend.load_snapshot().await? {
            Some(snap) => {
                if seed.is_some() {
                    // Runtime changes since the first start live in the store; a seed file must
                    // not silently undo them on every restart.
                    tracing::info!(
                        version = snap.version,
                        "stored configuration found; the --config file only seeds an empty store and was not applied"
                    );
                }
                snap
            }
            None => {
                let mut doc = seed.unwrap_or_default();
                doc.version = doc.version.max(1);
                check_version(doc.version).map_err(ConfigError::Invalid)?;
                let snap =
                    Snapshot::from_document(&doc).map_err(|p| ConfigError::Invalid(join(&p)))?;
                backend.save(&snap.to_document(), 0).await?;
                snap
            }
        };
        Ok(Self::over(snapshot, backend))
    }

    /// A manager whose backend cannot be read yet (Redis down at start-up): it holds `seed` (or
    /// defaults) under version 0 and reports [`ConfigManager::is_loaded`] false until a
    /// [`ConfigManager::refresh`] or a change reaches the backend. That first contact does what
    /// [`ConfigManager::open`] would have done: adopt the stored configuration, or store the seed
    /// when nothing is stored.
    pub fn pending(
        backend: Arc<dyn ConfigBackend>,
        seed: Option<ConfigDocument>,
    ) -> Result<Self, ConfigError> {
        let mut doc = seed.unwrap_or_default();
        doc.version = 0;
        let snap = Snapshot::from_document(&doc).map_err(|p| ConfigError::Invalid(join(&p)))?;
        let manager = Self::over(snap, backend);
        manager.inner.loaded.store(false, Ordering::SeqCst);
        Ok(manager)
    }

    /// Whether the configuration in force was read from (or stored in) the backend; false only
    /// for a [`ConfigManager::pending`] manager that has not reached it yet.
    pub fn is_loaded(&self) -> bool {
        self.inner.loaded.load(Ordering::SeqCst)
    }

    /// An unpersisted manager holding `doc`; for tests and benchmarks.
    pub fn in_memory(doc: ConfigDocument) -> Result<Self, ConfigError> {
        check_version(doc.version).map_err(ConfigError::Invalid)?;
        let snap = Snapshot::from_document(&doc).map_err(|p| ConfigError::Invalid(join(&p)))?;
        Ok(Self::over(snap, Arc::new(NoPersistence)))
    }

    fn over(snapshot: Snapshot, backend: Arc<dyn ConfigBackend>) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(snapshot),
                writer: tokio::sync::Mutex::new(()),
                backend,
                observers: parking_lot::Mutex::new(Vec::new()),
                loaded: AtomicBool::new(true),
            }),
        }
    }

    /// The current configuration. Lock-free; hold it only for the duration of one decision.
    #[inline]
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.inner.current.load()
    }

    pub fn snapshot_arc(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// Calls `observer` with the snapshot in force now, then with every snapshot put in force
    /// later, in order, whichever path puts it in force (a change, a conflict that adopted another
    /// instance's configuration even though the change then failed, a refresh). It runs while
    /// the snapshot is published, so it must be quick and must not call back into the manager.
    pub fn on_change(&self, observer: impl Fn(&Snapshot) + Send + Sync + 'static) {
        let mut observers = self.inner.observers.lock();
        observer(&self.inner.current.load());
        observers.push(Box::new(observer));
    }

    /// Validates and applies one change, persists it, and publishes the new snapshot.
    ///
    /// The change runs to completion even if the caller stops waiting (a request timeout, a
    /// client that went away): a save cut off halfway would leave its write running outside the
    /// writer lock, and the stored configuration and the one in force disagreeing.
    pub async fn apply(&self, change: Change) -> Result<Arc<Snapshot>, ConfigError> {
        let inner = self.inner.clone();
        detached(async move { inner.apply(change).await }).await
    }

    /// Brings the configuration in force and the stored one into agreement (redis mode: another
    /// instance changed it, or Redis lost it). Adopts a newer stored configuration; stores ours
    /// when none is stored; and when the stored version is below ours (restored by an instance
    /// that was behind, or a failover to a replica that missed writes), adopts the stored
    /// configuration under a version above ours, so no instance's version ever goes back and none
    /// is left conflicting on every change. Returns true when the configuration in force changed.
    pub async fn refresh(&self) -> Result<bool, ConfigError> {
        let inner = self.inner.clone();
        detached(async move {
            let _writer = inner.writer.lock().await;
            inner.reconcile_locked().await
        })
        .await
    }
}

/// Runs `fut` as its own task and waits for it; dropping the wait leaves the task running.
async fn detached<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T, ConfigError>> + Send + 'static,
) -> Result<T, ConfigError> {
    match tokio::spawn(fut).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(ConfigError::Persist(format!(
            "the configuration change was cancelled: {e}"
        ))),
    }
}

impl Inner {
    async fn apply(&self, change: Change) -> Result<Arc<Snapshot>, ConfigError> {
        let _writer = self.writer.lock().await;
        // A change must build on the stored configuration, never on a pending placeholder.
        if !self.loaded.load(Ordering::SeqCst) {
            self.reconcile_locked().await?;
        }
        // A conflict means another instance wrote first: take its version and redo the change on it.
        for _ in 0..5 {
            let cur = self.current.load_full();
            let mut touched = Touched::default();
            let mut next = build(&cur, &change, &mut touched)?;
            next.version = next_version(cur.version)?;
            let tenants: Vec<String> = touched.tenants.into_iter().collect();
            let commit = Commit {
                next: &next,
                global: touched.global,
                tenants: &tenants,
            };
            match self.backend.commit_records(&commit, cur.version).await {
                Ok(v) if v == commit.next.version => {
                    let next = Arc::new(next);
                    self.publish(next.clone());
                    return Ok(next);
                }
                // Stored on top of other instances' changes to other records: read them (ours
                // comes with them) rather than publish a configuration that lacks them.
                Ok(_) => {
                    self.reconcile_locked().await?;
                    return Ok(self.current.load_full());
                }
                Err(ConfigError::Conflict { .. }) => {
                    self.reconcile_locked().await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ConfigError::Persist(
            "too many concurrent configuration changes; retry".into(),
        ))
    }

    /// Puts `snap` in force. Called with the writer lock held.
    fn publish(&self, snap: Arc<Snapshot>) {
        let observers = self.observers.lock();
        self.current.store(snap.clone());
        for observer in observers.iter() {
            observer(&snap);
        }
    }

    /// See [`ConfigManager::refresh`]. Called with the writer lock held.
    async fn reconcile_locked(&self) -> Result<bool, ConfigError> {
        if !self.loaded.load(Ordering::SeqCst) {
            return self.first_load_locked().await;
        }
        // Each round either settles or lost a race to another writer, which moved on.
        for _ in 0..5 {
            let cur = self.current.load_full();
            let Some(stored) = self.backend.load_onto(&cur).await? else {
                // The store lost the configuration (Redis restarted without persistence, or
                // flushed): put ours back so changes can be made and other instances keep it.
                match self.backend.save(&cur.to_document(), 0).await {
                    Ok(()) => {
                        tracing::warn!(
                            version = cur.version,
                            "the stored configuration was missing; stored this instance's"
                        );
                        return Ok(false);
                    }
                    Err(ConfigError::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            };
            let stored_version = stored.version;
            if stored.version == cur.version {
                return Ok(false);
            }
            if stored.version > cur.version {
                self.publish(Arc::new(stored));
                return Ok(true);
            }
            // The store went back to an older version than ours. Its configuration is what every
            // instance can agree on; ours may hold changes it lost, but overwriting it could undo
            // changes acknowledged since. Take it, under a version none of us has used.
            let mut next = stored;
            next.version = next_version(cur.version)?;
            match self.backend.save(&next.to_document(), stored_version).await {
                Ok(()) => {
                    tracing::warn!(
                        ours = cur.version,
                        stored = stored_version,
                        now = next.version,
                        "the stored configuration went back to an older version (restored by another instance, or a failover); adopted it"
                    );
                    self.publish(Arc::new(next));
                    return Ok(true);
                }
                Err(ConfigError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ConfigError::Persist(
            "the stored configuration keeps changing; retry".into(),
        ))
    }
}

impl Inner {
    /// A pending manager's first contact with the backend: what `open` does, late. Called with
    /// the writer lock held.
    async fn first_load_locked(&self) -> Result<bool, ConfigError> {
        for _ in 0..5 {
            let next = match self.backend.load_snapshot().await? {
                Some(snap) => snap,
                None => {
                    let mut next = (*self.current.load_full()).clone();
                    next.version = 1;
                    match self.backend.save(&next.to_document(), 0).await {
                        Ok(()) => next,
                        // Another instance stored one first: read it.
                        Err(ConfigError::Conflict { .. }) => continue,
                        Err(e) => return Err(e),
                    }
                }
            };
            self.publish(Arc::new(next));
            self.loaded.store(true, Ordering::SeqCst);
            tracing::info!(
                version = self.current.load().version,
                "configuration loaded from the store"
            );
            return Ok(true);
        }
        Err(ConfigError::Persist(
            "the stored configuration keeps changing; retry".into(),
        ))
    }
}

/// The version after `v`, refusing to pass [`MAX_VERSION`] (it never wraps to 0).
fn next_version(v: u64) -> Result<u64, ConfigError> {
    v.checked_add(1)
        .filter(|n| *n <= MAX_VERSION)
        .ok_or_else(|| {
            ConfigError::Corrupt(format!(
                "the configuration version {v} is at its maximum ({MAX_VERSION}) and cannot be incremented; store the configuration again with a lower version"
            ))
        })
}

/// Checks a version read from a store or a file.
pub(crate) fn check_version(v: u64) -> Result<(), String> {
    if v > MAX_VERSION {
        return Err(format!(
            "configuration version {v} is above the maximum {MAX_VERSION}"
        ));
    }
    Ok(())
}

/// A snapshot of a stored document, or why it cannot be used.
fn stored_snapshot(doc: &ConfigDocument) -> Result<Snapshot, ConfigError> {
    check_version(doc.version)
        .map_err(|m| ConfigError::Corrupt(format!("stored configuration is invalid: {m}")))?;
    Snapshot::from_document(doc).map_err(|p| stored_problems(&p))
}

/// The error for a stored configuration whose records fail validation.
fn stored_problems(problems: &[ConfigProblem]) -> ConfigError {
    ConfigError::Corrupt(format!(
        "stored configuration is invalid: {}",
        join(problems)
    ))
}

fn join(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a change touched, so only those records are stored.
#[derive(Debug, Default)]
struct Touched {
    global: bool,
    tenants: std::collections::BTreeSet<String>,
}

/// The snapshot `change` makes of `cur` (version not yet bumped); records what it touched.
fn build(cur: &Snapshot, change: &Change, touched: &mut Touched) -> Result<Snapshot, ConfigError> {
    let invalid = |e: crate::limit::InvalidArgument| ConfigError::Invalid(e.0);
    // Cloning shares every tenant (a persistent map): O(1), not O(tenants).
    let mut next = cur.clone();
    match change {
        Change::Global(_) => touched.global = true,
        Change::SetAction { tenant, .. }
        | Change::SetActionPolicy { tenant, .. }
        | Change::DeleteAction { tenant, .. }
        | Change::SetClient { tenant, .. }
        | Change::SetClientPolicy { tenant, .. }
        | Change::DeleteClient { tenant, .. }
        | Change::Weight { tenant, .. }
        | Change::TenantSettings { tenant, .. }
        | Change::AddApiKey { tenant, .. }
        | Change::RemoveApiKey { tenant, .. }
        | Change::DeleteTenant { tenant }
        | Change::ResetWeight { tenant } => {
            touched.tenants.insert(tenant.clone());
        }
        Change::ReplaceAll(_) | Change::Batch(_) => {}
    }
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
            next.tenants.insert(tenant.to_string(), t);
        }
    };
    match change {
        Change::Global(patch) => {
            let g = patch.apply_to(&cur.global);
            let p = g.problems("");
            if !p.is_empty() {
                return Err(ConfigError::Invalid(join(&p)));
            }
            next.global = g;
        }
        Change::SetAction {
            tenant,
            action,
            limit,
        } => {
            validate_id("action_type", action).map_err(invalid)?;
            let mut t = tenant_mut(&mut next, tenant)?;
            t.actions.insert(action, Policy::single(*limit));
            put(&mut next, tenant, t);
        }
        Change::SetActionPolicy {
            tenant,
            action,
            policy,
        } => {
            validate_id("action_type", action).map_err(invalid)?;
            let mut t = tenant_mut(&mut next, tenant)?;
            t.actions.insert(action, policy.clone());
            put(&mut next, tenant, t);
        }
        Change::SetClientPolicy {
            tenant,
            client,
            action,
            policy,
        } => {
            validate_id("client_id", client).map_err(invalid)?;
            validate_id("action_type", action).map_err(invalid)?;
            let mut t = tenant_mut(&mut next, tenant)?;
            let mut c = t.clients.get(client).cloned().unwrap_or_default();
            c.insert(action, policy.clone());
            t.clients.insert(client, c);
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
            let mut c = t.clients.get(client).cloned().unwrap_or_default();
            c.insert(action, Policy::single(*limit));
            t.clients.insert(client, c);
            put(&mut next, tenant, t);
        }
        Change::DeleteClient {
            tenant,
            client,
            action,
        } => {
            let mut t = tenant_mut(&mut next, tenant)?;
            let removed = match t.clients.get(client).cloned() {
                Some(mut m) => {
                    let r = m.remove(action).is_some();
                    if m.is_empty() {
                        t.clients.remove(client);
                    } else {
                        t.clients.insert(client, m);
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
        Change::TenantSettings { tenant, patch } => {
            let mut t = tenant_mut(&mut next, tenant)?;
            if let Some(w) = patch.weight {
                if let Some(m) = document::weight_problem(w) {
                    return Err(ConfigError::Invalid(m));
                }
                t.weight = w;
            }
            type Check<'a> = (
                &'static str,
                Option<Option<u64>>,
                fn(u64) -> Option<String>,
                &'a mut Option<u64>,
            );
            let checks: [Check<'_>; 3] = [
                (
                    "max_keys",
                    patch.max_keys,
                    document::max_keys_problem,
                    &mut t.max_keys,
                ),
                (
                    "new_keys_per_second",
                    patch.new_keys_per_second,
                    document::new_keys_problem,
                    &mut t.new_keys_per_second,
                ),
                (
                    "max_request_window_seconds",
                    patch.max_request_window_seconds,
                    document::request_window_problem,
                    &mut t.max_request_window_seconds,
                ),
            ];
            for (field, value, check, slot) in checks {
                let Some(value) = value else { continue };
                if let Some(m) = value.and_then(check) {
                    return Err(ConfigError::Invalid(format!("{field} {m}")));
                }
                *slot = value;
            }
            put(&mut next, tenant, t);
        }
        Change::ReplaceAll(doc) => {
            // Tenant API keys are issued and revoked through the API and a file rarely lists
            // them: a tenant whose entry lists none keeps the keys it holds now, so a reload does
            // not lock every tenant out. Done here, under the writer lock, so a key issued while a
            // reload runs is kept too. Keys listed in the document replace that tenant's keys.
            let mut doc = doc.clone();
            for (tenant, t) in &cur.tenants {
                if t.api_keys.is_empty() {
                    continue;
                }
                let entry = doc.tenants.entry(tenant.clone()).or_default();
                if entry.api_keys.is_empty() {
                    entry.api_keys = t
                        .api_keys
                        .iter()
                        .map(|(k, r)| (k.to_string(), r.clone()))
                        .collect();
                }
            }
            next = Snapshot::from_document(&doc).map_err(|p| ConfigError::Invalid(join(&p)))?;
            touched.global |= next.global != cur.global;
            // Only records that differ are stored again: O(size of both configurations) to
            // compare, but a reload that changes one tenant writes one record.
            for (tid, t) in &next.tenants {
                if cur.tenants.get(tid.as_str()).is_none_or(|c| **c != **t) {
                    touched.tenants.insert(tid.clone());
                }
            }
            for tid in cur.tenants.keys() {
                if !next.tenants.contains_key(tid.as_str()) {
                    touched.tenants.insert(tid.clone());
                }
            }
        }
        Change::Batch(changes) => {
            for c in changes {
                next = build(&next, c, touched)?;
            }
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
            t.api_keys.insert(key_id, record.clone());
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
        Change::DeleteTenant { tenant } => {
            let t = tenant_mut(&mut next, tenant)?;
            let kept = TenantLimits {
                weight: 1,
                api_keys: t.api_keys.clone(),
                ..Default::default()
            };
            if kept == t {
                return Err(ConfigError::NotFound(format!(
                    "tenant '{tenant}' has no limits, weight or settings of its own"
                )));
            }
            put(&mut next, tenant, kept);
        }
        Change::ResetWeight { tenant } => {
            let mut t = tenant_mut(&mut next, tenant)?;
            if t.weight == 1 {
                return Err(ConfigError::NotFound(format!(
                    "tenant '{tenant}' has no weight of its own (the default is 1)"
                )));
            }
            t.weight = 1;
            put(&mut next, tenant, t);
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
            doc.tenants["t"].clients["c"]["a"].specs()[0].window_duration_seconds,
            0.25
        );
    }

    #[test]
    fn documents_without_the_bounds_on_state_load_with_defaults() {
        // As written by the previous version (config.json, the Redis document) and a TOML file.
        let old = r#"{"version":7,"global":{"max_global_concurrent_requests":10,
            "max_tenant_queue_size":5,"queue_timeout_ms":300},
            "tenants":{"t":{"weight":2,"actions":{"a":{"max_requests":3,"window_duration_seconds":1.5}},
            "clients":{}}}}"#;
        let doc: ConfigDocument = serde_json::from_str(old).unwrap();
        let snap = Snapshot::from_document(&doc).unwrap();
        assert_eq!(snap.global.max_keys_per_tenant, DEFAULT_MAX_KEYS_PER_TENANT);
        assert_eq!(snap.global.new_keys_per_second, DEFAULT_NEW_KEYS_PER_SECOND);
        assert_eq!(snap.global.max_request_window_seconds, 31_536_000);
        assert_eq!(snap.tenants["t"].max_keys, None);
        // Written back, an unconfigured tenant's document has no new fields to trip older readers.
        let back = serde_json::to_value(snap.to_document()).unwrap();
        assert!(back["tenants"]["t"].get("max_keys").is_none());
        let toml = parse_toml(
            std::path::Path::new("old.toml"),
            "[global]\nmax_global_concurrent_requests = 10\nmax_tenant_queue_size = 5\n\n[tenants.t.actions.a]\nmax_requests = 3\nwindow_duration_seconds = 60\n",
        )
        .unwrap();
        assert_eq!(toml.global.max_keys_per_tenant, DEFAULT_MAX_KEYS_PER_TENANT);
        // The new fields in a file, and their validation with paths.
        let new: ConfigDocument = toml::from_str(
            "[global]\nmax_global_concurrent_requests = 10\nmax_tenant_queue_size = 5\nnew_keys_per_second = 50\n\n[tenants.t]\nmax_keys = 0\nmax_request_window_seconds = 60\n",
        )
        .unwrap();
        assert_eq!(new.global.new_keys_per_second, 50);
        let problems = Snapshot::from_document(&new).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "tenants.t.max_keys");
        // The per-tenant budget may also be spelled like the global setting, as DESIGN.md does.
        let aliased: ConfigDocument =
            toml::from_str("[tenants.t]\nmax_keys_per_tenant = 25\n").unwrap();
        assert_eq!(aliased.tenants["t"].max_keys, Some(25));
    }
}
