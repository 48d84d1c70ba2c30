//! The reference model of limit policies (README "Policies"; the issue 10 semantics), shared by the
//! conformance suites of every store. Plain and slow on purpose: every formula is written as the
//! text states it, state lives in a map keyed by (key, limit identity), calendar periods are found
//! by walking the calendar from 1970 one month at a time, and the sliding log keeps every entry.
//!
//! Use: `model.apply(op, &items, now)` answers exactly what `Store::apply` must answer at `now`.
#![allow(dead_code)]

use std::collections::HashMap;

use tollgate_core::clock::Micros;
use tollgate_core::policy::{
    Algorithm, Calendar, ItemVerdict, LimitVerdict, Op, PolicyItem, PolicyLimit, PolicyVerdict,
};
use tollgate_core::window::tick_for;

const DAY: Micros = 86_400_000_000;

/// Which state a limit uses: kept across configuration changes that keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Identity {
    /// The key's base sliding log (its longest-window sliding_log limit, first on ties).
    BaseLog,
    Log(Micros),
    Gcra(Micros),
    Counter(Micros),
    Fixed(Micros),
    Calendar(Calendar),
}

#[derive(Debug, Clone)]
enum State {
    /// Entries (time of the newest request, cost) and the window of the last call.
    Log {
        entries: Vec<(Micros, u64)>,
        window: Option<Micros>,
    },
    Gcra {
        tat: Micros,
    },
    Counter {
        start: Micros,
        cur: u64,
        prev: u64,
    },
    Fixed {
        start: Micros,
        count: u64,
    },
}

#[derive(Default)]
pub struct PolicyModel {
    states: HashMap<(Vec<u8>, Identity), State>,
}

fn is_leap(y: u64) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn month_days(y: u64, m: u64) -> u64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// The calendar period `[start, end)` holding `t` (UTC).
pub fn calendar_period(cal: Calendar, t: Micros) -> (Micros, Micros) {
    let days = t / DAY;
    match cal {
        Calendar::Day => (days * DAY, (days + 1) * DAY),
        Calendar::Week => {
            // 1970-01-01 was a Thursday: 3 days after a Monday.
            let monday = days - (days + 3) % 7;
            (monday * DAY, (monday + 7) * DAY)
        }
        Calendar::Month => {
            let (mut y, mut m, mut first) = (1970, 1, 0);
            loop {
                let next = first + month_days(y, m);
                if days < next {
                    return (first * DAY, next * DAY);
                }
                first = next;
                m += 1;
                if m == 13 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}

/// The fixed window `[s, e)` holding `t`.
fn fixed_period(pl: &PolicyLimit, cal: Option<Calendar>, t: Micros) -> (Micros, Micros) {
    match cal {
        Some(c) => calendar_period(c, t),
        None => {
            let w = pl.limit.window_micros;
            let s = t - t % w;
            (s, s + w)
        }
    }
}

fn identities(limits: &[PolicyLimit]) -> Vec<Identity> {
    let base = limits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.algorithm == Algorithm::SlidingLog)
        // max_by_key keeps the last maximum; compare with reversed index to keep the first.
        .max_by_key(|(i, l)| (l.limit.window_micros, std::cmp::Reverse(*i)))
        .map(|(i, _)| i);
    limits
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let w = l.limit.window_micros;
            match l.algorithm {
                Algorithm::SlidingLog if Some(i) == base => Identity::BaseLog,
                Algorithm::SlidingLog => Identity::Log(w),
                Algorithm::Gcra { .. } => Identity::Gcra(w),
                Algorithm::SlidingWindowCounter => Identity::Counter(w),
                Algorithm::FixedWindow { calendar: None } => Identity::Fixed(w),
                Algorithm::FixedWindow { calendar: Some(c) } => Identity::Calendar(c),
            }
        })
        .collect()
}

fn gcra_t(pl: &PolicyLimit) -> Micros {
    pl.limit
        .window_micros
        .div_ceil(pl.limit.max_requests)
        .max(1)
}

