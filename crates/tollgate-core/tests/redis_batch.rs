//! Batched one-consume decisions (`store/redis_batch.rs`): decisions that arrive together go to
//! Redis as one call of `redis_consume_one.lua` over all their keys. They must decide exactly as
//! the same decisions one by one (a batch reads Redis time once and decides its items in order),
//! a corrupt key inside a batch must fail only its own decision, and batching must happen.

#[path = "support/redis_server.rs"]
mod redis_server;

use std::collections::HashMap;
use std::time::Duration;

use redis_server::{skip_without_redis, RedisServer};
use tollgate_core::policy::{Algorithm, Op, Policy, PolicyItem, PolicyLimit};
use tollgate_core::redis_conn::RedisOptions;
use tollgate_core::store::redis::CONSUME_ONE_SCRIPT;
use tollgate_core::store::{KeyBounds, RedisStore, RedisStoreOptions, Store, StoreError};
use tollgate_core::window::{Verdict, WindowLog};
use tollgate_core::{Limit, RateKey};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A store whose calls may take long (a loaded test machine, or Redis blocked on purpose).
async fn store_for(server: &RedisServer, in_flight: usize) -> RedisStore {
    let mut opts = RedisOptions::new(vec![server.url()]);
    opts.command_timeout = Duration::from_secs(5);
    RedisStore::connect(
        &opts,
        RedisStoreOptions {
            batch_in_flight: in_flight,
            ..RedisStoreOptions::default()
        },
    )
    .await
    .expect("connect to the test redis")
}

fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn evalsha_calls(server: &RedisServer) -> u64 {
    let info = server
        .command(&["INFO", "commandstats"])
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Each key's verdicts, put in the order Redis made them (by time; at one time, the admitted ones
/// by their count, then the denied ones), must be what a sequential log answers in that order.
fn assert_sequential(per_key: &HashMap<usize, Vec<Verdict>>, limit: Limit, max: u64) {
    for (k, vs) in per_key {
        let mut vs = vs.clone();
        vs.sort_by_key(|v| (v.now, !v.allowed, v.used));
        let admitted = vs.iter().filter(|v| v.allowed).count() as u64;
        assert_eq!(admitted, max, "key {k}: exactly max admitted in the window");
        let mut log = WindowLog::new();
        for (i, v) in vs.iter().enumerate() {
            let want = log.check_and_consume(v.now, limit, 1);
            assert_eq!(*v, want, "key {k}, decision {i} in Redis order");
        }
    }
}

/// 64 tasks deciding at once over 4 keys with a limit of 10: exactly 10 admitted per key, every
/// answer the one a sequential log gives in Redis' order, and far fewer script calls than
/// decisions (every decision went through the batcher).
#[test]
fn concurrent_decisions_are_batched_and_exact() {
    if skip_without_redis("concurrent_decisions_are_batched_and_exact") {
        return;
    }
    let server = RedisServer::start();
    rt().block_on(async {
        let store = store_for(&server, 2).await;
        let limit = Limit::new(10, 3600.0).unwrap();
        let (tasks, per_task, keys) = (64usize, 8usize, 4usize);
        let before = evalsha_calls(&server);
        let mut handles = Vec::new();
        for t in 0..tasks {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..per_task {
                    let k = (t + i) % keys;
                    let client = format!("c{k}");
                    let key = RateKey::new("batch", &client, "a");
                    let v = store.check_and_consume(key, limit, 1).await;
                    out.push((k, v.expect("decided")));
                }
                out
            }));
        }
        let mut per_key: HashMap<usize, Vec<Verdict>> = HashMap::new();
        for h in handles {
            for (k, v) in h.await.unwrap() {
                per_key.entry(k).or_default().push(v);
            }
        }
        let decisions = (tasks * per_task) as u64;
        assert_eq!(
            per_key.values().map(Vec::len).sum::<usize>() as u64,
            decisions
        );
        assert_sequential(&per_key, limit, 10);
        let (calls, items) = store.batch_counts();
        assert_eq!(items, decisions, "every decision went through the batcher");
        assert!(
            calls < decisions / 2,
            "{calls} calls for {decisions} decisions"
        );
        let evalsha = evalsha_calls(&server) - before;
        assert_eq!(evalsha, calls, "one EVALSHA per batch");
        assert!(store.is_healthy());
    });
}

