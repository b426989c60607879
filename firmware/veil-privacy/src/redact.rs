//! Redaction kernels on I420, in place, only inside a region.
//!
//! Rectangles are widened to even coordinates so luma and chroma are covered alike: a kernel
//! may redact a pixel more than asked, never less.

use veil_media::Frame;

/// A pixel rectangle; may reach outside the frame (it is clipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
}

impl Rect {
    /// Whether the two share at least one pixel.
    pub fn overlaps(&self, other: &Rect) -> bool {
        self.x < other.x + other.w
            && other.x < self.x + self.w
            && self.y < other.y + other.h
            && other.y < self.y + self.h
    }
}

/// How a region is hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Flat black.
    Solid,
    /// Mosaic with at most 8 blocks across the region's longer side (blocks of 8 pixels or
    /// more), so the blocks grow with the face and it cannot be recovered by upscaling.
    Pixelate,
    /// Strong box blur (three passes, radius scaled with the region).
    Blur,
}

/// The part of `r` inside a `w`x`h` frame, grown to even edges: (x0, y0, x1, y1), or `None`.
fn clip_even(r: Rect, w: u32, h: u32) -> Option<(usize, usize, usize, usize)> {
    let x0 = r.x.max(0) as i64 & !1;
    let y0 = r.y.max(0) as i64 & !1;
    let x1 = ((r.x as i64 + r.w as i64 + 1) & !1).min(w as i64);
    let y1 = ((r.y as i64 + r.h as i64 + 1) & !1).min(h as i64);
    (x1 > x0 && y1 > y0).then_some((x0 as usize, y0 as usize, x1 as usize, y1 as usize))
}

pub fn apply(frame: &mut Frame, r: Rect, style: Style) {
    match style {
        Style::Solid => solid(frame, r),
        Style::Pixelate => pixelate(frame, r),
        Style::Blur => blur(frame, r),
    }
}

/// Black, neutral chroma.
pub fn solid(frame: &mut Frame, r: Rect) {
    let (w, h) = (frame.width(), frame.height());
    let Some((x0, y0, x1, y1)) = clip_even(r, w, h) else {
        return;
    };
    let (w, cw) = (w as usize, w as usize / 2);
    let (y, u, v) = frame.planes_mut();
    for row in y0..y1 {
        y[row * w + x0..row * w + x1].fill(16);
    }
    for row in y0 / 2..y1 / 2 {
        u[row * cw + x0 / 2..row * cw + x1 / 2].fill(128);
        v[row * cw + x0 / 2..row * cw + x1 / 2].fill(128);
    }
}

/// Block edge for a region: at most 8 blocks across its longer side, at least 8 pixels.
pub fn block_size(r: Rect) -> usize {
    ((r.w.max(r.h).max(0) as usize) / 8)
        .max(8)
        .next_multiple_of(2)
}

/// Mosaic: each block takes its mean, on every plane.
pub fn pixelate(frame: &mut Frame, r: Rect) {
    let (w, h) = (frame.width(), frame.height());
    let Some((x0, y0, x1, y1)) = clip_even(r, w, h) else {
        return;
    };
    let b = block_size(r);
    let (w, cw) = (w as usize, w as usize / 2);
    let (y, u, v) = frame.planes_mut();
    mosaic(y, w, x0, y0, x1, y1, b);
    mosaic(u, cw, x0 / 2, y0 / 2, x1 / 2, y1 / 2, b / 2);
    mosaic(v, cw, x0 / 2, y0 / 2, x1 / 2, y1 / 2, b / 2);
}

/// The whole frame as a coarse mosaic (the `silhouette` filter): blocks of 1/48 of the longer
/// side (40 px at 1080p, never under 16), so shapes and flows remain and identities do not.
pub fn silhouette(frame: &mut Frame) {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let b = ((w.max(h) / 48).max(16) + 1) & !1;
    let cw = w / 2;
    let (y, u, v) = frame.planes_mut();
    mosaic(y, w, 0, 0, w, h, b);
    mosaic(u, cw, 0, 0, w / 2, h / 2, b / 2);
    mosaic(v, cw, 0, 0, w / 2, h / 2, b / 2);
}

