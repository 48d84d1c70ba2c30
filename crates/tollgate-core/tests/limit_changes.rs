//! Limits changing at runtime (issue 18, "Also"): a key's limit — window and max, up and down —
//! changes at random between decisions and status reads, with time jumps past windows, on BOTH
//! stores, against ONE reference model (`support/log_model.rs`).
//!
//! - memory store on a `ManualClock`, swept at random moments (the background sweep);
//! - Redis through the script's explicit-time argument. Redis expires keys on its own clock, which
//!   explicit times cannot drive, so the test checks the expiry the script sets instead: after
//!   every call `PEXPIRETIME` must be what the model says (the end of its newest entry's tick +
//!   the window of the last call, in ms rounded up), or the key must be gone
//!   when the model holds nothing. Before each call, a key whose expiry has passed (in test time)
//!   is deleted, as Redis would have done by then.

#[path = "support/log_model.rs"]
mod log_model;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;

use log_model::{Answer, Oracle};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redis::AsyncCommands;
use tollgate_core::clock::{ManualClock, Micros};
use tollgate_core::redis_conn::RedisOptions;
use tollgate_core::store::{MemoryStore, RedisStore, RedisStoreOptions, Store};
use tollgate_core::{Limit, RateKey};

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
    Sweep {
        dt: Micros,
    },
}

/// Windows from 1 ms to an hour (ticks from 1 µs to 55 ms), maxima from 1 to 10^9: changing
/// between any two moves the window and the max up or down.
fn limits() -> Vec<Limit> {
    vec![
        Limit::new(2, 0.001).unwrap(),
        Limit::new(3, 0.05).unwrap(),
        Limit::new(5, 0.25).unwrap(),
        Limit::new(10, 1.0).unwrap(),
        Limit::new(4, 2.5).unwrap(),
        Limit::new(100, 10.0).unwrap(),
        Limit::new(7, 3600.0).unwrap(),
        Limit::new(1_000_000_000, 60.0).unwrap(),
    ]
}

