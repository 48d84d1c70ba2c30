//! Redis-store specifics beyond the shared conformance suite: the Lua script against `WindowLog`
//! decision by decision, script reloading, key expiry, memory per logged request, the circuit
//! breaker across a Redis crash, and Redis Cluster.

#[path = "support/redis_server.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redis_server::{skip_without_redis, RedisCluster, RedisServer};
use tollgate_core::clock::Micros;
use tollgate_core::redis_conn::RedisOptions;
use tollgate_core::store::{RedisStore, RedisStoreOptions, Store, StoreError};
use tollgate_core::window::WindowLog;
use tollgate_core::{Limit, RateKey};

async fn store_for(urls: Vec<String>) -> RedisStore {
    RedisStore::connect(&RedisOptions::new(urls), RedisStoreOptions::default())
        .await
        .expect("connect to the test redis")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Consume {
        dt: Micros,
        limit: usize,
        cost_pct: u8,
    },
    Status {
        dt: Micros,
        limit: usize,
    },
}

fn limits() -> Vec<Limit> {
    vec![
        Limit::new(1, 0.001).unwrap(),
        Limit::new(3, 0.05).unwrap(),
        Limit::new(10, 1.0).unwrap(),
        Limit::new(1000, 0.2).unwrap(),
        Limit::new(50, 3600.0).unwrap(),
        Limit::new(1_000_000_000, 10.0).unwrap(),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let dt = prop_oneof![
        4 => Just(0u64),
        8 => 1u64..200,
        4 => 200u64..50_000,
        1 => 50_000u64..3_000_000,
        1 => Just(4_000_000_000u64),
    ];
    prop_oneof![
        9 => (dt.clone(), 0usize..6, any::<u8>()).prop_map(|(dt, limit, cost_pct)| Op::Consume { dt, limit, cost_pct }),
        1 => (dt, 0usize..6).prop_map(|(dt, limit)| Op::Status { dt, limit }),
    ]
}

/// Runs `ops` on a fresh key through the script and through `WindowLog`; every verdict must match.
async fn replay(store: &RedisStore, key: &str, ops: &[Op], focus: Option<usize>) {
    let limits = limits();
    let mut log = WindowLog::new();
    // Explicit times set the key's expiry absolutely: keep them in the future (year 2096).
    let mut now: Micros = 4_000_000_000_000_000;
    let k = RateKey::new(key, "c", "a");
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Consume {
                dt,
                limit,
                cost_pct,
            } => {
                now += dt;
                let l = limits[focus.unwrap_or(limit)];
                // Mostly small costs, sometimes up to the whole limit.
                let cost = if cost_pct < 200 {
                    1
                } else {
                    1 + (l.max_requests - 1) * (cost_pct as u64 - 200) / 55
                };
                let want = log.check_and_consume(now, l, cost);
                let got = store.check_and_consume_at(k, l, cost, now).await.unwrap();
                assert_eq!(got, want, "op {i} {op:?} (cost {cost}) diverged");
            }
            Op::Status { dt, limit } => {
                now += dt;
                let l = limits[focus.unwrap_or(limit)];
                let want = log.status(now, l);
                let got = store.status_at(k, l, now).await.unwrap();
                assert_eq!(got, want, "op {i} {op:?} diverged");
            }
        }
    }
}

#[test]
fn script_matches_window_log_decision_by_decision() {
    if skip_without_redis("script_matches_window_log_decision_by_decision") {
        return;
    }
    let server = RedisServer::start();
    let rt = rt();
    let store = rt.block_on(store_for(vec![server.url()]));
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&proptest::collection::vec(op_strategy(), 1..400), |ops| {
            // A fresh key per case (shrinking replays too), so cases never see each other's logs.
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rt.block_on(replay(&store, &format!("p{n}"), &ops, None));
            Ok(())
        })
        .unwrap();
}

/// Thousands of entries per window with continuous eviction: exercises growth, in-place
/// compaction and shrinking of the packed string, decision by decision.
#[test]
fn script_matches_window_log_under_churn() {
    if skip_without_redis("script_matches_window_log_under_churn") {
        return;
    }
    let server = RedisServer::start();
    let rt = rt();
    let store = rt.block_on(store_for(vec![server.url()]));
    // Limit 1000 per 200 ms (tick 3 µs): steps of 1–40 µs keep ~1000 live entries sliding.
    let mut ops = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..20_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let dt = if i % 5000 == 4999 { 300_000 } else { x % 40 };
        ops.push(Op::Consume {
            dt,
            limit: 3,
            cost_pct: (x >> 32) as u8 % 200,
        });
        if i % 97 == 0 {
            ops.push(Op::Status { dt: 0, limit: 3 });
        }
    }
    rt.block_on(replay(&store, "churn", &ops, Some(3)));
}

