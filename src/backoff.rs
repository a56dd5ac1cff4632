//! Capped exponential backoff, the one formula behind every restart and retry delay of
//! the daemon's actors.

use std::time::Duration;

/// A delay that doubles with each consecutive failure, up to a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub initial: Duration,
    /// No delay is longer than this.
    pub cap: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `cap`.
    pub const fn new(initial: Duration, cap: Duration) -> Self {
        Backoff { initial, cap }
    }

    /// The delay after `attempt` consecutive failures (1-based): `initial` × 2^(attempt−1),
    /// at most `cap`. Attempt 0 counts as the first. Never overflows.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial.saturating_mul(factor).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_initial_delay_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
        let got: Vec<u64> = (1..=6).map(|a| backoff.delay(a).as_secs()).collect();
        assert_eq!(got, vec![5, 10, 20, 40, 60, 60]);
        assert_eq!(backoff.delay(0), Duration::from_secs(5));
    }

    #[test]
    fn huge_attempts_and_durations_stay_at_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(300));
        for attempt in [31, 32, 33, 64, 1000, u32::MAX] {
            assert_eq!(
                backoff.delay(attempt),
                Duration::from_secs(300),
                "{attempt}"
            );
        }
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.delay(u32::MAX), Duration::MAX);
    }

    #[test]
    fn a_cap_below_the_initial_delay_wins() {
        let backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(3));
        assert_eq!(backoff.delay(1), Duration::from_secs(3));
    }

    #[test]
    fn counted_from_zero_the_first_failure_already_doubles() {
        // The job watcher's restarts: poll_interval × 2^attempt, at most 64 poll intervals
        // and 300 s, as `delay(attempt + 1)`.
        for (poll, expected) in [
            (2, vec![4, 8, 16, 32, 64, 128, 128, 128]),
            (10, vec![20, 40, 80, 160, 300, 300, 300, 300]),
        ] {
            let poll = Duration::from_secs(poll);
            let backoff = Backoff::new(poll, (poll * 64).min(Duration::from_secs(300)));
            let got: Vec<u64> = (1..=8).map(|a| backoff.delay(a + 1).as_secs()).collect();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn fractional_delays_double_exactly() {
        let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(16));
        assert_eq!(backoff.delay(3), Duration::from_secs(1));
        assert_eq!(backoff.delay(7), Duration::from_secs(16));
    }
}
