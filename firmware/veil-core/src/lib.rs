//! Veil's domain core: plain types and decisions, no I/O.
//!
//! Everything here takes its inputs (text, environment pairs, time) as arguments so that it
//! runs the same in a test, on a laptop and on a board, and builds for every target.

pub mod backoff;
pub mod board;
pub mod clock;
pub mod config;
pub mod error;
pub mod geometry;
pub mod id;
pub mod live;
pub mod redact;

pub use clock::{Clock, SimulatedClock, SystemClock};
pub use error::{Error, ErrorKind};
pub use id::{CameraId, DeviceId, EventId};
