//! Configuration at tenant scale (issue 17): a change stores only the records it touched, batches
//! are all-or-nothing under one version, the snapshot pages in id order, and the embedded store
//! imports a data dir written by the previous version.

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use tollgate_core::config::{
    stored_tenant_count, Change, Commit, ConfigBackend, ConfigDocument, ConfigError, ConfigManager,
    EmbeddedBackend, DATABASE_FILE,
};
use tollgate_core::Limit;

fn limit(n: u64) -> Limit {
    Limit::new(n, 60.0).unwrap()
}

fn set(tenant: &str, action: &str, n: u64) -> Change {
    Change::SetAction {
        tenant: tenant.into(),
        action: action.into(),
        limit: limit(n),
    }
}

/// Records what each commit named, and keeps the whole document like a simple backend would.
#[derive(Default)]
struct Recording {
    commits: Mutex<Vec<(bool, Vec<String>)>>,
    full_saves: Mutex<usize>,
}

#[async_trait]
impl ConfigBackend for Recording {
    async fn load(&self) -> Result<Option<ConfigDocument>, ConfigError> {
        Ok(None)
    }
    async fn save(&self, _: &ConfigDocument, _: u64) -> Result<(), ConfigError> {
        *self.full_saves.lock() += 1;
        Ok(())
    }
    async fn commit(&self, c: &Commit<'_>, _: u64) -> Result<(), ConfigError> {
        self.commits.lock().push((c.global, c.tenants.to_vec()));
        Ok(())
    }
}

fn doc_with(tenants: usize) -> ConfigDocument {
    let mut doc = ConfigDocument::default();
    for i in 0..tenants {
        let t: tollgate_core::config::TenantDocument = serde_json::from_value(serde_json::json!({
            "actions": {"api_call": {"max_requests": 100 + i as u64, "window_duration_seconds": 60.0}}
        }))
        .unwrap();
        doc.tenants.insert(format!("tenant-{i:06}"), t);
    }
    doc
}

#[tokio::test]
async fn a_change_names_only_the_records_it_touched() {
    let backend = Arc::new(Recording::default());
    let cm = ConfigManager::open(backend.clone(), Some(doc_with(1000)))
        .await
        .unwrap();
    assert_eq!(*backend.full_saves.lock(), 1, "the seed is stored once");
    cm.apply(set("tenant-000500", "login", 5)).await.unwrap();
    cm.apply(Change::Global(tollgate_core::config::GlobalPatch {
        max_tenant_queue_size: Some(7),
        ..Default::default()
    }))
    .await
    .unwrap();
    // A reload that changes one tenant and drops another touches exactly those two.
    let mut file = cm.snapshot().to_document();
    file.tenants.remove("tenant-000001");
    file.tenants.get_mut("tenant-000002").unwrap().weight = 3;
    cm.apply(Change::ReplaceAll(file)).await.unwrap();
    let commits = backend.commits.lock().clone();
    assert_eq!(
        commits,
        vec![
            (false, vec!["tenant-000500".to_string()]),
            (true, vec![]),
            (
                false,
                vec!["tenant-000001".to_string(), "tenant-000002".to_string()]
            ),
        ]
    );
    assert_eq!(
        *backend.full_saves.lock(),
        1,
        "no change rewrote everything"
    );
}

#[tokio::test]
async fn a_batch_is_one_version_and_all_or_nothing() {
    let cm = ConfigManager::in_memory(ConfigDocument::default()).unwrap();
    let v0 = cm.snapshot().version;
    let snap = cm
        .apply(Change::Batch(vec![
            set("a", "x", 1),
            set("b", "x", 2),
            Change::Weight {
                tenant: "a".into(),
                weight: 4,
            },
        ]))
        .await
        .unwrap();
    assert_eq!(snap.version, v0 + 1);
    assert_eq!(snap.tenants["a"].weight, 4);
    assert_eq!(
        snap.tenants["b"].actions["x"].limits[0].limit.max_requests,
        2
    );
    // The third change fails: the first two are not applied either.
    let e = cm
        .apply(Change::Batch(vec![
            set("c", "x", 1),
            set("a", "x", 9),
            Change::DeleteAction {
                tenant: "nobody".into(),
                action: "x".into(),
            },
        ]))
        .await;
    assert!(matches!(e, Err(ConfigError::NotFound(_))), "{e:?}");
    let now = cm.snapshot();
    assert_eq!(now.version, v0 + 1);
    assert!(!now.tenants.contains_key("c"));
    assert_eq!(
        now.tenants["a"].actions["x"].limits[0].limit.max_requests,
        1
    );
}

#[tokio::test]
async fn pages_walk_every_tenant_once_in_id_order() {
    let cm = ConfigManager::in_memory(doc_with(25)).unwrap();
    let snap = cm.snapshot();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, next) = snap.page(after.as_deref(), 10);
        assert!(page.len() <= 10);
        seen.extend(page.iter().map(|(k, _)| k.to_string()));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("tenant-{i:06}")).collect();
    assert_eq!(seen, expected);
    // A page that ends exactly at the last tenant says there is no next page.
    let (page, next) = snap.page(Some("tenant-000014"), 10);
    assert_eq!(page.len(), 10);
    assert_eq!(next, None);
}

