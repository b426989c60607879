//! Hardware H.264 through a V4L2 memory-to-memory encoder (multi-planar API): the Raspberry
//! Pi 4's bcm2835-codec (`/dev/video11`), Hantro/VC8000E on i.MX 8M Plus.
//!
//! Raw frames go into the OUTPUT queue, H.264 comes out of the CAPTURE queue. Buffers are
//! mmap'ed once; each input carries its index in the buffer timestamp, which the driver copies
//! to the matching output, so capture metadata survives the encoder's internal pipelining.
//! This needs a device: here it is compiled and its pure parts tested; `hw-tests/` runs it.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::os::raw::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use v4l::v4l_sys::{
    V4L2_BUF_FLAG_KEYFRAME, V4L2_CAP_VIDEO_M2M_MPLANE, V4L2_CID_MPEG_VIDEO_BITRATE,
    V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, V4L2_CID_MPEG_VIDEO_GOP_SIZE,
    V4L2_CID_MPEG_VIDEO_H264_I_PERIOD, V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, v4l2_buffer,
    v4l2_capability, v4l2_control, v4l2_format, v4l2_pix_format_mplane, v4l2_plane,
    v4l2_requestbuffers,
};
use v4l::v4l2::{self, vidioc};
use veil_core::{Error, ErrorKind};

use super::{EncodedFrame, EncoderSettings, VideoEncoder, annexb};
use crate::frame::{Frame, FrameMeta};

const CAPTURE_MPLANE: u32 = 9;
const OUTPUT_MPLANE: u32 = 10;
const MEMORY_MMAP: u32 = 1;
const BUFFERS: u32 = 4;
/// How long to wait for the encoder before calling it stuck.
const WAIT: Duration = Duration::from_secs(2);

fn fourcc(code: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*code)
}

/// Where I420 planes go in a single-plane YU12 buffer whose lines are `stride` bytes and whose
/// height may be padded to `aligned_height` (encoders often want multiples of 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneLayout {
    pub stride: usize,
    pub aligned_height: usize,
}

impl PlaneLayout {
    pub fn size(&self) -> usize {
        self.stride * self.aligned_height * 3 / 2
    }

    /// Copies `frame` into `dst` in this layout.
    pub fn pack(&self, frame: &Frame, dst: &mut [u8]) -> Result<usize, Error> {
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        if self.stride < w || self.aligned_height < h || dst.len() < self.size() {
            return Err(Error::invalid_input(format!(
                "a {w}x{h} frame does not fit the encoder's buffer (stride {}, height {}, {} bytes)",
                self.stride,
                self.aligned_height,
                dst.len()
            )));
        }
        let (s, ah) = (self.stride, self.aligned_height);
        let (y, u, v) = (frame.y(), frame.u(), frame.v());
        for row in 0..h {
            dst[row * s..row * s + w].copy_from_slice(&y[row * w..(row + 1) * w]);
        }
        let (cs, cw) = (s / 2, w / 2);
        let (u_at, v_at) = (s * ah, s * ah + cs * ah / 2);
        for row in 0..h / 2 {
            dst[u_at + row * cs..u_at + row * cs + cw]
                .copy_from_slice(&u[row * cw..(row + 1) * cw]);
            dst[v_at + row * cs..v_at + row * cs + cw]
                .copy_from_slice(&v[row * cw..(row + 1) * cw]);
        }
        Ok(self.size())
    }
}

struct Mapping {
    ptr: *mut c_void,
    len: usize,
}

// The mappings belong to this encoder's device and are only touched by its owner.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len come from a successful mmap and are unmapped once.
        let _ = unsafe { v4l2::munmap(self.ptr, self.len) };
    }
}

pub struct V4l2M2mEncoder {
    // Mappings drop (munmap) before the device closes.
    output: Vec<Mapping>,
    capture: Vec<Mapping>,
    device: v4l::Device,
    path: PathBuf,
    layout: PlaneLayout,
    settings: EncoderSettings,
    free_outputs: VecDeque<u32>,
    /// Metadata of frames inside the encoder, by output buffer index.
    in_flight: Vec<Option<(FrameMeta, Instant)>>,
    streaming: bool,
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("{}: {what}: {e}", path.display()),
    )
}