#[test]
fn reloads_the_script_after_a_flush_and_keys_expire_with_their_window() {
    if skip_without_redis("reloads_the_script_after_a_flush") {
        return;
    }
    let server = RedisServer::start();
    let rt = rt();
    rt.block_on(async {
        let store = store_for(vec![server.url()]).await;
        let key = RateKey::new("t", "c", "a");
        let l = Limit::new(5, 2.5).unwrap();
        assert!(store.check_and_consume(key, l, 1).await.unwrap().allowed);
        assert!(server.command(&["SCRIPT", "FLUSH"]).unwrap().contains("OK"));
        let v = store.check_and_consume(key, l, 1).await.unwrap();
        assert!(
            v.allowed && v.used == 2,
            "NOSCRIPT was handled by reloading"
        );
        let name = String::from_utf8(store.redis_key(key)).unwrap();
        let pttl: i64 = server.command(&["PTTL", &name]).unwrap()[1..]
            .trim()
            .parse()
            .unwrap();
        assert!(
            pttl > 2_000 && pttl <= 2_501,
            "TTL is the window: {pttl} ms"
        );
    });
}

/// Memory per logged request on a key holding 100,000 requests: the worst case spreads them over
/// the whole window so that nearly every tick holds its own entry (65,536 ticks per window).
#[test]
fn packed_log_stays_under_16_bytes_per_logged_request() {
    if skip_without_redis("packed_log_stays_under_16_bytes_per_logged_request") {
        return;
    }
    let server = RedisServer::start();
    let rt = rt();
    rt.block_on(async {
        let store = store_for(vec![server.url()]).await;
        let key = RateKey::new("mem", "c", "a");
        // 100 s window: tick = 1,525 µs. 100,000 requests 990 µs apart span 99 s of it.
        let l = Limit::new(100_000, 100.0).unwrap();
        // In the future: explicit times set the key's expiry absolutely.
        let t0: Micros = 4_000_000_000_000_000;
        for i in 0..100_000u64 {
            let v = store
                .check_and_consume_at(key, l, 1, t0 + i * 990)
                .await
                .unwrap();
            assert!(v.allowed);
        }
        let name = String::from_utf8(store.redis_key(key)).unwrap();
        let bytes: u64 = server
            .command(&["MEMORY", "USAGE", &name, "SAMPLES", "0"])
            .unwrap()[1..]
            .trim()
            .parse()
            .unwrap();
        let per = bytes as f64 / 100_000.0;
        eprintln!(
            "MEMORY USAGE for 100,000 logged requests: {bytes} bytes = {per:.2} bytes/request"
        );
        assert!(per <= 16.0, "{per} bytes per logged request");
    });
}

#[test]
fn circuit_breaker_fails_fast_while_redis_is_down_and_recovers() {
    if skip_without_redis("circuit_breaker_fails_fast_while_redis_is_down_and_recovers") {
        return;
    }
    let mut server = RedisServer::start();
    let rt = rt();
    rt.block_on(async {
        let store = store_for(vec![server.url()]).await;
        let key = RateKey::new("t", "c", "a");
        let l = Limit::new(1000, 10.0).unwrap();
        assert!(store.check_and_consume(key, l, 1).await.unwrap().allowed);
        assert!(store.is_healthy());
        server.kill();
        // Failures up to the threshold go to Redis and fail; then the circuit opens.
        for _ in 0..3 {
            assert!(matches!(
                store.check_and_consume(key, l, 1).await,
                Err(StoreError::Unavailable(_))
            ));
        }
        assert!(!store.is_healthy(), "health reflects the outage");
        match store.check_and_consume(key, l, 1).await {
            Err(StoreError::Unavailable(m)) => assert!(m.contains("circuit open"), "{m}"),
            other => panic!("expected a fast failure, got {other:?}"),
        }
        server.restart();
        let started = Instant::now();
        let mut recovered = false;
        while started.elapsed() < Duration::from_secs(5) {
            if store.check_and_consume(key, l, 1).await.is_ok() {
                recovered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(recovered, "decisions resume once Redis is back");
        assert!(store.is_healthy());
    });
}

#[test]
fn works_on_a_redis_cluster_with_keys_spread_over_masters() {
    if skip_without_redis("works_on_a_redis_cluster") {
        return;
    }
    let cluster = RedisCluster::start();
    let rt = rt();
    rt.block_on(async {
        let store = store_for(cluster.urls()).await;
        assert!(store.connection().is_cluster());
        let l = Limit::new(3, 30.0).unwrap();
        for i in 0..60 {
            let t = format!("{{tenant}}{i}");
            let key = RateKey::new(&t, "c", "a");
            for n in 1..=3 {
                let v = store.check_and_consume(key, l, 1).await.unwrap();
                assert!(v.allowed && v.used == n);
            }
            assert!(!store.check_and_consume(key, l, 1).await.unwrap().allowed);
        }
        // Braces in tenant ids do not pin keys to one slot: every master holds some.
        for node in &cluster.nodes {
            let n: u64 = node.command(&["DBSIZE"]).unwrap()[1..]
                .trim()
                .parse()
                .unwrap();
            assert!(n > 0, "node {} holds no keys", node.port);
        }
    });
}
