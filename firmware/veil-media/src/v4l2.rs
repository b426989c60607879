//! USB and CSI cameras through V4L2 (the `v4l` crate): memory-mapped capture of uncompressed
//! frames, converted to I420. Capture needs a device, so it is exercised by `hw-tests/` on a
//! board; format choice and conversions are tested here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use v4l::buffer::Type;
use v4l::io::mmap::Stream as MmapStream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::video::capture::Parameters;
use v4l::{Device, Format, FourCC};
use veil_core::{Clock, Error, ErrorKind};

use crate::convert::{self, PixelFormat};
use crate::frame::{FrameMeta, FramePool, PooledFrame};
use crate::source::Source;

#[derive(Debug, Clone)]
pub struct V4l2Options {
    pub device: PathBuf,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// Picks the pixel format to ask for, best first: NV12 and I420 convert by copying, YUYV needs
/// chroma averaging, MJPEG a JPEG decode per frame (but is the only 1080p30 mode of many USB
/// webcams). H.264-only cameras are not supported.
pub fn choose_format(offered: &[[u8; 4]]) -> Result<PixelFormat, String> {
    for want in [
        PixelFormat::Nv12,
        PixelFormat::I420,
        PixelFormat::Yuyv,
        PixelFormat::Mjpeg,
    ] {
        if offered
            .iter()
            .any(|f| PixelFormat::from_fourcc(f) == Some(want))
        {
            return Ok(want);
        }
    }
    let names: Vec<String> = offered
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    Err(format!(
        "offers only {}: Veil reads NV12, YU12, YUYV or MJPG",
        if names.is_empty() {
            "no formats".to_string()
        } else {
            names.join(", ")
        }
    ))
}

fn fourcc_of(format: PixelFormat) -> [u8; 4] {
    match format {
        PixelFormat::Nv12 => *b"NV12",
        PixelFormat::I420 => *b"YU12",
        PixelFormat::Yuyv => *b"YUYV",
        PixelFormat::Mjpeg => *b"MJPG",
    }
}

pub struct V4l2Source {
    // The stream's buffers are mapped from the device: the stream goes first.
    stream: MmapStream<'static>,
    _device: Device,
    path: PathBuf,
    format: PixelFormat,
    stride: usize,
    pool: FramePool,
    clock: Arc<dyn Clock>,
    fps: u32,
    first_sequence: Option<u32>,
    /// MJPEG decoding space, reused frame to frame.
    scratch: Vec<u8>,
}

fn device_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    // EACCES is the file's mode (group video); EPERM is the service's device policy (the
    // device cgroup of DeviceAllow) or a security module, which group membership cannot fix.
    let (kind, hint) = match (e.kind(), e.raw_os_error()) {
        (std::io::ErrorKind::NotFound, _) => (ErrorKind::NotFound, " (is the camera plugged in?)"),
        (_, Some(libc::EPERM)) => (
            ErrorKind::PermissionDenied,
            " (refused by the service's device policy: is the video4linux driver loaded before \
             veild starts, and DeviceAllow=char-video4linux in its unit?)",
        ),
        (std::io::ErrorKind::PermissionDenied, _) => (
            ErrorKind::PermissionDenied,
            " (the veil user needs the video group)",
        ),
        _ => (ErrorKind::Unavailable, ""),
    };
    Error::new(kind, format!("{}: {what}: {e}{hint}", path.display()))
}

