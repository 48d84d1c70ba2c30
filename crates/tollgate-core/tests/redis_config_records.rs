//! Issue 17, Redis side: per-tenant records, compare-and-set per tenant, changes read as deltas
//! from the change stream (a gap reloads everything), batches all or nothing, chunked loads, and
//! the import of a configuration stored by the previous version (one hash field).

#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use redis_server::{skip_without_redis, RedisServer};
use tollgate_core::config::{
    Change, Commit, ConfigBackend, ConfigDocument, ConfigError, ConfigManager, GlobalPatch,
    RedisConfigBackend, Snapshot,
};
use tollgate_core::redis_conn::{RedisConnection, RedisOptions};
use tollgate_core::Limit;

async fn backend(url: String) -> Arc<RedisConfigBackend> {
    let mut opts = RedisOptions::new(vec![url]);
    // What is checked here is what gets stored, not latency: a loaded machine must not turn a
    // slow answer into a failure.
    opts.command_timeout = Duration::from_secs(5);
    let conn = RedisConnection::connect(&opts).await.unwrap();
    Arc::new(RedisConfigBackend::new(conn, "tg", Duration::from_secs(5)))
}

fn set_action(tenant: &str, action: &str, max: u64) -> Change {
    Change::SetAction {
        tenant: tenant.into(),
        action: action.into(),
        limit: Limit::new(max, 1.0).unwrap(),
    }
}

fn has(snap: &Snapshot, tenant: &str, action: &str, max: u64) -> bool {
    snap.resolve(tenant, "c", action, None)
        .is_some_and(|(l, _)| l.max_requests == max)
}

/// `base` with `tenant`'s action `a` set to `max`, under `base.version + 1`: the snapshot a
/// writer holding `base` commits.
fn changed(base: &Snapshot, tenants: &[(&str, u64)]) -> Snapshot {
    let mut doc = base.to_document();
    for (tenant, max) in tenants {
        let t = doc.tenants.entry(tenant.to_string()).or_default();
        t.actions.insert(
            "a".into(),
            serde_json::from_value(
                serde_json::json!({"max_requests": max, "window_duration_seconds": 1.0}),
            )
            .unwrap(),
        );
    }
    doc.version = base.version + 1;
    Snapshot::from_document(&doc).unwrap()
}

fn ids(tenants: &[(&str, u64)]) -> Vec<String> {
    tenants.iter().map(|(t, _)| t.to_string()).collect()
}

async fn commit(
    b: &RedisConfigBackend,
    base: &Snapshot,
    tenants: &[(&str, u64)],
) -> Result<u64, ConfigError> {
    let next = changed(base, tenants);
    let touched = ids(tenants);
    b.commit_records(
        &Commit {
            next: &next,
            global: false,
            tenants: &touched,
        },
        base.version,
    )
    .await
}

/// Opens a manager over a fresh backend on `url` holding tenants `t0..tN` (one action each).
async fn seeded(url: &str, n: usize) -> (ConfigManager, Arc<RedisConfigBackend>) {
    let b = backend(url.to_string()).await;
    let cm = ConfigManager::open(b.clone(), None).await.unwrap();
    if n > 0 {
        let batch = (0..n)
            .map(|i| set_action(&format!("t{i}"), "a", 10))
            .collect();
        cm.apply(Change::Batch(batch)).await.unwrap();
    }
    (cm, b)
}

#[tokio::test]
async fn writers_to_different_tenants_never_conflict() {
    if skip_without_redis("writers_to_different_tenants_never_conflict") {
        return;
    }
    let server = RedisServer::start();
    let (a, _) = seeded(&server.url(), 0).await;
    let b_backend = backend(server.url()).await;
    let b = ConfigManager::open(b_backend.clone(), None).await.unwrap();
    let base = b.snapshot_arc();
    a.apply(set_action("x", "a", 1)).await.unwrap();
    assert_eq!(a.snapshot().version, 2);
    // B still builds on version 1; tenant y was not touched since, so its write goes in.
    assert_eq!(commit(&b_backend, &base, &[("y", 2)]).await, Ok(3));
    // Through the manager too: the change lands and B catches up with A's change with it.
    let snap = b.apply(set_action("z", "a", 3)).await.unwrap();
    assert_eq!(snap.version, 4);
    assert!(has(&snap, "x", "a", 1) && has(&snap, "y", "a", 2) && has(&snap, "z", "a", 3));
    assert!(a.refresh().await.unwrap());
    assert_eq!(&**a.snapshot(), &**b.snapshot());
}

