//! Redis store vs memory store, in process: decisions/s and p50/p99 latency with 64 concurrent
//! tasks, Redis round trips per decision (from `INFO commandstats`), and Redis memory per logged
//! request (`MEMORY USAGE` on a key holding 100,000 logged requests).
//!
//! Starts its own redis-server on a free port. Run: `cargo bench -p tollgate-core --bench redis_store`
//! (`TOLLGATE_BENCH_SECS` sets the seconds per store, default 5).

#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_core::clock::Micros;
use tollgate_core::redis_conn::RedisOptions;
use tollgate_core::store::{MemoryStore, RedisStore, RedisStoreOptions, Store};
use tollgate_core::{Limit, RateKey};

const TASKS: usize = 64;
const KEYS_PER_TASK: usize = 1000;

struct Figures {
    decisions: usize,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

async fn drive(store: Arc<dyn Store>, run: Duration) -> Figures {
    let limit = Limit::new(1_000_000, 60.0).unwrap();
    let start = Instant::now();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let tenant = format!("tenant{task}");
            let mut lat = Vec::with_capacity(200_000);
            let mut i = 0usize;
            while start.elapsed() < run {
                let client = format!("c{}", i % KEYS_PER_TASK);
                i += 1;
                let t = Instant::now();
                let v = store
                    .check_and_consume(RateKey::new(&tenant, &client, "bench"), limit, 1)
                    .await
                    .expect("store answers");
                lat.push(t.elapsed());
                std::hint::black_box(v);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Figures {
        decisions: all.len(),
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        max: *all.last().unwrap(),
    }
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<8} {:>10.0} decisions/s   p50 {:>9.1?}   p99 {:>9.1?}   max {:>9.1?}   ({} decisions, {TASKS} tasks)",
        f.per_sec, f.p50, f.p99, f.max, f.decisions
    );
}

fn stat(info: &str, cmd: &str) -> u64 {
    info.lines()
        .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if redis_server::skip_without_redis("redis_store bench") {
        return;
    }
    let secs: u64 = std::env::var("TOLLGATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let run = Duration::from_secs(secs);
    let server = redis_server::RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let memory: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let redis = RedisStore::connect(
            &RedisOptions::new(vec![server.url()]),
            RedisStoreOptions::default(),
        )
        .await
        .expect("connect to the bench redis");
        // Load the script once so the measured window counts only decisions.
        redis
            .check_and_consume(RateKey::new("warm", "up", "x"), Limit::new(1, 1.0).unwrap(), 1)
            .await
            .unwrap();

        let m = drive(memory, run).await;
        print("memory", &m);

        server.command(&["CONFIG", "RESETSTAT"]).unwrap();
        let r = drive(Arc::new(redis.clone()), run).await;
        print("redis", &r);
        let info = server.command(&["INFO", "commandstats"]).unwrap();
        let evalsha = stat(&info, "evalsha");
        let client_cmds = evalsha + stat(&info, "eval") + stat(&info, "script|load");
        println!(
            "redis round trips per decision: {:.3} ({client_cmds} client commands: {evalsha} EVALSHA, {} EVAL, {} SCRIPT LOAD; {} decisions)",
            client_cmds as f64 / r.decisions as f64,
            stat(&info, "eval"),
            stat(&info, "script|load"),
            r.decisions
        );
        if let Some(line) = info.lines().find(|l| l.starts_with("cmdstat_evalsha:")) {
            println!("redis {line}");
        }
        println!(
            "redis/memory throughput: {:.1}%",
            100.0 * r.per_sec / m.per_sec
        );

        // Memory: 100,000 requests spread over a 100 s window so nearly every tick has its own
        // entry (the worst case for a key of that many requests).
        let key = RateKey::new("mem", "c", "a");
        let l = Limit::new(100_000, 100.0).unwrap();
        // In the future: explicit times set the key's expiry absolutely.
        let t0: Micros = 4_000_000_000_000_000;
        for i in 0..100_000u64 {
            redis
                .check_and_consume_at(key, l, 1, t0 + i * 990)
                .await
                .unwrap();
        }
        let name = String::from_utf8(redis.redis_key(key)).unwrap();
        let usage = server
            .command(&["MEMORY", "USAGE", &name, "SAMPLES", "0"])
            .unwrap();
        let bytes: u64 = usage[1..].trim().parse().unwrap();
        println!(
            "redis MEMORY USAGE, key with 100,000 logged requests: {bytes} bytes = {:.2} bytes/request",
            bytes as f64 / 100_000.0
        );
    });
}
