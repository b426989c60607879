//! The synthetic camera: a moving test pattern that needs no hardware.
//!
//! Each frame carries its sequence number and capture time twice: as a machine-readable strip
//! of blocks at the top left (decoded by [`read_burned_in`], robust to H.264 compression, so
//! the far end of a pipeline can measure latency and spot dropped frames), and as digits a
//! person can read on the preview.

use crate::frame::{Frame, FrameMeta};

/// Marks the first strip row, so a reader can tell a coded frame from any other picture.
const SYNC: u16 = 0xB5A3;
const BITS_PER_ROW: u32 = 48;
const LUMA_ZERO: u8 = 16;
const LUMA_ONE: u8 = 235;

/// What a synthetic frame says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurnedIn {
    /// The low 32 bits of the frame's sequence number.
    pub seq: u32,
    /// Capture wall time, ms since the Unix epoch (48 bits).
    pub wall_ms: u64,
}

/// Side of one code block in pixels for a frame width; 0 when the strip does not fit.
fn block_size(width: u32) -> u32 {
    let b = (width / BITS_PER_ROW).min(16) & !1;
    if b >= 2 { b } else { 0 }
}

/// Renders the test pattern for a fixed size.
pub struct SyntheticSource {
    background: Frame,
    block: u32,
}

impl SyntheticSource {
    pub fn new(width: u32, height: u32) -> SyntheticSource {
        SyntheticSource {
            background: background(width, height),
            block: block_size(width),
        }
    }

    pub fn width(&self) -> u32 {
        self.background.width()
    }

    pub fn height(&self) -> u32 {
        self.background.height()
    }

    /// Draws the frame for `meta` into `frame`, overwriting every pixel.
    pub fn render(&self, frame: &mut Frame, meta: FrameMeta) {
        assert_eq!(
            (frame.width(), frame.height()),
            (self.width(), self.height()),
            "frame size must match the source"
        );
        frame.data_mut().copy_from_slice(self.background.data());
        frame.meta = meta;
        let (w, h) = (self.width(), self.height());
        draw_moving_box(frame, meta.seq, w, h);
        if self.block > 0 {
            let b = self.block;
            let row0 = ((SYNC as u64) << 32) | (meta.seq & 0xffff_ffff);
            draw_bits(frame, row0, 0, b);
            draw_bits(frame, meta.capture_wall_ms & 0xffff_ffff_ffff, b, b);
            let text = overlay_text(meta.seq, meta.capture_wall_ms);
            let scale = (b / 2).min(w / (text.len() as u32 * 6)).max(1);
            draw_text(frame, &text, b / 2, 2 * b + b / 2, scale);
        }
    }
}

/// Reads the strip back from a luma plane; `None` if the frame carries none.
pub fn read_burned_in(y: &[u8], width: u32, height: u32) -> Option<BurnedIn> {
    let b = block_size(width);
    if b == 0 || height < 2 * b || y.len() < (width * height) as usize {
        return None;
    }
    let row0 = read_bits(y, width, 0, b);
    if (row0 >> 32) as u16 != SYNC {
        return None;
    }
    Some(BurnedIn {
        seq: row0 as u32,
        wall_ms: read_bits(y, width, b, b),
    })
}

fn background(width: u32, height: u32) -> Frame {
    let mut f = Frame::new(width, height);
    let (y, u, v) = f.planes_mut();
    // A luma ramp under eight chroma bars: motion and colour errors both show.
    for row in 0..height as usize {
        for col in 0..width as usize {
            y[row * width as usize + col] = 40 + ((col * 160) / width as usize) as u8;
        }
    }
    const BARS: [(u8, u8); 8] = [
        (128, 128),
        (44, 142),
        (156, 44),
        (72, 58),
        (184, 198),
        (212, 114),
        (100, 212),
        (128, 128),
    ];
    let cw = (width / 2) as usize;
    for row in 0..(height / 2) as usize {
        for col in 0..cw {
            let (cu, cv) = BARS[col * 8 / cw];
            u[row * cw + col] = cu;
            v[row * cw + col] = cv;
        }
    }
    f
}

/// A bright square bouncing across the frame, its position a function of `seq` alone.
fn draw_moving_box(frame: &mut Frame, seq: u64, w: u32, h: u32) {
    let side = (h / 6).max(2) & !1;
    let (span_x, span_y) = ((w - side) as u64, (h - side) as u64);
    let bounce = |t: u64, span: u64| {
        if span == 0 {
            return 0;
        }
        let p = t % (2 * span);
        if p < span { p } else { 2 * span - p }
    };
    let x = bounce(seq * 7, span_x) as u32 & !1;
    let y = bounce(seq * 5, span_y) as u32 & !1;
    fill_luma(frame, x, y, side, side, 220);
}

fn fill_luma(frame: &mut Frame, x: u32, y: u32, w: u32, h: u32, value: u8) {
    let stride = frame.width() as usize;
    let (plane, _, _) = frame.planes_mut();
    for row in y as usize..(y + h) as usize {
        plane[row * stride + x as usize..row * stride + (x + w) as usize].fill(value);
    }
}

fn fill_chroma_neutral(frame: &mut Frame, x: u32, y: u32, w: u32, h: u32) {
    let cstride = (frame.width() / 2) as usize;
    let (_, u, v) = frame.planes_mut();
    for row in (y / 2) as usize..((y + h) / 2) as usize {
        let span = row * cstride + (x / 2) as usize..row * cstride + ((x + w) / 2) as usize;
        u[span.clone()].fill(128);
        v[span].fill(128);
    }
}

