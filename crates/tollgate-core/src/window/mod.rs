//! The exact sliding-window log for one key.
//!
//! A request of cost `c` at time `t` is allowed iff the costs logged in `(t - W, t]` plus `c` do
//! not exceed the limit. Requests are logged with their time rounded *up* to a tick of
//! `max(1 µs, W / 65_536)`, and requests in the same tick share one entry, so a key never holds
//! more than ~65,537 entries whatever its limit, and an entry leaves the window at most one tick
//! late: rounding can only deny, never over-admit.
//!
//! Each entry stores the *cumulative* cost logged up to and including it (16 bytes per entry).
//! The in-window total is then `last.cumulative - evicted_cumulative`, and the time at which a
//! denied request of cost `c` would fit is a binary search for the first entry whose expiry
//! frees enough — O(log n) instead of a scan. Eviction pops from the front: O(1) amortized.

mod entries;

use crate::clock::Micros;
use crate::limit::Limit;
use entries::Entries;

/// Most entries a window is split into; bounds memory per key.
pub const TICKS_PER_WINDOW: u64 = 65_536;

/// The tick for a window: requests within one tick share an entry.
#[inline]
pub fn tick_for(window_micros: Micros) -> Micros {
    (window_micros / TICKS_PER_WINDOW).max(1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Rounded-up time of the requests in this entry, µs since the epoch.
    at: Micros,
    /// Total cost logged by this key up to and including this entry.
    cumulative: u64,
}

/// What a check or a status read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Cost counted in the window after this call (including this call's cost if allowed).
    pub used: u64,
    /// When the oldest counted request leaves the window (µs); `now` if nothing is counted.
    pub reset_at: Micros,
    /// When a request of the asked cost would next be allowed (µs); `None` when allowed now.
    pub retry_at: Option<Micros>,
    /// The time the decision was made at, from the store's clock.
    pub now: Micros,
}

impl Verdict {
    pub fn remaining(&self, limit: &Limit) -> u64 {
        limit.max_requests.saturating_sub(self.used)
    }
}

/// The log of one (tenant, client, action) key.
#[derive(Debug, Clone, Default)]
pub struct WindowLog {
    entries: Entries,
    /// Cumulative cost of the newest evicted entry: everything up to here has left the window.
    evicted: u64,
    /// Window of the last decision, so the background sweep can expire entries without the config.
    window: Micros,
}

