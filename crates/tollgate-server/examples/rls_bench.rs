//! Decisions per second through Envoy RLS (gRPC `ShouldRateLimit`) against HTTP
//! `POST /api/check_and_consume` on the same running server, same key mix, same concurrency,
//! alternating the two front ends in one run. Driven by `scripts/bench-rls`.
//!
//! Usage: rls_bench HTTP_ADDR RLS_ADDR [CONCURRENCY=32] [SECONDS=5] [RUNS=3] [SERVER_PID CLK_TCK]
//!        [RLS_CONNECTIONS=CONCURRENCY]
//! Only loopback addresses are accepted: this is a load generator.
//!
//! The load generator shares the machine's cores with the server, and a gRPC client costs more
//! CPU per call than an HTTP/1 one, so decisions per second partly measure the client. Given the
//! server's pid, each phase also reports the server's own CPU time per decision (utime + stime
//! from `/proc/PID/stat`), which compares what each front end costs the service itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
    Entry, RateLimitOverride,
};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;

const ACTIONS: [&str; 4] = ["api_call", "login", "upload", "search"];
const POOL: usize = 20_000;

/// The same keys for both front ends: 100 tenants x 1,000 clients x 4 actions, drawn once.
fn keys() -> Vec<(String, String, &'static str)> {
    // xorshift: reproducible, no dependency.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    (0..POOL)
        .map(|_| {
            (
                format!("tenant-{}", next(100) + 1),
                format!("client-{}", next(1000) + 1),
                ACTIONS[next(4) as usize],
            )
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    denied: AtomicU64,
    failed: AtomicU64,
}

async fn http_phase(addr: SocketAddr, conc: usize, dur: Duration) -> (f64, Arc<Tally>) {
    let bodies: Arc<Vec<String>> = Arc::new(
        keys()
            .into_iter()
            .map(|(t, c, a)| {
                format!(
                    r#"{{"tenant_id":"{t}","client_id":"{c}","action_type":"{a}","max_requests":1000000,"window_duration_seconds":60}}"#
                )
            })
            .collect(),
    );
    let url = format!("http://{addr}/api/check_and_consume");
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let tasks: Vec<_> = (0..conc)
        .map(|w| {
            let (bodies, url, tally) = (bodies.clone(), url.clone(), tally.clone());
            tokio::spawn(async move {
                // One connection per worker, like wrk's connections.
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .expect("client");
                let mut i = w * (POOL / conc.max(1));
                while start.elapsed() < dur {
                    i = (i + 1) % POOL;
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(bodies[i].clone())
                        .send()
                        .await;
                    let slot = match r.map(|r| r.status().as_u16()) {
                        Ok(200) => &tally.ok,
                        Ok(429) => &tally.denied,
                        _ => &tally.failed,
                    };
                    slot.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let done = tally.ok.load(Ordering::Relaxed) + tally.denied.load(Ordering::Relaxed);
    (done as f64 / start.elapsed().as_secs_f64(), tally)
}

async fn rls_phase(
    addr: SocketAddr,
    conc: usize,
    conns: usize,
    dur: Duration,
) -> (f64, Arc<Tally>) {
    let reqs: Arc<Vec<RateLimitRequest>> = Arc::new(
        keys()
            .into_iter()
            .map(|(t, c, a)| RateLimitRequest {
                domain: t,
                descriptors: vec![RateLimitDescriptor {
                    entries: vec![Entry {
                        key: a.to_string(),
                        value: c,
                    }],
                    limit: Some(RateLimitOverride {
                        requests_per_unit: 1_000_000,
                        unit: RateLimitUnit::Minute as i32,
                    }),
                    ..Default::default()
                }],
                hits_addend: 0,
            })
            .collect(),
    );
    let tally = Arc::new(Tally::default());
    // `conns` HTTP/2 connections, the workers spread over them: one per worker is the same number
    // of connections as the HTTP phase; Envoy itself keeps one per worker thread and multiplexes.
    let mut channels = Vec::with_capacity(conns);
    for _ in 0..conns.max(1) {
        let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the RLS listener");
        channels.push(ch);
    }
    let clients: Vec<_> = (0..conc)
        .map(|w| RateLimitServiceClient::new(channels[w % channels.len()].clone()))
        .collect();
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(w, mut client)| {
            let (reqs, tally) = (reqs.clone(), tally.clone());
            tokio::spawn(async move {
                let mut i = w * (POOL / conc.max(1));
                while start.elapsed() < dur {
                    i = (i + 1) % POOL;
                    let slot = match client.should_rate_limit(reqs[i].clone()).await {
                        Ok(r) if r.get_ref().overall_code == 1 => &tally.ok,
                        Ok(_) => &tally.denied,
                        Err(_) => &tally.failed,
                    };
                    slot.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let done = tally.ok.load(Ordering::Relaxed) + tally.denied.load(Ordering::Relaxed);
    (done as f64 / start.elapsed().as_secs_f64(), tally)
}

/// The process' user + system CPU time in seconds, from `/proc/PID/stat` (fields 14 and 15).
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it follow its closing ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: rls_bench HTTP_ADDR RLS_ADDR [CONCURRENCY] [SECONDS] [RUNS]");
        std::process::exit(2);
    }
    let parse = |i: usize| -> SocketAddr {
        let a: SocketAddr = args[i].parse().expect("an address like 127.0.0.1:5000");
        assert!(a.ip().is_loopback(), "only loopback targets");
        a
    };
    let (http, rls) = (parse(1), parse(2));
    let arg = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let conc = arg(3, 32) as usize;
    let dur = Duration::from_secs(arg(4, 5));
    let runs = arg(5, 3);
    let server = args.get(6).and_then(|s| s.parse::<u32>().ok());
    let tck = arg(7, 100) as f64;
    let cpu = move || server.and_then(|pid| cpu_seconds(pid, tck));
    let rls_conns = arg(8, conc as u64) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!(
            "{} workers, {}s per phase, {runs} runs alternating; same 20,000-key mix; HTTP over {} connections, RLS over {}",
            conc,
            dur.as_secs(),
            conc,
            rls_conns
        );
        let (mut h, mut r, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut hc, mut rc) = (Vec::new(), Vec::new());
        for run in 1..=runs {
            let c0 = cpu();
            let (hr, ht) = http_phase(http, conc, dur).await;
            let c1 = cpu();
            let hn = ht.ok.load(Ordering::Relaxed) + ht.denied.load(Ordering::Relaxed);
            let h_us = c0.zip(c1).map(|(a, b)| (b - a) * 1e6 / hn.max(1) as f64);
            println!(
                "run {run}  HTTP check_and_consume {hr:>10.0} decisions/s  (ok {}, denied {}, failed {}){}",
                ht.ok.load(Ordering::Relaxed),
                ht.denied.load(Ordering::Relaxed),
                ht.failed.load(Ordering::Relaxed),
                h_us.map_or(String::new(), |u| format!("  server CPU {u:.1} us/decision"))
            );
            let c2 = cpu();
            let (rr, rt) = rls_phase(rls, conc, rls_conns, dur).await;
            let c3 = cpu();
            let rn = rt.ok.load(Ordering::Relaxed) + rt.denied.load(Ordering::Relaxed);
            let r_us = c2.zip(c3).map(|(a, b)| (b - a) * 1e6 / rn.max(1) as f64);
            println!(
                "run {run}  RLS ShouldRateLimit    {rr:>10.0} decisions/s  (ok {}, over limit {}, failed {}){}",
                rt.ok.load(Ordering::Relaxed),
                rt.denied.load(Ordering::Relaxed),
                rt.failed.load(Ordering::Relaxed),
                r_us.map_or(String::new(), |u| format!("  server CPU {u:.1} us/decision"))
            );
            h.push(hr);
            r.push(rr);
            ratios.push(rr / hr);
            if let (Some(a), Some(b)) = (h_us, r_us) {
                hc.push(a);
                rc.push(b);
            }
        }
        println!(
            "median: HTTP {:.0}/s, RLS {:.0}/s, RLS/HTTP {:.3} (target >= 1)",
            median(h),
            median(r),
            median(ratios)
        );
        if !hc.is_empty() {
            let (a, b) = (median(hc), median(rc));
            println!(
                "median server CPU per decision: HTTP {a:.1} us, RLS {b:.1} us; decisions per server CPU second RLS/HTTP {:.3}",
                a / b
            );
        }
    });
}
