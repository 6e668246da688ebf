//! Calendar quota windows in UTC (`DAY` from 00:00, `WEEK` from Monday 00:00, `MONTH` from the
//! 1st at 00:00) and the pure counting step on a stored [`QuotaState`].
//!
//! Everything here is plain arithmetic on `i64` Unix seconds and `u64` counters, so it behaves
//! the same on wasm32 as on the host. Nothing panics: extreme timestamps saturate.

use crate::calendar::{civil_from_days, days_from_civil, split_unix_seconds, weekday_from_days};

const SECS_PER_DAY: i64 = 86_400;

/// A quota period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    /// `"DAY"`, `"WEEK"` or `"MONTH"`, exactly (as in API Gateway usage plans).
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "DAY" => Some(Period::Day),
            "WEEK" => Some(Period::Week),
            "MONTH" => Some(Period::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "DAY",
            Period::Week => "WEEK",
            Period::Month => "MONTH",
        }
    }
}

/// Day number (since 1970-01-01) of the first day of the window containing day `days`.
fn start_day(period: Period, days: i64) -> i64 {
    match period {
        Period::Day => days,
        Period::Week => days.saturating_sub(i64::from(weekday_from_days(days))),
        Period::Month => {
            let (year, month, _) = civil_from_days(days);
            days_from_civil(year, month, 1)
        }
    }
}

/// Day number of the first day of the window after the one containing day `days`.
fn next_start_day(period: Period, days: i64) -> i64 {
    match period {
        Period::Day => days.saturating_add(1),
        Period::Week => start_day(Period::Week, days).saturating_add(7),
        Period::Month => {
            let (year, month, _) = civil_from_days(days);
            if month >= 12 {
                days_from_civil(year.saturating_add(1), 1, 1)
            } else {
                days_from_civil(year, month.saturating_add(1), 1)
            }
        }
    }
}

/// Start (Unix seconds, UTC) of the window containing `now_s`: DAY from 00:00, WEEK from
/// Monday 00:00, MONTH from the 1st 00:00.
pub fn window_start(period: Period, now_s: i64) -> i64 {
    let (days, _) = split_unix_seconds(now_s);
    start_day(period, days).saturating_mul(SECS_PER_DAY)
}

/// Start of the next window (exclusive end of the current one).
pub fn window_end(period: Period, now_s: i64) -> i64 {
    let (days, _) = split_unix_seconds(now_s);
    next_start_day(period, days).saturating_mul(SECS_PER_DAY)
}

/// Length in seconds of the window containing `now_s` (86 400 for a day, 604 800 for a week,
/// 28 to 31 days for a month): the `w` of a quota's `RateLimit-Policy` item.
pub fn window_length_s(period: Period, now_s: i64) -> u64 {
    let len = window_end(period, now_s).saturating_sub(window_start(period, now_s));
    u64::try_from(len).unwrap_or(0)
}

/// Persistent counter state: the window it belongs to and the count of admitted requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaState {
    pub window_start: i64,
    pub used: u64,
}

impl QuotaState {
    /// 16 bytes: `window_start` as i64 little-endian, then `used` as u64 little-endian.
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        let (a, b) = out.split_at_mut(8);
        a.copy_from_slice(&self.window_start.to_le_bytes());
        b.copy_from_slice(&self.used.to_le_bytes());
        out
    }

    /// Inverse of [`QuotaState::encode`]; `None` unless `bytes` is exactly 16 bytes long.
    pub fn decode(bytes: &[u8]) -> Option<QuotaState> {
        if bytes.len() != 16 {
            return None;
        }
        let start: [u8; 8] = bytes.get(0..8)?.try_into().ok()?;
        let used: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
        Some(QuotaState {
            window_start: i64::from_le_bytes(start),
            used: u64::from_le_bytes(used),
        })
    }
}

/// The decision for one request against one quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaOutcome {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the counter resets, at least 1.
    pub reset_after_s: u64,
}

