//! Rate-limit response headers: `RateLimit-Policy` / `RateLimit` as in
//! draft-ietf-httpapi-ratelimit-headers-10, or Envoy's `X-RateLimit-*` (draft-03) form, and
//! the `Retry-After` value of a 429.
//!
//! Draft-10 (sections 2 and 3): both fields are Structured Field Lists (RFC 9651) of Items whose
//! value is a String naming the policy.
//! * `RateLimit-Policy`: parameters `q` (REQUIRED, quota, non-negative Integer) and `w`
//!   (OPTIONAL, window in seconds, non-zero Integer): `"burst";q=100;w=60, "daily";q=1000;w=86400`.
//! * `RateLimit`: parameters `r` (REQUIRED, remaining quota units, non-negative Integer) and `t`
//!   (OPTIONAL, seconds until more quota is available, non-negative Integer):
//!   `"burst";r=50;t=30`.
//!
//! Values are serialized as RFC 9651 section 4.1 does: list members joined by `", "`, Integers
//! limited to 15 digits (larger values are clamped to 999 999 999 999 999), Strings quoted with
//! `\` and `"` escaped.

/// Which family of rate-limit headers to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderMode {
    Draft10,
    XRateLimit,
    None,
}

impl HeaderMode {
    /// `"draft10"`, `"x-ratelimit"` or `"none"`, exactly.
    pub fn parse(s: &str) -> Option<HeaderMode> {
        match s {
            "draft10" => Some(HeaderMode::Draft10),
            "x-ratelimit" => Some(HeaderMode::XRateLimit),
            "none" => Some(HeaderMode::None),
            _ => None,
        }
    }
}

/// One policy that applied to the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyReport {
    /// `"plan"`, `"route"`, `"stage"`, `"client"` or `"quota"`.
    pub name: &'static str,
    /// Quota units: the burst of a token bucket, the limit of a quota.
    pub limit: u64,
    /// A bucket: seconds to refill from empty (`ceil(burst / rate)`, at least 1); a quota: the
    /// period's length. 0 leaves `w` out (the draft requires a non-zero window).
    pub window_s: u64,
    pub remaining: u64,
    /// Seconds until more quota is available.
    pub reset_s: u64,
}

pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
pub const RATELIMIT: &str = "ratelimit";
pub const X_RATELIMIT_LIMIT: &str = "x-ratelimit-limit";
pub const X_RATELIMIT_REMAINING: &str = "x-ratelimit-remaining";
pub const X_RATELIMIT_RESET: &str = "x-ratelimit-reset";

/// Largest Integer a Structured Field may carry (RFC 9651 section 3.3.1: at most 15 digits).
const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

/// Headers to add, in order. Empty for [`HeaderMode::None`] or no reports.
pub fn render(mode: HeaderMode, reports: &[PolicyReport]) -> Vec<(&'static str, String)> {
    if reports.is_empty() {
        return Vec::new();
    }
    match mode {
        HeaderMode::None => Vec::new(),
        HeaderMode::Draft10 => vec![
            (RATELIMIT_POLICY, policy_list(reports)),
            (RATELIMIT, limit_list(reports)),
        ],
        HeaderMode::XRateLimit => match most_restrictive(reports) {
            Some(r) => vec![
                (X_RATELIMIT_LIMIT, r.limit.to_string()),
                (X_RATELIMIT_REMAINING, r.remaining.to_string()),
                (X_RATELIMIT_RESET, r.reset_s.to_string()),
            ],
            None => Vec::new(),
        },
    }
}

/// The order a request's checks run in (and its reports are listed in): plan, route, stage,
/// client, quota.
const CHECK_ORDER: [&str; 5] = ["plan", "route", "stage", "client", "quota"];

fn check_rank(name: &str) -> usize {
    CHECK_ORDER
        .iter()
        .position(|n| *n == name)
        .unwrap_or(CHECK_ORDER.len())
}

/// Puts `report` where a request's own checks would have listed it: in place of a report of
/// the same name, else before the first report of a later check. (A redirect's later leg and
/// the rate limit service's answer add reports after the others were listed; clients pick
/// items by name, and an `x-ratelimit` tie goes to the first.)
pub fn put_report(reports: &mut Vec<PolicyReport>, report: PolicyReport) {
    if let Some(same) = reports.iter_mut().find(|r| r.name == report.name) {
        *same = report;
        return;
    }
    let rank = check_rank(report.name);
    let at = reports
        .iter()
        .position(|r| check_rank(r.name) > rank)
        .unwrap_or(reports.len());
    reports.insert(at, report);
}

