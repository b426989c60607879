//! Pixel format conversions to I420, for V4L2 cameras that deliver YUYV (most USB webcams)
//! or NV12 (CSI sensors through an ISP, hardware decoders).

use veil_core::Error;

use crate::frame::Frame;

/// Pixel formats a V4L2 camera may deliver, by their V4L2 FourCC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Packed 4:2:2, Y0 U Y1 V.
    Yuyv,
    /// Y plane, then interleaved U/V at quarter resolution.
    Nv12,
    /// Already I420.
    I420,
    /// Motion JPEG: one JPEG per frame (most USB webcams at 1080p).
    Mjpeg,
}

impl PixelFormat {
    pub fn from_fourcc(fourcc: &[u8; 4]) -> Option<PixelFormat> {
        match fourcc {
            b"YUYV" => Some(PixelFormat::Yuyv),
            b"NV12" => Some(PixelFormat::Nv12),
            b"YU12" => Some(PixelFormat::I420),
            b"MJPG" => Some(PixelFormat::Mjpeg),
            _ => None,
        }
    }

    /// Bytes of a tightly packed frame.
    pub fn frame_len(self, width: u32, height: u32) -> usize {
        let pixels = width as usize * height as usize;
        match self {
            PixelFormat::Yuyv => pixels * 2,
            PixelFormat::Nv12 | PixelFormat::I420 => pixels * 3 / 2,
            // Compressed: a frame is at most this, usually far less.
            PixelFormat::Mjpeg => pixels * 3,
        }
    }
}

/// Decodes one Motion-JPEG frame into `out` (same size), using `scratch` for the decoder's
/// full-resolution YCbCr so steady state allocates nothing.
pub fn mjpeg_to_i420(jpeg: &[u8], scratch: &mut Vec<u8>, out: &mut Frame) -> Result<(), Error> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    use zune_jpeg::JpegDecoder;

    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
    decoder
        .decode_headers()
        .map_err(|e| Error::invalid_input(format!("MJPEG frame does not decode: {e:?}")))?;
    let info = decoder
        .info()
        .ok_or_else(|| Error::invalid_input("MJPEG frame has no header"))?;
    let (w, h) = (out.width() as usize, out.height() as usize);
    if (info.width as usize, info.height as usize) != (w, h) {
        return Err(Error::invalid_input(format!(
            "MJPEG frame is {}x{}, the camera was set to {w}x{h}",
            info.width, info.height
        )));
    }
    scratch.resize(w * h * 3, 0);
    decoder
        .decode_into(scratch)
        .map_err(|e| Error::invalid_input(format!("MJPEG frame does not decode: {e:?}")))?;
    let (y, u, v) = out.planes_mut();
    for (dst, px) in y.iter_mut().zip(scratch.chunks_exact(3)) {
        *dst = px[0];
    }
    // 4:4:4 to 4:2:0: average each 2x2 block of chroma.
    for crow in 0..h / 2 {
        for ccol in 0..w / 2 {
            let at = |r: usize, c: usize| (r * w + c) * 3;
            let (a, b) = (at(2 * crow, 2 * ccol), at(2 * crow, 2 * ccol + 1));
            let (c, d) = (at(2 * crow + 1, 2 * ccol), at(2 * crow + 1, 2 * ccol + 1));
            let avg = |k: usize| {
                ((scratch[a + k] as u16
                    + scratch[b + k] as u16
                    + scratch[c + k] as u16
                    + scratch[d + k] as u16
                    + 2)
                    / 4) as u8
            };
            u[crow * w / 2 + ccol] = avg(1);
            v[crow * w / 2 + ccol] = avg(2);
        }
    }
    Ok(())
}

