//! Static privacy masks: polygons in normalized coordinates, rasterized once per frame size
//! into row spans, blanked in every frame.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use veil_core::geometry::Point;
use veil_media::Frame;

/// Replaces a running engine's masks (drawn on the web page) from another thread; the engine
/// picks the new set up before the next frame it redacts. The media path only reads an
/// atomic flag per frame.
#[derive(Clone, Default)]
pub struct MaskHandle {
    pending: Arc<(AtomicBool, Mutex<Option<Polygons>>)>,
}

type Polygons = Vec<Vec<Point>>;

impl MaskHandle {
    pub fn replace(&self, polygons: Vec<Vec<Point>>) {
        *self.pending.1.lock().unwrap_or_else(|e| e.into_inner()) = Some(polygons);
        self.pending.0.store(true, Ordering::Release);
    }

    /// Whether the engine this handle feeds still exists.
    pub fn engine_running(&self) -> bool {
        Arc::strong_count(&self.pending) > 1
    }

    pub(crate) fn take(&self) -> Option<Vec<Vec<Point>>> {
        if !self.pending.0.swap(false, Ordering::Acquire) {
            return None;
        }
        self.pending
            .1
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// The covered pixels of some polygons at one frame size, as half-open spans per luma row.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskRaster {
    width: u32,
    height: u32,
    rows: Vec<Vec<(u32, u32)>>,
}

impl MaskRaster {
    /// Scanline fill (even-odd rule). A pixel is covered when its centre is inside, and the
    /// spans are then grown by one pixel each way: edges err toward hiding more.
    pub fn new(polygons: &[Vec<Point>], width: u32, height: u32) -> MaskRaster {
        let mut rows = vec![Vec::new(); height as usize];
        for (row, spans) in rows.iter_mut().enumerate() {
            let cy = (row as f64 + 0.5) / height as f64;
            let mut xs: Vec<f64> = Vec::new();
            for poly in polygons {
                let n = poly.len();
                for i in 0..n {
                    let (a, b) = (poly[i], poly[(i + 1) % n]);
                    if (a.y <= cy) != (b.y <= cy) {
                        xs.push(a.x + (cy - a.y) / (b.y - a.y) * (b.x - a.x));
                    }
                }
                xs.sort_by(f64::total_cmp);
                for pair in xs.chunks_exact(2) {
                    let x0 = ((pair[0] * width as f64 - 0.5).ceil() as i64 - 1).max(0) as u32;
                    let x1 = (((pair[1] * width as f64 - 0.5).floor() as i64) + 2).min(width as i64)
                        as u32;
                    if x1 > x0 {
                        spans.push((x0, x1));
                    }
                }
                xs.clear();
            }
        }
        MaskRaster {
            width,
            height,
            rows,
        }
    }

    pub fn covered_pixels(&self) -> u64 {
        self.rows
            .iter()
            .flatten()
            .map(|(a, b)| u64::from(b - a))
            .sum()
    }

    /// Blacks out the covered pixels; a chroma sample is blanked when any of its four luma
    /// pixels is covered.
    pub fn apply(&self, frame: &mut Frame) {
        assert_eq!(
            (frame.width(), frame.height()),
            (self.width, self.height),
            "raster built for another size"
        );
        let (w, cw) = (self.width as usize, self.width as usize / 2);
        let (y, u, v) = frame.planes_mut();
        for (row, spans) in self.rows.iter().enumerate() {
            for &(x0, x1) in spans {
                y[row * w + x0 as usize..row * w + x1 as usize].fill(16);
                let (c0, c1) = (x0 as usize / 2, (x1 as usize).div_ceil(2));
                let crow = row / 2;
                u[crow * cw + c0..crow * cw + c1].fill(128);
                v[crow * cw + c0..crow * cw + c1].fill(128);
            }
        }
    }
}

/// A camera's masks, rasterized lazily for whatever size its frames have.
#[derive(Debug, Clone)]
pub struct Masks {
    polygons: Vec<Vec<Point>>,
    raster: Option<MaskRaster>,
}

impl Masks {
    pub fn new(polygons: Vec<Vec<Point>>) -> Masks {
        Masks {
            polygons,
            raster: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.polygons.is_empty()
    }

    pub fn apply(&mut self, frame: &mut Frame) {
        if self.polygons.is_empty() {
            return;
        }
        let size = (frame.width(), frame.height());
        let raster = match &self.raster {
            Some(r) if (r.width, r.height) == size => r,
            _ => self
                .raster
                .insert(MaskRaster::new(&self.polygons, size.0, size.1)),
        };
        raster.apply(frame);
    }
}

#[cfg(test)]
mod tests {
    use veil_media::frame::FrameMeta;
    use veil_media::synthetic::SyntheticSource;

    use super::*;

    fn poly(coords: &[(f64, f64)]) -> Vec<Point> {
        coords.iter().map(|&(x, y)| Point { x, y }).collect()
    }

    #[test]
    fn a_square_covers_its_area_plus_a_safety_pixel() {
        let r = MaskRaster::new(
            &[poly(&[
                (0.25, 0.25),
                (0.75, 0.25),
                (0.75, 0.75),
                (0.25, 0.75),
            ])],
            100,
            100,
        );
        // 50x50 inside, each row grown by one pixel each side.
        assert_eq!(r.covered_pixels(), 50 * 52);
    }

    #[test]
    fn masked_pixels_are_black_in_every_plane_and_the_rest_untouched() {
        let (w, h) = (320u32, 240u32);
        let mut f = Frame::new(w, h);
        SyntheticSource::new(w, h).render(&mut f, FrameMeta::default());
        let before = f.clone();
        let mut masks = Masks::new(vec![poly(&[
            (0.5, 0.5),
            (1.0, 0.5),
            (1.0, 1.0),
            (0.5, 1.0),
        ])]);
        masks.apply(&mut f);
        let wi = w as usize;
        for row in 120..240 {
            assert!(
                f.y()[row * wi + 160..row * wi + 320]
                    .iter()
                    .all(|&p| p == 16),
                "row {row}"
            );
        }
        for row in 60..120 {
            assert!(
                f.u()[row * 160 + 80..row * 160 + 160]
                    .iter()
                    .all(|&c| c == 128)
            );
        }
        assert_eq!(&f.y()[..100 * wi], &before.y()[..100 * wi], "top untouched");
    }

    #[test]
    fn a_triangle_hides_its_inside_at_any_resolution() {
        let tri = poly(&[(0.1, 0.1), (0.9, 0.1), (0.5, 0.9)]);
        for (w, h) in [(64, 48), (640, 360), (1920, 1080)] {
            let r = MaskRaster::new(std::slice::from_ref(&tri), w, h);
            let expected = 0.5 * 0.8 * 0.8 * (w * h) as f64;
            let got = r.covered_pixels() as f64;
            assert!(
                got >= expected,
                "{w}x{h}: {got} < {expected}: the mask must never cover less"
            );
            assert!(
                got < expected * 1.2 + 4.0 * h as f64,
                "{w}x{h}: {got} far above {expected}"
            );
        }
    }

    #[test]
    fn rasters_follow_the_frame_size() {
        let mut masks = Masks::new(vec![poly(&[
            (0.0, 0.0),
            (1.0, 0.0),
            (1.0, 1.0),
            (0.0, 1.0),
        ])]);
        for (w, h) in [(160, 96), (320, 240)] {
            let mut f = Frame::new(w, h);
            f.planes_mut().0.fill(200);
            masks.apply(&mut f);
            assert!(f.y().iter().all(|&p| p == 16));
        }
    }
}