#[tokio::test]
async fn the_same_tenant_conflicts_and_the_manager_redoes_the_change_as_before() {
    if skip_without_redis("the_same_tenant_conflicts_and_the_manager_redoes_the_change_as_before") {
        return;
    }
    let server = RedisServer::start();
    let (a, _) = seeded(&server.url(), 0).await;
    let b_backend = backend(server.url()).await;
    let b = ConfigManager::open(b_backend.clone(), None).await.unwrap();
    let base = b.snapshot_arc();
    a.apply(set_action("x", "a", 1)).await.unwrap();
    assert_eq!(
        commit(&b_backend, &base, &[("x", 9)]).await,
        Err(ConfigError::Conflict { stored: 2 }),
        "x changed after version 1"
    );
    // A removed tenant conflicts too (its version is kept after the record is gone).
    a.apply(Change::DeleteTenant { tenant: "x".into() })
        .await
        .unwrap();
    assert_eq!(
        commit(&b_backend, &base, &[("x", 9)]).await,
        Err(ConfigError::Conflict { stored: 3 })
    );
    // Global settings are a record of their own.
    let stale = b.snapshot_arc();
    a.apply(Change::Global(GlobalPatch {
        max_global_concurrent_requests: Some(77),
        ..Default::default()
    }))
    .await
    .unwrap();
    let mut next = (*stale).clone();
    next.version += 1;
    next.global.max_global_concurrent_requests = 5;
    let r = b_backend
        .commit_records(
            &Commit {
                next: &next,
                global: true,
                tenants: &[],
            },
            stale.version,
        )
        .await;
    assert_eq!(r, Err(ConfigError::Conflict { stored: 4 }));
    // As today: the manager adopts the stored configuration and redoes the change on it.
    let snap = b.apply(set_action("x", "b", 5)).await.unwrap();
    assert_eq!(snap.version, 5);
    assert!(has(&snap, "x", "b", 5) && !has(&snap, "x", "a", 1));
    assert_eq!(snap.global.max_global_concurrent_requests, 77);
}

#[tokio::test]
async fn another_instances_change_is_read_as_a_delta() {
    if skip_without_redis("another_instances_change_is_read_as_a_delta") {
        return;
    }
    let server = RedisServer::start();
    let (a, _) = seeded(&server.url(), 50).await;
    let b_backend = backend(server.url()).await;
    let b = ConfigManager::open(b_backend.clone(), None).await.unwrap();
    let start = b_backend.load_stats();
    assert_eq!((start.full_loads, start.records_read), (1, 50));
    a.apply(set_action("t7", "a", 99)).await.unwrap();
    a.apply(Change::DeleteTenant {
        tenant: "t8".into(),
    })
    .await
    .unwrap();
    a.apply(Change::Global(GlobalPatch {
        max_tenant_queue_size: Some(3),
        ..Default::default()
    }))
    .await
    .unwrap();
    server.command(&["CONFIG", "RESETSTAT"]).unwrap();
    assert!(b.refresh().await.unwrap());
    let after = b_backend.load_stats();
    assert_eq!(after.full_loads, 1, "no full reload");
    assert_eq!(after.deltas, 1);
    assert_eq!(
        after.records_read - start.records_read,
        1,
        "only t7's record is read (t8 is gone, global is not a tenant record)"
    );
    let stats = server.command(&["INFO", "commandstats"]).unwrap();
    assert!(!stats.contains("cmdstat_hscan"), "{stats}");
    assert_eq!(&**b.snapshot(), &**a.snapshot());
    assert!(has(&b.snapshot(), "t7", "a", 99));
    assert!(b.snapshot().tenants.get("t8").is_none());
    assert_eq!(b.snapshot().global.max_tenant_queue_size, 3);
    // Nothing new: one small read, nothing changes.
    assert!(!b.refresh().await.unwrap());
    assert_eq!(b_backend.load_stats().records_read, after.records_read);
}