/// Converts one frame into `out` (sized width x height). `stride` is the source's bytes per
/// line (V4L2 `bytesperline`; 0 means tightly packed).
pub fn to_i420(
    format: PixelFormat,
    src: &[u8],
    stride: usize,
    out: &mut Frame,
) -> Result<(), Error> {
    let (w, h) = (out.width() as usize, out.height() as usize);
    let line = match format {
        PixelFormat::Yuyv => w * 2,
        PixelFormat::Nv12 | PixelFormat::I420 => w,
        PixelFormat::Mjpeg => {
            return Err(Error::invalid_input(
                "MJPEG frames are decoded with mjpeg_to_i420",
            ));
        }
    };
    let stride = if stride == 0 { line } else { stride };
    let need = match format {
        PixelFormat::Yuyv => stride * h,
        PixelFormat::Nv12 => stride * h + stride * h / 2,
        PixelFormat::I420 => stride * h + (stride / 2) * h,
        PixelFormat::Mjpeg => unreachable!("returned above"),
    };
    if stride < line || src.len() < need {
        return Err(Error::invalid_input(format!(
            "{format:?} frame of {} bytes (stride {stride}) is too short for {w}x{h}",
            src.len()
        )));
    }
    let (y, u, v) = out.planes_mut();
    match format {
        PixelFormat::Yuyv => {
            for row in 0..h {
                let s = &src[row * stride..row * stride + line];
                let yrow = &mut y[row * w..(row + 1) * w];
                for (dst, px) in yrow.chunks_exact_mut(2).zip(s.chunks_exact(4)) {
                    dst[0] = px[0];
                    dst[1] = px[2];
                }
            }
            // 4:2:2 to 4:2:0: average the chroma of each pair of lines.
            for crow in 0..h / 2 {
                let a = &src[2 * crow * stride..2 * crow * stride + line];
                let b = &src[(2 * crow + 1) * stride..(2 * crow + 1) * stride + line];
                for (col, (pa, pb)) in a.chunks_exact(4).zip(b.chunks_exact(4)).enumerate() {
                    u[crow * w / 2 + col] = (pa[1] as u16 + pb[1] as u16).div_ceil(2) as u8;
                    v[crow * w / 2 + col] = (pa[3] as u16 + pb[3] as u16).div_ceil(2) as u8;
                }
            }
        }
        PixelFormat::Nv12 => {
            for row in 0..h {
                y[row * w..(row + 1) * w].copy_from_slice(&src[row * stride..row * stride + w]);
            }
            let uv = &src[stride * h..];
            for crow in 0..h / 2 {
                let s = &uv[crow * stride..crow * stride + w];
                for (col, pair) in s.chunks_exact(2).enumerate() {
                    u[crow * w / 2 + col] = pair[0];
                    v[crow * w / 2 + col] = pair[1];
                }
            }
        }
        PixelFormat::Mjpeg => unreachable!("returned above"),
        PixelFormat::I420 => {
            for row in 0..h {
                y[row * w..(row + 1) * w].copy_from_slice(&src[row * stride..row * stride + w]);
            }
            let cs = stride / 2;
            let (us, vs) = (stride * h, stride * h + cs * h / 2);
            for crow in 0..h / 2 {
                u[crow * w / 2..(crow + 1) * w / 2]
                    .copy_from_slice(&src[us + crow * cs..us + crow * cs + w / 2]);
                v[crow * w / 2..(crow + 1) * w / 2]
                    .copy_from_slice(&src[vs + crow * cs..vs + crow * cs + w / 2]);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_becomes_i420_with_averaged_chroma() {
        // 4x2: line 0 U=10,V=20 / U=30,V=40; line 1 U=50,V=60 / U=70,V=80.
        let src = [
            1, 10, 2, 20, 3, 30, 4, 40, //
            5, 50, 6, 60, 7, 70, 8, 80,
        ];
        let mut f = Frame::new(4, 2);
        to_i420(PixelFormat::Yuyv, &src, 0, &mut f).unwrap();
        assert_eq!(f.y(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(f.u(), [30, 50]);
        assert_eq!(f.v(), [40, 60]);
    }

    #[test]
    fn nv12_deinterleaves_chroma_and_honours_the_stride() {
        // 2x2 picture in lines of 4 bytes (2 bytes of padding each).
        let src = [1, 2, 0xee, 0xee, 3, 4, 0xee, 0xee, 100, 200, 0xee, 0xee];
        let mut f = Frame::new(2, 2);
        to_i420(PixelFormat::Nv12, &src, 4, &mut f).unwrap();
        assert_eq!(f.y(), [1, 2, 3, 4]);
        assert_eq!((f.u(), f.v()), (&[100u8][..], &[200u8][..]));
    }

    #[test]
    fn short_buffers_are_refused() {
        let mut f = Frame::new(4, 4);
        let e = to_i420(PixelFormat::Yuyv, &[0; 16], 0, &mut f).unwrap_err();
        assert!(e.to_string().contains("too short for 4x4"), "{e}");
        assert!(
            to_i420(PixelFormat::Nv12, &[0; 24], 2, &mut f).is_err(),
            "stride below the width"
        );
    }

    #[test]
    fn mjpeg_frames_decode_and_keep_the_burned_in_code() {
        use crate::frame::FrameMeta;
        use crate::synthetic::{SyntheticSource, read_burned_in};
        let (w, h) = (640, 360);
        let mut f = Frame::new(w, h);
        SyntheticSource::new(w, h).render(
            &mut f,
            FrameMeta {
                seq: 321,
                capture_wall_ms: 99,
                ..Default::default()
            },
        );
        // A camera's MJPEG: encode the frame full size (thumbnail with a wide limit).
        let jpeg = crate::thumbnail::jpeg(&f, w, 90).unwrap();
        let mut out = Frame::new(w, h);
        let mut scratch = Vec::new();
        mjpeg_to_i420(&jpeg, &mut scratch, &mut out).unwrap();
        let code = read_burned_in(out.y(), w, h).expect("code survives MJPEG");
        assert_eq!((code.seq, code.wall_ms), (321, 99));
        let mean_diff: f64 = f
            .u()
            .iter()
            .zip(out.u())
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / f.u().len() as f64;
        assert!(mean_diff < 6.0, "chroma off by {mean_diff} on average");

        let e = mjpeg_to_i420(&jpeg, &mut scratch, &mut Frame::new(320, 240)).unwrap_err();
        assert!(e.to_string().contains("is 640x360"), "{e}");
        // A frame cut short (a USB hiccup) decodes what it has, or fails cleanly; never panics.
        if let Err(e) = mjpeg_to_i420(&jpeg[..jpeg.len() / 10], &mut scratch, &mut out) {
            assert!(e.to_string().contains("MJPEG"), "{e}");
        }
        assert!(mjpeg_to_i420(b"not a jpeg", &mut scratch, &mut out).is_err());
    }

    #[test]
    fn fourccs_map_to_formats() {
        assert_eq!(PixelFormat::from_fourcc(b"YUYV"), Some(PixelFormat::Yuyv));
        assert_eq!(PixelFormat::from_fourcc(b"NV12"), Some(PixelFormat::Nv12));
        assert_eq!(PixelFormat::from_fourcc(b"H264"), None);
        assert_eq!(PixelFormat::Yuyv.frame_len(640, 480), 614_400);
    }
}