impl V4l2M2mEncoder {
    pub fn open(path: &Path, settings: EncoderSettings) -> Result<Self, Error> {
        let device = v4l::Device::with_path(path)
            .map_err(|e| io_error(path, "cannot open the encoder", e))?;
        let fd = device.handle().fd();
        // SAFETY (this block and the ioctls below): each ioctl gets a pointer to a properly
        // sized, zero-initialised struct of the type its request code names, valid for the call.
        let mut cap: v4l2_capability = unsafe { std::mem::zeroed() };
        unsafe { v4l2::ioctl(fd, vidioc::VIDIOC_QUERYCAP, (&raw mut cap).cast()) }
            .map_err(|e| io_error(path, "not a V4L2 device", e))?;
        let caps = if cap.capabilities & 0x8000_0000 != 0 {
            cap.device_caps
        } else {
            cap.capabilities
        };
        if caps & V4L2_CAP_VIDEO_M2M_MPLANE == 0 {
            return Err(Error::invalid_input(format!(
                "{}: not a multi-planar memory-to-memory device (is this the encoder node?)",
                path.display()
            )));
        }
        let (w, h) = (settings.width, settings.height);
        // Raw side: one-plane YU12.
        let raw = set_format(fd, OUTPUT_MPLANE, w, h, b"YU12", w, w * h * 3 / 2)
            .map_err(|e| io_error(path, "the encoder refuses YU12 input", e))?;
        let (got_w, got_h, stride) = (raw.width, raw.height, raw.plane_fmt[0].bytesperline);
        if got_w != w || got_h < h || (stride as usize) < w as usize {
            return Err(Error::invalid_input(format!(
                "{}: asked for {w}x{h} input, the encoder offers {got_w}x{got_h} (stride {stride})",
                path.display()
            )));
        }
        let layout = PlaneLayout {
            stride: stride as usize,
            aligned_height: got_h as usize,
        };
        // Coded side: H.264.
        set_format(
            fd,
            CAPTURE_MPLANE,
            w,
            h,
            b"H264",
            0,
            (w * h).max(512 * 1024),
        )
        .map_err(|e| io_error(path, "the encoder refuses H.264 output", e))?;

        // Controls a driver lacks are not fatal: the stream still encodes.
        for (id, value) in [
            (V4L2_CID_MPEG_VIDEO_BITRATE, settings.bitrate_bps as i32),
            (
                V4L2_CID_MPEG_VIDEO_H264_I_PERIOD,
                settings.keyframe_interval as i32,
            ),
            (
                V4L2_CID_MPEG_VIDEO_GOP_SIZE,
                settings.keyframe_interval as i32,
            ),
            (V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, 1),
        ] {
            if let Err(e) = set_control(fd, id, value) {
                tracing::debug!(device = %path.display(), control = id, error = %e, "encoder control not set");
            }
        }

        let output = map_buffers(fd, path, OUTPUT_MPLANE)?;
        let capture = map_buffers(fd, path, CAPTURE_MPLANE)?;
        let mut encoder = V4l2M2mEncoder {
            free_outputs: (0..output.len() as u32).collect(),
            in_flight: vec![None; output.len()],
            output,
            capture,
            device,
            path: path.to_path_buf(),
            layout,
            settings,
            streaming: false,
        };
        for i in 0..encoder.capture.len() as u32 {
            encoder.queue_capture(i)?;
        }
        for typ in [OUTPUT_MPLANE, CAPTURE_MPLANE] {
            let mut t = typ;
            unsafe { v4l2::ioctl(fd, vidioc::VIDIOC_STREAMON, (&raw mut t).cast()) }
                .map_err(|e| io_error(path, "cannot start streaming", e))?;
        }
        encoder.streaming = true;
        Ok(encoder)
    }

    fn fd(&self) -> i32 {
        self.device.handle().fd()
    }

    fn queue_capture(&self, index: u32) -> Result<(), Error> {
        let mut planes: [v4l2_plane; 1] = unsafe { std::mem::zeroed() };
        planes[0].length = self.capture[index as usize].len as u32;
        let mut buf = buffer(CAPTURE_MPLANE, index, &mut planes);
        unsafe { v4l2::ioctl(self.fd(), vidioc::VIDIOC_QBUF, (&raw mut buf).cast()) }
            .map_err(|e| io_error(&self.path, "cannot queue an output buffer", e))
    }

    /// Takes back raw buffers the encoder has finished reading, without waiting.
    fn reclaim_outputs(&mut self) {
        while self.device.handle().poll(libc::POLLOUT, 0).unwrap_or(0) > 0 {
            let mut planes: [v4l2_plane; 1] = unsafe { std::mem::zeroed() };
            let mut buf = buffer(OUTPUT_MPLANE, 0, &mut planes);
            if unsafe { v4l2::ioctl(self.fd(), vidioc::VIDIOC_DQBUF, (&raw mut buf).cast()) }
                .is_err()
            {
                break;
            }
            self.free_outputs.push_back(buf.index);
        }
    }

