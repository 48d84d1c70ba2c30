//! What the memory store keeps per key: the seed's one sliding log; one GCRA limit's state inline
//! (a key whose policy is a single GCRA limit); or — once a policy with other algorithms or several
//! limits touches the key — a boxed set of states, one per limit identity (README "Policies",
//! state identity). The enum is no bigger than the log alone (the other forms take the log's
//! niche), so keys that only ever see one sliding-log or one GCRA limit cost what a log key does,
//! and neither needs a second heap block (a second cache miss on a table of a million keys).

use smallvec::SmallVec;

use super::StoreError;
use crate::algorithms::{Gcra, LimitState, StateId, StateMut};
use crate::clock::Micros;
use crate::window::WindowLog;

pub(super) enum KeyState {
    Log(WindowLog),
    Other(Other),
}

/// The forms other than the lone log. They are nested in one enum because the log has a single
/// niche value (its window is non-zero): the log and `Other` are told apart by it, and `Other`'s
/// own tag tells its forms apart, so `KeyState` stays the size of the log (test below).
pub(super) enum Other {
    /// The general form: any set of states.
    Policy(Box<PolicyState>),
    /// The key's only state is one GCRA limit's: its window (the state's identity is
    /// `StateId::Gcra(window)`, as in the general form) and its theoretical arrival time.
    Gcra { window: Micros, state: Gcra },
}

pub(super) struct PolicyState {
    /// The base sliding log (the seed's log, kept when a policy is added to a key).
    base: WindowLog,
    /// Every other limit identity the key has counted under and that is not idle yet.
    others: SmallVec<[(StateId, LimitState); 2]>,
}

impl Default for KeyState {
    fn default() -> Self {
        KeyState::Log(WindowLog::new())
    }
}

impl KeyState {
    /// The base log (what `check_and_consume` and `status` count in).
    pub(super) fn base_log(&mut self) -> &mut WindowLog {
        match self {
            KeyState::Log(l) => l,
            _ => &mut self.general().base,
        }
    }

    /// Drops what has gone idle; true when nothing is left (the key can be dropped).
    pub(super) fn expire(&mut self, now: Micros) -> bool {
        match self {
            KeyState::Log(l) => l.expire(now),
            KeyState::Other(Other::Gcra { state, .. }) => state.is_idle(now),
            KeyState::Other(Other::Policy(p)) => {
                p.others.retain(|(_, s)| !s.is_idle(now));
                let base_empty = p.base.expire(now);
                base_empty && p.others.is_empty()
            }
        }
    }

    /// The key's states in the general form, converting the log or the inline GCRA state into it
    /// (the GCRA state keeps its identity, `StateId::Gcra(window)`, so the general path finds it).
    fn general(&mut self) -> &mut PolicyState {
        if !matches!(self, KeyState::Other(Other::Policy(_))) {
            let p = match std::mem::take(self) {
                KeyState::Log(base) => PolicyState {
                    base,
                    others: SmallVec::new(),
                },
                KeyState::Other(Other::Gcra { window, state }) => PolicyState {
                    base: WindowLog::new(),
                    others: smallvec::smallvec![(StateId::Gcra(window), LimitState::Gcra(state))],
                },
                KeyState::Other(Other::Policy(p)) => *p,
            };
            *self = KeyState::Other(Other::Policy(Box::new(p)));
        }
        match self {
            KeyState::Other(Other::Policy(p)) => p,
            // Made the general form just above.
            _ => unreachable!("the key state was just made general"),
        }
    }

    /// The state of a key under a policy of exactly one GCRA limit of `window`, kept inline, when
    /// nothing else about the key needs keeping at `now`; `None` otherwise (the general path then
    /// finds or creates the same state by its identity). A log, or a GCRA state of another window,
    /// that has gone idle answers exactly as no state would (it is what the sweep drops), so it is
    /// replaced; a general form holding nothing but this state and idle ones folds back inline,
    /// so a key that went through another policy returns to the fast form.
    pub(super) fn lone_gcra(&mut self, window: Micros, now: Micros) -> Option<&mut Gcra> {
        let replace = match self {
            KeyState::Other(Other::Gcra { window: w, state }) => {
                if *w == window {
                    None
                } else if state.is_idle(now) {
                    Some(Gcra::default())
                } else {
                    return None;
                }
            }
            KeyState::Log(l) => {
                if !l.expire(now) {
                    return None;
                }
                Some(Gcra::default())
            }
            KeyState::Other(Other::Policy(p)) => Some(p.lone_gcra(window, now)?),
        };
        if let Some(state) = replace {
            *self = KeyState::Other(Other::Gcra { window, state });
        }
        match self {
            KeyState::Other(Other::Gcra { state, .. }) => Some(state),
            _ => None,
        }
    }

    /// Calls `f` with the state of each identity in `ids` (in order), creating missing ones.
    /// States of identities the policy no longer has are kept until they go idle, so a change
    /// back within their lifetime finds them as another store (whose keys expire by TTL) would.
    pub(super) fn with_states<R>(
        &mut self,
        ids: &[StateId],
        now: Micros,
        f: impl FnOnce(&mut [StateMut<'_>]) -> R,
    ) -> Result<R, StoreError> {
        if let (KeyState::Log(l), [StateId::BaseLog]) = (&mut *self, ids) {
            return Ok(f(&mut [StateMut::Log(l)]));
        }
        if let [StateId::Gcra(w)] = ids {
            if let Some(g) = self.lone_gcra(*w, now) {
                return Ok(f(&mut [StateMut::Gcra(g)]));
            }
        }
        let p = self.general();
        p.others
            .retain(|(id, s)| ids.contains(id) || !s.is_idle(now));
        for id in ids {
            if *id != StateId::BaseLog && !p.others.iter().any(|(o, _)| o == id) {
                p.others.push((*id, LimitState::new(*id)));
            }
        }
        let mut slots: SmallVec<[Option<StateMut<'_>>; 2]> = ids.iter().map(|_| None).collect();
        let mut base = Some(&mut p.base);
        for (i, id) in ids.iter().enumerate() {
            if *id == StateId::BaseLog {
                slots[i] = base.take().map(StateMut::Log);
            }
        }
        for (id, s) in p.others.iter_mut() {
            if let Some(i) = ids.iter().position(|x| x == id) {
                slots[i] = Some(StateMut::from(s));
            }
        }
        let mut states: SmallVec<[StateMut<'_>; 2]> = slots.into_iter().flatten().collect();
        if states.len() != ids.len() {
            return Err(StoreError::Unsupported(
                "two limits of one key with the same algorithm and window".into(),
            ));
        }
        Ok(f(&mut states))
    }
}

impl PolicyState {
    /// The state of `StateId::Gcra(window)` (or a new one) when every other state here is idle at
    /// `now`, so that state alone is all the key needs to keep; `None` otherwise.
    fn lone_gcra(&mut self, window: Micros, now: Micros) -> Option<Gcra> {
        let id = StateId::Gcra(window);
        let mut kept = Gcra::default();
        for (i, s) in self.others.iter_mut() {
            match s {
                LimitState::Gcra(g) if *i == id => kept = *g,
                _ => {
                    if !s.is_idle(now) {
                        return None;
                    }
                }
            }
        }
        self.base.expire(now).then_some(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_state_is_no_bigger_than_the_log() {
        assert_eq!(
            std::mem::size_of::<KeyState>(),
            std::mem::size_of::<WindowLog>()
        );
        assert_eq!(std::mem::size_of::<WindowLog>(), 48);
    }
}
