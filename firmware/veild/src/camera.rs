//! One supervised capture thread per camera, feeding the camera's media pipeline.
//!
//! Capture never waits for anyone: frames go to the pipeline with a non-blocking offer, and a
//! gap in the source's sequence numbers (the source fell behind its own rate) counts as
//! dropped too. The supervisor catches errors and panics of the source and reopens it with
//! exponential backoff; the pipeline (privacy stage and encoder) lives on across restarts.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use veil_core::backoff::Backoff;
use veil_core::{Clock, Error, ErrorKind};

use veil_media::pipeline::{
    EncoderFactory, Pipeline, PipelineConfig, PipelineInput, PipelineStats, PrivacyStage,
    Snapshotter,
};
use veil_media::source::{Source, SyntheticCamera};
use veil_web::{CameraState, CameraStatus};

use crate::metrics::{CameraLabels, Metrics};

/// How long a snapshot request waits for the camera's next frame.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);

/// Opens (or re-opens, after a failure) a camera's source.
pub type SourceFactory = Box<dyn FnMut() -> Result<Box<dyn Source>, Error> + Send>;

#[derive(Debug, Clone)]
pub struct CameraSpec {
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    /// Privacy filter name and mask count, for status.
    pub filter: &'static str,
    pub masks: u32,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// 0 picks a default for the frame size.
    pub bitrate_kbps: u32,
    pub keyframe_secs: u32,
    /// Encoder threads (from the board profile).
    pub encoder_threads: u16,
    /// Why the privacy engine could not start (the camera's frames are then all blanked).
    pub privacy_error: Option<String>,
    /// Frames the privacy engine let out, and those it blanked whole (with the reason).
    pub privacy: Arc<veil_privacy::PrivacyStats>,
    /// Record the frames as captured (encrypted) instead of the anonymized stream.
    pub keep_originals: bool,
}

/// Retry timing of the supervisor.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// A source that ran this long before failing starts again from `initial`.
    pub healthy_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(30),
        }
    }
}

/// What the capture thread shares with status, metrics and the watchdog.
struct Shared {
    state: AtomicU8,
    /// Size of the frames the source delivers (known once it runs, for files and cameras).
    width: AtomicU32,
    height: AtomicU32,
    last_error: Mutex<Option<String>>,
    /// Monotonic ms of the thread's last sign of life, for the systemd watchdog.
    heartbeat_ms: AtomicU64,
    frames: Counter,
    source_dropped: Counter,
    fps: Gauge<f64, AtomicU64>,
    up: Gauge,
    restarts: Counter,
}

impl Shared {
    fn new(metrics: Option<(&Metrics, &CameraLabels)>, state: CameraState, now_ms: u64) -> Shared {
        let (frames, source_dropped, fps, up, restarts) = match metrics {
            Some((m, l)) => (
                m.camera_frames.get_or_create(l).clone(),
                m.camera_source_dropped.get_or_create(l).clone(),
                m.camera_fps.get_or_create(l).clone(),
                m.camera_up.get_or_create(l).clone(),
                m.camera_restarts.get_or_create(l).clone(),
            ),
            None => Default::default(),
        };
        Shared {
            state: AtomicU8::new(state as u8),
            width: AtomicU32::new(0),
            height: AtomicU32::new(0),
            last_error: Mutex::new(None),
            heartbeat_ms: AtomicU64::new(now_ms),
            frames,
            source_dropped,
            fps,
            up,
            restarts,
        }
    }

    fn set_state(&self, state: CameraState) {
        self.state.store(state as u8, Ordering::Relaxed);
        self.up.set(i64::from(state == CameraState::Running));
    }

    fn state(&self) -> CameraState {
        const ALL: [CameraState; 5] = [
            CameraState::Starting,
            CameraState::Running,
            CameraState::Retrying,
            CameraState::Disabled,
            CameraState::Stopped,
        ];
        ALL.into_iter()
            .find(|s| *s as u8 == self.state.load(Ordering::Relaxed))
            .unwrap_or(CameraState::Stopped)
    }

    fn set_error(&self, message: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = message;
    }
}

pub struct CameraSnapshotter {
    id: String,
    inner: Option<Snapshotter>,
}

impl CameraSnapshotter {
    /// A JPEG of the next frame leaving the privacy stage.
    pub fn jpeg(&self, max_width: u32) -> Result<Vec<u8>, Error> {
        let Some(snapshotter) = &self.inner else {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("camera '{}' is disabled", self.id),
            ));
        };
        let frame = snapshotter.take(SNAPSHOT_WAIT).ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "camera '{}' delivered no frame within {} s",
                    self.id,
                    SNAPSHOT_WAIT.as_secs()
                ),
            )
        })?;
        veil_media::thumbnail::jpeg(&frame, max_width, 80)
    }
}

