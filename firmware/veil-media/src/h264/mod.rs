//! H.264: byte-stream helpers, and the software codec (openh264) behind the encoder trait.

pub mod annexb;
mod openh264;
mod v4l2m2m;

pub use self::openh264::{Openh264Decoder, Openh264Encoder};
pub use self::v4l2m2m::{PlaneLayout, V4l2M2mEncoder};

use std::sync::Arc;
use std::time::Duration;

use veil_core::Error;

use crate::frame::{Frame, FrameMeta};

/// Encoder settings common to every implementation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSettings {
    pub width: u32,
    pub height: u32,
    pub fps: f32,
    pub bitrate_bps: u32,
    /// Frames from one keyframe to the next (a GOP).
    pub keyframe_interval: u32,
    /// Encoder threads (openh264 slices); 1 keeps latency and CPU lowest.
    pub threads: u16,
}

impl EncoderSettings {
    /// Encoders are set up for one size; a frame of another size is refused, not rescaled.
    pub fn check_frame(&self, frame: &Frame) -> Result<(), Error> {
        if (frame.width(), frame.height()) == (self.width, self.height) {
            return Ok(());
        }
        Err(Error::invalid_input(format!(
            "frame is {}x{}, the encoder was set up for {}x{}",
            frame.width(),
            frame.height(),
            self.width,
            self.height
        )))
    }

    /// Sensible defaults for a surveillance stream of this size: ~0.1 bit per pixel at the rate,
    /// a keyframe every 2 seconds.
    pub fn for_stream(width: u32, height: u32, fps: u32) -> Self {
        let pixels_per_s = width as u64 * height as u64 * fps.max(1) as u64;
        EncoderSettings {
            width,
            height,
            fps: fps.max(1) as f32,
            bitrate_bps: (pixels_per_s / 10).clamp(250_000, 16_000_000) as u32,
            keyframe_interval: (fps * 2).max(1),
            threads: 1,
        }
    }
}

/// One encoded picture: an Annex-B access unit with its capture metadata. Shared by `Arc` so
/// any number of consumers (store, live sessions, preview) read it without a copy.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Arc<[u8]>,
    pub keyframe: bool,
    pub meta: FrameMeta,
    pub width: u32,
    pub height: u32,
    /// Wall time the encoder spent on this picture.
    pub encode_time: Duration,
}

/// Turns raw frames into H.264.
pub trait VideoEncoder: Send {
    /// Encodes one frame; `None` when the rate control chose to skip it.
    fn encode(
        &mut self,
        frame: &Frame,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame>, Error>;
    fn name(&self) -> &'static str;
}
