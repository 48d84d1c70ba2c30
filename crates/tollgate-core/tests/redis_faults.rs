//! The Redis store under network faults, each under concurrent load, through the fault-injecting
//! proxy in `support/fault_proxy.rs` between the store and a real `redis-server`:
//!
//! - latency of 5, 50 and 500 ms per round trip;
//! - a black hole (nothing answers, nothing closes) and recovery once it clears;
//! - TCP resets of the established connection in the middle of scripts.
//!
//! Every phase checks that no call hangs (each returns within the command timeout plus a 2 s
//! margin: a bound that only a hang can break) and that each result is a verdict or
//! `Unavailable`. After each phase the log in Redis is read back and checked against what callers
//! were told: with `A` decisions answered "allowed" and `F` answered with an error, the count
//! stored must satisfy `A <= count <= A + F` — an allowed decision is never lost, none is counted
//! twice, and only a decision whose caller saw an error may or may not have been counted (the
//! single-node connection does not retry a command on a dropped connection: at most once).
//!
//! Set `TOLLGATE_LONG_FAULTS=1` for longer phases.

#[path = "support/fault_proxy.rs"]
mod fault_proxy;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fault_proxy::{FaultProxy, Mode};
use redis_server::{skip_without_redis, RedisServer};
use tollgate_core::redis_conn::RedisOptions;
use tollgate_core::store::{RedisStore, RedisStoreOptions, Store, StoreError};
use tollgate_core::{Limit, RateKey};

const TIMEOUT: Duration = Duration::from_millis(100);
const PROBE: Duration = Duration::from_millis(200);
/// A call that takes longer than the Redis timeout plus this has hung.
const HANG_MARGIN: Duration = Duration::from_secs(2);
const TASKS: usize = 8;
const KEYS: usize = 4;

fn long() -> bool {
    std::env::var("TOLLGATE_LONG_FAULTS").is_ok_and(|v| v == "1")
}

fn phase_len() -> Duration {
    if long() {
        Duration::from_secs(10)
    } else {
        Duration::from_millis(1500)
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn store_via(proxy: &FaultProxy) -> RedisStore {
    let mut opts = RedisOptions::new(vec![proxy.url()]);
    opts.command_timeout = TIMEOUT;
    RedisStore::connect(
        &opts,
        RedisStoreOptions {
            probe_interval: PROBE,
            ..RedisStoreOptions::default()
        },
    )
    .await
    .expect("connect through the proxy")
}

/// Large enough that no decision in these tests is a denial: every "allowed" is one logged request.
fn limit() -> Limit {
    Limit::new(1_000_000, 600.0).expect("valid limit")
}

fn tenant(k: usize) -> String {
    format!("fault-{k}")
}

/// What callers were told, per key, over one phase.
#[derive(Debug, Default, Clone)]
struct Tally {
    allowed: Vec<u64>,
    denied: u64,
    errors: Vec<u64>,
    corrupt: u64,
    slowest: Duration,
    /// Whether `is_healthy()` was seen false during the phase (circuit open).
    saw_open: bool,
}

impl Tally {
    fn new() -> Self {
        Tally {
            allowed: vec![0; KEYS],
            errors: vec![0; KEYS],
            ..Tally::default()
        }
    }
    fn merge(&mut self, o: &Tally) {
        for k in 0..KEYS {
            self.allowed[k] += o.allowed[k];
            self.errors[k] += o.errors[k];
        }
        self.denied += o.denied;
        self.corrupt += o.corrupt;
        self.slowest = self.slowest.max(o.slowest);
        self.saw_open |= o.saw_open;
    }
    fn ok(&self) -> u64 {
        self.allowed.iter().sum()
    }
    fn err(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// `TASKS` concurrent callers, each deciding on the keys in turn until `stop` is set (or a bound on
/// calls is reached).
async fn load(store: &RedisStore, stop: Arc<AtomicBool>) -> Tally {
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            for i in 0..200_000usize {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let k = (t + i) % KEYS;
                let name = tenant(k);
                let started = Instant::now();
                let r = store
                    .check_and_consume(RateKey::new(&name, "c", "a"), limit(), 1)
                    .await;
                tally.slowest = tally.slowest.max(started.elapsed());
                tally.saw_open |= !store.is_healthy();
                match r {
                    Ok(v) if v.allowed => tally.allowed[k] += 1,
                    Ok(_) => tally.denied += 1,
                    Err(StoreError::Unavailable(_)) => {
                        tally.errors[k] += 1;
                        // Failing fast is instant; do not spin a core on it.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err(StoreError::Corrupt { .. }) => tally.corrupt += 1,
                    Err(e) => panic!("unexpected store error under a network fault: {e}"),
                }
            }
            tally
        }));
    }
    let mut total = Tally::new();
    for h in handles {
        total.merge(&h.await.expect("load task"));
    }
    total
}

/// Runs `load` while `during` applies faults, stopping after the phase length.
async fn phase<F, Fut>(store: &RedisStore, during: F) -> Tally
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let runner = {
        let store = store.clone();
        let stop = stop.clone();
        tokio::spawn(async move { load(&store, stop).await })
    };
    during().await;
    stop.store(true, Ordering::SeqCst);
    runner.await.expect("load runner")
}

