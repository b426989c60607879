//! The footage store: each camera's encoded stream cut into segments (starting on a keyframe)
//! in sample files, indexed in SQLite, so that after a crash or power loss the index matches
//! the disk and at most the last flush interval is lost.
//!
//! Write discipline: a segment's file is created and synced (file, then directory) before its
//! index row exists; frames are appended, and every flush interval the file is synced and only
//! then the row updated with what is now durable (bytes, frames, timing, keyframes). Deletes
//! go through a garbage list (row moved to the list in one transaction, then the file
//! unlinked, then the list entry dropped). Recovery at open finishes all of that.
//!
//! Sample file format: per frame, a 4-byte big-endian length and the access unit, as the
//! writer's [`SampleFormat`] says (the store does not parse video). A segment written with a
//! [`SealKey`] holds each access unit encrypted with AES-256-GCM instead (see [`seal`]).
//!
//! Owns: segment files, the SQLite index, recovery after a crash, holds and retention.
//! Never: decodes or anonymizes video, or deletes footage under a hold.

pub mod audit;
pub mod codec;
mod eviction;
mod files;
mod holds;
mod index;
mod recovery;
pub mod retention;
pub mod seal;
mod writer;

pub use crate::index::{
    Coverage, RecoveryReport, SampleFormat, SampleRef, Segment, SegmentLayout, Store, StoredFrame,
};
pub use crate::seal::SealKey;
pub use crate::writer::{CameraWriter, WriterSettings, Written};
