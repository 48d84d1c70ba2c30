//! The sliding-window counter: two epoch-aligned buckets of the window's length, the previous one
//! weighted by how much of it the sliding window still overlaps. O(1) state, approximate: up to
//! 2·M − 1 may pass in some window of length W; exact when traffic is uniform.

use crate::clock::Micros;
use crate::policy::PolicyLimit;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    /// Start of the current bucket.
    pub start: Micros,
    pub cur: u64,
    pub prev: u64,
    /// The window (part of this state's identity, so constant).
    pub window: Micros,
}

impl Counter {
    pub fn new(window: Micros) -> Self {
        Self {
            window,
            ..Self::default()
        }
    }

    /// Rolls the buckets forward to the one holding `now`.
    fn roll(&mut self, now: Micros) {
        let w = self.window;
        let s = now - now % w;
        if self.start == s {
            return;
        }
        self.prev = if self.start.checked_add(w) == Some(s) {
            self.cur
        } else {
            0
        };
        self.cur = 0;
        self.start = s;
    }

    fn estimate(&self, now: Micros) -> f64 {
        let w = self.window;
        let e = now - self.start;
        self.prev as f64 * ((w - e) as f64 / w as f64)
    }

    pub fn check(&mut self, now: Micros, pl: &PolicyLimit, cost: u64) -> Result<(), Micros> {
        self.roll(now);
        let (m, w, s) = (pl.limit.max_requests, self.window, self.start);
        let (cur, prev) = (self.cur, self.prev);
        if self.estimate(now) + cur.saturating_add(cost) as f64 <= m as f64 {
            return Ok(());
        }
        // When the previous bucket's weight has shrunk enough (this bucket), or else when the
        // next bucket's share of this one's count has.
        let retry = if cur + cost <= m && prev > 0 {
            let x = s + (w as f64 * (1.0 - (m - cur - cost) as f64 / prev as f64)).ceil() as u64;
            x.min(s + w).max(now + 1)
        } else if cost <= m && cur > 0 {
            let x = s + w + (w as f64 * (1.0 - (m - cost) as f64 / cur as f64)).ceil() as u64;
            x.max(s + w)
        } else {
            s + 2 * w
        };
        Err(retry)
    }

    pub fn add(&mut self, cost: u64) {
        self.cur = self.cur.saturating_add(cost);
    }

    pub fn refund(&mut self, cost: u64) {
        let a = self.cur.min(cost);
        self.cur -= a;
        let b = self.prev.min(cost - a);
        self.prev -= b;
    }

    pub fn figures(&self, now: Micros, pl: &PolicyLimit) -> (u64, Micros) {
        let m = pl.limit.max_requests as f64;
        let remaining = (m - self.estimate(now) - self.cur as f64).floor().max(0.0) as u64;
        let reset = if self.cur > 0 {
            self.start + 2 * self.window
        } else if self.prev > 0 {
            self.start + self.window
        } else {
            now
        };
        (remaining, reset)
    }

    pub fn is_idle(&self, now: Micros) -> bool {
        (self.cur == 0 && self.prev == 0) || self.start.saturating_add(2 * self.window) <= now
    }
}
