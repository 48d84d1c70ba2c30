//! Tenant isolation of state (issues 16 and 19): a tenant flooding distinct client ids, or a
//! flood of distinct tenant ids, stays within its bounds on both stores, and a configured victim
//! tenant's decisions stay exact (no refusals, no `fail_open`). Budgets and the cap on request
//! windows change at runtime.

#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::Instant;

use tollgate_core::clock::ManualClock;
use tollgate_core::config::{
    Change, ConfigDocument, ConfigManager, GlobalPatch, GlobalSettings, TenantSettingsPatch,
};
use tollgate_core::redis_conn::RedisOptions;
use tollgate_core::store::{
    KeyBound, KeyRefusal, MemoryStore, RedisStore, RedisStoreOptions, Store, StoreError,
};
use tollgate_core::{
    DecisionRequest, Engine, Limit, LimitError, Limiter, Outcome, RateKey, StoreErrorPolicy,
};

fn lim(max: u64, secs: f64) -> Limit {
    Limit::new(max, secs).unwrap()
}

/// A limiter over `store` whose tenant `quiet` has a configured limit of 3 per 600 s for `login`.
async fn limiter(store: Arc<dyn Store>, global: GlobalSettings) -> Engine {
    let config = Arc::new(
        ConfigManager::in_memory(ConfigDocument {
            global,
            ..Default::default()
        })
        .unwrap(),
    );
    let l = Engine::new(Arc::new(Limiter::new(
        config,
        store,
        StoreErrorPolicy::Allow,
    )));
    l.update_config(Change::SetAction {
        tenant: "quiet".into(),
        action: "login".into(),
        limit: lim(3, 600.0),
    })
    .await
    .unwrap();
    l
}

async fn decide(
    l: &Engine,
    tenant: &str,
    client: &str,
    requested: Option<Limit>,
) -> Result<Outcome, LimitError> {
    l.check_and_consume(DecisionRequest {
        key: RateKey::new(tenant, client, "login"),
        requested,
        cost: 1,
    })
    .await
    .map(|d| d.outcome)
}

/// `used` of a decided, allowed-or-denied outcome; panics on anything else (fail_open, errors).
fn decided(r: Result<Outcome, LimitError>) -> (bool, u64) {
    match r {
        Ok(Outcome::Decided(v)) => (v.allowed, v.used),
        other => panic!("expected an exact decision, got {other:?}"),
    }
}

/// The quiet tenant's existing client `old` has used 2 of 3 before the flood. After it: `old`
/// gets exactly one more, and five new clients each get their first request.
async fn quiet_tenant_is_exact(l: &Engine) {
    assert_eq!(decided(decide(l, "quiet", "old", None).await), (true, 3));
    assert_eq!(decided(decide(l, "quiet", "old", None).await), (false, 3));
    for i in 0..5 {
        let c = format!("new-{i}");
        assert_eq!(decided(decide(l, "quiet", &c, None).await), (true, 1));
    }
}

async fn quiet_tenant_warm_up(l: &Engine) {
    for used in 1..=2 {
        assert_eq!(decided(decide(l, "quiet", "old", None).await), (true, used));
    }
}

fn refusal(r: &Result<Outcome, LimitError>) -> Option<KeyBound> {
    match r {
        Err(LimitError::Store(StoreError::TenantKeyBudget(KeyRefusal { bound, .. }))) => {
            Some(*bound)
        }
        _ => None,
    }
}

/// Issue 16's scenario: `--max-keys 100`, tenant `noisy` (no configuration) floods distinct
/// client ids; `quiet`'s new and existing clients are answered exactly, `noisy` is refused with
/// its own budget named.
#[tokio::test]
async fn memory_flood_of_client_ids_leaves_other_tenant_exact() {
    let clock = ManualClock::new(1_000_000_000);
    let store = MemoryStore::new(Arc::new(clock.clone()), 100);
    let l = limiter(Arc::new(store.clone()), GlobalSettings::default()).await;
    quiet_tenant_warm_up(&l).await;
    let mut allowed = 0;
    let mut last_err = None;
    for i in 0..1000 {
        let r = decide(&l, "noisy", &format!("c{i}"), Some(lim(5, 600.0))).await;
        match refusal(&r) {
            None => {
                assert_eq!(decided(r), (true, 1));
                allowed += 1;
            }
            Some(b) => {
                assert_eq!(b, KeyBound::TenantKeys { max: 25 });
                last_err = r.err();
            }
        }
    }
    // No tenant may hold more than a quarter of --max-keys.
    assert_eq!(allowed, 25);
    let msg = last_err.unwrap().to_string();
    assert!(
        msg.contains("tenant 'noisy'") && msg.contains("25 keys"),
        "{msg}"
    );
    quiet_tenant_is_exact(&l).await;
    assert!(store.key_count() <= 100);
    assert_eq!(store.tenant_key_counts("noisy").0, 25);
    assert_eq!(store.tenant_key_counts("quiet").0, 6);
    // The flooding tenant's existing keys still decide exactly.
    assert_eq!(
        decided(decide(&l, "noisy", "c0", Some(lim(5, 600.0))).await),
        (true, 2)
    );
}

