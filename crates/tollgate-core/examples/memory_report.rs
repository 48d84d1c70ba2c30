//! Memory report: bytes per tracked key and per logged request in the memory store, read from the
//! allocator's own counters (a counting wrapper around the system allocator), with the process's
//! resident-set growth alongside for comparison.
//!
//! Run: `cargo run --release -p tollgate-core --example memory_report`
//!
//! It starts with the configuration's share: bytes per configured limit (one tenant with one
//! action limit, as the `config_scale` benchmark configures them) in the snapshot decisions read,
//! split into the tenants' limits and the map that finds them. `TOLLGATE_BENCH_LIMITS=N` sets how
//! many (default 1,000,000).
//!
//! The counted figure is the bytes the program asked the allocator for and still holds; the
//! allocator's own per-block overhead (glibc: 8 bytes per block, rounded to 16) is not in it, which
//! the RSS figure shows.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use tollgate_core::clock::ManualClock;
use tollgate_core::store::MemoryStore;
use tollgate_core::window::TICKS_PER_WINDOW;
use tollgate_core::{Limit, RateKey};

/// Forwards every call to `System` and keeps a running total of live bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the only addition is an atomic counter update, which neither allocates
// nor touches the memory handed out. So each returned pointer, layout and failure (null) is exactly
// what `System` gave.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Resident set size in bytes, from /proc (0 where unavailable).
fn rss() -> isize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<isize>().ok())
        .map_or(0, |pages| pages * 4096)
}

const T0: u64 = 1_700_000_000_000_000;
const KEYS: usize = 1_000_000;
const REQUESTS: u64 = 1_000_000;

/// The configuration snapshot's bytes per configured limit, by part.
fn config_breakdown(n: usize) {
    use tollgate_core::config::{ConfigDocument, LimitEntry, LimitSpec, Snapshot, TenantDocument};
    let spec = LimitEntry::from(LimitSpec::new(100, 60.0));
    let mut doc = ConfigDocument::default();
    for t in 0..n {
        let mut td = TenantDocument::default();
        td.actions.insert("api_call".into(), spec.clone());
        doc.tenants.insert(format!("tenant-{t:07}"), td);
    }
    let live0 = live();
    let snap = Snapshot::from_document(&doc).unwrap();
    let total = live() - live0;
    drop(doc);
    // The same tenants outside the map: what the map adds is the rest.
    let live1 = live();
    let entries: Vec<_> = snap.tenants.iter().map(|(_, t)| t.clone()).collect();
    let list = live() - live1;
    drop(snap);
    let limits = live() - (live1 - total) - list;
    drop(entries);
    let per = |b: isize| b as f64 / n as f64;
    println!(
        "configuration, {n} limits (one per tenant): {:.0} bytes per limit in the snapshot = \
         {:.0} the tenants' limits (TenantLimits and its policies) + {:.0} the tenant map \
         (ids and nodes)",
        per(total),
        per(limits),
        per(total - limits)
    );
}

fn main() {
    let n: usize = std::env::var("TOLLGATE_BENCH_LIMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    config_breakdown(n);
    if std::env::var_os("TOLLGATE_CONFIG_ONLY").is_some() {
        return;
    }
    // 1,000,000 keys, each holding one logged request: "idle but tracked" until its window ends.
    let clock = ManualClock::new(T0);
    let limit = Limit::new(100, 60.0).unwrap();
    let ids: Vec<(String, String)> = (0..KEYS)
        .map(|i| (format!("tenant-{}", i % 1000), format!("client-{i}")))
        .collect();
    let (live0, rss0) = (live(), rss());
    let store = MemoryStore::new(Arc::new(clock.clone()), 2 * KEYS);
    for (t, c) in &ids {
        let v = store
            .check_and_consume_sync(RateKey::new(t, c, "api_call"), limit, 1)
            .unwrap();
        assert!(v.allowed);
    }
    assert_eq!(store.key_count(), KEYS);
    let key_bytes = (live() - live0) as f64 / KEYS as f64;
    let key_rss = (rss() - rss0) as f64 / KEYS as f64;
    let id_len: usize = ids
        .iter()
        .map(|(t, c)| t.len() + c.len() + "api_call".len())
        .sum();
    println!(
        "1,000,000 keys, 1 request each: {key_bytes:.1} bytes per tracked key (allocator counters; \
         the three ids themselves are {:.1} bytes), {key_rss:.1} bytes RSS growth per key",
        id_len as f64 / KEYS as f64
    );
    // Once the window has passed, the sweep gives all of it back.
    clock.advance(61_000_000);
    assert_eq!(store.sweep(), KEYS);
    drop(store);
    println!(
        "  after the window passed, sweep and drop: {} bytes still held",
        live() - live0
    );
    drop(ids);

    // One key holding 1,000,000 requests spread over an hour-long window (one every 3.6 ms).
    let clock = ManualClock::new(T0);
    let store = MemoryStore::new(Arc::new(clock.clone()), 10);
    let key = RateKey::new("org", "heavy-client", "api_call");
    let hour = Limit::new(1_000_000_000, 3600.0).unwrap();
    let live1 = live();
    for _ in 0..REQUESTS {
        assert!(store.check_and_consume_sync(key, hour, 1).unwrap().allowed);
        clock.advance(3_600);
    }
    let v = store.status_sync(key, hour);
    assert_eq!(v.used, REQUESTS);
    let per_req = (live() - live1) as f64 / REQUESTS as f64;
    println!(
        "1 key, 1,000,000 requests in a 3600 s window: {per_req:.2} bytes per logged request \
         (requests in one tick share a 16-byte entry; at most {TICKS_PER_WINDOW} entries per key)"
    );
    drop(store);

    // The worst case per request: every request in its own tick, so one entry each.
    let clock = ManualClock::new(T0);
    let store = MemoryStore::new(Arc::new(clock.clone()), 10);
    let n = TICKS_PER_WINDOW;
    let live2 = live();
    for _ in 0..n {
        assert!(store.check_and_consume_sync(key, hour, 1).unwrap().allowed);
        clock.advance(3_600_000_000 / n);
    }
    let per_req = (live() - live2) as f64 / n as f64;
    println!(
        "1 key, {n} requests each in its own tick (worst case): {per_req:.2} bytes per logged request"
    );
}