fn mosaic(plane: &mut [u8], stride: usize, x0: usize, y0: usize, x1: usize, y1: usize, b: usize) {
    let b = b.max(1);
    let mut by = y0;
    while by < y1 {
        let bh = b.min(y1 - by);
        let mut bx = x0;
        while bx < x1 {
            let bw = b.min(x1 - bx);
            let mut sum = 0u32;
            for row in by..by + bh {
                sum += plane[row * stride + bx..row * stride + bx + bw]
                    .iter()
                    .map(|&p| p as u32)
                    .sum::<u32>();
            }
            let mean = (sum / (bw * bh) as u32) as u8;
            for row in by..by + bh {
                plane[row * stride + bx..row * stride + bx + bw].fill(mean);
            }
            bx += bw;
        }
        by += bh;
    }
}

/// Three box-blur passes (close to a Gaussian) with a radius of 1/6 of the region's longer side.
pub fn blur(frame: &mut Frame, r: Rect) {
    let (w, h) = (frame.width(), frame.height());
    let Some((x0, y0, x1, y1)) = clip_even(r, w, h) else {
        return;
    };
    let radius = ((r.w.max(r.h).max(0) as usize) / 6).max(4);
    let (w, cw) = (w as usize, w as usize / 2);
    let (y, u, v) = frame.planes_mut();
    let mut scratch = BlurScratch::default();
    for _ in 0..3 {
        box_pass(y, w, (x0, y0, x1, y1), radius, &mut scratch);
        box_pass(
            u,
            cw,
            (x0 / 2, y0 / 2, x1 / 2, y1 / 2),
            radius / 2,
            &mut scratch,
        );
        box_pass(
            v,
            cw,
            (x0 / 2, y0 / 2, x1 / 2, y1 / 2),
            radius / 2,
            &mut scratch,
        );
    }
}

#[derive(Default)]
struct BlurScratch {
    rows: Vec<u8>,
    sums: Vec<u32>,
}