#[tokio::test]
async fn a_gap_in_the_change_stream_falls_back_to_a_full_reload() {
    if skip_without_redis("a_gap_in_the_change_stream_falls_back_to_a_full_reload") {
        return;
    }
    let server = RedisServer::start();
    let (a, _) = seeded(&server.url(), 20).await;
    let b_backend = backend(server.url()).await;
    let b = ConfigManager::open(b_backend.clone(), None).await.unwrap();
    a.apply(set_action("t3", "a", 33)).await.unwrap();
    a.apply(set_action("t4", "a", 44)).await.unwrap();
    // The entries B needs are trimmed away (as MAXLEN does to an instance far behind).
    server
        .command(&["XTRIM", "tg{config}:changes", "MAXLEN", "1"])
        .unwrap();
    assert!(b.refresh().await.unwrap());
    let s = b_backend.load_stats();
    assert_eq!((s.full_loads, s.deltas), (2, 0));
    assert_eq!(&**b.snapshot(), &**a.snapshot());
    // The stream is lost altogether: a version jump with no entries.
    server.command(&["DEL", "tg{config}:changes"]).unwrap();
    a.apply(set_action("t5", "a", 55)).await.unwrap();
    server.command(&["DEL", "tg{config}:changes"]).unwrap();
    assert!(b.refresh().await.unwrap());
    assert_eq!(b_backend.load_stats().full_loads, 3);
    assert_eq!(&**b.snapshot(), &**a.snapshot());
    // And after the reload, deltas again.
    a.apply(set_action("t6", "a", 66)).await.unwrap();
    assert!(b.refresh().await.unwrap());
    assert_eq!(b_backend.load_stats().deltas, 1);
    assert_eq!(&**b.snapshot(), &**a.snapshot());
}

/// A bulk-string reply's value ("" for nil).
fn hget(server: &RedisServer, key: &str, field: &str) -> String {
    let raw = server.command(&["HGET", key, field]).unwrap_or_default();
    raw.split("\r\n").nth(1).unwrap_or_default().to_string()
}

/// An integer reply's value.
fn int(server: &RedisServer, args: &[&str]) -> i64 {
    let raw = server.command(args).unwrap_or_default();
    raw.trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or_else(|_| panic!("{args:?}: not an integer reply: {raw:?}"))
}

#[tokio::test]
async fn a_batch_is_stored_all_or_nothing_under_one_version() {
    if skip_without_redis("a_batch_is_stored_all_or_nothing_under_one_version") {
        return;
    }
    let server = RedisServer::start();
    let (a, _) = seeded(&server.url(), 3).await;
    assert_eq!(a.snapshot().version, 2, "the seeding batch is one version");
    let b_backend = backend(server.url()).await;
    let b = ConfigManager::open(b_backend.clone(), None).await.unwrap();
    let base = b.snapshot_arc();
    a.apply(set_action("t1", "a", 11)).await.unwrap();
    let before = (
        hget(&server, "tg{config}:tenants", "t0"),
        hget(&server, "tg{config}:tenants", "t2"),
    );
    // B's batch touches t0, t1, t2; t1 changed under it: nothing of it is stored.
    let r = commit(&b_backend, &base, &[("t0", 100), ("t1", 101), ("t2", 102)]).await;
    assert_eq!(r, Err(ConfigError::Conflict { stored: 3 }));
    assert_eq!(
        (
            hget(&server, "tg{config}:tenants", "t0"),
            hget(&server, "tg{config}:tenants", "t2"),
        ),
        before
    );
    assert_eq!(hget(&server, "tg{config}:meta", "version"), "3");
    // A bulk batch (staged in chunks) goes in whole, under one version.
    let many: Vec<(String, u64)> = (0..2500).map(|i| (format!("bulk{i:05}"), 7)).collect();
    let many: Vec<(&str, u64)> = many.iter().map(|(t, m)| (t.as_str(), *m)).collect();
    assert_eq!(
        commit(&b_backend, &base, &many).await,
        Err(ConfigError::Conflict { stored: 3 }),
        "a bulk batch is checked against the version"
    );
    assert_eq!(int(&server, &["HLEN", "tg{config}:tenants"]), 3);
    let keys = server.command(&["KEYS", "tg{config}:staging*"]).unwrap();
    assert_eq!(keys.trim(), "*0", "refused staging removed: {keys:?}");
    assert!(b.refresh().await.unwrap());
    let fresh = b.snapshot_arc();
    assert_eq!(commit(&b_backend, &fresh, &many).await, Ok(4));
    assert_eq!(int(&server, &["HLEN", "tg{config}:tenants"]), 2503);
    assert!(a.refresh().await.unwrap());
    assert_eq!(a.snapshot().version, 4);
    assert!(has(&a.snapshot(), "bulk02499", "a", 7));
    assert_eq!(a.snapshot().tenants.len(), 2503);
}

