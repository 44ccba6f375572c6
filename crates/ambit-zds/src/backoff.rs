//! The proxy's reconnect delay: exponential with jitter, as ztunnel's (5 ms doubling to 15 s, each delay randomised
//! by ±20 %), so that proxies restarted together do not reconnect in lockstep.

use std::time::Duration;

/// Reconnect delays; the randomness is passed in, so the sequence is testable.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// How far each delay may stray from the nominal one, as a fraction of it.
    jitter: f64,
    current: Duration,
}

// === impl Backoff ===

impl Backoff {
    /// ztunnel's ZDS reconnect delay: 5 ms initial, doubling, at most 15 s, jitter 0.2.
    pub const INITIAL: Duration = Duration::from_millis(5);
    pub const MAX: Duration = Duration::from_secs(15);
    pub const JITTER: f64 = 0.2;

    pub fn new(initial: Duration, max: Duration, jitter: f64) -> Self {
        Backoff {
            initial,
            max,
            jitter: jitter.clamp(0.0, 1.0),
            current: initial,
        }
    }

    /// The next delay, with `unit` in [0, 1) picking where in the jitter band it falls (0.5 is the nominal delay);
    /// the nominal delay then doubles, up to the maximum.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        // Whole nanoseconds, rounded: the float product of a millisecond count is a hair off.
        let delay = Duration::from_nanos((self.current.as_nanos() as f64 * factor).round() as u64);
        self.current = self.current.saturating_mul(2).min(self.max);
        delay
    }

    /// Starts over from the initial delay (after a connection that worked).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Self::INITIAL, Self::MAX, Self::JITTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_cap_within_the_jitter_band() {
        let ms = Duration::from_millis;
        // (unit, expected first five delays)
        let cases: [(f64, [Duration; 5]); 3] = [
            (0.5, [ms(5), ms(10), ms(20), ms(40), ms(80)]),
            (0.0, [ms(4), ms(8), ms(16), ms(32), ms(64)]),
            (1.0, [ms(6), ms(12), ms(24), ms(48), ms(96)]),
        ];
        for (unit, want) in cases {
            let mut backoff = Backoff::default();
            let got: Vec<Duration> = (0..5).map(|_| backoff.next_delay(unit)).collect();
            assert_eq!(got, want, "unit {unit}");
        }
    }

    #[test]
    fn nominal_delay_stops_at_the_cap_and_reset_starts_over() {
        let mut backoff = Backoff::default();
        for _ in 0..30 {
            backoff.next_delay(0.5);
        }
        assert_eq!(backoff.next_delay(0.5), Backoff::MAX);
        assert_eq!(backoff.next_delay(1.0), Duration::from_secs(18));
        backoff.reset();
        assert_eq!(backoff.next_delay(0.5), Backoff::INITIAL);
    }
}