/// The state the stored one stands for at `now_s`: its window (aligned to `period`) and count.
///
/// * `None`, or a state from an older window: a fresh count of 0 in the current window.
/// * A state from the current window: kept as is, its start too, even when it is not this
///   period's (a state begun under a shorter period the configuration had before): a change to
///   a longer period and back within that window keeps the count (with the start moved to this
///   period's, the shorter period would take it for an older window and count from 0 again).
/// * A state from a future window (the clock went backwards): its count is kept, never
///   dropped, so no quota is minted. Its window is kept when it is the next one (a small clock
///   step back across a boundary: those requests really belong to that window) and pulled back
///   to the next one when it is further ahead (a wild clock glitch), so a bad clock can lock a
///   client out for at most the rest of this window and the next one.
fn effective(period: Period, prior: Option<QuotaState>, now_s: i64) -> QuotaState {
    let start = window_start(period, now_s);
    match prior {
        Some(p) if p.window_start >= start => {
            let end = window_end(period, now_s);
            QuotaState {
                window_start: p.window_start.min(end),
                used: p.used,
            }
        }
        _ => QuotaState {
            window_start: start,
            used: 0,
        },
    }
}

fn outcome(
    allowed: bool,
    limit: u64,
    used: u64,
    period: Period,
    state_start: i64,
    now_s: i64,
) -> QuotaOutcome {
    let reset = window_end(period, state_start).saturating_sub(now_s);
    QuotaOutcome {
        allowed,
        limit,
        remaining: limit.saturating_sub(used),
        reset_after_s: u64::try_from(reset).unwrap_or(0).max(1),
    }
}

/// Pure step: given the stored state (`None` = never used) decide and return the new state to
/// store (`None` when nothing changes, i.e. rejected and same window, or rejected with nothing
/// stored yet). An admitted request is counted; a rejected one is not.
pub fn consume(
    limit: u64,
    period: Period,
    prior: Option<QuotaState>,
    now_s: i64,
) -> (QuotaOutcome, Option<QuotaState>) {
    let state = effective(period, prior, now_s);
    if state.used < limit {
        let next = QuotaState {
            window_start: state.window_start,
            used: state.used.saturating_add(1),
        };
        let out = outcome(true, limit, next.used, period, next.window_start, now_s);
        (out, Some(next))
    } else {
        let out = outcome(false, limit, state.used, period, state.window_start, now_s);
        let store = match prior {
            Some(p) if p != state => Some(state),
            _ => None,
        };
        (out, store)
    }
}

