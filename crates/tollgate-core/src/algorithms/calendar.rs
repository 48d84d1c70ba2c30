//! UTC calendar periods for calendar-aligned fixed windows, by Howard Hinnant's days-from-civil
//! arithmetic (the same integer steps the Redis script uses; no time-zone database, no `os.date`).

use crate::clock::Micros;
use crate::policy::Calendar;

const DAY: Micros = 86_400_000_000;

/// (year, month 1..=12) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// Days since 1970-01-01 of the 1st of month `m` of year `y`.
fn days_from_civil(y: i64, m: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The period `[start, end)` of `cal` holding `t`.
pub fn period(cal: Calendar, t: Micros) -> (Micros, Micros) {
    let days = t / DAY;
    let (s, e) = match cal {
        Calendar::Day => (days, days + 1),
        Calendar::Week => {
            // 1970-01-01 was a Thursday, three days after a Monday.
            let monday = days - (days + 3) % 7;
            (monday, monday + 7)
        }
        Calendar::Month => {
            // Day counts of a u64 µs clock fit an i64 with room to spare.
            let (y, m) = civil_from_days(days as i64);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (days_from_civil(y, m) as u64, days_from_civil(ny, nm) as u64)
        }
    };
    (s * DAY, e * DAY)
}

/// The longest period of `cal`, for validation and for reporting a window length before a call.
pub fn longest(cal: Calendar) -> Micros {
    match cal {
        Calendar::Day => DAY,
        Calendar::Week => 7 * DAY,
        Calendar::Month => 31 * DAY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_leap_years() {
        // 2000-02-01 is day 11,004; February 2000 has 29 days, 2100's 28, 2028's 29.
        assert_eq!(
            period(Calendar::Month, 11_004 * DAY + 5),
            (11_004 * DAY, 11_033 * DAY)
        );
        let feb_2100 = days_from_civil(2100, 2) as u64;
        assert_eq!(days_from_civil(2100, 3) as u64 - feb_2100, 28);
        assert_eq!(days_from_civil(2028, 3) - days_from_civil(2028, 2), 29);
        assert_eq!(civil_from_days(days_from_civil(2026, 12)), (2026, 12));
        // Monday 2024-01-01.
        let monday = days_from_civil(2024, 1) as u64;
        assert_eq!(
            period(Calendar::Week, (monday + 6) * DAY),
            (monday * DAY, (monday + 7) * DAY)
        );
    }
}