    fn wait(&self, events: i16) -> Result<(), Error> {
        match self.device.handle().poll(events, WAIT.as_millis() as i32) {
            Ok(n) if n > 0 => Ok(()),
            Ok(_) => Err(Error::new(
                ErrorKind::DeadlineExceeded,
                format!(
                    "{}: the encoder did not answer within {WAIT:?}",
                    self.path.display()
                ),
            )),
            Err(e) => Err(io_error(&self.path, "poll", e)),
        }
    }
}

/// A buffer descriptor pointing at `planes`; fill the planes before calling, and read them
/// only after the ioctl that uses the descriptor.
fn buffer(typ: u32, index: u32, planes: &mut [v4l2_plane; 1]) -> v4l2_buffer {
    let mut buf: v4l2_buffer = unsafe { std::mem::zeroed() };
    buf.type_ = typ;
    buf.memory = MEMORY_MMAP;
    buf.index = index;
    buf.length = 1;
    buf.m.planes = planes.as_mut_ptr();
    buf
}

/// VIDIOC_S_FMT for a one-plane multi-planar queue; returns what the driver settled on.
fn set_format(
    fd: i32,
    typ: u32,
    width: u32,
    height: u32,
    code: &[u8; 4],
    bytesperline: u32,
    sizeimage: u32,
) -> std::io::Result<v4l2_pix_format_mplane> {
    let mut fmt: v4l2_format = unsafe { std::mem::zeroed() };
    fmt.type_ = typ;
    // SAFETY: `pix_mp` is the union member for multi-planar types; the struct is zeroed and
    // sized for the S_FMT request.
    unsafe {
        fmt.fmt.pix_mp.width = width;
        fmt.fmt.pix_mp.height = height;
        fmt.fmt.pix_mp.pixelformat = fourcc(code);
        fmt.fmt.pix_mp.num_planes = 1;
        fmt.fmt.pix_mp.plane_fmt[0].bytesperline = bytesperline;
        fmt.fmt.pix_mp.plane_fmt[0].sizeimage = sizeimage;
        v4l2::ioctl(fd, vidioc::VIDIOC_S_FMT, (&raw mut fmt).cast())?;
        Ok(fmt.fmt.pix_mp)
    }
}

fn set_control(fd: i32, id: u32, value: i32) -> std::io::Result<()> {
    let mut ctrl = v4l2_control { id, value };
    unsafe { v4l2::ioctl(fd, vidioc::VIDIOC_S_CTRL, (&raw mut ctrl).cast()) }
}

fn map_buffers(fd: i32, path: &Path, typ: u32) -> Result<Vec<Mapping>, Error> {
    let mut req: v4l2_requestbuffers = unsafe { std::mem::zeroed() };
    req.count = BUFFERS;
    req.type_ = typ;
    req.memory = MEMORY_MMAP;
    unsafe { v4l2::ioctl(fd, vidioc::VIDIOC_REQBUFS, (&raw mut req).cast()) }
        .map_err(|e| io_error(path, "cannot allocate encoder buffers", e))?;
    let mut maps = Vec::new();
    for index in 0..req.count {
        let mut planes: [v4l2_plane; 1] = unsafe { std::mem::zeroed() };
        let mut buf = buffer(typ, index, &mut planes);
        unsafe { v4l2::ioctl(fd, vidioc::VIDIOC_QUERYBUF, (&raw mut buf).cast()) }
            .map_err(|e| io_error(path, "cannot query an encoder buffer", e))?;
        let (len, offset) = (planes[0].length as usize, unsafe { planes[0].m.mem_offset });
        let ptr = unsafe {
            v4l2::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        }
        .map_err(|e| io_error(path, "cannot map an encoder buffer", e))?;
        maps.push(Mapping { ptr, len });
    }
    Ok(maps)
}