fn dt() -> impl Strategy<Value = Micros> {
    prop_oneof![
        3 => Just(0u64),
        6 => 1u64..100,
        6 => 100u64..100_000,
        3 => 100_000u64..3_000_000,
        // Past most windows, and past the hour one.
        1 => 3_000_000u64..20_000_000,
        1 => 3_600_000_000u64..4_000_000_000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let n = limits().len();
    prop_oneof![
        12 => (dt(), 0..n, any::<u8>()).prop_map(|(dt, limit, cost_pct)| Op::Consume { dt, limit, cost_pct }),
        3 => (dt(), 0..n).prop_map(|(dt, limit)| Op::Status { dt, limit }),
        2 => dt().prop_map(|dt| Op::Sweep { dt }),
    ]
}

/// Mostly keeps the current limit, changing it now and then (a runtime limit change).
fn ops() -> impl Strategy<Value = Vec<Op>> {
    (prop::collection::vec(op(), 1..250), 0usize..4).prop_map(|(mut ops, stickiness)| {
        let mut current = 0;
        for (i, op) in ops.iter_mut().enumerate() {
            let l = match op {
                Op::Consume { limit, .. } | Op::Status { limit, .. } => limit,
                Op::Sweep { .. } => continue,
            };
            // With stickiness s, only every (s+1)-th call may change the limit.
            if i % (stickiness + 1) == 0 {
                current = *l;
            }
            *l = current;
        }
        ops
    })
}

struct Subjects {
    redis: Option<(RedisStore, redis::aio::MultiplexedConnection)>,
}

/// `PEXPIRETIME` of a key: ms since the epoch, -1 without expiry, -2 when the key is absent.
async fn expire_time(conn: &mut redis::aio::MultiplexedConnection, name: &[u8]) -> i64 {
    redis::cmd("PEXPIRETIME")
        .arg(name)
        .query_async(conn)
        .await
        .unwrap()
}

async fn replay(subjects: &Subjects, case: u64, start: Micros, ops: &[Op]) {
    let mut redis = subjects.redis.clone();
    let limits = limits();
    let clock = ManualClock::new(start);
    let memory = MemoryStore::new(Arc::new(clock.clone()), 10);
    let tenant = format!("lc{case}");
    let key = RateKey::new(&tenant, "c", "a");
    let mut model = Oracle::default();
    let mut now = start;
    for (i, op) in ops.iter().enumerate() {
        let dt = match *op {
            Op::Consume { dt, .. } | Op::Status { dt, .. } | Op::Sweep { dt } => dt,
        };
        now += dt;
        clock.set(now);
        if let Some((store, conn)) = &mut redis {
            // What Redis would have expired by now on its own clock.
            let name = store.redis_key(key);
            let at = expire_time(conn, &name).await;
            if at >= 0 && (at as u64) * 1000 <= now {
                let _: () = conn.del(&name).await.unwrap();
            }
        }
        let (want, got_memory, got_redis) = match *op {
            Op::Consume {
                limit, cost_pct, ..
            } => {
                let l = limits[limit];
                let cost = if cost_pct < 180 {
                    1
                } else {
                    1 + (l.max_requests - 1) * (cost_pct as u64 - 180) / 75
                };
                let want = model.check(now, l, cost);
                let m = memory.check_and_consume(key, l, cost).await.unwrap();
                let r = match &redis {
                    Some((s, _)) => Some(s.check_and_consume_at(key, l, cost, now).await.unwrap()),
                    None => None,
                };
                (want, m, r)
            }
            Op::Status { limit, .. } => {
                let l = limits[limit];
                let want = model.status(now, l);
                let m = memory.status(key, l).await.unwrap();
                let r = match &redis {
                    Some((s, _)) => Some(s.status_at(key, l, now).await.unwrap()),
                    None => None,
                };
                (want, m, r)
            }
            Op::Sweep { .. } => {
                memory.sweep();
                if let Some(w) = model.last_window() {
                    model.expire(now, w);
                }
                assert_eq!(
                    memory.key_count(),
                    usize::from(model.used() > 0),
                    "op {i} {op:?}: the sweep keeps the key iff the model holds something"
                );
                continue;
            }
        };
        assert_eq!(got_memory.now, now);
        assert_eq!(
            Answer::from(got_memory),
            want,
            "op {i} {op:?} at {now}: memory store vs model"
        );
        if let (Some(r), Some((store, conn))) = (got_redis, &mut redis) {
            assert_eq!(r, got_memory, "op {i} {op:?} at {now}: Redis vs memory");
            let at = expire_time(conn, &store.redis_key(key)).await;
            let expected = model.expires_at().map_or(-2, |t| t.div_ceil(1000) as i64);
            assert_eq!(
                at, expected,
                "op {i} {op:?} at {now}: the key's expiry follows the window of the last call"
            );
        }
    }
}

#[test]
fn limit_changes_on_both_stores_match_one_model() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = (!redis_server::skip_without_redis("limit_changes: Redis half"))
        .then(redis_server::RedisServer::start);
    let subjects = rt.block_on(async {
        let redis = match &server {
            Some(s) => {
                let mut opts = RedisOptions::new(vec![s.url()]);
                // Exactness is under test, not latency: a busy machine must not fail a call.
                opts.command_timeout = std::time::Duration::from_secs(10);
                let store = RedisStore::connect(&opts, RedisStoreOptions::default())
                    .await
                    .expect("connect to the test redis");
                let conn = redis::Client::open(s.url())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap();
                Some((store, conn))
            }
            None => None,
        };
        Subjects { redis }
    });
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    // Explicit times set Redis expiry absolutely: start in the future (from year 2096).
    let start = 4_000_000_000_000_000u64..4_001_000_000_000_000;
    runner
        .run(&(start, ops()), |(start, ops)| {
            // A fresh key per case (shrinking replays too), so cases never see each other's logs.
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rt.block_on(replay(&subjects, n, start, &ops));
            Ok(())
        })
        .unwrap();
}
