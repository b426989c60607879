//! Evidence: what leaves the device as proof. Owns export planning (a range of footage into
//! MP4 files of at most 60 minutes), the MP4 muxing, the manifest and its Ed25519 signature,
//! age encryption, the check of an export (`veild verify-export`) and the device's keys.
//!
//! Never writes an export that could be mistaken for a whole one: a failed export removes
//! what it wrote, and a manifest is parsed strictly.

pub mod export;
pub mod keystore;
pub mod remux;
