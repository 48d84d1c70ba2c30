//! Tenant API keys through the configuration manager: issued, stored hashed, verified per tenant,
//! revoked, and carried by the configuration document.

use tollgate_core::config::{Change, ConfigDocument, ConfigError, ConfigManager, Snapshot};
use tollgate_core::credentials::{authorize, issue, Access, IssuedKey};

async fn add(cm: &ConfigManager, tenant: &str, name: &str) -> IssuedKey {
    let k = issue(name, 1_700_000_000).unwrap();
    cm.apply(Change::AddApiKey {
        tenant: tenant.into(),
        key_id: k.key_id.clone(),
        record: k.record.clone(),
    })
    .await
    .unwrap();
    k
}

#[tokio::test]
async fn keys_grant_their_own_tenant_only() {
    let cm = ConfigManager::in_memory(ConfigDocument::default()).unwrap();
    let a = add(&cm, "alpha", "svc-a").await;
    let b = add(&cm, "beta", "svc-b").await;
    let snap = cm.snapshot();
    assert_eq!(authorize(&snap, "alpha", a.key()), Access::Granted);
    assert_eq!(authorize(&snap, "beta", b.key()), Access::Granted);
    assert_eq!(authorize(&snap, "alpha", b.key()), Access::OtherTenant);
    assert_eq!(authorize(&snap, "gamma", a.key()), Access::OtherTenant);

    // A right id with a wrong secret, an unknown id, garbage: all the same answer.
    let mut wrong = a.key().to_string();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let unknown = issue("", 0).unwrap();
    for k in [wrong.as_str(), unknown.key(), "", "Bearer", "tg_x_y"] {
        assert_eq!(authorize(&snap, "alpha", k), Access::Unauthenticated, "{k}");
        assert_eq!(authorize(&snap, "beta", k), Access::Unauthenticated, "{k}");
    }

    // Stored hashed: the document holds no secret.
    let doc = snap.to_document();
    let json = serde_json::to_string(&doc).unwrap();
    assert!(!json.contains(&a.key()[20..]), "the secret is not stored");
    assert_eq!(doc.tenants["alpha"].api_keys[&a.key_id].name, "svc-a");
    // And the document round-trips, keys included.
    let back = Snapshot::from_document(&doc).unwrap();
    assert_eq!(&back, &**snap);
    assert_eq!(authorize(&back, "alpha", a.key()), Access::Granted);
}

#[tokio::test]
async fn revoked_keys_stop_working_and_revoking_twice_is_not_found() {
    let cm = ConfigManager::in_memory(ConfigDocument::default()).unwrap();
    let a = add(&cm, "alpha", "").await;
    let keep = add(&cm, "alpha", "").await;
    let remove = || Change::RemoveApiKey {
        tenant: "alpha".into(),
        key_id: a.key_id.clone(),
    };
    cm.apply(remove()).await.unwrap();
    assert_eq!(
        authorize(&cm.snapshot(), "alpha", a.key()),
        Access::Unauthenticated
    );
    assert_eq!(
        authorize(&cm.snapshot(), "alpha", keep.key()),
        Access::Granted
    );
    assert!(matches!(
        cm.apply(remove()).await,
        Err(ConfigError::NotFound(_))
    ));
    // A tenant that only held keys is forgotten with its last key.
    cm.apply(Change::RemoveApiKey {
        tenant: "alpha".into(),
        key_id: keep.key_id.clone(),
    })
    .await
    .unwrap();
    assert!(!cm.snapshot().tenants.contains_key("alpha"));
    assert!(cm.snapshot().key_owners.is_empty());
}

#[tokio::test]
async fn invalid_or_duplicate_keys_are_refused() {
    let cm = ConfigManager::in_memory(ConfigDocument::default()).unwrap();
    let a = add(&cm, "alpha", "").await;
    // The same id for another tenant.
    let dup = cm
        .apply(Change::AddApiKey {
            tenant: "beta".into(),
            key_id: a.key_id.clone(),
            record: a.record.clone(),
        })
        .await;
    assert!(matches!(dup, Err(ConfigError::Invalid(_))), "{dup:?}");
    // A malformed hash.
    let mut bad = issue("", 0).unwrap();
    bad.record.sha256 = "zz".into();
    let r = cm
        .apply(Change::AddApiKey {
            tenant: "beta".into(),
            key_id: bad.key_id.clone(),
            record: bad.record.clone(),
        })
        .await;
    assert!(matches!(r, Err(ConfigError::Invalid(_))), "{r:?}");

    // A document holding one key id under two tenants is refused.
    let mut doc = cm.snapshot().to_document();
    let rec = doc.tenants["alpha"].api_keys[&a.key_id].clone();
    doc.tenants
        .entry("beta".into())
        .or_default()
        .api_keys
        .insert(a.key_id.clone(), rec);
    let problems = Snapshot::from_document(&doc).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("more than one tenant")),
        "{problems:?}"
    );
}

/// A reloaded file (`Change::ReplaceAll`) that lists no keys for a tenant keeps the keys the
/// tenant holds, decided under the writer lock against the configuration in force; keys a file
/// does list replace the tenant's.
#[tokio::test]
async fn a_replacement_keeps_keys_it_does_not_list() {
    let cm = ConfigManager::in_memory(ConfigDocument::default()).unwrap();
    let a = add(&cm, "alpha", "svc-a").await;
    let b = add(&cm, "beta", "svc-b").await;
    let mut file: ConfigDocument =
        toml::from_str("[tenants.alpha]\nweight = 3\n[tenants.gamma]\nweight = 2\n").unwrap();
    let replacement = issue("from-file", 1_700_000_000).unwrap();
    file.tenants
        .entry("beta".into())
        .or_default()
        .api_keys
        .insert(replacement.key_id.clone(), replacement.record.clone());
    cm.apply(Change::ReplaceAll(file)).await.unwrap();
    let snap = cm.snapshot();
    assert_eq!(snap.tenants["alpha"].weight, 3, "the file applied");
    assert_eq!(authorize(&snap, "alpha", a.key()), Access::Granted, "kept");
    assert_eq!(
        authorize(&snap, "beta", b.key()),
        Access::Unauthenticated,
        "replaced by the file's key"
    );
    assert_eq!(authorize(&snap, "beta", replacement.key()), Access::Granted);
}
