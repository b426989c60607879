//! Licence plates: a Haar cascade over the luma plane (OpenCV's plate cascade by default, any
//! cascade file in OpenCV's format dropped in its place), boxes widened for the plate's frame.

use veil_core::Error;
use veil_media::Frame;

use crate::cascade::{Cascade, ScanSettings};
use crate::detector::Detector;
use crate::redact::Rect;

/// Settings of the plate detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlateSettings {
    /// Narrowest plate searched, in frame pixels. Plates narrower than about 40 px cannot be
    /// read anyway; searching below the cascade's window enlarges the picture (slow).
    pub min_width: u32,
    /// Widest plate searched, as a fraction of the frame width.
    pub max_width_frac: f32,
    /// Hits a plate needs besides its own; lower than OpenCV's 3, since a missed plate is a
    /// leak and a spurious box only hides a patch of bumper.
    pub min_neighbors: u32,
    /// Boxes are widened by this fraction of their size on each side.
    pub margin: f32,
}

impl Default for PlateSettings {
    fn default() -> Self {
        PlateSettings {
            min_width: 60,
            max_width_frac: 0.5,
            min_neighbors: 2,
            margin: 0.15,
        }
    }
}

pub struct PlateDetector {
    cascade: Cascade,
    settings: PlateSettings,
}

impl PlateDetector {
    pub fn new(cascade: Cascade, settings: PlateSettings) -> PlateDetector {
        PlateDetector { cascade, settings }
    }

    /// Plates in the frame, in frame pixels, before the margin.
    pub fn detect_raw(&self, frame: &Frame) -> Vec<[i32; 4]> {
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        self.cascade.detect(frame.y(), w, h, &self.scan(w))
    }

    fn scan(&self, frame_width: usize) -> ScanSettings {
        ScanSettings {
            min_width: self.settings.min_width,
            max_width: ((frame_width as f32 * self.settings.max_width_frac) as u32)
                .max(self.settings.min_width),
            scale_step: 1.1,
            min_neighbors: self.settings.min_neighbors,
        }
    }

    /// The parts of the frame to search for a focused look: each focus region grown by its
    /// own size and the narrowest plate on each side (a plate on a moving car, or a tracked
    /// plate that moved, is whole inside), overlapping ones merged, clipped to the frame.
    pub fn crops(&self, width: u32, height: u32, focus: &[Rect]) -> Vec<Rect> {
        let pad = self.settings.min_width as i32;
        let mut crops: Vec<Rect> = focus
            .iter()
            .map(|r| Rect {
                x: r.x - r.w - pad,
                y: r.y - r.h - pad,
                w: 3 * r.w + 2 * pad,
                h: 3 * r.h + 2 * pad,
            })
            .collect();
        // Merge until no two overlap (focus lists are short).
        let mut merged = true;
        while merged {
            merged = false;
            'outer: for i in 0..crops.len() {
                for j in i + 1..crops.len() {
                    let (a, b) = (crops[i], crops[j]);
                    if a.overlaps(&b) {
                        let (x0, y0) = (a.x.min(b.x), a.y.min(b.y));
                        let (x1, y1) = ((a.x + a.w).max(b.x + b.w), (a.y + a.h).max(b.y + b.h));
                        crops[i] = Rect {
                            x: x0,
                            y: y0,
                            w: x1 - x0,
                            h: y1 - y0,
                        };
                        crops.swap_remove(j);
                        merged = true;
                        break 'outer;
                    }
                }
            }
        }
        crops
            .into_iter()
            .filter_map(|r| {
                let (x0, y0) = (r.x.max(0), r.y.max(0));
                let (x1, y1) = (
                    (r.x + r.w).min(width as i32),
                    (r.y + r.h).min(height as i32),
                );
                (x1 - x0 >= pad && y1 - y0 >= pad / 4).then_some(Rect {
                    x: x0,
                    y: y0,
                    w: x1 - x0,
                    h: y1 - y0,
                })
            })
            .collect()
    }

    fn with_margin(&self, found: Vec<[i32; 4]>) -> Vec<Rect> {
        let m = self.settings.margin;
        found
            .into_iter()
            .map(|[x, y, w, h]| {
                let (dx, dy) = ((w as f32 * m).ceil() as i32, (h as f32 * m).ceil() as i32);
                // Plates are wide and short: widen the height at least as much as the width,
                // so a plate found a little off-centre is still covered top to bottom.
                let dy = dy.max(dx / 2);
                Rect {
                    x: x - dx,
                    y: y - dy,
                    w: w + 2 * dx,
                    h: h + 2 * dy,
                }
            })
            .collect()
    }
}

impl Detector for PlateDetector {
    fn name(&self) -> &'static str {
        "plates"
    }

    fn detect(&mut self, frame: &Frame) -> Result<Vec<Rect>, Error> {
        let found = self.detect_raw(frame);
        Ok(self.with_margin(found))
    }

    /// Searches only the crops around the focus (see [`PlateDetector::crops`]); the plates
    /// that can be found are limited by the crop, the widest still by the frame.
    fn detect_in(
        &mut self,
        frame: &Frame,
        focus: &[Rect],
    ) -> Result<(Vec<Rect>, Option<Vec<Rect>>), Error> {
        let (fw, luma) = (frame.width() as usize, frame.y());
        let scan = self.scan(fw);
        let crops = self.crops(frame.width(), frame.height(), focus);
        let mut found = Vec::new();
        let mut part = Vec::new();
        for c in &crops {
            let (cx, cy, cw, ch) = (c.x as usize, c.y as usize, c.w as usize, c.h as usize);
            part.clear();
            for row in cy..cy + ch {
                part.extend_from_slice(&luma[row * fw + cx..row * fw + cx + cw]);
            }
            found.extend(
                self.cascade
                    .detect(&part, cw, ch, &scan)
                    .into_iter()
                    .map(|[x, y, w, h]| [x + c.x, y + c.y, w, h]),
            );
        }
        Ok((self.with_margin(found), Some(crops)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn focus_regions_become_merged_crops_inside_the_frame() {
        let cascade = Cascade::parse(crate::cascade::tests::TINY).unwrap();
        let d = PlateDetector::new(cascade, PlateSettings::default());
        let r = |x, y| Rect { x, y, w: 40, h: 20 };
        // Two near each other merge; one in the corner is clipped; one far away stays apart.
        let crops = d.crops(
            1920,
            1080,
            &[r(500, 500), r(560, 510), r(0, 0), r(1500, 900)],
        );
        assert_eq!(crops.len(), 3, "{crops:?}");
        for c in &crops {
            assert!(
                c.x >= 0 && c.y >= 0 && c.x + c.w <= 1920 && c.y + c.h <= 1080,
                "{c:?}"
            );
        }
        let holds = |c: &Rect, x: i32, y: i32| {
            c.x <= x && c.y <= y && c.x + c.w >= x + 40 && c.y + c.h >= y + 20
        };
        for (x, y) in [(500, 500), (560, 510), (0, 0), (1500, 900)] {
            assert!(
                crops.iter().any(|c| holds(c, x, y)),
                "({x}, {y}) in {crops:?}"
            );
        }
        assert!(d.crops(1920, 1080, &[]).is_empty());
    }
}
