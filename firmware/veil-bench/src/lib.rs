//! Benchmarks and evaluations, run by `veild bench …` and `veild eval …`.
//!
//! Owns: the measurements docs/benchmarks.md quotes — the media path, redaction and detection,
//! the store, exports, uploads, live sessions, incident projects — and the privacy evaluation
//! against annotated clips; each prints JSON, with its reference tool measured in the same run
//! where there is one.
//!
//! Never: part of what the device runs in service (only the CLI calls it), or a pass/fail test
//! on time: the tests assert what is measured, never how fast.

pub mod bench;
pub mod eval;
