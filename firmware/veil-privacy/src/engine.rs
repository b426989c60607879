//! The privacy stage of a camera: detection on its own thread, the fail-safe, redaction and
//! masks on every frame.
//!
//! The detector never holds a frame up: it gets a copy when it is free (otherwise the frame
//! goes on without new detection), and its results come back asynchronously. A frame is only
//! handed over once the previous answer is back, so the detector always starts on the newest
//! frame, never on one that waited through a whole detection. Every frame is redacted from
//! the fail-safe's decision, which only ever errs toward hiding more; every frame blanked
//! whole is counted, with the reason, in [`PrivacyStats`].

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use veil_core::Error;
use veil_core::geometry::Point;
use veil_media::Frame;

use crate::detection::DetectionSetup;
pub use crate::detector::Detector;
use crate::failsafe::{Decision, Detections, FailSafe, FailSafePolicy};
use crate::mask::{MaskHandle, Masks};
use crate::motion::{MotionDetector, MotionSettings};
use crate::redact::{self, Rect, Style};

impl Detector for MotionDetector {
    /// What moved; on the first frame of a size, nothing is known: all of it is hidden.
    fn detect(&mut self, frame: &Frame) -> Result<Vec<Rect>, Error> {
        Ok(MotionDetector::detect(self, frame).unwrap_or_else(|| {
            vec![Rect {
                x: 0,
                y: 0,
                w: frame.width() as i32,
                h: frame.height() as i32,
            }]
        }))
    }
    fn name(&self) -> &'static str {
        "motion"
    }
}

/// Named presets a camera (or a live session) picks; `docs/privacy.md` says what each hides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Static masks only.
    MasksOnly,
    /// Masks, and every moving object hidden.
    Motion,
    /// Masks, and faces (detected and tracked).
    Faces,
    /// Masks, faces and licence plates.
    FacesPlates,
    /// Masks, faces, plates, and every moving object.
    Strict,
    /// The whole picture reduced to coarse blocks: traffic flows, queues and occupancy stay
    /// visible, no person or plate can be recognized. Needs no model.
    Silhouette,
}

/// The preset a configuration names.
impl From<veil_core::config::FilterName> for Filter {
    fn from(name: veil_core::config::FilterName) -> Filter {
        use veil_core::config::FilterName;
        match name {
            FilterName::MasksOnly => Filter::MasksOnly,
            FilterName::Motion => Filter::Motion,
            FilterName::Faces => Filter::Faces,
            FilterName::FacesPlates => Filter::FacesPlates,
            FilterName::Strict => Filter::Strict,
            FilterName::Silhouette => Filter::Silhouette,
        }
    }
}

impl Filter {
    pub const ALL: [Filter; 6] = [
        Filter::MasksOnly,
        Filter::Motion,
        Filter::Faces,
        Filter::FacesPlates,
        Filter::Strict,
        Filter::Silhouette,
    ];

    /// The name in configuration files and commands.
    pub fn name(self) -> &'static str {
        match self {
            Filter::MasksOnly => "masks-only",
            Filter::Motion => "motion",
            Filter::Faces => "faces",
            Filter::FacesPlates => "faces-plates",
            Filter::Strict => "strict",
            Filter::Silhouette => "silhouette",
        }
    }

    pub fn from_name(name: &str) -> Option<Filter> {
        Filter::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn needs_face_model(self) -> bool {
        matches!(self, Filter::Faces | Filter::FacesPlates | Filter::Strict)
    }

    pub fn needs_plate_model(self) -> bool {
        matches!(self, Filter::FacesPlates | Filter::Strict)
    }

    pub fn hides_motion(self) -> bool {
        matches!(self, Filter::Motion | Filter::Strict)
    }

    /// The frame rate this filter is offered at (live sessions and previews): detection
    /// filters at a rate the detectors and tracker keep up with on the smallest board,
    /// silhouette lower since it serves flows, not details.
    pub fn frame_rate(self) -> u32 {
        match self {
            Filter::MasksOnly | Filter::Motion => 25,
            Filter::Faces | Filter::FacesPlates | Filter::Strict => 15,
            Filter::Silhouette => 10,
        }
    }
}

