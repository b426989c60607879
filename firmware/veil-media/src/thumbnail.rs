//! JPEG snapshots of frames: camera thumbnails for the registry and the web page.

use jpeg_encoder::{ColorType, Encoder};
use veil_core::{Error, ErrorKind};

use crate::frame::Frame;

/// Encodes `frame` as a JPEG at most `max_width` pixels wide, shrunk by a whole factor with a
/// box filter (which also averages away fine detail, fitting for a thumbnail).
pub fn jpeg(frame: &Frame, max_width: u32, quality: u8) -> Result<Vec<u8>, Error> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let factor = (w as u32).div_ceil(max_width.max(16)).max(1) as usize;
    // Keep the factor even so every output pixel covers whole chroma samples.
    let factor = if factor > 1 { factor + factor % 2 } else { 1 };
    let (tw, th) = (w / factor, h / factor);
    if tw == 0 || th == 0 || tw > u16::MAX as usize || th > u16::MAX as usize {
        return Err(Error::invalid_input(format!(
            "cannot make a {max_width}-pixel thumbnail of {w}x{h}"
        )));
    }
    let (y, u, v) = (frame.y(), frame.u(), frame.v());
    let cw = w / 2;
    let mut ycbcr = Vec::with_capacity(tw * th * 3);
    for ty in 0..th {
        for tx in 0..tw {
            let (x0, y0) = (tx * factor, ty * factor);
            let mut sum = 0u32;
            for row in y0..y0 + factor {
                sum += y[row * w + x0..row * w + x0 + factor]
                    .iter()
                    .map(|&p| p as u32)
                    .sum::<u32>();
            }
            let luma = sum / (factor * factor) as u32;
            // Chroma of the block's top-left sample: cheap, and exact for factor 1 and 2.
            let c = (y0 / 2) * cw + x0 / 2;
            ycbcr.extend_from_slice(&[luma as u8, u[c], v[c]]);
        }
    }
    let mut out = Vec::new();
    Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(&ycbcr, tw as u16, th as u16, ColorType::Ycbcr)
        .map_err(|e| Error::new(ErrorKind::Internal, format!("JPEG encoding failed: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameMeta;
    use crate::synthetic::SyntheticSource;

    #[test]
    fn makes_a_small_jpeg() {
        let src = SyntheticSource::new(1920, 1080);
        let mut f = Frame::new(1920, 1080);
        src.render(&mut f, FrameMeta::default());
        let jpg = jpeg(&f, 320, 80).unwrap();
        assert_eq!(&jpg[..3], &[0xff, 0xd8, 0xff], "JPEG signature");
        assert_eq!(&jpg[jpg.len() - 2..], &[0xff, 0xd9]);
        assert!(jpg.len() < 40_000, "{} bytes", jpg.len());
        // SOF0 holds height then width.
        let sof = jpg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        let (th, tw) = (
            u16::from_be_bytes([jpg[sof + 5], jpg[sof + 6]]),
            u16::from_be_bytes([jpg[sof + 7], jpg[sof + 8]]),
        );
        assert_eq!((tw, th), (320, 180));
    }

    #[test]
    fn small_frames_stay_full_size() {
        let jpg = jpeg(&Frame::new(160, 96), 320, 80).unwrap();
        let sof = jpg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        assert_eq!(u16::from_be_bytes([jpg[sof + 7], jpg[sof + 8]]), 160);
    }
}
