//! `UnknownTenantPolicy::Deny`: calls for a tenant without configuration are refused before the
//! load manager or the store sees them.

use std::sync::Arc;

use tollgate_core::clock::ManualClock;
use tollgate_core::config::{Change, ConfigDocument, ConfigManager};
use tollgate_core::store::{MemoryStore, Store};
use tollgate_core::{
    DecisionRequest, Engine, Limit, LimitError, Limiter, RateKey, StoreErrorPolicy,
    UnknownTenantPolicy,
};

fn limiter(policy: UnknownTenantPolicy) -> (Engine, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new(
        Arc::new(ManualClock::new(1_000_000)),
        1000,
    ));
    let config = ConfigManager::in_memory(ConfigDocument::default()).unwrap();
    let limiter = Limiter::new(Arc::new(config), store.clone(), StoreErrorPolicy::Allow)
        .with_unknown_tenants(policy);
    (Engine::new(Arc::new(limiter)), store)
}

fn req<'a>(tenant: &'a str) -> DecisionRequest<'a> {
    DecisionRequest {
        key: RateKey::new(tenant, "c", "a"),
        requested: Some(Limit::new(5, 60.0).unwrap()),
        cost: 1,
    }
}

#[tokio::test]
async fn deny_refuses_unconfigured_tenants_before_any_state() {
    let (limiter, store) = limiter(UnknownTenantPolicy::Deny);
    for i in 0..50 {
        let tenant = format!("invented-{i}");
        assert_eq!(
            limiter.check_and_consume(req(&tenant)).await.unwrap_err(),
            LimitError::UnknownTenant
        );
        assert_eq!(
            limiter
                .status(
                    RateKey::new(&tenant, "c", "a"),
                    Some(Limit::new(5, 60.0).unwrap())
                )
                .await
                .unwrap_err(),
            LimitError::UnknownTenant
        );
    }
    assert_eq!(store.tracked_keys(), Some(0), "no key was created");
    let counters = limiter.load_counters();
    assert_eq!(
        counters
            .dispatched
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing reached the load manager"
    );
    // An invalid id is still invalid_argument, not unknown_tenant.
    assert!(matches!(
        limiter.check_and_consume(req("")).await,
        Err(LimitError::Invalid(_))
    ));

    // Once configured (any entry: here a weight), the tenant is decided normally.
    limiter
        .update_config(Change::Weight {
            tenant: "acme".into(),
            weight: 2,
        })
        .await
        .unwrap();
    let d = limiter.check_and_consume(req("acme")).await.unwrap();
    assert!(matches!(d.outcome, tollgate_core::Outcome::Decided(v) if v.allowed));
    assert_eq!(store.tracked_keys(), Some(1));
}

#[tokio::test]
async fn allow_is_the_default_and_decides_unconfigured_tenants() {
    let store = Arc::new(MemoryStore::new(
        Arc::new(ManualClock::new(1_000_000)),
        1000,
    ));
    let config = ConfigManager::in_memory(ConfigDocument::default()).unwrap();
    let limiter = Engine::new(Arc::new(Limiter::new(
        Arc::new(config),
        store.clone(),
        StoreErrorPolicy::Allow,
    )));
    assert!(limiter.check_and_consume(req("anyone")).await.is_ok());
    let (limiter, _) = self::limiter(UnknownTenantPolicy::Allow);
    assert!(limiter.check_and_consume(req("anyone")).await.is_ok());
    assert_eq!(store.tracked_keys(), Some(1));
}
