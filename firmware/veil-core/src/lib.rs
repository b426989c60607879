//! Veil's domain core: plain types and decisions, no I/O.
//!
//! Everything here takes its inputs (text, environment pairs, time) as arguments so that it
//! runs the same in a test, on a laptop and on a board, and builds for every target.
//!
//! Owns: configuration (parsing and validation, every key named in its errors), board
//! profiles, ids, the live-session desk and the other pure state machines, backoff, clocks as
//! a port. Never: touches a file, a socket, a thread or the system clock.

pub mod backoff;
pub mod board;
pub mod clock;
pub mod config;
pub mod error;
pub mod geometry;
pub mod id;
pub mod live;
pub mod ota;
pub mod redact;
pub mod slot;

pub use clock::{Clock, SimulatedClock, SystemClock};
pub use error::{Error, ErrorKind};
pub use id::{CameraId, DeviceId, EventId};
