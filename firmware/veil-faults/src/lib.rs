//! Faults for tests, made real rather than simulated: a bad network link in front of a real
//! server (`relay`) and a disk that fills up (`disk`). Only tests use this crate.
//!
//! Owns: the fault relay and the small full disk. Never: part of the firmware (no crate the
//! daemon links depends on it), or traffic anywhere but loopback.

pub mod disk;
pub mod relay;

pub use disk::SmallDisk;
pub use relay::{FaultRelay, Faults};
