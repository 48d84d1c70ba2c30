//! The full decision path, `Engine::check_and_consume` (what the HTTP handler calls): id
//! validation, limit resolution from the configuration snapshot, load-manager admission and release, and the memory store — driven on a
//! current-thread tokio runtime as a handler would call it. Each case runs twice: without and with
//! the dashboard's statistics (`Limiter::with_stats`, which the server always attaches), so the
//! cost the statistics add to a decision is read in one run.

use std::collections::BTreeMap;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate_core::clock::SystemClock;
use tollgate_core::config::{ConfigDocument, ConfigManager, LimitEntry, LimitSpec, TenantDocument};
use tollgate_core::stats::Stats;
use tollgate_core::store::MemoryStore;
use tollgate_core::{DecisionRequest, Engine, Limit, Limiter, RateKey, StoreErrorPolicy};

/// 100 tenants with an action limit each and a handful of client overrides, so resolution walks
/// populated maps rather than empty ones.
fn config() -> ConfigDocument {
    let spec = LimitEntry::from(LimitSpec::new(1_000_000_000, 3600.0));
    let mut doc = ConfigDocument::default();
    doc.global.max_global_concurrent_requests = 1000;
    for t in 0..100 {
        let mut td = TenantDocument {
            weight: 1,
            ..Default::default()
        };
        td.actions.insert("api_call".into(), spec.clone());
        let mut vip = BTreeMap::new();
        vip.insert("api_call".to_string(), spec.clone());
        td.clients.insert("vip".into(), vip);
        doc.tenants.insert(format!("tenant-{t}"), td);
    }
    doc
}

fn limiter(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let requested = Some(Limit::new(1_000_000_000, 3600.0).unwrap());
    // 100 tenants x 1,000 clients, visited in a fixed scrambled order: the statistics' per-tenant
    // rows and heavy-hitter sketches see many keys, as under real traffic.
    let clients: Vec<String> = (0..1000).map(|i| format!("user{i}")).collect();
    let tenants: Vec<String> = (0..100).map(|t| format!("tenant-{t}")).collect();

    for stats in [false, true] {
        let config = Arc::new(ConfigManager::in_memory(config()).unwrap());
        let store = Arc::new(MemoryStore::new(Arc::new(SystemClock), 1_000_000));
        let mut inner = Limiter::new(config, store, StoreErrorPolicy::Allow);
        if stats {
            inner = inner.with_stats(Arc::new(Stats::default()));
        }
        let limiter = Engine::new(Arc::new(inner));
        let suffix = if stats { "_with_stats" } else { "" };
        let mut g = c.benchmark_group("limiter");
        // The limit comes from the tenant's action configuration.
        g.bench_function(format!("hot_key_action_limit{suffix}"), |b| {
            let req = DecisionRequest {
                key: RateKey::new("tenant-42", "user123", "api_call"),
                requested: None,
                cost: 1,
            };
            b.to_async(&rt)
                .iter(|| async { black_box(limiter.check_and_consume(black_box(req)).await) });
        });
        // No configuration for this tenant: the limit in the request applies.
        g.bench_function(format!("hot_key_request_limit{suffix}"), |b| {
            let req = DecisionRequest {
                key: RateKey::new("unconfigured", "user123", "api_call"),
                requested,
                cost: 1,
            };
            b.to_async(&rt)
                .iter(|| async { black_box(limiter.check_and_consume(black_box(req)).await) });
        });
        let mut i: usize = 0;
        g.bench_function(format!("100k_keys_action_limit{suffix}"), |b| {
            b.to_async(&rt).iter(|| {
                i = i.wrapping_add(7919) % 100_000;
                let req = DecisionRequest {
                    key: RateKey::new(&tenants[i % 100], &clients[i / 100], "api_call"),
                    requested: None,
                    cost: 1,
                };
                let l = &limiter;
                async move { black_box(l.check_and_consume(black_box(req)).await) }
            });
        });
        g.finish();
    }
}

criterion_group!(benches, limiter);
criterion_main!(benches);
