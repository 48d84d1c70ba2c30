//! The statistics collector behind `GET /api/stats`: counts after scripted decisions, admission
//! shares next to weighted fair shares, heavy hitters, and the bound on tracked tenants.

use std::sync::Arc;
use std::time::Duration;

use tollgate_core::clock::ManualClock;
use tollgate_core::config::{Change, ConfigDocument, ConfigManager, GlobalPatch};
use tollgate_core::stats::{DecisionOutcome, Gauges, OutcomeCounts, Stats, TenantStats};
use tollgate_core::store::MemoryStore;
use tollgate_core::{
    DecisionRequest, Engine, Limit, LimitError, Limiter, RateKey, StoreErrorPolicy,
};

fn limiter(max_tenants: usize) -> Arc<Limiter> {
    let store = Arc::new(MemoryStore::new(
        Arc::new(ManualClock::new(1_000_000)),
        100_000,
    ));
    let config = ConfigManager::in_memory(ConfigDocument::default()).unwrap();
    Arc::new(
        Limiter::new(Arc::new(config), store, StoreErrorPolicy::Allow)
            .with_stats(Arc::new(Stats::new(max_tenants))),
    )
}

async fn decide(
    l: &Arc<Limiter>,
    tenant: &str,
    client: &str,
    max: u64,
) -> Result<bool, LimitError> {
    Engine::new(l.clone())
        .check_and_consume(DecisionRequest {
            key: RateKey::new(tenant, client, "read"),
            requested: Some(Limit::new(max, 60.0).unwrap()),
            cost: 1,
        })
        .await
        .map(|d| matches!(d.outcome, tollgate_core::Outcome::Decided(v) if v.allowed))
}

fn row<'a>(rows: &'a [TenantStats], tenant: &str) -> &'a TenantStats {
    rows.iter()
        .find(|t| t.tenant.as_deref() == Some(tenant))
        .unwrap_or_else(|| panic!("no row for {tenant}: {rows:?}"))
}

#[tokio::test]
async fn report_counts_equal_the_scripted_decisions() {
    let l = limiter(100);
    let stats = l.stats().unwrap().clone();
    // alpha: 5 calls on one key limited to 3 -> 3 allowed, 2 denied.
    for _ in 0..5 {
        decide(&l, "alpha", "hot", 3).await.unwrap();
    }
    // beta: 4 calls on 4 keys -> 4 allowed.
    for i in 0..4 {
        decide(&l, "beta", &format!("c{i}"), 10).await.unwrap();
    }
    // Not decisions: no limit given and none configured.
    let none = Engine::new(l.clone())
        .check_and_consume(DecisionRequest {
            key: RateKey::new("gamma", "c", "read"),
            requested: None,
            cost: 1,
        })
        .await;
    assert_eq!(none.unwrap_err(), LimitError::NoLimit);
    // Shed: the one slot is held and queues take nobody.
    l.update_config(Change::Global(GlobalPatch {
        max_global_concurrent_requests: Some(1),
        max_tenant_queue_size: Some(0),
        ..Default::default()
    }))
    .await
    .unwrap();
    let held = l.load().acquire("holder", 1).await.unwrap();
    assert!(matches!(
        decide(&l, "beta", "c0", 10).await,
        Err(LimitError::Shed(_))
    ));
    drop(held);

    let r = stats.report(&l);
    assert_eq!(
        r.service.totals,
        OutcomeCounts {
            allowed: 7,
            denied: 2,
            shed: 1,
            ..Default::default()
        }
    );
    let alpha = row(&r.tenants, "alpha");
    assert_eq!(
        alpha.totals,
        OutcomeCounts {
            allowed: 3,
            denied: 2,
            ..Default::default()
        }
    );
    let beta = row(&r.tenants, "beta");
    assert_eq!(
        beta.totals,
        OutcomeCounts {
            allowed: 4,
            shed: 1,
            ..Default::default()
        }
    );
    assert!(r
        .tenants
        .iter()
        .all(|t| t.tenant.as_deref() != Some("gamma")));
    assert!((alpha.denied_share - 0.4).abs() < 1e-9, "{alpha:?}");
    assert_eq!(r.service.max_global_concurrent_requests, 1);
    assert_eq!(r.service.store_kind, "memory");
    assert!(r.service.latency_p50_ms.is_some());

    let top = &r.heavy_hitters.by_requests[0];
    assert_eq!(
        (top.tenant_id.as_str(), top.client_id.as_str(), top.count),
        ("alpha", "hot", 5)
    );
    assert_eq!(top.max_requests, Some(3));
    assert_eq!(top.window_duration_seconds, Some(60.0));
    assert_eq!(r.heavy_hitters.by_denials.len(), 1);
    assert_eq!(r.heavy_hitters.by_denials[0].count, 2);

    // A closed second carries the same counts into the history and the rates.
    stats.tick(1_000, Gauges::of(&l));
    let r = stats.report(&l);
    assert_eq!(r.history.len(), 1);
    assert_eq!(r.history[0].decisions.allowed, 7);
    assert_eq!(r.service.last_second.denied, 2);
    assert_eq!(row(&r.tenants, "alpha").decisions_per_second, 5.0);
    assert_eq!(row(&r.tenants, "alpha").history, vec![5]);
    // Totals do not double-count what was already collected.
    assert_eq!(r.service.totals.allowed, 7);
}

