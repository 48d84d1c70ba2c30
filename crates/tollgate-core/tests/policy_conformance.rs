//! Conformance of stores to the policy semantics (README "Policies"): every store answers what the
//! reference model (`support/policy_model.rs`) answers, op by op, on an injected clock.

#[path = "support/policy_model.rs"]
mod policy_model;

use std::sync::Arc;

use policy_model::{calendar_period, PolicyModel};
use proptest::prelude::*;
use tollgate_core::algorithms::shared_state;
use tollgate_core::clock::{ManualClock, Micros};
use tollgate_core::policy::{
    Algorithm, Calendar, Op, Policy, PolicyItem, PolicyLimit, PolicyVerdict,
};
use tollgate_core::store::{KeyBounds, MemoryStore, Store};
use tollgate_core::{Limit, RateKey};

/// Builds a store on a clock; the Redis store plugs in here with its explicit-time argument.
pub trait StoreFactory {
    fn make(&self, clock: &ManualClock) -> Arc<dyn Store>;
}

struct Memory;

impl StoreFactory for Memory {
    fn make(&self, clock: &ManualClock) -> Arc<dyn Store> {
        Arc::new(MemoryStore::new(Arc::new(clock.clone()), 1_000_000))
    }
}

/// 2026-11-30 00:00 UTC, a Monday.
const T0: Micros = 1_795_996_800_000_000;
const WINDOWS: [Micros; 3] = [10_000, 1_000_000, 60_000_000];

fn limit(m: u64, w: Micros, algorithm: Algorithm, shadow: bool) -> PolicyLimit {
    PolicyLimit {
        limit: Limit {
            max_requests: m,
            window_micros: w,
        },
        algorithm,
        shadow,
        name: None,
    }
}

fn policy(limits: Vec<PolicyLimit>) -> Policy {
    Policy {
        limits: Arc::from(limits),
    }
}

fn item<'a>(key: RateKey<'a>, p: &'a Policy, cost: u64, shadow_all: bool) -> PolicyItem<'a> {
    PolicyItem {
        key,
        policy: p,
        cost,
        bounds: KeyBounds::UNBOUNDED,
        shadow_all,
    }
}

fn arb_limit() -> impl Strategy<Value = PolicyLimit> {
    (
        0..5usize,
        1u64..=10,
        0..3usize,
        1u64..=12,
        any::<bool>(),
        0..3usize,
    )
        .prop_map(|(kind, m, wi, burst, shadow, cal)| {
            let w = WINDOWS[wi];
            let algorithm = match kind {
                0 => Algorithm::SlidingLog,
                1 => Algorithm::Gcra { burst },
                2 => Algorithm::SlidingWindowCounter,
                3 => Algorithm::FixedWindow { calendar: None },
                _ => Algorithm::FixedWindow {
                    calendar: Some([Calendar::Day, Calendar::Week, Calendar::Month][cal]),
                },
            };
            // Shadow limits are rarer so most sequences also see real denials.
            limit(m, w, algorithm, shadow && cal == 0)
        })
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    cost: u64,
    dt: Micros,
    /// Which of the two keys (or both, as one call).
    keys: u8,
}

