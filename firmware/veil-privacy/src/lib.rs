//! The privacy engine: what makes a frame safe to store or send.
//!
//! Static masks, always applied; faces (BlazeFace, on tract or the LiteRT runtime) and moving
//! objects, detected on their own threads and tracked between detections; a fail-safe that
//! only ever errs toward hiding more; redaction kernels. Everything works on I420 frames in
//! place, before the encoder sees them.
//!
//! Owns: masks, detectors and their runtimes, the tracker, the fail-safe, redaction, and the
//! evaluation harness. Never: lets a frame out without the fail-safe's decision on it; when in
//! doubt it hides more, never less.

pub mod cascade;
pub mod detection;
pub mod detector;
pub mod engine;
pub mod eval;
pub mod face;
pub mod failsafe;
pub mod litert;
pub mod mask;
pub mod motion;
pub mod plate;
pub mod redact;
pub mod tflite_file;
pub mod track;
pub mod tract_backend;

pub use detection::{Backend, DetectionSetup};
pub use engine::{Detector, Engine, EngineConfig, Filter, PrivacyStats};
pub use failsafe::{Decision, Detections, FailSafe, FailSafePolicy};
pub use mask::{MaskHandle, MaskRaster, Masks};
pub use redact::{Rect, Style};