/// Blocks Redis for `ms` with a busy script, from a thread of its own.
fn block_redis(server: &RedisServer, ms: u64) -> std::thread::JoinHandle<()> {
    let mut c = raw(server);
    std::thread::spawn(move || {
        let _: redis::Value = redis::cmd("EVAL")
            .arg(
                "local t = redis.call('TIME') local stop = t[1] * 1000000 + t[2] + ARGV[1] * 1000 \
                 repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop return 1",
            )
            .arg(0)
            .arg(ms)
            .query(&mut c)
            .unwrap();
    })
}

/// Two corrupt keys in the middle of a batch (a sliding log holding a short string, which the
/// script answers with an error reply, and a GCRA key holding a list, which it raises as an
/// error): each one's decision is `Corrupt` (the key reset), the items before and after them in the
/// same call are decided and consumed exactly, the breaker stays closed.
#[test]
fn a_corrupt_key_in_a_batch_fails_only_its_own_decision() {
    if skip_without_redis("a_corrupt_key_in_a_batch_fails_only_its_own_decision") {
        return;
    }
    let server = RedisServer::start();
    rt().block_on(async {
        // One call in flight: while Redis is blocked, the first decision holds the slot and every
        // later one queues, so they go as one batch, in the order they arrived.
        let store = store_for(&server, 1).await;
        let mut conn = raw(&server);
        let limit = Limit::new(3, 3600.0).unwrap();
        let bad = RateKey::new("t", "bad", "a");
        let _: () = redis::cmd("SET")
            .arg(store.redis_key(bad))
            .arg("not a log")
            .query(&mut conn)
            .unwrap();
        let gcra = Policy {
            limits: vec![PolicyLimit {
                algorithm: Algorithm::Gcra { burst: 3 },
                ..PolicyLimit::sliding_log(limit)
            }]
            .into(),
        };
        let gbad = RateKey::new("t", "gbad", "a");
        let gbad_key = store.policy_keys(gbad, &gcra.limits)[0].clone();
        let _: () = redis::cmd("RPUSH")
            .arg(&gbad_key)
            .arg("x")
            .query(&mut conn)
            .unwrap();
        let blocker = block_redis(&server, 400);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let first = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .check_and_consume(RateKey::new("t", "first", "a"), limit, 1)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Queued in this order: 4 on key x, the two corrupt keys, 4 on key y.
        let mut queued = Vec::new();
        let clients = ["x", "x", "x", "x", "bad", "gbad", "y", "y", "y", "y"];
        for (i, client) in clients.into_iter().enumerate() {
            let store = store.clone();
            let gcra = gcra.clone();
            queued.push(tokio::spawn(async move {
                let key = RateKey::new("t", client, "a");
                if client == "gbad" {
                    let item = PolicyItem {
                        key,
                        policy: &gcra,
                        cost: 1,
                        bounds: KeyBounds::UNBOUNDED,
                        shadow_all: false,
                    };
                    return store.apply(Op::Consume, &[item]).await.map(|_| None);
                }
                store.check_and_consume(key, limit, 1).await.map(Some)
            }));
            // Spawned tasks run in any order; a pause keeps the queue in this order.
            tokio::time::sleep(Duration::from_millis(5 + i as u64 % 2)).await;
        }
        blocker.join().unwrap();
        let first = first.await.unwrap().expect("the first decision");
        assert!(first.allowed && first.used == 1);
        let mut answers = Vec::new();
        for q in queued {
            answers.push(q.await.unwrap());
        }
        assert_eq!(
            store.batch_counts(),
            (2, 11),
            "one direct call, then one batch of ten"
        );
        for (i, a) in answers.iter().enumerate() {
            if i == 4 || i == 5 {
                let (want_key, want_reason) = if i == 4 {
                    (store.redis_key(bad), "shorter than the header")
                } else {
                    (gbad_key.clone(), "not a string")
                };
                match a {
                    Err(StoreError::Corrupt { key, reason }) => {
                        assert_eq!(key.as_bytes(), &want_key[..], "item {i}");
                        assert_eq!(reason, want_reason, "item {i}");
                    }
                    other => panic!("the corrupt key's decision {i}: {other:?}"),
                }
                continue;
            }
            let v = a
                .as_ref()
                .expect("decided despite the corrupt keys")
                .expect("a sliding log verdict");
            // The n-th decision on its key (x: items 0..4, y: items 6..10).
            let n = if i < 4 { i as u64 } else { (i - 6) as u64 };
            assert_eq!(v.allowed, n < 3, "item {i}");
            assert_eq!(v.used, (n + 1).min(3), "item {i}");
        }
        // Both keys hold exactly the 3 admitted; the corrupt key was reset and starts over.
        for client in ["x", "y"] {
            let v = store
                .status(RateKey::new("t", client, "a"), limit)
                .await
                .unwrap();
            assert_eq!(v.used, 3, "key {client}");
        }
        for k in [store.redis_key(bad), gbad_key] {
            let t: String = redis::cmd("TYPE").arg(&k).query(&mut conn).unwrap();
            assert_eq!(t, "none", "the corrupt key was reset");
        }
        let v = store.check_and_consume(bad, limit, 1).await.unwrap();
        assert!(v.allowed && v.used == 1, "a fresh log after the reset");
        assert!(
            store.is_healthy(),
            "a corrupt key never counts against the breaker"
        );
    });
}