#[tokio::test]
async fn admission_shares_sit_next_to_weighted_fair_shares() {
    let l = limiter(100);
    l.update_config(Change::Weight {
        tenant: "heavy".into(),
        weight: 2,
    })
    .await
    .unwrap();
    let stats = l.stats().unwrap().clone();
    let record = |tenant: &str, outcome, n| {
        for _ in 0..n {
            stats.record_outcome(
                RateKey::new(tenant, "c", "a"),
                outcome,
                None,
                Duration::from_micros(50),
            );
        }
    };
    // 40 slots were granted in the interval. noisy wanted 200 and got 20; heavy (weight 2)
    // wanted 100 and got 16; quiet wanted 4 and got them. Fair: quiet 4, then 36 split 2:1
    // between heavy (24) and noisy (12).
    record("noisy", DecisionOutcome::Allowed, 20);
    record("noisy", DecisionOutcome::Shed, 180);
    record("heavy", DecisionOutcome::Denied, 16);
    record("heavy", DecisionOutcome::Shed, 84);
    record("quiet", DecisionOutcome::Allowed, 4);
    stats.tick(1, Gauges::default());
    let r = stats.report(&l);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    let noisy = row(&r.tenants, "noisy");
    let heavy = row(&r.tenants, "heavy");
    let quiet = row(&r.tenants, "quiet");
    assert!(
        close(noisy.admitted_share, 0.5) && close(noisy.fair_share, 0.3),
        "{noisy:?}"
    );
    assert!(
        close(heavy.admitted_share, 0.4) && close(heavy.fair_share, 0.6),
        "{heavy:?}"
    );
    assert!(
        close(quiet.admitted_share, 0.1) && close(quiet.fair_share, 0.1),
        "{quiet:?}"
    );
    assert_eq!(heavy.weight, 2);
    assert_eq!(noisy.decisions_per_second, 200.0);
}

#[tokio::test]
async fn tenants_past_the_cap_share_one_row_and_idle_ones_make_room() {
    let l = limiter(2);
    let stats = l.stats().unwrap().clone();
    for t in ["a", "b", "c", "d"] {
        decide(&l, t, "x", 10).await.unwrap();
    }
    let r = stats.report(&l);
    assert_eq!(r.tenants.len(), 3, "{:?}", r.tenants);
    let other = r.tenants.iter().find(|t| t.other).expect("an other row");
    assert_eq!(other.tenant, None);
    assert_eq!(other.totals.allowed, 2);
    let named: u64 = r
        .tenants
        .iter()
        .filter(|t| !t.other)
        .map(|t| t.totals.allowed)
        .sum();
    assert_eq!(named, 2);
    // The busy second closes, then a minute without decisions frees the rows for new tenants.
    for s in 0..=60 {
        stats.tick(s, Gauges::default());
    }
    decide(&l, "e", "x", 10).await.unwrap();
    let r = stats.report(&l);
    assert_eq!(row(&r.tenants, "e").totals.allowed, 1);
}

#[tokio::test]
async fn memory_stays_bounded_over_many_keys() {
    let l = limiter(10);
    let stats = l.stats().unwrap().clone();
    // 900 distinct keys (within the store's creation burst) against 32-counter sketches.
    for i in 0..900 {
        decide(&l, &format!("t{}", i % 50), &format!("k{i}"), 1_000)
            .await
            .unwrap();
        decide(&l, "t0", "hot", 1_000_000).await.unwrap();
    }
    stats.tick(1, Gauges::default());
    let r = stats.report(&l);
    assert!(r.tenants.len() <= 11);
    assert!(r.heavy_hitters.by_requests.len() <= 10);
    assert_eq!(r.heavy_hitters.by_requests[0].client_id, "hot");
    assert_eq!(r.service.totals.allowed, 1_800);
    assert_eq!(r.heavy_hitters.by_requests[0].count, 900);
}
