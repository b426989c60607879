//! Evidence: what leaves the device as proof.
//!
//! Owns: export planning (a range of one or more cameras' footage into MP4 files of at most 60
//! minutes, re-anonymized with another filter when asked), the MP4 muxing straight from the
//! store's sample files, the manifest and its Ed25519 signature, age encryption, the check of
//! an export (`veild verify-export`) and the device's keys under `state/`.
//!
//! Never: leaves an export that could pass for a whole one (a failed export removes what it
//! wrote; a manifest is parsed strictly, a key given twice is refused), or signs a file it
//! did not hash.

pub mod export;
pub mod keystore;
pub mod remux;
pub mod requests;
