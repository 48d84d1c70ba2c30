//! The sliding-window log against the brute-force reference model in `support/log_model.rs`.

#[path = "support/log_model.rs"]
mod log_model;

use log_model::{Answer, Oracle};
use proptest::prelude::*;
use tollgate_core::limit::Limit;
use tollgate_core::window::WindowLog;

#[derive(Debug, Clone)]
enum Op {
    Check { dt: u64, limit: usize, cost: u64 },
    Status { dt: u64, limit: usize },
    Sweep { dt: u64 },
}

/// Windows on both sides of 65.536 ms, where the tick stops being 1 µs.
fn limits() -> Vec<Limit> {
    vec![
        Limit::new(3, 0.01).unwrap(),
        Limit::new(5, 0.05).unwrap(),
        Limit::new(4, 0.25).unwrap(),
        Limit::new(10, 1.0).unwrap(),
        Limit::new(1, 2.5).unwrap(),
        Limit::new(7, 100.0).unwrap(),
        Limit::new(20, 0.001).unwrap(),
    ]
}

fn dt() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        0u64..20,
        0u64..5_000,
        0u64..300_000,
        0u64..3_000_000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let n = limits().len();
    prop_oneof![
        8 => (dt(), 0..n, 1u64..=4).prop_map(|(dt, limit, cost)| Op::Check { dt, limit, cost }),
        1 => (dt(), 0..n).prop_map(|(dt, limit)| Op::Status { dt, limit }),
        1 => dt().prop_map(|dt| Op::Sweep { dt }),
    ]
}

/// A sequence that mostly keeps one limit and sometimes switches (a runtime limit change).
fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_oracle(start in 1_000_000u64..2_000_000_000_000_000, sticky in 0usize..7, ops in ops()) {
        let limits = limits();
        let mut log = WindowLog::new();
        let mut oracle = Oracle::default();
        let mut now = start;
        let mut last_window = None;
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Check { dt, limit, cost } => {
                    now += dt;
                    // Half the sequences keep one limit throughout.
                    let l = limits[if sticky % 2 == 0 { sticky } else { limit }];
                    let cost = cost.min(l.max_requests);
                    let v = log.check_and_consume(now, l, cost);
                    let o = oracle.check(now, l, cost);
                    let got = Answer { allowed: v.allowed, used: v.used, reset_at: v.reset_at, retry_at: v.retry_at };
                    prop_assert_eq!(&got, &o, "step {} check at {} limit {:?} cost {}", i, now, l, cost);
                    prop_assert_eq!(v.now, now);
                    last_window = Some(l.window_micros);
                }
                Op::Status { dt, limit } => {
                    now += dt;
                    let l = limits[if sticky % 2 == 0 { sticky } else { limit }];
                    let v = log.status(now, l);
                    let o = oracle.status(now, l);
                    let got = Answer { allowed: v.allowed, used: v.used, reset_at: v.reset_at, retry_at: v.retry_at };
                    prop_assert_eq!(&got, &o, "step {} status at {} limit {:?}", i, now, l);
                    last_window = Some(l.window_micros);
                }
                Op::Sweep { dt } => {
                    now += dt;
                    let empty = log.expire(now);
                    if let Some(w) = last_window {
                        oracle.expire(now, w);
                    }
                    prop_assert_eq!(empty, oracle.used() == 0, "step {} sweep at {}", i, now);
                }
            }
        }
    }
}

/// A check never admits more than the limit in any window, seen from the outside: replaying every
/// admitted request's real time shows at most `max` in every window.
#[test]
fn never_over_admits_in_any_real_window() {
    let l = Limit::new(50, 1.0).unwrap();
    let mut log = WindowLog::new();
    let mut admitted = Vec::new();
    let mut now = 1_000_000_000u64;
    // A deterministic but irregular arrival pattern: bursts and gaps.
    let mut x = 12345u64;
    for _ in 0..200_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        now += match x >> 60 {
            0..=11 => x >> 54 & 0x3f,
            12..=14 => (x >> 40) & 0xffff,
            _ => (x >> 34) & 0xf_ffff,
        };
        if log.check_and_consume(now, l, 1).allowed {
            admitted.push(now);
        }
    }
    assert!(
        admitted.len() > 1000,
        "the pattern admits plenty: {}",
        admitted.len()
    );
    let mut lo = 0;
    for hi in 0..admitted.len() {
        while admitted[lo] + l.window_micros <= admitted[hi] {
            lo += 1;
        }
        assert!(
            hi - lo < 50,
            "{} admitted within one window ending at {}",
            hi - lo + 1,
            admitted[hi]
        );
    }
}