/// Waits (bounded) until a decision succeeds again and the circuit is closed.
async fn recovers(store: &RedisStore) -> Duration {
    let started = Instant::now();
    for _ in 0..1000 {
        let r = store
            .check_and_consume(RateKey::new("probe", "c", "a"), limit(), 1)
            .await;
        if r.is_ok() && store.is_healthy() {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the store did not recover after the fault cleared");
}

/// The count stored for each key, read directly from Redis (not through the proxy), once no
/// command is in flight any more.
async fn stored_counts(direct: &RedisStore) -> Vec<u64> {
    let mut out = Vec::new();
    for k in 0..KEYS {
        let name = tenant(k);
        let v = direct
            .status(RateKey::new(&name, "c", "a"), limit())
            .await
            .expect("status straight from Redis");
        out.push(v.used);
    }
    out
}

/// `A <= stored <= A + F` for every key, cumulatively over all phases so far.
fn assert_accounted(what: &str, told: &Tally, stored: &[u64]) {
    assert_eq!(told.denied, 0, "{what}: nothing here should be denied");
    assert_eq!(
        told.corrupt, 0,
        "{what}: a network fault must not corrupt a key"
    );
    for (k, &count) in stored.iter().enumerate() {
        let (a, f) = (told.allowed[k], told.errors[k]);
        assert!(
            count >= a,
            "{what}: key {k}: {a} decisions were answered allowed but Redis counts only {count} (lost)"
        );
        assert!(
            count <= a + f,
            "{what}: key {k}: Redis counts {count} but callers were told {a} allowed + {f} failed (counted twice)"
        );
    }
}

struct Rig {
    server: RedisServer,
    proxy: FaultProxy,
    store: RedisStore,
    direct: RedisStore,
}

async fn rig() -> Rig {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(([127, 0, 0, 1], server.port).into());
    let store = store_via(&proxy).await;
    let direct = RedisStore::connect(
        &RedisOptions::new(vec![server.url()]),
        RedisStoreOptions::default(),
    )
    .await
    .expect("direct connection");
    Rig {
        server,
        proxy,
        store,
        direct,
    }
}

/// EVALSHA calls Redis has run since the last `CONFIG RESETSTAT`.
fn evalsha_calls(server: &RedisServer) -> u64 {
    let info = server
        .command(&["INFO", "commandstats"])
        .expect("INFO commandstats");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Lets commands the proxy still holds reach Redis before counts are read.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

#[test]
fn latency_of_5_50_and_500_ms_is_answered_within_the_timeout_and_the_breaker_follows() {
    if skip_without_redis("latency_of_5_50_and_500_ms") {
        return;
    }
    rt().block_on(async {
        let rig = rig().await;
        let mut told = Tally::new();
        for ms in [5u64, 50, 500] {
            rig.proxy.set_latency(Duration::from_millis(ms));
            rig.server.command(&["CONFIG", "RESETSTAT"]);
            let started = Instant::now();
            let t = phase(&rig.store, || tokio::time::sleep(phase_len())).await;
            let elapsed = started.elapsed();
            let reached = evalsha_calls(&rig.server);
            println!(
                "latency {ms} ms: {} answered, {} errors, slowest call {:?}, circuit opened: {}",
                t.ok(),
                t.err(),
                t.slowest,
                t.saw_open
            );
            assert!(
                t.slowest < TIMEOUT + HANG_MARGIN,
                "latency {ms} ms: a call took {:?}",
                t.slowest
            );
            match ms {
                // Well inside the timeout: decisions go through.
                5 => assert!(t.ok() > 0, "5 ms: no decision succeeded"),
                // Beyond the timeout every call fails; after 3 failures the circuit opens.
                500 => {
                    assert_eq!(t.ok(), 0, "500 ms: a reply beat the 100 ms timeout");
                    assert!(t.saw_open, "500 ms: the circuit never opened");
                    assert!(
                        !rig.store.is_healthy(),
                        "500 ms: circuit closed under the fault"
                    );
                    // While open, only one probe per interval reaches Redis: the calls it saw are
                    // the ones before the circuit opened (at most the threshold plus what the
                    // tasks had in flight or sent meanwhile) and the probes.
                    let probes = (elapsed.as_millis() / PROBE.as_millis()) as u64 + 1;
                    let bound = 3 + 2 * TASKS as u64 + probes;
                    println!(
                        "latency 500 ms: {} calls made, {reached} reached Redis (bound {bound})",
                        t.err()
                    );
                    assert!(
                        reached <= bound,
                        "{reached} calls reached Redis in {elapsed:?} with the circuit open (bound {bound})"
                    );
                    assert!(t.err() > 2 * bound, "too few calls to show the circuit saved any");
                }
                _ => {}
            }
            told.merge(&t);
        }
        rig.proxy.clear();
        let took = recovers(&rig.store).await;
        println!("latency cleared: circuit closed again after {took:?}");
        // Replies delayed 500 ms arrive after the callers gave up: those scripts ran.
        settle().await;
        assert_accounted("latency", &told, &stored_counts(&rig.direct).await);
    });
}

#[test]
fn black_hole_fails_every_call_within_the_timeout_and_recovers_when_it_clears() {
    if skip_without_redis("black_hole_fails_every_call") {
        return;
    }
    rt().block_on(async {
        let rig = rig().await;
        let before = phase(&rig.store, || {
            tokio::time::sleep(Duration::from_millis(500))
        })
        .await;
        assert!(before.ok() > 0, "no decision before the fault");
        rig.proxy.set_mode(Mode::BlackHole);
        let during = phase(&rig.store, || tokio::time::sleep(phase_len() * 2)).await;
        println!(
            "black hole: {} answered, {} errors, slowest call {:?}, circuit opened: {}",
            during.ok(),
            during.err(),
            during.slowest,
            during.saw_open
        );
        assert!(
            during.slowest < TIMEOUT + HANG_MARGIN,
            "black hole: a call took {:?}",
            during.slowest
        );
        assert_eq!(during.ok(), 0, "an answer came out of the black hole");
        assert!(during.err() > 0);
        assert!(during.saw_open && !rig.store.is_healthy());
        rig.proxy.set_mode(Mode::Pass);
        let took = recovers(&rig.store).await;
        println!("black hole cleared: decisions resumed after {took:?}");
        let after = phase(&rig.store, || {
            tokio::time::sleep(Duration::from_millis(500))
        })
        .await;
        assert!(after.ok() > 0, "no decision after recovery");
        settle().await;
        let mut told = before;
        told.merge(&during);
        told.merge(&after);
        assert_accounted("black hole", &told, &stored_counts(&rig.direct).await);
    });
}

#[test]
fn resets_mid_script_never_lose_or_double_count_a_decision() {
    if skip_without_redis("resets_mid_script") {
        return;
    }
    rt().block_on(async {
        let rig = rig().await;
        let resets = if long() { 200 } else { 20 };
        let proxy = &rig.proxy;
        // Spaced so that the store reconnects and decides between resets: each reset then cuts
        // scripts that are in flight, not a connection that is still down.
        let t = phase(&rig.store, || async {
            for i in 0..resets {
                tokio::time::sleep(Duration::from_millis(120 + (i * 37) % 100)).await;
                proxy.reset_established();
            }
        })
        .await;
        proxy.clear();
        recovers(&rig.store).await;
        settle().await;
        let stored = stored_counts(&rig.direct).await;
        let counted_failures: u64 = stored.iter().sum::<u64>() - t.ok();
        println!(
            "{resets} resets: {} allowed, {} failed, of which {counted_failures} were nevertheless \
             counted in Redis; {} connections accepted",
            t.ok(),
            t.err(),
            proxy.accepted()
        );
        assert!(
            t.err() > 0,
            "no reset hit a call in flight; the test proved nothing"
        );
        assert!(t.ok() > 0, "no decision went through between resets");
        assert!(proxy.accepted() > 1, "the store never reconnected");
        assert!(
            t.slowest < TIMEOUT + HANG_MARGIN,
            "a call took {:?}",
            t.slowest
        );
        assert_accounted("resets", &t, &stored);
    });
}

#[test]
fn stalled_and_refused_connections_fail_within_the_timeout_and_recover() {
    if skip_without_redis("stalled_and_refused_connections") {
        return;
    }
    rt().block_on(async {
        let rig = rig().await;
        let proxy = &rig.proxy;
        // A stall of the established connection, then a reset while new connections are refused:
        // the store must reconnect once they are allowed again.
        let t = phase(&rig.store, || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            proxy.set_mode(Mode::Stall);
            tokio::time::sleep(phase_len()).await;
            proxy.set_mode(Mode::RefuseNew);
            proxy.reset_established();
            tokio::time::sleep(phase_len()).await;
        })
        .await;
        println!(
            "stall + refuse: {} answered, {} errors, slowest {:?}",
            t.ok(),
            t.err(),
            t.slowest
        );
        assert!(
            t.slowest < TIMEOUT + HANG_MARGIN,
            "a call took {:?}",
            t.slowest
        );
        assert!(t.err() > 0 && t.saw_open, "the faults were not seen");
        assert!(
            !rig.store.is_healthy(),
            "circuit closed while connections are refused"
        );
        proxy.clear();
        let took = recovers(&rig.store).await;
        println!("stall + refuse cleared: decisions resumed after {took:?}");
        settle().await;
        assert_accounted("stall + refuse", &t, &stored_counts(&rig.direct).await);
    });
}

/// The same resets on a cluster connection: a one-node Redis Cluster that announces the proxy's
/// port, so every connection the cluster client opens (seed and slot owner) goes through it.
#[test]
fn resets_mid_script_on_a_cluster_connection_never_double_count() {
    if skip_without_redis("resets_mid_script_on_a_cluster_connection") {
        return;
    }
    let node = RedisServer::start_cluster_node();
    let proxy = FaultProxy::start(([127, 0, 0, 1], node.port).into());
    let port = proxy.addr.port().to_string();
    node.command(&["CONFIG", "SET", "cluster-announce-port", &port])
        .expect("announce the proxy's port");
    node.command(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])
        .expect("take every slot");
    let mut ok = false;
    for _ in 0..200 {
        if node
            .command(&["CLUSTER", "INFO"])
            .is_some_and(|r| r.contains("cluster_state:ok"))
        {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "one-node cluster did not become ok");
    rt().block_on(async {
        let mut opts = RedisOptions::new(vec![proxy.url()]);
        opts.command_timeout = TIMEOUT;
        opts.force_cluster = true;
        let store = RedisStore::connect(
            &opts,
            RedisStoreOptions {
                probe_interval: PROBE,
                ..RedisStoreOptions::default()
            },
        )
        .await
        .expect("connect to the one-node cluster through the proxy");
        assert!(store.connection().is_cluster());
        let direct = RedisStore::connect(
            &RedisOptions::new(vec![node.url()]),
            RedisStoreOptions::default(),
        )
        .await
        .expect("direct connection");
        let resets = if long() { 200 } else { 20 };
        let t = phase(&store, || async {
            for i in 0..resets {
                tokio::time::sleep(Duration::from_millis(120 + (i * 37) % 100)).await;
                proxy.reset_established();
            }
        })
        .await;
        proxy.clear();
        recovers(&store).await;
        settle().await;
        let stored = stored_counts(&direct).await;
        let extra: u64 = stored.iter().sum::<u64>().saturating_sub(t.ok());
        println!(
            "cluster, {resets} resets: {} allowed, {} failed, {extra} counted beyond allowed; {} \
             connections accepted",
            t.ok(),
            t.err(),
            proxy.accepted()
        );
        assert!(
            t.err() > 0 && t.ok() > 0,
            "the resets did not interleave with decisions"
        );
        assert_accounted("cluster resets", &t, &stored);
    });
}