pub struct EngineConfig {
    pub filter: Filter,
    pub masks: Vec<Vec<Point>>,
    pub style: Style,
    pub policy: FailSafePolicy,
    /// Where the models are and what runs them; needed by filters that detect faces.
    pub detection: Option<DetectionSetup>,
}

enum Report {
    Found(Detections),
    Failed(String),
}

/// What one engine did to the frames that left it; shared with status, telemetry and metrics.
#[derive(Debug, Default)]
pub struct PrivacyStats {
    frames: AtomicU64,
    blanked: AtomicU64,
    regional: AtomicU64,
    last_blank: Mutex<Option<String>>,
}

impl PrivacyStats {
    /// Frames the engine let out.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }
    /// Of those, frames blanked whole because no detection could vouch for them.
    pub fn blanked(&self) -> u64 {
        self.blanked.load(Ordering::Relaxed)
    }
    /// Of those, frames whose detection was too old, let out with every moving region
    /// hidden (the still background visible).
    pub fn regional(&self) -> u64 {
        self.regional.load(Ordering::Relaxed)
    }
    /// Why the last blanked frame was blanked (which detector, and what went wrong).
    pub fn last_blank_reason(&self) -> Option<String> {
        self.last_blank
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A frame let out whole, as it was redacted.
    pub fn count_frame(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
    }

    /// A frame let out with its moving regions hidden because detection fell behind.
    pub fn count_regional(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.regional.fetch_add(1, Ordering::Relaxed);
    }

    /// A frame let out blanked whole, and why (`source: reason`). The log says so when
    /// blanking starts, when its reason changes and after every 250 blanked frames; the reason
    /// is only written out when it changes, so a run of blanked frames allocates nothing.
    pub fn count_blank(&self, source: &str, reason: &str) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        let n = self.blanked.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_blank.lock().unwrap_or_else(|e| e.into_inner());
        let same = last.as_deref().is_some_and(|l| {
            l.strip_prefix(source)
                .and_then(|rest| rest.strip_prefix(": "))
                .is_some_and(|rest| rest == reason)
        });
        if !same {
            *last = Some(format!("{source}: {reason}"));
        }
        if !same || n.is_multiple_of(250) {
            let reason = last.as_deref().unwrap_or_default();
            tracing::warn!(%reason, blanked = n, "privacy: frame blanked whole");
        }
    }
}

/// A frame for the detector, and where to look (`None`: everywhere).
type Job = (Frame, Option<Vec<Rect>>);

struct Worker {
    frames: Option<SyncSender<Job>>,
    reports: Receiver<Report>,
    thread: Option<JoinHandle<()>>,
    /// A reusable copy buffer handed back and forth with the detector thread.
    spare: Option<Frame>,
    returned: Receiver<Frame>,
    /// A frame was handed over and its answer is not back yet.
    busy: bool,
    /// What the detector finds, for the blank reason.
    name: &'static str,
}

