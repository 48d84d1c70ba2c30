//! What the memory store keeps per key: the seed's one sliding log, or — once a policy with other
//! algorithms or several limits touches the key — a boxed set of states, one per limit identity
//! (README "Policies", state identity). The enum is no bigger than the log alone (the box takes
//! the log's niche), so keys that only ever see one sliding-log limit cost what they did.

use smallvec::SmallVec;

use super::StoreError;
use crate::algorithms::{LimitState, StateId, StateMut};
use crate::clock::Micros;
use crate::window::WindowLog;

pub(super) enum KeyState {
    Log(WindowLog),
    Policy(Box<PolicyState>),
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
            KeyState::Policy(p) => &mut p.base,
        }
    }

    /// Drops what has gone idle; true when nothing is left (the key can be dropped).
    pub(super) fn expire(&mut self, now: Micros) -> bool {
        match self {
            KeyState::Log(l) => l.expire(now),
            KeyState::Policy(p) => {
                p.others.retain(|(_, s)| !s.is_idle(now));
                let base_empty = p.base.expire(now);
                base_empty && p.others.is_empty()
            }
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
        if let KeyState::Log(l) = self {
            let base = std::mem::take(l);
            *self = KeyState::Policy(Box::new(PolicyState {
                base,
                others: SmallVec::new(),
            }));
        }
        let KeyState::Policy(p) = self else {
            return Err(StoreError::Unsupported("key state conversion".into()));
        };
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