/// Retry-After value in whole seconds (>= 1) from a wait in nanoseconds (rounded up).
pub fn retry_after_secs(wait_ns: u64) -> u64 {
    wait_ns.div_ceil(1_000_000_000).max(1)
}

/// The report with the lowest `remaining`; on a tie the longer `reset_s`; then the first.
fn most_restrictive(reports: &[PolicyReport]) -> Option<&PolicyReport> {
    let mut best: Option<&PolicyReport> = None;
    for r in reports {
        let better = match best {
            None => true,
            Some(b) => {
                r.remaining < b.remaining || (r.remaining == b.remaining && r.reset_s > b.reset_s)
            }
        };
        if better {
            best = Some(r);
        }
    }
    best
}

/// `RateLimit-Policy`: `"name";q=<limit>[;w=<window_s>]` per report.
fn policy_list(reports: &[PolicyReport]) -> String {
    let mut out = String::with_capacity(reports.len().saturating_mul(REPORT_CAPACITY));
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_sf_string(&mut out, r.name);
        push_sf_param(&mut out, "q", r.limit);
        if r.window_s > 0 {
            push_sf_param(&mut out, "w", r.window_s);
        }
    }
    out
}

/// `RateLimit`: `"name";r=<remaining>;t=<reset_s>` per report.
fn limit_list(reports: &[PolicyReport]) -> String {
    let mut out = String::with_capacity(reports.len().saturating_mul(REPORT_CAPACITY));
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_sf_string(&mut out, r.name);
        push_sf_param(&mut out, "r", r.remaining);
        push_sf_param(&mut out, "t", r.reset_s);
    }
    out
}

/// Room for one report in either header: `, "client";q=<15 digits>;w=<15 digits>` fits, so
/// the usual header is built without growing its string.
const REPORT_CAPACITY: usize = 48;

/// `;key=<Integer>`, clamped to the Structured Fields Integer range.
fn push_sf_param(out: &mut String, key: &str, value: u64) {
    out.push(';');
    out.push_str(key);
    out.push('=');
    crate::access_log::push_u64(value.min(SF_INTEGER_MAX), out);
}

