//! The four algorithms' per-limit state and the rules that combine several limits into one answer
//! (README "Policies"). Stores hold the states; this module decides, so every store that keeps
//! state in process (the memory store) answers from the same code.

pub mod calendar;
pub mod counter;
pub mod fixed;
pub mod gcra;

use smallvec::SmallVec;

use crate::clock::Micros;
use crate::policy::{Algorithm, Calendar, ItemVerdict, LimitVerdict, Op, PolicyItem, PolicyLimit};
use crate::window::WindowLog;
pub use counter::Counter;
pub use fixed::Fixed;
pub use gcra::Gcra;

/// Which state a limit counts in. State survives a configuration change that keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateId {
    /// The key's base sliding log: its sliding_log limit with the longest window (first on
    /// ties). It follows the seed's rule: entries expire under the window of the last call.
    BaseLog,
    Log(Micros),
    Gcra(Micros),
    Counter(Micros),
    Fixed(Micros),
    Calendar(Calendar),
}

/// The state of each limit of `limits`, in order.
pub fn state_ids(limits: &[PolicyLimit]) -> SmallVec<[StateId; 2]> {
    let mut base: Option<(usize, Micros)> = None;
    for (i, l) in limits.iter().enumerate() {
        if l.algorithm == Algorithm::SlidingLog
            && base.is_none_or(|(_, w)| l.limit.window_micros > w)
        {
            base = Some((i, l.limit.window_micros));
        }
    }
    limits
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let w = l.limit.window_micros;
            match l.algorithm {
                Algorithm::SlidingLog if base.map(|b| b.0) == Some(i) => StateId::BaseLog,
                Algorithm::SlidingLog => StateId::Log(w),
                Algorithm::Gcra { .. } => StateId::Gcra(w),
                Algorithm::SlidingWindowCounter => StateId::Counter(w),
                Algorithm::FixedWindow { calendar: None } => StateId::Fixed(w),
                Algorithm::FixedWindow { calendar: Some(c) } => StateId::Calendar(c),
            }
        })
        .collect()
}

/// The first limit whose state another, earlier limit already uses (such a policy would count
/// one request twice in one state; configuration refuses it).
pub fn shared_state(limits: &[PolicyLimit]) -> Option<usize> {
    let ids = state_ids(limits);
    (1..ids.len()).find(|&i| ids[..i].contains(&ids[i]))
}

/// The state of one limit that is not the base log.
#[derive(Debug, Clone)]
pub enum LimitState {
    Log(WindowLog),
    Gcra(Gcra),
    Counter(Counter),
    Fixed(Fixed),
}

impl LimitState {
    /// Empty state for `id`.
    pub fn new(id: StateId) -> Self {
        match id {
            StateId::BaseLog | StateId::Log(_) => LimitState::Log(WindowLog::new()),
            StateId::Gcra(_) => LimitState::Gcra(Gcra::default()),
            StateId::Counter(w) => LimitState::Counter(Counter::new(w)),
            StateId::Fixed(_) | StateId::Calendar(_) => LimitState::Fixed(Fixed::default()),
        }
    }

    /// Whether this state now answers exactly as no state would (the key may then be dropped).
    pub fn is_idle(&mut self, now: Micros) -> bool {
        match self {
            LimitState::Log(l) => l.expire(now),
            LimitState::Gcra(g) => g.is_idle(now),
            LimitState::Counter(c) => c.is_idle(now),
            LimitState::Fixed(f) => f.is_idle(now),
        }
    }
}

