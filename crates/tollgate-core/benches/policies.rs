//! `MemoryStore::apply_sync` per algorithm: one hot key, and 1,000,000 distinct keys visited in a
//! random order; plus the seed's one-sliding-log decision through `apply` and a two-window key.
//! Run: `cargo bench -p tollgate-core --bench policies -- --warm-up-time 1 --measurement-time 3`

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate_core::clock::SystemClock;
use tollgate_core::policy::{Algorithm, Calendar, Op, Policy, PolicyItem, PolicyLimit};
use tollgate_core::store::{KeyBounds, MemoryStore};
use tollgate_core::{Limit, RateKey};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MANY: usize = 1_000_000;

fn one(algorithm: Algorithm, window_micros: u64) -> PolicyLimit {
    PolicyLimit {
        limit: Limit {
            max_requests: 1_000_000_000,
            window_micros,
        },
        algorithm,
        shadow: false,
        name: None,
    }
}

/// Never-denying policies, so every call takes the full allow path.
fn policies() -> Vec<(&'static str, Policy)> {
    let p = |ls: Vec<PolicyLimit>| Policy {
        limits: Arc::from(ls),
    };
    vec![
        ("sliding_log", p(vec![one(Algorithm::SlidingLog, 100_000)])),
        (
            "gcra",
            p(vec![one(
                Algorithm::Gcra {
                    burst: 1_000_000_000,
                },
                3_600_000_000,
            )]),
        ),
        (
            "sliding_window_counter",
            p(vec![one(Algorithm::SlidingWindowCounter, 1_000_000)]),
        ),
        (
            "fixed_window",
            p(vec![one(
                Algorithm::FixedWindow { calendar: None },
                1_000_000,
            )]),
        ),
        (
            "fixed_window_month",
            p(vec![one(
                Algorithm::FixedWindow {
                    calendar: Some(Calendar::Month),
                },
                31 * 86_400_000_000,
            )]),
        ),
        (
            "two_sliding_logs",
            p(vec![
                one(Algorithm::SlidingLog, 100_000),
                one(Algorithm::SlidingLog, 1_000_000),
            ]),
        ),
    ]
}

fn decide(store: &MemoryStore, key: RateKey<'_>, policy: &Policy) -> bool {
    let item = PolicyItem {
        key,
        policy,
        cost: 1,
        bounds: KeyBounds::UNBOUNDED,
        shadow_all: false,
    };
    store
        .apply_sync(Op::Consume, std::slice::from_ref(&item))
        .map(|v| v.allowed)
        .unwrap_or(false)
}

fn bench(c: &mut Criterion) {
    let ids: Vec<String> = (0..MANY).map(|i| format!("client-{i}")).collect();
    // A fixed pseudo-random visiting order, so every run touches keys the same way.
    let mut order: Vec<usize> = (0..MANY).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..MANY).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    for (name, policy) in policies() {
        let store = MemoryStore::new(Arc::new(SystemClock), 2 * MANY);
        c.bench_function(&format!("{name}/hot_key"), |b| {
            b.iter(|| black_box(decide(&store, RateKey::new("t", "hot", "a"), &policy)))
        });
        let store = MemoryStore::new(Arc::new(SystemClock), 2 * MANY);
        for id in &ids {
            decide(&store, RateKey::new("t", id, "a"), &policy);
        }
        let mut i = 0;
        c.bench_function(&format!("{name}/1M_keys_random"), |b| {
            b.iter(|| {
                i = (i + 1) % MANY;
                black_box(decide(
                    &store,
                    RateKey::new("t", &ids[order[i]], "a"),
                    &policy,
                ))
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
