//! The memory store under contention from many threads: no lost or double-counted request.

use std::sync::{Arc, Barrier};
use std::thread;

use tollgate_core::clock::ManualClock;
use tollgate_core::limit::{Limit, RateKey};
use tollgate_core::store::MemoryStore;
use tollgate_core::window::tick_for;

const THREADS: usize = 8;
const CALLS_PER_THREAD: usize = 10_000;
const WINDOWS: usize = 10;
const LIMIT: u64 = 1_000;

/// 8 threads x 10,000 calls on one key, limit 1,000 per window, over 10 windows: every window
/// admits exactly 1,000, and the store's own count agrees.
#[test]
fn eight_threads_one_key_admit_exactly_the_limit_per_window() {
    let clock = ManualClock::new(1_700_000_000_000_000);
    let store = MemoryStore::new(Arc::new(clock.clone()), 1_000);
    let limit = Limit::new(LIMIT, 1.0).unwrap();
    // Each window: all threads race their share of calls at one instant, then time moves one
    // window on. The barrier makes the phases line up without sleeping.
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let per_window = CALLS_PER_THREAD / WINDOWS;
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let store = store.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let key = RateKey::new("tenant", "client", "action");
                let mut admitted = vec![0u64; WINDOWS];
                for slot in admitted.iter_mut() {
                    barrier.wait();
                    for _ in 0..per_window {
                        if store.check_and_consume_sync(key, limit, 1).unwrap().allowed {
                            *slot += 1;
                        }
                    }
                    barrier.wait();
                }
                admitted
            })
        })
        .collect();
    for w in 0..WINDOWS {
        barrier.wait(); // start window w
        barrier.wait(); // all threads done with window w
        let key = RateKey::new("tenant", "client", "action");
        assert_eq!(store.status_sync(key, limit).used, LIMIT, "window {w}");
        // Requests are logged at their time rounded up to the tick, so they leave one tick after
        // the window (never early): that is the documented price of bounded memory.
        clock.advance(limit.window_micros + tick_for(limit.window_micros));
    }
    let mut per_window_total = vec![0u64; WINDOWS];
    for h in handles {
        for (w, n) in h.join().unwrap().into_iter().enumerate() {
            per_window_total[w] += n;
        }
    }
    assert_eq!(per_window_total, vec![LIMIT; WINDOWS]);
}

/// Time moving continuously while threads hammer one key: replaying the admitted requests' own
/// decision times never shows more than the limit inside any window.
#[test]
fn no_over_admission_while_time_moves() {
    let clock = ManualClock::new(5_000_000_000);
    let store = MemoryStore::new(Arc::new(clock.clone()), 1_000);
    let limit = Limit::new(100, 0.05).unwrap(); // 50 ms window, 1 µs ticks
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let store = store.clone();
            let clock = clock.clone();
            thread::spawn(move || {
                let key = RateKey::new("t", "c", "a");
                let mut times = Vec::new();
                for n in 0..CALLS_PER_THREAD {
                    // Threads take turns moving the clock forward a little.
                    if n % 7 == i % 7 {
                        clock.advance(40);
                    }
                    let v = store.check_and_consume_sync(key, limit, 1).unwrap();
                    if v.allowed {
                        times.push(v.now);
                    }
                }
                times
            })
        })
        .collect();
    let mut times: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    times.sort_unstable();
    assert!(
        times.len() as u64 > limit.max_requests,
        "time moved through several windows"
    );
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[lo] + limit.window_micros <= times[hi] {
            lo += 1;
        }
        assert!(
            (hi - lo + 1) as u64 <= limit.max_requests,
            "{} admitted in the window ending at {}",
            hi - lo + 1,
            times[hi]
        );
    }
}
