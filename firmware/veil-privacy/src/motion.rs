//! Moving-object detection without a model: background subtraction on a small luma image.
//! The strictest filters hide everything that moves, whatever it is.

use veil_media::Frame;

use crate::redact::Rect;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotionSettings {
    /// Width of the analysis image; the frame is shrunk by a whole factor to about this.
    pub analysis_width: u32,
    /// Luma difference (0–255) from the background that counts as motion.
    pub threshold: u8,
    /// How fast the background follows the scene: 1/2^shift of the difference per frame.
    pub learn_shift: u32,
    /// Components smaller than this many analysis cells are noise.
    pub min_cells: usize,
}

impl Default for MotionSettings {
    fn default() -> Self {
        MotionSettings {
            analysis_width: 160,
            threshold: 25,
            learn_shift: 4,
            min_cells: 4,
        }
    }
}

pub struct MotionDetector {
    settings: MotionSettings,
    /// Background in 8.8 fixed point, one value per cell.
    background: Vec<u16>,
    cells: Vec<u8>,
    moving: Vec<bool>,
    labels: Vec<u32>,
    grid: (usize, usize, usize),
}

impl MotionDetector {
    pub fn new(settings: MotionSettings) -> Self {
        MotionDetector {
            settings,
            background: Vec::new(),
            cells: Vec::new(),
            moving: Vec::new(),
            labels: Vec::new(),
            grid: (0, 0, 0),
        }
    }

    /// Boxes (frame pixels) around what moved since the background was learnt. The first frame
    /// of a size only teaches the background: `None`, nothing is known about it.
    pub fn detect(&mut self, frame: &Frame) -> Option<Vec<Rect>> {
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let factor = w
            .div_ceil(self.settings.analysis_width.max(16) as usize)
            .max(1);
        let (gw, gh) = (w / factor, h / factor);
        let fresh = self.grid != (gw, gh, factor);
        self.grid = (gw, gh, factor);
        self.cells.resize(gw * gh, 0);
        let y = frame.y();
        for gy in 0..gh {
            for gx in 0..gw {
                let mut sum = 0u32;
                for row in gy * factor..(gy + 1) * factor {
                    sum += y[row * w + gx * factor..row * w + (gx + 1) * factor]
                        .iter()
                        .map(|&p| p as u32)
                        .sum::<u32>();
                }
                self.cells[gy * gw + gx] = (sum / (factor * factor) as u32) as u8;
            }
        }
        if fresh {
            self.background = self.cells.iter().map(|&c| (c as u16) << 8).collect();
            return None;
        }
        let threshold = self.settings.threshold as i32;
        self.moving.clear();
        for (bg, &c) in self.background.iter_mut().zip(&self.cells) {
            let diff = c as i32 - (*bg >> 8) as i32;
            self.moving.push(diff.abs() > threshold);
            let target = (c as i32) << 8;
            *bg = (*bg as i32 + ((target - *bg as i32) >> self.settings.learn_shift)) as u16;
        }
        Some(self.components(factor))
    }

    /// Bounding boxes of 8-connected moving cells, grown by one cell.
    fn components(&mut self, factor: usize) -> Vec<Rect> {
        let (gw, gh, _) = self.grid;
        self.labels.clear();
        self.labels.resize(gw * gh, 0);
        let mut boxes = Vec::new();
        let mut stack = Vec::new();
        let mut next = 0u32;
        for start in 0..gw * gh {
            if !self.moving[start] || self.labels[start] != 0 {
                continue;
            }
            next += 1;
            let (mut x0, mut y0, mut x1, mut y1, mut count) = (usize::MAX, usize::MAX, 0, 0, 0);
            stack.push(start);
            self.labels[start] = next;
            while let Some(i) = stack.pop() {
                let (x, y) = (i % gw, i / gw);
                (x0, y0, x1, y1, count) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y), count + 1);
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                        if nx < 0 || ny < 0 || nx >= gw as i64 || ny >= gh as i64 {
                            continue;
                        }
                        let j = ny as usize * gw + nx as usize;
                        if self.moving[j] && self.labels[j] == 0 {
                            self.labels[j] = next;
                            stack.push(j);
                        }
                    }
                }
            }
            if count >= self.settings.min_cells {
                let f = factor as i32;
                boxes.push(Rect {
                    x: (x0 as i32 - 1) * f,
                    y: (y0 as i32 - 1) * f,
                    w: (x1 - x0 + 3) as i32 * f,
                    h: (y1 - y0 + 3) as i32 * f,
                });
            }
        }
        boxes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grey frame with a bright square at (x, y).
    fn scene(x: usize, y: usize) -> Frame {
        let mut f = Frame::new(640, 360);
        let (plane, _, _) = f.planes_mut();
        plane.fill(90);
        for row in y..y + 40 {
            plane[row * 640 + x..row * 640 + x + 40].fill(230);
        }
        f
    }

    #[test]
    fn a_still_scene_has_no_motion() {
        let mut d = MotionDetector::new(MotionSettings::default());
        assert_eq!(
            d.detect(&scene(100, 100)),
            None,
            "the first frame has nothing to compare"
        );
        for _ in 0..5 {
            assert_eq!(d.detect(&scene(100, 100)), Some(Vec::new()));
        }
    }

    #[test]
    fn a_moving_object_is_boxed_where_it_is() {
        let mut d = MotionDetector::new(MotionSettings::default());
        d.detect(&scene(100, 100));
        let boxes = d.detect(&scene(300, 200)).unwrap();
        // Both where it went and where it left (the background still has it there).
        let covers = |b: &Rect, x: i32, y: i32| {
            b.x <= x && b.y <= y && b.x + b.w >= x + 40 && b.y + b.h >= y + 40
        };
        assert!(boxes.iter().any(|b| covers(b, 300, 200)), "{boxes:?}");
        assert!(boxes.iter().any(|b| covers(b, 100, 100)), "{boxes:?}");
    }

    #[test]
    fn sensor_noise_is_not_motion() {
        let mut d = MotionDetector::new(MotionSettings::default());
        d.detect(&scene(100, 100));
        let mut noisy = scene(100, 100);
        for (i, p) in noisy.planes_mut().0.iter_mut().enumerate() {
            *p = (*p as i32 + ((i * 7919) % 21) as i32 - 10).clamp(0, 255) as u8;
        }
        assert_eq!(d.detect(&noisy), Some(Vec::new()));
    }

    #[test]
    fn the_background_learns_a_parked_object() {
        let mut d = MotionDetector::new(MotionSettings::default());
        d.detect(&scene(100, 100));
        let mut last = Vec::new();
        for _ in 0..80 {
            last = d.detect(&scene(300, 200)).unwrap();
        }
        assert!(last.is_empty(), "still moving after 80 frames: {last:?}");
    }
}
