//! A configuration manager started while its backend is unreachable (Redis down at start-up,
//! issue 12 item 3): it serves the seed as a placeholder, refuses changes, and on first contact
//! adopts the stored configuration, or stores the seed when nothing is stored.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tollgate_core::config::{
    Change, ConfigBackend, ConfigDocument, ConfigError, ConfigManager, LimitSpec, TenantDocument,
};
use tollgate_core::limit::Limit;

/// A backend that answers like an unreachable Redis while `down` is set.
#[derive(Default)]
struct FlakyBackend {
    down: AtomicBool,
    stored: parking_lot::Mutex<Option<ConfigDocument>>,
}

#[async_trait]
impl ConfigBackend for FlakyBackend {
    async fn load(&self) -> Result<Option<ConfigDocument>, ConfigError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ConfigError::Persist("down".into()));
        }
        Ok(self.stored.lock().clone())
    }
    async fn save(&self, doc: &ConfigDocument, expected: u64) -> Result<(), ConfigError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ConfigError::Persist("down".into()));
        }
        let mut stored = self.stored.lock();
        let cur = stored.as_ref().map_or(0, |d| d.version);
        if cur != expected {
            return Err(ConfigError::Conflict { stored: cur });
        }
        *stored = Some(doc.clone());
        Ok(())
    }
}

fn doc_with(tenant: &str, max: u64, version: u64) -> ConfigDocument {
    let mut actions = BTreeMap::new();
    actions.insert("api".to_string(), LimitSpec::new(max, 60.0).into());
    let mut tenants = BTreeMap::new();
    tenants.insert(
        tenant.to_string(),
        TenantDocument {
            actions,
            ..serde_json::from_str("{}").unwrap()
        },
    );
    ConfigDocument {
        version,
        tenants,
        ..Default::default()
    }
}

fn down_backend() -> Arc<FlakyBackend> {
    let b = Arc::new(FlakyBackend::default());
    b.down.store(true, Ordering::SeqCst);
    b
}

#[tokio::test]
async fn pending_adopts_the_stored_configuration_once_reachable() {
    let backend = down_backend();
    let manager = ConfigManager::pending(backend.clone(), Some(doc_with("seeded", 3, 0))).unwrap();
    assert!(!manager.is_loaded());
    assert_eq!(manager.snapshot().version, 0);
    assert!(manager.snapshot().tenants.contains_key("seeded"));
    // Unreachable: refresh and changes fail, nothing is marked loaded.
    assert!(manager.refresh().await.is_err());
    let change = Change::Weight {
        tenant: "seeded".into(),
        weight: 2,
    };
    assert!(matches!(
        manager.apply(change).await,
        Err(ConfigError::Persist(_))
    ));
    assert!(!manager.is_loaded());

    *backend.stored.lock() = Some(doc_with("stored", 7, 12));
    backend.down.store(false, Ordering::SeqCst);
    assert!(manager.refresh().await.unwrap());
    assert!(manager.is_loaded());
    let snap = manager.snapshot();
    assert_eq!(snap.version, 12);
    assert!(snap.tenants.contains_key("stored"));
    assert!(
        !snap.tenants.contains_key("seeded"),
        "the seed only fills an empty store"
    );
}

#[tokio::test]
async fn pending_stores_its_seed_when_nothing_is_stored() {
    let backend = down_backend();
    let manager = ConfigManager::pending(backend.clone(), Some(doc_with("seeded", 3, 0))).unwrap();
    backend.down.store(false, Ordering::SeqCst);
    assert!(manager.refresh().await.unwrap());
    assert!(manager.is_loaded());
    assert_eq!(manager.snapshot().version, 1);
    let stored = backend.stored.lock().clone().expect("seed stored");
    assert_eq!(stored.version, 1);
    assert!(stored.tenants.contains_key("seeded"));
    // Then it behaves like any opened manager.
    assert!(!manager.refresh().await.unwrap());
}

#[tokio::test]
async fn a_change_before_any_refresh_builds_on_the_stored_configuration() {
    let backend = down_backend();
    let manager = ConfigManager::pending(backend.clone(), None).unwrap();
    *backend.stored.lock() = Some(doc_with("stored", 7, 4));
    backend.down.store(false, Ordering::SeqCst);
    let snap = manager
        .apply(Change::SetAction {
            tenant: "other".into(),
            action: "api".into(),
            limit: Limit::new(5, 1.0).unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(snap.version, 5);
    assert!(snap.tenants.contains_key("stored"), "stored config kept");
    assert!(snap.tenants.contains_key("other"));
    assert_eq!(backend.stored.lock().as_ref().unwrap().version, 5);
    assert!(manager.is_loaded());
}
