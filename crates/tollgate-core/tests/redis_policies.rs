//! Issue 10 on Redis: `RedisStore::apply` (one script for every algorithm, several limits per key,
//! several keys per call, all four ops, shadow limits) answers exactly what the reference model
//! answers, call by call, on the script's explicit time; calendar periods computed in Lua match
//! the calendar; a two-limit key admits exactly the stricter limit under 16 concurrent clients on
//! one Redis and on a Redis Cluster; several items are all or nothing, across cluster slots too.

// The model is helper Pc's file, shared as is; its lint is theirs to settle.
#[allow(clippy::manual_is_multiple_of)]
#[path = "support/policy_model.rs"]
mod policy_model;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;

use policy_model::PolicyModel;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redis_server::{skip_without_redis, RedisCluster, RedisServer};
use tollgate_core::clock::Micros;
use tollgate_core::policy::{Algorithm, Calendar, Op, Policy, PolicyItem, PolicyLimit};
use tollgate_core::redis_conn::RedisOptions;
use tollgate_core::store::{KeyBounds, RedisStore, RedisStoreOptions};
use tollgate_core::{Limit, RateKey};

/// Explicit times set expiries absolutely: keep them in the future (year 2096).
const T0: Micros = 4_000_000_000_000_000;
const S: Micros = 1_000_000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn store_for(urls: Vec<String>) -> RedisStore {
    let mut opts = RedisOptions::new(urls);
    // A loaded CI machine must not turn a slow answer into a failed comparison.
    opts.command_timeout = std::time::Duration::from_secs(5);
    RedisStore::connect(&opts, RedisStoreOptions::default())
        .await
        .expect("connect to the test redis")
}

fn pl(max: u64, secs: f64, algorithm: Algorithm, shadow: bool) -> PolicyLimit {
    PolicyLimit {
        limit: Limit::new(max, secs).unwrap(),
        algorithm,
        shadow,
        name: None,
    }
}

fn policy(limits: Vec<PolicyLimit>) -> Policy {
    Policy {
        limits: Arc::from(limits),
    }
}

fn item<'a>(key: RateKey<'a>, p: &'a Policy, cost: u64) -> PolicyItem<'a> {
    PolicyItem {
        key,
        policy: p,
        cost,
        bounds: KeyBounds::UNBOUNDED,
        shadow_all: false,
    }
}

const GCRA: fn(u64) -> Algorithm = |burst| Algorithm::Gcra { burst };
const COUNTER: Algorithm = Algorithm::SlidingWindowCounter;
const LOG: Algorithm = Algorithm::SlidingLog;
const fn fixed(calendar: Option<Calendar>) -> Algorithm {
    Algorithm::FixedWindow { calendar }
}

/// The policies a random sequence switches between, per family: changing only max_requests or
/// burst keeps the state, changing the window starts another.
fn policies(family: usize) -> Vec<Policy> {
    let one = |l: PolicyLimit| policy(vec![l]);
    match family {
        0 => vec![
            one(pl(5, 0.05, LOG, false)),
            one(pl(3, 0.05, LOG, false)),
            one(pl(50, 2.0, LOG, false)),
        ],
        1 => vec![
            one(pl(5, 0.05, GCRA(5), false)),
            one(pl(5, 0.05, GCRA(2), false)),
            one(pl(7, 0.1, GCRA(10), false)),
        ],
        2 => vec![
            one(pl(6, 0.05, COUNTER, false)),
            one(pl(3, 0.05, COUNTER, false)),
            one(pl(40, 1.0, COUNTER, false)),
        ],
        3 => vec![
            one(pl(4, 0.05, fixed(None), false)),
            one(pl(2, 0.05, fixed(None), false)),
            one(pl(30, 1.0, fixed(None), false)),
        ],
        // Several limits per key, shadow limits among them.
        _ => vec![
            policy(vec![pl(3, 0.01, LOG, false), pl(8, 0.05, LOG, false)]),
            policy(vec![
                pl(4, 0.02, GCRA(2), false),
                pl(10, 0.1, COUNTER, false),
                pl(2, 0.01, fixed(None), true),
            ]),
            policy(vec![
                pl(3, 0.01, LOG, true),
                pl(8, 0.05, LOG, false),
                pl(5, 0.04, fixed(None), false),
                pl(4, 0.02, GCRA(4), true),
            ]),
        ],
    }
}

