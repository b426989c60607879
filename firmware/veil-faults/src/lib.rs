//! Faults for tests, made real rather than simulated: a bad network link in front of a real
//! server (`relay`) and a disk that fills up (`disk`). Only tests use this crate.
//!
//! Owns: the fault relay and the small full disk. Never: part of the firmware (no crate the
//! daemon links depends on it), or traffic anywhere but loopback.

pub mod disk;
pub mod relay;

pub use disk::SmallDisk;
pub use relay::{FaultRelay, Faults};

/// Cases a property test runs: `PROPTEST_CASES` when set (a long run), else `default` (few,
/// for tests whose cases are costly).
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}