/// Same decision without consuming (report-only mode and headers): `allowed` tells whether the
/// next request would pass, `remaining` is what is left before it.
pub fn peek(limit: u64, period: Period, prior: Option<QuotaState>, now_s: i64) -> QuotaOutcome {
    let state = effective(period, prior, now_s);
    outcome(
        state.used < limit,
        limit,
        state.used,
        period,
        state.window_start,
        now_s,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of a civil UTC date and time.
    fn ts(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
        days_from_civil(y, mo, d) * SECS_PER_DAY + h * 3600 + mi * 60 + s
    }

    fn day(y: i64, mo: u32, d: u32) -> i64 {
        ts(y, mo, d, 0, 0, 0)
    }

    #[test]
    fn period_parse_and_as_str() {
        for p in [Period::Day, Period::Week, Period::Month] {
            assert_eq!(Period::parse(p.as_str()), Some(p));
        }
        assert_eq!(Period::parse("day"), None);
        assert_eq!(Period::parse(" DAY"), None);
        assert_eq!(Period::parse("YEAR"), None);
        assert_eq!(Period::parse(""), None);
    }

    #[test]
    fn day_edges() {
        let last = ts(2025, 6, 14, 23, 59, 59);
        assert_eq!(window_start(Period::Day, last), day(2025, 6, 14));
        assert_eq!(window_end(Period::Day, last), day(2025, 6, 15));
        let first = ts(2025, 6, 15, 0, 0, 0);
        assert_eq!(window_start(Period::Day, first), day(2025, 6, 15));
        assert_eq!(window_end(Period::Day, first), day(2025, 6, 16));
        assert_eq!(window_length_s(Period::Day, first), 86_400);
        // Epoch and before it.
        assert_eq!(window_start(Period::Day, 0), 0);
        assert_eq!(window_start(Period::Day, -1), -86_400);
        assert_eq!(window_end(Period::Day, -1), 0);
    }

    #[test]
    fn month_edges_and_lengths() {
        let cases: [(i64, u32, u32); 8] = [
            (2023, 2, 28), // 28 days
            (2024, 2, 29), // leap year
            (2100, 2, 28), // divisible by 100, not by 400: not leap
            (2000, 2, 29), // divisible by 400: leap
            (2025, 4, 30), // 30 days
            (2025, 1, 31), // 31 days
            (2025, 12, 31),
            (1969, 12, 31), // before the epoch
        ];
        for (y, m, last_day) in cases {
            let last = ts(y, m, last_day, 23, 59, 59);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            assert_eq!(window_start(Period::Month, last), day(y, m, 1), "{y}-{m}");
            assert_eq!(window_end(Period::Month, last), day(ny, nm, 1), "{y}-{m}");
            assert_eq!(
                window_length_s(Period::Month, last),
                u64::from(last_day) * 86_400
            );
            let next = last + 1;
            assert_eq!(window_start(Period::Month, next), day(ny, nm, 1));
            assert_eq!(
                window_start(Period::Month, ts(y, m, 1, 0, 0, 0)),
                day(y, m, 1)
            );
        }
        // 2100-02-29 does not exist: the day after 2100-02-28 is March 1st.
        assert_eq!(
            window_start(Period::Month, ts(2100, 2, 28, 23, 59, 59) + 1),
            day(2100, 3, 1)
        );
        // Feb 29th 2024 is in February.
        assert_eq!(
            window_start(Period::Month, ts(2024, 2, 29, 12, 0, 0)),
            day(2024, 2, 1)
        );
    }

    #[test]
    fn year_end() {
        let last = ts(2024, 12, 31, 23, 59, 59);
        let first = last + 1;
        assert_eq!(first, day(2025, 1, 1));
        assert_eq!(window_start(Period::Day, last), day(2024, 12, 31));
        assert_eq!(window_end(Period::Day, last), first);
        assert_eq!(window_start(Period::Day, first), first);
        assert_eq!(window_start(Period::Month, last), day(2024, 12, 1));
        assert_eq!(window_end(Period::Month, last), first);
        assert_eq!(window_start(Period::Month, first), first);
        assert_eq!(window_end(Period::Month, first), day(2025, 2, 1));
    }

    #[test]
    fn week_starts_on_monday() {
        // 2025-06-16 is a Monday.
        let monday = day(2025, 6, 16);
        for offset in 0..7 {
            let t = monday + offset * SECS_PER_DAY + 12 * 3600;
            assert_eq!(window_start(Period::Week, t), monday);
            assert_eq!(window_end(Period::Week, t), day(2025, 6, 23));
        }
        // Sunday 23:59:59 vs Monday 00:00:00.
        let sunday_last = ts(2025, 6, 22, 23, 59, 59);
        assert_eq!(window_start(Period::Week, sunday_last), monday);
        assert_eq!(
            window_start(Period::Week, sunday_last + 1),
            day(2025, 6, 23)
        );
        assert_eq!(window_length_s(Period::Week, monday), 604_800);
        // The epoch was a Thursday: its week began on Monday 1969-12-29.
        assert_eq!(window_start(Period::Week, 0), day(1969, 12, 29));
        assert_eq!(window_end(Period::Week, 0), day(1970, 1, 5));
    }

    #[test]
    fn week_spanning_month_and_year() {
        // Monday 2025-09-29 .. Sunday 2025-10-05 spans a month boundary.
        let t = ts(2025, 10, 2, 8, 0, 0);
        assert_eq!(window_start(Period::Week, t), day(2025, 9, 29));
        assert_eq!(window_end(Period::Week, t), day(2025, 10, 6));
        // Monday 2024-12-30 .. Sunday 2025-01-05 spans a year boundary.
        for t in [
            ts(2024, 12, 30, 0, 0, 0),
            ts(2024, 12, 31, 23, 59, 59),
            ts(2025, 1, 1, 0, 0, 0),
            ts(2025, 1, 5, 23, 59, 59),
        ] {
            assert_eq!(window_start(Period::Week, t), day(2024, 12, 30));
            assert_eq!(window_end(Period::Week, t), day(2025, 1, 6));
        }
        assert_eq!(
            window_start(Period::Week, ts(2025, 1, 6, 0, 0, 0)),
            day(2025, 1, 6)
        );
        // Leap day in a week: Monday 2024-02-26 .. Sunday 2024-03-03.
        assert_eq!(
            window_start(Period::Week, ts(2024, 3, 3, 23, 59, 59)),
            day(2024, 2, 26)
        );
    }

    #[test]
    fn windows_contain_now_and_are_aligned() {
        // Every ~7h13m from 1899 to 2101: start <= t < end, windows are contiguous and start on
        // midnight / a Monday / the 1st.
        let mut t = ts(1899, 12, 25, 0, 0, 0);
        let stop = ts(2101, 1, 10, 0, 0, 0);
        while t < stop {
            for p in [Period::Day, Period::Week, Period::Month] {
                let s = window_start(p, t);
                let e = window_end(p, t);
                assert!(s <= t && t < e, "{p:?} {t}");
                assert_eq!(window_start(p, e), e);
                assert_eq!(window_end(p, e - 1), e);
                assert_eq!(window_start(p, s), s);
                let (sd, secs) = split_unix_seconds(s);
                assert_eq!(secs, 0);
                match p {
                    Period::Day => assert_eq!(e - s, 86_400),
                    Period::Week => {
                        assert_eq!(weekday_from_days(sd), 0);
                        assert_eq!(e - s, 7 * 86_400);
                    }
                    Period::Month => assert_eq!(civil_from_days(sd).2, 1),
                }
            }
            t += 26_017;
        }
    }

    #[test]
    fn extreme_timestamps_do_not_panic() {
        for p in [Period::Day, Period::Week, Period::Month] {
            for t in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
                let s = window_start(p, t);
                let e = window_end(p, t);
                assert!(s <= e);
                let _ = window_length_s(p, t);
                let (o, _) = consume(5, p, None, t);
                assert!(o.reset_after_s >= 1);
                let st = QuotaState {
                    window_start: t,
                    used: u64::MAX,
                };
                let (o, _) = consume(u64::MAX, p, Some(st), t);
                assert!(!o.allowed || o.remaining == 0);
                let _ = peek(1, p, Some(st), t.wrapping_neg());
            }
        }
    }

    #[test]
    fn counts_up_to_limit_then_rejects() {
        let now = ts(2025, 6, 14, 10, 0, 0);
        let start = day(2025, 6, 14);
        let mut state = None;
        for i in 1..=3u64 {
            let (o, next) = consume(3, Period::Day, state, now);
            assert!(o.allowed);
            assert_eq!(o.limit, 3);
            assert_eq!(o.remaining, 3 - i);
            assert_eq!(o.reset_after_s, 14 * 3600);
            assert_eq!(
                next,
                Some(QuotaState {
                    window_start: start,
                    used: i
                })
            );
            state = next;
        }
        // Exhausted exactly at the limit: rejected, not counted, nothing to store.
        let (o, next) = consume(3, Period::Day, state, now + 5);
        assert!(!o.allowed);
        assert_eq!(o.remaining, 0);
        assert_eq!(next, None);
        let p = peek(3, Period::Day, state, now + 5);
        assert!(!p.allowed);
        assert_eq!(p.remaining, 0);
    }

    #[test]
    fn resets_at_next_window() {
        let start = day(2025, 6, 14);
        let full = Some(QuotaState {
            window_start: start,
            used: 3,
        });
        let last = ts(2025, 6, 14, 23, 59, 59);
        let (o, next) = consume(3, Period::Day, full, last);
        assert!(!o.allowed);
        assert_eq!(o.reset_after_s, 1);
        assert_eq!(next, None);
        let (o, next) = consume(3, Period::Day, full, last + 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 2);
        assert_eq!(o.reset_after_s, 86_400);
        assert_eq!(
            next,
            Some(QuotaState {
                window_start: last + 1,
                used: 1
            })
        );
        // A state several months old also counts as 0.
        let old = Some(QuotaState {
            window_start: day(2024, 1, 1),
            used: 1_000,
        });
        let (o, next) = consume(10, Period::Month, old, last);
        assert!(o.allowed);
        assert_eq!(o.remaining, 9);
        assert_eq!(
            next,
            Some(QuotaState {
                window_start: day(2025, 6, 1),
                used: 1
            })
        );
    }

    #[test]
    fn peek_does_not_consume() {
        let now = ts(2025, 6, 14, 10, 0, 0);
        let p = peek(3, Period::Day, None, now);
        assert_eq!(
            p,
            QuotaOutcome {
                allowed: true,
                limit: 3,
                remaining: 3,
                reset_after_s: 14 * 3600
            }
        );
        let st = Some(QuotaState {
            window_start: day(2025, 6, 14),
            used: 2,
        });
        let p = peek(3, Period::Day, st, now);
        assert!(p.allowed);
        assert_eq!(p.remaining, 1);
        // Outdated state: a full quota.
        let p = peek(3, Period::Week, st, ts(2025, 7, 1, 0, 0, 0));
        assert_eq!(p.remaining, 3);
    }

    #[test]
    fn zero_limit_rejects_and_stores_nothing() {
        let now = ts(2025, 6, 14, 10, 0, 0);
        let (o, next) = consume(0, Period::Day, None, now);
        assert!(!o.allowed);
        assert_eq!(o.remaining, 0);
        assert_eq!(next, None);
    }

    #[test]
    fn lowered_limit_does_not_underflow() {
        let now = ts(2025, 6, 14, 10, 0, 0);
        let st = Some(QuotaState {
            window_start: day(2025, 6, 14),
            used: 50,
        });
        let (o, next) = consume(10, Period::Day, st, now);
        assert!(!o.allowed);
        assert_eq!(o.remaining, 0);
        assert_eq!(next, None);
    }

    #[test]
    fn a_longer_period_and_back_keeps_the_count() {
        // Three of three used today under DAY; the plan goes to MONTH and back the same day.
        let morning = ts(2026, 12, 7, 9, 0, 0);
        let mut state = None;
        for _ in 0..3 {
            let (out, next) = consume(3, Period::Day, state, morning);
            assert!(out.allowed);
            state = next.or(state);
        }
        let (out, next) = consume(4, Period::Month, state, morning + 60);
        assert!(out.allowed, "MONTH carries the day's count: 3 of 4");
        state = next.or(state);
        let (out, next) = consume(4, Period::Month, state, morning + 61);
        assert!(!out.allowed);
        state = next.or(state);
        // Back to DAY: still today's window, the four admitted requests count.
        let (out, _) = consume(4, Period::Day, state, morning + 120);
        assert!(!out.allowed, "the round trip minted quota");
        assert_eq!(out.remaining, 0);
        // Tomorrow under DAY: a fresh day.
        let (out, _) = consume(4, Period::Day, state, morning + 86_400);
        assert!(out.allowed);
        assert_eq!(out.remaining, 3);
        // A count begun under MONTH on the 1st is older than today's DAY window: a change to
        // the shorter period starts its window afresh (documented).
        let (_, month) = consume(4, Period::Month, None, ts(2026, 12, 1, 0, 0, 1));
        let (out, _) = consume(4, Period::Day, month, morning);
        assert_eq!(out.remaining, 3);
    }

    #[test]
    fn clock_backwards_into_previous_window_keeps_counting() {
        // Two requests counted just after midnight, then the clock steps back 2 s.
        let tomorrow = day(2025, 6, 15);
        let st = Some(QuotaState {
            window_start: tomorrow,
            used: 2,
        });
        let back = tomorrow - 2;
        let (o, next) = consume(3, Period::Day, st, back);
        assert!(o.allowed);
        assert_eq!(o.remaining, 0);
        // Still counted in tomorrow's window: no quota minted when the clock catches up.
        assert_eq!(
            next,
            Some(QuotaState {
                window_start: tomorrow,
                used: 3
            })
        );
        // Reset is honest: the count lasts until tomorrow's window ends.
        assert_eq!(o.reset_after_s, 86_400 + 2);
        let (o, next2) = consume(3, Period::Day, next, back);
        assert!(!o.allowed);
        assert_eq!(next2, None);
        let (o, _) = consume(3, Period::Day, next, tomorrow + 10);
        assert!(!o.allowed);
        // Once that window is over, a fresh count.
        let (o, _) = consume(3, Period::Day, next, day(2025, 6, 16));
        assert!(o.allowed);
        assert_eq!(o.remaining, 2);
    }

    #[test]
    fn clock_far_in_the_future_is_pulled_back() {
        // A state stamped in 2100 (a clock glitch) must not lock the client out until 2100.
        let now = ts(2025, 6, 14, 10, 0, 0);
        let glitch = Some(QuotaState {
            window_start: day(2100, 1, 1),
            used: 1,
        });
        let (o, next) = consume(3, Period::Day, glitch, now);
        assert!(o.allowed);
        assert_eq!(o.remaining, 1); // the count is kept, not reset
        assert_eq!(
            next,
            Some(QuotaState {
                window_start: day(2025, 6, 15),
                used: 2
            })
        );
        // Exhausted glitch state: rejected now, and the pulled-back state is stored.
        let full = Some(QuotaState {
            window_start: day(2100, 1, 1),
            used: 3,
        });
        let (o, next) = consume(3, Period::Day, full, now);
        assert!(!o.allowed);
        assert_eq!(
            next,
            Some(QuotaState {
                window_start: day(2025, 6, 15),
                used: 3
            })
        );
        assert_eq!(o.reset_after_s, 14 * 3600 + 86_400);
        // ...and is usable again two windows later at most.
        let (o, _) = consume(3, Period::Day, next, day(2025, 6, 16));
        assert!(o.allowed);
    }

    #[test]
    fn unaligned_state_in_current_window_keeps_its_start() {
        // E.g. a DAY state read after the period was changed to MONTH: counted on, its start
        // kept (so a change back to DAY the same day finds its own window).
        let now = ts(2025, 6, 20, 10, 0, 0);
        let st = Some(QuotaState {
            window_start: day(2025, 6, 14),
            used: 4,
        });
        let (o, next) = consume(10, Period::Month, st, now);
        assert!(o.allowed);
        assert_eq!(o.remaining, 5);
        assert_eq!(
            next,
            Some(QuotaState {
                window_start: day(2025, 6, 14),
                used: 5
            })
        );
        assert_eq!(o.reset_after_s, (day(2025, 7, 1) - now) as u64);
    }

    #[test]
    fn encode_decode_round_trip() {
        for st in [
            QuotaState {
                window_start: 0,
                used: 0,
            },
            QuotaState {
                window_start: day(2025, 6, 1),
                used: 12_345,
            },
            QuotaState {
                window_start: i64::MIN,
                used: u64::MAX,
            },
            QuotaState {
                window_start: -86_400,
                used: 1,
            },
        ] {
            let bytes = st.encode();
            assert_eq!(QuotaState::decode(&bytes), Some(st));
        }
        let st = QuotaState {
            window_start: 1,
            used: 2,
        };
        assert_eq!(
            st.encode(),
            [1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn decode_rejects_bad_lengths() {
        assert_eq!(QuotaState::decode(&[]), None);
        assert_eq!(QuotaState::decode(&[0u8; 8]), None);
        assert_eq!(QuotaState::decode(&[0u8; 15]), None);
        assert_eq!(QuotaState::decode(&[0u8; 17]), None);
        assert_eq!(QuotaState::decode(&[0u8; 32]), None);
    }
}
