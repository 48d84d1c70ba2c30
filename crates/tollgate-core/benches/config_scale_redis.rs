//! Configuration at scale in Redis mode (issue 17), against a throwaway `redis-server` this
//! benchmark starts on a free port (no persistence): single change latency at 1,000 and at N
//! configured limits, bulk import of N limits (`Change::ReplaceAll`, staged in chunks and applied
//! by one script), start-up over N limits (chunked HSCAN load), and one follower catching up with
//! a single change (a delta: one record read).
//!
//! `cargo bench -p tollgate-core --bench config_scale_redis` (N = 1,000,000; set
//! `TOLLGATE_BENCH_LIMITS` to change it, e.g. `TOLLGATE_BENCH_LIMITS=2000 cargo test -p
//! tollgate-core --bench config_scale_redis` for a quick debug run). Plain timing, not criterion:
//! each figure is one run.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_core::config::{
    Change, ConfigDocument, ConfigManager, LimitEntry, LimitSpec, RedisConfigBackend,
    TenantDocument,
};
use tollgate_core::redis_conn::{RedisConnection, RedisOptions};
use tollgate_core::Limit;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn doc(limits: usize) -> ConfigDocument {
    let spec = LimitEntry::from(LimitSpec::new(100, 60.0));
    let mut doc = ConfigDocument::default();
    for t in 0..limits {
        let mut td = TenantDocument::default();
        td.actions.insert("api_call".into(), spec.clone());
        doc.tenants.insert(format!("tenant-{t:07}"), td);
    }
    doc
}

/// Microseconds Redis has spent in scripts (`EVAL`, `EVALSHA`) so far, from `INFO commandstats`:
/// what a change costs Redis, apart from what it costs the client.
fn script_usec(port: u16) -> f64 {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "info", "commandstats"])
        .output()
        .expect("redis-cli on PATH");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("cmdstat_eval"))
        .filter_map(|l| {
            l.split("usec=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .sum()
}

/// Redis' slow log, reset, logging every command over 1 ms.
fn reset_slowlog(port: u16) {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(1000)
        .exec(&mut c)
        .unwrap();
    redis::cmd("SLOWLOG").arg("RESET").exec(&mut c).unwrap();
}

/// The longest single command in Redis' slow log, in ms: how long a bulk import held Redis' one
/// thread, while every instance's decisions waited.
fn longest_command_ms(port: u16) -> f64 {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .unwrap();
    // Each entry: [id, timestamp, duration µs, [args], client address, client name].
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query(&mut c)
        .unwrap();
    let longest = entries
        .iter()
        .filter_map(|e| match e {
            redis::Value::Array(f) => match f.get(2) {
                Some(redis::Value::Int(us)) => Some(*us),
                _ => None,
            },
            _ => None,
        })
        .max()
        .unwrap_or(0);
    longest as f64 / 1e3
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// A `redis-server` on a free port in its own directory, killed on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Server {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn backend(port: u16) -> Arc<RedisConfigBackend> {
    let mut opts = RedisOptions::new(vec![format!("redis://127.0.0.1:{port}/")]);
    // A bulk import's final script runs for seconds; this measures it, not a timeout.
    opts.command_timeout = Duration::from_secs(300);
    let conn = RedisConnection::connect(&opts).await.unwrap();
    Arc::new(RedisConfigBackend::new(
        conn,
        "bench",
        Duration::from_secs(300),
    ))
}

const WARM_UP: usize = 50;

async fn change_latency(cm: &ConfigManager, limits: usize, samples: usize) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(samples);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    // The first 50 are not counted: the first changes on a fresh store load scripts and warm
    // caches, which at 1,000 limits (nothing before them) would otherwise count against that size.
    for i in 0..WARM_UP + samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let t = format!("tenant-{:07}", x % limits as u64);
        let started = Instant::now();
        cm.apply(Change::SetAction {
            tenant: t,
            action: "api_call".into(),
            limit: Limit::new(200 + i as u64, 60.0).unwrap(),
        })
        .await
        .unwrap();
        if i >= WARM_UP {
            times.push(started.elapsed());
        }
    }
    times.sort();
    (pct(&times, 0.50), pct(&times, 0.99))
}

fn main() {
    let n: usize = std::env::var("TOLLGATE_BENCH_LIMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for limits in [1_000, n] {
            let server = Server::start();
            let cm = ConfigManager::open(backend(server.port).await, None)
                .await
                .unwrap();
            let d = doc(limits);
            reset_slowlog(server.port);
            let started = Instant::now();
            cm.apply(Change::ReplaceAll(d)).await.unwrap();
            let import = started.elapsed();
            println!(
                "redis limits={limits}: longest Redis command during the bulk import {:.1} ms",
                longest_command_ms(server.port)
            );
            let redis_before = script_usec(server.port);
            let (p50, p99) = change_latency(&cm, limits, 500).await;
            println!(
                "redis limits={limits}: Redis script time per change {:.3} ms (warm-up included)",
                (script_usec(server.port) - redis_before) / (WARM_UP + 500) as f64 / 1e3
            );
            println!(
                "redis limits={limits}: bulk import {:.2} s; single change p50 {:.2} ms, p99 {:.2} ms",
                import.as_secs_f64(),
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
            // Start-up: a fresh instance loads everything in chunks.
            let follower_backend = backend(server.port).await;
            let started = Instant::now();
            let follower = ConfigManager::open(follower_backend.clone(), None)
                .await
                .unwrap();
            let startup = started.elapsed();
            assert_eq!(follower.snapshot().tenants.len(), limits);
            // Catching up with one change made by the other instance.
            cm.apply(Change::SetAction {
                tenant: "tenant-0000000".into(),
                action: "api_call".into(),
                limit: Limit::new(7, 60.0).unwrap(),
            })
            .await
            .unwrap();
            let read_before = follower_backend.load_stats().records_read;
            let started = Instant::now();
            assert!(follower.refresh().await.unwrap());
            let catch_up = started.elapsed();
            println!(
                "redis limits={limits}: start-up (chunked load + validate) {:.2} s; follower catch-up with one change {:.2} ms ({} record read)",
                startup.as_secs_f64(),
                catch_up.as_secs_f64() * 1e3,
                follower_backend.load_stats().records_read - read_before
            );
        }
    });
}
