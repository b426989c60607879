//! openh264 (Cisco's BSD-licensed codec, built from bundled source) as encoder and decoder.

use std::sync::Arc;
use std::time::Instant;

use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, RateControlMode,
    SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSource;
use veil_core::{Error, ErrorKind};

use super::{EncodedFrame, EncoderSettings, VideoEncoder};
use crate::frame::{Frame, FramePool, PooledFrame};

/// Borrows a frame as openh264's YUV input.
struct I420Ref<'a>(&'a Frame);

impl YUVSource for I420Ref<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.0.width() as usize, self.0.height() as usize)
    }
    fn strides(&self) -> (usize, usize, usize) {
        let w = self.0.width() as usize;
        (w, w / 2, w / 2)
    }
    fn y(&self) -> &[u8] {
        self.0.y()
    }
    fn u(&self) -> &[u8] {
        self.0.u()
    }
    fn v(&self) -> &[u8] {
        self.0.v()
    }
}

pub struct Openh264Encoder {
    encoder: Encoder,
    settings: EncoderSettings,
    out: Vec<u8>,
}

impl Openh264Encoder {
    pub fn new(settings: EncoderSettings) -> Result<Self, Error> {
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(settings.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(settings.fps))
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                settings.keyframe_interval,
            ))
            // Evidence needs every frame; a skipped frame would be a gap in the footage.
            .skip_frames(false)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .num_threads(settings.threads);
        let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("openh264 encoder: {e}")))?;
        silence_before_init(&mut encoder);
        Ok(Openh264Encoder {
            encoder,
            settings,
            out: Vec::new(),
        })
    }
}

impl VideoEncoder for Openh264Encoder {
    fn encode(
        &mut self,
        frame: &Frame,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame>, Error> {
        self.settings.check_frame(frame)?;
        if force_keyframe {
            self.encoder.force_intra_frame();
        }
        let started = Instant::now();
        let stream = self
            .encoder
            .encode(&I420Ref(frame))
            .map_err(|e| Error::new(ErrorKind::Internal, format!("openh264 encode: {e}")))?;
        let frame_type = stream.frame_type();
        if matches!(frame_type, FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        self.out.clear();
        stream.write_vec(&mut self.out);
        Ok(Some(EncodedFrame {
            data: Arc::from(self.out.as_slice()),
            keyframe: frame_type == FrameType::IDR,
            meta: frame.meta,
            width: frame.width(),
            height: frame.height(),
            encode_time: started.elapsed(),
        }))
    }

    fn name(&self) -> &'static str {
        "openh264"
    }
}

/// openh264 prints a warning to stderr while it initialises (frame skipping is off on purpose:
/// evidence must not have holes), before the crate applies its quiet trace level. Raw text on
/// stderr breaks JSON logs, so quiet it first; openh264 accepts this option before init.
#[allow(unsafe_code)]
fn silence_before_init(encoder: &mut Encoder) {
    let mut level = openh264_sys2::WELS_LOG_QUIET as std::ffi::c_int;
    // SAFETY: TRACE_LEVEL reads one int through the pointer during the call only; the
    // encoder handle is valid for the life of `encoder`.
    unsafe {
        encoder.raw_api().set_option(
            openh264_sys2::ENCODER_OPTION_TRACE_LEVEL,
            (&raw mut level).cast(),
        );
    }
}

/// Decodes Annex-B access units into pooled I420 frames.
pub struct Openh264Decoder {
    decoder: Decoder,
    pool: Option<FramePool>,
}

impl Openh264Decoder {
    pub fn new() -> Result<Self, Error> {
        // Flushing after every unit breaks streams with B-frames (most IP cameras' main and high
        // profiles): pictures come out in display order as the decoder releases them.
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("openh264 decoder: {e}")))?;
        Ok(Openh264Decoder {
            decoder,
            pool: None,
        })
    }

    /// Decodes one access unit (or any run of NAL units); `None` while the decoder has no
    /// picture yet (parameter sets alone, or waiting for a keyframe).
    pub fn decode(&mut self, annexb: &[u8]) -> Result<Option<PooledFrame>, Error> {
        let decoded = self
            .decoder
            .decode(annexb)
            .map_err(|e| Error::invalid_input(format!("H.264 stream does not decode: {e}")))?;
        let Some(yuv) = decoded else { return Ok(None) };
        Ok(copy_picture(&mut self.pool, &yuv))
    }

    /// The pictures still held for reordering, at the end of a stream.
    pub fn flush(&mut self) -> Result<Vec<PooledFrame>, Error> {
        let pictures = self
            .decoder
            .flush_remaining()
            .map_err(|e| Error::invalid_input(format!("H.264 stream does not decode: {e}")))?;
        Ok(pictures
            .iter()
            .filter_map(|yuv| copy_picture(&mut self.pool, yuv))
            .collect())
    }
}

