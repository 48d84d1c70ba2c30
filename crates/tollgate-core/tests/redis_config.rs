//! The Redis configuration backend: versioned compare-and-set, and two managers (as two
//! instances would hold) writing through one Redis without losing each other's changes.

#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use redis_server::{skip_without_redis, RedisServer};
use tollgate_core::clock::SystemClock;
use tollgate_core::config::{
    Change, ConfigBackend, ConfigDocument, ConfigError, ConfigManager, GlobalSettings,
    RedisConfigBackend, MAX_VERSION,
};
use tollgate_core::redis_conn::{RedisConnection, RedisOptions};
use tollgate_core::store::MemoryStore;
use tollgate_core::{Limit, Limiter, StoreErrorPolicy};

async fn backend(url: String) -> Arc<RedisConfigBackend> {
    let conn = RedisConnection::connect(&RedisOptions::new(vec![url]))
        .await
        .unwrap();
    Arc::new(RedisConfigBackend::new(conn, "tg", Duration::from_secs(2)))
}

#[tokio::test]
async fn save_is_a_compare_and_set_on_the_version() {
    if skip_without_redis("save_is_a_compare_and_set_on_the_version") {
        return;
    }
    let server = RedisServer::start();
    let b = backend(server.url()).await;
    assert_eq!(b.load().await.unwrap(), None);
    assert_eq!(b.stored_version().await.unwrap(), 0);
    let mut doc = ConfigDocument {
        version: 1,
        ..ConfigDocument::default()
    };
    b.save(&doc, 0).await.unwrap();
    assert_eq!(b.stored_version().await.unwrap(), 1);
    // A writer that started from version 0 lost the race.
    doc.version = 2;
    assert_eq!(
        b.save(&doc, 0).await,
        Err(ConfigError::Conflict { stored: 1 })
    );
    b.save(&doc, 1).await.unwrap();
    assert_eq!(b.load().await.unwrap().unwrap().version, 2);
}

#[tokio::test]
async fn two_instances_writing_concurrently_keep_both_changes() {
    if skip_without_redis("two_instances_writing_concurrently_keep_both_changes") {
        return;
    }
    let server = RedisServer::start();
    let a = ConfigManager::open(backend(server.url()).await, None)
        .await
        .unwrap();
    let b = ConfigManager::open(backend(server.url()).await, None)
        .await
        .unwrap();
    assert_eq!(a.snapshot().version, 1);
    assert_eq!(
        b.snapshot().version,
        1,
        "the second instance adopted the stored one"
    );
    a.apply(Change::SetAction {
        tenant: "t".into(),
        action: "x".into(),
        limit: Limit::new(3, 1.0).unwrap(),
    })
    .await
    .unwrap();
    // B still holds version 1; its save conflicts, it reloads and reapplies on top of A's change.
    b.apply(Change::SetAction {
        tenant: "t".into(),
        action: "y".into(),
        limit: Limit::new(4, 1.0).unwrap(),
    })
    .await
    .unwrap();
    let snap = b.snapshot();
    assert_eq!(snap.version, 3);
    assert!(
        snap.resolve("t", "c", "x", None).is_some(),
        "A's change survived"
    );
    assert!(snap.resolve("t", "c", "y", None).is_some());
    assert!(a.refresh().await.unwrap());
    assert_eq!(a.snapshot().version, 3);
}

fn set_action(tenant: &str, action: &str, max: u64) -> Change {
    Change::SetAction {
        tenant: tenant.into(),
        action: action.into(),
        limit: Limit::new(max, 1.0).unwrap(),
    }
}