#[derive(Debug, Clone)]
struct Step {
    dt: Micros,
    op: u8,
    policy: usize,
    cost_pct: u8,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let dt = prop_oneof![
        4 => 0u64..2,
        6 => 1u64..3_000,
        3 => 3_000u64..40_000,
        1 => 40_000u64..3_000_000,
    ];
    let op = prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)];
    proptest::collection::vec(
        (dt, op, 0usize..3, any::<u8>()).prop_map(|(dt, op, policy, cost_pct)| Step {
            dt,
            op,
            policy,
            cost_pct,
        }),
        1..120,
    )
}

fn op_of(code: u8) -> Op {
    match code {
        0 => Op::Consume,
        1 => Op::Status,
        2 => Op::Report,
        _ => Op::Refund,
    }
}

/// Runs `steps` on a fresh key through the store and through the model; every verdict must match.
async fn replay(store: &RedisStore, family: usize, key: &str, steps: &[Step]) {
    let ps = policies(family);
    let mut model = PolicyModel::new();
    let k = RateKey::new(key, "c", "a");
    let mut now = T0;
    for (i, s) in steps.iter().enumerate() {
        now += s.dt;
        let p = &ps[s.policy];
        // Costs fit every non-shadow limit's capacity, as the limiter validates.
        let cap = p
            .limits
            .iter()
            .filter(|l| !l.shadow)
            .map(|l| l.capacity())
            .min()
            .unwrap_or(1);
        let cost = if s.cost_pct < 180 {
            1
        } else {
            1 + (cap - 1) * (s.cost_pct as u64 - 180) / 75
        };
        let op = op_of(s.op);
        let items = [item(k, p, cost)];
        let want = model.apply(op, &items, now);
        let got = store.apply_at(op, &items, Some(now)).await.unwrap();
        assert_eq!(
            got, want,
            "step {i} {s:?}: {op:?} cost {cost} under policy {} diverged",
            s.policy
        );
    }
}

fn against_model(family: usize, cases: u32) {
    let server = RedisServer::start();
    let rt = rt();
    let store = rt.block_on(store_for(vec![server.url()]));
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&steps(), |steps| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rt.block_on(replay(&store, family, &format!("f{family}-{n}"), &steps));
            Ok(())
        })
        .unwrap();
}

#[test]
fn sliding_log_matches_the_model() {
    if !skip_without_redis("sliding_log_matches_the_model") {
        against_model(0, 48);
    }
}

#[test]
fn gcra_matches_the_model() {
    if !skip_without_redis("gcra_matches_the_model") {
        against_model(1, 48);
    }
}

#[test]
fn sliding_window_counter_matches_the_model() {
    if !skip_without_redis("sliding_window_counter_matches_the_model") {
        against_model(2, 48);
    }
}

#[test]
fn fixed_window_matches_the_model() {
    if !skip_without_redis("fixed_window_matches_the_model") {
        against_model(3, 48);
    }
}

#[test]
fn several_limits_and_shadow_limits_match_the_model() {
    if !skip_without_redis("several_limits_and_shadow_limits_match_the_model") {
        against_model(4, 64);
    }
}

/// Unix seconds of some UTC midnights (from the calendar, not from either implementation).
const MAR_1_2027: u64 = 1_803_859_200; // a Monday
const FEB_29_2028: u64 = 1_835_395_200;
const MAR_1_2028: u64 = 1_835_481_600;
const JAN_1_2028: u64 = 1_830_297_600; // a Saturday
const FEB_28_2100: u64 = 4_107_456_000; // 2100 is not a leap year
const MAR_1_2100: u64 = 4_107_542_400; // a Monday
const MON_JAN_4_2027: u64 = 1_799_020_800;
const FEB_29_2096: u64 = 3_981_312_000;
const MAR_1_2096: u64 = 3_981_398_400;

