//! The fail-safe between a detector and the frames: it decides, for each frame, what must be
//! hidden, from detection results that arrive late, rarely, or not at all.
//!
//! The rule: output degrades toward more redaction, never less. Between detections a tracker
//! carries each box along its measured velocity and grows it with the time since it was seen
//! (a face moves, and may turn); a box the detector stops reporting is held a while longer;
//! past the detector's budget, or after it failed, or before it has answered once, the whole
//! frame is blanked. A pure state machine: time is an input, so the tests below replay stalls
//! and crashes without a clock.

use std::time::Duration;

use crate::redact::Rect;
use crate::track::Tracker;

/// What a detector reported for one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Detections {
    /// Capture time (monotonic) of the frame the detector looked at.
    pub captured: Duration,
    pub boxes: Vec<Rect>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailSafePolicy {
    /// Results older than this are too old to trust: the frame is blanked.
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
    /// Hide these regions (possibly none).
    Redact(Vec<Rect>),
    /// Hide everything: no trustworthy detection covers this frame.
    BlankFrame { reason: &'static str },
}

#[derive(Debug, Clone)]
pub struct FailSafe {
    policy: FailSafePolicy,
    /// Capture time of the newest result.
    latest: Option<Duration>,
    tracker: Tracker,
    failed: bool,
}

impl FailSafe {
    pub fn new(policy: FailSafePolicy) -> Self {
        FailSafe {
            policy,
            latest: None,
            tracker: Tracker::new(policy.hold_lost),
            failed: false,
        }
    }

    /// A detector result. Out-of-order results (older than what we hold) are ignored.
    pub fn on_detections(&mut self, d: Detections) {
        if self.latest.is_none_or(|l| d.captured >= l) {
            self.latest = Some(d.captured);
            self.tracker.update(d.captured, &d.boxes);
            self.failed = false;
        }
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
        // A frame older than the result (a reordered or queued frame) is judged by the same
        // result: the age is the gap in either direction.
        if captured.abs_diff(latest) > self.policy.budget {
            return Decision::BlankFrame {
                reason: "detection too old",
            };
        }
        Decision::Redact(self.tracker.predict(captured, self.policy.growth_per_sec))
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
            Decision::Redact(boxes) => boxes.iter().map(|b| b.w as i64 * b.h as i64).sum(),
            Decision::BlankFrame { .. } => i64::MAX,
        }
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
        });
        // Recovered: the face it no longer reports is held a while, then released.
        let Decision::Redact(held) = fs.decide(ms(80)) else {
            panic!("still blank after recovery")
        };
        assert!(held.len() == 1 && held[0].x <= FACE.x && held[0].w >= FACE.w);
        fs.on_detections(Detections {
            captured: ms(800),
            boxes: vec![],
        });
        assert_eq!(fs.decide(ms(800)), Decision::Redact(vec![]));
    }

    #[test]
    fn late_results_do_not_replace_newer_ones() {
        let mut fs = FailSafe::new(FailSafePolicy::default());
        fs.on_detections(Detections {
            captured: ms(500),
            boxes: vec![FACE],
        });
        fs.on_detections(Detections {
            captured: ms(100),
            boxes: vec![],
        });
        assert_eq!(fs.decide(ms(500)), Decision::Redact(vec![FACE]));
    }
}
