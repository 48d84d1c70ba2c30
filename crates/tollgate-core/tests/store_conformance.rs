//! One conformance suite, run against every store: the in-memory store and the Redis store (on a
//! redis-server this test starts itself). Both must give the decisions `WindowLog` defines.
//!
//! The stores run on real time here (Redis always uses its own clock), so each check is written
//! in terms of the `now` each verdict reports, never in terms of how long a call took.

#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tollgate_core::redis_conn::RedisOptions;
use tollgate_core::store::{MemoryStore, RedisStore, RedisStoreOptions, Store};
use tollgate_core::window::{tick_for, Verdict};
use tollgate_core::{Limit, RateKey};

/// A store under test plus whatever keeps it alive (the redis-server process).
struct Subject {
    store: Arc<dyn Store>,
    _server: Option<redis_server::RedisServer>,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A tenant id no other test uses, so tests can share a store.
fn tenant() -> String {
    format!("t{}", UNIQUE.fetch_add(1, Ordering::Relaxed))
}

fn lim(max: u64, secs: f64) -> Limit {
    Limit::new(max, secs).unwrap()
}

async fn consume(s: &dyn Store, t: &str, l: Limit, cost: u64) -> Verdict {
    s.check_and_consume(RateKey::new(t, "client", "act"), l, cost)
        .await
        .expect("store answers")
}

fn memory() -> Option<Subject> {
    Some(Subject {
        store: Arc::new(MemoryStore::default()),
        _server: None,
    })
}

async fn redis() -> Option<Subject> {
    if redis_server::skip_without_redis("redis store conformance") {
        return None;
    }
    let server = redis_server::RedisServer::start();
    // The suite checks what the store decides, not how fast: a generous timeout keeps a loaded
    // CI machine from turning a slow answer into a failed assertion (timeouts have their own tests).
    let mut opts = RedisOptions::new(vec![server.url()]);
    opts.command_timeout = std::time::Duration::from_secs(2);
    let store = RedisStore::connect(&opts, RedisStoreOptions::default())
        .await
        .expect("connect to the test redis");
    Some(Subject {
        store: Arc::new(store),
        _server: Some(server),
    })
}

// ---- the suite: each takes any store ----

async fn admits_up_to_limit_then_denies(s: &dyn Store) {
    let t = tenant();
    let l = lim(5, 10.0);
    let first = consume(s, &t, l, 1).await;
    assert!(first.allowed);
    assert_eq!(first.used, 1);
    assert_eq!(first.remaining(&l), 4);
    assert_eq!(first.retry_at, None);
    // reset = the oldest entry's time (its newest request) + window.
    let tick = tick_for(l.window_micros);
    assert_eq!(first.reset_at, first.now + l.window_micros);
    let first_tick_end = first.now.div_ceil(tick) * tick;
    let mut oldest = first.reset_at;
    for i in 2..=5 {
        let v = consume(s, &t, l, 1).await;
        assert!(v.allowed, "request {i} fits");
        assert_eq!(v.used, i);
        if v.reset_at != oldest {
            // Only a request in the first entry's tick joins it, and then the entry leaves
            // with that request.
            assert!(
                v.now <= first_tick_end,
                "request {i} moved the reset: {v:?}"
            );
            assert_eq!(v.reset_at, v.now + l.window_micros);
            oldest = v.reset_at;
        }
    }
    let denied = consume(s, &t, l, 1).await;
    assert!(!denied.allowed);
    assert_eq!(denied.used, 5);
    assert_eq!(denied.remaining(&l), 0);
    // One more fits exactly when the oldest entry leaves.
    assert_eq!(denied.retry_at, Some(oldest));
    assert_eq!(denied.reset_at, oldest);
}

async fn cost_is_all_or_nothing(s: &dyn Store) {
    let t = tenant();
    let l = lim(10, 30.0);
    let a = consume(s, &t, l, 4).await;
    assert!(a.allowed && a.used == 4);
    // Let the second entry land in a later tick than the first.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = consume(s, &t, l, 4).await;
    assert!(b.allowed && b.used == 8);
    let c = consume(s, &t, l, 3).await;
    assert!(!c.allowed, "3 more would make 11 > 10");
    assert_eq!(c.used, 8, "a denied request consumes nothing");
    assert_eq!(c.retry_at, Some(a.reset_at), "only the first 4 must leave");
    let d = consume(s, &t, l, 10).await;
    assert!(!d.allowed);
    let b_expiry = d.retry_at.expect("denied has a retry time");
    assert!(b_expiry > a.reset_at, "all 8 must leave for 10 more to fit");
    assert!(b_expiry >= b.now + l.window_micros);
    let e = consume(s, &t, l, 2).await;
    assert!(e.allowed && e.used == 10, "2 still fit exactly");
    assert!(!consume(s, &t, l, 1).await.allowed);
}

async fn window_slides(s: &dyn Store) {
    let t = tenant();
    let l = lim(2, 0.3);
    let a = consume(s, &t, l, 1).await;
    assert!(a.allowed);
    assert!(consume(s, &t, l, 1).await.allowed);
    let denied = consume(s, &t, l, 1).await;
    assert!(!denied.allowed);
    let retry = denied.retry_at.unwrap();
    assert!(retry > denied.now && retry <= denied.now + l.window_micros);
    // Sleep past the retry time (measured on the store's clock) and try again.
    tokio::time::sleep(Duration::from_micros(retry - denied.now + 20_000)).await;
    let v = consume(s, &t, l, 1).await;
    assert!(v.allowed, "the oldest entry has left: {v:?}");
    assert!(v.now >= retry);
}

async fn limit_changes_keep_the_log(s: &dyn Store) {
    let t = tenant();
    for _ in 0..5 {
        assert!(consume(s, &t, lim(10, 20.0), 1).await.allowed);
    }
    let lowered = consume(s, &t, lim(3, 20.0), 1).await;
    assert!(!lowered.allowed);
    assert_eq!(
        lowered.used, 5,
        "lowering the limit does not forget what was logged"
    );
    let raised = consume(s, &t, lim(6, 20.0), 1).await;
    assert!(raised.allowed);
    assert_eq!(raised.used, 6);
    // A longer window still counts the same entries.
    let longer = consume(s, &t, lim(6, 60.0), 1).await;
    assert!(!longer.allowed);
    assert_eq!(longer.used, 6);
}

async fn status_consumes_nothing(s: &dyn Store) {
    let t = tenant();
    let key = RateKey::new(&t, "client", "act");
    let l = lim(2, 20.0);
    let fresh = s.status(key, l).await.unwrap();
    assert!(fresh.allowed);
    assert_eq!(fresh.used, 0);
    assert_eq!(fresh.reset_at, fresh.now, "nothing counted: resets now");
    let a = consume(s, &t, l, 1).await;
    for _ in 0..3 {
        let st = s.status(key, l).await.unwrap();
        assert_eq!(st.used, 1);
        assert!(st.allowed);
        assert_eq!(st.reset_at, a.reset_at);
    }
    // The second request may share the first's entry (same tick); the entry then leaves with it.
    let b = consume(s, &t, l, 1).await;
    let full = s.status(key, l).await.unwrap();
    assert!(!full.allowed);
    assert_eq!(full.used, 2);
    assert_eq!(full.retry_at, Some(b.reset_at));
}

async fn keys_are_independent_and_injective(s: &dyn Store) {
    let t = tenant();
    let l = lim(1, 20.0);
    let ab = format!("{t}:b");
    let bc = "b:c".to_string();
    let k1 = RateKey::new(&ab, "c", "x");
    let k2 = RateKey::new(&t, &bc, "x");
    assert!(s.check_and_consume(k1, l, 1).await.unwrap().allowed);
    assert!(
        s.check_and_consume(k2, l, 1).await.unwrap().allowed,
        "tenant 'a:b' + client 'c' must not share a log with tenant 'a' + client 'b:c'"
    );
    assert!(!s.check_and_consume(k1, l, 1).await.unwrap().allowed);
    // Another action of the same tenant and client is another key.
    let k3 = RateKey::new(&t, &bc, "y");
    assert!(s.check_and_consume(k3, l, 1).await.unwrap().allowed);
}

async fn exact_under_concurrency(s: Arc<dyn Store>) {
    let t = Arc::new(tenant());
    let l = lim(500, 60.0);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let s = s.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut allowed = 0u64;
            for _ in 0..20 {
                let v = s
                    .check_and_consume(RateKey::new(&t, "client", "act"), l, 1)
                    .await
                    .unwrap();
                assert!(v.used <= 500);
                allowed += v.allowed as u64;
            }
            allowed
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(
        total, 500,
        "1280 attempts at a limit of 500 admit exactly 500"
    );
}

async fn large_limits_work(s: &dyn Store) {
    let t = tenant();
    let l = lim(1_000_000_000, 3600.0);
    let v = consume(s, &t, l, 999_999_999).await;
    assert!(v.allowed);
    assert_eq!(v.remaining(&l), 1);
    let last = consume(s, &t, l, 1).await;
    assert!(last.allowed);
    let d = consume(s, &t, l, 1).await;
    assert!(!d.allowed);
    assert_eq!(d.used, 1_000_000_000);
    // One more fits when the oldest entry leaves: the first request's, unless the last request
    // joined it in the same tick.
    assert_eq!(d.retry_at, Some(last.reset_at));
    assert!(last.reset_at == v.reset_at || last.reset_at == last.now + l.window_micros);
}

async fn many_requests_retry_at_oldest(s: &dyn Store) {
    let t = tenant();
    let l = lim(300, 20.0);
    let first = consume(s, &t, l, 1).await;
    let mut last = first;
    for _ in 1..300 {
        last = consume(s, &t, l, 1).await;
        assert!(last.allowed);
    }
    let d = consume(s, &t, l, 1).await;
    assert!(!d.allowed);
    assert_eq!(d.used, 300);
    // The oldest entry holds the first request (and any that joined it within its tick).
    assert_eq!(d.retry_at, Some(last.reset_at));
    let tick = tick_for(l.window_micros);
    assert!(last.reset_at >= first.reset_at && last.reset_at < first.reset_at + tick);
    // Freeing room for 300 means waiting for the newest entry, at most a window from now.
    let all = consume(s, &t, l, 300).await;
    let r = all.retry_at.unwrap();
    assert!(r >= last.reset_at && r <= all.now + l.window_micros);
}

macro_rules! conformance {
    ($store:ident, $make:expr) => {
        mod $store {
            use super::*;

            #[tokio::test]
            async fn admits_up_to_limit_then_denies() {
                let Some(s) = $make else { return };
                super::admits_up_to_limit_then_denies(&*s.store).await;
            }
            #[tokio::test]
            async fn cost_is_all_or_nothing() {
                let Some(s) = $make else { return };
                super::cost_is_all_or_nothing(&*s.store).await;
            }
            #[tokio::test]
            async fn window_slides() {
                let Some(s) = $make else { return };
                super::window_slides(&*s.store).await;
            }
            #[tokio::test]
            async fn limit_changes_keep_the_log() {
                let Some(s) = $make else { return };
                super::limit_changes_keep_the_log(&*s.store).await;
            }
            #[tokio::test]
            async fn status_consumes_nothing() {
                let Some(s) = $make else { return };
                super::status_consumes_nothing(&*s.store).await;
            }
            #[tokio::test]
            async fn keys_are_independent_and_injective() {
                let Some(s) = $make else { return };
                super::keys_are_independent_and_injective(&*s.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn exact_under_concurrency() {
                let Some(s) = $make else { return };
                super::exact_under_concurrency(s.store.clone()).await;
            }
            #[tokio::test]
            async fn large_limits_work() {
                let Some(s) = $make else { return };
                super::large_limits_work(&*s.store).await;
            }
            #[tokio::test]
            async fn many_requests_retry_at_oldest() {
                let Some(s) = $make else { return };
                super::many_requests_retry_at_oldest(&*s.store).await;
            }
        }
    };
}

conformance!(memory_store, memory());
conformance!(redis_store, redis().await);