impl V4l2Source {
    pub fn open(options: &V4l2Options, clock: Arc<dyn Clock>) -> Result<V4l2Source, Error> {
        let path = &options.device;
        let device = Device::with_path(path).map_err(|e| device_error(path, "cannot open", e))?;
        let caps = device
            .query_caps()
            .map_err(|e| device_error(path, "not a V4L2 device", e))?;
        if !caps
            .capabilities
            .contains(v4l::capability::Flags::VIDEO_CAPTURE)
        {
            return Err(Error::invalid_input(format!(
                "{}: {} is not a single-planar capture device (a codec or metadata node?)",
                path.display(),
                caps.card
            )));
        }
        let offered: Vec<[u8; 4]> = device
            .enum_formats()
            .map_err(|e| device_error(path, "cannot list formats", e))?
            .iter()
            .map(|d| d.fourcc.repr)
            .collect();
        let format = choose_format(&offered)
            .map_err(|e| Error::invalid_input(format!("{}: {e}", path.display())))?;
        let wanted = Format::new(
            options.width,
            options.height,
            FourCC::new(&fourcc_of(format)),
        );
        let got = device
            .set_format(&wanted)
            .map_err(|e| device_error(path, "cannot set the format", e))?;
        if PixelFormat::from_fourcc(&got.fourcc.repr) != Some(format)
            || got.width % 2 != 0
            || got.height % 2 != 0
        {
            return Err(Error::invalid_input(format!(
                "{}: asked for {}x{} {}, the driver gave {}x{} {}",
                path.display(),
                options.width,
                options.height,
                String::from_utf8_lossy(&fourcc_of(format)),
                got.width,
                got.height,
                got.fourcc
            )));
        }
        let params = device
            .set_params(&Parameters::with_fps(options.fps.max(1)))
            .map_err(|e| device_error(path, "cannot set the frame rate", e))?;
        let fps = if params.interval.numerator > 0 {
            (params.interval.denominator as f64 / params.interval.numerator as f64).round() as u32
        } else {
            options.fps
        };
        let mut stream = MmapStream::with_buffers(&device, Type::VideoCapture, 4)
            .map_err(|e| device_error(path, "cannot map capture buffers", e))?;
        stream.set_timeout(Duration::from_secs(5));
        Ok(V4l2Source {
            stream,
            _device: device,
            path: path.clone(),
            format,
            stride: got.stride as usize,
            pool: FramePool::new(got.width, got.height),
            clock,
            fps: fps.clamp(1, 120),
            first_sequence: None,
            scratch: Vec::new(),
        })
    }
}

impl Source for V4l2Source {
    fn next_frame(&mut self) -> Result<Option<PooledFrame>, Error> {
        let (buf, meta) = self
            .stream
            .next()
            .map_err(|e| device_error(&self.path, "capture failed", e))?;
        let used = (meta.bytesused as usize).min(buf.len());
        let mut frame = self.pool.get();
        let converted = match self.format {
            PixelFormat::Mjpeg => {
                convert::mjpeg_to_i420(&buf[..used], &mut self.scratch, &mut frame)
            }
            format => convert::to_i420(format, &buf[..used], self.stride, &mut frame),
        };
        converted.map_err(|e| e.context(self.path.display().to_string()))?;
        // The driver's sequence counts frames it had to drop: gaps become drop counts.
        let first = *self.first_sequence.get_or_insert(meta.sequence);
        frame.meta =
            FrameMeta::captured_now(u64::from(meta.sequence.wrapping_sub(first)), &*self.clock);
        Ok(Some(frame))
    }

    fn fps(&self) -> u32 {
        self.fps
    }
}

#[cfg(test)]
mod tests {
    use veil_core::SystemClock;

    use super::*;

    #[test]
    fn a_refused_device_says_which_refusal_it_is() {
        let path = Path::new("/dev/video0");
        let policy = device_error(
            path,
            "cannot open",
            std::io::Error::from_raw_os_error(libc::EPERM),
        );
        assert!(policy.to_string().contains("device policy"), "{policy}");
        let mode = device_error(
            path,
            "cannot open",
            std::io::Error::from_raw_os_error(libc::EACCES),
        );
        assert!(mode.to_string().contains("video group"), "{mode}");
        let gone = device_error(
            path,
            "cannot open",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert!(gone.to_string().contains("plugged in"), "{gone}");
    }

    #[test]
    fn prefers_formats_that_convert_cheaply() {
        assert_eq!(
            choose_format(&[*b"YUYV", *b"MJPG", *b"NV12"]),
            Ok(PixelFormat::Nv12)
        );
        assert_eq!(choose_format(&[*b"MJPG", *b"YUYV"]), Ok(PixelFormat::Yuyv));
        assert_eq!(choose_format(&[*b"MJPG", *b"H264"]), Ok(PixelFormat::Mjpeg));
        let e = choose_format(&[*b"H264", *b"HEVC"]).unwrap_err();
        assert!(e.contains("offers only H264, HEVC"), "{e}");
        assert!(choose_format(&[]).unwrap_err().contains("no formats"));
    }

    fn options(device: &str) -> V4l2Options {
        V4l2Options {
            device: device.into(),
            width: 640,
            height: 480,
            fps: 15,
        }
    }

    #[test]
    fn a_missing_device_says_so() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let e = V4l2Source::open(&options("/dev/video-veil-missing"), clock)
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().contains("is the camera plugged in?"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_a_camera_is_refused() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let e = V4l2Source::open(&options("/dev/null"), clock)
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("/dev/null: not a V4L2 device"),
            "{e}"
        );
    }
}