#[tokio::test]
async fn the_embedded_store_keeps_every_change_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        ConfigManager::open(Arc::new(EmbeddedBackend::new(dir.path()).unwrap()), None)
            .await
            .unwrap()
    };
    let cm = open().await;
    cm.apply(Change::ReplaceAll(doc_with(50))).await.unwrap();
    cm.apply(set("tenant-000007", "login", 3)).await.unwrap();
    cm.apply(Change::DeleteAction {
        tenant: "tenant-000008".into(),
        action: "api_call".into(),
    })
    .await
    .unwrap();
    cm.apply(Change::Batch(vec![
        set("zz", "a", 1),
        set("tenant-000009", "b", 2),
    ]))
    .await
    .unwrap();
    let before = cm.snapshot_arc();
    drop(cm);
    let again = open().await;
    assert_eq!(&*again.snapshot_arc(), &*before);
    assert!(!before.tenants.contains_key("tenant-000008"));
    let backend = EmbeddedBackend::new(dir.path());
    // `again` still holds the database open.
    assert!(backend.is_err(), "one process owns the data dir's database");
    drop(again);
    let backend = EmbeddedBackend::new(dir.path()).unwrap();
    assert_eq!(stored_tenant_count(&backend).unwrap(), 50);
}

/// `config.json` exactly as the previous version wrote it (pretty JSON, whole document).
const LEGACY_CONFIG_JSON: &str = r#"{
  "version": 41,
  "global": {
    "max_global_concurrent_requests": 50,
    "max_tenant_queue_size": 7,
    "queue_timeout_ms": 250,
    "max_keys_per_tenant": 1000000,
    "new_keys_per_second": 1000,
    "max_request_window_seconds": 31536000
  },
  "tenants": {
    "acme": {
      "weight": 3,
      "actions": {
        "login": {
          "max_requests": 5,
          "window_duration_seconds": 60.0
        }
      },
      "clients": {
        "vip": {
          "login": {
            "max_requests": 50,
            "window_duration_seconds": 0.5
          }
        }
      }
    },
    "beta": {
      "weight": 1,
      "actions": {},
      "clients": {},
      "max_keys": 10
    }
  }
}"#;

#[tokio::test]
async fn a_previous_versions_config_json_is_imported_on_first_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), LEGACY_CONFIG_JSON).unwrap();
    let expected: ConfigDocument = serde_json::from_str(LEGACY_CONFIG_JSON).unwrap();
    let cm = ConfigManager::open(Arc::new(EmbeddedBackend::new(dir.path()).unwrap()), None)
        .await
        .unwrap();
    assert_eq!(cm.snapshot().to_document(), expected);
    assert!(!dir.path().join("config.json").exists());
    assert!(dir.path().join("config.json.imported").exists());
    assert!(dir.path().join(DATABASE_FILE).exists());
    // Changes go on from the imported version, and survive a restart.
    let snap = cm.apply(set("acme", "search", 9)).await.unwrap();
    assert_eq!(snap.version, 42);
    drop(cm);
    let again = ConfigManager::open(Arc::new(EmbeddedBackend::new(dir.path()).unwrap()), None)
        .await
        .unwrap();
    assert_eq!(again.snapshot().version, 42);
    assert_eq!(again.snapshot().tenants["acme"].weight, 3);
    assert_eq!(again.snapshot().tenants["beta"].max_keys, Some(10));
}

#[tokio::test]
async fn a_crash_between_import_and_rename_does_not_import_twice() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), LEGACY_CONFIG_JSON).unwrap();
    let cm = ConfigManager::open(Arc::new(EmbeddedBackend::new(dir.path()).unwrap()), None)
        .await
        .unwrap();
    cm.apply(set("acme", "search", 9)).await.unwrap();
    drop(cm);
    // As if the rename had not happened: the old file is back next to the database.
    std::fs::rename(
        dir.path().join("config.json.imported"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let again = ConfigManager::open(Arc::new(EmbeddedBackend::new(dir.path()).unwrap()), None)
        .await
        .unwrap();
    assert_eq!(again.snapshot().version, 42, "the database wins");
    assert!(again.snapshot().tenants["acme"]
        .actions
        .contains_key("search"));
    assert!(!dir.path().join("config.json").exists());
}

#[tokio::test]
async fn a_corrupt_legacy_file_stops_the_import_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{\"version\": \"x\"").unwrap();
    let e = EmbeddedBackend::new(dir.path()).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Corrupt(m) if m.contains("config.json")),
        "{e:?}"
    );
    assert!(
        dir.path().join("config.json").exists(),
        "the file is left for the operator"
    );
}

/// The data dir removed under a running service: changes are refused (a handle to the removed
/// file would take writes no restart sees); once the directory is back, the next change stores
/// the whole configuration again and then itself, so a restart finds everything.
#[tokio::test]
async fn a_removed_data_dir_refuses_changes_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cm = ConfigManager::open(Arc::new(EmbeddedBackend::new(&data).unwrap()), None)
        .await
        .unwrap();
    cm.apply(set("a", "x", 1)).await.unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    let e = cm.apply(set("b", "x", 2)).await;
    assert!(matches!(e, Err(ConfigError::Persist(_))), "{e:?}");
    assert!(!cm.snapshot().tenants.contains_key("b"), "nothing applied");
    std::fs::create_dir_all(&data).unwrap();
    let snap = cm.apply(set("b", "x", 2)).await.unwrap();
    drop(cm);
    let again = ConfigManager::open(Arc::new(EmbeddedBackend::new(&data).unwrap()), None)
        .await
        .unwrap();
    assert_eq!(&*again.snapshot_arc(), &*snap);
    assert!(again.snapshot().tenants.contains_key("a"));
}