/// Issue 19 item 2 on the memory store: a flood of distinct tenant ids is bounded like one tenant
/// (the pool), and a configured victim is untouched.
#[tokio::test]
async fn memory_flood_of_tenant_ids_is_bounded_by_the_pool() {
    let clock = ManualClock::new(1_000_000_000);
    let store = MemoryStore::new(Arc::new(clock.clone()), 1_000_000);
    let global = GlobalSettings {
        max_keys_per_tenant: 50,
        ..Default::default()
    };
    let l = limiter(Arc::new(store.clone()), global).await;
    quiet_tenant_warm_up(&l).await;
    let mut allowed = 0;
    for i in 0..2000 {
        let r = decide(&l, &format!("t{i}"), "c", Some(lim(5, 600.0))).await;
        match refusal(&r) {
            None => {
                decided(r);
                allowed += 1;
            }
            Some(b) => assert_eq!(b, KeyBound::PoolKeys { max: 50 }),
        }
    }
    assert_eq!(allowed, 50);
    quiet_tenant_is_exact(&l).await;
    assert_eq!(store.key_count(), 50 + 6);
    assert_eq!(store.tenant_key_counts("t0"), (1, 50));
    // Refused tenant ids left no accounting behind: 50 flooders + quiet.
    assert_eq!(store.accounted_tenants(), 51);
}

/// The creation rate bounds a tenant even under a large budget, and never touches existing keys.
#[tokio::test]
async fn memory_creation_rate_bounds_new_keys_only() {
    let clock = ManualClock::new(1_000_000_000);
    let store = MemoryStore::new(Arc::new(clock.clone()), 1_000_000);
    let global = GlobalSettings {
        new_keys_per_second: 10,
        ..Default::default()
    };
    let l = limiter(Arc::new(store.clone()), global).await;
    quiet_tenant_warm_up(&l).await;
    let flood = |from: usize| {
        let l = &l;
        async move {
            let mut allowed = 0;
            for i in from..from + 100 {
                let r = decide(l, "noisy", &format!("c{i}"), Some(lim(5, 60.0))).await;
                match refusal(&r) {
                    None => allowed += 1,
                    Some(b) => assert_eq!(b, KeyBound::PoolRate { per_second: 10 }),
                }
            }
            allowed
        }
    };
    assert_eq!(flood(0).await, 10, "one second's burst");
    clock.advance(500_000);
    assert_eq!(flood(100).await, 5, "then the rate");
    // Existing keys are never refused for the rate.
    for _ in 0..3 {
        decided(decide(&l, "noisy", "c0", Some(lim(5, 60.0))).await);
    }
    quiet_tenant_is_exact(&l).await;
}

