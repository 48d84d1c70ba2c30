//! The memory store's decision (`MemoryStore::check_and_consume_sync`): one hot key, 1,000,000
//! distinct keys, and two threads on distinct and on shared keys. The store reads the system clock
//! as it does in the service, and allocates through mimalloc, the server binary's allocator.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate_core::clock::SystemClock;
use tollgate_core::store::MemoryStore;
use tollgate_core::{Limit, RateKey};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MANY: usize = 1_000_000;

/// Never denies during a benchmark, so every call does the full allow path.
fn big_limit() -> Limit {
    Limit::new(1_000_000_000, 3600.0).unwrap()
}

/// Limits for the million-key benchmarks, named by what each key's log holds when a decision
/// reaches it. At roughly a million decisions per second over a million keys, each key comes back
/// about once a second:
/// - a 100 ms window: the key's one entry has expired, so the decision evicts it and logs a new
///   one: the log of an idle-but-tracked key, and the figure for the 1,000,000-key target;
/// - a 1 s window: one or two live entries, so most logs have spilled to a heap block;
/// - `big_limit` (1 h): every decision appends and the logs grow for as long as the benchmark
///   runs, which measures log growth and allocation more than the lookup.
fn million_key_limits() -> [(&'static str, Limit); 3] {
    [
        ("1M_keys_random", Limit::new(1_000_000_000, 0.1).unwrap()),
        (
            "1M_keys_random_1s_window",
            Limit::new(1_000_000_000, 1.0).unwrap(),
        ),
        ("1M_keys_random_growing_logs", big_limit()),
    ]
}

fn store() -> MemoryStore {
    MemoryStore::new(Arc::new(SystemClock), 2 * MANY)
}

/// Ids for `n` distinct keys spread over 1,000 tenants, built up front so the timed loop does no
/// formatting.
fn keys(n: usize, prefix: &str) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("tenant-{}", i % 1000),
                format!("{prefix}client-{i}"),
            )
        })
        .collect()
}

/// Reused buffers holding the ids of one key `i` (the same as `keys(n, "")[i]`), rewritten per
/// call without `fmt` or UTF-8 re-validation so the harness adds little to the measured decision.
struct Ids {
    tenant: String,
    client: String,
}

impl Ids {
    fn new() -> Self {
        Ids {
            tenant: String::with_capacity(16),
            client: String::with_capacity(24),
        }
    }

    fn key(&mut self, i: usize) -> RateKey<'_> {
        put(&mut self.tenant, "tenant-", i % 1000);
        put(&mut self.client, "client-", i);
        RateKey::new(&self.tenant, &self.client, "api_call")
    }
}

/// Writes `prefix` then `n` in decimal into `out`.
fn put(out: &mut String, prefix: &str, mut n: usize) {
    out.clear();
    out.push_str(prefix);
    let mut digits = [0u8; 20];
    let mut d = digits.len();
    loop {
        d -= 1;
        digits[d] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[d..].iter().map(|&b| char::from(b)));
}

/// xorshift64*: a cheap deterministic index stream, so the random pick costs ~1 ns.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

/// A store holding keys 0..MANY, each with one request logged under `limit`.
fn populated(limit: Limit) -> MemoryStore {
    let s = MemoryStore::new(Arc::new(SystemClock), 2 * MANY);
    let mut ids = Ids::new();
    for i in 0..MANY {
        s.check_and_consume_sync(ids.key(i), limit, 1).unwrap();
    }
    assert_eq!(s.key_count(), MANY);
    s
}

// Criterion calls each benchmark's closure once per sample, so state is built outside it.
fn one_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory_store");
    let limit = big_limit();

    let s = store();
    g.bench_function("hot_key", |b| {
        let key = RateKey::new("org_a_123", "user123", "api_call");
        b.iter(|| black_box(s.check_and_consume_sync(black_box(key), limit, 1)));
    });
    drop(s);

    // Random decisions among a million keys. The ids are formatted on the stack per call, as a
    // server has them fresh from the request body; reading them from a million-entry table would
    // add the harness's own cache misses. Stores are built on first use so a filtered run that
    // skips a benchmark does not pay for it.
    for (name, limit) in million_key_limits() {
        let mut s = None;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut ids = Ids::new();
        g.bench_function(name, |b| {
            let s = s.get_or_insert_with(|| populated(limit));
            b.iter(|| black_box(s.check_and_consume_sync(ids.key(rng.below(MANY)), limit, 1)));
        });
    }
    g.finish();
}

/// Runs `iters` decisions split over two threads and returns the wall time: the figure is wall
/// time per decision with both cores working (half the one-thread figure would be perfect scaling).
fn two_threads(
    s: &MemoryStore,
    ids: &[Vec<(String, String)>; 2],
    limit: Limit,
    iters: u64,
) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|scope| {
        for (n, mine) in ids.iter().enumerate() {
            let barrier = &barrier;
            scope.spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 + n as u64);
                barrier.wait();
                for _ in 0..iters / 2 {
                    let (t, c) = &mine[rng.below(mine.len())];
                    black_box(s.check_and_consume_sync(RateKey::new(t, c, "api_call"), limit, 1))
                        .ok();
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn two(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory_store_2_threads");
    let limit = big_limit();

    // Each thread has its own 10,000 keys: contention only where two keys share a shard.
    let s = store();
    let ids = [keys(10_000, "a-"), keys(10_000, "b-")];
    g.bench_function("distinct_keys", |b| {
        b.iter_custom(|iters| two_threads(&s, &ids, limit, iters));
    });

    // Both threads hammer the same 4 keys: worst case, the same shard locks bounce between cores.
    let s = store();
    let shared = keys(4, "");
    let ids = [shared.clone(), shared];
    g.bench_function("shared_keys", |b| {
        b.iter_custom(|iters| two_threads(&s, &ids, limit, iters));
    });
    g.finish();
}

criterion_group!(benches, one_thread, two);
criterion_main!(benches);