/// A horizontal then a vertical box filter over the region. The vertical pass slides column
/// sums down the rows, so both passes stream through memory and the inner loops vectorize.
fn box_pass(
    plane: &mut [u8],
    stride: usize,
    (x0, y0, x1, y1): (usize, usize, usize, usize),
    radius: usize,
    s: &mut BlurScratch,
) {
    let (rw, rh) = (x1 - x0, y1 - y0);
    let radius = radius.max(1);
    let n = (2 * radius + 1) as u32;
    // sum * inv >> 16 == sum / n, to within rounding, without a division per pixel.
    let inv = ((1u32 << 16) + n / 2) / n;
    s.rows.resize(rw * rh, 0);
    for row in 0..rh {
        let src = &plane[(y0 + row) * stride + x0..(y0 + row) * stride + x1];
        let dst = &mut s.rows[row * rw..(row + 1) * rw];
        let at = |i: isize| src[i.clamp(0, rw as isize - 1) as usize] as u32;
        let mut sum: u32 = (-(radius as isize)..=radius as isize).map(at).sum();
        for (i, out) in dst.iter_mut().enumerate() {
            *out = ((sum * inv) >> 16) as u8;
            sum = sum + at(i as isize + radius as isize + 1) - at(i as isize - radius as isize);
        }
    }
    s.sums.clear();
    s.sums.resize(rw, 0);
    let row_at = |i: isize| i.clamp(0, rh as isize - 1) as usize * rw;
    for k in -(radius as isize)..=radius as isize {
        let start = row_at(k);
        for (acc, &p) in s.sums.iter_mut().zip(&s.rows[start..start + rw]) {
            *acc += p as u32;
        }
    }
    for row in 0..rh {
        let out = &mut plane[(y0 + row) * stride + x0..(y0 + row) * stride + x1];
        for (o, &acc) in out.iter_mut().zip(&s.sums) {
            *o = ((acc * inv) >> 16) as u8;
        }
        let (add, sub) = (
            row_at(row as isize + radius as isize + 1),
            row_at(row as isize - radius as isize),
        );
        for ((acc, &a), &b) in s
            .sums
            .iter_mut()
            .zip(&s.rows[add..add + rw])
            .zip(&s.rows[sub..sub + rw])
        {
            *acc = *acc + a as u32 - b as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use veil_media::frame::FrameMeta;
    use veil_media::synthetic::SyntheticSource;

    use super::*;

    fn pattern() -> Frame {
        let mut f = Frame::new(320, 240);
        SyntheticSource::new(320, 240).render(
            &mut f,
            FrameMeta {
                seq: 7,
                ..Default::default()
            },
        );
        f
    }

    fn region(f: &Frame, x0: usize, y0: usize, x1: usize, y1: usize) -> Vec<u8> {
        let w = f.width() as usize;
        (y0..y1)
            .flat_map(|r| f.y()[r * w + x0..r * w + x1].to_vec())
            .collect()
    }

    fn variance(px: &[u8]) -> f64 {
        let mean = px.iter().map(|&p| p as f64).sum::<f64>() / px.len() as f64;
        px.iter().map(|&p| (p as f64 - mean).powi(2)).sum::<f64>() / px.len() as f64
    }

    #[test]
    fn silhouette_leaves_only_coarse_blocks() {
        let mut f = Frame::new(1920, 1080);
        SyntheticSource::new(1920, 1080).render(&mut f, FrameMeta::default());
        silhouette(&mut f);
        // Every 40x40 block (1920/48) is flat.
        for (bx, by) in [(0, 0), (40, 40), (1880, 1040), (960, 520)] {
            let px = region(&f, bx, by, bx + 40, by + 40);
            assert_eq!(variance(&px), 0.0, "block at {bx},{by} is not flat");
        }
        assert!(
            variance(&region(&f, 0, 0, 1920, 1080)) > 0.0,
            "shapes are gone entirely"
        );
    }

    #[test]
    fn solid_blacks_out_the_region_and_nothing_else() {
        let mut f = pattern();
        let before = f.clone();
        solid(
            &mut f,
            Rect {
                x: 11,
                y: 21,
                w: 40,
                h: 30,
            },
        );
        assert!(
            region(&f, 10, 20, 52, 52).iter().all(|&p| p == 16),
            "odd edges grow to even ones"
        );
        assert_eq!(
            region(&f, 100, 100, 200, 200),
            region(&before, 100, 100, 200, 200)
        );
        let cw = 160;
        assert!((10..26).all(|r| f.u()[r * cw + 5..r * cw + 26].iter().all(|&c| c == 128)));
    }

    #[test]
    fn regions_outside_the_frame_are_clipped() {
        let mut f = pattern();
        solid(
            &mut f,
            Rect {
                x: -50,
                y: -50,
                w: 80,
                h: 80,
            },
        );
        assert!(region(&f, 0, 0, 30, 30).iter().all(|&p| p == 16));
        solid(
            &mut f,
            Rect {
                x: 400,
                y: 400,
                w: 10,
                h: 10,
            },
        );
        solid(
            &mut f,
            Rect {
                x: 300,
                y: 220,
                w: 100,
                h: 100,
            },
        );
        assert!(region(&f, 300, 220, 320, 240).iter().all(|&p| p == 16));
    }

    #[test]
    fn pixelation_blocks_scale_with_the_box() {
        assert_eq!(
            block_size(Rect {
                x: 0,
                y: 0,
                w: 20,
                h: 20
            }),
            8
        );
        assert_eq!(
            block_size(Rect {
                x: 0,
                y: 0,
                w: 200,
                h: 240
            }),
            30
        );
        let mut f = pattern();
        let r = Rect {
            x: 0,
            y: 0,
            w: 160,
            h: 160,
        };
        pixelate(&mut f, r);
        let b = block_size(r);
        // Every block is uniform: at most 8x8 distinct values remain of a 160x160 area.
        for by in (0..160).step_by(b) {
            for bx in (0..160).step_by(b) {
                let block = region(&f, bx, by, (bx + b).min(160), (by + b).min(160));
                assert!(block.iter().all(|&p| p == block[0]), "block at {bx},{by}");
            }
        }
    }

    #[test]
    fn blur_removes_detail_inside_only() {
        let mut f = pattern();
        let before = f.clone();
        // The code strip at the top is sharp black/white blocks: blur must flatten it.
        let strip = Rect {
            x: 0,
            y: 0,
            w: 288,
            h: 12,
        };
        blur(&mut f, strip);
        assert!(
            variance(&region(&f, 0, 0, 288, 12)) < variance(&region(&before, 0, 0, 288, 12)) / 4.0
        );
        assert_eq!(
            region(&f, 0, 100, 320, 240),
            region(&before, 0, 100, 320, 240)
        );
    }
}
