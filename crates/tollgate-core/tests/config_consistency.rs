//! The configuration manager keeps the configuration in force and what the load manager enforces
//! in agreement on every path a change can take, including a version conflict followed by a
//! failure of the rebuilt change.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use tollgate_core::clock::SystemClock;
use tollgate_core::config::{
    Change, ConfigBackend, ConfigDocument, ConfigError, ConfigManager, GlobalSettings, LimitSpec,
    TenantDocument,
};
use tollgate_core::store::MemoryStore;
use tollgate_core::{Limiter, StoreErrorPolicy};

/// A backend another instance writes to behind our back: the first save after `stored` changed
/// conflicts, and every later one fails as if the store went away.
struct ConflictThenFail {
    stored: Mutex<ConfigDocument>,
    saves: AtomicUsize,
}

#[async_trait]
impl ConfigBackend for ConflictThenFail {
    async fn load(&self) -> Result<Option<ConfigDocument>, ConfigError> {
        Ok(Some(self.stored.lock().clone()))
    }
    async fn save(&self, _: &ConfigDocument, expected: u64) -> Result<(), ConfigError> {
        let stored = self.stored.lock().version;
        if self.saves.fetch_add(1, Ordering::SeqCst) > 0 {
            return Err(ConfigError::Persist("the store went away".into()));
        }
        if stored != expected {
            return Err(ConfigError::Conflict { stored });
        }
        Ok(())
    }
}

/// Version 1: capacity 1000, tenant `t` with a limit on action `a`.
fn ours() -> ConfigDocument {
    let mut doc = ConfigDocument {
        version: 1,
        ..ConfigDocument::default()
    };
    let mut t = TenantDocument::default();
    t.actions.insert("a".into(), LimitSpec::new(5, 1.0).into());
    doc.tenants.insert("t".into(), t);
    doc
}

/// Version 2, written by another instance: capacity 10, tenant `t` gone.
fn theirs() -> ConfigDocument {
    ConfigDocument {
        version: 2,
        global: GlobalSettings {
            max_global_concurrent_requests: 10,
            max_tenant_queue_size: 3,
            queue_timeout_ms: 250,
            ..GlobalSettings::default()
        },
        ..ConfigDocument::default()
    }
}

async fn limiter() -> (Limiter, Arc<ConflictThenFail>) {
    let backend = Arc::new(ConflictThenFail {
        stored: Mutex::new(ours()),
        saves: AtomicUsize::new(0),
    });
    let config = ConfigManager::open(backend.clone(), None).await.unwrap();
    let limiter = Limiter::new(
        Arc::new(config),
        Arc::new(MemoryStore::new(Arc::new(SystemClock), 1000)),
        StoreErrorPolicy::Allow,
    );
    assert_eq!(limiter.load().snapshot().capacity, 1000);
    *backend.stored.lock() = theirs();
    (limiter, backend)
}

/// The load manager enforces exactly the global settings of the snapshot in force.
fn assert_load_follows_snapshot(limiter: &Limiter) {
    let snap = limiter.config().snapshot();
    assert_eq!(snap.version, 2, "the other instance's snapshot was adopted");
    let load = limiter.load().snapshot();
    assert_eq!(
        (
            load.capacity,
            load.max_queue,
            load.timeout.as_millis() as u64
        ),
        (10, 3, 250),
        "the load manager must enforce the settings in force, not the stale ones"
    );
}

#[tokio::test]
async fn conflict_then_not_found_leaves_the_load_manager_on_the_adopted_settings() {
    let (limiter, _) = limiter().await;
    // Valid on ours; after adopting theirs (no tenant `t`), the rebuilt change is not found.
    let r = limiter
        .update_config(Change::DeleteAction {
            tenant: "t".into(),
            action: "a".into(),
        })
        .await;
    assert!(matches!(r, Err(ConfigError::NotFound(_))), "{r:?}");
    assert_load_follows_snapshot(&limiter);
}

#[tokio::test]
async fn conflict_then_save_error_leaves_the_load_manager_on_the_adopted_settings() {
    let (limiter, backend) = limiter().await;
    let r = limiter
        .update_config(Change::Weight {
            tenant: "u".into(),
            weight: 3,
        })
        .await;
    assert!(matches!(r, Err(ConfigError::Persist(_))), "{r:?}");
    assert_eq!(backend.saves.load(Ordering::SeqCst), 2);
    assert_load_follows_snapshot(&limiter);
    assert_eq!(limiter.config().snapshot().tenants.get("u"), None);
}