#[tokio::test]
async fn budgets_change_at_runtime() {
    let clock = ManualClock::new(1_000_000_000);
    let store = MemoryStore::new(Arc::new(clock.clone()), 1_000_000);
    let global = GlobalSettings {
        max_keys_per_tenant: 20,
        ..Default::default()
    };
    let l = limiter(Arc::new(store.clone()), global).await;
    let count_allowed = |from: usize, n: usize| {
        let l = &l;
        async move {
            let mut allowed = 0;
            for i in from..from + n {
                let r = decide(l, "quiet", &format!("c{i}"), None).await;
                if refusal(&r).is_none() {
                    decided(r);
                    allowed += 1;
                }
            }
            allowed
        }
    };
    assert_eq!(count_allowed(0, 30).await, 20);
    // The tenant's own budget, next to its weight.
    l.update_config(Change::TenantSettings {
        tenant: "quiet".into(),
        patch: TenantSettingsPatch {
            max_keys: Some(Some(25)),
            ..Default::default()
        },
    })
    .await
    .unwrap();
    assert_eq!(count_allowed(100, 30).await, 5);
    // Removing the override brings the global value back; raising the global one takes effect.
    l.update_config(Change::TenantSettings {
        tenant: "quiet".into(),
        patch: TenantSettingsPatch {
            max_keys: Some(None),
            ..Default::default()
        },
    })
    .await
    .unwrap();
    assert_eq!(count_allowed(200, 10).await, 0);
    l.update_config(Change::Global(GlobalPatch {
        max_keys_per_tenant: Some(40),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(count_allowed(300, 30).await, 15);
    assert_eq!(store.tenant_key_counts("quiet").0, 40);
    // Invalid values are refused and change nothing.
    let bad = l
        .update_config(Change::TenantSettings {
            tenant: "quiet".into(),
            patch: TenantSettingsPatch {
                max_keys: Some(Some(0)),
                ..Default::default()
            },
        })
        .await;
    assert!(bad.is_err());
}

#[tokio::test]
async fn request_windows_are_capped_per_tenant() {
    let store = MemoryStore::new(Arc::new(ManualClock::new(1_000_000_000)), 1000);
    let global = GlobalSettings {
        max_request_window_seconds: 3600,
        ..Default::default()
    };
    let l = limiter(Arc::new(store.clone()), global).await;
    let year = Some(lim(5, 31_536_000.0));
    let err = decide(&l, "anyone", "c", year).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LimitError::Invalid(_)), "{err:?}");
    assert!(msg.contains("3600 seconds"), "{msg}");
    assert_eq!(store.key_count(), 0, "a refused request creates no key");
    decided(decide(&l, "anyone", "c", Some(lim(5, 3600.0))).await);
    // Per tenant, at runtime.
    l.update_config(Change::TenantSettings {
        tenant: "short".into(),
        patch: TenantSettingsPatch {
            max_request_window_seconds: Some(Some(60)),
            ..Default::default()
        },
    })
    .await
    .unwrap();
    let err = decide(&l, "short", "c", Some(lim(5, 60.001)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("60 seconds"), "{err}");
    decided(decide(&l, "short", "c", Some(lim(5, 60.0))).await);
    // Configured limits are the operator's and are not capped.
    l.update_config(Change::SetAction {
        tenant: "short".into(),
        action: "login".into(),
        limit: lim(5, 86_400.0),
    })
    .await
    .unwrap();
    decided(decide(&l, "short", "c2", None).await);
}

// ---- Redis ----

struct RedisSubject {
    server: redis_server::RedisServer,
    store: RedisStore,
}

async fn redis(test: &str) -> Option<RedisSubject> {
    if redis_server::skip_without_redis(test) {
        return None;
    }
    let server = redis_server::RedisServer::start();
    let store = RedisStore::connect(
        &RedisOptions::new(vec![server.url()]),
        RedisStoreOptions::default(),
    )
    .await
    .expect("connect to the test redis");
    Some(RedisSubject { server, store })
}

fn info_number(server: &redis_server::RedisServer, section: &str, field: &str) -> u64 {
    let info = server.command(&["INFO", section]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in INFO {section}: {info}"))
}

fn dbsize(server: &redis_server::RedisServer) -> u64 {
    let r = server.command(&["DBSIZE"]).unwrap();
    r.trim().trim_start_matches(':').parse().unwrap()
}

/// Caps Redis at its current memory plus `extra` bytes, refusing writes past it.
fn cap_memory(server: &redis_server::RedisServer, extra: u64) {
    let used = info_number(server, "memory", "used_memory");
    let max = (used + extra).to_string();
    assert!(server
        .command(&["CONFIG", "SET", "maxmemory", &max])
        .unwrap()
        .contains("OK"));
    assert!(server
        .command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .unwrap()
        .contains("OK"));
}

/// Floods `n` unique ids (distinct clients of `noisy`, or distinct tenants) with a one-minute
/// request window; returns how many were allowed, checking every other answer is a refusal by a
/// creation-rate bound (never a store error or fail_open).
async fn redis_flood(l: &Engine, n: usize, distinct_tenants: bool) -> u64 {
    let mut allowed = 0;
    for i in 0..n {
        let id = format!("flood-{i}");
        let (t, c) = if distinct_tenants {
            (id.as_str(), "c")
        } else {
            ("noisy", id.as_str())
        };
        let r = decide(l, t, c, Some(lim(5, 60.0))).await;
        match refusal(&r) {
            Some(KeyBound::TenantRate { .. } | KeyBound::PoolRate { .. }) => {}
            Some(b) => panic!("unexpected bound {b:?}"),
            None => {
                assert_eq!(decided(r), (true, 1));
                allowed += 1;
            }
        }
    }
    allowed
}

/// Issue 19 item 1 and issue 16 on Redis: with Redis capped at a little memory (noeviction) and
/// a small creation rate, a flood of unique ids never fills Redis, the victim's decisions stay
/// exact, and nothing fails open.
async fn redis_flood_leaves_victim_exact(distinct_tenants: bool) {
    let Some(s) = redis("redis flood").await else {
        return;
    };
    let rate = 20;
    let global = GlobalSettings {
        new_keys_per_second: rate,
        max_request_window_seconds: 60,
        ..Default::default()
    };
    let l = limiter(Arc::new(s.store.clone()), global).await;
    quiet_tenant_warm_up(&l).await;
    cap_memory(&s.server, 256 * 1024);
    let started = Instant::now();
    let allowed = redis_flood(&l, 5000, distinct_tenants).await;
    let secs = started.elapsed().as_secs() + 1;
    // One second's burst plus the rate over the flood's (whole, rounded up) duration.
    assert!(allowed <= rate * (secs + 1), "{allowed} keys in {secs} s");
    assert!(allowed >= rate, "the burst is admitted");
    quiet_tenant_is_exact(&l).await;
    assert!(dbsize(&s.server) <= allowed + 6);
    assert!(s.store.is_healthy());
}

#[tokio::test]
async fn redis_flood_of_client_ids_leaves_victim_exact() {
    redis_flood_leaves_victim_exact(false).await;
}

#[tokio::test]
async fn redis_flood_of_tenant_ids_leaves_victim_exact() {
    redis_flood_leaves_victim_exact(true).await;
}

/// The same flood with the creation rate effectively off fills Redis and turns the victim's
/// decisions into fail_open: what the bound prevents (and what today's main does).
#[tokio::test]
async fn redis_flood_without_the_rate_bound_fails_the_victim_open() {
    let Some(s) = redis("redis flood control").await else {
        return;
    };
    let global = GlobalSettings {
        new_keys_per_second: 1_000_000_000,
        max_keys_per_tenant: 1_000_000_000,
        ..Default::default()
    };
    let l = limiter(Arc::new(s.store.clone()), global).await;
    quiet_tenant_warm_up(&l).await;
    cap_memory(&s.server, 256 * 1024);
    let mut failed_open = 0;
    for i in 0..5000 {
        let r = decide(&l, "noisy", &format!("flood-{i}"), Some(lim(5, 60.0))).await;
        if matches!(r, Ok(Outcome::FailOpen { .. })) {
            failed_open += 1;
        }
    }
    assert!(failed_open > 0, "the flood filled Redis");
    let mut victim_failed_open = 0;
    for _ in 0..5 {
        if let Ok(Outcome::FailOpen { .. }) = decide(&l, "quiet", "old", None).await {
            victim_failed_open += 1;
        }
    }
    assert!(victim_failed_open > 0);
}

/// The script refuses a new key without a creation token and creates nothing; an existing key
/// is decided whatever the bucket holds; a token reserved for an existing key is given back.
#[tokio::test]
async fn redis_creation_rate_with_explicit_time() {
    let Some(s) = redis("redis creation rate").await else {
        return;
    };
    let b = tollgate_core::store::KeyBounds {
        max_keys: 1000,
        new_keys_per_second: 2,
        pooled: false,
    };
    let l = lim(10, 60.0);
    // Explicit times set the key's expiry absolutely (PEXPIREAT): stay after the real clock.
    let t0 = 4_000_000_000_000_000;
    let at = |c: &'static str, t| {
        let st = s.store.clone();
        async move {
            st.check_and_consume_bounded_at(RateKey::new("r", c, "a"), l, 1, b, t)
                .await
        }
    };
    assert!(at("a", t0).await.unwrap().allowed);
    // Existing key: its reserved token comes back, so it costs the bucket nothing.
    for _ in 0..5 {
        assert!(at("a", t0).await.unwrap().allowed);
    }
    assert!(at("b", t0).await.unwrap().allowed);
    let refused = at("c", t0).await.unwrap_err();
    assert_eq!(
        refused,
        StoreError::TenantKeyBudget(KeyRefusal {
            tenant: "r".into(),
            bound: KeyBound::TenantRate { per_second: 2 },
        })
    );
    assert_eq!(dbsize(&s.server), 2, "the refused key was not written");
    // With the bucket empty, existing keys still decide exactly.
    assert_eq!(at("a", t0).await.unwrap().used, 7);
    // Half a second later one more token.
    assert!(at("c", t0 + 500_000).await.unwrap().allowed);
    assert!(at("d", t0 + 500_000).await.is_err());
    assert_eq!(dbsize(&s.server), 3);
}
