//! Carries detected boxes across the frames between detections.
//!
//! Detection runs on some frames only (every few frames, or as fast as the detector can on a
//! small CPU). Each box becomes a track with a velocity measured between detections; on the
//! frames in between, the box is moved along it and grown with the uncertainty: a fraction of
//! its size per second plus the distance its own motion could be off by. A track the detector
//! stops reporting is held (and keeps growing) for `hold_lost` before it is released, so one
//! missed detection does not uncover a face.

use std::time::Duration;

use crate::redact::Rect;

#[derive(Debug, Clone)]
struct Track {
    /// Box at the last detection, in pixels (centre and size).
    cx: f64,
    cy: f64,
    w: f64,
    h: f64,
    /// Pixels per second.
    vx: f64,
    vy: f64,
    /// Capture time of the last detection that reported this track.
    seen: Duration,
    /// Whether the velocity was measured (the track was seen twice).
    moving: bool,
    /// Renewed in place by the current update (outside what the detection looked at).
    renewed: bool,
}

impl Track {
    fn from_rect(r: &Rect, at: Duration) -> Track {
        Track {
            cx: r.x as f64 + r.w as f64 / 2.0,
            cy: r.y as f64 + r.h as f64 / 2.0,
            w: r.w as f64,
            h: r.h as f64,
            vx: 0.0,
            vy: 0.0,
            seen: at,
            moving: false,
            renewed: false,
        }
    }

    /// The box at the last detection.
    fn rect(&self) -> Rect {
        Rect {
            x: (self.cx - self.w / 2.0).floor() as i32,
            y: (self.cy - self.h / 2.0).floor() as i32,
            w: self.w.ceil() as i32,
            h: self.h.ceil() as i32,
        }
    }

    /// How well a new box continues this track: overlap of the two, or centres closer than
    /// the track's size (fast motion between detections).
    fn affinity(&self, r: &Rect) -> f64 {
        let (x0, y0) = (self.cx - self.w / 2.0, self.cy - self.h / 2.0);
        let ix = (x0 + self.w).min((r.x + r.w) as f64) - x0.max(r.x as f64);
        let iy = (y0 + self.h).min((r.y + r.h) as f64) - y0.max(r.y as f64);
        let iou = if ix > 0.0 && iy > 0.0 {
            ix * iy / (self.w * self.h + (r.w * r.h) as f64 - ix * iy)
        } else {
            0.0
        };
        let dx = r.x as f64 + r.w as f64 / 2.0 - self.cx;
        let dy = r.y as f64 + r.h as f64 / 2.0 - self.cy;
        let near = 1.0 - (dx.hypot(dy) / self.w.max(self.h)).min(1.0);
        iou.max(near * 0.5)
    }
}

#[derive(Debug, Clone)]
pub struct Tracker {
    tracks: Vec<Track>,
    hold_lost: Duration,
}

impl Tracker {
    pub fn new(hold_lost: Duration) -> Tracker {
        Tracker {
            tracks: Vec::new(),
            hold_lost,
        }
    }

    /// Boxes detected on the frame captured at `at` (results arrive in capture order), by a
    /// detection that looked at the regions `looked_at` only (`None`: the whole frame). A
    /// track outside them sat where nothing moved: it is still there, and is renewed in
    /// place (still, as of `at`) instead of being counted as lost.
    pub fn update(&mut self, at: Duration, boxes: &[Rect], looked_at: Option<&[Rect]>) {
        if let Some(regions) = looked_at {
            for t in &mut self.tracks {
                let r = t.rect();
                if !regions.iter().any(|l| l.overlaps(&r)) {
                    t.seen = at;
                    (t.vx, t.vy, t.moving) = (0.0, 0.0, false);
                    t.renewed = true;
                }
            }
        }
        let mut taken: Vec<bool> = self.tracks.iter().map(|t| t.renewed).collect();
        let mut next = Vec::with_capacity(boxes.len());
        for r in boxes {
            let best = self
                .tracks
                .iter()
                .enumerate()
                .filter(|(i, _)| !taken[*i])
                .map(|(i, t)| (i, t.affinity(r)))
                .filter(|&(_, a)| a > 0.1)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let mut t = Track::from_rect(r, at);
            if let Some((i, _)) = best {
                taken[i] = true;
                let old = &self.tracks[i];
                let dt = at.saturating_sub(old.seen).as_secs_f64();
                if dt > 0.0 {
                    let (vx, vy) = ((t.cx - old.cx) / dt, (t.cy - old.cy) / dt);
                    // Smoothed, so one jittery detection does not fling the box away.
                    let keep = if old.moving { 0.5 } else { 0.0 };
                    t.vx = keep * old.vx + (1.0 - keep) * vx;
                    t.vy = keep * old.vy + (1.0 - keep) * vy;
                    t.moving = true;
                }
            }
            next.push(t);
        }
        // Tracks not reported this time are held until `hold_lost` has passed; renewed ones
        // are kept as they are.
        for (i, mut t) in self.tracks.drain(..).enumerate() {
            if t.renewed {
                t.renewed = false;
                next.push(t);
            } else if !taken[i] && at.saturating_sub(t.seen) <= self.hold_lost {
                next.push(t);
            }
        }
        self.tracks = next;
    }

