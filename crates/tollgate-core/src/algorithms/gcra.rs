//! GCRA (the generic cell rate algorithm): one timestamp per limit, the theoretical arrival time.
//! Emission interval T = ceil(W / M); a request of cost c is allowed iff it would not push the TAT
//! more than `burst · T` past now.

use crate::clock::Micros;
use crate::policy::{Algorithm, LimitVerdict, PolicyLimit};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gcra {
    /// Theoretical arrival time; at or before now is the same as no state.
    pub tat: Micros,
}

/// Emission interval, µs (at least 1).
pub fn interval(pl: &PolicyLimit) -> Micros {
    pl.limit
        .window_micros
        .div_ceil(pl.limit.max_requests.max(1))
        .max(1)
}

fn burst(pl: &PolicyLimit) -> u64 {
    match pl.algorithm {
        Algorithm::Gcra { burst } => burst,
        _ => pl.limit.max_requests,
    }
}

impl Gcra {
    /// The TAT a request of `cost` would leave: `max(TAT, now) + cost · T` (`new` in README
    /// "Policies"). The one formula of `check`, `add` and `consume`.
    #[inline]
    fn next(&self, now: Micros, interval: Micros, cost: u64) -> Micros {
        self.tat
            .max(now)
            .saturating_add(cost.saturating_mul(interval))
    }

    pub fn check(&mut self, now: Micros, pl: &PolicyLimit, cost: u64) -> Result<(), Micros> {
        let Rate { interval, room } = Rate::of(pl);
        let new = self.next(now, interval, cost);
        if new - now <= room {
            Ok(())
        } else {
            Err(new - room)
        }
    }

    pub fn add(&mut self, now: Micros, pl: &PolicyLimit, cost: u64) {
        self.tat = self.next(now, interval(pl), cost);
    }

    pub fn refund(&mut self, now: Micros, pl: &PolicyLimit, cost: u64) {
        self.tat = now.max(self.tat.saturating_sub(cost.saturating_mul(interval(pl))));
    }

    pub fn figures(&self, now: Micros, pl: &PolicyLimit) -> (u64, Micros) {
        let base = self.tat.max(now);
        (Rate::of(pl).remaining(base, now), base)
    }

    /// `check`, then `add` when it fits: what a consume under this limit alone does to the
    /// state, at `rate` (the limit's [`Rate`], worked out before the store takes its lock). The
    /// answer's figures come from [`Consumed::verdict`], which a store can work out after
    /// releasing its lock (it holds the other division).
    #[inline]
    pub fn consume(&mut self, now: Micros, rate: Rate, cost: u64) -> Consumed {
        let new = self.next(now, rate.interval, cost);
        let allowed = new - now <= rate.room;
        if allowed {
            self.tat = new;
        }
        Consumed {
            allowed,
            base: self.tat.max(now),
            new,
            rate,
        }
    }

    pub fn is_idle(&self, now: Micros) -> bool {
        self.tat <= now
    }
}

/// A GCRA limit's emission interval `T` and room `burst · T`: the divisions of a decision that
/// need no state.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    interval: Micros,
    room: u64,
}

impl Rate {
    #[inline]
    pub fn of(pl: &PolicyLimit) -> Self {
        let interval = interval(pl);
        Rate {
            interval,
            room: burst(pl).saturating_mul(interval),
        }
    }

    /// Requests that still fit when the TAT is at `base` (`max(TAT, now)`).
    #[inline]
    fn remaining(&self, base: Micros, now: Micros) -> u64 {
        self.room.saturating_sub(base - now) / self.interval
    }
}

/// What [`Gcra::consume`] did, enough to answer for it.
#[derive(Debug, Clone, Copy)]
pub struct Consumed {
    allowed: bool,
    /// `max(TAT, now)` after the call.
    base: Micros,
    /// The TAT the call asked for (`new` in README "Policies").
    new: Micros,
    rate: Rate,
}

impl Consumed {
    /// The limit's answer at `now` (the `now` of the consume): what `check` and `figures` report.
    #[inline]
    pub fn verdict(&self, now: Micros) -> LimitVerdict {
        LimitVerdict {
            allowed: self.allowed,
            remaining: self.rate.remaining(self.base, now),
            reset_at: self.base,
            retry_at: (!self.allowed).then(|| self.new - self.rate.room),
        }
    }
}