fn arb_step() -> impl Strategy<Value = Step> {
    let op = prop_oneof![
        6 => Just(Op::Consume),
        1 => Just(Op::Status),
        1 => Just(Op::Report),
        1 => Just(Op::Refund),
    ];
    let dt = prop_oneof![
        3 => Just(0u64),
        4 => 0u64..3_000,
        3 => 0u64..400_000,
        1 => 0u64..90_000_000,
        1 => 0u64..3 * 86_400_000_000,
    ];
    (op, 1u64..=4, dt, 0u8..4).prop_map(|(op, cost, dt, keys)| Step { op, cost, dt, keys })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// Runs `steps` against a fresh store and the model; every answer must be equal.
fn conforms(
    factory: &dyn StoreFactory,
    start: Micros,
    policies: [&Policy; 2],
    shadow_all: bool,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(start);
    let store = factory.make(&clock);
    let mut model = PolicyModel::new();
    let rt = rt();
    let keys = [RateKey::new("t", "c1", "a"), RateKey::new("t", "c2", "a")];
    let mut now = start;
    for (n, s) in steps.iter().enumerate() {
        now += s.dt;
        clock.set(now);
        let cap = |p: &Policy| p.limits.iter().map(|l| l.capacity()).min().unwrap_or(1);
        let items: Vec<PolicyItem<'_>> = match s.keys {
            0 | 1 => {
                let i = usize::from(s.keys);
                let cost = 1 + (s.cost - 1) % cap(policies[i]);
                vec![item(keys[i], policies[i], cost, shadow_all)]
            }
            _ => (0..2)
                .map(|i| {
                    let cost = 1 + (s.cost - 1) % cap(policies[i]);
                    item(keys[i], policies[i], cost, shadow_all)
                })
                .collect(),
        };
        let got = rt.block_on(store.apply(s.op, &items));
        let want = model.apply(s.op, &items, now);
        prop_assert_eq!(got, Ok(want), "step {} {:?} at {}", n, s, now);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// One limit of every algorithm, with report/refund and occasional two-key calls.
    #[test]
    fn one_limit_matches_the_model(
        l in arb_limit(),
        other in arb_limit(),
        shadow_all in prop::bool::weighted(0.1),
        steps in prop::collection::vec(arb_step(), 1..60),
    ) {
        let p = policy(vec![l]);
        let q = policy(vec![other]);
        conforms(&Memory, T0 + 12_345, [&p, &q], shadow_all, &steps)?;
    }

    /// Two and three limits on one key.
    #[test]
    fn several_limits_match_the_model(
        ls in prop::collection::vec(arb_limit(), 2..4),
        other in prop::collection::vec(arb_limit(), 1..3),
        steps in prop::collection::vec(arb_step(), 1..60),
    ) {
        prop_assume!(shared_state(&ls).is_none() && shared_state(&other).is_none());
        let p = policy(ls);
        let q = policy(other);
        conforms(&Memory, T0 + 777, [&p, &q], false, &steps)?;
    }

    /// Calendar windows across midnights, Mondays, month ends and leap days.
    #[test]
    fn calendar_boundaries_match_the_model(
        start in prop::sample::select(vec![
            date(2028, 2, 28), date(2028, 2, 29), date(2100, 2, 28), date(2000, 2, 28),
            date(2026, 4, 30), date(2026, 12, 31), date(2027, 1, 31), date(2026, 11, 29),
            date(2026, 6, 30),
        ]),
        before in 1u64..3_000_000,
        cal in prop::sample::select(vec![Calendar::Day, Calendar::Week, Calendar::Month]),
        m in 1u64..5,
        steps in prop::collection::vec(arb_step(), 1..40),
    ) {
        let p = policy(vec![limit(m, 31 * DAY, Algorithm::FixedWindow { calendar: Some(cal) }, false)]);
        let q = policy(vec![limit(m, 1_000_000, Algorithm::Gcra { burst: m }, false)]);
        // Start just before midnight of the next day.
        conforms(&Memory, start + DAY - before, [&p, &q], false, &steps)?;
    }

    /// A shadow limit never denies and flags exactly the calls the same limit denies for real.
    #[test]
    fn shadow_flags_exactly_the_real_denials(
        l in arb_limit(),
        steps in prop::collection::vec(arb_step(), 1..60),
    ) {
        let mut shadowed = l.clone();
        shadowed.shadow = true;
        let mut real = l;
        real.shadow = false;
        let (ps, pr) = (policy(vec![shadowed]), policy(vec![real]));
        let clock = ManualClock::new(T0);
        let (a, b) = (Memory.make(&clock), Memory.make(&clock));
        let rt = rt();
        let key = RateKey::new("t", "c", "a");
        let mut now = T0;
        for s in &steps {
            now += s.dt;
            clock.set(now);
            let cost = 1 + (s.cost - 1) % pr.limits[0].capacity();
            let va = rt.block_on(a.apply(Op::Consume, &[item(key, &ps, cost, false)])).unwrap();
            let vb = rt.block_on(b.apply(Op::Consume, &[item(key, &pr, cost, false)])).unwrap();
            prop_assert!(va.allowed);
            prop_assert_eq!(va.items[0].shadow_denied.is_some(), !vb.allowed);
            prop_assert_eq!(va.items[0].limits[0].remaining, vb.items[0].limits[0].remaining);
        }
    }
}

/// A policy for the configuration-change test: often exactly one enforced GCRA limit (the memory
/// store keeps that key's state inline and decides it on a path of its own), otherwise anything.
/// Windows come from three values, so one-GCRA policies often share an identity with another
/// policy's GCRA limit (same window, other rate or burst) and must find its state.
fn arb_changing_policy() -> impl Strategy<Value = Policy> {
    let gcra = (1u64..=10, 0..3usize, 1u64..=12).prop_map(|(m, wi, burst)| {
        policy(vec![limit(
            m,
            WINDOWS[wi],
            Algorithm::Gcra { burst },
            false,
        )])
    });
    let any = prop::collection::vec(arb_limit(), 1..4)
        .prop_filter("no two limits with one state", |ls| {
            shared_state(ls).is_none()
        })
        .prop_map(policy);
    prop_oneof![3 => gcra, 2 => any]
}

/// Runs `steps` on one key whose policy changes from step to step (`(policy index, step)`; a
/// step's `keys` of 3 adds a second key under the first policy to the call, which takes the
/// store's general several-key path); every answer must equal the model's.
fn conforms_across_changes(
    policies: &[Policy],
    steps: &[(usize, bool, Step)],
) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(T0 + 4_321);
    let store = Memory.make(&clock);
    let mut model = PolicyModel::new();
    let rt = rt();
    let keys = [RateKey::new("t", "c1", "a"), RateKey::new("t", "c2", "a")];
    let mut now = T0 + 4_321;
    for (n, (pi, shadow_all, s)) in steps.iter().enumerate() {
        now += s.dt;
        clock.set(now);
        let p = &policies[pi % policies.len()];
        let cap = |p: &Policy| p.limits.iter().map(|l| l.capacity()).min().unwrap_or(1);
        let mut items = vec![item(keys[0], p, 1 + (s.cost - 1) % cap(p), *shadow_all)];
        if s.keys == 3 {
            let q = &policies[0];
            items.push(item(keys[1], q, 1 + (s.cost - 1) % cap(q), *shadow_all));
        }
        let got = rt.block_on(store.apply(s.op, &items));
        let want = model.apply(s.op, &items, now);
        prop_assert_eq!(got, Ok(want), "step {} policy {} {:?} at {}", n, pi, s, now);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// README "State across configuration changes", on one key that moves between the memory
    /// store's forms: one GCRA limit inline (its own consume path), the general form (other or
    /// several limits, shadow, status, report, refund) and back.
    #[test]
    fn policy_changes_on_one_key_match_the_model(
        policies in prop::collection::vec(arb_changing_policy(), 2..5),
        steps in prop::collection::vec(
            (0usize..5, prop::bool::weighted(0.05), arb_step()),
            1..80,
        ),
    ) {
        conforms_across_changes(&policies, &steps)?;
    }
}

/// One key through the one-GCRA path, then the general path under a policy that keeps the same
/// GCRA state (same window, plus a sliding log), then back; and a GCRA limit of another window
/// beside it. Every answer equals the model's, which keeps each identity's state on its own.
#[test]
fn one_gcra_key_through_the_general_path_and_back() {
    let clock = ManualClock::new(T0);
    let store = Memory.make(&clock);
    let mut model = PolicyModel::new();
    let rt = rt();
    let key = RateKey::new("t", "c", "a");
    // 10 per second (T = 100 ms), burst 3.
    let g = limit(10, 1_000_000, Algorithm::Gcra { burst: 3 }, false);
    let lone = policy(vec![g.clone()]);
    let with_log = policy(vec![
        limit(5, 1_000_000, Algorithm::SlidingLog, false),
        g.clone(),
    ]);
    let other_window = policy(vec![limit(
        10,
        60_000_000,
        Algorithm::Gcra { burst: 2 },
        false,
    )]);
    let shadowed = policy(vec![PolicyLimit { shadow: true, ..g }]);
    let script: [(Micros, &Policy, Op, u64); 14] = [
        (0, &lone, Op::Consume, 1),
        (0, &lone, Op::Consume, 1),
        (0, &with_log, Op::Consume, 1),
        (0, &lone, Op::Consume, 1),
        (0, &with_log, Op::Status, 1),
        (50_000, &lone, Op::Consume, 1),
        (60_000, &lone, Op::Consume, 1),
        (0, &other_window, Op::Consume, 2),
        (0, &lone, Op::Consume, 1),
        (0, &shadowed, Op::Consume, 1),
        (0, &lone, Op::Refund, 2),
        (1_000, &lone, Op::Consume, 2),
        (2_000_000, &lone, Op::Consume, 3),
        (0, &other_window, Op::Consume, 1),
    ];
    let mut now = T0;
    let mut denied = 0;
    for (n, (dt, p, op, cost)) in script.into_iter().enumerate() {
        now += dt;
        clock.set(now);
        let items = [item(key, p, cost, false)];
        let got = rt.block_on(store.apply(op, &items)).unwrap();
        let want = model.apply(op, &items, now);
        assert_eq!(got, want, "step {n}");
        denied += usize::from(!got.allowed);
    }
    assert!(denied >= 2, "the script reached denials: {denied}");
}

fn consume(store: &dyn Store, p: &Policy, cost: u64) -> PolicyVerdict {
    rt().block_on(store.apply(
        Op::Consume,
        &[item(RateKey::new("t", "c", "a"), p, cost, false)],
    ))
    .unwrap()
}

#[test]
fn gcra_admits_the_burst_then_one_per_interval() {
    let clock = ManualClock::new(T0);
    let store = Memory.make(&clock);
    // 10 per second (T = 100 ms), burst 4.
    let p = policy(vec![limit(
        10,
        1_000_000,
        Algorithm::Gcra { burst: 4 },
        false,
    )]);
    for left in (0..4).rev() {
        let v = consume(&*store, &p, 1);
        assert!(v.allowed);
        assert_eq!(v.items[0].limits[0].remaining, left);
    }
    let v = consume(&*store, &p, 1);
    assert!(!v.allowed);
    assert_eq!(v.items[0].limits[0].retry_at, Some(T0 + 100_000));
    for k in 1..=20 {
        clock.set(T0 + k * 100_000 - 1);
        assert!(!consume(&*store, &p, 1).allowed, "just before interval {k}");
        clock.set(T0 + k * 100_000);
        assert!(consume(&*store, &p, 1).allowed, "at interval {k}");
    }
}

#[test]
fn calendar_windows_reset_exactly_at_the_boundary() {
    for (cal, at, next) in [
        (Calendar::Day, date(2026, 12, 31) + 5, date(2027, 1, 1)),
        (Calendar::Week, date(2026, 12, 3), date(2026, 12, 7)),
        (Calendar::Month, date(2028, 2, 3), date(2028, 3, 1)),
        (Calendar::Month, date(2100, 2, 3), date(2100, 3, 1)),
        (Calendar::Month, date(2000, 2, 3), date(2000, 3, 1)),
        (Calendar::Month, date(2026, 4, 3), date(2026, 5, 1)),
        (Calendar::Month, date(2026, 12, 3), date(2027, 1, 1)),
    ] {
        let clock = ManualClock::new(at);
        let store = Memory.make(&clock);
        let p = policy(vec![limit(
            2,
            31 * DAY,
            Algorithm::FixedWindow {
                calendar: Some(cal),
            },
            false,
        )]);
        assert!(consume(&*store, &p, 2).allowed);
        let v = consume(&*store, &p, 1);
        assert!(!v.allowed);
        assert_eq!(v.items[0].limits[0].reset_at, next, "{cal:?}");
        assert_eq!(v.items[0].limits[0].retry_at, Some(next));
        clock.set(next - 1);
        assert!(!consume(&*store, &p, 1).allowed, "{cal:?} a µs early");
        clock.set(next);
        assert!(consume(&*store, &p, 2).allowed, "{cal:?} at the boundary");
    }
}

/// 5 per second and 20 per minute under 16 threads: at every instant the key admits exactly what
/// the model (the stricter limit at each moment) admits, however the threads interleave.
#[test]
fn two_windows_under_sixteen_threads_admit_exactly_the_stricter() {
    let clock = ManualClock::new(T0);
    let store = MemoryStore::new(Arc::new(clock.clone()), 1000);
    let p = policy(vec![
        limit(5, 1_000_000, Algorithm::SlidingLog, false),
        limit(20, 60_000_000, Algorithm::SlidingLog, false),
    ]);
    let mut model = PolicyModel::new();
    let key = RateKey::new("t", "c", "a");
    let mut now = T0;
    let mut total = 0;
    for round in 0..150u64 {
        now += [137_000, 450_000, 1_000_000, 9_000_000][(round % 4) as usize];
        clock.set(now);
        let admitted: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..16)
                .map(|_| {
                    s.spawn(|| {
                        (0..2)
                            .filter(|_| {
                                store
                                    .apply_sync(Op::Consume, &[item(key, &p, 1, false)])
                                    .unwrap()
                                    .allowed
                            })
                            .count()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let want = (0..32)
            .filter(|_| {
                model
                    .apply(Op::Consume, &[item(key, &p, 1, false)], now)
                    .allowed
            })
            .count();
        assert_eq!(admitted, want, "round {round} at {now}");
        total += admitted;
    }
    assert!(total > 100, "the test exercised admissions: {total}");
}

#[test]
fn report_goes_over_and_refund_gives_back() {
    let clock = ManualClock::new(T0);
    let store = Memory.make(&clock);
    let p = policy(vec![limit(5, 1_000_000, Algorithm::SlidingLog, false)]);
    let it = |c| [item(RateKey::new("t", "c", "a"), &p, c, false)];
    let rt = rt();
    let v = rt.block_on(store.apply(Op::Report, &it(4))).unwrap();
    assert_eq!(v.items[0].limits[0].remaining, 1);
    let v = rt.block_on(store.apply(Op::Report, &it(4))).unwrap();
    assert!(v.allowed);
    assert_eq!(v.items[0].limits[0].remaining, 0);
    assert!(!consume(&*store, &p, 1).allowed);
    let v = rt.block_on(store.apply(Op::Refund, &it(5))).unwrap();
    assert_eq!(v.items[0].limits[0].remaining, 2);
    let v = rt.block_on(store.apply(Op::Refund, &it(5))).unwrap();
    assert_eq!(v.items[0].limits[0].remaining, 5, "never below zero");
    assert!(consume(&*store, &p, 5).allowed);
}

const DAY: u64 = 86_400_000_000;

/// Days since 1970-01-01 of a civil date (test helper, by counting).
fn date(y: u64, m: u64, d: u64) -> u64 {
    let mut days = 0;
    for yy in 1970..y {
        days += if (yy.is_multiple_of(4) && !yy.is_multiple_of(100)) || yy.is_multiple_of(400) {
            366
        } else {
            365
        };
    }
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let lens = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days += lens[..(m - 1) as usize].iter().sum::<u64>();
    (days + d - 1) * DAY
}

#[test]
fn model_calendar_periods() {
    // 2024-01-01 was a Monday.
    assert_eq!(
        calendar_period(Calendar::Week, date(2024, 1, 3) + 5),
        (date(2024, 1, 1), date(2024, 1, 8))
    );
    assert_eq!(
        calendar_period(Calendar::Month, date(2028, 2, 29)),
        (date(2028, 2, 1), date(2028, 3, 1))
    );
    assert_eq!(date(2028, 3, 1) - date(2028, 2, 1), 29 * DAY);
    assert_eq!(
        calendar_period(Calendar::Month, date(2100, 2, 28) + DAY - 1).1,
        date(2100, 3, 1)
    );
    assert_eq!(date(2100, 3, 1) - date(2100, 2, 1), 28 * DAY);
    assert_eq!(date(2000, 3, 1) - date(2000, 2, 1), 29 * DAY);
    assert_eq!(
        calendar_period(Calendar::Day, date(2026, 12, 31) + 1),
        (date(2026, 12, 31), date(2027, 1, 1))
    );
}