    /// Where the tracked boxes are expected on the frame captured at `at`, grown on each side
    /// by `growth_per_sec` of their size per second since they were seen while their motion is
    /// unknown (a quarter of that once measured), plus half the distance their motion covers.
    pub fn predict(&self, at: Duration, growth_per_sec: f64) -> Vec<Rect> {
        self.tracks
            .iter()
            .map(|t| {
                // Frames older than the detection (queued) move backwards along the track.
                let dt = at.as_secs_f64() - t.seen.as_secs_f64();
                let (cx, cy) = (t.cx + t.vx * dt, t.cy + t.vy * dt);
                let age = dt.abs();
                let g = if t.moving {
                    growth_per_sec / 4.0
                } else {
                    growth_per_sec
                };
                let w = t.w * (1.0 + 2.0 * g * age) + t.vx.abs() * age;
                let h = t.h * (1.0 + 2.0 * g * age) + t.vy.abs() * age;
                let x0 = (cx - w / 2.0).floor();
                let y0 = (cy - h / 2.0).floor();
                Rect {
                    x: x0 as i32,
                    y: y0 as i32,
                    w: ((cx + w / 2.0).ceil() - x0) as i32,
                    h: ((cy + h / 2.0).ceil() - y0) as i32,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(x: i32) -> Rect {
        Rect {
            x,
            y: 100,
            w: 40,
            h: 40,
        }
    }

    fn covers(outer: &Rect, inner: &Rect) -> bool {
        outer.x <= inner.x
            && outer.y <= inner.y
            && outer.x + outer.w >= inner.x + inner.w
            && outer.y + outer.h >= inner.y + inner.h
    }

    #[test]
    fn a_face_moving_steadily_is_covered_on_every_frame_between_detections() {
        // A 40 px face (a person ~8 m away in 1080p) walks right at 150 px/s, ~1.5 m/s;
        // detection runs every 200 ms, frames come every 40 ms.
        let mut t = Tracker::new(ms(600));
        let truth = |ms_: u64| at(100 + (ms_ as i32) * 150 / 1000);
        for step in 0..10u64 {
            let now = step * 200;
            t.update(ms(now), &[truth(now)], None);
            for f in 1..5 {
                let frame = now + f * 40;
                let boxes = t.predict(ms(frame), 4.0);
                assert!(
                    boxes.iter().any(|b| covers(b, &truth(frame))),
                    "{frame} ms: face at {:?} not covered by {boxes:?}",
                    truth(frame)
                );
            }
        }
    }

    #[test]
    fn a_missed_detection_does_not_uncover_the_face_and_a_gone_one_is_released() {
        let mut t = Tracker::new(ms(600));
        t.update(ms(0), &[at(100)], None);
        t.update(ms(200), &[], None);
        assert!(covers(&t.predict(ms(200), 1.0)[0], &at(100)));
        t.update(ms(900), &[], None);
        assert!(t.predict(ms(900), 1.0).is_empty());
    }

    #[test]
    fn two_faces_keep_their_own_tracks() {
        let mut t = Tracker::new(ms(600));
        t.update(ms(0), &[at(100), at(400)], None);
        t.update(ms(100), &[at(110), at(390)], None);
        let p = t.predict(ms(200), 0.0);
        assert_eq!(p.len(), 2);
        // One moves right, the other left.
        let mut xs: Vec<i32> = p.iter().map(|b| b.x + b.w / 2).collect();
        xs.sort();
        // Each moved 10 px in 100 ms: 10 more by 200 ms.
        assert!((138..=142).contains(&xs[0]), "{xs:?}");
        assert!((398..=402).contains(&xs[1]), "{xs:?}");
    }

    #[test]
    fn a_still_face_outside_what_a_detection_looked_at_is_kept_and_stops_growing() {
        let mut t = Tracker::new(ms(600));
        t.update(ms(0), &[at(100)], None);
        // Later detections look only at a region far away (where something moved).
        let elsewhere = [Rect {
            x: 1000,
            y: 0,
            w: 200,
            h: 200,
        }];
        t.update(ms(2000), &[], Some(&elsewhere));
        let p = t.predict(ms(2000), 4.0);
        assert_eq!(p, vec![at(100)], "kept where it was, not grown");
        // Looked at and not found there any more: held, then released.
        t.update(ms(2100), &[], None);
        assert_eq!(t.predict(ms(2100), 4.0).len(), 1);
        t.update(ms(2800), &[], None);
        assert!(t.predict(ms(2800), 4.0).is_empty());
    }
}
