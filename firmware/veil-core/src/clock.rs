//! Time as an input.
//!
//! Everything that reads time takes a [`Clock`]: the daemon passes [`SystemClock`], tests pass
//! [`SimulatedClock`] and move it by hand, so state machines are tested without sleeping.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of wall-clock and monotonic time.
pub trait Clock: Send + Sync + 'static {
    /// Calendar time; may jump (NTP, a technician setting the date).
    fn wall(&self) -> SystemTime;
    /// Time since an arbitrary fixed origin; never goes backwards. Use it for intervals.
    fn monotonic(&self) -> Duration;

    /// Wall time as milliseconds since the Unix epoch (0 before 1970).
    fn wall_millis(&self) -> u64 {
        self.wall()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// The real clocks of the machine.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that only moves when told to. Shared by reference between the test and the code
/// under test.
#[derive(Debug)]
pub struct SimulatedClock {
    monotonic_nanos: AtomicU64,
    wall: Mutex<SystemTime>,
}

impl SimulatedClock {
    /// Starts at the given wall time with monotonic time zero.
    pub fn new(wall: SystemTime) -> Self {
        SimulatedClock {
            monotonic_nanos: AtomicU64::new(0),
            wall: Mutex::new(wall),
        }
    }

    /// Starts at `secs` seconds after the Unix epoch.
    pub fn at_unix_secs(secs: u64) -> Self {
        Self::new(UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// Moves both clocks forward.
    pub fn advance(&self, by: Duration) {
        self.monotonic_nanos
            .fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
        let mut wall = self.wall.lock().unwrap_or_else(|e| e.into_inner());
        *wall += by;
    }

    /// Sets the wall clock alone, as NTP or a technician would; monotonic time is unaffected.
    pub fn set_wall(&self, wall: SystemTime) {
        *self.wall.lock().unwrap_or_else(|e| e.into_inner()) = wall;
    }
}

impl Clock for SimulatedClock {
    fn wall(&self) -> SystemTime {
        *self.wall.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.monotonic_nanos.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_clock_moves_only_when_advanced() {
        let clock = SimulatedClock::at_unix_secs(1_700_000_000);
        assert_eq!(clock.monotonic(), Duration::ZERO);
        assert_eq!(clock.wall_millis(), 1_700_000_000_000);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.monotonic(), Duration::from_millis(1500));
        assert_eq!(clock.wall_millis(), 1_700_000_001_500);
    }

    #[test]
    fn wall_jumps_do_not_move_monotonic_time() {
        let clock = SimulatedClock::at_unix_secs(1_700_000_000);
        clock.advance(Duration::from_secs(1));
        clock.set_wall(UNIX_EPOCH + Duration::from_secs(10));
        assert_eq!(clock.monotonic(), Duration::from_secs(1));
        assert_eq!(clock.wall_millis(), 10_000);
    }

    #[test]
    fn system_clock_is_monotonic() {
        let clock = SystemClock::new();
        let a = clock.monotonic();
        let b = clock.monotonic();
        assert!(b >= a);
        assert!(clock.wall_millis() > 1_600_000_000_000);
    }
}
