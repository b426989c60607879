//! A camera's media path after capture: privacy stage, then encoder, each on its own thread,
//! joined by bounded queues.
//!
//! Capture offers frames with [`PipelineInput::offer`], which never blocks: when a stage is
//! behind, the frame is dropped and counted. Encoded frames go to every subscriber through a
//! broadcast channel; a slow subscriber loses frames (it sees `Lagged`) without slowing the
//! others or the camera.
//!
//! A camera whose owner keeps originals gets a second encoder (`orig-` thread) fed with a copy
//! of each frame taken before the privacy stage. Its stream is only for the footage store,
//! which encrypts it at rest; nothing else subscribes to it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::broadcast;
use veil_core::{Clock, Error};

use crate::frame::{Frame, FramePool, PooledFrame};
use crate::h264::{EncodedFrame, EncoderSettings, Openh264Encoder, VideoEncoder};

/// Rewrites a frame in place before it is encoded (the privacy engine plugs in here).
pub type PrivacyStage = Box<dyn FnMut(&mut PooledFrame) + Send>;

/// Makes an encoder for a frame size; called again when the size changes.
pub type EncoderFactory =
    Box<dyn FnMut(EncoderSettings) -> Result<Box<dyn VideoEncoder>, Error> + Send>;

pub fn openh264_factory() -> EncoderFactory {
    Box::new(|s| Ok(Box::new(Openh264Encoder::new(s)?) as Box<dyn VideoEncoder>))
}

/// The board's V4L2 memory-to-memory encoder, falling back to openh264 (with a warning) when
/// the device cannot be used: recording goes on, only more slowly.
pub fn v4l2m2m_factory(device: std::path::PathBuf) -> EncoderFactory {
    Box::new(
        move |s| match crate::h264::V4l2M2mEncoder::open(&device, s) {
            Ok(e) => Ok(Box::new(e) as Box<dyn VideoEncoder>),
            Err(e) => {
                tracing::warn!(error = %e, "hardware encoder unavailable; encoding in software");
                Ok(Box::new(Openh264Encoder::new(s)?) as Box<dyn VideoEncoder>)
            }
        },
    )
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub name: String,
    /// Frames per second the source delivers (sets the encoder's rate and GOP).
    pub fps: u32,
    /// Bits per second; 0 picks a default for the frame size.
    pub bitrate_bps: u32,
    /// Seconds between keyframes.
    pub keyframe_secs: u32,
    pub encoder_threads: u16,
    /// Frames each queue holds before the stage in front of it drops.
    pub queue_depth: usize,
    /// Encoded frames buffered per subscriber.
    pub output_capacity: usize,
    /// Stages wait for each other instead of dropping: for files played as fast as possible
    /// and benchmarks, never for live cameras.
    pub lossless: bool,
    /// Also encode the frames as captured (see [`Pipeline::subscribe_originals`]).
    pub keep_originals: bool,
}

impl PipelineConfig {
    pub fn new(name: impl Into<String>, fps: u32) -> Self {
        PipelineConfig {
            name: name.into(),
            fps,
            bitrate_bps: 0,
            keyframe_secs: 2,
            encoder_threads: 1,
            queue_depth: 2,
            output_capacity: 64,
            lossless: false,
            keep_originals: false,
        }
    }
}

/// Counters of one pipeline; read by status, metrics and benchmarks.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub frames_in: AtomicU64,
    pub frames_encoded: AtomicU64,
    pub dropped_before_privacy: AtomicU64,
    pub dropped_before_encoder: AtomicU64,
    pub bytes_out: AtomicU64,
    pub keyframes: AtomicU64,
    /// Last frame's encode time and capture-to-encoded latency, in microseconds.
    pub last_encode_us: AtomicU64,
    pub last_latency_us: AtomicU64,
    pub queue_privacy: AtomicU64,
    pub queue_encode: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Name of the encoder in use (`openh264`, `v4l2m2m`); empty before the first frame.
    pub encoder: Mutex<&'static str>,
    /// The rate the open source reports (an RTSP camera's SDP, a file's header); 0 = unknown,
    /// use the configured rate.
    pub source_fps: std::sync::atomic::AtomicU32,
}

impl PipelineStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_before_privacy.load(Ordering::Relaxed)
            + self.dropped_before_encoder.load(Ordering::Relaxed)
    }
}

