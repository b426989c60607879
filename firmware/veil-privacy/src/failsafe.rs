//! The fail-safe between a detector and the frames: it decides, for each frame, what must be
//! hidden, from detection results that arrive late, rarely, or not at all.
//!
//! The rule: output degrades toward more redaction, never less, and only where it must.
//! Between detections a tracker carries each box along its measured velocity and grows it
//! with the time since it was seen (a face moves, and may turn); a box the detector stops
//! reporting is held a while longer. Every frame also brings the moving regions (blobs) the
//! engine's cheap per-frame motion analysis found: a blob the last detection did not look at
//! (someone who just walked in) is hidden until a detection has checked it. Past the
//! detector's budget the picture is hidden regionally: every moving region and every tracked
//! box (frozen at the budget's growth); only when most of the picture moves, after the
//! detector failed, or before it has answered once, is the whole frame blanked. A pure state
//! machine: time is an input, so the tests below replay stalls and crashes without a clock.

use std::collections::VecDeque;
use std::time::Duration;

use crate::redact::Rect;
use crate::track::Tracker;

/// What a detector reported for one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Detections {
    /// Capture time (monotonic) of the frame the detector looked at.
    pub captured: Duration,
    pub boxes: Vec<Rect>,
    /// The regions the detector looked at (`None`: the whole frame). Outside them nothing
    /// moved, so what was tracked there is still there.
    pub looked_at: Option<Vec<Rect>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailSafePolicy {
    /// Results older than this are too old to trust: moving regions are hidden whole (or the
    /// frame, when most of it moves).
    pub budget: Duration,
    /// How fast held boxes grow, as a fraction of their size per second, each side, while
    /// their motion is unknown (a quarter of it once the tracker has measured it). 4 covers a
    /// face walking across the picture between two detections 200 ms apart.
    pub growth_per_sec: f64,
    /// How long a box the detector no longer reports is still hidden (a missed detection, a
    /// face turning away for a moment).
    pub hold_lost: Duration,
}

impl Default for FailSafePolicy {
    fn default() -> Self {
        FailSafePolicy {
            budget: Duration::from_millis(1000),
            growth_per_sec: 4.0,
            hold_lost: Duration::from_millis(600),
        }
    }
}

/// What to do to a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Hide these regions (possibly none): the detector vouches for the rest.
    Redact(Vec<Rect>),
    /// The detection is too old to vouch for what moved: hide these regions (every moving
    /// region and tracked box); the still background stays visible.
    Regional {
        boxes: Vec<Rect>,
        reason: &'static str,
    },
    /// Hide everything: no trustworthy detection covers this frame.
    BlankFrame { reason: &'static str },
}

/// Share of the picture moving beyond which a stale detection blanks the whole frame (the
/// camera moved, the light changed: regions would not mean much).
const MOVING_SHARE_TO_BLANK: f64 = 0.6;

/// Motion history kept to find the blobs a detection looked at: enough frames for results as
/// late as the budget at 30 fps, and then some.
const MOTION_HISTORY: usize = 64;

#[derive(Debug, Clone)]
pub struct FailSafe {
    policy: FailSafePolicy,
    /// Capture time of the newest result.
    latest: Option<Duration>,
    tracker: Tracker,
    failed: bool,
    /// Moving regions of recent frames (capture time, blobs), oldest first; empty when the
    /// engine does no motion analysis (then only the tracker and the budget decide).
    /// Moving regions by capture time; `None`: the analysis had nothing to compare with.
    motion: VecDeque<(Duration, Option<Vec<Rect>>)>,
    /// The frame size, for the share of the picture that moves.
    frame_size: (u32, u32),
}

impl FailSafe {
    pub fn new(policy: FailSafePolicy) -> Self {
        FailSafe {
            policy,
            latest: None,
            tracker: Tracker::new(policy.hold_lost),
            failed: false,
            motion: VecDeque::new(),
            frame_size: (0, 0),
        }
    }

    /// A detector result. Out-of-order results (older than what we hold) are ignored.
    pub fn on_detections(&mut self, d: Detections) {
        if self.latest.is_none_or(|l| d.captured >= l) {
            self.latest = Some(d.captured);
            self.tracker
                .update(d.captured, &d.boxes, d.looked_at.as_deref());
            self.failed = false;
        }
    }

    /// The moving regions of the frame captured at `captured` (of `width`x`height`), from the
    /// engine's per-frame motion analysis; call before [`FailSafe::decide`] for that frame.
    pub fn on_motion(&mut self, captured: Duration, width: u32, height: u32, blobs: &[Rect]) {
        self.frame_size = (width, height);
        self.remember(captured, Some(blobs.to_vec()));
    }