/// Calendar windows reset exactly at UTC midnight, Monday 00:00 and the 1st (real month lengths,
/// leap years by the Gregorian rule), computed in Lua.
#[test]
fn calendar_windows_reset_exactly_at_the_boundary() {
    if skip_without_redis("calendar_windows_reset_exactly_at_the_boundary") {
        return;
    }
    let server = RedisServer::start();
    let rt = rt();
    rt.block_on(async {
        let store = store_for(vec![server.url()]).await;
        let day = policy(vec![pl(2, 86_400.0, fixed(Some(Calendar::Day)), false)]);
        let week = policy(vec![pl(2, 604_800.0, fixed(Some(Calendar::Week)), false)]);
        let month = policy(vec![pl(
            2,
            2_678_400.0,
            fixed(Some(Calendar::Month)),
            false,
        )]);
        // (policy, a boundary, the boundary before it)
        let cases: Vec<(&Policy, u64, u64)> = vec![
            (&day, MAR_1_2028, FEB_29_2028),
            (&day, FEB_29_2028, FEB_29_2028 - 86_400),
            (&week, MAR_1_2027, MAR_1_2027 - 7 * 86_400),
            (&week, MON_JAN_4_2027, MON_JAN_4_2027 - 7 * 86_400),
            (&week, MAR_1_2100, MAR_1_2100 - 7 * 86_400),
            (&month, MAR_1_2028, FEB_29_2028 - 28 * 86_400), // February 2028: 29 days
            (&month, MAR_1_2100, FEB_28_2100 - 27 * 86_400), // February 2100: 28 days
            (&month, MAR_1_2096, FEB_29_2096 - 28 * 86_400), // February 2096: 29 days
            (&month, JAN_1_2028, JAN_1_2028 - 31 * 86_400),  // December: 31 days
            (&month, MAR_1_2027, MAR_1_2027 - 28 * 86_400),  // February 2027: 28 days
        ];
        for (n, (p, boundary, before)) in cases.into_iter().enumerate() {
            let name = format!("cal{n}");
            let k = RateKey::new(&name, "c", "a");
            let mut model = PolicyModel::new();
            let b = boundary * S;
            let times = [b - 2, b - 1, b - 1, b, b, b, b + 1];
            let mut admitted = Vec::new();
            for t in times {
                let items = [item(k, p, 1)];
                let want = model.apply(Op::Consume, &items, t);
                let got = store.apply_at(Op::Consume, &items, Some(t)).await.unwrap();
                assert_eq!(got, want, "case {n} at {t}");
                admitted.push(got.allowed);
                let lv = got.items[0].limits[0];
                if t < b {
                    assert_eq!(lv.reset_at, b, "case {n}: the period ends at the boundary");
                } else {
                    assert!(lv.reset_at > b, "case {n}");
                }
            }
            assert_eq!(
                admitted,
                [true, true, false, true, true, false, false],
                "case {n}"
            );
            // A fresh key reads the same period end.
            let fresh = RateKey::new("calstart", &name, "a");
            let first = [item(fresh, p, 1)];
            let v = store
                .apply_at(Op::Status, &first, Some(b - 1))
                .await
                .unwrap();
            assert_eq!(v.items[0].limits[0].reset_at, b, "case {n}");
            // And the period before it started at the previous boundary.
            let v = store
                .apply_at(Op::Status, &first, Some(before * S))
                .await
                .unwrap();
            assert_eq!(
                v.items[0].limits[0].reset_at, b,
                "case {n}: previous period"
            );
            let v = store
                .apply_at(Op::Status, &first, Some(before * S - 1))
                .await
                .unwrap();
            assert!(v.items[0].limits[0].reset_at <= before * S, "case {n}");
        }
        // Before the real clock (the state expires at once, but the period is still computed):
        // 2000 is a leap year by the 400-year rule.
        let k = RateKey::new("y2000", "c", "a");
        let feb = [item(k, &month, 1)];
        let v = store
            .apply_at(Op::Status, &feb, Some(FEB_29_2000 * S))
            .await
            .unwrap();
        assert_eq!(v.items[0].limits[0].reset_at, MAR_1_2000 * S);
    });
}

const FEB_29_2000: u64 = 951_782_400;
const MAR_1_2000: u64 = 951_868_800;

