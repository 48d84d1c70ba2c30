//! The Redis store's own CPU per decision on the client side (redis-rs, the batcher, timers,
//! packing), without HTTP: over HTTP that cost is a few µs inside ~25 µs of server CPU per request
//! and drowns in the run-to-run noise of a shared machine, so a change to it is measured here.
//!
//! `TASKS` tasks (default 64, like wrk's connections) decide one-consume decisions on a 2-worker
//! runtime for `SECONDS` (default 5) over `KEYS` random keys (default 20,000), after a one-second
//! warm-up; prints decisions per second, this process's CPU (user + system, `/proc/self/stat`) per
//! decision, and the decisions per script call of the batcher.
//!
//! ```sh
//! redis-server --port 6399 --save '' &
//! cargo run --release -p tollgate-core --example redis_client_cpu -- redis://127.0.0.1:6399
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_core::redis_conn::RedisOptions;
use tollgate_core::store::{RedisStore, RedisStoreOptions, Store};
use tollgate_core::{Limit, RateKey};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU of this process, in clock ticks (fields 14 and 15 of `/proc/self/stat`).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The command name (field 2) may hold spaces; the fields after it start after its ')'.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f[11] + f[12]
}

fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let (tasks, seconds, keys) = (env("TASKS", 64), env("SECONDS", 5), env("KEYS", 20_000));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store =
            RedisStore::connect(&RedisOptions::new(vec![url]), RedisStoreOptions::default())
                .await
                .expect("connect to Redis");
        let limit = Limit::new(1_000_000, 60.0).expect("limit");
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for t in 0..tasks {
            let (store, stop, done) = (store.clone(), stop.clone(), done.clone());
            handles.push(tokio::spawn(async move {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let client = format!("client-{}", x % keys);
                    let key = RateKey::new("tenant", &client, "api_call");
                    if store.check_and_consume(key, limit, 1).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (d0, c0, t0, b0) = (
            done.load(Ordering::Relaxed),
            cpu_ticks(),
            Instant::now(),
            store.batch_counts(),
        );
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (d1, c1, t1, b1) = (
            done.load(Ordering::Relaxed),
            cpu_ticks(),
            Instant::now(),
            store.batch_counts(),
        );
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.await;
        }
        let n = (d1 - d0).max(1) as f64;
        let hz = 100.0; // CLK_TCK on Linux
        println!(
            "{:.0} decisions/s, client CPU {:.2} us per decision, {:.2} decisions per script call",
            n / (t1 - t0).as_secs_f64(),
            (c1 - c0) as f64 / hz * 1e6 / n,
            (b1.1 - b0.1) as f64 / (b1.0 - b0.0).max(1) as f64,
        );
    });
}
