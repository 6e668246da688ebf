//! Token bucket arithmetic. A bucket starts full with `burst` tokens and refills at `rate`
//! tokens per second; a request takes one token. Tokens are kept in micro-tokens so that
//! fractional rates (0.5/s) refill exactly; all math is integer and saturating.

/// Micro-tokens per token.
pub const SCALE: u64 = 1_000_000;
const NANOS_PER_SEC: u64 = 1_000_000_000;
/// How far a clock reading may lag a bucket's last update and still be taken for readings
/// arriving out of order between workers rather than a clock stepped back (see
/// [`BucketState::refilled`]).
pub const REORDER_NS: u64 = NANOS_PER_SEC;

/// A bucket's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketSpec {
    /// Refill rate in micro-tokens per second (rate x 1e6, at least 1).
    pub rate_micro: u64,
    /// Bucket size in tokens (at least 1).
    pub burst: u64,
}

impl BucketSpec {
    /// Builds a spec from the configuration's numbers; `None` when out of range.
    pub fn new(rate: f64, burst: u64) -> Option<BucketSpec> {
        if !rate.is_finite() || rate <= 0.0 || burst == 0 || burst > u64::from(u32::MAX) {
            return None;
        }
        let micro = (rate * SCALE as f64).round();
        if !(1.0..=1e15).contains(&micro) {
            return None;
        }
        Some(BucketSpec {
            rate_micro: micro as u64,
            burst,
        })
    }

    fn capacity_micro(&self) -> u64 {
        self.burst.saturating_mul(SCALE)
    }

    /// Seconds to refill an empty bucket (for the `w` of RateLimit-Policy), at least 1.
    pub fn window_secs(&self) -> u64 {
        ceil_div(self.capacity_micro(), self.rate_micro).max(1)
    }

    /// Nanoseconds one token takes to refill: the longest a request ever waits for this bucket.
    pub fn token_ns(&self) -> u64 {
        self.nanos_for(SCALE)
    }

    /// Nanoseconds for `micro` micro-tokens to accrue.
    fn nanos_for(&self, micro: u64) -> u64 {
        nanos_for(micro, self.rate_micro)
    }
}

// The two products below exceed 64 bits, but are computed without a 128-bit division: wasm has
// none, and compiler-builtins' costs ~1 KB of the module (and more time than these).

/// `ceil(micro * 1e9 / rate)` (rate 0 counts as 1), `u64::MAX` when it does not fit.
fn nanos_for(micro: u64, rate: u64) -> u64 {
    let d = rate.max(1);
    // micro * 1e9 / d = (micro / d) * 1e9 + (micro % d) * 1e9 / d
    let (fraction, rest) = scaled(micro % d, d);
    (micro / d)
        .checked_mul(NANOS_PER_SEC)
        .and_then(|n| n.checked_add(fraction))
        .and_then(|n| n.checked_add(u64::from(rest != 0)))
        .unwrap_or(u64::MAX)
}

/// `(floor(r * 1e9 / d), r * 1e9 % d)` for `r < d`: the long division of `r` by `d` carried on
/// over the digits of 1e9.
fn scaled(r: u64, d: u64) -> (u64, u64) {
    if d.checked_mul(1000).is_some() {
        // Three base-1000 digits: rem * 1000 < d * 1000 fits.
        let (mut q, mut rem) = (0u64, r);
        for _ in 0..3 {
            let t = rem * 1000;
            q = q * 1000 + t / d;
            rem = t % d;
        }
        (q, rem)
    } else {
        // A rate this high never comes from `BucketSpec::new`; exact all the same: r * 1e9 by
        // Horner over the bits of 1e9, kept as q * d + rem with rem < d, so nothing overflows.
        let (mut q, mut rem) = (0u64, 0u64);
        for bit in (0..30).rev() {
            if rem >= d - rem {
                rem -= d - rem;
                q = 2 * q + 1;
            } else {
                rem *= 2;
                q *= 2;
            }
            if (NANOS_PER_SEC >> bit) & 1 == 1 {
                if rem >= d - r {
                    rem -= d - r;
                    q += 1;
                } else {
                    rem += r;
                }
            }
        }
        (q, rem)
    }
}

/// `floor(elapsed * rate / 1e9)`, `u64::MAX` when it does not fit.
fn accrued(elapsed: u64, rate: u64) -> u64 {
    // elapsed * rate = (q * 1e9 + r) * (rh * 1e9 + rl), so the quotient is
    // q * rate + r * rh + floor(r * rl / 1e9), with r * rl < 1e18.
    let (q, r) = (elapsed / NANOS_PER_SEC, elapsed % NANOS_PER_SEC);
    let (rh, rl) = (rate / NANOS_PER_SEC, rate % NANOS_PER_SEC);
    q.checked_mul(rate)
        .and_then(|n| n.checked_add(r.checked_mul(rh)?))
        .and_then(|n| n.checked_add(r * rl / NANOS_PER_SEC))
        .unwrap_or(u64::MAX)
}