/// Redis stalls (a busy script) with one decision in flight and nine more queued behind it, 20 ms
/// apart. The batcher bounds a call with one timer at a time, not one per decision, yet each
/// decision must fail with the timeout error at its own deadline: the command timeout after it was
/// asked for, queueing included. Not later (the stall lasts far longer), and not earlier because it
/// shares its call with older decisions whose deadlines came first.
#[test]
fn each_batched_decision_times_out_at_its_own_deadline_when_redis_stalls() {
    if skip_without_redis("each_batched_decision_times_out_at_its_own_deadline_when_redis_stalls") {
        return;
    }
    let server = RedisServer::start();
    rt().block_on(async {
        let timeout = Duration::from_millis(300);
        let mut opts = RedisOptions::new(vec![server.url()]);
        opts.command_timeout = timeout;
        let store = RedisStore::connect(
            &opts,
            RedisStoreOptions {
                batch_in_flight: 1,
                // Only the timeouts are under test: the breaker must not open after three.
                failure_threshold: 1000,
                ..RedisStoreOptions::default()
            },
        )
        .await
        .expect("connect to the test redis");
        let limit = Limit::new(100, 3600.0).unwrap();
        store
            .check_and_consume(RateKey::new("t", "warm", "a"), limit, 1)
            .await
            .expect("Redis answers before the stall");
        let blocker = block_redis(&server, 2000);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut tasks = Vec::new();
        for i in 0..10 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let client = format!("c{i}");
                let started = std::time::Instant::now();
                let r = store
                    .check_and_consume(RateKey::new("t", &client, "a"), limit, 1)
                    .await;
                (r, started.elapsed())
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let (r, took) = t.await.unwrap();
            match r {
                Err(StoreError::Unavailable(msg)) => assert!(
                    msg.contains("did not answer within 300 ms"),
                    "decision {i}: {msg}"
                ),
                other => panic!("decision {i} during the stall: {other:?}"),
            }
            assert!(
                took >= timeout - Duration::from_millis(2)
                    && took < timeout * 2 + Duration::from_millis(200),
                "decision {i} answered after {took:?}, its timeout is {timeout:?}"
            );
        }
        // The warm-up and the first decision alone, then the nine queued ones as one call (two,
        // if a late one missed it on a loaded machine): decisions shared a call and still each
        // had its own deadline.
        let (calls, items) = store.batch_counts();
        assert_eq!(items, 11);
        assert!((3..=4).contains(&calls), "{calls} calls for 11 decisions");
        blocker.join().unwrap();
        let v = store
            .check_and_consume(RateKey::new("t", "after", "a"), limit, 1)
            .await
            .expect("Redis answers again after the stall");
        assert!(v.allowed && v.used == 1);
    });
}

/// A small deterministic generator (xorshift), so a failure names its seed and replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn packed(kind: u8, may_create: bool, cost: u64, max: u64, window: u64, burst: u64) -> Vec<u8> {
    let mut p = vec![kind, if may_create { b'1' } else { b'0' }];
    for v in [cost, max, window, burst] {
        p.extend_from_slice(&(v as f64).to_le_bytes());
    }
    p
}

/// One item's answer in both forms: its 48 bytes, or its error message.
fn single(c: &mut redis::Connection, key: &str, p: &[u8], at: u64) -> Result<Vec<u8>, String> {
    redis::Script::new(CONSUME_ONE_SCRIPT)
        .key(key)
        .arg(p)
        .arg(at)
        .invoke::<Vec<u8>>(c)
        .map_err(|e| {
            let msg = format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""));
            msg.split(" script: ").next().unwrap_or(&msg).to_string()
        })
}