impl VideoEncoder for V4l2M2mEncoder {
    fn encode(
        &mut self,
        frame: &Frame,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame>, Error> {
        self.settings.check_frame(frame)?;
        if force_keyframe {
            let _ = set_control(self.fd(), V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1);
        }
        self.reclaim_outputs();
        if self.free_outputs.is_empty() {
            self.wait(libc::POLLOUT)?;
            self.reclaim_outputs();
        }
        let index = self.free_outputs.pop_front().ok_or_else(|| {
            Error::new(
                ErrorKind::DeadlineExceeded,
                format!("{}: no free input buffer", self.path.display()),
            )
        })?;
        let map = &self.output[index as usize];
        // SAFETY: the mapping is `len` bytes of shared memory owned by this buffer, which the
        // driver does not touch while the buffer is dequeued (it is: we hold it).
        let dst = unsafe { std::slice::from_raw_parts_mut(map.ptr.cast::<u8>(), map.len) };
        let used = self.layout.pack(frame, dst)?;
        let mut planes: [v4l2_plane; 1] = unsafe { std::mem::zeroed() };
        planes[0].bytesused = used as u32;
        planes[0].length = map.len as u32;
        let mut buf = buffer(OUTPUT_MPLANE, index, &mut planes);
        // The index rides in the timestamp; the driver copies it to the coded buffer.
        buf.timestamp.tv_sec = index as libc::time_t;
        self.in_flight[index as usize] = Some((frame.meta, Instant::now()));
        unsafe { v4l2::ioctl(self.fd(), vidioc::VIDIOC_QBUF, (&raw mut buf).cast()) }
            .map_err(|e| io_error(&self.path, "cannot queue a frame", e))?;

        self.wait(libc::POLLIN)?;
        let mut planes: [v4l2_plane; 1] = unsafe { std::mem::zeroed() };
        let mut out = buffer(CAPTURE_MPLANE, 0, &mut planes);
        unsafe { v4l2::ioctl(self.fd(), vidioc::VIDIOC_DQBUF, (&raw mut out).cast()) }
            .map_err(|e| io_error(&self.path, "cannot take coded data", e))?;
        let cap = &self.capture[out.index as usize];
        let (offset, end) = (
            planes[0].data_offset as usize,
            (planes[0].bytesused as usize).min(cap.len),
        );
        // SAFETY: as above, for the dequeued capture buffer.
        let coded = unsafe { std::slice::from_raw_parts(cap.ptr.cast::<u8>(), cap.len) };
        let data: Arc<[u8]> = Arc::from(&coded[offset.min(end)..end]);
        let keyframe = out.flags & V4L2_BUF_FLAG_KEYFRAME != 0 || annexb::is_keyframe(&data);
        let source = (out.timestamp.tv_sec as usize).min(self.in_flight.len() - 1);
        let (meta, started) = self.in_flight[source]
            .take()
            .unwrap_or((frame.meta, Instant::now()));
        self.queue_capture(out.index)?;
        if data.is_empty() {
            return Ok(None);
        }
        Ok(Some(EncodedFrame {
            data,
            keyframe,
            meta,
            width: self.settings.width,
            height: self.settings.height,
            encode_time: started.elapsed(),
        }))
    }

    fn name(&self) -> &'static str {
        "v4l2m2m"
    }
}

impl Drop for V4l2M2mEncoder {
    fn drop(&mut self) {
        if self.streaming {
            for typ in [OUTPUT_MPLANE, CAPTURE_MPLANE] {
                let mut t = typ;
                let _ = unsafe {
                    v4l2::ioctl(self.fd(), vidioc::VIDIOC_STREAMOFF, (&raw mut t).cast())
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;

    #[test]
    fn packs_i420_into_a_padded_buffer() {
        let mut f = Frame::new(4, 2);
        let (y, u, v) = f.planes_mut();
        y.copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        u.copy_from_slice(&[9, 10]);
        v.copy_from_slice(&[11, 12]);
        let layout = PlaneLayout {
            stride: 8,
            aligned_height: 4,
        };
        let mut dst = vec![0u8; layout.size()];
        assert_eq!(layout.pack(&f, &mut dst).unwrap(), 48);
        assert_eq!(&dst[..4], &[1, 2, 3, 4]);
        assert_eq!(&dst[8..12], &[5, 6, 7, 8]);
        assert_eq!(&dst[32..34], &[9, 10], "U starts after the padded luma");
        assert_eq!(&dst[40..42], &[11, 12], "V after the padded U");
    }

    #[test]
    fn refuses_a_buffer_that_is_too_small() {
        let layout = PlaneLayout {
            stride: 2,
            aligned_height: 2,
        };
        let e = layout.pack(&Frame::new(4, 2), &mut [0u8; 64]).unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
    }

    #[test]
    fn fourcc_codes_match_v4l2() {
        assert_eq!(fourcc(b"H264"), 0x3436_3248);
        assert_eq!(fourcc(b"YU12"), 0x3231_5559);
    }

    #[test]
    fn non_devices_are_refused_with_a_clear_error() {
        let s = EncoderSettings::for_stream(640, 480, 15);
        let e = V4l2M2mEncoder::open(Path::new("/dev/video-veil-missing"), s)
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("/dev/video-veil-missing: cannot open the encoder"),
            "{e}"
        );
        let e = V4l2M2mEncoder::open(Path::new("/dev/null"), s)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("/dev/null: not a V4L2 device"),
            "{e}"
        );
    }
}
