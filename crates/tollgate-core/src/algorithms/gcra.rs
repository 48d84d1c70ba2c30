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
    pub fn check(&mut self, now: Micros, pl: &PolicyLimit, cost: u64) -> Result<(), Micros> {
        let t = interval(pl);
        let new = self.tat.max(now).saturating_add(cost.saturating_mul(t));
        let room = burst(pl).saturating_mul(t);
        if new - now <= room {
            Ok(())
        } else {
            Err(new - room)
        }
    }

    pub fn add(&mut self, now: Micros, pl: &PolicyLimit, cost: u64) {
        self.tat = self
            .tat
            .max(now)
            .saturating_add(cost.saturating_mul(interval(pl)));
    }

    pub fn refund(&mut self, now: Micros, pl: &PolicyLimit, cost: u64) {
        self.tat = now.max(self.tat.saturating_sub(cost.saturating_mul(interval(pl))));
    }

    pub fn figures(&self, now: Micros, pl: &PolicyLimit) -> (u64, Micros) {
        let t = interval(pl);
        let base = self.tat.max(now);
        let remaining = burst(pl).saturating_mul(t).saturating_sub(base - now) / t;
        (remaining, base)
    }

    /// `check`, then `add` when it fits: what a consume under this limit alone does to the
    /// state, at `rate` (the limit's [`Rate`], worked out before the store takes its lock). The
    /// answer's figures come from [`Consumed::verdict`], which a store can work out after
    /// releasing its lock (it holds the other division).
    #[inline]
    pub fn consume(&mut self, now: Micros, rate: Rate, cost: u64) -> Consumed {
        let Rate { interval, room } = rate;
        let new = self
            .tat
            .max(now)
            .saturating_add(cost.saturating_mul(interval));
        let allowed = new - now <= room;
        if allowed {
            self.tat = new;
        }
        Consumed {
            allowed,
            base: self.tat.max(now),
            new,
            room,
            interval,
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
}

/// What [`Gcra::consume`] did, enough to answer for it.
#[derive(Debug, Clone, Copy)]
pub struct Consumed {
    allowed: bool,
    /// `max(TAT, now)` after the call.
    base: Micros,
    /// The TAT the call asked for (`new` in README "Policies").
    new: Micros,
    /// `burst · T`.
    room: u64,
    interval: Micros,
}

impl Consumed {
    /// The limit's answer at `now` (the `now` of the consume): what `check` and `figures` report.
    #[inline]
    pub fn verdict(&self, now: Micros) -> LimitVerdict {
        LimitVerdict {
            allowed: self.allowed,
            remaining: self.room.saturating_sub(self.base - now) / self.interval,
            reset_at: self.base,
            retry_at: (!self.allowed).then(|| self.new - self.room),
        }
    }
}