impl Worker {
    fn start(
        name: &str,
        detector_name: &'static str,
        mut detector: Box<dyn Detector>,
    ) -> std::io::Result<Worker> {
        let (frames_tx, frames_rx) = sync_channel::<Job>(1);
        let (reports_tx, reports) = sync_channel::<Report>(8);
        let (return_tx, returned) = sync_channel::<Frame>(2);
        let thread = std::thread::Builder::new()
            .name(format!("det-{name}"))
            .spawn(move || {
                while let Ok((frame, focus)) = frames_rx.recv() {
                    let captured = frame.meta.capture_mono;
                    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| match &focus {
                        Some(focus) => detector.detect_in(&frame, focus),
                        None => detector.detect(&frame).map(|b| (b, None)),
                    }));
                    let report = match outcome {
                        Ok(Ok((boxes, looked_at))) => Report::Found(Detections {
                            captured,
                            boxes,
                            looked_at,
                        }),
                        Ok(Err(e)) => Report::Failed(e.to_string()),
                        Err(_) => Report::Failed("detector crashed".into()),
                    };
                    if reports_tx.send(report).is_err() {
                        return;
                    }
                    let _ = return_tx.try_send(frame);
                }
            })?;
        Ok(Worker {
            frames: Some(frames_tx),
            reports,
            thread: Some(thread),
            spare: None,
            returned,
            busy: false,
            name: detector_name,
        })
    }

    /// Hands a copy of `frame` to the detector if it is free (its last answer is back), so
    /// the one slot of the channel never holds a frame that waits through a detection.
    fn offer(&mut self, frame: &Frame, focus: Option<Vec<Rect>>) {
        if self.busy {
            return;
        }
        let Some(tx) = &self.frames else { return };
        if self.spare.is_none() {
            self.spare = self.returned.try_recv().ok();
        }
        let mut copy = match self.spare.take() {
            Some(f) if (f.width(), f.height()) == (frame.width(), frame.height()) => f,
            _ => Frame::new(frame.width(), frame.height()),
        };
        copy.data_mut().copy_from_slice(frame.data());
        copy.meta = frame.meta;
        match tx.try_send((copy, focus)) {
            Ok(()) => self.busy = true,
            Err(TrySendError::Full((f, _))) | Err(TrySendError::Disconnected((f, _))) => {
                self.spare = Some(f)
            }
        }
    }

    /// The next answer, waiting as long as the detector needs; `None` if its thread is gone.
    fn wait_report(&mut self) -> Option<Report> {
        let report = self.reports.recv().ok();
        self.busy = false;
        report
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.frames = None;
        // A stalled detector may never return; do not wait for it.
        if let Some(t) = self.thread.take()
            && t.is_finished()
        {
            let _ = t.join();
        }
    }
}

/// A detector on its own thread and the fail-safe that judges its answers.
struct Stage {
    worker: Worker,
    failsafe: FailSafe,
    /// Fed the engine's motion analysis, and shown only where things moved or are tracked
    /// (model detectors; the motion detector sees everything anyway).
    gated: bool,
    /// Capture time of the last frame offered for a look at the whole picture.
    last_sweep: Option<std::time::Duration>,
}

/// How often a gated detector still looks at the whole picture: what appeared without moving
/// enough to count as motion (a face turning toward the camera) is found within this.
const FULL_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// One camera's privacy engine: masks, and one stage per detector (faces at their own pace,
/// motion at its own); a frame is hidden where any stage says so, and blanked if any stage
/// cannot vouch for it.
pub struct Engine {
    masks: Masks,
    mask_updates: MaskHandle,
    style: Style,
    stages: Vec<Stage>,
    /// Per-frame motion analysis for the model detectors' fail-safes (new blobs are hidden
    /// until a detection has looked at them; a late detection hides only what moves).
    motion: Option<MotionDetector>,
    /// The current frame's moving regions, when there is motion analysis.
    blobs: Option<Vec<Rect>>,
    silhouette: bool,
    stats: Arc<PrivacyStats>,
}

impl Engine {
    /// The engine for `config.filter`. Fails (naming the model file) when the filter needs a
    /// model that cannot be loaded; the caller then blanks every frame.
    pub fn new(name: &str, config: EngineConfig) -> Result<Engine, Error> {
        let mut detectors: Vec<Box<dyn Detector>> = Vec::new();
        if config.filter.needs_face_model() {
            let setup = config.detection.as_ref().ok_or_else(|| {
                Error::invalid_input(format!(
                    "filter {:?} needs the face model, and no model directory is configured",
                    config.filter
                ))
            })?;
            detectors.push(Box::new(setup.face_detector()?));
        }
        if config.filter.needs_plate_model() {
            // needs_plate_model implies needs_face_model, checked above.
            if let Some(setup) = config.detection.as_ref() {
                detectors.push(Box::new(setup.plate_detector()?));
            }
        }
        if config.filter.hides_motion() {
            detectors.push(Box::new(MotionDetector::new(MotionSettings::default())));
        }
        Self::with_detectors(name, config, detectors)
    }