/// A Structured Fields String: quoted, `\` and `"` escaped; characters outside printable ASCII
/// (which a String cannot carry) are left out.
fn push_sf_string(out: &mut String, s: &str) {
    out.push('"');
    if s.bytes()
        .all(|b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\')
    {
        // The policy names: nothing to escape or leave out.
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '\\' | '"' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {}
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(
        name: &'static str,
        limit: u64,
        window_s: u64,
        remaining: u64,
        reset_s: u64,
    ) -> PolicyReport {
        PolicyReport {
            name,
            limit,
            window_s,
            remaining,
            reset_s,
        }
    }

    fn owned(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
    }

    #[test]
    fn a_report_put_later_goes_where_its_check_runs() {
        let names = |v: &[PolicyReport]| v.iter().map(|r| r.name).collect::<Vec<_>>();
        let mut v = vec![
            rep("plan", 1, 1, 1, 1),
            rep("stage", 1, 1, 1, 1),
            rep("quota", 9, 9, 9, 9),
        ];
        put_report(&mut v, rep("route", 2, 2, 2, 2));
        assert_eq!(names(&v), ["plan", "route", "stage", "quota"]);
        put_report(&mut v, rep("client", 3, 3, 3, 3));
        assert_eq!(names(&v), ["plan", "route", "stage", "client", "quota"]);
        // One of the same name is replaced where it stands.
        put_report(&mut v, rep("stage", 7, 7, 0, 5));
        assert_eq!(names(&v), ["plan", "route", "stage", "client", "quota"]);
        assert_eq!(v.get(2), Some(&rep("stage", 7, 7, 0, 5)));
        // Into an empty list, and before everything.
        let mut w = Vec::new();
        put_report(&mut w, rep("quota", 1, 1, 1, 1));
        put_report(&mut w, rep("plan", 1, 1, 1, 1));
        assert_eq!(names(&w), ["plan", "quota"]);
    }

    #[test]
    fn parse_modes() {
        assert_eq!(HeaderMode::parse("draft10"), Some(HeaderMode::Draft10));
        assert_eq!(
            HeaderMode::parse("x-ratelimit"),
            Some(HeaderMode::XRateLimit)
        );
        assert_eq!(HeaderMode::parse("none"), Some(HeaderMode::None));
        assert_eq!(HeaderMode::parse("DRAFT10"), None);
        assert_eq!(HeaderMode::parse("draft03"), None);
        assert_eq!(HeaderMode::parse(""), None);
    }

    #[test]
    fn draft10_single_policy() {
        let h = render(HeaderMode::Draft10, &[rep("route", 100, 10, 50, 3)]);
        assert_eq!(
            h,
            owned(&[
                ("ratelimit-policy", "\"route\";q=100;w=10"),
                ("ratelimit", "\"route\";r=50;t=3"),
            ])
        );
    }

    #[test]
    fn draft10_multiple_policies_in_order() {
        let reports = [
            rep("plan", 20, 2, 19, 1),
            rep("stage", 1000, 1, 0, 1),
            rep("quota", 5000, 2_592_000, 4321, 86_400),
        ];
        let h = render(HeaderMode::Draft10, &reports);
        assert_eq!(
            h,
            owned(&[
                (
                    "ratelimit-policy",
                    "\"plan\";q=20;w=2, \"stage\";q=1000;w=1, \"quota\";q=5000;w=2592000"
                ),
                (
                    "ratelimit",
                    "\"plan\";r=19;t=1, \"stage\";r=0;t=1, \"quota\";r=4321;t=86400"
                ),
            ])
        );
    }

    #[test]
    fn draft10_matches_the_drafts_example() {
        // Section 2 of draft-10: `"burst";q=100;w=60,"daily";q=1000;w=86400` (RFC 9651
        // serialization puts one space after the comma).
        let h = render(
            HeaderMode::Draft10,
            &[
                rep("burst", 100, 60, 50, 30),
                rep("daily", 1000, 86_400, 999, 3600),
            ],
        );
        assert_eq!(
            h,
            owned(&[
                (
                    "ratelimit-policy",
                    "\"burst\";q=100;w=60, \"daily\";q=1000;w=86400"
                ),
                ("ratelimit", "\"burst\";r=50;t=30, \"daily\";r=999;t=3600"),
            ])
        );
    }

    #[test]
    fn draft10_zero_window_omits_w_and_big_values_clamp() {
        let h = render(
            HeaderMode::Draft10,
            &[rep("client", u64::MAX, 0, u64::MAX, 0)],
        );
        assert_eq!(
            h,
            owned(&[
                ("ratelimit-policy", "\"client\";q=999999999999999"),
                ("ratelimit", "\"client\";r=999999999999999;t=0"),
            ])
        );
    }

    #[test]
    fn sf_string_escapes() {
        let mut s = String::new();
        push_sf_string(&mut s, "a\"b\\c\u{e9}\n");
        assert_eq!(s, "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn x_ratelimit_picks_most_restrictive() {
        let reports = [
            rep("plan", 20, 2, 19, 1),
            rep("quota", 5000, 86_400, 3, 7_200),
            rep("route", 10, 5, 3, 4),
        ];
        let h = render(HeaderMode::XRateLimit, &reports);
        assert_eq!(
            h,
            owned(&[
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "3"),
                ("x-ratelimit-reset", "7200"),
            ])
        );
        // Lowest remaining wins regardless of reset.
        let reports = [
            rep("quota", 5000, 86_400, 9, 7_200),
            rep("route", 10, 5, 0, 1),
        ];
        let h = render(HeaderMode::XRateLimit, &reports);
        assert_eq!(
            h,
            owned(&[
                ("x-ratelimit-limit", "10"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1"),
            ])
        );
        // Full tie: the first one.
        let reports = [rep("plan", 7, 5, 2, 4), rep("route", 8, 5, 2, 4)];
        let h = render(HeaderMode::XRateLimit, &reports);
        assert_eq!(
            h,
            owned(&[
                ("x-ratelimit-limit", "7"),
                ("x-ratelimit-remaining", "2"),
                ("x-ratelimit-reset", "4"),
            ])
        );
    }

    #[test]
    fn x_ratelimit_single() {
        let h = render(HeaderMode::XRateLimit, &[rep("stage", 100, 1, 42, 1)]);
        assert_eq!(
            h,
            owned(&[
                ("x-ratelimit-limit", "100"),
                ("x-ratelimit-remaining", "42"),
                ("x-ratelimit-reset", "1"),
            ])
        );
    }

    #[test]
    fn none_or_empty_renders_nothing() {
        let one = [rep("plan", 1, 1, 1, 1)];
        assert!(render(HeaderMode::None, &one).is_empty());
        assert!(render(HeaderMode::Draft10, &[]).is_empty());
        assert!(render(HeaderMode::XRateLimit, &[]).is_empty());
        assert!(render(HeaderMode::None, &[]).is_empty());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(999_999_999), 1);
        assert_eq!(retry_after_secs(1_000_000_000), 1);
        assert_eq!(retry_after_secs(1_000_000_001), 2);
        assert_eq!(retry_after_secs(2_500_000_000), 3);
        assert_eq!(retry_after_secs(u64::MAX), 18_446_744_074);
    }
}
