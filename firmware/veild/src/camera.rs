//! One thread per camera, supervised: capture, count, and restart with backoff on failure.
//!
//! Capture never waits for anyone: when the thread falls behind the source's rate it skips
//! frames and counts them as dropped instead of queueing them up.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use veil_core::backoff::Backoff;
use veil_core::{Clock, Error};
use veil_media::{Frame, FrameMeta, FramePool, SyntheticSource};
use veil_web::{CameraState, CameraStatus};

use crate::metrics::{CameraLabels, Metrics};

/// Something that fills frames. Real cameras block in `capture` until a frame arrives;
/// generated sources return at once and are paced by the runner.
pub trait CaptureSource: Send {
    fn capture(&mut self, frame: &mut Frame, meta: FrameMeta) -> Result<(), Error>;
    fn needs_pacing(&self) -> bool;
}

impl CaptureSource for SyntheticSource {
    fn capture(&mut self, frame: &mut Frame, meta: FrameMeta) -> Result<(), Error> {
        self.render(frame, meta);
        Ok(())
    }
    fn needs_pacing(&self) -> bool {
        true
    }
}

/// Opens (or re-opens, after a failure) a camera's source.
pub type SourceFactory = Box<dyn FnMut() -> Result<Box<dyn CaptureSource>, Error> + Send>;