fn ceil_div(a: u64, b: u64) -> u64 {
    if b == 0 {
        return u64::MAX;
    }
    a.div_ceil(b)
}

/// The stored state of one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketState {
    pub tokens_micro: u64,
    /// Host clock (ns since the epoch) of the last update.
    pub last_ns: u64,
}

impl BucketState {
    pub const ENCODED_LEN: usize = 16;

    pub fn full(spec: &BucketSpec, now_ns: u64) -> BucketState {
        BucketState {
            tokens_micro: spec.capacity_micro(),
            last_ns: now_ns,
        }
    }

    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        let (a, b) = out.split_at_mut(8);
        a.copy_from_slice(&self.tokens_micro.to_le_bytes());
        b.copy_from_slice(&self.last_ns.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<BucketState> {
        let (a, b) = bytes.split_first_chunk::<8>()?;
        let b: &[u8; 8] = b.try_into().ok()?;
        Some(BucketState {
            tokens_micro: u64::from_le_bytes(*a),
            last_ns: u64::from_le_bytes(*b),
        })
    }

    /// The state refilled up to `now_ns`. A reading behind `last_ns` refills nothing. Up to
    /// [`REORDER_NS`] behind, it is the same clock read out of order (a worker reads the clock
    /// before it reaches shared data, so a late writer carries an older reading) and the
    /// bucket keeps its time: moving it back would make the next take count that stretch twice.
    /// Further behind, the clock was stepped back: the bucket re-bases on it, so it neither
    /// mints tokens nor stalls for as long as the step.
    pub fn refilled(&self, spec: &BucketSpec, now_ns: u64) -> BucketState {
        let cap = spec.capacity_micro();
        if now_ns < self.last_ns {
            let behind = self.last_ns - now_ns;
            return BucketState {
                tokens_micro: self.tokens_micro.min(cap),
                last_ns: if behind > REORDER_NS {
                    now_ns
                } else {
                    self.last_ns
                },
            };
        }
        let elapsed = now_ns.saturating_sub(self.last_ns);
        let add = accrued(elapsed, spec.rate_micro);
        BucketState {
            tokens_micro: self.tokens_micro.saturating_add(add).min(cap),
            last_ns: now_ns,
        }
    }
}

impl BucketState {
    /// The state with one token given back (a request that took it was refused later),
    /// never above the bucket's size.
    pub fn refunded(&self, spec: &BucketSpec) -> BucketState {
        BucketState {
            tokens_micro: self
                .tokens_micro
                .saturating_add(SCALE)
                .min(spec.capacity_micro()),
            last_ns: self.last_ns,
        }
    }
}

/// What one take says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketOutcome {
    pub allowed: bool,
    pub burst: u64,
    /// Whole tokens left after this request.
    pub remaining: u64,
    /// Nanoseconds until one token is available (0 when one is).
    pub wait_ns: u64,
    /// Seconds until the bucket's next whole token, 0 when it is full: draft-10's `t`, "the
    /// number of seconds until additional quota ... is made available" (for a 429, the
    /// Retry-After of this bucket).
    pub reset_s: u64,
}

/// Takes one token if there is one. Returns the outcome and the new state; when the request
/// is rejected the state is only refilled.
pub fn take(spec: &BucketSpec, prior: BucketState, now_ns: u64) -> (BucketOutcome, BucketState) {
    let mut state = prior.refilled(spec, now_ns);
    let allowed = state.tokens_micro >= SCALE;
    if allowed {
        state.tokens_micro -= SCALE;
    }
    (outcome(spec, &state, allowed), state)
}

/// The outcome a take would have, without taking (report-only mode, headers).
pub fn peek(spec: &BucketSpec, prior: BucketState, now_ns: u64) -> BucketOutcome {
    let state = prior.refilled(spec, now_ns);
    outcome(spec, &state, state.tokens_micro >= SCALE)
}