pub struct Camera {
    spec: CameraSpec,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pipeline: Option<Pipeline>,
    clock: Option<Arc<dyn Clock>>,
    /// For the encoded-rate and bitrate figures in status: (monotonic, frames, bytes).
    last_sample: Mutex<(Duration, u64, u64)>,
    rates: Mutex<(f64, f64)>,
}

/// How a camera's parts are made; tests swap in their own.
pub struct CameraParts {
    pub source: SourceFactory,
    pub privacy: PrivacyStage,
    pub encoder: EncoderFactory,
    /// The originals' encoder, when the camera keeps originals.
    pub original_encoder: Option<EncoderFactory>,
}

impl Camera {
    /// Starts the camera's pipeline and capture thread.
    pub fn spawn(
        spec: CameraSpec,
        parts: CameraParts,
        clock: Arc<dyn Clock>,
        metrics: &Metrics,
        retry: RetryPolicy,
    ) -> std::io::Result<Camera> {
        let labels = CameraLabels {
            camera: spec.id.clone(),
        };
        let now_ms = clock.monotonic().as_millis() as u64;
        let shared = Arc::new(Shared::new(
            Some((metrics, &labels)),
            CameraState::Starting,
            now_ms,
        ));
        let config = PipelineConfig {
            bitrate_bps: spec.bitrate_kbps.saturating_mul(1000),
            keyframe_secs: spec.keyframe_secs.max(1),
            encoder_threads: spec.encoder_threads.max(1),
            keep_originals: spec.keep_originals,
            ..PipelineConfig::new(spec.id.clone(), spec.fps)
        };
        let pipeline = Pipeline::start_with_originals(
            config,
            parts.privacy,
            parts.encoder,
            parts.original_encoder,
            clock.clone(),
        )?;
        metrics.register_pipeline(&labels, pipeline.stats().clone());
        metrics.register_privacy(&labels, spec.privacy.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name(format!("cam-{}", spec.id))
            .spawn({
                let (spec, shared, stop, input) =
                    (spec.clone(), shared.clone(), stop.clone(), pipeline.input());
                let clock = clock.clone();
                move || supervise(&spec, parts.source, &input, &*clock, &shared, &stop, retry)
            })?;
        Ok(Camera {
            spec,
            shared,
            stop,
            thread: Some(thread),
            pipeline: Some(pipeline),
            last_sample: Mutex::new((clock.monotonic(), 0, 0)),
            clock: Some(clock),
            rates: Mutex::new((0.0, 0.0)),
        })
    }

    /// A disabled camera: listed in status, no threads.
    pub fn disabled(spec: CameraSpec) -> Camera {
        Camera {
            spec,
            shared: Arc::new(Shared::new(None, CameraState::Disabled, u64::MAX)),
            stop: Arc::new(AtomicBool::new(true)),
            thread: None,
            pipeline: None,
            clock: None,
            last_sample: Mutex::new((Duration::ZERO, 0, 0)),
            rates: Mutex::new((0.0, 0.0)),
        }
    }

    /// A new consumer of the camera's encoded stream (`None` for a disabled camera).
    pub fn subscribe(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<veil_media::h264::EncodedFrame>> {
        self.pipeline.as_ref().map(Pipeline::subscribe)
    }

    /// Asks the camera's encoder for a keyframe (a live viewer joined).
    pub fn keyframe_trigger(&self) -> Option<veil_media::pipeline::KeyframeTrigger> {
        self.pipeline.as_ref().map(Pipeline::keyframe_trigger)
    }

    /// Another anonymized encode of this camera through `privacy` (a live viewer's filter), at
    /// most `fps` frames a second; `None` for a disabled camera.
    pub fn branch(
        &self,
        name: &str,
        privacy: veil_media::pipeline::PrivacyStage,
        encoder: veil_media::pipeline::EncoderFactory,
        fps: u32,
    ) -> Option<std::io::Result<veil_media::pipeline::Branch>> {
        let (pipeline, clock) = (self.pipeline.as_ref()?, self.clock.clone()?);
        let config = PipelineConfig {
            bitrate_bps: self.spec.bitrate_kbps.saturating_mul(1000),
            // A viewer joins on a keyframe: every second at most keeps the start short.
            keyframe_secs: 1,
            encoder_threads: self.spec.encoder_threads.max(1),
            ..PipelineConfig::new(
                format!("{}-{name}", self.spec.id),
                fps.min(self.spec.fps).max(1),
            )
        };
        Some(pipeline.branch(config, privacy, encoder, clock))
    }

    /// The stream as captured, for the footage store alone (`None` unless the camera keeps
    /// originals).
    pub fn subscribe_originals(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<veil_media::h264::EncodedFrame>> {
        self.pipeline
            .as_ref()
            .and_then(Pipeline::subscribe_originals)
    }

    pub fn keeps_originals(&self) -> bool {
        self.spec.keep_originals
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// Snapshots of the frames as captured, when the camera keeps originals.
    pub fn original_snapshotter(&self) -> Option<CameraSnapshotter> {
        let inner = self.pipeline.as_ref()?.original_snapshotter()?;
        Some(CameraSnapshotter {
            id: self.spec.id.clone(),
            inner: Some(inner),
        })
    }

    /// What takes this camera's snapshots, to use without holding on to the camera.
    pub fn snapshotter(&self) -> CameraSnapshotter {
        CameraSnapshotter {
            id: self.spec.id.clone(),
            inner: self.pipeline.as_ref().map(Pipeline::snapshotter),
        }
    }

    /// Encoded frames per second and bitrate (kbit/s), measured between calls at least a
    /// second apart.
    fn encoded_rates(&self, stats: &PipelineStats) -> (f64, f64) {
        let Some(clock) = &self.clock else {
            return (0.0, 0.0);
        };
        let now = clock.monotonic();
        let frames = stats.frames_encoded.load(Ordering::Relaxed);
        let bytes = stats.bytes_out.load(Ordering::Relaxed);
        let mut last = self.last_sample.lock().unwrap_or_else(|e| e.into_inner());
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        let dt = now.saturating_sub(last.0).as_secs_f64();
        if dt >= 1.0 {
            *rates = (
                (frames - last.1) as f64 / dt,
                (bytes - last.2) as f64 * 8.0 / 1000.0 / dt,
            );
            *last = (now, frames, bytes);
        }
        *rates
    }

    pub fn status(&self) -> CameraStatus {
        let s = &self.shared;
        let mut status = CameraStatus {
            id: self.spec.id.clone(),
            name: self.spec.name.clone(),
            source: self.spec.kind.to_string(),
            filter: self.spec.filter.to_string(),
            masks: self.spec.masks,
            width: match s.width.load(Ordering::Relaxed) {
                0 => self.spec.width,
                w => w,
            },
            height: match s.height.load(Ordering::Relaxed) {
                0 => self.spec.height,
                h => h,
            },
            state: s.state(),
            fps: (s.fps.get() * 10.0).round() / 10.0,
            frames_total: s.frames.get(),
            frames_dropped: s.source_dropped.get(),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .or_else(|| self.spec.privacy_error.clone()),
            frames_blanked: self.spec.privacy.blanked(),
            frames_regional: self.spec.privacy.regional(),
            blank_reason: self.spec.privacy.last_blank_reason(),
            ..Default::default()
        };
        if let Some(p) = &self.pipeline {
            let st = p.stats();
            let (fps_out, kbps) = self.encoded_rates(st);
            status.frames_dropped += st.dropped();
            status.frames_encoded = st.frames_encoded.load(Ordering::Relaxed);
            status.fps_encoded = (fps_out * 10.0).round() / 10.0;
            status.bitrate_kbps = kbps.round();
            status.encode_ms = st.last_encode_us.load(Ordering::Relaxed) as f64 / 1000.0;
            status.encoder = st
                .encoder
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .to_string();
            status.latency_ms = st.last_latency_us.load(Ordering::Relaxed) as f64 / 1000.0;
            if status.last_error.is_none() {
                status.last_error = st
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
            }
        }
        status
    }

    /// Whether the thread showed a sign of life since `since_ms` (monotonic ms).
    pub fn alive_since(&self, since_ms: u64) -> bool {
        self.thread.is_none() || self.shared.heartbeat_ms.load(Ordering::Relaxed) >= since_ms
    }

    /// Asks the capture thread to stop; `join` waits for it and drains the pipeline.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn join(&mut self) {
        self.request_stop();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!(camera = %self.spec.id, "camera thread panicked outside its supervisor");
        }
        if let Some(p) = self.pipeline.take() {
            p.finish();
        }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.join();
    }
}

enum Ended {
    Stopped,
    EndOfStream,
}

fn supervise(
    spec: &CameraSpec,
    mut factory: SourceFactory,
    input: &PipelineInput,
    clock: &dyn Clock,
    shared: &Shared,
    stop: &AtomicBool,
    retry: RetryPolicy,
) {
    let mut backoff = Backoff::new(retry.initial, retry.max);
    while !stop.load(Ordering::SeqCst) {
        shared.set_state(CameraState::Starting);
        let started = clock.monotonic();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run(spec, &mut factory, input, clock, shared, stop)
        }));
        let message = match outcome {
            Ok(Ok(Ended::Stopped)) => break,
            Ok(Ok(Ended::EndOfStream)) => {
                tracing::info!(camera = %spec.id, "source reached its end");
                break;
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("source crashed: {}", panic_message(&panic)),
        };
        if clock.monotonic().saturating_sub(started) >= retry.healthy_after {
            backoff.reset();
        }
        let delay = backoff.next_delay(jitter(clock));
        tracing::warn!(camera = %spec.id, error = %message, retry_in_ms = delay.as_millis() as u64, "camera failed");
        shared.set_error(Some(message));
        shared.set_state(CameraState::Retrying);
        shared.restarts.inc();
        shared.fps.set(0.0);
        sleep_unless_stopped(delay, clock, shared, stop);
    }
    shared.set_state(CameraState::Stopped);
    shared.fps.set(0.0);
}