    /// An engine with detectors of the caller's choosing (tests inject failing ones).
    pub fn with_detectors(
        name: &str,
        config: EngineConfig,
        detectors: Vec<Box<dyn Detector>>,
    ) -> Result<Engine, Error> {
        let stages = detectors
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let detector_name = d.name();
                let gated = detector_name != "motion" && config.filter.needs_face_model();
                Ok(Stage {
                    gated,
                    last_sweep: None,
                    worker: Worker::start(&format!("{name}-{i}"), detector_name, d).map_err(
                        |e| Error::wrap(veil_core::ErrorKind::Internal, "detector thread", e),
                    )?,
                    failsafe: FailSafe::new(config.policy),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Engine {
            masks: Masks::new(config.masks),
            mask_updates: MaskHandle::default(),
            style: config.style,
            stages,
            motion: config
                .filter
                .needs_face_model()
                .then(|| MotionDetector::new(MotionSettings::default())),
            blobs: None,
            silhouette: config.filter == Filter::Silhouette,
            stats: Arc::default(),
        })
    }

    /// Counts of frames let out and blanked, shared with whoever reports them.
    pub fn stats(&self) -> Arc<PrivacyStats> {
        self.stats.clone()
    }

    /// Makes `frame` safe to leave the camera.
    pub fn process(&mut self, frame: &mut Frame) {
        self.analyse_motion(frame);
        let blobs = self.blobs.as_deref();
        for stage in &mut self.stages {
            stage.drain();
            stage.offer(frame, blobs);
        }
        self.redact(frame);
    }

    /// Like [`Engine::process`], but waits for every detector's answer on this very frame,
    /// for as long as the detector needs: for evaluation, where results must not depend on
    /// timing or load. Only a detector that errs or dies makes the frame blank.
    pub fn process_waiting(&mut self, frame: &mut Frame) {
        self.analyse_motion(frame);
        let blobs = self.blobs.as_deref();
        for stage in &mut self.stages {
            stage.drain();
            // An answer about an earlier frame may still be on its way: take it first.
            while stage.worker.busy {
                stage.wait_and_absorb();
            }
            stage.offer(frame, blobs);
            if stage.worker.busy {
                stage.wait_and_absorb();
            } else {
                stage.failsafe.on_detector_failure();
            }
        }
        self.redact(frame);
    }

    /// For recorded footage processed faster than real time: like [`Engine::process`], but
    /// never lets a detector's newest answer fall more than `max_lag` (of footage time) behind
    /// the frame: it waits for the detector instead (up to the fail-safe budget, then the
    /// fail-safe decides). Re-anonymized footage is thus hidden at least as closely as live
    /// footage, at whatever speed the detectors allow.
    pub fn process_paced(
        &mut self,
        frame: &mut Frame,
        max_lag: std::time::Duration,
        wait: std::time::Duration,
    ) {
        let now = frame.meta.capture_mono;
        self.analyse_motion(frame);
        let blobs = self.blobs.as_deref();
        for stage in &mut self.stages {
            stage.drain();
            stage.offer(frame, blobs);
            while stage
                .failsafe
                .latest()
                .is_none_or(|l| now.saturating_sub(l) > max_lag)
            {
                if !stage.worker.busy {
                    // Nothing in flight (the detector's thread is gone): nothing will come.
                    stage.failsafe.on_detector_failure();
                    break;
                }
                match stage.worker.reports.recv_timeout(wait) {
                    Ok(report @ Report::Failed(_)) => {
                        stage.worker.busy = false;
                        stage.absorb(report);
                        break;
                    }
                    Ok(report) => {
                        stage.worker.busy = false;
                        stage.absorb(report);
                    }
                    Err(_) => {
                        stage.failsafe.on_detector_failure();
                        break;
                    }
                }
                // The detector may have been busy with an older frame: give it this one.
                stage.offer(frame, blobs);
            }
        }
        self.redact(frame);
    }

    /// The frame's moving regions, for the model detectors' fail-safes and their focus.
    fn analyse_motion(&mut self, frame: &Frame) {
        let Some(motion) = &mut self.motion else {
            return;
        };
        let blobs = motion.detect(frame);
        let captured = frame.meta.capture_mono;
        for stage in &mut self.stages {
            if stage.gated {
                let (w, h) = (frame.width(), frame.height());
                match &blobs {
                    Some(blobs) => stage.failsafe.on_motion(captured, w, h, blobs),
                    None => stage.failsafe.on_unknown_motion(captured, w, h),
                }
            }
        }
        self.blobs = blobs;
    }

    /// Replaces this engine's masks while it runs.
    pub fn mask_handle(&self) -> MaskHandle {
        self.mask_updates.clone()
    }

    fn redact(&mut self, frame: &mut Frame) {
        if let Some(polygons) = self.mask_updates.take() {
            self.masks = Masks::new(polygons);
        }
        if self.silhouette {
            redact::silhouette(frame);
            self.masks.apply(frame);
            self.stats.count_frame();
            return;
        }
        let captured = frame.meta.capture_mono;
        let mut boxes = Vec::new();
        let mut regional = false;
        for stage in &self.stages {
            match stage.failsafe.decide(captured) {
                Decision::Redact(b) => boxes.extend(b),
                Decision::Regional { boxes: b, .. } => {
                    boxes.extend(b);
                    regional = true;
                }
                Decision::BlankFrame { reason } => {
                    let (w, h) = (frame.width() as i32, frame.height() as i32);
                    redact::solid(frame, Rect { x: 0, y: 0, w, h });
                    self.stats.count_blank(stage.worker.name, reason);
                    return;
                }
            }
        }
        for b in boxes {
            redact::apply(frame, b, self.style);
        }
        self.masks.apply(frame);
        if regional {
            self.stats.count_regional();
        } else {
            self.stats.count_frame();
        }
    }
}

impl Stage {
    /// Offers the frame to the detector (if it is free): a look at the whole picture now and
    /// then, otherwise only where something moved (`blobs`) or is tracked.
    fn offer(&mut self, frame: &Frame, blobs: Option<&[Rect]>) {
        if self.worker.busy {
            return;
        }
        let captured = frame.meta.capture_mono;
        let sweep_due = self
            .last_sweep
            .is_none_or(|t| captured.saturating_sub(t) >= FULL_SWEEP_EVERY);
        let focus = match blobs {
            Some(blobs) if self.gated && !sweep_due && self.failsafe.latest().is_some() => {
                let mut focus = self.failsafe.tracked(captured);
                focus.extend_from_slice(blobs);
                Some(focus)
            }
            _ => None,
        };
        let whole = focus.is_none();
        self.worker.offer(frame, focus);
        if whole && self.worker.busy {
            self.last_sweep = Some(captured);
        }
    }