fn batch(
    c: &mut redis::Connection,
    keys: &[String],
    ps: &[Vec<u8>],
    at: u64,
) -> Vec<Result<Vec<u8>, String>> {
    let s = redis::Script::new(CONSUME_ONE_SCRIPT);
    let mut inv = s.prepare_invoke();
    for k in keys {
        inv.key(k);
    }
    inv.arg(ps.concat()).arg(at);
    let reply: Vec<u8> = inv.invoke(c).unwrap();
    let n = keys.len();
    assert!(reply.len() >= 48 * n);
    let mut msg_at = 48 * n;
    (0..n)
        .map(|i| {
            let item = &reply[48 * i..48 * i + 48];
            let f = |j: usize| f64::from_le_bytes(item[8 * j..8 * j + 8].try_into().unwrap());
            if f(1) == 16.0 {
                let len = f(2) as usize;
                let m = String::from_utf8_lossy(&reply[msg_at..msg_at + len]).into_owned();
                msg_at += len;
                Err(m)
            } else {
                Ok(item.to_vec())
            }
        })
        .collect()
}

fn state(c: &mut redis::Connection, key: &str) -> (Option<Vec<u8>>, i64) {
    let v: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(c).unwrap();
    let e: i64 = redis::cmd("PEXPIRETIME").arg(key).query(c).unwrap();
    (v, e)
}

/// N items through one batch call give what the same N items give as N single calls at the same
/// time, in order: the same answers (bytes), the same key bytes and expiry, and the same error for
/// a corrupt key, with the other items of the batch decided all the same.
#[test]
fn a_batch_call_is_its_items_as_single_calls_at_one_time() {
    if skip_without_redis("a_batch_call_is_its_items_as_single_calls_at_one_time") {
        return;
    }
    let server = RedisServer::start();
    let mut c = raw(&server);
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
        + 60_000_000;
    let mut items_total = 0;
    let mut corrupt_total = 0;
    for seed in 1..=30u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut now = start;
        let windows = [1_000u64, 50_000, 1_000_000, 60_000_000];
        for round in 0..40 {
            now += match rng.below(4) {
                0 => 0,
                1 => rng.below(100),
                2 => rng.below(100_000),
                _ => rng.below(3_000_000),
            };
            let n = 2 + rng.below(12) as usize;
            let mut names = Vec::new();
            let mut ps = Vec::new();
            for _ in 0..n {
                // Few keys, so a batch often holds one key several times.
                let k = rng.below(5);
                let kind = b"llllgcfdwm"[(k * 3 + seed) as usize % 10];
                let max = 1 + rng.below(6);
                let window = windows[((k + seed) % 4) as usize];
                let window = if rng.below(15) == 0 {
                    windows[rng.below(4) as usize]
                } else {
                    window
                };
                let cost = 1 + rng.below(max.min(3));
                ps.push(packed(
                    kind,
                    rng.below(8) != 0,
                    cost,
                    max,
                    window,
                    max + rng.below(3),
                ));
                names.push(format!("{seed}:{k}"));
            }
            // Sometimes a key is corrupt in both namespaces before the round.
            if rng.below(6) == 0 {
                let k = &names[rng.below(n as u64) as usize];
                for ns in ["b", "s"] {
                    let _: () = redis::cmd("SET")
                        .arg(format!("{ns}:{k}"))
                        .arg("xx")
                        .query(&mut c)
                        .unwrap();
                }
            }
            let bkeys: Vec<String> = names.iter().map(|k| format!("b:{k}")).collect();
            let got = batch(&mut c, &bkeys, &ps, now);
            for (i, k) in names.iter().enumerate() {
                let want = single(&mut c, &format!("s:{k}"), &ps[i], now);
                let ctx = format!("seed {seed} round {round} item {i} key {k} at {now}");
                assert_eq!(got[i], want, "{ctx}: answer");
                corrupt_total += usize::from(want.is_err());
                items_total += 1;
            }
            for k in &names {
                assert_eq!(
                    state(&mut c, &format!("b:{k}")),
                    state(&mut c, &format!("s:{k}")),
                    "seed {seed} round {round} key {k}: bytes and expiry"
                );
            }
        }
    }
    assert!(items_total > 5_000, "{items_total} items");
    assert!(corrupt_total > 50, "{corrupt_total} corrupt items");
}