fn draw_bits(frame: &mut Frame, bits: u64, y: u32, b: u32) {
    for i in 0..BITS_PER_ROW {
        let one = (bits >> (BITS_PER_ROW - 1 - i)) & 1 == 1;
        fill_luma(
            frame,
            i * b,
            y,
            b,
            b,
            if one { LUMA_ONE } else { LUMA_ZERO },
        );
    }
    fill_chroma_neutral(frame, 0, y, BITS_PER_ROW * b, b);
}

fn read_bits(y: &[u8], width: u32, top: u32, b: u32) -> u64 {
    let mut bits = 0u64;
    let inner = (b / 2).max(1);
    let off = (b - inner) / 2;
    for i in 0..BITS_PER_ROW {
        let mut sum = 0u32;
        for row in top + off..top + off + inner {
            let start = (row * width + i * b + off) as usize;
            sum += y[start..start + inner as usize]
                .iter()
                .map(|&p| p as u32)
                .sum::<u32>();
        }
        let mean = sum / (inner * inner);
        bits = (bits << 1) | u64::from(mean > 125);
    }
    bits
}

/// `00000042 13:45:07.250` (frame counter, UTC time of day).
fn overlay_text(seq: u64, wall_ms: u64) -> String {
    let ms = wall_ms % 1000;
    let s = wall_ms / 1000;
    format!(
        "{:08} {:02}:{:02}:{:02}.{:03}",
        seq % 100_000_000,
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms
    )
}

/// 5x7 glyphs, one byte a row, low five bits used.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        _ => [0; 7],
    }
}

fn draw_text(frame: &mut Frame, text: &str, x0: u32, y0: u32, scale: u32) {
    let (w, h) = (frame.width(), frame.height());
    let cell = 6 * scale;
    if y0 + 9 * scale > h {
        return;
    }
    let width = (text.len() as u32 * cell + 2 * scale).min(w - x0);
    // A dark plate behind the digits keeps them readable on any background.
    fill_luma(frame, x0, y0, width & !1, (9 * scale) & !1, LUMA_ZERO);
    fill_chroma_neutral(frame, x0 & !1, y0 & !1, width & !1, (9 * scale + 1) & !1);
    for (i, c) in text.chars().enumerate() {
        let gx = x0 + scale + i as u32 * cell;
        if gx + cell > w {
            break;
        }
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..5u32 {
                if bits >> (4 - col) & 1 == 1 {
                    fill_luma(
                        frame,
                        gx + col * scale,
                        y0 + scale + row as u32 * scale,
                        scale,
                        scale,
                        LUMA_ONE,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn meta(seq: u64, wall_ms: u64) -> FrameMeta {
        FrameMeta {
            seq,
            capture_mono: Duration::from_millis(seq * 33),
            capture_wall_ms: wall_ms,
        }
    }

    #[test]
    fn burned_in_code_reads_back_at_common_sizes() {
        for (w, h) in [(1920, 1080), (1280, 720), (640, 360), (320, 240), (96, 64)] {
            let src = SyntheticSource::new(w, h);
            let mut f = Frame::new(w, h);
            for seq in [0u64, 1, 77, 0xfffe_ffff, 1 << 33 | 5] {
                let wall = 1_763_900_000_123 + seq;
                src.render(&mut f, meta(seq, wall));
                let got =
                    read_burned_in(f.y(), w, h).unwrap_or_else(|| panic!("{w}x{h} seq {seq}"));
                assert_eq!(got.seq, seq as u32);
                assert_eq!(got.wall_ms, wall);
            }
        }
    }

    #[test]
    fn code_survives_noise_like_compression() {
        let src = SyntheticSource::new(640, 360);
        let mut f = Frame::new(640, 360);
        src.render(&mut f, meta(4242, 1_700_000_000_000));
        // +-40 of deterministic noise on every luma pixel: far worse than H.264 at any sane bitrate.
        for (i, p) in f.planes_mut().0.iter_mut().enumerate() {
            let n = ((i * 2_654_435_761) % 81) as i32 - 40;
            *p = (*p as i32 + n).clamp(0, 255) as u8;
        }
        assert_eq!(read_burned_in(f.y(), 640, 360).unwrap().seq, 4242);
    }

    #[test]
    fn a_frame_without_a_strip_reads_as_none() {
        let f = Frame::new(640, 360);
        assert_eq!(read_burned_in(f.y(), 640, 360), None);
        let tiny = Frame::new(64, 64);
        assert_eq!(read_burned_in(tiny.y(), 64, 64), None);
    }

    #[test]
    fn the_pattern_moves() {
        let src = SyntheticSource::new(320, 240);
        let (mut a, mut b) = (Frame::new(320, 240), Frame::new(320, 240));
        src.render(&mut a, meta(10, 0));
        src.render(&mut b, meta(11, 0));
        let differing = a.y()[40 * 320..]
            .iter()
            .zip(&b.y()[40 * 320..])
            .filter(|(x, y)| x != y)
            .count();
        assert!(differing > 100, "only {differing} pixels changed");
    }

    #[test]
    fn overlay_text_shows_counter_and_utc_time() {
        assert_eq!(overlay_text(42, 1_700_000_007_250), "00000042 22:13:27.250");
    }
}