/// GCRA with burst b admits b at once, then one per window / max_requests.
#[test]
fn gcra_admits_the_burst_then_one_per_emission_interval() {
    if skip_without_redis("gcra_admits_the_burst") {
        return;
    }
    let server = RedisServer::start();
    let rt = rt();
    rt.block_on(async {
        let store = store_for(vec![server.url()]).await;
        // 10 per second (T = 100 ms), burst 4.
        let p = policy(vec![pl(10, 1.0, GCRA(4), false)]);
        let k = RateKey::new("gcra", "c", "a");
        let items = [item(k, &p, 1)];
        let admitted = |v: &tollgate_core::policy::PolicyVerdict| v.allowed;
        for i in 0..4 {
            let v = store.apply_at(Op::Consume, &items, Some(T0)).await.unwrap();
            assert!(admitted(&v), "burst request {i}");
        }
        let v = store.apply_at(Op::Consume, &items, Some(T0)).await.unwrap();
        assert!(!admitted(&v));
        assert_eq!(v.items[0].limits[0].retry_at, Some(T0 + 100_000));
        let early = store
            .apply_at(Op::Consume, &items, Some(T0 + 99_999))
            .await
            .unwrap();
        assert!(!admitted(&early));
        let on_time = store
            .apply_at(Op::Consume, &items, Some(T0 + 100_000))
            .await
            .unwrap();
        assert!(admitted(&on_time));
    });
}

/// Several items in one call: all or nothing.
#[test]
fn several_items_are_all_or_nothing() {
    if skip_without_redis("several_items_are_all_or_nothing") {
        return;
    }
    let server = RedisServer::start();
    let rt = rt();
    rt.block_on(async {
        let store = store_for(vec![server.url()]).await;
        all_or_nothing(&store).await;
    });
}

async fn all_or_nothing(store: &RedisStore) {
    let wide = policy(vec![pl(5, 60.0, LOG, false), pl(5, 60.0, GCRA(5), false)]);
    let narrow = policy(vec![pl(1, 60.0, COUNTER, false)]);
    let a = RateKey::new("multi-a", "c", "a");
    let b = RateKey::new("multi-b", "c", "a");
    let mut model = PolicyModel::new();
    let both = [item(a, &wide, 1), item(b, &narrow, 1)];
    let mut t = T0;
    for n in 0..3 {
        t += 1000;
        let want = model.apply(Op::Consume, &both, t);
        let got = store.apply_at(Op::Consume, &both, Some(t)).await.unwrap();
        assert_eq!(got, want, "call {n}");
        assert_eq!(got.allowed, n == 0, "call {n}");
    }
    // The denied calls consumed nothing on the first item.
    let v = store
        .apply_at(Op::Status, &[item(a, &wide, 1)], Some(t))
        .await
        .unwrap();
    assert_eq!(v.items[0].limits[0].remaining, 4);
    assert_eq!(v.items[0].limits[1].remaining, 4);
}

/// A two-limit key (5 per second and 20 per minute) under 16 concurrent clients admits exactly
/// what the stricter limit allows at every moment. Each phase's 48 attempts carry the same
/// explicit time, so the exact count is known whatever order they reach Redis in.
async fn two_limits_concurrently(store: &RedisStore, tag: &str) {
    let p = Arc::new(policy(vec![
        pl(5, 1.0, LOG, false),
        pl(20, 60.0, LOG, false),
    ]));
    let mut total = 0u64;
    for phase in 0..6u64 {
        let t = T0 + phase * S;
        let mut tasks = Vec::new();
        for c in 0..16 {
            let store = store.clone();
            let p = p.clone();
            let tenant = tag.to_string();
            tasks.push(tokio::spawn(async move {
                let mut admitted = 0u64;
                for _ in 0..3 {
                    let k = RateKey::new(&tenant, "shared", "act");
                    let items = [item(k, &p, 1)];
                    let v = store.apply_at(Op::Consume, &items, Some(t)).await;
                    if v.unwrap_or_else(|e| panic!("client {c}: {e}")).allowed {
                        admitted += 1;
                    }
                }
                admitted
            }));
        }
        let mut admitted = 0;
        for task in tasks {
            admitted += task.await.unwrap();
        }
        // 5 per second, until 20 per minute are used up.
        let want = 5u64.min(20 - total);
        assert_eq!(admitted, want, "phase {phase}");
        total += admitted;
    }
    assert_eq!(total, 20);
}

#[test]
fn two_limit_key_admits_exactly_the_stricter_limit_under_16_clients() {
    if skip_without_redis("two_limit_key_under_16_clients") {
        return;
    }
    let server = RedisServer::start();
    let rt = rt();
    rt.block_on(async {
        let store = store_for(vec![server.url()]).await;
        two_limits_concurrently(&store, "conc").await;
    });
}

