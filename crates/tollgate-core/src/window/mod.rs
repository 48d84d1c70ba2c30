//! The exact sliding-window log for one key.
//!
//! A request of cost `c` at time `t` is allowed iff the costs logged in `(t - W, t]` plus `c` do
//! not exceed the limit. Requests in the same tick of `max(1 µs, W / 65_536)` share one entry, so
//! a key never holds more than ~65,537 entries whatever its limit. An entry's time is the time of
//! its *newest* request (never rounded into the future), so it leaves the window exactly when its
//! newest request does: no request is ever released early, and the older requests of an entry are
//! counted at most one tick late. Rounding can only deny, never over-admit.
//!
//! Limits change at runtime, so the history of a key follows one rule, the same in every store:
//! - a call (decision or status read) under window `W` first drops what has left the window of the
//!   *previous* call on the key, then what has left `W` — an entry expires under the window of the
//!   last call that touched the key (this is what the memory store's sweep and the Redis key's TTL
//!   do between calls, so applying it at the call makes the answer independent of when they ran);
//!   an entry dropped under a shorter window is gone for good;
//! - a request joins the newest entry when it falls in the same tick of the current window.
//!
//! Bound on over-denial after a window change (from the two rules): a request logged under the
//! current window is counted at most one current tick longer than exact. After a window is
//! shortened from `W1` to `W2` at time `c`, a request logged before `c` is counted until its entry's
//! newest request (no later than `c`, plus less than one `W2` tick if a request after `c` joined
//! it) leaves `W2`, so the excess ends at most `W2 + tick(W2)` after the change and never exceeds
//! `tick(W1) + tick(W2)`; entries are never stamped in the future, so nothing logged after the
//! change inherits the old tick.
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
    /// Time of the newest request in this entry, µs since the epoch.
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
    /// Window of the last call on this log (0 before the first): entries expire under it, at the
    /// next call and in the background sweep alike.
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

    /// Drops entries that have left the window of the last call; true if the log is now empty.
    pub fn expire(&mut self, now: Micros) -> bool {
        self.evict(now, self.window);
        self.is_empty()
    }

    /// Starts a call under `window`: drops what left the previous call's window, then `window`'s.
    #[inline]
    fn touch(&mut self, now: Micros, window: Micros) {
        let previous = if self.window == 0 {
            window
        } else {
            self.window
        };
        self.window = window;
        self.evict(now, previous.min(window));
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
        self.touch(now, window);
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
        self.touch(now, window);
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

    /// Starts a policy call under `limit` and says whether `cost` fits; when it does not, the
    /// time it would.
    pub fn check(&mut self, now: Micros, limit: Limit, cost: u64) -> Result<(), Micros> {
        self.touch(now, limit.window_micros);
        if self.used() + cost <= limit.max_requests {
            Ok(())
        } else {
            Err(self.fits_at(now, limit.window_micros, cost, limit.max_requests))
        }
    }

    /// Logs `cost` at `now` without checking (after [`WindowLog::check`] at the same `now`).
    pub fn add(&mut self, now: Micros, limit: Limit, cost: u64) {
        self.push(now, limit.window_micros, cost);
    }

    /// Gives back up to `cost` from the newest entries (after [`WindowLog::check`]: all of them
    /// are inside the window).
    pub fn refund(&mut self, mut cost: u64) {
        while cost > 0 {
            let floor = self
                .entries
                .second_last()
                .map_or(self.evicted, |e| e.cumulative);
            let Some(back) = self.entries.back_mut() else {
                return;
            };
            let take = (back.cumulative - floor).min(cost);
            back.cumulative -= take;
            cost -= take;
            if back.cumulative == floor {
                self.entries.pop_back();
            }
        }
        self.entries.shrink_if_sparse();
    }

    /// Requests still available and when the oldest counted one leaves.
    pub fn figures(&self, now: Micros, limit: Limit) -> (u64, Micros) {
        (
            limit.max_requests.saturating_sub(self.used()),
            self.reset_at(now, limit.window_micros),
        )
    }

    fn push(&mut self, now: Micros, window: Micros, cost: u64) {
        let tick = tick_for(window);
        let cumulative = self.entries.back().map_or(self.evicted, |e| e.cumulative) + cost;
        if let Some(back) = self.entries.back_mut() {
            // Same tick of the current window as the newest entry (or the clock stepped back):
            // share it. Its time moves to the newest request, so every request in it stays
            // counted at least as long as its own time says.
            if now <= back.at.div_ceil(tick).saturating_mul(tick) {
                back.at = back.at.max(now);
                back.cumulative = cumulative;
                return;
            }
        }
        self.entries.push_back(Entry {
            at: now,
            cumulative,
        });
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
        // An entry carries its newest request's time: it leaves exactly one window later.
        assert!(!log.expire(2 * S - 1));
        assert!(log.expire(2 * S));
    }

    #[test]
    fn requests_in_one_tick_share_an_entry_that_leaves_with_the_newest() {
        let mut log = WindowLog::new();
        let l = lim(10, 1.0);
        let tick = tick_for(l.window_micros);
        assert_eq!(tick, 15);
        // Just after a tick boundary: t0 ..= t0 + 14 is one tick.
        let t0 = (10 * S).div_ceil(tick) * tick + 1;
        assert!(log.check_and_consume(t0, l, 1).allowed);
        assert!(log.check_and_consume(t0 + 14, l, 1).allowed);
        assert_eq!(log.entry_count(), 1);
        assert!(log.check_and_consume(t0 + 15, l, 1).allowed);
        assert_eq!(log.entry_count(), 2);
        // The first entry leaves when its newest request (t0 + 14) does, not at t0 + W.
        assert_eq!(log.status(t0 + S + 13, l).used, 3);
        assert_eq!(log.status(t0 + S + 14, l).used, 1);
    }

    /// Issue 18 item 3: 2 per day, then 2 per second. The request logged under the day's 1.3 s
    /// tick leaves one second after it was made, not up to 1.3 s later, and a request after the
    /// change does not merge into an entry stamped in the future.
    #[test]
    fn a_shortened_window_does_not_inherit_the_old_tick() {
        let day = lim(2, 86_400.0);
        let second = lim(2, 1.0);
        let old_tick = tick_for(day.window_micros);
        assert_eq!(old_tick, 1_318_359);
        for t0 in [100 * old_tick + 1, 100 * old_tick + old_tick / 2] {
            let mut log = WindowLog::new();
            assert!(log.check_and_consume(t0, day, 1).allowed);
            assert!(log.check_and_consume(t0 + S / 2, second, 1).allowed);
            // Full until the first leaves at t0 + 1 s, never earlier ...
            assert!(!log.check_and_consume(t0 + S - 1, second, 1).allowed);
            // ... and not a moment later.
            assert!(log.check_and_consume(t0 + S, second, 1).allowed);
            // The request at t0 + 0.5 s leaves at t0 + 1.5 s.
            assert!(!log.check_and_consume(t0 + 3 * S / 2 - 1, second, 1).allowed);
            assert!(log.check_and_consume(t0 + 3 * S / 2, second, 1).allowed);
        }
    }

    /// The history rule: an entry expires under the window of the last call; lengthening the
    /// window later does not bring it back, whether or not a sweep ran in between.
    #[test]
    fn entries_expire_under_the_window_of_the_last_call() {
        let short = lim(1, 1.0);
        let long = lim(1, 60.0);
        let mut swept = WindowLog::new();
        let mut unswept = WindowLog::new();
        for log in [&mut swept, &mut unswept] {
            assert!(log.check_and_consume(S, short, 1).allowed);
        }
        assert!(swept.expire(2 * S));
        for log in [&mut swept, &mut unswept] {
            assert!(log.check_and_consume(2 * S, long, 1).allowed);
        }
        // But a call under the longer window before the old one ran out keeps the entry.
        let mut log = WindowLog::new();
        assert!(log.check_and_consume(S, short, 1).allowed);
        assert!(!log.check_and_consume(S + S / 2, long, 1).allowed);
        assert!(!log.expire(30 * S));
        let v = log.check_and_consume(30 * S, long, 1);
        assert!(!v.allowed);
        assert_eq!(v.retry_at, Some(61 * S));
    }
}
