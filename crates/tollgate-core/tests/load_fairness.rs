//! The load manager on paused tokio time: fairness between tenants, isolation of light tenants,
//! weights, resizing, and a stress run with cancellations and timeouts.
//!
//! Every scenario drives the manager the way the limiter does — acquire a slot, hold it for the
//! store's service time, release — with a fixed service time so the runs are deterministic.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::{sleep, Instant};
use tollgate_core::config::GlobalSettings;
use tollgate_core::load::{LoadManager, Shed};

const SERVICE: Duration = Duration::from_millis(10);

fn settings(capacity: u32, queue: u32, timeout_ms: u64) -> GlobalSettings {
    GlobalSettings {
        max_global_concurrent_requests: capacity,
        max_tenant_queue_size: queue,
        queue_timeout_ms: timeout_ms,
        ..Default::default()
    }
}

fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    sum * sum / (xs.len() as f64 * sq)
}

/// How a closed-loop client waits for a slot: through the load manager or a plain FIFO semaphore.
#[derive(Clone)]
enum Gate {
    Fair(LoadManager),
    Fifo(Arc<Semaphore>),
}

/// Runs `clients[i]` closed-loop clients for tenant i (weight `weights[i]`) and returns how many
/// slots each tenant got during the measurement window (after a warm-up).
async fn closed_loop(
    gate: Gate,
    clients: &[usize],
    weights: &[u32],
    warmup: Duration,
    measure: Duration,
) -> Vec<u64> {
    let start = Instant::now();
    let from = start + warmup;
    let until = from + measure;
    let counts = Rc::new(RefCell::new(vec![0u64; clients.len()]));
    let local = tokio::task::LocalSet::new();
    for (t, &n) in clients.iter().enumerate() {
        for _ in 0..n {
            let gate = gate.clone();
            let counts = counts.clone();
            let tenant = format!("tenant-{t}");
            let weight = weights[t];
            local.spawn_local(async move {
                while Instant::now() < until {
                    let granted_at;
                    match &gate {
                        Gate::Fair(m) => match m.acquire(&tenant, weight).await {
                            Ok(permit) => {
                                granted_at = Instant::now();
                                sleep(SERVICE).await;
                                drop(permit);
                            }
                            Err(e) => panic!("backlogged clients are never shed here: {e}"),
                        },
                        Gate::Fifo(s) => {
                            let permit = s.acquire().await.unwrap();
                            granted_at = Instant::now();
                            sleep(SERVICE).await;
                            drop(permit);
                        }
                    }
                    if granted_at >= from && granted_at < until {
                        counts.borrow_mut()[t] += 1;
                    }
                }
            });
        }
    }
    local.await;
    let c = counts.borrow().clone();
    c
}

#[tokio::test(start_paused = true)]
async fn noisy_neighbour_gets_no_more_than_its_fair_share() {
    // Capacity 10, 10 equal tenants all backlogged; tenant 0 offers 10x the others.
    let mut clients = vec![10usize; 10];
    clients[0] = 100;
    let weights = vec![1u32; 10];
    let warmup = Duration::from_millis(200);
    let measure = Duration::from_secs(10);

    let fair = LoadManager::new(&settings(10, 1000, 60_000));
    let counts = closed_loop(
        Gate::Fair(fair.clone()),
        &clients,
        &weights,
        warmup,
        measure,
    )
    .await;
    let total: u64 = counts.iter().sum();
    // 10 slots x 10 s / 10 ms service time.
    assert!(total >= 9_900, "capacity is used fully: {total}");
    let fair_share = total as f64 / 10.0;
    for (t, &c) in counts.iter().enumerate() {
        let dev = (c as f64 - fair_share).abs() / fair_share;
        assert!(
            dev <= 0.02,
            "tenant {t}: {c} vs fair share {fair_share} ({:.2}% off)",
            dev * 100.0
        );
    }
    let j = jain(&counts.iter().map(|&c| c as f64).collect::<Vec<_>>());
    assert!(j >= 0.99, "Jain's index {j}");
    let snap = fair.snapshot();
    assert_eq!((snap.in_flight, snap.queued), (0, 0));

    // The same load through a FIFO semaphore splits capacity by offered load instead.
    let fifo = Arc::new(Semaphore::new(10));
    let counts = closed_loop(Gate::Fifo(fifo), &clients, &weights, warmup, measure).await;
    let total: u64 = counts.iter().sum();
    let noisy_share = counts[0] as f64 / total as f64;
    let j_fifo = jain(&counts.iter().map(|&c| c as f64).collect::<Vec<_>>());
    assert!(
        noisy_share > 0.45,
        "FIFO gives the noisy tenant about 100/190: {noisy_share}"
    );
    assert!(
        j_fifo < 0.5,
        "FIFO Jain's index is far below fair: {j_fifo}"
    );
}