/// Issue 18 item 4 over Redis: B's change conflicts with A's newer configuration, B adopts it,
/// and the rebuilt change fails (not found). B's load manager must enforce what B now holds.
#[tokio::test]
async fn a_failed_change_after_a_conflict_still_reconfigures_admission() {
    if skip_without_redis("a_failed_change_after_a_conflict_still_reconfigures_admission") {
        return;
    }
    let server = RedisServer::start();
    let a = ConfigManager::open(backend(server.url()).await, None)
        .await
        .unwrap();
    let b = Arc::new(
        ConfigManager::open(backend(server.url()).await, None)
            .await
            .unwrap(),
    );
    let b = Limiter::new(
        b,
        Arc::new(MemoryStore::new(Arc::new(SystemClock), 1000)),
        StoreErrorPolicy::Allow,
    );
    b.update_config(set_action("t", "x", 3)).await.unwrap();
    assert!(a.refresh().await.unwrap());
    assert_eq!(b.load().snapshot().capacity, 1000);
    // A replaces everything: capacity 10, no tenant `t`.
    let theirs = ConfigDocument {
        global: GlobalSettings {
            max_global_concurrent_requests: 10,
            ..GlobalSettings::default()
        },
        ..ConfigDocument::default()
    };
    a.apply(Change::ReplaceAll(theirs)).await.unwrap();
    let r = b
        .update_config(Change::DeleteAction {
            tenant: "t".into(),
            action: "x".into(),
        })
        .await;
    assert!(matches!(r, Err(ConfigError::NotFound(_))), "{r:?}");
    assert_eq!(b.config().snapshot().version, 3);
    assert_eq!(
        b.config().snapshot().global.max_global_concurrent_requests,
        10
    );
    assert_eq!(
        b.load().snapshot().capacity,
        10,
        "admission must follow the adopted configuration"
    );
}

/// Issue 18 item 7: Redis loses the configuration; the instance that is behind (B, version 1)
/// restores its own first. A (version 3) must not conflict forever: it adopts the stored
/// configuration under a version above its own, and both instances agree again.
#[tokio::test]
async fn after_a_restore_by_an_instance_behind_every_instance_converges() {
    if skip_without_redis("after_a_restore_by_an_instance_behind_every_instance_converges") {
        return;
    }
    let server = RedisServer::start();
    let a = ConfigManager::open(backend(server.url()).await, None)
        .await
        .unwrap();
    let b_backend = backend(server.url()).await;
    let b = ConfigManager::open(b_backend.clone(), None).await.unwrap();
    a.apply(set_action("t", "x", 3)).await.unwrap();
    a.apply(set_action("t", "y", 4)).await.unwrap();
    assert_eq!((a.snapshot().version, b.snapshot().version), (3, 1));
    assert!(server.command(&["FLUSHALL"]).unwrap().contains("OK"));
    // B restores what it holds, as the server's sync task does when the key is missing.
    b_backend
        .save(&b.snapshot().to_document(), 0)
        .await
        .unwrap();
    assert_eq!(b_backend.stored_version().await.unwrap(), 1);

    // A's change lands on the stored configuration instead of failing on every attempt.
    let snap = a.apply(set_action("t", "z", 5)).await.unwrap();
    assert!(
        snap.version > 3,
        "A's version never goes back: {}",
        snap.version
    );
    assert!(snap.resolve("t", "c", "z", None).is_some());
    // What B restored (no x, y) is what A now builds on; Redis lost x and y.
    assert!(snap.resolve("t", "c", "x", None).is_none());
    assert!(b.refresh().await.unwrap());
    assert_eq!(&**b.snapshot(), &**a.snapshot());
    assert_eq!(b_backend.stored_version().await.unwrap(), snap.version);
    // Later changes from either side go through without conflicting forever.
    b.apply(set_action("t", "w", 6)).await.unwrap();
    assert!(a.refresh().await.unwrap());
    assert_eq!(&**b.snapshot(), &**a.snapshot());
}

/// Issue 18 item 7, through `refresh` (what the server's sync task calls): both instances notice
/// the missing configuration; one restores, the other adopts, whatever their order.
#[tokio::test]
async fn refresh_restores_a_lost_configuration_and_instances_agree() {
    if skip_without_redis("refresh_restores_a_lost_configuration_and_instances_agree") {
        return;
    }
    let server = RedisServer::start();
    let b_backend = backend(server.url()).await;
    let a = ConfigManager::open(backend(server.url()).await, None)
        .await
        .unwrap();
    let b = ConfigManager::open(b_backend.clone(), None).await.unwrap();
    a.apply(set_action("t", "x", 3)).await.unwrap();
    a.apply(set_action("t", "y", 4)).await.unwrap();
    server.command(&["FLUSHALL"]).unwrap();
    // The instance behind restores first.
    assert!(
        !b.refresh().await.unwrap(),
        "B stored its own; nothing changed for B"
    );
    assert_eq!(b_backend.stored_version().await.unwrap(), 1);
    assert!(
        a.refresh().await.unwrap(),
        "A adopted the restored configuration"
    );
    assert_eq!(a.snapshot().version, 4, "above A's own 3, never lower");
    assert!(b.refresh().await.unwrap());
    assert_eq!(&**b.snapshot(), &**a.snapshot());
    assert!(
        !a.refresh().await.unwrap() && !b.refresh().await.unwrap(),
        "settled"
    );

    // The instance ahead restores first: the other simply adopts the newer configuration.
    a.apply(set_action("t", "v", 7)).await.unwrap();
    server.command(&["FLUSHALL"]).unwrap();
    assert!(!a.refresh().await.unwrap());
    assert!(b.refresh().await.unwrap());
    assert_eq!(&**b.snapshot(), &**a.snapshot());
    assert!(b.snapshot().resolve("t", "c", "v", None).is_some());
}

