//! Corrupt Redis data (issue 19, item 4): a window key that holds a wrong type, a truncated, empty,
//! zeroed or 0xFF-filled value, or an edited header is a per-key error. The script resets the key,
//! the store answers `StoreError::Corrupt` for that one decision, the circuit breaker stays closed,
//! and every other key keeps exact answers.

#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;

use redis_server::{skip_without_redis, RedisServer};
use tollgate_core::config::{ConfigDocument, ConfigManager};
use tollgate_core::limiter::Outcome;
use tollgate_core::redis_conn::RedisOptions;
use tollgate_core::store::{RedisStore, RedisStoreOptions, Store, StoreError};
use tollgate_core::{
    DecisionRequest, Engine, Limit, LimitError, Limiter, RateKey, StoreErrorPolicy,
};

/// Header layout (see `redis_policy.lua`): magic and version, then big-endian u64 fields.
const OFF_HEAD: usize = 8;
const OFF_COUNT: usize = 16;
const OFF_EVICTED: usize = 48;
const OFF_LAST_C: usize = 72;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn store_for(server: &RedisServer) -> RedisStore {
    RedisStore::connect(
        &RedisOptions::new(vec![server.url()]),
        RedisStoreOptions::default(),
    )
    .await
    .expect("connect to the test redis")
}

/// A plain blocking connection for writing raw (binary) values behind the store's back.
fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn get_bytes(c: &mut redis::Connection, key: &[u8]) -> Vec<u8> {
    redis::cmd("GET").arg(key).query(c).unwrap()
}

fn set_bytes(c: &mut redis::Connection, key: &[u8], value: &[u8]) {
    let _: () = redis::cmd("SET").arg(key).arg(value).query(c).unwrap();
}

fn fresh_limiter(store: RedisStore, policy: StoreErrorPolicy) -> Engine {
    let config = ConfigManager::in_memory(ConfigDocument::default()).unwrap();
    Engine::new(Arc::new(Limiter::new(
        Arc::new(config),
        Arc::new(store),
        policy,
    )))
}

fn req<'a>(key: RateKey<'a>, l: Limit) -> DecisionRequest<'a> {
    DecisionRequest {
        key,
        requested: Some(l),
        cost: 1,
    }
}

/// The ways a value can be corrupt; each must be detected, reported for its key only and repaired.
fn corruptions(original: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let copy_field = |from: usize, to: usize| {
        let mut v = original.to_vec();
        let f: Vec<u8> = v[from..from + 8].to_vec();
        v[to..to + 8].copy_from_slice(&f);
        v
    };
    vec![
        ("empty", Vec::new()),
        ("shorter than the header", original[..20].to_vec()),
        ("all zeros", vec![0u8; original.len()]),
        ("all 0xFF", vec![0xFFu8; original.len()]),
        ("truncated record", original[..original.len() - 5].to_vec()),
        ("count edited down to head", copy_field(OFF_HEAD, OFF_COUNT)),
        (
            "evicted edited up to last",
            copy_field(OFF_LAST_C, OFF_EVICTED),
        ),
        ("old format (no magic)", original[8..].to_vec()),
        ("a newer format version", {
            let mut v = original.to_vec();
            if v.len() >= 8 {
                v[7] = 2;
            }
            v
        }),
    ]
}

/// What the reason of some cases must say (the scripts read magic and version as one field and
/// tell the two apart only on a mismatch).
fn expected_reason(case: &str) -> Option<&'static str> {
    match case {
        "old format (no magic)" => Some("no tollgate header"),
        "a newer format version" => Some("unknown format version"),
        _ => None,
    }
}