#[tokio::test]
async fn a_change_of_more_than_ten_thousand_tenants_is_swapped_in_whole() {
    if skip_without_redis("a_change_of_more_than_ten_thousand_tenants_is_swapped_in_whole") {
        return;
    }
    let server = RedisServer::start();
    let (a, _) = seeded(&server.url(), 3).await;
    let b_backend = backend(server.url()).await;
    let b = ConfigManager::open(b_backend.clone(), None).await.unwrap();
    let stale = b.snapshot_arc();
    a.apply(set_action("t1", "a", 11)).await.unwrap();
    let many: Vec<(String, u64)> = (0..10_001).map(|i| (format!("big{i:05}"), 5)).collect();
    let many: Vec<(&str, u64)> = many.iter().map(|(t, m)| (t.as_str(), *m)).collect();
    // Built on a version that is no longer stored: refused whole, staging removed.
    assert_eq!(
        commit(&b_backend, &stale, &many).await,
        Err(ConfigError::Conflict { stored: 3 })
    );
    assert_eq!(int(&server, &["HLEN", "tg{config}:tenants"]), 3);
    let keys = server.command(&["KEYS", "tg{config}:staging*"]).unwrap();
    assert_eq!(keys.trim(), "*0", "refused staging removed: {keys:?}");
    // On the stored version: every tenant of the new configuration is stored, untouched ones
    // included, under one version that is also the floor of every tenant's version (the
    // per-tenant versions start over), as a whole replacement.
    assert!(b.refresh().await.unwrap());
    let fresh = b.snapshot_arc();
    assert_eq!(commit(&b_backend, &fresh, &many).await, Ok(4));
    assert_eq!(int(&server, &["HLEN", "tg{config}:tenants"]), 10_004);
    assert_eq!(hget(&server, "tg{config}:meta", "floor"), "4");
    assert_eq!(int(&server, &["EXISTS", "tg{config}:tenant-versions"]), 0);
    assert_eq!(
        int(&server, &["TTL", "tg{config}:tenants"]),
        -1,
        "staging TTL dropped"
    );
    assert!(a.refresh().await.unwrap());
    let snap = a.snapshot_arc();
    assert_eq!(snap.version, 4);
    assert_eq!(snap.tenants.len(), 10_004);
    assert!(
        has(&snap, "t1", "a", 11) && has(&snap, "t0", "a", 10) && has(&snap, "big10000", "a", 5)
    );
    // A writer still holding version 3 conflicts whatever tenant it touches; the manager redoes
    // its change on version 4, and per-tenant versions work again after it.
    assert_eq!(
        commit(&b_backend, &stale, &[("t2", 12)]).await,
        Err(ConfigError::Conflict { stored: 4 })
    );
    assert_eq!(a.apply(set_action("t2", "a", 12)).await.unwrap().version, 5);
    assert_eq!(hget(&server, "tg{config}:tenant-versions", "t2"), "5");
    assert!(b.refresh().await.unwrap());
    assert_eq!(&**a.snapshot(), &**b.snapshot());
}