/// The capture side's handle.
#[derive(Clone)]
pub struct PipelineInput {
    tx: SyncSender<PooledFrame>,
    stats: Arc<PipelineStats>,
}

impl PipelineInput {
    /// Hands a frame over without waiting; returns false (and counts a drop) when the privacy
    /// stage is still busy with earlier frames.
    pub fn offer(&self, frame: PooledFrame) -> bool {
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(frame) {
            Ok(()) => {
                self.stats.queue_privacy.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats
                    .dropped_before_privacy
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Tells the encoder the rate the source actually delivers; a change restarts the encoder
    /// (rate control and keyframe interval depend on it).
    pub fn set_source_fps(&self, fps: u32) {
        self.stats.source_fps.store(fps.min(120), Ordering::Relaxed);
    }

    /// Hands a frame over, waiting for room: for files played as fast as possible and for
    /// benchmarks, never for live cameras.
    pub fn send_blocking(&self, frame: PooledFrame) -> bool {
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        self.stats.queue_privacy.fetch_add(1, Ordering::Relaxed);
        self.tx.send(frame).is_ok()
    }
}

/// Callers waiting for a copy of the next frame the privacy stage lets through.
type SnapshotWaiters = Arc<Mutex<Vec<SyncSender<Frame>>>>;

/// Takes copies of frames after the privacy stage; cheap to clone.
#[derive(Clone)]
pub struct Snapshotter(SnapshotWaiters);

impl Snapshotter {
    pub fn take(&self, wait: Duration) -> Option<Frame> {
        let (tx, rx) = sync_channel(1);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
        rx.recv_timeout(wait).ok()
    }
}

pub struct Pipeline {
    input: Option<PipelineInput>,
    snapshots: SnapshotWaiters,
    output: broadcast::Sender<EncodedFrame>,
    stats: Arc<PipelineStats>,
    keyframe_request: Arc<AtomicBool>,
    originals: Option<(broadcast::Sender<EncodedFrame>, Arc<PipelineStats>)>,
    original_snapshots: Option<SnapshotWaiters>,
    branches: BranchTaps,
    threads: Vec<JoinHandle<()>>,
}

/// Copies frames into another stage's queue from pooled buffers, without waiting unless the
/// pipeline is lossless.
struct Tap {
    pool: Option<FramePool>,
}

impl Tap {
    /// A pooled copy of `frame` (pixels and metadata).
    fn copy(&mut self, frame: &Frame) -> PooledFrame {
        let size = (frame.width(), frame.height());
        if self.pool.as_ref().is_none_or(|p| p.size() != size) {
            self.pool = Some(FramePool::new(size.0, size.1));
        }
        let mut copy = self.pool.as_ref().expect("set above").get();
        copy.data_mut().copy_from_slice(frame.data());
        copy.meta = frame.meta;
        copy
    }
}

/// Asks a pipeline's encoder for a keyframe; cheap to clone.
#[derive(Clone)]
pub struct KeyframeTrigger(Arc<AtomicBool>);

impl KeyframeTrigger {
    pub fn fire(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Where the privacy thread hands copies of the frames as captured.
struct OriginalsTap {
    tx: SyncSender<PooledFrame>,
    tap: Tap,
    stats: Arc<PipelineStats>,
    /// Callers waiting for a copy of the next frame as captured.
    snapshots: SnapshotWaiters,
}

impl OriginalsTap {
    fn copy(&mut self, frame: &Frame, lossless: bool) {
        let waiting =
            std::mem::take(&mut *self.snapshots.lock().unwrap_or_else(|e| e.into_inner()));
        for waiter in waiting {
            let _ = waiter.try_send(frame.clone());
        }
        let copy = self.tap.copy(frame);
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        let sent = if lossless {
            self.tx.send(copy).is_ok()
        } else {
            self.tx.try_send(copy).is_ok()
        };
        if sent {
            self.stats.queue_encode.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats
                .dropped_before_encoder
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Feeds a branch (see [`Pipeline::branch`]) with copies of the frames as captured, at most
/// at the branch's frame rate.
struct BranchTap {
    id: u64,
    input: PipelineInput,
    tap: Tap,
    min_interval: Duration,
    last_kept: Option<Duration>,
}

impl BranchTap {
    fn copy(&mut self, frame: &Frame) {
        let t = frame.meta.capture_mono;
        // 10 % slack so a source a little faster than the rate is not halved.
        if self
            .last_kept
            .is_some_and(|last| t.saturating_sub(last) < self.min_interval.mul_f64(0.9))
        {
            return;
        }
        self.last_kept = Some(t);
        let copy = self.tap.copy(frame);
        self.input.offer(copy);
    }
}

type BranchTaps = Arc<Mutex<Vec<BranchTap>>>;

/// Another anonymized encode of the same camera, for a live viewer entitled to another filter
/// than the camera's own: its own privacy stage (fail-safe like the camera's) and encoder on
/// copies of the frames as captured. The frames it gets are never encoded unless they passed
/// its privacy stage. Dropping it stops its threads.
pub struct Branch {
    id: u64,
    taps: BranchTaps,
    pipeline: Option<Pipeline>,
}

impl Branch {
    pub fn subscribe(&self) -> broadcast::Receiver<EncodedFrame> {
        self.pipeline().subscribe()
    }

    pub fn keyframe_trigger(&self) -> KeyframeTrigger {
        self.pipeline().keyframe_trigger()
    }

    pub fn stats(&self) -> &Arc<PipelineStats> {
        self.pipeline().stats()
    }

    pub fn snapshotter(&self) -> Snapshotter {
        self.pipeline().snapshotter()
    }

    fn pipeline(&self) -> &Pipeline {
        self.pipeline.as_ref().expect("present until dropped")
    }
}

impl Drop for Branch {
    fn drop(&mut self) {
        self.taps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t| t.id != self.id);
        if let Some(p) = self.pipeline.take() {
            p.finish();
        }
    }
}

impl Pipeline {
    /// Starts the stages. With `config.keep_originals`, `original_encoders` makes the
    /// originals' encoder (another instance of the same kind).
    pub fn start(
        config: PipelineConfig,
        privacy: PrivacyStage,
        encoders: EncoderFactory,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Pipeline> {
        Self::start_with_originals(config, privacy, encoders, None, clock)
    }

    pub fn start_with_originals(
        config: PipelineConfig,
        privacy: PrivacyStage,
        encoders: EncoderFactory,
        original_encoders: Option<EncoderFactory>,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Pipeline> {
        let stats = Arc::new(PipelineStats::default());
        let mut threads = Vec::new();
        let mut originals = None;
        let mut tap = None;
        let mut original_snapshots = None;
        if let Some(factory) = original_encoders.filter(|_| config.keep_originals) {
            let orig_stats = Arc::new(PipelineStats::default());
            let (tx, rx) = sync_channel::<PooledFrame>(config.queue_depth);
            let (out, _) = broadcast::channel(config.output_capacity.max(1));
            let thread = std::thread::Builder::new()
                .name(format!("orig-{}", config.name))
                .spawn({
                    let (stats, out, config, clock) = (
                        orig_stats.clone(),
                        out.clone(),
                        config.clone(),
                        clock.clone(),
                    );
                    // Keyframes on the encoder's own schedule: nobody asks the originals for one.
                    let never = AtomicBool::new(false);
                    move || encode_loop(rx, &config, factory, &out, &stats, &never, &*clock)
                })?;
            threads.push(thread);
            let waiters = SnapshotWaiters::default();
            original_snapshots = Some(waiters.clone());
            tap = Some(OriginalsTap {
                tx,
                tap: Tap { pool: None },
                stats: orig_stats.clone(),
                snapshots: waiters,
            });
            originals = Some((out, orig_stats));
        }
        let (in_tx, in_rx) = sync_channel::<PooledFrame>(config.queue_depth);
        let (enc_tx, enc_rx) = sync_channel::<PooledFrame>(config.queue_depth);
        let (output, _) = broadcast::channel(config.output_capacity.max(1));
        let keyframe_request = Arc::new(AtomicBool::new(false));
        let snapshots = SnapshotWaiters::default();
        let branches = BranchTaps::default();
        let privacy_thread = std::thread::Builder::new()
            .name(format!("priv-{}", config.name))
            .spawn({
                let (stats, snapshots) = (stats.clone(), snapshots.clone());
                let (lossless, name) = (config.lossless, config.name.clone());
                let taps = Taps {
                    originals: tap,
                    branches: branches.clone(),
                };
                move || {
                    privacy_loop(
                        in_rx, enc_tx, privacy, taps, &stats, &snapshots, lossless, &name,
                    )
                }
            })?;
        let encode_thread = std::thread::Builder::new()
            .name(format!("enc-{}", config.name))
            .spawn({
                let (stats, output, kf) = (stats.clone(), output.clone(), keyframe_request.clone());
                move || encode_loop(enc_rx, &config, encoders, &output, &stats, &kf, &*clock)
            })?;
        Ok(Pipeline {
            input: Some(PipelineInput {
                tx: in_tx,
                stats: stats.clone(),
            }),
            snapshots,
            output,
            stats,
            keyframe_request,
            originals,
            original_snapshots,
            branches,
            threads: {
                threads.extend([privacy_thread, encode_thread]);
                threads
            },
        })
    }

    /// The stream of frames as captured, when the pipeline keeps originals: for the footage
    /// store only (which encrypts it), never for viewers.
    pub fn subscribe_originals(&self) -> Option<broadcast::Receiver<EncodedFrame>> {
        self.originals.as_ref().map(|(tx, _)| tx.subscribe())
    }

    pub fn originals_stats(&self) -> Option<&Arc<PipelineStats>> {
        self.originals.as_ref().map(|(_, s)| s)
    }

    pub fn input(&self) -> PipelineInput {
        self.input
            .clone()
            .expect("input lives until the pipeline stops")
    }

    /// A new consumer of the encoded stream; it starts with the next frame.
    pub fn subscribe(&self) -> broadcast::Receiver<EncodedFrame> {
        self.output.subscribe()
    }

    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }

    /// A copy of the next frame as it leaves the privacy stage (what viewers would see), or
    /// `None` if no frame comes within `wait`.
    pub fn snapshot(&self, wait: Duration) -> Option<Frame> {
        self.snapshotter().take(wait)
    }

    /// Takes copies of frames *before* the privacy stage, only when the pipeline keeps
    /// originals (their owner may see what is recorded; no one else has this path).
    pub fn original_snapshotter(&self) -> Option<Snapshotter> {
        self.original_snapshots.clone().map(Snapshotter)
    }

    /// A handle that takes snapshots without borrowing the pipeline.
    pub fn snapshotter(&self) -> Snapshotter {
        Snapshotter(self.snapshots.clone())
    }

    /// Asks for a keyframe as soon as possible (a new live viewer, a new segment).
    pub fn request_keyframe(&self) {
        self.keyframe_request.store(true, Ordering::SeqCst);
    }

    /// Asks for keyframes without holding on to the pipeline.
    pub fn keyframe_trigger(&self) -> KeyframeTrigger {
        KeyframeTrigger(self.keyframe_request.clone())
    }

    /// Starts another anonymized encode of this pipeline's frames as captured (see
    /// [`Branch`]), fed at most `config.fps` frames a second.
    pub fn branch(
        &self,
        config: PipelineConfig,
        privacy: PrivacyStage,
        encoders: EncoderFactory,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Branch> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let min_interval = Duration::from_secs(1) / config.fps.max(1);
        let pipeline = Pipeline::start(config, privacy, encoders, clock)?;
        self.branches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(BranchTap {
                id,
                input: pipeline.input(),
                tap: Tap { pool: None },
                min_interval,
                last_kept: None,
            });
        Ok(Branch {
            id,
            taps: self.branches.clone(),
            pipeline: Some(pipeline),
        })
    }

    /// Stops after the queued frames are encoded. Every input handle must be dropped first.
    pub fn finish(mut self) {
        self.input = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Where the privacy thread copies frames before its own stage.
struct Taps {
    originals: Option<OriginalsTap>,
    branches: BranchTaps,
}

#[allow(clippy::too_many_arguments)]
fn privacy_loop(
    rx: Receiver<PooledFrame>,
    tx: SyncSender<PooledFrame>,
    mut privacy: PrivacyStage,
    mut taps: Taps,
    stats: &PipelineStats,
    snapshots: &Mutex<Vec<SyncSender<Frame>>>,
    lossless: bool,
    name: &str,
) {
    // Once the stage has panicked its state cannot be trusted: every later frame is blanked
    // (the camera keeps recording black, and its status says why) rather than the thread
    // ending silently or a frame passing unprotected.
    let mut crashed = false;
    while let Ok(mut frame) = rx.recv() {
        stats.queue_privacy.fetch_sub(1, Ordering::Relaxed);
        if let Some(tap) = &mut taps.originals {
            tap.copy(&frame, lossless);
        }
        for branch in taps
            .branches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
        {
            branch.copy(&frame);
        }
        if !crashed {
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| privacy(&mut frame)));
            if outcome.is_err() {
                crashed = true;
                let message = "privacy stage crashed: frames are blanked until the camera restarts";
                tracing::error!(camera = name, "{message}");
                *stats.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(message.to_string());
            }
        }
        if crashed {
            let (y, u, v) = frame.planes_mut();
            y.fill(16);
            u.fill(128);
            v.fill(128);
        }
        let waiting = std::mem::take(&mut *snapshots.lock().unwrap_or_else(|e| e.into_inner()));
        for waiter in waiting {
            let _ = waiter.try_send((*frame).clone());
        }
        let sent = if lossless {
            tx.send(frame).map_err(|e| TrySendError::Disconnected(e.0))
        } else {
            tx.try_send(frame)
        };
        match sent {
            Ok(()) => {
                stats.queue_encode.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                stats.dropped_before_encoder.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

fn encode_loop(
    rx: Receiver<PooledFrame>,
    config: &PipelineConfig,
    mut encoders: EncoderFactory,
    output: &broadcast::Sender<EncodedFrame>,
    stats: &PipelineStats,
    keyframe_request: &AtomicBool,
    clock: &dyn Clock,
) {
    // The encoder and the (width, height, fps) it was set up for.
    type Setup = (u32, u32, u32);
    let mut encoder: Option<(Box<dyn VideoEncoder>, Setup)> = None;
    while let Ok(frame) = rx.recv() {
        stats.queue_encode.fetch_sub(1, Ordering::Relaxed);
        let fps = match stats.source_fps.load(Ordering::Relaxed) {
            0 => config.fps,
            f => f,
        };
        let key = (frame.width(), frame.height(), fps);
        if encoder.as_ref().is_none_or(|(_, k)| *k != key) {
            let size = (key.0, key.1);
            let mut settings = EncoderSettings::for_stream(size.0, size.1, fps);
            settings.keyframe_interval = (fps * config.keyframe_secs).max(1);
            settings.threads = config.encoder_threads;
            if config.bitrate_bps > 0 {
                settings.bitrate_bps = config.bitrate_bps;
            }
            match encoders(settings) {
                Ok(e) => {
                    *stats.encoder.lock().unwrap_or_else(|p| p.into_inner()) = e.name();
                    encoder = Some((e, key));
                }
                Err(e) => {
                    record_error(stats, &config.name, &e);
                    continue;
                }
            }
        }
        let (enc, _) = encoder.as_mut().expect("set above");
        let force = keyframe_request.swap(false, Ordering::SeqCst);
        match enc.encode(&frame, force) {
            Ok(Some(encoded)) => {
                let latency = clock.monotonic().saturating_sub(frame.meta.capture_mono);
                stats.frames_encoded.fetch_add(1, Ordering::Relaxed);
                stats
                    .bytes_out
                    .fetch_add(encoded.data.len() as u64, Ordering::Relaxed);
                stats
                    .keyframes
                    .fetch_add(u64::from(encoded.keyframe), Ordering::Relaxed);
                stats
                    .last_encode_us
                    .store(encoded.encode_time.as_micros() as u64, Ordering::Relaxed);
                stats
                    .last_latency_us
                    .store(latency.as_micros() as u64, Ordering::Relaxed);
                // No subscriber is fine: the stream is simply not consumed right now.
                let _ = output.send(encoded);
            }
            Ok(None) => {}
            Err(e) => {
                record_error(stats, &config.name, &e);
                // A failed encoder may be in any state: start the next frame on a fresh one.
                encoder = None;
            }
        }
    }
}

fn record_error(stats: &PipelineStats, name: &str, e: &Error) {
    tracing::warn!(camera = name, error = %e, "encoder failed");
    *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
}

/// A `Duration` as fractional milliseconds, for reports.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use veil_core::SystemClock;

    use super::*;
    use crate::frame::{FrameMeta, FramePool};
    use crate::h264::Openh264Decoder;
    use crate::synthetic::{SyntheticSource, read_burned_in};

    #[test]
    fn frames_flow_through_privacy_and_encoder_to_every_subscriber() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let privacy: PrivacyStage = Box::new(|f| {
            // Blank the bottom half: the decoded output must show it.
            let (w, h) = (f.width() as usize, f.height() as usize);
            f.planes_mut().0[w * h / 2..].fill(16);
        });
        let config = PipelineConfig {
            lossless: true,
            ..PipelineConfig::new("t", 30)
        };
        let p = Pipeline::start(config, privacy, openh264_factory(), clock.clone()).unwrap();
        let mut a = p.subscribe();
        let mut b = p.subscribe();
        let (pool, src) = (FramePool::new(320, 240), SyntheticSource::new(320, 240));
        let input = p.input();
        for seq in 0..40 {
            let mut f = pool.get();
            src.render(
                &mut f,
                FrameMeta {
                    seq,
                    capture_mono: clock.monotonic(),
                    capture_wall_ms: 1,
                },
            );
            assert!(input.send_blocking(f));
        }
        drop(input);
        let stats = p.stats().clone();
        p.finish();
        let mut dec = Openh264Decoder::new().unwrap();
        let mut seqs = Vec::new();
        while let Ok(e) = a.try_recv() {
            let f = dec.decode(&e.data).unwrap().unwrap();
            seqs.push(read_burned_in(f.y(), 320, 240).unwrap().seq);
            assert!(
                f.y()[320 * 200..]
                    .iter()
                    .all(|&p| (p as i32 - 16).abs() < 12),
                "privacy stage output not encoded"
            );
            assert_eq!(
                b.try_recv().unwrap().data,
                e.data,
                "subscribers share the same bytes"
            );
        }
        assert_eq!(seqs, (0..40).collect::<Vec<u32>>());
        assert_eq!(stats.frames_encoded.load(Ordering::Relaxed), 40);
        assert_eq!(*stats.encoder.lock().unwrap(), "openh264");
        assert_eq!(stats.dropped(), 0);
    }

    #[test]
    fn a_branch_anonymizes_copies_as_captured_with_its_own_stage_at_its_own_rate() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        // The camera's stage blanks the top half, the branch's the bottom half: each output
        // must show its own stage only, so the branch gets frames from before the camera's.
        let top: PrivacyStage = Box::new(|f| {
            let (w, h) = (f.width() as usize, f.height() as usize);
            f.planes_mut().0[w * 16..w * h / 2].fill(16);
        });
        let bottom: PrivacyStage = Box::new(|f| {
            let (w, h) = (f.width() as usize, f.height() as usize);
            f.planes_mut().0[w * h / 2..].fill(16);
        });
        let config = PipelineConfig {
            lossless: true,
            ..PipelineConfig::new("cam", 30)
        };
        let p = Pipeline::start(config, top, openh264_factory(), clock.clone()).unwrap();
        let branch_config = PipelineConfig {
            lossless: true,
            ..PipelineConfig::new("cam-live", 10)
        };
        let branch = p
            .branch(branch_config, bottom, openh264_factory(), clock.clone())
            .unwrap();
        let mut live = branch.subscribe();
        let (pool, src) = (FramePool::new(320, 240), SyntheticSource::new(320, 240));
        let input = p.input();
        for seq in 0..30u64 {
            let mut f = pool.get();
            src.render(
                &mut f,
                FrameMeta {
                    seq,
                    capture_mono: Duration::from_millis(seq * 33),
                    capture_wall_ms: 1,
                },
            );
            assert!(input.send_blocking(f));
        }
        drop(input);
        p.finish();
        // Lossless at the parent, but the branch's queue may drop: wait for what it keeps.
        let mut dec = Openh264Decoder::new().unwrap();
        let mut seqs = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seqs.len() < 10 && std::time::Instant::now() < deadline {
            match live.try_recv() {
                Ok(e) => {
                    let f = dec.decode(&e.data).unwrap().unwrap();
                    seqs.push(read_burned_in(f.y(), 320, 240).unwrap().seq);
                    let dark = |rows: std::ops::Range<usize>| {
                        f.y()[320 * rows.start..320 * rows.end]
                            .iter()
                            .all(|&p| (p as i32 - 16).abs() < 12)
                    };
                    assert!(dark(130..240), "the branch's own stage ran");
                    assert!(!dark(30..110), "the camera's stage did not run first");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        assert!(!seqs.is_empty());
        assert!(
            seqs.windows(2).all(|w| w[1] - w[0] >= 3),
            "30 fps thinned to 10 fps: {seqs:?}"
        );
        drop(branch);
    }

    #[test]
    fn the_sources_own_rate_sets_the_keyframe_interval() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let config = PipelineConfig {
            lossless: true,
            keyframe_secs: 1,
            ..PipelineConfig::new("rate", 30)
        };
        let p = Pipeline::start(config, Box::new(|_| {}), openh264_factory(), clock).unwrap();
        let input = p.input();
        input.set_source_fps(10);
        let pool = FramePool::new(160, 96);
        for _ in 0..25 {
            input.send_blocking(pool.get());
        }
        drop(input);
        let stats = p.stats().clone();
        p.finish();
        assert_eq!(
            stats.keyframes.load(Ordering::Relaxed),
            3,
            "keyframes at 0, 10, 20 for a 10 fps source"
        );
    }

    #[test]
    fn a_slow_stage_drops_frames_and_capture_never_waits() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let privacy: PrivacyStage = Box::new(|_| std::thread::sleep(Duration::from_millis(20)));
        let p = Pipeline::start(
            PipelineConfig::new("slow", 30),
            privacy,
            openh264_factory(),
            clock,
        )
        .unwrap();
        let pool = FramePool::new(160, 96);
        let input = p.input();
        let started = std::time::Instant::now();
        let accepted = (0..50).filter(|_| input.offer(pool.get())).count();
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "offer blocked"
        );
        assert!(accepted < 50);
        let stats = p.stats().clone();
        drop(input);
        p.finish();
        assert_eq!(
            stats.dropped_before_privacy.load(Ordering::Relaxed) as usize,
            50 - accepted
        );
        assert_eq!(stats.frames_in.load(Ordering::Relaxed), 50);
    }

    /// Feeds `frames` synthetic 160x96 frames, 5 ms apart, from a thread of its own.
    fn feed(p: &Pipeline, frames: u64) -> std::thread::JoinHandle<()> {
        let input = p.input();
        std::thread::spawn(move || {
            let (pool, src) = (FramePool::new(160, 96), SyntheticSource::new(160, 96));
            for seq in 0..frames {
                let mut f = pool.get();
                src.render(
                    &mut f,
                    FrameMeta {
                        seq,
                        ..Default::default()
                    },
                );
                input.offer(f);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    }

    #[test]
    fn snapshots_show_the_frame_after_the_privacy_stage() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let blank: PrivacyStage = Box::new(|f| f.planes_mut().0.fill(16));
        let p = Arc::new(
            Pipeline::start(
                PipelineConfig::new("snap", 30),
                blank,
                openh264_factory(),
                clock,
            )
            .unwrap(),
        );
        let feeder = feed(&p, 200);
        let snap = p.snapshot(Duration::from_secs(5)).expect("a snapshot");
        assert!(
            snap.y().iter().all(|&v| v == 16),
            "snapshot taken before the privacy stage"
        );
        feeder.join().unwrap();
        assert!(
            p.snapshot(Duration::from_millis(100)).is_none(),
            "no frames, no snapshot"
        );
    }

    #[test]
    fn a_privacy_stage_that_panics_blanks_every_later_frame() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let mut n = 0;
        // Test double: a stage that hides nothing and panics on its fourth frame.
        let crashing: PrivacyStage = Box::new(move |_| {
            n += 1;
            if n == 4 {
                panic!("engine bug");
            }
        });
        let p = Pipeline::start(
            PipelineConfig::new("crash", 30),
            crashing,
            openh264_factory(),
            clock,
        )
        .unwrap();
        let feeder = feed(&p, 100);
        std::thread::sleep(Duration::from_millis(150));
        let snap = p.snapshot(Duration::from_secs(5)).expect("a snapshot");
        feeder.join().unwrap();
        assert!(
            snap.y().iter().all(|&v| v == 16),
            "a frame left after the crash"
        );
        let err = p
            .stats()
            .last_error
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default();
        assert!(err.contains("privacy stage crashed"), "{err}");
    }

    /// Decodes an encoded stream and returns the mean luma of its last picture.
    fn mean_luma(frames: &[EncodedFrame]) -> f64 {
        let mut dec = crate::h264::Openh264Decoder::new().unwrap();
        let mut last = None;
        for f in frames {
            if let Some(p) = dec.decode(&f.data).unwrap() {
                last = Some(p.y().iter().map(|&v| v as f64).sum::<f64>() / p.y().len() as f64);
            }
        }
        last.expect("a decoded picture")
    }

    #[test]
    fn kept_originals_are_a_second_stream_taken_before_the_privacy_stage() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        // Test double for the privacy engine: hides everything.
        let blank: PrivacyStage = Box::new(|f| f.planes_mut().0.fill(16));
        let config = PipelineConfig {
            keep_originals: true,
            lossless: true,
            ..PipelineConfig::new("orig", 30)
        };
        let p = Pipeline::start_with_originals(
            config,
            blank,
            openh264_factory(),
            Some(openh264_factory()),
            clock,
        )
        .unwrap();
        let (mut anon, mut orig) = (p.subscribe(), p.subscribe_originals().unwrap());
        // A snapshot of the originals shows the picture as captured; the ordinary one does not.
        let (originals, plain) = (p.original_snapshotter().unwrap(), p.snapshotter());
        let takers = std::thread::spawn(move || {
            (
                originals.take(Duration::from_secs(5)),
                plain.take(Duration::from_secs(5)),
            )
        });
        std::thread::sleep(Duration::from_millis(50));
        feed(&p, 20).join().unwrap();
        let (original, anonymized) = takers.join().unwrap();
        let luma = |f: &Frame| f.y().iter().map(|&v| v as f64).sum::<f64>() / f.y().len() as f64;
        assert!(luma(&original.expect("an original snapshot")) > 40.0);
        assert!(luma(&anonymized.expect("a snapshot")) < 20.0);
        let stats = p.originals_stats().unwrap().clone();
        p.finish();
        let drain = |rx: &mut broadcast::Receiver<EncodedFrame>| {
            std::iter::from_fn(|| rx.try_recv().ok()).collect::<Vec<_>>()
        };
        let (anon, orig) = (drain(&mut anon), drain(&mut orig));
        assert_eq!(
            stats.frames_encoded.load(Ordering::Relaxed),
            orig.len() as u64
        );
        assert!(
            orig.len() >= 10 && anon.len() >= 10,
            "{} {}",
            orig.len(),
            anon.len()
        );
        assert!(mean_luma(&anon) < 20.0, "the anonymized stream is blanked");
        assert!(
            mean_luma(&orig) > 40.0,
            "the originals are the captured picture"
        );
        // Without the option there is no originals stream at all.
        let p = Pipeline::start_with_originals(
            PipelineConfig::new("plain", 30),
            Box::new(|_| {}),
            openh264_factory(),
            Some(openh264_factory()),
            Arc::new(SystemClock::new()),
        )
        .unwrap();
        assert!(p.subscribe_originals().is_none());
        assert!(p.original_snapshotter().is_none());
        p.finish();
    }

    #[test]
    fn a_missing_hardware_encoder_falls_back_to_software() {
        let mut factory = v4l2m2m_factory("/dev/video-veil-missing".into());
        let enc = factory(EncoderSettings::for_stream(160, 96, 10)).unwrap();
        assert_eq!(enc.name(), "openh264");
    }

    #[test]
    fn an_encoder_that_cannot_start_is_reported() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let failing: EncoderFactory = Box::new(|_| {
            Err(Error::new(
                veil_core::ErrorKind::Unavailable,
                "/dev/video11: no such device",
            ))
        });
        let p = Pipeline::start(
            PipelineConfig::new("x", 30),
            Box::new(|_| {}),
            failing,
            clock,
        )
        .unwrap();
        let input = p.input();
        input.send_blocking(FramePool::new(64, 64).get());
        drop(input);
        let stats = p.stats().clone();
        p.finish();
        assert_eq!(
            stats.last_error.lock().unwrap().as_deref(),
            Some("/dev/video11: no such device")
        );
        assert_eq!(stats.frames_encoded.load(Ordering::Relaxed), 0);
    }
}