fn run(
    spec: &CameraSpec,
    factory: &mut SourceFactory,
    input: &PipelineInput,
    clock: &dyn Clock,
    shared: &Shared,
    stop: &AtomicBool,
) -> Result<Ended, Error> {
    let mut source = factory()?;
    input.set_source_fps(source.fps());
    let (mut window_start, mut window_frames) = (clock.monotonic(), 0u32);
    let mut expected_seq: Option<u64> = None;
    while !stop.load(Ordering::SeqCst) {
        shared
            .heartbeat_ms
            .store(clock.monotonic().as_millis() as u64, Ordering::Relaxed);
        let Some(frame) = source.next_frame()? else {
            return Ok(Ended::EndOfStream);
        };
        let seq = frame.meta.seq;
        match expected_seq {
            None => {
                shared.width.store(frame.width(), Ordering::Relaxed);
                shared.height.store(frame.height(), Ordering::Relaxed);
                shared.set_state(CameraState::Running);
                shared.set_error(None);
                tracing::info!(camera = %spec.id, width = frame.width(), height = frame.height(), fps = source.fps(), "camera running");
            }
            Some(expected) if seq > expected => {
                shared.source_dropped.inc_by(seq - expected);
            }
            Some(_) => {}
        }
        expected_seq = Some(seq + 1);
        input.offer(frame);
        shared.frames.inc();
        window_frames += 1;
        let elapsed = clock.monotonic().saturating_sub(window_start);
        if elapsed >= Duration::from_secs(1) {
            shared
                .fps
                .set(f64::from(window_frames) / elapsed.as_secs_f64());
            (window_start, window_frames) = (clock.monotonic(), 0);
        }
    }
    Ok(Ended::Stopped)
}