/// One limit's state brought to time `t` (what a read sees), created empty when absent.
fn normalized(st: Option<State>, pl: &PolicyLimit, t: Micros) -> State {
    let w = pl.limit.window_micros;
    match pl.algorithm {
        Algorithm::SlidingLog => {
            let (mut entries, prev) = match st {
                Some(State::Log { entries, window }) => (entries, window),
                _ => (Vec::new(), None),
            };
            // Entries expire under the window of the previous call, then under this one.
            let edge = prev.map_or(w, |p| p.min(w));
            entries.retain(|(at, _)| at + edge > t);
            State::Log {
                entries,
                window: Some(w),
            }
        }
        Algorithm::Gcra { .. } => match st {
            Some(State::Gcra { tat }) => State::Gcra { tat },
            _ => State::Gcra { tat: t },
        },
        Algorithm::SlidingWindowCounter => {
            let s = t - t % w;
            match st {
                Some(State::Counter { start, cur, prev }) if start == s => {
                    State::Counter { start, cur, prev }
                }
                Some(State::Counter { start, cur, .. }) if start + w == s => State::Counter {
                    start: s,
                    cur: 0,
                    prev: cur,
                },
                _ => State::Counter {
                    start: s,
                    cur: 0,
                    prev: 0,
                },
            }
        }
        Algorithm::FixedWindow { calendar } => {
            let (s, _) = fixed_period(pl, calendar, t);
            match st {
                Some(State::Fixed { start, count }) if start == s => State::Fixed { start, count },
                _ => State::Fixed { start: s, count: 0 },
            }
        }
    }
}

fn log_used(entries: &[(Micros, u64)]) -> u64 {
    entries.iter().map(|(_, c)| c).sum()
}

/// Whether cost `c` fits, and if not, when it would.
fn check(st: &State, pl: &PolicyLimit, t: Micros, c: u64) -> (bool, Option<Micros>) {
    let m = pl.limit.max_requests;
    let w = pl.limit.window_micros;
    match (st, pl.algorithm) {
        (State::Log { entries, .. }, _) => {
            if log_used(entries) + c <= m {
                return (true, None);
            }
            // The earliest moment at which enough old entries have left.
            let mut times: Vec<Micros> = entries.iter().map(|(at, _)| at + w).collect();
            times.sort_unstable();
            let at = times
                .into_iter()
                .find(|&x| {
                    let still: u64 = entries
                        .iter()
                        .filter(|(a, _)| a + w > x)
                        .map(|(_, c)| c)
                        .sum();
                    still + c <= m
                })
                .unwrap_or(t);
            (false, Some(at.max(t)))
        }
        (State::Gcra { tat }, Algorithm::Gcra { burst }) => {
            let tt = gcra_t(pl);
            let base = (*tat).max(t);
            let new = base + c * tt;
            if new - t <= burst * tt {
                (true, None)
            } else {
                (false, Some(new - burst * tt))
            }
        }
        (State::Counter { start, cur, prev }, _) => {
            let (s, cur, prev) = (*start, *cur, *prev);
            let e = t - s;
            let weight = (w - e) as f64 / w as f64;
            let est = prev as f64 * weight;
            if est + (cur + c) as f64 <= m as f64 {
                return (true, None);
            }
            let retry = if cur + c <= m && prev > 0 {
                let x = s + (w as f64 * (1.0 - (m - cur - c) as f64 / prev as f64)).ceil() as u64;
                x.min(s + w).max(t + 1)
            } else if c <= m && cur > 0 {
                let x = s + w + (w as f64 * (1.0 - (m - c) as f64 / cur as f64)).ceil() as u64;
                x.max(s + w)
            } else {
                s + 2 * w
            };
            (false, Some(retry))
        }
        (State::Fixed { count, .. }, Algorithm::FixedWindow { calendar }) => {
            if count + c <= m {
                (true, None)
            } else {
                (false, Some(fixed_period(pl, calendar, t).1))
            }
        }
        _ => unreachable!("state matches its limit's algorithm"),
    }
}

/// Adds `c` without checking (a consume that fits, or a report).
fn add(st: &mut State, pl: &PolicyLimit, t: Micros, c: u64) {
    match st {
        State::Log { entries, .. } => {
            let tick = tick_for(pl.limit.window_micros);
            match entries.last_mut() {
                Some((at, n)) if t <= at.div_ceil(tick) * tick => {
                    *at = (*at).max(t);
                    *n += c;
                }
                _ => entries.push((t, c)),
            }
        }
        State::Gcra { tat } => *tat = (*tat).max(t) + c * gcra_t(pl),
        State::Counter { cur, .. } => *cur += c,
        State::Fixed { count, .. } => *count += c,
    }
}

/// Gives back up to `c`, never below zero.
fn refund(st: &mut State, pl: &PolicyLimit, t: Micros, mut c: u64) {
    match st {
        State::Log { entries, .. } => {
            while c > 0 {
                let Some((_, n)) = entries.last_mut() else {
                    break;
                };
                let take = (*n).min(c);
                *n -= take;
                c -= take;
                if *n == 0 {
                    entries.pop();
                }
            }
        }
        State::Gcra { tat } => {
            *tat = t.max(tat.saturating_sub(c * gcra_t(pl)));
        }
        State::Counter { cur, prev, .. } => {
            let a = (*cur).min(c);
            *cur -= a;
            let b = (*prev).min(c - a);
            *prev -= b;
        }
        State::Fixed { count, .. } => *count -= (*count).min(c),
    }
}