impl WindowLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cost currently counted (as of the last eviction).
    #[inline]
    fn used(&self) -> u64 {
        self.entries
            .back()
            .map_or(0, |e| e.cumulative - self.evicted)
    }

    /// Number of entries held (for memory accounting and tests).
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops entries that have left the window of the last decision; true if the log is now empty.
    pub fn expire(&mut self, now: Micros) -> bool {
        self.evict(now, self.window);
        self.is_empty()
    }

    #[inline]
    fn evict(&mut self, now: Micros, window: Micros) {
        // An entry at `at` is counted while `now < at + window`.
        while let Some(front) = self.entries.front() {
            if front.at.saturating_add(window) > now {
                break;
            }
            self.evicted = front.cumulative;
            self.entries.pop_front();
        }
        self.entries.shrink_if_sparse();
    }

    #[inline]
    fn reset_at(&self, now: Micros, window: Micros) -> Micros {
        self.entries
            .front()
            .map_or(now, |e| e.at.saturating_add(window))
    }

    /// The decision: consume `cost` if it fits under `limit`, all or nothing.
    /// `cost` must be at least 1 and at most `limit.max_requests` (validated by the caller).
    pub fn check_and_consume(&mut self, now: Micros, limit: Limit, cost: u64) -> Verdict {
        let window = limit.window_micros;
        self.window = window;
        self.evict(now, window);
        let used = self.used();
        if used + cost <= limit.max_requests {
            self.push(now, window, cost);
            return Verdict {
                allowed: true,
                used: used + cost,
                reset_at: self.reset_at(now, window),
                retry_at: None,
                now,
            };
        }
        Verdict {
            allowed: false,
            used,
            reset_at: self.reset_at(now, window),
            retry_at: Some(self.fits_at(now, window, cost, limit.max_requests)),
            now,
        }
    }

    /// What the log holds now under `limit`, without consuming anything.
    pub fn status(&mut self, now: Micros, limit: Limit) -> Verdict {
        let window = limit.window_micros;
        self.window = window;
        self.evict(now, window);
        let used = self.used();
        let allowed = used < limit.max_requests;
        Verdict {
            allowed,
            used,
            reset_at: self.reset_at(now, window),
            retry_at: (!allowed).then(|| self.fits_at(now, window, 1, limit.max_requests)),
            now,
        }
    }

    fn push(&mut self, now: Micros, window: Micros, cost: u64) {
        let tick = tick_for(window);
        let mut at = now.div_ceil(tick).saturating_mul(tick);
        let cumulative = self.entries.back().map_or(self.evicted, |e| e.cumulative) + cost;
        if let Some(back) = self.entries.back_mut() {
            // Keep entries ordered even if the window (and so the tick) changed or the clock
            // stepped back: a later timestamp only keeps the cost counted longer.
            at = at.max(back.at);
            if back.at == at {
                back.cumulative = cumulative;
                return;
            }
        }
        self.entries.push_back(Entry { at, cumulative });
    }

    /// Earliest time at which `cost` more fits: the expiry of the first entry whose departure
    /// brings the count down to `max - cost`.
    fn fits_at(&self, now: Micros, window: Micros, cost: u64, max: u64) -> Micros {
        let total = self.entries.back().map_or(self.evicted, |e| e.cumulative);
        // Everything up to cumulative `need` must have left.
        let need = (total + cost).saturating_sub(max);
        if need <= self.evicted {
            return now;
        }
        let live = self.entries.live();
        let idx = live.partition_point(|e| e.cumulative < need);
        match live.get(idx) {
            Some(e) => e.at.saturating_add(window).max(now),
            // Unreachable while cost <= max; be safe rather than panic.
            None => self.reset_at(now, window),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = 1_000_000;

    fn lim(max: u64, secs: f64) -> Limit {
        Limit::new(max, secs).unwrap()
    }

    #[test]
    fn admits_up_to_limit_then_denies_until_oldest_leaves() {
        let mut log = WindowLog::new();
        let l = lim(3, 0.05); // 50 ms window: 1 µs ticks, exact.
        let t0 = 10 * S;
        for i in 0..3 {
            let v = log.check_and_consume(t0 + i * 1000, l, 1);
            assert!(v.allowed);
            assert_eq!(v.used, i + 1);
            assert_eq!(v.reset_at, t0 + 50_000);
        }
        let v = log.check_and_consume(t0 + 3000, l, 1);
        assert!(!v.allowed);
        assert_eq!(v.retry_at, Some(t0 + 50_000));
        // One microsecond before the first leaves: still denied. At expiry: allowed.
        assert!(!log.check_and_consume(t0 + 49_999, l, 1).allowed);
        assert!(log.check_and_consume(t0 + 50_000, l, 1).allowed);
    }

    #[test]
    fn cost_is_all_or_nothing_and_retry_accounts_for_cost() {
        let mut log = WindowLog::new();
        let l = lim(10, 0.01);
        let t0 = 5 * S;
        assert!(log.check_and_consume(t0, l, 4).allowed);
        assert!(log.check_and_consume(t0 + 100, l, 4).allowed);
        let v = log.check_and_consume(t0 + 200, l, 3);
        assert!(!v.allowed);
        assert_eq!(v.used, 8);
        // Only the first entry (4) must leave for 3 more to fit.
        assert_eq!(v.retry_at, Some(t0 + 10_000));
        let v = log.check_and_consume(t0 + 200, l, 10);
        // Both must leave for 10 to fit.
        assert_eq!(v.retry_at, Some(t0 + 100 + 10_000));
        assert!(log.check_and_consume(t0 + 200, l, 2).allowed);
    }

    #[test]
    fn large_limits_stay_bounded_in_entries() {
        let mut log = WindowLog::new();
        let l = lim(1_000_000_000, 3600.0);
        let mut t = 100 * S;
        for _ in 0..200_000 {
            assert!(log.check_and_consume(t, l, 1).allowed);
            t += 50; // 20,000 per second
        }
        // 10 s of traffic on a 3600 s window with 54.9 ms ticks: ~183 entries, not 200,000.
        assert!(log.entry_count() <= 200, "{}", log.entry_count());
    }

    #[test]
    fn lowering_limit_keeps_log() {
        let mut log = WindowLog::new();
        let t0 = 7 * S;
        for i in 0..5 {
            assert!(log.check_and_consume(t0 + i, lim(10, 1.0), 1).allowed);
        }
        let v = log.check_and_consume(t0 + 10, lim(3, 1.0), 1);
        assert!(!v.allowed);
        assert_eq!(v.used, 5);
        assert_eq!(v.remaining(&lim(3, 1.0)), 0);
    }

    #[test]
    fn sweep_empties_after_window() {
        let mut log = WindowLog::new();
        log.check_and_consume(S, lim(1, 1.0), 1);
        assert!(!log.expire(S + S / 2));
        // Logged at S rounded up to the 15 µs tick of a 1 s window: it leaves one tick late.
        let tick = tick_for(S);
        assert_eq!(tick, 15);
        assert!(!log.expire(2 * S));
        assert!(log.expire(2 * S + tick));
    }
}
