//! The Redis configuration backend: versioned compare-and-set, and two managers (as two
//! instances would hold) writing through one Redis without losing each other's changes.

#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use redis_server::{skip_without_redis, RedisServer};
use tollgate_core::config::{
    Change, ConfigBackend, ConfigDocument, ConfigError, ConfigManager, RedisConfigBackend,
};
use tollgate_core::redis_conn::{RedisConnection, RedisOptions};
use tollgate_core::Limit;

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
