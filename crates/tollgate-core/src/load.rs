//! The TenantLoadManager: bounds decisions in flight and shares capacity fairly between tenants
//! when it runs out.
//!
//! While a slot is free and nobody waits, `acquire` takes it at once (one short lock). Otherwise
//! the request waits in its tenant's FIFO queue, and each freed slot goes to the next request
//! chosen by weighted deficit round robin over the tenants that have waiters: the tenant at the
//! front of the active list gets `weight` grants, then moves to the back. Every request costs one
//! slot, so each grant is O(1) whatever the number of tenants. A plain FIFO semaphore would split
//! capacity by offered load instead — exactly the unfairness this prevents.
//!
//! Cancellation safety: grants happen under the state lock by popping the waiter and sending on
//! its oneshot. A waiter that gives up (timeout, or its future dropped because the client went
//! away) takes the same lock: if it is still queued it removes itself; if not, a grant was sent
//! first and it takes the permit from its channel and releases it, so no slot leaks and none is
//! granted twice.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use slab::Slab;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::GlobalSettings;

/// Why a request was shed instead of admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Shed {
    #[error("the tenant's queue is full")]
    QueueFull,
    #[error("waited longer than the queue timeout")]
    Timeout,
    #[error("the service is shutting down")]
    ShuttingDown,
}

impl Shed {
    pub fn as_str(&self) -> &'static str {
        match self {
            Shed::QueueFull => "tenant_queue_full",
            Shed::Timeout => "timeout",
            Shed::ShuttingDown => "shutting_down",
        }
    }
}

/// Counters for metrics, all monotonic; the gauges are read from [`LoadManager::snapshot`].
#[derive(Debug, Default)]
pub struct LoadCounters {
    /// Requests admitted (immediately or from a queue).
    pub dispatched: AtomicU64,
    /// Requests that had to wait before admission.
    pub dispatched_after_wait: AtomicU64,
    pub rejected_queue_full: AtomicU64,
    pub rejected_timeout: AtomicU64,
    pub rejected_shutdown: AtomicU64,
    /// Waiters whose caller went away before being served.
    pub cancelled: AtomicU64,
}

/// A point-in-time view of the load manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSnapshot {
    pub capacity: usize,
    pub in_flight: usize,
    pub queued: usize,
    /// Tenants that currently have waiters.
    pub waiting_tenants: usize,
    pub max_queue: usize,
    pub timeout: Duration,
}

type Reply = Result<(), Shed>;

struct Waiter {
    /// Monotonic per manager, so a tenant's queue is sorted by id and a cancel can binary-search.
    id: u64,
    tx: oneshot::Sender<Reply>,
}

struct TenantQueue {
    name: Box<str>,
    weight: u32,
    /// Grants left in this tenant's current turn.
    deficit: u32,
    /// In the round-robin list. An emptied tenant is parked (kept, out of the list) rather than
    /// freed, so a busy tenant that keeps emptying and refilling its queue does not allocate and
    /// re-index itself on every request.
    active: bool,
    waiters: VecDeque<Waiter>,
}

struct State {
    capacity: usize,
    in_flight: usize,
    max_queue: usize,
    timeout: Duration,
    queued: usize,
    next_id: u64,
    /// Queues of tenants that have waiters; a tenant's entry is removed when its queue empties.
    tenants: Slab<TenantQueue>,
    index: hashbrown::HashMap<Box<str>, usize, foldhash::fast::RandomState>,
    /// Round-robin order of tenants with waiters (slab keys). Every entry of `tenants` is either
    /// here once (`active`) or parked: kept for reuse while out of the round robin, and forgotten
    /// in bulk when the parked outnumber the others, or when nobody waits at all.
    active: VecDeque<usize>,
}

impl State {
    /// Tenants kept in `tenants` while out of the round robin.
    fn parked(&self) -> usize {
        self.tenants.len().saturating_sub(self.active.len())
    }

    /// Takes the front tenant out of the round robin; its entry stays for reuse.
    fn park_front(&mut self, slot: usize) {
        self.active.pop_front();
        let tq = &mut self.tenants[slot];
        tq.active = false;
        tq.deficit = 0;
        // Bound the memory parked tenants hold: dropping them costs O(tenants) but happens only
        // after as many parks, so it stays O(1) per request.
        let parked = self.parked();
        if parked > 1024 && parked * 2 > self.tenants.len() {
            self.forget_parked();
        }
    }

    fn forget_parked(&mut self) {
        let State { tenants, index, .. } = self;
        tenants.retain(|_, t| {
            if !t.active {
                index.remove(&t.name);
            }
            t.active
        });
    }

