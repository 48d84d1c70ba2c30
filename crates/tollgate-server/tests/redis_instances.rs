//! Several real `tollgate` binaries over one Redis (and over a 3-master Redis Cluster): exactness
//! across instances, configuration propagation, Redis faults, and clock skew between instances.
//!
//! Every Redis here is started by the test on a free loopback port. The tests in this file run
//! one at a time (they load the machine) through `SERIAL`.

#[path = "../../tollgate-core/tests/support/redis_server.rs"]
mod redis_server;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_server::{skip_without_redis, RedisCluster, RedisServer};
use serde_json::{json, Value};
use support::Binary;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One `tollgate` process in redis mode (the shared test binary runner), killed on drop.
struct Instance {
    _bin: Binary,
    base: String,
}

impl Instance {
    async fn start(redis_urls: &[String], extra: &[&str]) -> Self {
        let urls = redis_urls.join(",");
        let mut args = vec!["--store", "redis", "--redis-url", &urls];
        args.extend_from_slice(extra);
        let bin = Binary::start(&args).await;
        let base = bin.url("");
        Self { _bin: bin, base }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One answered decision as the load generator saw it.
#[derive(Debug, Clone)]
struct Answer {
    /// When the request was sent, since the start of the load.
    sent: Duration,
    latency: Duration,
    code: u16,
    body: Value,
    instance: usize,
}

/// Sends decisions for one key from `tasks` concurrent tasks, round-robin over `bases`, for `run`.
async fn hammer(bases: Vec<String>, body: Value, tasks: usize, run: Duration) -> Vec<Answer> {
    let client = client();
    let start = Instant::now();
    let bases = Arc::new(bases);
    let body = Arc::new(body);
    let mut handles = Vec::new();
    for task in 0..tasks {
        let client = client.clone();
        let bases = bases.clone();
        let body = body.clone();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut i = task;
            while start.elapsed() < run {
                let instance = i % bases.len();
                i += 1;
                let sent = start.elapsed();
                let t = Instant::now();
                let r = client
                    .post(format!("{}/api/check_and_consume", bases[instance]))
                    .json(&*body)
                    .send()
                    .await
                    .expect("every request is answered");
                let code = r.status().as_u16();
                let body: Value = r.json().await.expect("JSON body");
                out.push(Answer {
                    sent,
                    latency: t.elapsed(),
                    code,
                    body,
                    instance,
                });
            }
            out
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort_by_key(|a| a.sent);
    all
}

/// Under saturating load a sliding window admits in bursts one window apart: the first `max`
/// at once, then each slot again exactly when it leaves the window. Groups admitted answers by
/// burst (bursts are ~a window apart, so half a window either side is unambiguous) and returns
/// the count per burst.
fn admitted_per_window(answers: &[Answer], window: Duration) -> Vec<usize> {
    let admitted: Vec<Duration> = answers
        .iter()
        .filter(|a| a.code == 200 && a.body["allowed"] == true)
        .map(|a| a.sent + a.latency)
        .collect();
    let first = *admitted.iter().min().expect("something was admitted");
    let mut counts = Vec::new();
    for t in admitted {
        let k = ((t - first).as_secs_f64() / window.as_secs_f64() + 0.5).floor() as usize;
        if counts.len() <= k {
            counts.resize(k + 1, 0);
        }
        counts[k] += 1;
    }
    counts
}

/// Three instances hammer one key at 500 per 2 s for 3.5 windows: every window admits exactly 500.
async fn exact_across_instances(urls: Vec<String>) {
    // Exactness is what is checked here, not latency: a generous Redis timeout keeps a loaded
    // machine from turning slow answers into fail_open ones (the outage test covers timeouts).
    let slow_ok: &[&str] = &["--redis-timeout-ms", "2000"];
    let instances = [
        Instance::start(&urls, slow_ok).await,
        Instance::start(&urls, slow_ok).await,
        Instance::start(&urls, slow_ok).await,
    ];
    let bases: Vec<String> = instances.iter().map(|i| i.base.clone()).collect();
    let window = Duration::from_secs(2);
    let body = json!({"tenant_id": "exact", "client_id": "c", "action_type": "a",
                      "max_requests": 500, "window_duration_seconds": 2});
    let answers = hammer(bases.clone(), body, 24, window * 7 / 2).await;
    for a in &answers {
        assert!(a.code == 200 || a.code == 429, "unexpected answer {a:?}");
        assert_eq!(a.body["status"], "processed");
    }
    let per_instance: Vec<usize> = (0..3)
        .map(|i| {
            answers
                .iter()
                .filter(|a| a.instance == i && a.body["allowed"] == true)
                .count()
        })
        .collect();
    let counts = admitted_per_window(&answers, window);
    eprintln!(
        "{} decisions; admitted per window {counts:?}; admitted per instance {per_instance:?}",
        answers.len()
    );
    assert_eq!(counts.len(), 4, "bursts at 0, 2, 4 and 6 s: {counts:?}");
    for (k, n) in counts.iter().enumerate() {
        assert_eq!(*n, 500, "window {k} admitted {n}, not exactly the limit");
    }
    assert!(
        per_instance.iter().filter(|&&n| n > 0).count() >= 2,
        "the admissions were shared among instances: {per_instance:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_over_one_redis_admit_exactly_the_limit_per_window() {
    if skip_without_redis("three_instances_over_one_redis") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    exact_across_instances(vec![redis.url()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_over_a_redis_cluster_admit_exactly_the_limit_per_window() {
    if skip_without_redis("three_instances_over_a_redis_cluster") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start();
    exact_across_instances(cluster.urls()).await;
}

async fn put_action(base: &str, tenant: &str, action: &str, max: u64) {
    let r = client()
        .put(format!("{base}/api/config/tenant/{tenant}/action/{action}"))
        .json(&json!({"max_requests": max, "window_duration_seconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

/// Polls `base` until its decisions use an action limit of `max`; returns how long that took.
async fn time_until_limit(base: &str, tenant: &str, max: u64) -> Duration {
    let c = client();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let r = c
            .post(format!("{base}/api/check_and_consume"))
            .json(&json!({"tenant_id": tenant, "client_id": "c", "action_type": "x"}))
            .send()
            .await
            .unwrap();
        let b: Value = r.json().await.unwrap();
        if b["limit"]["source"] == "action" && b["limit"]["max_requests"] == max {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{base} never applied the limit {max}");
}

/// A change through A governs B within a second, and back; a restarted instance keeps it.
async fn config_propagates(urls: Vec<String>) {
    let a = Instance::start(&urls, &[]).await;
    let mut b = Instance::start(&urls, &[]).await;
    put_action(&a.base, "tp", "x", 3).await;
    let took = time_until_limit(&b.base, "tp", 3).await;
    eprintln!("A -> B propagation: {took:?}");
    assert!(took <= Duration::from_secs(1), "took {took:?}");
    put_action(&b.base, "tp", "x", 5).await;
    let took = time_until_limit(&a.base, "tp", 5).await;
    eprintln!("B -> A propagation: {took:?}");
    assert!(took <= Duration::from_secs(1), "took {took:?}");
    // A restarted instance loses nothing: the configuration lives in Redis.
    drop(b);
    b = Instance::start(&urls, &[]).await;
    let cfg: Value = client()
        .get(format!("{}/api/config", b.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        cfg["tenants"]["tp"]["actions"]["x"]["max_requests"], 5,
        "{cfg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_through_one_instance_governs_another_within_a_second() {
    if skip_without_redis("config propagation") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    config_propagates(vec![redis.url()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_propagates_over_a_redis_cluster_too() {
    if skip_without_redis("config propagation over a cluster") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start();
    config_propagates(cluster.urls()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_open_or_closed_fast_and_decisions_resume() {
    if skip_without_redis("redis outage") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut redis = RedisServer::start();
    let urls = vec![redis.url()];
    let open = Instance::start(&urls, &["--on-store-error", "allow"]).await;
    let closed = Instance::start(&urls, &["--on-store-error", "deny"]).await;
    let bases = vec![open.base.clone(), closed.base.clone()];
    let body = json!({"tenant_id": "fault", "client_id": "c", "action_type": "a",
                      "max_requests": 1000000, "window_duration_seconds": 60});
    let load = tokio::spawn(hammer(bases.clone(), body, 8, Duration::from_millis(5500)));
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = start.elapsed();
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let c = client();
    let h = c
        .get(format!("{}/api/health", open.base))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 503);
    let hb: Value = h.json().await.unwrap();
    assert_eq!(hb["status"], "degraded", "{hb}");
    // A configuration change cannot be stored either: 503, and it is not applied.
    let r = c
        .put(format!("{}/api/config/tenant/fault/action/a", open.base))
        .json(&json!({"max_requests": 7, "window_duration_seconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let rb: Value = r.json().await.unwrap();
    assert_eq!(rb["error"], "store_unavailable", "{rb}");
    let t: Value = c
        .get(format!("{}/api/config/tenant/fault", open.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!t.to_string().contains("\"max_requests\":7"), "{t}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted_at = start.elapsed();
    redis.restart();
    let answers = load.await.unwrap();

    let outage = killed_at + Duration::from_millis(100)..restarted_at;
    let mut during = [0usize; 2];
    let mut worst = Duration::ZERO;
    for a in answers.iter().filter(|a| outage.contains(&a.sent)) {
        during[a.instance] += 1;
        worst = worst.max(a.latency);
        if a.instance == 0 {
            assert_eq!(a.code, 200, "{a:?}");
            assert_eq!(a.body["status"], "fail_open", "{a:?}");
            assert_eq!(a.body["allowed"], true);
        } else {
            assert_eq!(a.code, 503, "{a:?}");
            assert_eq!(a.body["error"], "store_unavailable", "{a:?}");
        }
    }
    let all_worst = answers.iter().map(|a| a.latency).max().unwrap();
    eprintln!(
        "outage: {during:?} answers (allow, deny), slowest {worst:?}; slowest overall {all_worst:?}"
    );
    assert!(
        during[0] > 50 && during[1] > 50,
        "load continued during the outage"
    );
    assert!(
        all_worst < Duration::from_secs(2),
        "no request hangs: {all_worst:?}"
    );
    // Decisions resume within 2 s of Redis coming back, on both instances.
    for inst in 0..2 {
        let resumed = answers
            .iter()
            .filter(|a| a.instance == inst && a.sent > restarted_at)
            .find(|a| a.body["status"] == "processed")
            .map(|a| a.sent - restarted_at);
        eprintln!("instance {inst} resumed after {resumed:?}");
        assert!(
            resumed.is_some_and(|d| d <= Duration::from_secs(2)),
            "instance {inst} resumed after {resumed:?}"
        );
    }
    // Nothing leaked in the load manager, and health is back.
    for base in &bases {
        let h: Value = c
            .get(format!("{base}/api/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(h["status"], "healthy", "{h}");
        assert_eq!(h["in_flight"], 0, "{h}");
        assert_eq!(h["queued"], 0, "{h}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_instance_clocks_do_not_change_decisions() {
    if skip_without_redis("clock skew") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let urls = vec![redis.url()];
    // One instance an hour ahead, one an hour behind, one on time.
    let instances = [
        Instance::start(
            &urls,
            &["--clock-offset-ms", "3600000", "--redis-timeout-ms", "2000"],
        )
        .await,
        Instance::start(
            &urls,
            &[
                "--clock-offset-ms",
                "-3600000",
                "--redis-timeout-ms",
                "2000",
            ],
        )
        .await,
        Instance::start(&urls, &[]).await,
    ];
    let bases: Vec<String> = instances.iter().map(|i| i.base.clone()).collect();
    let window = Duration::from_secs(2);
    let body = json!({"tenant_id": "skew", "client_id": "c", "action_type": "a",
                      "max_requests": 100, "window_duration_seconds": 2});
    let answers = hammer(bases.clone(), body, 12, window * 5 / 2).await;
    let counts = admitted_per_window(&answers, window);
    eprintln!("skewed clocks: admitted per window {counts:?}");
    assert_eq!(
        counts,
        vec![100, 100, 100],
        "exact whatever the instances' clocks say"
    );
    // Every instance reports the same reset time for the first burst, on Redis's clock.
    let redis_now: u64 = {
        let r = redis.command(&["TIME"]).unwrap();
        r.lines().nth(2).unwrap().parse().unwrap()
    };
    let first_burst: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.body["allowed"] == true && a.sent < window / 2)
        .collect();
    for inst in 0..3 {
        let resets: Vec<u64> = first_burst
            .iter()
            .filter(|a| a.instance == inst)
            .map(|a| a.body["reset_time_seconds"].as_u64().unwrap())
            .collect();
        assert!(
            !resets.is_empty(),
            "instance {inst} admitted in the first burst"
        );
        for r in resets {
            assert!(
                r.abs_diff(redis_now) <= 5,
                "instance {inst}: reset {r} is on Redis time ({redis_now}), not its own clock"
            );
        }
    }
}