#[derive(Debug, Clone)]
pub struct CameraSpec {
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
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

struct Shared {
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
    /// Monotonic ms of the thread's last sign of life, for the systemd watchdog.
    heartbeat_ms: AtomicU64,
    frames: Counter,
    dropped: Counter,
    fps: Gauge<f64, AtomicU64>,
    up: Gauge,
    restarts: Counter,
}

impl Shared {
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
}

pub struct Camera {
    spec: CameraSpec,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Camera {
    /// Starts the camera's thread.
    pub fn spawn(
        spec: CameraSpec,
        factory: SourceFactory,
        clock: Arc<dyn Clock>,
        metrics: &Metrics,
        retry: RetryPolicy,
    ) -> std::io::Result<Camera> {
        let labels = CameraLabels {
            camera: spec.id.clone(),
        };
        let shared = Arc::new(Shared {
            state: AtomicU8::new(CameraState::Starting as u8),
            last_error: Mutex::new(None),
            heartbeat_ms: AtomicU64::new(clock.monotonic().as_millis() as u64),
            frames: metrics.camera_frames.get_or_create(&labels).clone(),
            dropped: metrics.camera_dropped.get_or_create(&labels).clone(),
            fps: metrics.camera_fps.get_or_create(&labels).clone(),
            up: metrics.camera_up.get_or_create(&labels).clone(),
            restarts: metrics.camera_restarts.get_or_create(&labels).clone(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name(format!("cam-{}", spec.id))
            .spawn({
                let (spec, shared, stop) = (spec.clone(), shared.clone(), stop.clone());
                move || supervise(&spec, factory, &*clock, &shared, &stop, retry)
            })?;
        Ok(Camera {
            spec,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// A disabled camera: listed in status, no thread.
    pub fn disabled(spec: CameraSpec) -> Camera {
        Camera {
            spec,
            shared: Arc::new(Shared {
                state: AtomicU8::new(CameraState::Disabled as u8),
                last_error: Mutex::new(None),
                heartbeat_ms: AtomicU64::new(u64::MAX),
                frames: Counter::default(),
                dropped: Counter::default(),
                fps: Gauge::default(),
                up: Gauge::default(),
                restarts: Counter::default(),
            }),
            stop: Arc::new(AtomicBool::new(true)),
            thread: None,
        }
    }

    pub fn status(&self) -> CameraStatus {
        let s = &self.shared;
        CameraStatus {
            id: self.spec.id.clone(),
            name: self.spec.name.clone(),
            source: self.spec.kind.to_string(),
            width: self.spec.width,
            height: self.spec.height,
            state: s.state(),
            fps: (s.fps.get() * 10.0).round() / 10.0,
            frames_total: s.frames.get(),
            frames_dropped: s.dropped.get(),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Whether the thread showed a sign of life since `since_ms` (monotonic ms).
    pub fn alive_since(&self, since_ms: u64) -> bool {
        self.thread.is_none() || self.shared.heartbeat_ms.load(Ordering::Relaxed) >= since_ms
    }

    /// Asks the thread to stop; `join` waits for it.
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
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.join();
    }
}

fn supervise(
    spec: &CameraSpec,
    mut factory: SourceFactory,
    clock: &dyn Clock,
    shared: &Shared,
    stop: &AtomicBool,
    retry: RetryPolicy,
) {
    let mut backoff = Backoff::new(retry.initial, retry.max);
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        shared.set_state(CameraState::Starting);
        let started = clock.monotonic();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run(spec, &mut factory, clock, shared, stop, &mut seq)
        }));
        let message = match outcome {
            Ok(Ok(())) => break,
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("source crashed: {}", panic_message(&panic)),
        };
        if clock.monotonic().saturating_sub(started) >= retry.healthy_after {
            backoff.reset();
        }
        let delay = backoff.next_delay(jitter(clock));
        tracing::warn!(camera = %spec.id, error = %message, retry_in_ms = delay.as_millis() as u64, "camera failed");
        *shared.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
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
    clock: &dyn Clock,
    shared: &Shared,
    stop: &AtomicBool,
    seq: &mut u64,
) -> Result<(), Error> {
    let mut source = factory()?;
    let pool = FramePool::new(spec.width, spec.height);
    let period = Duration::from_secs(1) / spec.fps.max(1);
    let mut next_due = clock.monotonic();
    let (mut window_start, mut window_frames) = (clock.monotonic(), 0u32);
    let mut first = true;
    while !stop.load(Ordering::SeqCst) {
        let now = clock.monotonic();
        shared
            .heartbeat_ms
            .store(now.as_millis() as u64, Ordering::Relaxed);
        if source.needs_pacing() {
            if now < next_due {
                std::thread::sleep((next_due - now).min(Duration::from_millis(100)));
                continue;
            }
            // Late by whole periods: skip those frames rather than bursting to catch up.
            let late = ((now - next_due).as_nanos() / period.as_nanos()) as u64;
            if late > 0 {
                shared.dropped.inc_by(late);
                *seq += late;
                next_due += period * late as u32;
            }
            next_due += period;
        }
        let mut frame = pool.get();
        let meta = FrameMeta {
            seq: *seq,
            capture_mono: now,
            capture_wall_ms: clock.wall_millis(),
        };
        source.capture(&mut frame, meta)?;
        // The frame goes to the privacy stage and encoder once they exist; until then it
        // returns to the pool here.
        drop(frame);
        *seq += 1;
        shared.frames.inc();
        if first {
            shared.set_state(CameraState::Running);
            *shared.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
            tracing::info!(camera = %spec.id, width = spec.width, height = spec.height, fps = spec.fps, "camera running");
            first = false;
        }
        window_frames += 1;
        let elapsed = clock.monotonic().saturating_sub(window_start);
        if elapsed >= Duration::from_secs(1) {
            shared
                .fps
                .set(f64::from(window_frames) / elapsed.as_secs_f64());
            (window_start, window_frames) = (clock.monotonic(), 0);
        }
    }
    Ok(())
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

/// The factory for a synthetic camera.
pub fn synthetic_factory(width: u32, height: u32) -> SourceFactory {
    Box::new(move || Ok(Box::new(SyntheticSource::new(width, height)) as Box<dyn CaptureSource>))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::Instant;

    use veil_core::{ErrorKind, SystemClock};

    use super::*;

    fn spec(fps: u32) -> CameraSpec {
        CameraSpec {
            id: "t".into(),
            name: "T".into(),
            kind: "synthetic",
            width: 160,
            height: 96,
            fps,
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

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn synthetic_camera_runs_at_its_rate_and_stops() {
        let m = metrics();
        let mut cam = Camera::spawn(
            spec(50),
            synthetic_factory(160, 96),
            Arc::new(SystemClock::new()),
            &m,
            fast_retry(),
        )
        .unwrap();
        wait_for("20 frames", || cam.status().frames_total >= 20);
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

    /// A source that fails to open twice, then crashes once mid-stream, then works.
    struct Flaky {
        opens: Arc<AtomicU32>,
        frames: u32,
    }

    impl CaptureSource for Flaky {
        fn capture(&mut self, _frame: &mut Frame, _meta: FrameMeta) -> Result<(), Error> {
            self.frames += 1;
            if self.opens.load(Ordering::SeqCst) == 3 && self.frames == 5 {
                panic!("decoder exploded");
            }
            Ok(())
        }
        fn needs_pacing(&self) -> bool {
            true
        }
    }

    #[test]
    fn supervisor_restarts_failed_and_crashed_sources() {
        let m = metrics();
        let opens = Arc::new(AtomicU32::new(0));
        let factory: SourceFactory = Box::new({
            let opens = opens.clone();
            move || {
                let n = opens.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= 2 {
                    return Err(Error::new(ErrorKind::Unavailable, "camera unplugged"));
                }
                Ok(Box::new(Flaky {
                    opens: opens.clone(),
                    frames: 0,
                }) as Box<dyn CaptureSource>)
            }
        });
        let cam = Camera::spawn(
            spec(100),
            factory,
            Arc::new(SystemClock::new()),
            &m,
            fast_retry(),
        )
        .unwrap();
        wait_for("the fourth open", || opens.load(Ordering::SeqCst) >= 4);
        wait_for("running again", || {
            cam.status().state == CameraState::Running
        });
        wait_for("frames after recovery", || cam.status().frames_total > 10);
        let restarts = m
            .camera_restarts
            .get_or_create(&CameraLabels { camera: "t".into() })
            .get();
        assert_eq!(restarts, 3, "two open failures and one crash");
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
        let cam = Camera::spawn(
            spec(10),
            factory,
            Arc::new(SystemClock::new()),
            &m,
            fast_retry(),
        )
        .unwrap();
        wait_for("retrying", || cam.status().state == CameraState::Retrying);
        assert_eq!(
            cam.status().last_error.as_deref(),
            Some("no such device /dev/video9")
        );
        assert!(cam.alive_since(0));
    }

    #[test]
    fn a_slow_source_drops_frames_instead_of_queueing() {
        struct Slow;
        impl CaptureSource for Slow {
            fn capture(&mut self, _f: &mut Frame, _m: FrameMeta) -> Result<(), Error> {
                std::thread::sleep(Duration::from_millis(30));
                Ok(())
            }
            fn needs_pacing(&self) -> bool {
                true
            }
        }
        let m = metrics();
        let cam = Camera::spawn(
            spec(100),
            Box::new(|| Ok(Box::new(Slow) as Box<dyn CaptureSource>)),
            Arc::new(SystemClock::new()),
            &m,
            fast_retry(),
        )
        .unwrap();
        wait_for("drops", || cam.status().frames_dropped >= 10);
        let s = cam.status();
        assert!(s.frames_total < s.frames_dropped, "{s:?}");
    }
}
