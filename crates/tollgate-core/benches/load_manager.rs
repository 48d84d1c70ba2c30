//! Load manager costs: the uncontended acquire+release, and the per-request cost of a dispatch
//! when 10 or 100,000 tenants have waiters (it must not grow with the number of tenants).
//!
//! Futures are polled by hand with a no-op waker so the figures are the manager's own work, not
//! an executor's.

use std::collections::VecDeque;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tollgate_core::config::GlobalSettings;
use tollgate_core::load::{LoadManager, Permit, Shed};

type Acquire = Pin<Box<dyn Future<Output = Result<Permit, Shed>>>>;

fn settings(capacity: u32) -> GlobalSettings {
    GlobalSettings {
        max_global_concurrent_requests: capacity,
        max_tenant_queue_size: 1_000,
        queue_timeout_ms: 600_000,
        ..Default::default()
    }
}

fn waiter(m: &LoadManager, tenant: &str, cx: &mut Context<'_>) -> Acquire {
    let m = m.clone();
    let t = tenant.to_string();
    let mut f: Acquire = Box::pin(async move { m.acquire(&t, 1).await });
    assert!(
        f.as_mut().poll(cx).is_pending(),
        "queued behind the held slot"
    );
    f
}

fn uncontended(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let m = LoadManager::new(&settings(1_000));
    let mut cx = Context::from_waker(Waker::noop());
    c.bench_function("load/acquire_release_uncontended", |b| {
        b.iter(|| {
            let mut f = std::pin::pin!(m.acquire(black_box("tenant"), 1));
            match f.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(p)) => drop(p),
                _ => unreachable!("a free slot is taken at once"),
            }
        })
    });
}

fn dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("load");
    for tenants in [10usize, 1_000, 100_000] {
        let m = LoadManager::new(&settings(1));
        let mut cx = Context::from_waker(Waker::noop());
        // One slot, held; every tenant has one waiter behind it.
        let mut first = Box::pin(m.acquire("holder", 1));
        let Poll::Ready(Ok(permit)) = first.as_mut().poll(&mut cx) else {
            unreachable!()
        };
        drop(first);
        let mut held = Some(permit);
        let names: Vec<String> = (0..tenants).map(|i| format!("tenant-{i}")).collect();
        let mut queue: VecDeque<(usize, Acquire)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (i, waiter(&m, n, &mut cx)))
            .collect();
        assert_eq!(m.snapshot().waiting_tenants, tenants);
        // Dispatch alone: release the slot, the round robin grants it to the tenant at the
        // front, and that waiter wakes holding it. Timed per request with `iter_custom`; the
        // untimed part re-queues the tenant at the back so every tenant stays backlogged.
        group.bench_with_input(BenchmarkId::new("dispatch", tenants), &tenants, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    drop(held.take());
                    let (i, mut f) = queue.pop_front().expect("a waiter");
                    let Poll::Ready(Ok(p)) = f.as_mut().poll(&mut cx) else {
                        panic!("the front tenant was granted the slot")
                    };
                    total += start.elapsed();
                    held = Some(p);
                    drop(f);
                    queue.push_back((i, waiter(&m, &names[i], &mut cx)));
                }
                total
            })
        });
        // The whole cycle a queued request goes through: enqueue (new tenant entry, timer),
        // dispatch, wake.
        group.bench_with_input(
            BenchmarkId::new("enqueue_and_dispatch", tenants),
            &tenants,
            |b, _| {
                b.iter(|| {
                    drop(held.take());
                    let (i, mut f) = queue.pop_front().expect("a waiter");
                    let Poll::Ready(Ok(p)) = f.as_mut().poll(&mut cx) else {
                        panic!("the front tenant was granted the slot")
                    };
                    held = Some(p);
                    queue.push_back((i, waiter(&m, &names[i], &mut cx)));
                })
            },
        );
        drop(held);
        drop(queue);
    }
    group.finish();
}

criterion_group!(benches, uncontended, dispatch);
criterion_main!(benches);
