//! Civil (proleptic Gregorian, UTC) calendar arithmetic on day numbers since 1970-01-01.
//! Used by quota windows and by access-log timestamps. No allocation, no panics.

/// Days since 1970-01-01 for a civil date (month 1..=12, day 1..=31).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // [0, 11]
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Civil date `(year, month 1..=12, day 1..=31)` of a day number since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = if m <= 2 { y + 1 } else { y };
    // d and m are within 1..=31 and 1..=12 by construction.
    (year, m as u32, d as u32)
}

/// Day of the week, 0 = Monday .. 6 = Sunday. 1970-01-01 was a Thursday.
pub fn weekday_from_days(days: i64) -> u32 {
    (days + 3).rem_euclid(7) as u32
}

/// Split Unix seconds into (days since epoch, seconds within the day).
pub fn split_unix_seconds(secs: i64) -> (i64, u32) {
    (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_over_centuries() {
        for days in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "day {days}");
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(
            civil_from_days(days_from_civil(2023, 2, 28) + 1),
            (2023, 3, 1)
        );
        assert_eq!(weekday_from_days(0), 3); // Thursday
        assert_eq!(weekday_from_days(days_from_civil(2026, 11, 23)), 0); // a Monday
    }

    #[test]
    fn negative_seconds_split() {
        assert_eq!(split_unix_seconds(-1), (-1, 86_399));
        assert_eq!(split_unix_seconds(86_400), (1, 0));
    }
}
