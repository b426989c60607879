//! Exponential backoff with jitter, for anything that retries (camera sources, brokers, uploads).

use std::time::Duration;

/// Doubles the delay after each failure up to a cap. Jitter spreads a fleet's retries so a
/// recovering server is not hit by every device at the same instant.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt. `jitter` in `0.0..=1.0` (a random draw from the
    /// caller) picks a point between half the nominal delay and the full delay.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.max);
        nominal.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// Back to the initial delay, after a success that lasted.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<u64> = (0..5).map(|_| b.next_delay(1.0).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_between_half_and_full() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        assert_eq!(b.next_delay(0.0), Duration::from_secs(1));
        assert_eq!(b.next_delay(7.0), Duration::from_secs(4)); // clamped to 1.0
    }
}