    /// The motion analysis could not tell what moved in the frame captured at `captured` (the
    /// first frame of a picture size): that frame is blanked, as nothing vouches for it.
    pub fn on_unknown_motion(&mut self, captured: Duration, width: u32, height: u32) {
        self.frame_size = (width, height);
        self.remember(captured, None);
    }

    fn remember(&mut self, captured: Duration, blobs: Option<Vec<Rect>>) {
        if self.motion.len() == MOTION_HISTORY {
            self.motion.pop_front();
        }
        self.motion.push_back((captured, blobs));
    }

    /// Where the tracked boxes are expected on the frame captured at `at`.
    pub fn tracked(&self, at: Duration) -> Vec<Rect> {
        self.tracker.predict(at, self.policy.growth_per_sec)
    }

    /// Capture time of the newest detection absorbed.
    pub fn latest(&self) -> Option<Duration> {
        self.latest
    }

    /// The detector errored or crashed: until it answers again, nothing is trusted.
    pub fn on_detector_failure(&mut self) {
        self.failed = true;
    }

    /// The decision for a frame captured at `captured`.
    pub fn decide(&self, captured: Duration) -> Decision {
        if self.failed {
            return Decision::BlankFrame {
                reason: "detector failed",
            };
        }
        let Some(latest) = self.latest else {
            return Decision::BlankFrame {
                reason: "no detection yet",
            };
        };
        let moving = match self.motion_at(captured) {
            // Unknown motion matters only where no detection looked at this very frame.
            Some(None) if captured != latest => {
                return Decision::BlankFrame {
                    reason: "no motion information for this frame",
                };
            }
            recorded => recorded.flatten(),
        };
        // A frame older than the result (a reordered or queued frame) is judged by the same
        // result: the age is the gap in either direction.
        if captured.abs_diff(latest) > self.policy.budget {
            const REASON: &str = "detection too old";
            let Some(moving) = moving else {
                return Decision::BlankFrame { reason: REASON };
            };
            if self.moving_share(moving) > MOVING_SHARE_TO_BLANK {
                return Decision::BlankFrame { reason: REASON };
            }
            // Tracked boxes as grown at the budget's end; what moved since is in `moving`.
            let frozen = if captured > latest {
                latest + self.policy.budget
            } else {
                latest.saturating_sub(self.policy.budget)
            };
            let mut boxes = self.tracker.predict(frozen, self.policy.growth_per_sec);
            boxes.extend_from_slice(moving);
            return Decision::Regional {
                boxes,
                reason: REASON,
            };
        }
        let mut boxes = self.tracker.predict(captured, self.policy.growth_per_sec);
        if let Some(moving) = moving {
            boxes.extend(self.unchecked(moving, latest));
        }
        Decision::Redact(boxes)
    }

    /// The share of the picture under `blobs` (their union, on a 64x36 grid: blobs overlap).
    fn moving_share(&self, blobs: &[Rect]) -> f64 {
        const GX: usize = 64;
        const GY: usize = 36;
        let (w, h) = self.frame_size;
        if w == 0 || h == 0 {
            return 1.0;
        }
        let mut hit = 0;
        for gy in 0..GY {
            for gx in 0..GX {
                let x = ((gx as f64 + 0.5) * w as f64 / GX as f64) as i32;
                let y = ((gy as f64 + 0.5) * h as f64 / GY as f64) as i32;
                hit += blobs
                    .iter()
                    .any(|b| x >= b.x && x < b.x + b.w && y >= b.y && y < b.y + b.h)
                    as usize;
            }
        }
        hit as f64 / (GX * GY) as f64
    }

    /// What the engine reported of the frame captured at `at`: nothing (`None`), that it
    /// could not tell (`Some(None)`), or its moving regions.
    fn motion_at(&self, at: Duration) -> Option<Option<&[Rect]>> {
        self.motion
            .iter()
            .rev()
            .find(|(t, _)| *t == at)
            .map(|(_, b)| b.as_deref())
    }

    /// The moving regions of the frame captured at `at`, if the engine reported them.
    fn blobs_at(&self, at: Duration) -> Option<&[Rect]> {
        self.motion_at(at).flatten()
    }

