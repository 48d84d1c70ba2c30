//! Fixed windows: epoch-aligned buckets of the window's length, or UTC calendar periods.

use super::calendar;
use crate::clock::Micros;
use crate::policy::{Algorithm, PolicyLimit};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fixed {
    pub start: Micros,
    pub end: Micros,
    pub count: u64,
}

/// The period `[start, end)` of `pl` holding `now`.
pub fn period(pl: &PolicyLimit, now: Micros) -> (Micros, Micros) {
    match pl.algorithm {
        Algorithm::FixedWindow {
            calendar: Some(cal),
        } => calendar::period(cal, now),
        _ => {
            let w = pl.limit.window_micros.max(1);
            let s = now - now % w;
            (s, s + w)
        }
    }
}

impl Fixed {
    fn roll(&mut self, now: Micros, pl: &PolicyLimit) {
        let (s, e) = period(pl, now);
        if self.start != s {
            *self = Fixed {
                start: s,
                end: e,
                count: 0,
            };
        }
        self.end = e;
    }

    pub fn check(&mut self, now: Micros, pl: &PolicyLimit, cost: u64) -> Result<(), Micros> {
        self.roll(now, pl);
        if self.count.saturating_add(cost) <= pl.limit.max_requests {
            Ok(())
        } else {
            Err(self.end)
        }
    }

    pub fn add(&mut self, cost: u64) {
        self.count = self.count.saturating_add(cost);
    }

    pub fn refund(&mut self, cost: u64) {
        self.count -= self.count.min(cost);
    }

    pub fn figures(&self, pl: &PolicyLimit) -> (u64, Micros) {
        (pl.limit.max_requests.saturating_sub(self.count), self.end)
    }

    pub fn is_idle(&self, now: Micros) -> bool {
        self.count == 0 || self.end <= now
    }
}
