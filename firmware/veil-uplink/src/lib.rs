//! The device as a fleet member over MQTT: the topic tree, the checks every command payload
//! goes through, the outbox that holds messages while the broker is away, and the session that
//! keeps the connection (TLS, last will, birth state, retained registry, telemetry, commands).
//! `docs/mqtt-api.md` documents the topics and payloads; `veilctl` is the fleet side.
//!
//! Owns: the MQTT session, topics, command validation, the outbox, the S3 uploader and the
//! WHIP relay. Never: acts on a command itself (the daemon's fleet port does), or sends a frame
//! that did not come out of the privacy stage.

pub mod command;
pub mod download;
pub mod fleet;
pub mod link;
pub mod outbox;
#[cfg(feature = "testing")]
pub mod schemas;
pub mod session;
pub mod testbed;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod topics;
pub mod turn;
pub mod upload;
pub mod whip;

pub use command::{Command, Request};
pub use session::{Device, Session, SessionStatus};
pub use topics::Topics;

/// Version of the topic tree and payloads (the `v1` level of every topic).
pub const API_VERSION: &str = "v1";
