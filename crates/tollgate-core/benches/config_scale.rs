//! Configuration at scale in memory mode (issue 17), on the real redb store in a temporary data
//! dir: single change latency at 1,000 and at N configured limits, bulk import of N limits (the
//! `--config` path, `Change::ReplaceAll`), start-up over N limits, and resident memory per limit.
//!
//! `cargo bench -p tollgate-core --bench config_scale` (N = 1,000,000; set
//! `TOLLGATE_BENCH_LIMITS` to change it). Plain timing, not criterion: each figure is one run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_core::config::{
    Change, ConfigDocument, ConfigManager, EmbeddedBackend, LimitEntry, LimitSpec, TenantDocument,
};
use tollgate_core::Limit;

// The server's allocator, so memory figures match the binary.
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

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn open(dir: &std::path::Path) -> ConfigManager {
    ConfigManager::open(Arc::new(EmbeddedBackend::new(dir).unwrap()), None)
        .await
        .unwrap()
}

const WARM_UP: usize = 50;

/// p50 and p99 of `samples` single changes to random configured tenants.
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

/// Set in the child process that measures start-up and memory over the data dir it names.
const STARTUP_DIR: &str = "TOLLGATE_BENCH_STARTUP_DIR";

/// Start-up over the stored configuration of `limits` limits in `dir`, and the resident memory it
/// adds, in a process that has done nothing else.
async fn startup(dir: &std::path::Path, limits: usize) {
    let before = rss_bytes();
    let started = Instant::now();
    let cm = open(dir).await;
    let startup = started.elapsed();
    let at_once = rss_bytes();
    // The allocator returns freed pages to the system after a short delay (mimalloc's purge
    // delay): measure what stays, as a running server would hold it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_bytes();
    assert_eq!(cm.snapshot().tenants.len(), limits);
    println!(
        "limits={limits}: RSS right after start-up {} MiB",
        at_once >> 20
    );
    println!(
        "limits={limits}: start-up (load + validate) {:.2} s; resident memory {} bytes per configured limit (RSS {} MiB -> {} MiB)",
        startup.as_secs_f64(),
        after.saturating_sub(before) / limits as u64,
        before >> 20,
        after >> 20
    );
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
    if let Some(dir) = std::env::var_os(STARTUP_DIR) {
        rt.block_on(startup(std::path::Path::new(&dir), n));
        return;
    }
    rt.block_on(async {
        for limits in [1_000, n] {
            let dir = tempfile::tempdir().unwrap();
            let cm = open(dir.path()).await;
            let d = doc(limits);
            let started = Instant::now();
            cm.apply(Change::ReplaceAll(d)).await.unwrap();
            let import = started.elapsed();
            let (p50, p99) = change_latency(&cm, limits, 500).await;
            println!(
                "limits={limits}: bulk import {:.2} s; single change p50 {:.2} ms, p99 {:.2} ms",
                import.as_secs_f64(),
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
            drop(cm);
            if limits == n {
                // Start-up and memory in a fresh process: in this one the bulk import's freed
                // memory is still mapped, so the RSS delta of a start-up here would read as a few
                // bytes per limit (it did: 3 and 47 bytes in two runs).
                let out = std::process::Command::new(std::env::current_exe().unwrap())
                    .env(STARTUP_DIR, dir.path())
                    .env("TOLLGATE_BENCH_LIMITS", limits.to_string())
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                print!("{}", String::from_utf8_lossy(&out.stdout));
            }
        }
    });
}