#[tokio::test]
async fn a_start_loads_in_chunks() {
    if skip_without_redis("a_start_loads_in_chunks") {
        return;
    }
    let server = RedisServer::start();
    let (a, _) = seeded(&server.url(), 3500).await;
    server.command(&["CONFIG", "RESETSTAT"]).unwrap();
    let b_backend = backend(server.url()).await;
    let b = ConfigManager::open(b_backend.clone(), None).await.unwrap();
    assert_eq!(&**b.snapshot(), &**a.snapshot());
    assert_eq!(b_backend.load_stats().records_read, 3500);
    let stats = server.command(&["INFO", "commandstats"]).unwrap();
    let calls: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_hscan:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(calls >= 4, "3500 records in chunks of about 1000: {stats}");
    assert!(!stats.contains("cmdstat_hgetall"), "{stats}");
}

/// How the previous version stored the configuration: one hash, `version` and the whole
/// document as JSON in `doc` (written here literally, as its save script did).
const LEGACY_DOC: &str = r#"{"version":7,"global":{"max_global_concurrent_requests":40,"max_tenant_queue_size":5,"queue_timeout_ms":300},"tenants":{"acme":{"weight":2,"actions":{"api_call":{"max_requests":3,"window_duration_seconds":1.5}},"clients":{"c1":{"api_call":{"max_requests":9,"window_duration_seconds":60.0}}}},"beta":{"weight":1,"actions":{"upload":{"max_requests":100,"window_duration_seconds":3600.0}},"clients":{}}}}"#;

#[tokio::test]
async fn a_document_stored_by_the_previous_version_is_imported_once() {
    if skip_without_redis("a_document_stored_by_the_previous_version_is_imported_once") {
        return;
    }
    let server = RedisServer::start();
    server
        .command(&["HSET", "tg{}:config", "version", "7", "doc", LEGACY_DOC])
        .unwrap();
    let b = backend(server.url()).await;
    let cm = ConfigManager::open(b.clone(), Some(ConfigDocument::default()))
        .await
        .unwrap();
    let snap = cm.snapshot();
    assert_eq!(snap.version, 7);
    assert_eq!(snap.global.max_global_concurrent_requests, 40);
    assert!(has(&snap, "acme", "api_call", 3));
    assert_eq!(
        snap.resolve("acme", "c1", "api_call", None)
            .unwrap()
            .0
            .max_requests,
        9
    );
    assert!(has(&snap, "beta", "upload", 100));
    assert_eq!(snap.tenants["acme"].weight, 2);
    // Stored as per-tenant records; the old key kept under another name, then gone.
    assert_eq!(int(&server, &["HLEN", "tg{config}:tenants"]), 2);
    assert_eq!(int(&server, &["EXISTS", "tg{}:config"]), 0);
    assert!(hget(&server, "tg{}:config:imported", "doc").contains("acme"));
    // Changes go on from the imported version; a restart does not import again.
    cm.apply(set_action("acme", "api_call", 4)).await.unwrap();
    let again = ConfigManager::open(backend(server.url()).await, None)
        .await
        .unwrap();
    assert_eq!(again.snapshot().version, 8);
    assert!(has(&again.snapshot(), "acme", "api_call", 4));
}

#[tokio::test]
async fn a_corrupt_document_of_the_previous_version_stops_the_import() {
    if skip_without_redis("a_corrupt_document_of_the_previous_version_stops_the_import") {
        return;
    }
    let server = RedisServer::start();
    server
        .command(&[
            "HSET",
            "tg{}:config",
            "version",
            "7",
            "doc",
            "{\"version\":7,",
        ])
        .unwrap();
    let r = ConfigManager::open(backend(server.url()).await, None).await;
    assert!(
        matches!(&r, Err(ConfigError::Corrupt(m)) if m.contains("tg{}:config")),
        "{:?}",
        r.err()
    );
    assert_eq!(int(&server, &["EXISTS", "tg{}:config"]), 1);
    assert_eq!(int(&server, &["EXISTS", "tg{config}:meta"]), 0);
}