#[tokio::test(start_paused = true)]
async fn weights_split_capacity_in_proportion() {
    let clients = [50usize, 50, 50];
    let weights = [1u32, 2, 4];
    let counts = closed_loop(
        Gate::Fair(LoadManager::new(&settings(10, 1000, 60_000))),
        &clients,
        &weights,
        Duration::from_millis(200),
        Duration::from_secs(10),
    )
    .await;
    let total: u64 = counts.iter().sum();
    for (i, w) in weights.iter().enumerate() {
        let expected = *w as f64 / 7.0;
        let got = counts[i] as f64 / total as f64;
        assert!(
            (got - expected).abs() / expected <= 0.03,
            "weight {w}: share {got:.4} vs {expected:.4}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn light_tenants_are_isolated_from_a_saturating_one() {
    // Capacity 10 at 10 ms per decision: 1,000/s, a fair share of 100/s per tenant. Tenants 1..=9
    // send 50/s each (open loop, one request every 20 ms); tenant 0 keeps 100 requests waiting.
    let manager = LoadManager::new(&settings(10, 1000, 60_000));
    let until = Instant::now() + Duration::from_secs(5);
    let local = tokio::task::LocalSet::new();
    let light_waits = Rc::new(RefCell::new(Vec::<Duration>::new()));
    let light_rejections = Rc::new(Cell::new(0u32));
    let idle_while_waiting = Rc::new(Cell::new(0u32));
    for _ in 0..100 {
        let m = manager.clone();
        local.spawn_local(async move {
            while Instant::now() < until {
                let p = m
                    .acquire("heavy", 1)
                    .await
                    .expect("heavy is queued, not shed");
                sleep(SERVICE).await;
                drop(p);
            }
        });
    }
    for t in 1..=9 {
        let m = manager.clone();
        let waits = light_waits.clone();
        let rejections = light_rejections.clone();
        local.spawn_local(async move {
            // Stagger the tenants so arrivals do not all coincide.
            sleep(Duration::from_micros(2_137 * t)).await;
            let tenant = format!("light-{t}");
            while Instant::now() < until {
                let m = m.clone();
                let waits = waits.clone();
                let rejections = rejections.clone();
                let tenant = tenant.clone();
                tokio::task::spawn_local(async move {
                    match m.acquire(&tenant, 1).await {
                        Ok(p) => {
                            waits.borrow_mut().push(p.waited);
                            sleep(SERVICE).await;
                            drop(p);
                        }
                        Err(_) => rejections.set(rejections.get() + 1),
                    }
                });
                sleep(Duration::from_millis(20)).await;
            }
        });
    }
    {
        let m = manager.clone();
        let idle = idle_while_waiting.clone();
        local.spawn_local(async move {
            while Instant::now() < until {
                let s = m.snapshot();
                if s.queued > 0 && s.in_flight < s.capacity {
                    idle.set(idle.get() + 1);
                }
                sleep(Duration::from_micros(250)).await;
            }
        });
    }
    local.await;
    let waits = light_waits.borrow();
    assert!(
        waits.len() >= 9 * 240,
        "light requests were served: {}",
        waits.len()
    );
    assert_eq!(light_rejections.get(), 0);
    let worst = waits.iter().max().copied().unwrap_or_default();
    // One round of the scheduler: at most one grant per active tenant, and slots free at one per
    // millisecond, so at most ~10 ms — one service time — before a light request runs.
    assert!(worst <= SERVICE, "worst light wait {worst:?}");
    assert_eq!(
        idle_while_waiting.get(),
        0,
        "a slot idled while requests waited"
    );
}

#[tokio::test(start_paused = true)]
async fn resizing_takes_effect_at_once() {
    let m = LoadManager::new(&settings(2, 100, 60_000));
    let a = m.acquire("t", 1).await.unwrap();
    let b = m.acquire("t", 1).await.unwrap();
    let local = tokio::task::LocalSet::new();
    let served = Rc::new(Cell::new(0));
    for _ in 0..4 {
        let m = m.clone();
        let served = served.clone();
        local.spawn_local(async move {
            let p = m.acquire("u", 1).await.unwrap();
            served.set(served.get() + 1);
            sleep(Duration::from_secs(1)).await;
            drop(p);
        });
    }
    local
        .run_until(async {
            tokio::task::yield_now().await;
            assert_eq!(m.snapshot().queued, 4);
            // Raising capacity dispatches waiters immediately.
            m.configure(&settings(4, 100, 60_000));
            tokio::task::yield_now().await;
            assert_eq!(served.get(), 2);
            assert_eq!(m.snapshot().in_flight, 4);
            // Lowering it admits nobody until in-flight is below the new limit.
            m.configure(&settings(1, 100, 60_000));
            drop(a);
            drop(b);
            tokio::task::yield_now().await;
            assert_eq!(m.snapshot().in_flight, 2);
            assert_eq!(served.get(), 2);
            sleep(Duration::from_millis(1001)).await;
            // Both held slots are released; one waiter now runs, under the limit of 1.
            assert_eq!(m.snapshot().in_flight, 1);
            assert_eq!(served.get(), 3);
        })
        .await;
    local.await;
    assert_eq!(served.get(), 4);
    assert_eq!(m.snapshot().in_flight, 0);
}

/// A small deterministic generator so the stress run is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(start_paused = true)]
async fn stress_with_cancellations_and_timeouts_leaks_nothing() {
    const ARRIVALS: usize = 100_000;
    const CAPACITY: u32 = 8;
    const QUEUE: u32 = 16;
    let m = LoadManager::new(&settings(CAPACITY, QUEUE, 4));
    let local = tokio::task::LocalSet::new();
    let holding = Rc::new(Cell::new(0u32));
    let max_holding = Rc::new(Cell::new(0u32));
    let arrivals = Rc::new(Cell::new(0usize));
    let queue_full = Rc::new(Cell::new(0u64));
    let timeouts = Rc::new(Cell::new(0u64));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut handles = Vec::new();
    local
        .run_until(async {
            for _ in 0..ARRIVALS {
                let m = m.clone();
                let (holding, max_holding, arrivals, queue_full, timeouts) = (
                    holding.clone(),
                    max_holding.clone(),
                    arrivals.clone(),
                    queue_full.clone(),
                    timeouts.clone(),
                );
                let tenant = format!("t{}", rng.below(20));
                let hold = Duration::from_micros(rng.below(3_000));
                let behaviour = rng.below(10);
                let patience = Duration::from_micros(rng.below(5_000));
                let h = tokio::task::spawn_local(async move {
                    arrivals.set(arrivals.get() + 1);
                    let acquire = m.acquire(&tenant, 1 + (tenant.len() as u32 % 3));
                    let result = if behaviour < 3 {
                        // The caller gives up on its own (client disconnect): the future is dropped.
                        match tokio::time::timeout(patience, acquire).await {
                            Ok(r) => r,
                            Err(_) => return,
                        }
                    } else {
                        acquire.await
                    };
                    match result {
                        Ok(permit) => {
                            // Counted down on drop, so an abort while holding is counted too.
                            let _held = Held::new(holding, &max_holding);
                            assert!(m.snapshot().in_flight <= CAPACITY as usize);
                            sleep(hold).await;
                            drop(permit);
                        }
                        Err(Shed::QueueFull) => {
                            queue_full.set(queue_full.get() + 1);
                            // Rejected exactly when this tenant's queue holds the configured size.
                            let q = m
                                .queued_per_tenant()
                                .into_iter()
                                .find(|(t, _)| *t == tenant)
                                .map_or(0, |(_, n)| n);
                            assert_eq!(q, QUEUE as usize, "queue-full at {q}");
                        }
                        Err(Shed::Timeout) => timeouts.set(timeouts.get() + 1),
                        Err(Shed::ShuttingDown) => unreachable!(),
                    }
                });
                if behaviour == 9 {
                    // Some tasks are aborted mid-flight: queued or holding, whichever they are.
                    let after = Duration::from_micros(rng.below(4_000));
                    let abort = h.abort_handle();
                    tokio::task::spawn_local(async move {
                        sleep(after).await;
                        abort.abort();
                    });
                }
                handles.push(h);
                // Tokio's timers tick in milliseconds: arrivals come in bursts of ~15 per tick.
                if rng.below(15) == 0 {
                    sleep(Duration::from_millis(1)).await;
                }
            }
            for h in handles {
                let _ = h.await;
            }
        })
        .await;
    local.await;
    assert!(max_holding.get() <= CAPACITY);
    assert_eq!(max_holding.get(), CAPACITY, "the run did saturate");
    let snap = m.snapshot();
    assert_eq!(
        (snap.in_flight, snap.queued, snap.waiting_tenants),
        (0, 0, 0)
    );
    assert!(m.queued_per_tenant().is_empty());
    let c = m.counters();
    use std::sync::atomic::Ordering::Relaxed;
    let dispatched = c.dispatched.load(Relaxed);
    let qf = c.rejected_queue_full.load(Relaxed);
    let to = c.rejected_timeout.load(Relaxed);
    let cancelled = c.cancelled.load(Relaxed);
    assert_eq!(qf, queue_full.get());
    assert_eq!(to, timeouts.get());
    assert!(
        qf > 0 && to > 0 && cancelled > 0,
        "every path exercised: qf {qf} timeout {to} cancelled {cancelled}"
    );
    assert_eq!(dispatched + qf + to + cancelled, arrivals.get() as u64);
}

/// Counts slots held by the test's own tasks.
struct Held(Rc<Cell<u32>>);

impl Held {
    fn new(holding: Rc<Cell<u32>>, max: &Cell<u32>) -> Self {
        holding.set(holding.get() + 1);
        max.set(max.get().max(holding.get()));
        Held(holding)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}
