//! Conformance of stores to the policy semantics (README "Policies"): every store answers what the
//! reference model (`support/policy_model.rs`) answers, op by op, on an injected clock.

#[path = "support/policy_model.rs"]
mod policy_model;

use policy_model::calendar_period;
use tollgate_core::policy::Calendar;

const DAY: u64 = 86_400_000_000;

/// Days since 1970-01-01 of a civil date (test helper, by counting).
fn date(y: u64, m: u64, d: u64) -> u64 {
    let mut days = 0;
    for yy in 1970..y {
        days += if (yy % 4 == 0 && yy % 100 != 0) || yy % 400 == 0 {
            366
        } else {
            365
        };
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
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