/// One limit's state as the combining rules see it.
pub enum StateMut<'a> {
    Log(&'a mut WindowLog),
    Gcra(&'a mut Gcra),
    Counter(&'a mut Counter),
    Fixed(&'a mut Fixed),
}

impl<'a> From<&'a mut LimitState> for StateMut<'a> {
    fn from(s: &'a mut LimitState) -> Self {
        match s {
            LimitState::Log(l) => StateMut::Log(l),
            LimitState::Gcra(g) => StateMut::Gcra(g),
            LimitState::Counter(c) => StateMut::Counter(c),
            LimitState::Fixed(f) => StateMut::Fixed(f),
        }
    }
}

impl StateMut<'_> {
    /// Brings the state to `now` and checks `cost`: `Err(retry_at)` when it does not fit.
    pub fn check(&mut self, now: Micros, pl: &PolicyLimit, cost: u64) -> Result<(), Micros> {
        match self {
            StateMut::Log(l) => l.check(now, pl.limit, cost),
            StateMut::Gcra(g) => g.check(now, pl, cost),
            StateMut::Counter(c) => c.check(now, pl, cost),
            StateMut::Fixed(f) => f.check(now, pl, cost),
        }
    }

    /// Adds `cost` unconditionally (after `check` at the same `now`).
    pub fn add(&mut self, now: Micros, pl: &PolicyLimit, cost: u64) {
        match self {
            StateMut::Log(l) => l.add(now, pl.limit, cost),
            StateMut::Gcra(g) => g.add(now, pl, cost),
            StateMut::Counter(c) => c.add(cost),
            StateMut::Fixed(f) => f.add(cost),
        }
    }

    /// Gives back up to `cost` (after `check` at the same `now`).
    pub fn refund(&mut self, now: Micros, pl: &PolicyLimit, cost: u64) {
        match self {
            StateMut::Log(l) => l.refund(cost),
            StateMut::Gcra(g) => g.refund(now, pl, cost),
            StateMut::Counter(c) => c.refund(cost),
            StateMut::Fixed(f) => f.refund(cost),
        }
    }

    /// Remaining and reset time.
    pub fn figures(&self, now: Micros, pl: &PolicyLimit) -> (u64, Micros) {
        match self {
            StateMut::Log(l) => l.figures(now, pl.limit),
            StateMut::Gcra(g) => g.figures(now, pl),
            StateMut::Counter(c) => c.figures(now, pl),
            StateMut::Fixed(f) => f.figures(pl),
        }
    }
}

/// The first half of a call on one item: every limit checked at `now`.
#[derive(Debug, Clone)]
pub struct Checked {
    fits: SmallVec<[Result<(), Micros>; 2]>,
    /// Every non-shadow limit fits.
    pub allowed: bool,
}

/// Checks every limit of `item` (`states` in policy order). Nothing is consumed yet.
pub fn check_item(item: &PolicyItem<'_>, now: Micros, states: &mut [StateMut<'_>]) -> Checked {
    let fits: SmallVec<[Result<(), Micros>; 2]> = states
        .iter_mut()
        .zip(item.policy.limits.iter())
        .map(|(s, pl)| s.check(now, pl, item.cost))
        .collect();
    let allowed = (0..fits.len()).all(|i| item.is_shadow(i) || fits[i].is_ok());
    Checked { fits, allowed }
}

/// The second half: applies `op` given whether the whole call is allowed (consume: every item's
/// non-shadow limits fit), and answers for the item.
pub fn finish_item(
    op: Op,
    item: &PolicyItem<'_>,
    now: Micros,
    states: &mut [StateMut<'_>],
    checked: &Checked,
    call_allowed: bool,
) -> ItemVerdict {
    let limits = &item.policy.limits;
    for (i, (s, pl)) in states.iter_mut().zip(limits.iter()).enumerate() {
        match op {
            // A shadow limit that would deny consumes nothing, exactly as a real denial would.
            Op::Consume if call_allowed && (!item.is_shadow(i) || checked.fits[i].is_ok()) => {
                s.add(now, pl, item.cost)
            }
            Op::Report => s.add(now, pl, item.cost),
            Op::Refund => s.refund(now, pl, item.cost),
            _ => {}
        }
    }
    let checking = matches!(op, Op::Consume | Op::Status);
    let verdicts = states
        .iter()
        .zip(limits.iter())
        .zip(checked.fits.iter())
        .map(|((s, pl), fit)| {
            let (remaining, reset_at) = s.figures(now, pl);
            LimitVerdict {
                allowed: !checking || fit.is_ok(),
                remaining,
                reset_at,
                retry_at: if checking { fit.err() } else { None },
            }
        })
        .collect();
    ItemVerdict {
        allowed: !checking || checked.allowed,
        limits: verdicts,
        shadow_denied: if checking {
            (0..limits.len()).find(|&i| item.is_shadow(i) && checked.fits[i].is_err())
        } else {
            None
        },
    }
}