fn outcome(spec: &BucketSpec, state: &BucketState, allowed: bool) -> BucketOutcome {
    let cap = spec.capacity_micro();
    let wait_ns = if state.tokens_micro >= SCALE {
        0
    } else {
        spec.nanos_for(SCALE - state.tokens_micro)
    };
    let reset_ns = if state.tokens_micro >= cap {
        0
    } else {
        spec.nanos_for(SCALE - state.tokens_micro % SCALE)
    };
    BucketOutcome {
        allowed,
        burst: spec.burst,
        remaining: state.tokens_micro / SCALE,
        wait_ns,
        reset_s: reset_ns.div_ceil(1_000_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    /// The 128-bit formulas the functions replace.
    fn nanos_for_u128(micro: u64, rate: u64) -> u64 {
        let n = (u128::from(micro) * 1_000_000_000).div_ceil(u128::from(rate.max(1)));
        u64::try_from(n).unwrap_or(u64::MAX)
    }
    fn accrued_u128(elapsed: u64, rate: u64) -> u64 {
        u64::try_from(u128::from(elapsed) * u128::from(rate) / 1_000_000_000).unwrap_or(u64::MAX)
    }

    #[test]
    fn arithmetic_matches_128_bit_math() {
        let edges = [
            0,
            1,
            2,
            999,
            1_000,
            999_999,
            1_000_000,
            999_999_999,
            1_000_000_000,
            1_000_000_001,
            1_000_000_000_000_000,
            18_446_744_073_709_551,
            18_446_744_073_709_552,
            u64::MAX / 1000,
            u64::MAX / 1000 + 1,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut rand = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Spread over magnitudes: a random value shifted right by a random amount.
            x >> (x % 64)
        };
        let mut pairs: Vec<(u64, u64)> = Vec::new();
        for &a in &edges {
            for &b in &edges {
                pairs.push((a, b));
            }
        }
        for _ in 0..200_000 {
            pairs.push((rand(), rand()));
        }
        for (a, b) in pairs {
            assert_eq!(nanos_for(a, b), nanos_for_u128(a, b), "nanos_for({a}, {b})");
            assert_eq!(accrued(a, b), accrued_u128(a, b), "accrued({a}, {b})");
        }
    }

    #[test]
    fn spec_validation() {
        assert!(BucketSpec::new(0.0, 1).is_none());
        assert!(BucketSpec::new(-1.0, 1).is_none());
        assert!(BucketSpec::new(f64::NAN, 1).is_none());
        assert!(BucketSpec::new(1.0, 0).is_none());
        assert_eq!(BucketSpec::new(0.5, 2).unwrap().rate_micro, 500_000);
        assert_eq!(BucketSpec::new(10.0, 20).unwrap().window_secs(), 2);
    }

    #[test]
    fn burst_then_refill() {
        let spec = BucketSpec::new(2.0, 3).unwrap();
        let t0 = 1_000 * SEC;
        let mut s = BucketState::full(&spec, t0);
        for i in 0..3 {
            let (o, n) = take(&spec, s, t0);
            assert!(o.allowed, "take {i}");
            assert_eq!(o.remaining, 2 - i);
            s = n;
        }
        let (o, s2) = take(&spec, s, t0);
        assert!(!o.allowed);
        assert_eq!(o.wait_ns, SEC / 2);
        // The next token (half a second, in whole seconds), not a full bucket (1.5 s).
        assert_eq!(o.reset_s, 1);
        // Half a second later one token is back.
        let (o, _) = take(&spec, s2, t0 + SEC / 2);
        assert!(o.allowed);
    }

    #[test]
    fn reset_is_the_next_token_and_zero_when_full() {
        // draft-10's `t`: seconds until more quota is made available.
        let spec = BucketSpec::new(0.01, 100).unwrap();
        let t0 = 1_000 * SEC;
        let full = BucketState::full(&spec, t0);
        assert_eq!(peek(&spec, full, t0).reset_s, 0);
        let (o, s) = take(&spec, full, t0);
        assert_eq!((o.remaining, o.reset_s), (99, 100));
        // 30 s on: the token is 70 s away, whatever the bucket lacks to be full.
        let (o, s) = take(&spec, s, t0 + 30 * SEC);
        assert_eq!((o.remaining, o.reset_s), (98, 70));
        // Empty: `t` and Retry-After agree.
        let mut s = s;
        for _ in 0..98 {
            s = take(&spec, s, t0 + 30 * SEC).1;
        }
        let (o, _) = take(&spec, s, t0 + 30 * SEC);
        assert!(!o.allowed);
        assert_eq!(o.reset_s, 70);
        assert_eq!(o.wait_ns.div_ceil(SEC), 70);
        // A fast bucket's next token is under a second away: 1.
        let fast = BucketSpec::new(1_000.0, 10).unwrap();
        let (o, _) = take(&fast, BucketState::full(&fast, t0), t0);
        assert_eq!(o.reset_s, 1);
    }

    #[test]
    fn fractional_rate() {
        let spec = BucketSpec::new(0.5, 1).unwrap();
        let t0 = 5 * SEC;
        let (o, s) = take(&spec, BucketState::full(&spec, t0), t0);
        assert!(o.allowed);
        let (o, s) = take(&spec, s, t0 + SEC);
        assert!(!o.allowed);
        assert_eq!(o.wait_ns, SEC);
        let (o, _) = take(&spec, s, t0 + 2 * SEC);
        assert!(o.allowed);
    }

    #[test]
    fn never_exceeds_burst_plus_rate_times_elapsed() {
        let spec = BucketSpec::new(7.0, 5).unwrap();
        let t0 = 42 * SEC;
        let mut s = BucketState::full(&spec, t0);
        let mut admitted = 0u64;
        let step = SEC / 100;
        for i in 0..1000u64 {
            let now = t0 + i * step;
            let (o, n) = take(&spec, s, now);
            s = n;
            if o.allowed {
                admitted += 1;
            }
            let elapsed_s = (now - t0) as f64 / SEC as f64;
            assert!(admitted as f64 <= 5.0 + 7.0 * elapsed_s + 1e-9);
        }
        // And it does admit what it should: 5 + 7 x 9.99 rounded down.
        assert_eq!(admitted, 5 + 69);
    }

    #[test]
    fn clock_going_backwards_neither_mints_nor_stalls() {
        let spec = BucketSpec::new(1.0, 2).unwrap();
        let t0 = 10_000 * SEC;
        let (_, s) = take(&spec, BucketState::full(&spec, t0), t0);
        let (_, s) = take(&spec, s, t0);
        // Clock jumps back an hour: nothing minted.
        let back = t0 - 3600 * SEC;
        let (o, s) = take(&spec, s, back);
        assert!(!o.allowed);
        assert_eq!(s.last_ns, back);
        // One second after the jump, a token is back (no hour-long stall).
        let (o, _) = take(&spec, s, back + SEC);
        assert!(o.allowed);
    }

    #[test]
    fn readings_out_of_order_never_count_time_twice() {
        // Worker A writes at t0 and t0+1s; worker B read its clock at t0+0.5s but reaches
        // shared data after A's second write. Bound: burst + rate x 1.5 s = 3.5.
        let spec = BucketSpec::new(1.0, 2).unwrap();
        let t0 = 1_000 * SEC;
        let mut s = BucketState::full(&spec, t0);
        let mut admitted = 0;
        for now in [t0, t0 + SEC, t0 + SEC / 2, t0 + 3 * SEC / 2] {
            let (o, next) = take(&spec, s, now);
            admitted += u32::from(o.allowed);
            if o.allowed {
                s = next;
            }
        }
        assert_eq!(admitted, 3);
        assert_eq!(
            s.last_ns,
            t0 + SEC,
            "the late reading left the bucket's time alone"
        );
    }

    #[test]
    fn interleaved_workers_with_lag_stay_within_the_bound() {
        // Requests every 80 us alternate between a worker that reaches shared data 5 us after
        // its clock read and one that takes 90 us: writes land out of clock order.
        let spec = BucketSpec::new(10_000.0, 100).unwrap();
        let us = 1_000;
        let t0 = 1_000 * SEC;
        let mut events = Vec::new();
        let (mut t, mut i) = (t0, 0u64);
        while t < t0 + SEC {
            let lag = if i % 2 == 0 { 5 * us } else { 90 * us };
            events.push((t + lag, t));
            t += 80 * us;
            i += 1;
        }
        events.sort_unstable();
        let mut s = BucketState::full(&spec, t0);
        let mut admitted = 0u64;
        for &(_, now) in &events {
            let (o, next) = take(&spec, s, now);
            if o.allowed {
                admitted += 1;
                s = next;
            }
        }
        // 12,500 offered; at most burst + rate x 1 s, and no fewer than the rate.
        assert_eq!(events.len(), 12_500);
        assert!((10_000..=10_100).contains(&admitted), "admitted {admitted}");
    }

    #[test]
    fn encode_round_trip() {
        let s = BucketState {
            tokens_micro: 123,
            last_ns: u64::MAX,
        };
        assert_eq!(BucketState::decode(&s.encode()), Some(s));
        assert_eq!(BucketState::decode(&[0u8; 15]), None);
        assert_eq!(BucketState::decode(&[0u8; 17]), None);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let spec = BucketSpec::new(1e9, u64::from(u32::MAX)).unwrap();
        let s = BucketState {
            tokens_micro: 0,
            last_ns: 0,
        };
        let (o, _) = take(&spec, s, u64::MAX);
        assert!(o.allowed);
        let (o, _) = take(&spec, s, 0);
        assert!(!o.allowed);
    }
}
