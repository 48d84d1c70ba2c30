//! The reference model of one key's log, shared by the window and store tests: every entry kept
//! forever in a plain list, each answer recomputed by scanning it. Its rules are the log's
//! documented semantics, nothing more:
//! - a request joins the newest entry if it falls in the same tick `max(1 µs, W / 65536)` of the
//!   current window (or the clock stepped back), and the entry's time becomes the newest request's
//!   time; otherwise it starts an entry at its own time. Requests are never released early;
//! - at a call with window `W` at time `now`, an entry at `at` is counted iff `at > now - W`,
//!   `at > now - W_prev` (the window of the previous call: entries expire under the window of the
//!   last call that touched the key) and it was not already gone at an earlier call (windows change
//!   at runtime; what has left stays gone);
//! - cost `c` is admitted iff counted + c <= limit, all or nothing.
#![allow(dead_code)]

use tollgate_core::limit::Limit;
use tollgate_core::window::{tick_for, Verdict};

#[derive(Default)]
pub struct Oracle {
    entries: Vec<(u64, u64)>,
    /// Everything logged at or before this time has left some earlier window.
    horizon: Option<u64>,
    /// The window of the last call.
    window: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub allowed: bool,
    pub used: u64,
    pub reset_at: u64,
    pub retry_at: Option<u64>,
}

impl From<Verdict> for Answer {
    fn from(v: Verdict) -> Self {
        Answer {
            allowed: v.allowed,
            used: v.used,
            reset_at: v.reset_at,
            retry_at: v.retry_at,
        }
    }
}

impl Oracle {
    pub fn expire(&mut self, now: u64, window: u64) {
        if let Some(edge) = now.checked_sub(window) {
            self.horizon = Some(self.horizon.map_or(edge, |h| h.max(edge)));
        }
    }

    fn counted_after(&self, edge: Option<u64>) -> impl Iterator<Item = &(u64, u64)> {
        let h = self.horizon;
        self.entries
            .iter()
            .filter(move |(at, _)| h.is_none_or(|h| *at > h) && edge.is_none_or(|e| *at > e))
    }

    pub fn used(&self) -> u64 {
        self.counted_after(None).map(|(_, c)| c).sum()
    }

    fn answer(&self, now: u64, limit: Limit, cost: u64, allowed: bool) -> Answer {
        let w = limit.window_micros;
        let used = self.used();
        let reset_at = self
            .counted_after(None)
            .map(|(at, _)| at + w)
            .min()
            .unwrap_or(now);
        let retry_at = (!allowed).then(|| {
            // Try every instant at which something leaves, earliest first.
            let mut candidates: Vec<u64> = std::iter::once(now)
                .chain(self.counted_after(None).map(|(at, _)| (at + w).max(now)))
                .collect();
            candidates.sort_unstable();
            candidates
                .into_iter()
                .find(|&t| {
                    let still: u64 = self.counted_after(t.checked_sub(w)).map(|(_, c)| c).sum();
                    still + cost <= limit.max_requests
                })
                .expect("cost <= max so everything leaving must make room")
        });
        Answer {
            allowed,
            used,
            reset_at,
            retry_at,
        }
    }

    /// A call under `window`: what left the previous call's window or this one is gone.
    fn touch(&mut self, now: u64, window: u64) {
        if let Some(prev) = self.window.replace(window) {
            self.expire(now, prev);
        }
        self.expire(now, window);
    }

    pub fn check(&mut self, now: u64, limit: Limit, cost: u64) -> Answer {
        self.touch(now, limit.window_micros);
        let allowed = self.used() + cost <= limit.max_requests;
        if allowed {
            let tick = tick_for(limit.window_micros);
            let live = self.counted_after(None).count() > 0;
            match self.entries.last_mut() {
                Some((at, c)) if live && now <= at.div_ceil(tick) * tick => {
                    *at = (*at).max(now);
                    *c += cost;
                }
                _ => self.entries.push((now, cost)),
            }
        }
        self.answer(now, limit, cost, allowed)
    }

    /// When the Redis key expires, under the window `W` of the last call: the end of the tick of
    /// `W` holding the newest live entry, plus `W` (no earlier than it stops holding anything, and
    /// a request merged into that entry cannot move it). `None` when nothing is live.
    pub fn expires_at(&self) -> Option<u64> {
        let last = self.counted_after(None).last()?;
        let w = self.window?;
        let tick = tick_for(w);
        Some(last.0.div_ceil(tick) * tick + w)
    }

    /// The window of the last call, if any.
    pub fn last_window(&self) -> Option<u64> {
        self.window
    }

    pub fn status(&mut self, now: u64, limit: Limit) -> Answer {
        self.touch(now, limit.window_micros);
        let allowed = self.used() < limit.max_requests;
        self.answer(now, limit, 1, allowed)
    }
}
