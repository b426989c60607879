//! The privacy engine: what makes a frame safe to store or send.
//!
//! Today: static masks, always applied, and the redaction kernels that detectors will use.
//! Everything works on I420 frames in place, before the encoder sees them.

pub mod engine;
pub mod eval;
pub mod face;
pub mod failsafe;
pub mod mask;
pub mod motion;
pub mod redact;
pub mod tflite_file;
pub mod track;
pub mod tract_backend;

pub use engine::{Detector, Engine, EngineConfig, Filter};
pub use failsafe::{Decision, Detections, FailSafe, FailSafePolicy};
pub use mask::{MaskRaster, Masks};
pub use redact::{Rect, Style};
