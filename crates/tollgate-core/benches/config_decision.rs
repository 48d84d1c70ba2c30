//! The decision path's configuration lookup (`Snapshot::tenants` lookup + `resolve_in`) at 10 and
//! at 1,000,000 configured tenants (issue 17): at an equal working set (one tenant, or the same ten
//! tenants) the cost must not grow with the number configured, and must not allocate. Traffic spread
//! over 4,096 tenants pays cache misses for a working set larger than the caches at 1,000,000 (every
//! visited tenant is a different one), so that case shows the memory hierarchy, not the map.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use tollgate_core::config::{
    ConfigDocument, ConfigManager, LimitEntry, LimitSpec, Snapshot, TenantDocument,
};

fn config(tenants: usize) -> ConfigDocument {
    let spec = LimitEntry::from(LimitSpec::new(100, 60.0));
    let mut doc = ConfigDocument::default();
    for t in 0..tenants {
        let mut td = TenantDocument::default();
        td.actions.insert("api_call".into(), spec.clone());
        doc.tenants.insert(format!("tenant-{t:07}"), td);
    }
    doc
}

fn decide(snap: &Snapshot, tenant: &str) -> bool {
    let t = snap.tenants.get(tenant).map(|t| &**t);
    Snapshot::resolve_in(t, "user123", "api_call", None).is_some()
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("config_lookup");
    for n in [10usize, 1_000_000] {
        let cm = ConfigManager::in_memory(config(n)).unwrap();
        let snap: Arc<Snapshot> = cm.snapshot_arc();
        let hot = format!("tenant-{:07}", n / 2);
        g.bench_with_input(BenchmarkId::new("same_tenant", n), &hot, |b, t| {
            b.iter(|| black_box(decide(&snap, black_box(t))))
        });
        // The same ten tenants at both sizes: equal working sets, so any difference is the map's.
        let ten: Vec<String> = (0..10)
            .map(|i| format!("tenant-{:07}", i * (n / 10)))
            .collect();
        g.bench_with_input(BenchmarkId::new("ten_tenants", n), &ten, |b, ts| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) % 10;
                black_box(decide(&snap, black_box(&ts[i])))
            })
        });
        // Tenants spread over the whole map, so the lookup pays for the map's depth in cache
        // misses as real traffic over many tenants would.
        let spread: Vec<String> = (0..4096u64)
            .map(|i| format!("tenant-{:07}", (i.wrapping_mul(2_654_435_761) % n as u64)))
            .collect();
        g.bench_with_input(BenchmarkId::new("spread_tenants", n), &spread, |b, ts| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(decide(&snap, black_box(&ts[i])))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
