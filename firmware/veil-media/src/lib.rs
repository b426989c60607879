//! The media path: frames, pooled buffers and camera sources.

pub mod file;
pub mod frame;
pub mod h264;
pub mod pipeline;
pub mod rtsp;
pub mod source;
pub mod synthetic;

pub use frame::{Frame, FrameMeta, FramePool, PooledFrame};
pub use synthetic::{BurnedIn, SyntheticSource, read_burned_in};