fn sleep_unless_stopped(delay: Duration, clock: &dyn Clock, shared: &Shared, stop: &AtomicBool) {
    let until = clock.monotonic() + delay;
    while !stop.load(Ordering::SeqCst) {
        let now = clock.monotonic();
        shared
            .heartbeat_ms
            .store(now.as_millis() as u64, Ordering::Relaxed);
        if now >= until {
            break;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(100)));
    }
}

/// A cheap jitter draw from the clock's sub-millisecond digits; a fleet's devices differ.
fn jitter(clock: &dyn Clock) -> f64 {
    (clock.monotonic().subsec_nanos() % 1000) as f64 / 999.0
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The factory for a synthetic camera paced in real time.
pub fn synthetic_factory(
    width: u32,
    height: u32,
    fps: u32,
    clock: Arc<dyn Clock>,
) -> SourceFactory {
    Box::new(move || {
        Ok(Box::new(SyntheticCamera::new(
            width,
            height,
            fps,
            clock.clone(),
            true,
        )) as Box<dyn Source>)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use veil_core::SystemClock;
    use veil_media::PooledFrame;
    use veil_media::pipeline::openh264_factory;

    use super::*;

    fn spec(fps: u32) -> CameraSpec {
        CameraSpec {
            id: "t".into(),
            name: "T".into(),
            kind: "synthetic",
            filter: "masks-only",
            masks: 0,
            width: 160,
            height: 96,
            fps,
            bitrate_kbps: 0,
            keyframe_secs: 2,
            encoder_threads: 1,
            privacy_error: None,
            privacy: Default::default(),
            keep_originals: false,
        }
    }

    fn metrics() -> Metrics {
        Metrics::new("0", "b", "d", "/nonexistent".into())
    }

    fn fast_retry() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
            healthy_after: Duration::from_secs(60),
        }
    }

    fn parts(source: SourceFactory) -> CameraParts {
        CameraParts {
            original_encoder: None,
            source,
            privacy: Box::new(|_| {}),
            encoder: openh264_factory(),
        }
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn clock() -> Arc<dyn Clock> {
        Arc::new(SystemClock::new())
    }

    #[test]
    fn synthetic_camera_is_captured_encoded_and_stops() {
        let m = metrics();
        let c = clock();
        let mut cam = Camera::spawn(
            spec(50),
            parts(synthetic_factory(160, 96, 50, c.clone())),
            c,
            &m,
            fast_retry(),
        )
        .unwrap();
        let mut rx = cam.subscribe().unwrap();
        wait_for("20 frames", || cam.status().frames_encoded >= 20);
        let first = rx.blocking_recv().unwrap();
        assert!(first.data.starts_with(&[0, 0, 0, 1]));
        assert_eq!(cam.status().state, CameraState::Running);
        let t0 = Instant::now();
        cam.join();
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "stop took {:?}",
            t0.elapsed()
        );
        assert_eq!(cam.status().state, CameraState::Stopped);
    }

    /// Fails to open twice, then crashes once mid-stream, then works.
    struct Flaky {
        opens: Arc<AtomicU32>,
        inner: SyntheticCamera,
        frames: u32,
    }

    impl Source for Flaky {
        fn next_frame(&mut self) -> Result<Option<PooledFrame>, Error> {
            self.frames += 1;
            if self.opens.load(Ordering::SeqCst) == 3 && self.frames == 5 {
                panic!("decoder exploded");
            }
            self.inner.next_frame()
        }
        fn fps(&self) -> u32 {
            100
        }
    }

    #[test]
    fn supervisor_restarts_failed_and_crashed_sources() {
        let m = metrics();
        let opens = Arc::new(AtomicU32::new(0));
        let c = clock();
        let factory: SourceFactory = Box::new({
            let (opens, c) = (opens.clone(), c.clone());
            move || {
                let n = opens.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= 2 {
                    return Err(Error::new(ErrorKind::Unavailable, "camera unplugged"));
                }
                let inner = SyntheticCamera::new(160, 96, 100, c.clone(), true);
                Ok(Box::new(Flaky {
                    opens: opens.clone(),
                    inner,
                    frames: 0,
                }) as Box<dyn Source>)
            }
        });
        let cam = Camera::spawn(spec(100), parts(factory), c, &m, fast_retry()).unwrap();
        wait_for("the fourth open", || opens.load(Ordering::SeqCst) >= 4);
        wait_for("running again", || {
            cam.status().state == CameraState::Running
        });
        wait_for("frames after recovery", || cam.status().frames_encoded > 10);
        let restarts = m
            .camera_restarts
            .get_or_create(&CameraLabels { camera: "t".into() })
            .get();
        assert_eq!(restarts, 3, "two open failures and one crash");
        assert_eq!(cam.status().last_error, None, "cleared once running");
    }

    #[test]
    fn failing_source_reports_its_error() {
        let m = metrics();
        let factory: SourceFactory = Box::new(|| {
            Err(Error::new(
                ErrorKind::NotFound,
                "no such device /dev/video9",
            ))
        });
        let cam = Camera::spawn(spec(10), parts(factory), clock(), &m, fast_retry()).unwrap();
        wait_for("retrying", || cam.status().state == CameraState::Retrying);
        assert_eq!(
            cam.status().last_error.as_deref(),
            Some("no such device /dev/video9")
        );
        assert!(cam.alive_since(0));
    }

    #[test]
    fn a_slow_privacy_stage_drops_frames_without_slowing_capture() {
        let m = metrics();
        let c = clock();
        let mut p = parts(synthetic_factory(160, 96, 100, c.clone()));
        p.privacy = Box::new(|_| std::thread::sleep(Duration::from_millis(50)));
        let cam = Camera::spawn(spec(100), p, c, &m, fast_retry()).unwrap();
        wait_for("drops", || cam.status().frames_dropped >= 20);
        let s = cam.status();
        assert!(s.frames_total >= s.frames_dropped, "{s:?}");
        assert!(
            s.fps > 50.0 || s.frames_total < 100,
            "capture slowed to {} fps",
            s.fps
        );
    }
}
