//! The memory store's decision (`MemoryStore::check_and_consume_sync`): one hot key, 1,000,000
//! distinct keys, and two threads on distinct and on shared keys. The store reads the system clock
//! as it does in the service.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate_core::clock::SystemClock;
use tollgate_core::store::MemoryStore;
use tollgate_core::{Limit, RateKey};

const MANY: usize = 1_000_000;

/// Never denies during a benchmark, so every call does the full allow path.
fn big_limit() -> Limit {
    Limit::new(1_000_000_000, 3600.0).unwrap()
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

fn one_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory_store");
    let limit = big_limit();

    g.bench_function("hot_key", |b| {
        let s = store();
        let key = RateKey::new("org_a_123", "user123", "api_call");
        b.iter(|| black_box(s.check_and_consume_sync(black_box(key), limit, 1)));
    });

    g.bench_function("1M_keys_random", |b| {
        let s = store();
        let ids = keys(MANY, "");
        for (t, c) in &ids {
            s.check_and_consume_sync(RateKey::new(t, c, "api_call"), limit, 1)
                .unwrap();
        }
        assert_eq!(s.key_count(), MANY);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        b.iter(|| {
            let (t, c) = &ids[rng.below(MANY)];
            black_box(s.check_and_consume_sync(RateKey::new(t, c, "api_call"), limit, 1))
        });
    });
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
    g.bench_function("distinct_keys", |b| {
        let s = store();
        let ids = [keys(10_000, "a-"), keys(10_000, "b-")];
        b.iter_custom(|iters| two_threads(&s, &ids, limit, iters));
    });

    // Both threads hammer the same 4 keys: worst case, the same shard locks bounce between cores.
    g.bench_function("shared_keys", |b| {
        let s = store();
        let shared = keys(4, "");
        let ids = [shared.clone(), shared];
        b.iter_custom(|iters| two_threads(&s, &ids, limit, iters));
    });
    g.finish();
}

criterion_group!(benches, one_thread, two);
criterion_main!(benches);