    /// Waits for the answer in flight and takes it; a vanished detector counts as failed.
    fn wait_and_absorb(&mut self) {
        match self.worker.wait_report() {
            Some(report) => self.absorb(report),
            None => self.failsafe.on_detector_failure(),
        }
    }

    fn drain(&mut self) {
        loop {
            match self.worker.reports.try_recv() {
                Ok(report) => {
                    self.worker.busy = false;
                    self.absorb(report);
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.failsafe.on_detector_failure();
                    return;
                }
            }
        }
    }

    fn absorb(&mut self, report: Report) {
        match report {
            Report::Found(d) => self.failsafe.on_detections(d),
            Report::Failed(reason) => {
                tracing::warn!(%reason, "detector failed; blanking frames until it recovers");
                self.failsafe.on_detector_failure();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use veil_media::frame::FrameMeta;

    use super::*;

    fn config(filter: Filter) -> EngineConfig {
        EngineConfig {
            filter,
            masks: Vec::new(),
            style: Style::Solid,
            detection: None,
            policy: FailSafePolicy {
                budget: Duration::from_millis(200),
                growth_per_sec: 1.0,
                hold_lost: Duration::from_millis(600),
            },
        }
    }

    fn grey(seq: u64, at_ms: u64) -> Frame {
        let mut f = Frame::new(320, 240);
        f.planes_mut().0.fill(120);
        f.meta = FrameMeta {
            seq,
            capture_mono: Duration::from_millis(at_ms),
            capture_wall_ms: 0,
        };
        f
    }

    fn all_black(f: &Frame) -> bool {
        f.y().iter().all(|&p| p == 16)
    }

    /// A detector that never answers (test double for a hung model).
    struct Stalled;
    impl Detector for Stalled {
        fn detect(&mut self, _: &Frame) -> Result<Vec<Rect>, Error> {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(Vec::new())
        }
    }

    /// A detector that answers once, then panics (test double for a crashing runtime).
    struct CrashesAfterOne(u32);
    impl Detector for CrashesAfterOne {
        fn detect(&mut self, _: &Frame) -> Result<Vec<Rect>, Error> {
            self.0 += 1;
            if self.0 > 1 {
                panic!("inference runtime aborted");
            }
            Ok(Vec::new())
        }
    }

    /// Feeds frames 40 ms apart (in capture time), pausing `pause` between them in real time.
    fn run(engine: &mut Engine, n: u64, pause: Duration) -> Vec<Frame> {
        (0..n)
            .map(|i| {
                let mut f = grey(i, i * 40);
                engine.process(&mut f);
                std::thread::sleep(pause);
                f
            })
            .collect()
    }

    /// A detector that takes 30 ms and always finds the same box (test double).
    struct SlowFixedBox;
    impl Detector for SlowFixedBox {
        fn detect(&mut self, _: &Frame) -> Result<Vec<Rect>, Error> {
            std::thread::sleep(Duration::from_millis(30));
            Ok(vec![Rect {
                x: 100,
                y: 100,
                w: 40,
                h: 40,
            }])
        }
    }

    #[test]
    fn paced_processing_keeps_detections_fresh_when_frames_come_faster_than_real_time() {
        let engine = || {
            Engine::with_detectors("t", config(Filter::Motion), vec![Box::new(SlowFixedBox)])
                .unwrap()
        };
        // Unpaced, 40 frames of footage at once: the detector falls behind, frames go black.
        let mut e = engine();
        let blanked = run(&mut e, 40, Duration::ZERO)
            .iter()
            .filter(|f| all_black(f))
            .count();
        assert!(blanked > 20, "only {blanked} blanked");
        // Paced: every frame judged by a recent detection, the box hidden, the rest intact.
        let mut e = engine();
        for i in 0..40 {
            let mut f = grey(i, i * 40);
            e.process_paced(&mut f, Duration::from_millis(80), Duration::from_secs(2));
            assert!(!all_black(&f), "frame {i} blanked");
            let at = |x: usize, y: usize| f.y()[y * 320 + x];
            assert_eq!(at(120, 120), 16, "frame {i}: box not hidden");
            assert_eq!(at(10, 10), 120, "frame {i}: outside the box changed");
        }
    }

    /// Reports the frames it is given; holds its first answer until the test lets it go.
    struct Gated {
        seen: std::sync::mpsc::Sender<u64>,
        go: Option<std::sync::mpsc::Receiver<()>>,
    }
    impl Detector for Gated {
        fn detect(&mut self, f: &Frame) -> Result<Vec<Rect>, Error> {
            let _ = self.seen.send(f.meta.seq);
            if let Some(go) = self.go.take() {
                let _ = go.recv();
            }
            Ok(Vec::new())
        }
    }

    /// An engine on a [`Gated`] detector: the frames it is given, and the gate.
    fn gated() -> (
        Engine,
        std::sync::mpsc::Receiver<u64>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (seen_tx, seen) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let detector = Gated {
            seen: seen_tx,
            go: Some(go_rx),
        };
        let e =
            Engine::with_detectors("t", config(Filter::Motion), vec![Box::new(detector)]).unwrap();
        (e, seen, go)
    }

    #[test]
    fn the_detector_starts_on_the_newest_frame_never_on_one_that_waited() {
        let (mut e, seen, go) = gated();
        e.process(&mut grey(0, 0));
        assert_eq!(seen.recv().unwrap(), 0);
        // While frame 0 is being looked at, frames 1..=10 pass by; none may wait for it.
        for i in 1..=10 {
            e.process(&mut grey(i, i * 40));
        }
        go.send(()).unwrap();
        let mut next = 11;
        let second = loop {
            e.process(&mut grey(next, next * 40));
            if let Ok(seq) = seen.try_recv() {
                break seq;
            }
            next += 1;
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(
            second > 10,
            "the detector was given frame {second}, which waited through a detection"
        );
        // Before the first answer every frame was blanked, and counted with the reason.
        let stats = e.stats();
        assert_eq!(stats.frames(), next + 1);
        assert!(stats.blanked() >= 11, "{} blanked", stats.blanked());
        // The last blanked frame came after frame 0's answer, too long after it.
        let reason = stats.last_blank_reason().unwrap_or_default();
        assert_eq!(reason, "detector: detection too old");
    }

    #[test]
    fn waiting_evaluation_waits_as_long_as_the_detector_needs() {
        let (mut e, seen, go) = gated();
        let worker = std::thread::spawn(move || {
            let mut f = grey(0, 0);
            e.process_waiting(&mut f);
            (e, f)
        });
        assert_eq!(seen.recv().unwrap(), 0);
        // Longer than the 2 s the evaluation used to wait before it blanked the frame.
        std::thread::sleep(Duration::from_millis(2500));
        go.send(()).unwrap();
        let (e, f) = worker.join().unwrap();
        assert!(!all_black(&f), "a slow answer blanked the frame");
        assert_eq!((e.stats().frames(), e.stats().blanked()), (1, 0));
    }

    #[test]
    fn a_stalled_detector_leaks_nothing() {
        let mut e =
            Engine::with_detectors("t", config(Filter::Motion), vec![Box::new(Stalled)]).unwrap();
        let out = run(&mut e, 20, Duration::ZERO);
        assert!(
            out.iter().all(all_black),
            "a frame left with no detection behind it"
        );
        assert_eq!((e.stats().frames(), e.stats().blanked()), (20, 20));
    }

    #[test]
    fn a_crashing_detector_blanks_frames_after_the_crash() {
        let mut e = Engine::with_detectors(
            "t",
            config(Filter::Motion),
            vec![Box::new(CrashesAfterOne(0))],
        )
        .unwrap();
        let out = run(&mut e, 30, Duration::from_millis(5));
        // Whatever the timing: once the crash is reported no frame is open again, and the
        // frames before the first answer are blank too.
        let first_open = out.iter().position(|f| !all_black(f));
        let last_open = out.iter().rposition(|f| !all_black(f));
        assert!(
            first_open.is_none_or(|i| i > 0),
            "first frame left before any detection"
        );
        assert!(
            last_open.is_none_or(|i| i < 29),
            "frames still open after the crash"
        );
        assert!(all_black(&out[29]));
    }

    #[test]
    fn the_motion_filter_hides_a_moving_object_and_keeps_the_rest() {
        let mut e = Engine::new(
            "t",
            EngineConfig {
                policy: FailSafePolicy {
                    budget: Duration::from_secs(5),
                    growth_per_sec: 0.0,
                    hold_lost: Duration::ZERO,
                },
                ..config(Filter::Motion)
            },
        )
        .unwrap();
        let square = |i: u64| {
            let mut f = grey(i, i * 40);
            let x = 20 + i as usize * 8;
            for row in 100..140 {
                f.planes_mut().0[row * 320 + x..row * 320 + x + 40].fill(250);
            }
            f
        };
        let mut last = None;
        for i in 0..12 {
            let mut f = square(i);
            e.process(&mut f);
            std::thread::sleep(Duration::from_millis(15));
            last = Some(f);
        }
        let f = last.unwrap();
        let y = f.y();
        let bright = y.iter().filter(|&&p| p == 250).count();
        assert!(
            bright < 40 * 40 / 4,
            "most of the moving square is still visible ({bright} pixels)"
        );
        assert!(
            y[10 * 320 + 300] == 120,
            "the still background was hidden too"
        );
    }

    #[test]
    fn masks_apply_with_or_without_a_detector() {
        let square = vec![vec![
            Point { x: 0.0, y: 0.0 },
            Point { x: 0.5, y: 0.0 },
            Point { x: 0.5, y: 0.5 },
            Point { x: 0.0, y: 0.5 },
        ]];
        let mut e = Engine::new(
            "t",
            EngineConfig {
                masks: square,
                ..config(Filter::MasksOnly)
            },
        )
        .unwrap();
        let mut f = grey(0, 0);
        e.process(&mut f);
        assert_eq!(f.y()[10 * 320 + 10], 16);
        assert_eq!(f.y()[200 * 320 + 300], 120);

        // Masks replaced while running apply from the next frame on.
        e.mask_handle().replace(vec![vec![
            Point { x: 0.5, y: 0.5 },
            Point { x: 1.0, y: 0.5 },
            Point { x: 1.0, y: 1.0 },
        ]]);
        let mut f = grey(0, 0);
        e.process(&mut f);
        assert_eq!(f.y()[10 * 320 + 10], 120, "the old mask is gone");
        assert_eq!(f.y()[230 * 320 + 310], 16, "the new mask hides");
    }

    /// A face detector double: a face at a fixed place, found whenever the detector looks
    /// there; it reports each look's focus (`None`: the whole frame).
    struct FaceAtFixedPlace(std::sync::mpsc::Sender<Option<Vec<Rect>>>);
    const STILL_FACE: Rect = Rect {
        x: 60,
        y: 60,
        w: 40,
        h: 40,
    };
    impl Detector for FaceAtFixedPlace {
        fn name(&self) -> &'static str {
            "faces"
        }
        fn detect(&mut self, _: &Frame) -> Result<Vec<Rect>, Error> {
            self.0.send(None).unwrap();
            Ok(vec![STILL_FACE])
        }
        fn detect_in(
            &mut self,
            _: &Frame,
            focus: &[Rect],
        ) -> Result<(Vec<Rect>, Option<Vec<Rect>>), Error> {
            self.0.send(Some(focus.to_vec())).unwrap();
            let found = focus
                .iter()
                .any(|r| r.overlaps(&STILL_FACE))
                .then_some(STILL_FACE);
            Ok((found.into_iter().collect(), Some(focus.to_vec())))
        }
    }

    #[test]
    fn detection_looks_where_things_move_or_are_tracked_and_at_everything_every_two_seconds() {
        let (tx, looks) = std::sync::mpsc::channel();
        let mut e = Engine::with_detectors(
            "t",
            config(Filter::Faces),
            vec![Box::new(FaceAtFixedPlace(tx))],
        )
        .unwrap();
        let walker = Rect {
            x: 240,
            y: 150,
            w: 40,
            h: 40,
        };
        // 3 s of a still scene with a face; someone walks in at 1 s and stays moving.
        for i in 0..75u64 {
            let mut f = grey(i, i * 40);
            if i >= 25 {
                let x = 240 - (i as usize - 25) * 2;
                let (y_plane, _, _) = f.planes_mut();
                for row in 150..190 {
                    y_plane[row * 320 + x..row * 320 + x + 40].fill(230);
                }
            }
            e.process_waiting(&mut f);
            let face_hidden = (STILL_FACE.y..STILL_FACE.y + STILL_FACE.h).all(|y| {
                let row = &f.y()[y as usize * 320..];
                row[STILL_FACE.x as usize..(STILL_FACE.x + STILL_FACE.w) as usize]
                    .iter()
                    .all(|&p| p == 16)
            });
            assert!(face_hidden, "frame {i}: the still face shows");
            let look = looks.try_recv().expect("one look per frame, waited for");
            let at = i * 40;
            match look {
                None => assert!(at == 0 || at == 2000, "whole-frame look at {at} ms"),
                Some(focus) => {
                    assert!(at != 0 && at != 2000, "a focused look at {at} ms");
                    // The tracked face is always looked at again.
                    assert!(
                        focus.iter().any(|r| r.overlaps(&STILL_FACE)),
                        "{at}: {focus:?}"
                    );
                    // Once the walker has moved (the first frame only teaches nothing new),
                    // it is looked at too.
                    if i >= 26 {
                        let now = Rect {
                            x: 240 - (i as i32 - 25) * 2,
                            ..walker
                        };
                        assert!(focus.iter().any(|r| r.overlaps(&now)), "{at}: {focus:?}");
                    }
                }
            }
        }
    }
}
