//! Network faults between the real `tollgate` binary and Redis, through the fault-injecting proxy
//! (`tollgate-core/tests/support/fault_proxy.rs`), under concurrent HTTP load, for both
//! `--on-store-error` policies:
//!
//! - black hole (nothing answers, nothing closes): every decision is answered per the policy
//!   (`fail_open`, or 503 `store_unavailable`) and none hangs; health turns 503 `degraded`;
//!   decisions resume after the fault clears;
//! - TCP resets of the established connections mid-script;
//! - afterwards the count in Redis is checked against what clients were told:
//!   `processed-allowed <= count <= processed-allowed + failed`.
//!
//! `TOLLGATE_LONG_FAULTS=1` lengthens the fault.

#[path = "../../tollgate-core/tests/support/fault_proxy.rs"]
mod fault_proxy;
#[path = "../../tollgate-core/tests/support/redis_server.rs"]
mod redis_server;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fault_proxy::{FaultProxy, Mode};
use redis_server::{skip_without_redis, RedisServer};
use serde_json::{json, Value};
use support::Binary;

const TIMEOUT_MS: u64 = 100;
const HANG: Duration = Duration::from_millis(TIMEOUT_MS + 2000);

fn long() -> bool {
    std::env::var("TOLLGATE_LONG_FAULTS").is_ok_and(|v| v == "1")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn body(tenant: &str) -> Value {
    json!({"tenant_id": tenant, "client_id": "c", "action_type": "a",
           "max_requests": 1_000_000, "window_duration_seconds": 600})
}

#[derive(Debug, Default)]
struct Told {
    processed: u64,
    failed: u64,
    slowest: Duration,
    /// Answers that are neither a processed decision nor the policy's failure answer.
    wrong: Vec<String>,
}

/// Sends decisions from 8 tasks until `stop`; classifies each answer against `deny`.
async fn load(base: String, tenant: String, deny: bool, stop: Arc<AtomicBool>) -> Told {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (base, tenant, stop) = (base.clone(), tenant.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut told = Told::default();
            for _ in 0..1_000_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let started = Instant::now();
                let r = c
                    .post(format!("{base}/api/check_and_consume"))
                    .json(&body(&tenant))
                    .send()
                    .await;
                let (code, b) = match r {
                    Ok(r) => {
                        let code = r.status().as_u16();
                        (code, r.json::<Value>().await.unwrap_or(Value::Null))
                    }
                    Err(e) => (0, json!({ "client_error": e.to_string() })),
                };
                told.slowest = told.slowest.max(started.elapsed());
                match (code, b["status"].as_str(), b["error"].as_str()) {
                    (200, Some("processed"), _) if b["allowed"] == true => told.processed += 1,
                    (200, Some("fail_open"), _) if !deny && b["allowed"] == true => {
                        told.failed += 1
                    }
                    (503, _, Some("store_unavailable")) if deny => told.failed += 1,
                    _ => told.wrong.push(format!("{code} {b}")),
                }
            }
            told
        }));
    }
    let mut total = Told::default();
    for t in tasks {
        let t = t.await.expect("load task");
        total.processed += t.processed;
        total.failed += t.failed;
        total.slowest = total.slowest.max(t.slowest);
        total.wrong.extend(t.wrong);
    }
    total
}

async fn health(base: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{base}/api/health"))
        .send()
        .await
        .expect("health answered");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// The count Redis holds for `tenant`, read through a direct (unfaulted) instance.
async fn stored(base: &str, tenant: &str) -> u64 {
    let v: Value = client()
        .get(format!(
            "{base}/api/status/{tenant}/c/a?max_requests=1000000&window_duration_seconds=600"
        ))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("status JSON");
    v["current_requests"]
        .as_u64()
        .unwrap_or_else(|| panic!("no current_requests in {v}"))
}

async fn black_hole_then_resets(policy: &str) {
    let deny = policy == "deny";
    let server = RedisServer::start();
    let proxy = FaultProxy::start(([127, 0, 0, 1], server.port).into());
    let timeout = TIMEOUT_MS.to_string();
    let faulted = Binary::start(&[
        "--store",
        "redis",
        "--redis-url",
        &proxy.url(),
        "--on-store-error",
        policy,
        "--redis-timeout-ms",
        &timeout,
        "--redis-probe-interval-ms",
        "200",
    ])
    .await;
    let direct = Binary::start(&["--store", "redis", "--redis-url", &server.url()]).await;
    let base = faulted.url("");
    let tenant = format!("hole-{policy}");

    let stop = Arc::new(AtomicBool::new(false));
    let runner = tokio::spawn(load(base.clone(), tenant.clone(), deny, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    proxy.set_mode(Mode::BlackHole);
    let hole = if long() {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(2)
    };
    let hole_started = Instant::now();
    let mut saw_degraded = false;
    for _ in 0..1000 {
        if hole_started.elapsed() >= hole {
            break;
        }
        let (code, h) = health(&base).await;
        if code == 503 && h["status"] == "degraded" {
            saw_degraded = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        saw_degraded,
        "{policy}: health never reported degraded in the black hole"
    );
    proxy.set_mode(Mode::Pass);

    // Resets mid-script once decisions flow again.
    for i in 0..10u64 {
        tokio::time::sleep(Duration::from_millis(150 + i * 13 % 100)).await;
        proxy.reset_established();
    }
    let cleared = Instant::now();
    let mut resumed = None;
    for _ in 0..500 {
        let (code, h) = health(&base).await;
        if code == 200 && h["status"] == "healthy" {
            resumed = Some(cleared.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resumed = resumed.unwrap_or_else(|| panic!("{policy}: health never recovered"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let told = runner.await.expect("load");
    // Let commands the proxy still held reach Redis before counting.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let count = stored(&direct.url(""), &tenant).await;
    println!(
        "{policy}: {} processed, {} answered per policy, {} of those counted anyway; slowest \
         {:?}; healthy {resumed:?} after the last reset",
        told.processed,
        told.failed,
        count.saturating_sub(told.processed),
        told.slowest
    );
    assert!(
        told.wrong.is_empty(),
        "{policy}: answers outside the policy: {:?}",
        &told.wrong[..told.wrong.len().min(5)]
    );
    assert!(
        told.slowest < HANG,
        "{policy}: a request took {:?}",
        told.slowest
    );
    assert!(
        told.failed > 0,
        "{policy}: the fault was never seen by a client"
    );
    assert!(told.processed > 0);
    assert!(
        count >= told.processed,
        "{policy}: {} allowed decisions but Redis counts {count}: decisions lost",
        told.processed
    );
    assert!(
        count <= told.processed + told.failed,
        "{policy}: Redis counts {count} > {} allowed + {} failed: counted twice",
        told.processed,
        told.failed
    );
    let (code, h) = health(&base).await;
    assert_eq!((code, h["in_flight"].as_u64()), (200, Some(0)), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_and_resets_fail_open_per_policy_and_lose_nothing() {
    if skip_without_redis("black_hole_and_resets_fail_open") {
        return;
    }
    black_hole_then_resets("allow").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_and_resets_fail_closed_per_policy_and_lose_nothing() {
    if skip_without_redis("black_hole_and_resets_fail_closed") {
        return;
    }
    black_hole_then_resets("deny").await;
}