    /// Nobody waits: drop every per-tenant entry.
    fn reset(&mut self) {
        self.tenants.clear();
        self.index.clear();
        self.active.clear();
    }
}

struct Inner {
    state: Mutex<State>,
    counters: LoadCounters,
}

/// Cheap-to-clone handle to the load manager.
#[derive(Clone)]
pub struct LoadManager {
    inner: Arc<Inner>,
}

/// One admitted decision's slot; released when dropped.
#[must_use = "the slot is released when the permit is dropped"]
pub struct Permit {
    inner: Arc<Inner>,
    /// How long the request waited in its queue (zero when admitted at once).
    pub waited: Duration,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut st = self.inner.state.lock();
        st.in_flight -= 1;
        dispatch(&mut st, &self.inner.counters);
    }
}

/// Hands free slots to waiters by weighted deficit round robin. Called with the lock held.
fn dispatch(st: &mut State, counters: &LoadCounters) {
    while st.in_flight < st.capacity {
        let Some(&slot) = st.active.front() else {
            return;
        };
        let tq = &mut st.tenants[slot];
        let Some(w) = tq.waiters.pop_front() else {
            // Emptied by cancellations; leave the round robin now that it reached the front.
            st.park_front(slot);
            continue;
        };
        if tq.deficit == 0 {
            tq.deficit = tq.weight.max(1);
        }
        tq.deficit -= 1;
        let emptied = tq.waiters.is_empty();
        let turn_over = tq.deficit == 0;
        st.queued -= 1;
        // The receiver is alive: a waiter removes itself under this lock before dropping it.
        if w.tx.send(Ok(())).is_ok() {
            st.in_flight += 1;
            counters.dispatched.fetch_add(1, Ordering::Relaxed);
            counters
                .dispatched_after_wait
                .fetch_add(1, Ordering::Relaxed);
        }
        if emptied {
            st.park_front(slot);
        } else if turn_over {
            st.active.rotate_left(1);
        }
    }
    if st.queued == 0 && !st.tenants.is_empty() {
        st.reset();
    }
}