/// Each corruption of a full key: the next decision on that key is `Corrupt` (not an empty log that
/// admits again), the key is reset, and the breaker never opens.
#[test]
fn corrupt_values_are_detected_reset_and_never_read_as_an_empty_log() {
    if skip_without_redis("corrupt_values_are_detected") {
        return;
    }
    let server = RedisServer::start();
    let rt = rt();
    rt.block_on(async {
        let store = store_for(&server).await;
        let mut conn = raw(&server);
        let l = Limit::new(4, 600.0).unwrap();
        let cases = corruptions(&[0u8; 200]).len();
        for i in 0..cases {
            let tenant = format!("victim{i}");
            let key = RateKey::new(&tenant, "c", "a");
            for _ in 0..4 {
                assert!(store.check_and_consume(key, l, 1).await.unwrap().allowed);
            }
            assert!(!store.check_and_consume(key, l, 1).await.unwrap().allowed);
            let name = store.redis_key(key);
            let original = get_bytes(&mut conn, &name);
            let (case, value) = corruptions(&original).swap_remove(i);
            set_bytes(&mut conn, &name, &value);
            match store.check_and_consume(key, l, 1).await {
                Err(StoreError::Corrupt { key: k, reason }) => {
                    assert!(k.contains(&tenant), "{case}: the error names the key: {k}");
                    assert!(!reason.is_empty());
                    if let Some(want) = expected_reason(case) {
                        assert!(reason.contains(want), "{case}: reason {reason:?}");
                    }
                }
                other => panic!("{case}: expected Corrupt, got {other:?}"),
            }
            assert!(
                store.is_healthy(),
                "{case}: a corrupt key never opens the breaker"
            );
            // Repaired: the key was reset, and decisions on it work again.
            let v = store.check_and_consume(key, l, 1).await.unwrap();
            assert!(
                v.allowed && v.used == 1,
                "{case}: reset key answers exactly: {v:?}"
            );
        }
    });
}

/// A list at one tenant's key: before, every decision on it was a store failure that opened the
/// shared breaker, and another tenant limited to 5 per 600 s was failed open. Now that key is a
/// per-key error (answered per policy once, then repaired) and the other tenant stays exact.
#[test]
fn a_wrong_type_key_is_a_per_key_error_and_another_tenant_stays_exact() {
    if skip_without_redis("a_wrong_type_key_is_a_per_key_error") {
        return;
    }
    let server = RedisServer::start();
    let rt = rt();
    rt.block_on(async {
        let store = store_for(&server).await;
        let mut conn = raw(&server);
        let limiter = fresh_limiter(store.clone(), StoreErrorPolicy::Allow);
        let l = Limit::new(5, 600.0).unwrap();
        let bad = RateKey::new("attacker", "c", "a");
        let victim = RateKey::new("victim", "c", "a");
        let mut allowed = 0;
        for round in 0..10 {
            // Whoever can write Redis puts a list at the key before every decision on it.
            let _: () = redis::cmd("DEL")
                .arg(store.redis_key(bad))
                .query(&mut conn)
                .unwrap();
            let _: () = redis::cmd("RPUSH")
                .arg(store.redis_key(bad))
                .arg("x")
                .query(&mut conn)
                .unwrap();
            let d = limiter.check_and_consume(req(bad, l)).await.unwrap();
            assert!(
                matches!(d.outcome, Outcome::FailOpen { .. }),
                "round {round}: the corrupt key's decision follows --on-store-error allow"
            );
            let d = limiter.check_and_consume(req(victim, l)).await.unwrap();
            match d.outcome {
                Outcome::Decided(v) => allowed += v.allowed as u32,
                Outcome::FailOpen { .. } => panic!("round {round}: the victim was failed open"),
            }
            assert!(store.is_healthy(), "round {round}: breaker still closed");
        }
        assert_eq!(allowed, 5, "the victim got exactly its limit");
        // The last list was removed (reset); the fail-open decision wrote nothing.
        let t: String = redis::cmd("TYPE")
            .arg(store.redis_key(bad))
            .query(&mut conn)
            .unwrap();
        assert_eq!(t, "none");
    });
}

/// With `--on-store-error deny`, a corrupt key's decision is the store error (503 upstream).
#[test]
fn a_corrupt_key_is_denied_under_the_deny_policy() {
    if skip_without_redis("a_corrupt_key_is_denied_under_the_deny_policy") {
        return;
    }
    let server = RedisServer::start();
    let rt = rt();
    rt.block_on(async {
        let store = store_for(&server).await;
        let mut conn = raw(&server);
        let limiter = fresh_limiter(store.clone(), StoreErrorPolicy::Deny);
        let l = Limit::new(5, 600.0).unwrap();
        let key = RateKey::new("t", "c", "a");
        set_bytes(&mut conn, &store.redis_key(key), &[0xFF; 200]);
        match limiter.check_and_consume(req(key, l)).await {
            Err(LimitError::Store(StoreError::Corrupt { .. })) => {}
            other => panic!("expected a Corrupt store error, got {other:?}"),
        }
        // Status reads detect it too.
        set_bytes(&mut conn, &store.redis_key(key), b"");
        assert!(matches!(
            store.status(key, l).await,
            Err(StoreError::Corrupt { .. })
        ));
        assert!(store.status(key, l).await.unwrap().used == 0);
        assert!(store.is_healthy());
    });
}