/// Issue 19 item 4 (last sentence): a version of 2^64-1 set by hand in Redis is refused as
/// corrupt with a clear error; nothing wraps to 0 and nothing is rewritten.
#[tokio::test]
async fn a_stored_version_of_u64_max_is_refused_not_wrapped() {
    if skip_without_redis("a_stored_version_of_u64_max_is_refused_not_wrapped") {
        return;
    }
    let server = RedisServer::start();
    let b = backend(server.url()).await;
    let cm = ConfigManager::open(b.clone(), None).await.unwrap();
    let max = u64::MAX.to_string();
    let global = r#"{"max_global_concurrent_requests":5,"max_tenant_queue_size":1}"#;
    for (field_only, what) in [
        (true, "the version field"),
        (false, "version and global settings"),
    ] {
        server
            .command(&["HSET", "tg{config}:meta", "version", &max])
            .unwrap();
        if !field_only {
            server
                .command(&["HSET", "tg{config}:meta", "global", global])
                .unwrap();
        }
        let e = b.stored_version().await.unwrap_err();
        assert!(
            matches!(&e, ConfigError::Corrupt(m) if m.contains(&max) && m.contains("tg{config}:meta")),
            "{what}: {e:?}"
        );
        assert!(
            matches!(cm.refresh().await, Err(ConfigError::Corrupt(_))),
            "{what}"
        );
        let r = cm.apply(set_action("t", "x", 3)).await;
        assert!(matches!(r, Err(ConfigError::Corrupt(_))), "{what}: {r:?}");
        assert_eq!(cm.snapshot().version, 1, "{what}: nothing adopted");
        assert_eq!(
            cm.snapshot().global,
            GlobalSettings::default(),
            "{what}: nothing adopted"
        );
        let field = server
            .command(&["HGET", "tg{config}:meta", "version"])
            .unwrap();
        assert!(field.contains(&max), "{what}: nothing rewritten: {field:?}");
    }
    // Deleting the key is the repair: the next refresh stores the configuration in force again.
    server.command(&["DEL", "tg{config}:meta"]).unwrap();
    cm.refresh().await.unwrap();
    assert_eq!(b.stored_version().await.unwrap(), 1);
    cm.apply(set_action("t", "x", 3)).await.unwrap();
    assert_eq!(b.stored_version().await.unwrap(), 2);
}

/// The highest version tollgate accepts is stored and read exactly (Lua doubles would not), and a
/// change at it is refused instead of wrapping.
#[tokio::test]
async fn the_highest_version_is_exact_and_a_change_past_it_is_refused() {
    if skip_without_redis("the_highest_version_is_exact_and_a_change_past_it_is_refused") {
        return;
    }
    let server = RedisServer::start();
    let b = backend(server.url()).await;
    let top = ConfigDocument {
        version: MAX_VERSION,
        ..ConfigDocument::default()
    };
    b.save(&top, 0).await.unwrap();
    // One below and one above the stored version are both conflicts, not "equal as doubles".
    for wrong in [MAX_VERSION - 1, 1 << 53] {
        assert_eq!(
            b.save(&top, wrong).await,
            Err(ConfigError::Conflict {
                stored: MAX_VERSION
            })
        );
    }
    let cm = ConfigManager::open(b.clone(), None).await.unwrap();
    assert_eq!(cm.snapshot().version, MAX_VERSION);
    let r = cm.apply(set_action("t", "x", 3)).await;
    assert!(
        matches!(&r, Err(ConfigError::Corrupt(m)) if m.contains("maximum")),
        "{r:?}"
    );
    assert_eq!(b.stored_version().await.unwrap(), MAX_VERSION);
}