impl LoadManager {
    pub fn new(settings: &GlobalSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    capacity: settings.max_global_concurrent_requests as usize,
                    in_flight: 0,
                    max_queue: settings.max_tenant_queue_size as usize,
                    timeout: Duration::from_millis(settings.queue_timeout_ms),
                    queued: 0,
                    next_id: 0,
                    tenants: Slab::new(),
                    index: Default::default(),
                    active: VecDeque::new(),
                }),
                counters: LoadCounters::default(),
            }),
        }
    }

    /// Applies new global settings. Raising capacity admits waiters at once; lowering it lets
    /// work in flight finish and admits nobody until in-flight is below the new limit.
    pub fn configure(&self, settings: &GlobalSettings) {
        let mut st = self.inner.state.lock();
        st.capacity = settings.max_global_concurrent_requests as usize;
        st.max_queue = settings.max_tenant_queue_size as usize;
        st.timeout = Duration::from_millis(settings.queue_timeout_ms);
        dispatch(&mut st, &self.inner.counters);
    }

    /// Waits for a slot for `tenant` (fair-share `weight`).
    pub async fn acquire(&self, tenant: &str, weight: u32) -> Result<Permit, Shed> {
        let (id, slot, rx, timeout) = {
            let mut st = self.inner.state.lock();
            // Immediate admission only when nobody waits: arrivals never jump the queue.
            if st.in_flight < st.capacity && st.queued == 0 {
                st.in_flight += 1;
                drop(st);
                self.inner
                    .counters
                    .dispatched
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(Permit {
                    inner: self.inner.clone(),
                    waited: Duration::ZERO,
                });
            }
            let st = &mut *st;
            let slot = match st.index.get(tenant) {
                Some(&s) => {
                    let tq = &mut st.tenants[s];
                    if !tq.active {
                        tq.active = true;
                        st.active.push_back(s);
                    }
                    s
                }
                None => {
                    if st.max_queue == 0 {
                        drop_reject(&self.inner.counters, Shed::QueueFull);
                        return Err(Shed::QueueFull);
                    }
                    let s = st.tenants.insert(TenantQueue {
                        name: tenant.into(),
                        weight,
                        deficit: 0,
                        active: true,
                        waiters: VecDeque::new(),
                    });
                    st.index.insert(tenant.into(), s);
                    st.active.push_back(s);
                    s
                }
            };
            let tq = &mut st.tenants[slot];
            if tq.waiters.len() >= st.max_queue {
                drop_reject(&self.inner.counters, Shed::QueueFull);
                return Err(Shed::QueueFull);
            }
            tq.weight = weight;
            let id = st.next_id;
            st.next_id += 1;
            let (tx, rx) = oneshot::channel();
            tq.waiters.push_back(Waiter { id, tx });
            st.queued += 1;
            (id, slot, rx, st.timeout)
        };
        let started = Instant::now();
        let mut guard = WaitGuard {
            manager: self,
            id,
            slot,
            rx: Some(rx),
        };
        let rx = guard
            .rx
            .as_mut()
            .expect("receiver present until the guard finishes");
        let reply = tokio::time::timeout(timeout, rx).await;
        let reply = match reply {
            Ok(Ok(r)) => {
                guard.rx = None;
                r
            }
            // Sender dropped without a reply: cannot happen while the manager lives.
            Ok(Err(_)) => {
                guard.rx = None;
                Err(Shed::ShuttingDown)
            }
            Err(_elapsed) => match guard.cancel() {
                // A grant arrived at the same moment as the timeout: use it.
                Some(Ok(())) => Ok(()),
                Some(Err(shed)) => Err(shed),
                None => {
                    drop_reject(&self.inner.counters, Shed::Timeout);
                    Err(Shed::Timeout)
                }
            },
        };
        reply.map(|()| Permit {
            inner: self.inner.clone(),
            waited: started.elapsed(),
        })
    }

    /// Answers every queued request `shutting_down` (the grace period is over).
    pub fn reject_all_queued(&self) {
        let mut st = self.inner.state.lock();
        let st = &mut *st;
        for (_, tq) in st.tenants.iter_mut() {
            for w in tq.waiters.drain(..) {
                if w.tx.send(Err(Shed::ShuttingDown)).is_ok() {
                    drop_reject(&self.inner.counters, Shed::ShuttingDown);
                }
            }
        }
        st.reset();
        st.queued = 0;
    }

    pub fn snapshot(&self) -> LoadSnapshot {
        let st = self.inner.state.lock();
        LoadSnapshot {
            capacity: st.capacity,
            in_flight: st.in_flight,
            queued: st.queued,
            waiting_tenants: st
                .tenants
                .iter()
                .filter(|(_, t)| !t.waiters.is_empty())
                .count(),
            max_queue: st.max_queue,
            timeout: st.timeout,
        }
    }

    /// Waiting requests per tenant, for metrics.
    pub fn queued_per_tenant(&self) -> Vec<(String, usize)> {
        let st = self.inner.state.lock();
        st.tenants
            .iter()
            .filter(|(_, tq)| !tq.waiters.is_empty())
            .map(|(_, tq)| (tq.name.to_string(), tq.waiters.len()))
            .collect()
    }

    pub fn counters(&self) -> &LoadCounters {
        &self.inner.counters
    }
}

fn drop_reject(c: &LoadCounters, shed: Shed) {
    let counter = match shed {
        Shed::QueueFull => &c.rejected_queue_full,
        Shed::Timeout => &c.rejected_timeout,
        Shed::ShuttingDown => &c.rejected_shutdown,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Removes a waiter from its queue if its `acquire` future ends without a reply (timeout or drop).
struct WaitGuard<'a> {
    manager: &'a LoadManager,
    id: u64,
    slot: usize,
    /// `None` once a reply has been received and consumed.
    rx: Option<oneshot::Receiver<Reply>>,
}

impl WaitGuard<'_> {
    /// Leaves the queue. Returns the reply if one was sent before we got the lock.
    fn cancel(&mut self) -> Option<Reply> {
        let mut rx = self.rx.take()?;
        let inner = &self.manager.inner;
        let mut st = inner.state.lock();
        let st = &mut *st;
        if let Some(tq) = st.tenants.get_mut(self.slot) {
            if let Ok(pos) = tq.waiters.binary_search_by_key(&self.id, |w| w.id) {
                tq.waiters.remove(pos);
                st.queued -= 1;
                // An emptied tenant stays in the round-robin list (removing it there would be
                // O(tenants)); dispatch parks it when it reaches the front, and when nobody waits
                // at all the whole structure is reset here.
                if st.queued == 0 {
                    st.reset();
                }
                return None;
            }
        }
        // Not queued any more: the dispatcher answered us before we took the lock.
        rx.try_recv().ok()
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.rx.is_none() {
            return;
        }
        match self.cancel() {
            // Granted (and counted as dispatched) but nobody will use it: hand the slot on.
            Some(Ok(())) => {
                let inner = &self.manager.inner;
                let mut st = inner.state.lock();
                st.in_flight -= 1;
                dispatch(&mut st, &inner.counters);
            }
            Some(Err(_)) => {}
            None => {
                self.manager
                    .inner
                    .counters
                    .cancelled
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
