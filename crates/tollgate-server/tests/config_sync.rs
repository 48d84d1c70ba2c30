//! The redis-mode sync task (`tollgate_server::config_sync`) over a real redis-server: after
//! Redis loses the configuration, instances restore and converge, whichever restores first.

#[path = "../../tollgate-core/tests/support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_server::{skip_without_redis, RedisServer};
use tollgate_core::clock::SystemClock;
use tollgate_core::config::{Change, ConfigManager, RedisConfigBackend};
use tollgate_core::redis_conn::{RedisConnection, RedisOptions};
use tollgate_core::store::MemoryStore;
use tollgate_core::{Limit, Limiter, StoreErrorPolicy};

async fn instance(url: &str) -> (Arc<Limiter>, Arc<RedisConfigBackend>) {
    let conn = RedisConnection::connect(&RedisOptions::new(vec![url.to_string()]))
        .await
        .unwrap();
    let backend = Arc::new(RedisConfigBackend::new(conn, "tg", Duration::from_secs(2)));
    let config = ConfigManager::open(backend.clone(), None).await.unwrap();
    let limiter = Arc::new(Limiter::new(
        Arc::new(config),
        Arc::new(MemoryStore::new(Arc::new(SystemClock), 1000)),
        StoreErrorPolicy::Allow,
    ));
    (limiter, backend)
}

fn set_action(action: &str) -> Change {
    Change::SetAction {
        tenant: "t".into(),
        action: action.into(),
        limit: Limit::new(3, 1.0).unwrap(),
    }
}

/// Waits (generously; this is not a speed check) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_converge_after_redis_loses_the_configuration() {
    if skip_without_redis("instances_converge_after_redis_loses_the_configuration") {
        return;
    }
    let server = RedisServer::start();
    let url = server.url();
    let (a, a_backend) = instance(&url).await;
    let (b, b_backend) = instance(&url).await;
    // A moves ahead to version 3 while B (not syncing yet) stays at 1; then Redis loses it all.
    a.update_config(set_action("x")).await.unwrap();
    a.update_config(set_action("y")).await.unwrap();
    server.command(&["FLUSHALL"]).unwrap();

    // B's sync task notices first and stores its own (version 1).
    let _b_sync =
        tollgate_server::config_sync::spawn(b.clone(), b_backend.clone(), vec![url.clone()]);
    let stored = || {
        let c = server
            .command(&["HGET", "tg{config}:meta", "version"])
            .unwrap_or_default();
        c.lines().nth(1).map(str::to_string)
    };
    eventually("B restores the configuration", || {
        stored().as_deref() == Some("1")
    })
    .await;

    // A's sync task finds an older version than its own and adopts it under version 4.
    let _a_sync = tollgate_server::config_sync::spawn(a.clone(), a_backend, vec![url.clone()]);
    eventually("A adopts the restored configuration", || {
        a.config().snapshot().version == 4
    })
    .await;
    eventually("B follows", || b.config().snapshot().version == 4).await;
    assert_eq!(&**a.config().snapshot(), &**b.config().snapshot());

    // Changes through either instance work again and reach the other.
    let snap = a.update_config(set_action("z")).await.unwrap();
    eventually("B applies A's change", || {
        b.config().snapshot().version == snap.version
    })
    .await;
    assert!(b.config().snapshot().resolve("t", "c", "z", None).is_some());
    b.update_config(set_action("w")).await.unwrap();
    eventually("A applies B's change", || {
        a.config().snapshot().resolve("t", "c", "w", None).is_some()
    })
    .await;
    assert_eq!(&**a.config().snapshot(), &**b.config().snapshot());
    assert_eq!(
        b_backend.stored_version().await.unwrap(),
        a.config().snapshot().version
    );
}
