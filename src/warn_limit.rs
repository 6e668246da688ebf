//! At most one warning a second of a kind, however many requests meet the condition: a
//! shared-data store that keeps failing, or a clock that cannot be read, would otherwise write a
//! log line per request.

/// Once a second, with the number of warnings left out since the last one written.
#[derive(Debug, Default, Clone, Copy)]
pub struct WarnLimit {
    /// When the last warning was written (ns), if one was.
    last_ns: Option<u64>,
    /// Warnings left out since then.
    left_out: u64,
}

/// The interval between two warnings of a kind.
pub const INTERVAL_NS: u64 = 1_000_000_000;
/// With no clock (`now_ns` 0), every this many warnings one is written.
pub const WITHOUT_CLOCK_EVERY: u64 = 1_000;

impl WarnLimit {
    /// Whether to write a warning now: `Some(left_out)` (how many were left out since the last
    /// one written) when it is due, `None` when it is left out.
    pub fn admit(&mut self, now_ns: u64) -> Option<u64> {
        let due = match self.last_ns {
            None => true,
            Some(_) if now_ns == 0 => self.left_out + 1 >= WITHOUT_CLOCK_EVERY,
            Some(last) => now_ns.saturating_sub(last) >= INTERVAL_NS || now_ns < last,
        };
        if due {
            let left_out = self.left_out;
            self.last_ns = Some(now_ns);
            self.left_out = 0;
            Some(left_out)
        } else {
            self.left_out = self.left_out.saturating_add(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_a_second_with_the_count_left_out() {
        let mut w = WarnLimit::default();
        let t = 5 * INTERVAL_NS;
        assert_eq!(w.admit(t), Some(0));
        for i in 1..=10 {
            assert_eq!(w.admit(t + i * 1_000_000), None);
        }
        assert_eq!(w.admit(t + INTERVAL_NS - 1), None);
        assert_eq!(w.admit(t + INTERVAL_NS), Some(11));
        assert_eq!(w.admit(t + INTERVAL_NS + 1), None);
        // A clock stepped back: written, not left out for as long as the step.
        assert_eq!(w.admit(t), Some(1));
        assert_eq!(w.admit(t + 1), None);
    }

    #[test]
    fn without_a_clock_one_in_a_thousand() {
        let mut w = WarnLimit::default();
        assert_eq!(w.admit(0), Some(0));
        let written: Vec<u64> = (0..2_500).filter_map(|_| w.admit(0)).collect();
        assert_eq!(
            written,
            vec![WITHOUT_CLOCK_EVERY - 1, WITHOUT_CLOCK_EVERY - 1]
        );
    }
}
