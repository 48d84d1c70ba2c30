//! The memory store's GCRA decision next to `governor`'s keyed GCRA (the usual in-process choice in
//! Rust), on the same (tenant, client, action) string keys: one hot key, and 1,000,000 distinct
//! keys visited in a fixed random order. Both never deny here, so both take their full allow path.
//! Run: `cargo bench -p tollgate-core --bench vs_governor -- --warm-up-time 1 --measurement-time 3`

use std::num::NonZeroU32;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tollgate_core::clock::SystemClock;
use tollgate_core::policy::{Algorithm, Op, Policy, PolicyItem, PolicyLimit};
use tollgate_core::store::{KeyBounds, MemoryStore};
use tollgate_core::{Limit, RateKey};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MANY: usize = 1_000_000;
const RATE: u32 = 1_000_000_000;

fn gcra_policy() -> Policy {
    Policy {
        limits: Arc::from(vec![PolicyLimit {
            limit: Limit {
                max_requests: RATE as u64,
                window_micros: 3_600_000_000,
            },
            algorithm: Algorithm::Gcra { burst: RATE as u64 },
            shadow: false,
            name: None,
        }]),
    }
}

fn tollgate(store: &MemoryStore, key: RateKey<'_>, policy: &Policy) -> bool {
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

type Key = (String, String, String);

fn key(client: &str) -> Key {
    ("t".to_owned(), client.to_owned(), "a".to_owned())
}

fn bench(c: &mut Criterion) {
    let ids: Vec<String> = (0..MANY).map(|i| format!("client-{i}")).collect();
    let keys: Vec<Key> = ids.iter().map(|id| key(id)).collect();
    // The same fixed pseudo-random visiting order as `benches/policies.rs`.
    let mut order: Vec<usize> = (0..MANY).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..MANY).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let policy = gcra_policy();
    let quota = Quota::per_hour(NonZeroU32::new(RATE).expect("non-zero rate"));

    let mut g = c.benchmark_group("gcra_hot_key");
    let store = MemoryStore::new(Arc::new(SystemClock), 2 * MANY);
    g.bench_function("tollgate", |b| {
        b.iter(|| black_box(tollgate(&store, RateKey::new("t", "hot", "a"), &policy)))
    });
    let gov: DefaultKeyedRateLimiter<Key> = RateLimiter::keyed(quota);
    let hot = key("hot");
    g.bench_function("governor", |b| {
        b.iter(|| black_box(gov.check_key(&hot).is_ok()))
    });
    g.finish();

    let mut g = c.benchmark_group("gcra_1M_keys_random");
    let store = MemoryStore::new(Arc::new(SystemClock), 2 * MANY);
    for id in &ids {
        tollgate(&store, RateKey::new("t", id, "a"), &policy);
    }
    let mut i = 0;
    g.bench_function("tollgate", |b| {
        b.iter(|| {
            i = (i + 1) % MANY;
            black_box(tollgate(
                &store,
                RateKey::new("t", &ids[order[i]], "a"),
                &policy,
            ))
        })
    });
    let gov: DefaultKeyedRateLimiter<Key> = RateLimiter::keyed(quota);
    for k in &keys {
        let _ = gov.check_key(k);
    }
    let mut i = 0;
    g.bench_function("governor", |b| {
        b.iter(|| {
            i = (i + 1) % MANY;
            black_box(gov.check_key(&keys[order[i]]).is_ok())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
