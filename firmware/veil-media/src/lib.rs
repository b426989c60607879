//! The media path: frames, pooled buffers and camera sources.
//!
//! Owns: frames and their buffers, camera sources (RTSP, V4L2, files, the synthetic camera),
//! H.264 encoding and the pipeline threads that carry frames from a source to the encoder.
//! Never: decides what is hidden (the privacy stage does), stores footage or opens the network
//! beyond a camera.

pub mod convert;
pub mod file;
pub mod frame;
pub mod h264;
pub mod pipeline;
pub mod rtsp;
pub mod source;
pub mod synthetic;
pub mod thumbnail;
pub mod v4l2;

pub use frame::{Frame, FrameMeta, FramePool, PooledFrame};
pub use synthetic::{BurnedIn, SyntheticSource, read_burned_in};
