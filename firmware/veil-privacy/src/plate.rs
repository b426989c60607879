//! Licence plates: a Haar cascade over the luma plane (OpenCV's plate cascade by default, any
//! cascade file in OpenCV's format dropped in its place), boxes widened for the plate's frame.

use veil_core::Error;
use veil_media::Frame;

use crate::cascade::{Cascade, ScanSettings};
use crate::engine::Detector;
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
        let scan = ScanSettings {
            min_width: self.settings.min_width,
            max_width: ((w as f32 * self.settings.max_width_frac) as u32)
                .max(self.settings.min_width),
            scale_step: 1.1,
            min_neighbors: self.settings.min_neighbors,
        };
        self.cascade.detect(frame.y(), w, h, &scan)
    }
}

impl Detector for PlateDetector {
    fn name(&self) -> &'static str {
        "plates"
    }

    fn detect(&mut self, frame: &Frame) -> Result<Vec<Rect>, Error> {
        let m = self.settings.margin;
        Ok(self
            .detect_raw(frame)
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
            .collect())
    }
}
