//! The media path: frames, pooled buffers and camera sources.

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