#[test]
fn on_a_cluster_two_limits_stay_exact_and_cross_slot_items_are_all_or_nothing() {
    if skip_without_redis("cluster_policies") {
        return;
    }
    let cluster = RedisCluster::start();
    let rt = rt();
    rt.block_on(async {
        let store = store_for(cluster.urls()).await;
        assert!(store.connection().is_cluster());
        two_limits_concurrently(&store, "conc-cluster").await;
        // Items in one slot or several: the same answers as one Redis.
        all_or_nothing(&store).await;

        // A later slot group's denial gives back what an earlier one consumed.
        let wide = policy(vec![
            pl(5, 60.0, LOG, false),
            pl(3, 60.0, fixed(None), true),
        ]);
        let full = policy(vec![pl(1, 60.0, GCRA(1), false)]);
        let a = RateKey::new("xslot-a", "c", "a");
        let b = RateKey::new("xslot-b", "c", "a");
        let slot = |k: RateKey<'_>| {
            let tag = tollgate_core::store::redis::hash_tag(k);
            crc16::State::<crc16::XMODEM>::calculate(&tag) % 16384
        };
        assert_ne!(slot(a), slot(b), "the test needs keys in different slots");
        let t = T0 + 1000;
        assert!(
            store
                .apply_at(Op::Consume, &[item(b, &full, 1)], Some(t))
                .await
                .unwrap()
                .allowed
        );
        let both = [item(a, &wide, 1), item(b, &full, 1)];
        let v = store.apply_at(Op::Consume, &both, Some(t)).await.unwrap();
        assert!(!v.allowed);
        assert!(v.items[0].allowed && !v.items[1].allowed);
        let after = store
            .apply_at(Op::Status, &[item(a, &wide, 1)], Some(t))
            .await
            .unwrap();
        assert_eq!(
            after.items[0].limits[0].remaining, 5,
            "the first group's consumption was given back"
        );
        assert_eq!(after.items[0].limits[1].remaining, 3, "shadow limit too");
        // And an allowed cross-slot call consumes on both.
        let ok = [
            item(a, &wide, 1),
            item(RateKey::new("xslot-c", "c", "a"), &full, 1),
        ];
        let v = store.apply_at(Op::Consume, &ok, Some(t)).await.unwrap();
        assert!(v.allowed);
        let after = store
            .apply_at(Op::Status, &[item(a, &wide, 1)], Some(t))
            .await
            .unwrap();
        assert_eq!(after.items[0].limits[0].remaining, 4);
    });
}

/// Every limit of one key shares the key's hash tag (one slot); the tag is FNV-1a-64 of the key's
/// encoding; the base sliding log keeps the seed wrapper's key.
#[test]
fn key_layout() {
    let k = RateKey::new("org", "u", "act");
    // FNV-1a-64 of "3:org1:uact", computed independently.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in b"3:org1:uact" {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    assert_eq!(
        tollgate_core::store::redis::hash_tag(k),
        format!("{h:016x}").as_bytes()
    );
}

/// The Redis key names of a policy: one tag, one identity per limit; the seed's key is the base log.
#[test]
fn key_names_share_the_tag_and_name_the_identity() {
    if skip_without_redis("key_names") {
        return;
    }
    let server = RedisServer::start();
    let rt = rt();
    rt.block_on(async {
        let store = store_for(vec![server.url()]).await;
        let k = RateKey::new("org", "u", "act");
        let limits = [
            pl(3, 1.0, LOG, false),
            pl(30, 60.0, LOG, false),
            pl(3, 1.0, GCRA(3), false),
            pl(3, 1.0, COUNTER, false),
            pl(3, 1.0, fixed(Some(Calendar::Month)), false),
        ];
        let names: Vec<String> = store
            .policy_keys(k, &limits)
            .into_iter()
            .map(|n| String::from_utf8(n).unwrap())
            .collect();
        let tag = String::from_utf8(tollgate_core::store::redis::hash_tag(k).to_vec()).unwrap();
        let want = ["l1000000", "l", "g1000000", "c1000000", "fm"]
            .map(|id| format!("tollgate:{{{tag}}}{id}:3:org1:uact"));
        assert_eq!(names, want);
        assert_eq!(String::from_utf8(store.redis_key(k)).unwrap(), want[1]);
    });
}