    /// The blobs of `moving` that no blob of the frame the detector last looked at (captured
    /// at `checked`) could have become: someone who walked in since. A checked blob reaches
    /// as far as half its size on each side (it moved, it grew); a history that no longer
    /// holds the checked frame vouches for nothing.
    fn unchecked<'a>(
        &'a self,
        moving: &'a [Rect],
        checked: Duration,
    ) -> impl Iterator<Item = Rect> + 'a {
        let seen = self.blobs_at(checked).unwrap_or(&[]);
        moving.iter().copied().filter(move |b| {
            !seen.iter().any(|c| {
                let reach = Rect {
                    x: c.x - c.w / 2,
                    y: c.y - c.h / 2,
                    w: c.w * 2,
                    h: c.h * 2,
                };
                reach.overlaps(b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const FACE: Rect = Rect {
        x: 100,
        y: 100,
        w: 40,
        h: 40,
    };

    fn area(d: &Decision) -> i64 {
        match d {
            Decision::Redact(boxes) | Decision::Regional { boxes, .. } => {
                boxes.iter().map(|b| b.w as i64 * b.h as i64).sum()
            }
            Decision::BlankFrame { .. } => i64::MAX,
        }
    }

    #[test]
    fn a_frame_the_motion_analysis_knows_nothing_about_is_blanked() {
        let mut fs = FailSafe::new(FailSafePolicy::default());
        fs.on_motion(ms(0), 1920, 1080, &[]);
        fs.on_detections(Detections {
            captured: ms(0),
            boxes: vec![],
            looked_at: None,
        });
        fs.on_unknown_motion(ms(40), 1280, 720);
        assert!(matches!(fs.decide(ms(40)), Decision::BlankFrame { .. }));
        // Once a detection has looked at that very frame, it is vouched for.
        fs.on_detections(Detections {
            captured: ms(40),
            boxes: vec![],
            looked_at: None,
        });
        assert!(matches!(fs.decide(ms(40)), Decision::Redact(_)));
        fs.on_motion(ms(80), 1280, 720, &[]);
        assert!(matches!(fs.decide(ms(80)), Decision::Redact(_)));
    }

    #[test]
    fn nothing_leaves_before_the_detector_has_spoken() {
        let fs = FailSafe::new(FailSafePolicy::default());
        assert_eq!(
            fs.decide(ms(0)),
            Decision::BlankFrame {
                reason: "no detection yet"
            }
        );
    }

    #[test]
    fn fresh_detections_redact_exactly_their_boxes() {
        let mut fs = FailSafe::new(FailSafePolicy::default());
        fs.on_detections(Detections {
            captured: ms(1000),
            boxes: vec![FACE],
            looked_at: None,
        });
        assert_eq!(fs.decide(ms(1000)), Decision::Redact(vec![FACE]));
    }

    #[test]
    fn a_stalled_detector_never_makes_output_less_redacted() {
        // The detector answers once, then stalls. Frames keep coming every 40 ms: each must be
        // at least as redacted as the one before, ending blank.
        let mut fs = FailSafe::new(FailSafePolicy::default());
        fs.on_detections(Detections {
            captured: ms(0),
            boxes: vec![FACE],
            looked_at: None,
        });
        let mut previous = 0;
        for t in (0..2000).step_by(40) {
            let d = fs.decide(ms(t));
            let a = area(&d);
            assert!(
                a >= previous,
                "frame at {t} ms is less redacted ({a} < {previous})"
            );
            if let Decision::Redact(boxes) = &d {
                assert!(
                    boxes
                        .iter()
                        .all(|b| b.x <= FACE.x && b.x + b.w >= FACE.x + FACE.w),
                    "{t} ms: the face is not covered"
                );
            }
            previous = a;
        }
        assert!(matches!(fs.decide(ms(1960)), Decision::BlankFrame { .. }));
    }

    #[test]
    fn a_crashing_detector_blanks_until_it_recovers() {
        let mut fs = FailSafe::new(FailSafePolicy::default());
        fs.on_detections(Detections {
            captured: ms(0),
            boxes: vec![FACE],
            looked_at: None,
        });
        fs.on_detector_failure();
        assert_eq!(
            fs.decide(ms(40)),
            Decision::BlankFrame {
                reason: "detector failed"
            }
        );
        fs.on_detections(Detections {
            captured: ms(80),
            boxes: vec![],
            looked_at: None,
        });
        // Recovered: the face it no longer reports is held a while, then released.
        let Decision::Redact(held) = fs.decide(ms(80)) else {
            panic!("still blank after recovery")
        };
        assert!(held.len() == 1 && held[0].x <= FACE.x && held[0].w >= FACE.w);
        fs.on_detections(Detections {
            captured: ms(800),
            boxes: vec![],
            looked_at: None,
        });
        assert_eq!(fs.decide(ms(800)), Decision::Redact(vec![]));
    }

    #[test]
    fn late_results_do_not_replace_newer_ones() {
        let mut fs = FailSafe::new(FailSafePolicy::default());
        fs.on_detections(Detections {
            captured: ms(500),
            boxes: vec![FACE],
            looked_at: None,
        });
        fs.on_detections(Detections {
            captured: ms(100),
            boxes: vec![],
            looked_at: None,
        });
        assert_eq!(fs.decide(ms(500)), Decision::Redact(vec![FACE]));
    }

    const WALKER: Rect = Rect {
        x: 1500,
        y: 600,
        w: 60,
        h: 160,
    };

    fn blanked(d: &Decision) -> bool {
        matches!(d, Decision::BlankFrame { .. })
    }

    fn hidden(d: &Decision, r: &Rect) -> bool {
        let boxes = match d {
            Decision::Redact(b) | Decision::Regional { boxes: b, .. } => b,
            Decision::BlankFrame { .. } => return true,
        };
        boxes
            .iter()
            .any(|b| b.x <= r.x && b.y <= r.y && b.x + b.w >= r.x + r.w && b.y + b.h >= r.y + r.h)
    }

    #[test]
    fn someone_who_walks_in_is_hidden_until_a_detection_has_looked_at_them() {
        let mut fs = FailSafe::new(FailSafePolicy::default());
        fs.on_motion(ms(0), 1920, 1080, &[]);
        fs.on_detections(Detections {
            captured: ms(0),
            boxes: vec![],
            looked_at: None,
        });
        // A walker appears at 40 ms; the detector is still on the frame of 0 ms.
        fs.on_motion(ms(40), 1920, 1080, &[WALKER]);
        let d = fs.decide(ms(40));
        assert!(!blanked(&d) && hidden(&d, &WALKER), "{d:?}");
        // The detector looked at the frame of 40 ms and found no face: the blob is checked,
        // and it stays checked while it walks on (less than half its size per detection).
        fs.on_detections(Detections {
            captured: ms(40),
            boxes: vec![],
            looked_at: None,
        });
        let moved = Rect {
            x: WALKER.x - 20,
            ..WALKER
        };
        fs.on_motion(ms(80), 1920, 1080, &[moved]);
        assert_eq!(fs.decide(ms(80)), Decision::Redact(vec![]));
        // A blob far from anything checked is new again.
        let other = Rect { x: 100, ..WALKER };
        fs.on_motion(ms(120), 1920, 1080, &[moved, other]);
        assert_eq!(fs.decide(ms(120)), Decision::Redact(vec![other]));
    }

    #[test]
    fn a_late_detector_hides_what_moves_not_the_whole_frame() {
        let mut fs = FailSafe::new(FailSafePolicy::default());
        fs.on_motion(ms(0), 1920, 1080, &[]);
        fs.on_detections(Detections {
            captured: ms(0),
            boxes: vec![FACE],
            looked_at: None,
        });
        // 1.5 s later, no newer detection: the walker and the (still) face stay hidden,
        // the background does not; the face's box stops growing at the budget.
        fs.on_motion(ms(1500), 1920, 1080, &[WALKER]);
        let d = fs.decide(ms(1500));
        let Decision::Regional { boxes, .. } = &d else {
            panic!("{d:?}")
        };
        assert!(hidden(&d, &WALKER) && hidden(&d, &FACE), "{d:?}");
        let later = {
            fs.on_motion(ms(5000), 1920, 1080, &[WALKER]);
            fs.decide(ms(5000))
        };
        assert_eq!(area(&d), area(&later), "{boxes:?} vs {later:?}");
        // Overlapping blobs count once: two copies of half the picture are half the picture.
        let half = Rect {
            x: 0,
            y: 0,
            w: 960,
            h: 1080,
        };
        fs.on_motion(ms(5020), 1920, 1080, &[half, half, half]);
        assert!(matches!(fs.decide(ms(5020)), Decision::Regional { .. }));
        // Most of the picture moving: the frame is blanked.
        let most = Rect {
            x: 0,
            y: 0,
            w: 1920,
            h: 800,
        };
        fs.on_motion(ms(5040), 1920, 1080, &[most]);
        assert!(blanked(&fs.decide(ms(5040))));
    }

    #[test]
    fn without_motion_analysis_a_late_detector_blanks_the_frame() {
        let mut fs = FailSafe::new(FailSafePolicy::default());
        fs.on_detections(Detections {
            captured: ms(0),
            boxes: vec![],
            looked_at: None,
        });
        assert!(blanked(&fs.decide(ms(1500))));
    }

    #[test]
    fn motion_history_forgotten_vouches_for_nothing() {
        let mut fs = FailSafe::new(FailSafePolicy::default());
        fs.on_motion(ms(0), 1920, 1080, &[WALKER]);
        fs.on_detections(Detections {
            captured: ms(0),
            boxes: vec![],
            looked_at: None,
        });
        for i in 1..=MOTION_HISTORY as u64 {
            fs.on_motion(ms(i * 10), 1920, 1080, &[WALKER]);
        }
        // The checked frame (0 ms) has left the history: the same blob counts as unchecked.
        assert!(hidden(&fs.decide(ms(MOTION_HISTORY as u64 * 10)), &WALKER));
    }

    mod property {
        use proptest::prelude::*;

        use super::*;

        fn rect() -> impl Strategy<Value = Rect> {
            (0..1800i32, 0..1000i32, 8..300i32, 8..300i32).prop_map(|(x, y, w, h)| Rect {
                x,
                y,
                w,
                h,
            })
        }

        /// A frame's moving regions, and maybe a detection finishing then: how many frames
        /// back the frame it looked at was, and the faces it found.
        type Step = (Vec<Rect>, Option<(u64, Vec<Rect>)>);

        /// One frame every 40 ms.
        fn timeline() -> impl Strategy<Value = Vec<Step>> {
            let step = (
                proptest::collection::vec(rect(), 0..4),
                proptest::option::of((0u64..40, proptest::collection::vec(rect(), 0..3))),
            );
            proptest::collection::vec(step, 1..80)
        }

        fn covered(d: &Decision, r: &Rect) -> bool {
            let boxes = match d {
                Decision::Redact(b) | Decision::Regional { boxes: b, .. } => b,
                Decision::BlankFrame { .. } => return true,
            };
            // Every pixel of `r` under some box (boxes may overlap and split it).
            (r.y..r.y + r.h).step_by(4).all(|y| {
                (r.x..r.x + r.w).step_by(4).all(|x| {
                    boxes
                        .iter()
                        .any(|b| x >= b.x && x < b.x + b.w && y >= b.y && y < b.y + b.h)
                })
            })
        }

        proptest! {
            /// Whatever the motion and however late the detections: a face the newest
            /// detection reported is hidden on its own frame, a moving region no detection has
            /// looked at is hidden, and past the budget every moving region is hidden.
            #[test]
            fn what_no_detection_vouches_for_is_hidden(steps in timeline()) {
                let mut fs = FailSafe::new(FailSafePolicy::default());
                let mut frames: Vec<(Duration, Vec<Rect>)> = Vec::new();
                let mut newest: Option<(Duration, Vec<Rect>)> = None;
                for (i, (blobs, done)) in steps.into_iter().enumerate() {
                    let now = ms(i as u64 * 40);
                    fs.on_motion(now, 1920, 1080, &blobs);
                    frames.push((now, blobs.clone()));
                    if let Some((back, faces)) = done {
                        let at = now.saturating_sub(ms(back * 40));
                        if newest.as_ref().is_none_or(|(t, _)| at >= *t) {
                            newest = Some((at, faces.clone()));
                        }
                        fs.on_detections(Detections { captured: at, boxes: faces, looked_at: None });
                    }
                    let d = fs.decide(now);
                    let Some((checked, faces)) = &newest else {
                        let blank = matches!(d, Decision::BlankFrame { .. });
                        prop_assert!(blank, "nothing detected yet, and {:?}", d);
                        continue;
                    };
                    if *checked == now {
                        for f in faces {
                            prop_assert!(covered(&d, f), "face {f:?} shows at {now:?}: {d:?}");
                        }
                    }
                    let seen: &[Rect] = frames
                        .iter()
                        .rev()
                        .take(MOTION_HISTORY)
                        .find(|(t, _)| t == checked)
                        .map(|(_, b)| b.as_slice())
                        .unwrap_or(&[]);
                    let stale = now.abs_diff(*checked) > FailSafePolicy::default().budget;
                    for b in &blobs {
                        let reached = seen.iter().any(|c| {
                            Rect { x: c.x - c.w / 2, y: c.y - c.h / 2, w: c.w * 2, h: c.h * 2 }
                                .overlaps(b)
                        });
                        if stale || !reached {
                            prop_assert!(covered(&d, b), "blob {b:?} shows at {now:?}: {d:?}");
                        }
                    }
                }
            }
        }
    }
}
