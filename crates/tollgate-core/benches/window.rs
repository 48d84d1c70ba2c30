//! The sliding-window log alone: `WindowLog::check_and_consume` with no store, lock or clock read.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate_core::window::WindowLog;
use tollgate_core::Limit;

const T0: u64 = 1_700_000_000_000_000;

fn window(c: &mut Criterion) {
    let mut g = c.benchmark_group("window_log");

    // A large limit on a long window: every call is allowed and lands in the newest entry's tick
    // (55 ms ticks for an hour), the common case for a busy key.
    g.bench_function("allow_same_tick", |b| {
        let limit = Limit::new(1_000_000_000, 3600.0).unwrap();
        let mut log = WindowLog::new();
        let mut now = T0;
        b.iter(|| {
            now += 1;
            black_box(log.check_and_consume(black_box(now), limit, 1))
        });
    });

    // Steady state of a saturated sliding window: 100 per second, one call every 10 ms, so each
    // call evicts the oldest entry and appends a new one.
    g.bench_function("evict_and_append", |b| {
        let limit = Limit::new(100, 1.0).unwrap();
        let mut log = WindowLog::new();
        let mut now = T0;
        for _ in 0..100 {
            now += 10_000;
            log.check_and_consume(now, limit, 1);
        }
        b.iter(|| {
            now += 10_000;
            black_box(log.check_and_consume(black_box(now), limit, 1))
        });
    });

    // A key over its limit: each call is denied and computes retry_at by binary search.
    g.bench_function("denied_with_retry", |b| {
        let limit = Limit::new(1000, 60.0).unwrap();
        let mut log = WindowLog::new();
        for i in 0..1000 {
            log.check_and_consume(T0 + i * 1000, limit, 1);
        }
        let now = T0 + 2_000_000;
        b.iter(|| black_box(log.check_and_consume(black_box(now), limit, 1)));
    });
    g.finish();
}

criterion_group!(benches, window);
criterion_main!(benches);