/// Remaining and reset time after the call.
fn figures(st: &State, pl: &PolicyLimit, t: Micros) -> (u64, Micros) {
    let m = pl.limit.max_requests;
    let w = pl.limit.window_micros;
    match (st, pl.algorithm) {
        (State::Log { entries, .. }, _) => (
            m.saturating_sub(log_used(entries)),
            entries.iter().map(|(at, _)| at + w).min().unwrap_or(t),
        ),
        (State::Gcra { tat }, Algorithm::Gcra { burst }) => {
            let tt = gcra_t(pl);
            let base = (*tat).max(t);
            let remaining = (burst * tt).saturating_sub(base - t) / tt;
            (remaining, base)
        }
        (State::Counter { start, cur, prev }, _) => {
            let e = t - start;
            let est = *prev as f64 * ((w - e) as f64 / w as f64);
            let remaining = (m as f64 - est - *cur as f64).floor().max(0.0) as u64;
            let reset = if *cur > 0 {
                start + 2 * w
            } else if *prev > 0 {
                start + w
            } else {
                t
            };
            (remaining, reset)
        }
        (State::Fixed { count, .. }, Algorithm::FixedWindow { calendar }) => {
            (m.saturating_sub(*count), fixed_period(pl, calendar, t).1)
        }
        _ => unreachable!("state matches its limit's algorithm"),
    }
}

impl PolicyModel {
    pub fn new() -> Self {
        Self::default()
    }

    /// What `Store::apply(op, items)` answers at time `t`.
    pub fn apply(&mut self, op: Op, items: &[PolicyItem<'_>], t: Micros) -> PolicyVerdict {
        // Every limit of every item, brought to `t`.
        let mut work: Vec<Vec<(Identity, State)>> = items
            .iter()
            .map(|item| {
                let key = item.key.encode();
                let limits = &item.policy.limits;
                identities(limits)
                    .into_iter()
                    .zip(limits.iter())
                    .map(|(id, pl)| {
                        let st = self.states.get(&(key.clone(), id)).cloned();
                        (id, normalized(st, pl, t))
                    })
                    .collect()
            })
            .collect();
        let checks: Vec<Vec<(bool, Option<Micros>)>> = items
            .iter()
            .zip(&work)
            .map(|(item, sts)| {
                sts.iter()
                    .zip(item.policy.limits.iter())
                    .map(|((_, st), pl)| check(st, pl, t, item.cost))
                    .collect()
            })
            .collect();
        let item_allowed: Vec<bool> = items
            .iter()
            .zip(&checks)
            .map(|(item, ch)| (0..ch.len()).all(|i| item.is_shadow(i) || ch[i].0))
            .collect();
        let allowed = match op {
            Op::Consume | Op::Status => item_allowed.iter().all(|a| *a),
            Op::Report | Op::Refund => true,
        };
        let mut out = PolicyVerdict {
            allowed,
            now: t,
            items: Default::default(),
        };
        for (n, item) in items.iter().enumerate() {
            let limits = &item.policy.limits;
            for (i, pl) in limits.iter().enumerate() {
                let st = &mut work[n][i].1;
                match op {
                    Op::Consume if allowed && (!item.is_shadow(i) || checks[n][i].0) => {
                        add(st, pl, t, item.cost)
                    }
                    Op::Report => add(st, pl, t, item.cost),
                    Op::Refund => refund(st, pl, t, item.cost),
                    _ => {}
                }
            }
            let checking = matches!(op, Op::Consume | Op::Status);
            let verdicts = limits
                .iter()
                .enumerate()
                .map(|(i, pl)| {
                    let (remaining, reset_at) = figures(&work[n][i].1, pl, t);
                    let (fits, retry) = checks[n][i];
                    LimitVerdict {
                        allowed: !checking || fits,
                        remaining,
                        reset_at,
                        retry_at: if checking { retry } else { None },
                    }
                })
                .collect();
            out.items.push(ItemVerdict {
                allowed: !checking || item_allowed[n],
                limits: verdicts,
                shadow_denied: if checking {
                    (0..limits.len()).find(|&i| item.is_shadow(i) && !checks[n][i].0)
                } else {
                    None
                },
            });
        }
        // A consuming op keeps its state; a status read also keeps what it normalized, as a
        // store's read does (entries that left the window are gone either way).
        for (item, sts) in items.iter().zip(work) {
            let key = item.key.encode();
            for (id, st) in sts {
                self.states.insert((key.clone(), id), st);
            }
        }
        out
    }
}