fn copy_picture(pool: &mut Option<FramePool>, yuv: &impl YUVSource) -> Option<PooledFrame> {
    let (w, h) = yuv.dimensions();
    let (w, h) = (w as u32 & !1, h as u32 & !1);
    if w == 0 || h == 0 {
        return None;
    }
    let pool = match pool {
        Some(p) if p.size() == (w, h) => p,
        _ => pool.insert(FramePool::new(w, h)),
    };
    let mut frame = pool.get();
    let (ys, us, vs) = yuv.strides();
    let (y, u, v) = frame.planes_mut();
    copy_plane(yuv.y(), ys, y, w as usize, h as usize);
    copy_plane(yuv.u(), us, u, w as usize / 2, h as usize / 2);
    copy_plane(yuv.v(), vs, v, w as usize / 2, h as usize / 2);
    Some(frame)
}

fn copy_plane(src: &[u8], stride: usize, dst: &mut [u8], width: usize, height: usize) {
    for (row, out) in dst.chunks_exact_mut(width).take(height).enumerate() {
        out.copy_from_slice(&src[row * stride..row * stride + width]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameMeta;
    use crate::h264::annexb;
    use crate::synthetic::{SyntheticSource, read_burned_in};

    #[test]
    fn encodes_and_decodes_the_synthetic_pattern_keeping_its_code() {
        let (w, h) = (320, 240);
        let src = SyntheticSource::new(w, h);
        let mut enc = Openh264Encoder::new(EncoderSettings::for_stream(w, h, 30)).unwrap();
        let mut dec = Openh264Decoder::new().unwrap();
        let mut frame = Frame::new(w, h);
        let mut keyframes = Vec::new();
        for seq in 0..70u64 {
            let meta = FrameMeta {
                seq,
                capture_wall_ms: 1_700_000_000_000 + seq * 33,
                ..Default::default()
            };
            src.render(&mut frame, meta);
            let au = enc
                .encode(&frame, seq == 45)
                .unwrap()
                .expect("no skipped frames");
            assert_eq!(au.keyframe, annexb::is_keyframe(&au.data));
            if au.keyframe {
                keyframes.push(seq);
            }
            let out = dec
                .decode(&au.data)
                .unwrap()
                .expect("a picture per access unit");
            assert_eq!((out.width(), out.height()), (w, h));
            let code = read_burned_in(out.y(), w, h).expect("code survives H.264");
            assert_eq!(code.seq, seq as u32);
            assert_eq!(code.wall_ms, meta.capture_wall_ms);
        }
        // The first frame, and the forced one at 45 (which restarts the 60-frame GOP).
        assert_eq!(keyframes, [0, 45]);
    }

    #[test]
    fn garbage_is_an_error_not_a_crash() {
        let mut dec = Openh264Decoder::new().unwrap();
        let mut junk = vec![0, 0, 0, 1, 0x65];
        junk.extend((0..4000u32).map(|i| (i * 7919 % 251) as u8));
        // openh264 may report an error or conceal; it must not panic or produce a bogus size.
        if let Ok(Some(f)) = dec.decode(&junk) {
            assert!(f.width() > 0 && f.height() > 0);
        }
    }

    #[test]
    fn wrong_frame_size_is_refused() {
        let mut enc = Openh264Encoder::new(EncoderSettings::for_stream(320, 240, 30)).unwrap();
        let err = enc.encode(&Frame::new(640, 480), false).unwrap_err();
        assert!(err.to_string().contains("640x480"));
    }
}
