//! `veild bench …`: measurements that print one JSON object. Benchmarks, not tests: they run
//! on demand and their figures go to docs/benchmarks.md.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use veil_core::{Clock, Error, ErrorKind, SystemClock};
use veil_media::file::{FileOptions, FileSource};
use veil_media::frame::Frame;
use veil_media::h264::{EncoderSettings, Openh264Encoder, VideoEncoder};
use veil_media::pipeline::{Pipeline, PipelineConfig, ms, openh264_factory};
use veil_media::source::{Source, SyntheticCamera};

#[derive(Debug, Clone)]
pub enum BenchSource {
    Synthetic { width: u32, height: u32 },
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct PipelineBench {
    pub source: BenchSource,
    pub frames: u64,
    /// Rate of the real-time (latency) run.
    pub fps: u32,
    /// Also time ffmpeg's libx264 on the same frames.
    pub reference: bool,
}

fn open_source(
    b: &PipelineBench,
    clock: &Arc<dyn Clock>,
    realtime: bool,
) -> Result<Box<dyn Source>, Error> {
    Ok(match &b.source {
        BenchSource::Synthetic { width, height } => Box::new(SyntheticCamera::new(
            *width,
            *height,
            b.fps,
            clock.clone(),
            realtime,
        )),
        BenchSource::File(path) => {
            let options = FileOptions {
                looped: true,
                fps: Some(b.fps),
                realtime,
            };
            Box::new(FileSource::open(path, &options, clock.clone())?)
        }
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    // Every field after the name is numeric but the state letter; tpgid may be -1.
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse::<i64>().unwrap_or(0).max(0) as u64)
        .collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the state.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

/// Peak resident memory so far, MB.
fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

/// Resident memory now, MB.
fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

/// A memory line of /proc/self/status, MB.
fn status_mb(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// Runs `frames` frames through the pipeline, as fast as the encoder takes them.
fn throughput(b: &PipelineBench, clock: &Arc<dyn Clock>) -> Result<serde_json::Value, Error> {
    throughput_with(b, clock, Box::new(|_| {}))
}

fn throughput_with(
    b: &PipelineBench,
    clock: &Arc<dyn Clock>,
    privacy: veil_media::pipeline::PrivacyStage,
) -> Result<serde_json::Value, Error> {
    let mut source = open_source(b, clock, false)?;
    let config = PipelineConfig {
        lossless: true,
        ..PipelineConfig::new("bench", b.fps)
    };
    let pipeline = Pipeline::start(config, privacy, openh264_factory(), clock.clone())
        .map_err(|e| Error::wrap(ErrorKind::Internal, "starting the pipeline", e))?;
    let mut rx = pipeline.subscribe();
    let collector = std::thread::spawn(move || {
        let mut encode_ms = Vec::new();
        let mut bytes = 0usize;
        loop {
            match rx.blocking_recv() {
                Ok(f) => {
                    encode_ms.push(ms(f.encode_time));
                    bytes += f.data.len();
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return (encode_ms, bytes),
            }
        }
    });
    let input = pipeline.input();
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let mut size = (0, 0);
    for _ in 0..b.frames {
        let Some(frame) = source.next_frame()? else {
            break;
        };
        size = (frame.width(), frame.height());
        input.send_blocking(frame);
    }
    drop(input);
    let stats = pipeline.stats().clone();
    pipeline.finish();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let (mut encode_ms, bytes) = collector
        .join()
        .map_err(|_| Error::internal("collector panicked"))?;
    encode_ms.sort_by(f64::total_cmp);
    let encoded = stats
        .frames_encoded
        .load(std::sync::atomic::Ordering::Relaxed);
    Ok(json!({
        "width": size.0, "height": size.1,
        "frames": encoded,
        "fps": round2(encoded as f64 / wall),
        "encode_ms_p50": round2(percentile(&encode_ms, 0.5)),
        "encode_ms_p99": round2(percentile(&encode_ms, 0.99)),
        "cpu_cores": round2(cpu / wall),
        "bitrate_kbps": round2(bytes as f64 * 8.0 / 1000.0 / (encoded as f64 / b.fps as f64)),
        "rss_mb": round2(peak_rss_mb()),
    }))
}

/// Runs the source in real time and measures capture-to-encoded latency and drops.
fn realtime(
    b: &PipelineBench,
    clock: &Arc<dyn Clock>,
    frames: u64,
) -> Result<serde_json::Value, Error> {
    let mut source = open_source(b, clock, true)?;
    let pipeline = Pipeline::start(
        PipelineConfig::new("bench-rt", b.fps),
        Box::new(|_| {}),
        openh264_factory(),
        clock.clone(),
    )
    .map_err(|e| Error::wrap(ErrorKind::Internal, "starting the pipeline", e))?;
    let mut rx = pipeline.subscribe();
    let collector = std::thread::spawn({
        let clock = clock.clone();
        move || {
            let mut latency = Vec::new();
            loop {
                match rx.blocking_recv() {
                    Ok(f) => {
                        latency.push(ms(clock.monotonic().saturating_sub(f.meta.capture_mono)))
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return latency,
                }
            }
        }
    });
    let input = pipeline.input();
    let (mut first_seq, mut last_seq) = (None, 0);
    for _ in 0..frames {
        let Some(frame) = source.next_frame()? else {
            break;
        };
        first_seq.get_or_insert(frame.meta.seq);
        last_seq = frame.meta.seq;
        input.offer(frame);
    }
    drop(input);
    let stats = pipeline.stats().clone();
    pipeline.finish();
    let mut latency = collector
        .join()
        .map_err(|_| Error::internal("collector panicked"))?;
    latency.sort_by(f64::total_cmp);
    let source_gaps = (last_seq - first_seq.unwrap_or(0) + 1).saturating_sub(frames);
    Ok(json!({
        "fps": b.fps,
        "frames": latency.len(),
        "latency_ms_p50": round2(percentile(&latency, 0.5)),
        "latency_ms_p99": round2(percentile(&latency, 0.99)),
        "drops": stats.dropped() + source_gaps,
    }))
}

/// The encoder alone, timed per call, on the same frames in one thread.
fn raw_openh264(b: &PipelineBench, clock: &Arc<dyn Clock>) -> Result<f64, Error> {
    let mut source = open_source(b, clock, false)?;
    let mut encoder: Option<Openh264Encoder> = None;
    let mut busy = Duration::ZERO;
    let mut n = 0u64;
    for _ in 0..b.frames {
        let Some(frame) = source.next_frame()? else {
            break;
        };
        let enc = match &mut encoder {
            Some(e) => e,
            None => encoder.insert(Openh264Encoder::new(EncoderSettings {
                keyframe_interval: b.fps * 2,
                ..EncoderSettings::for_stream(frame.width(), frame.height(), b.fps)
            })?),
        };
        let f: &Frame = &frame;
        let t = Instant::now();
        enc.encode(f, false)?;
        busy += t.elapsed();
        n += 1;
    }
    Ok(n as f64 / busy.as_secs_f64())
}

/// Starts `ffmpeg -c:v libx264 -preset ultrafast -tune zerolatency -threads 1` reading raw
/// I420 from stdin; `None` when ffmpeg is not installed.
fn start_x264(width: u32, height: u32, fps: u32) -> Option<std::process::Child> {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostats",
            "-loglevel",
            "info",
            "-benchmark",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-s",
            &format!("{width}x{height}"),
            "-r",
            &fps.to_string(),
            "-i",
            "pipe:0",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-threads",
            "1",
            "-f",
            "null",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()
}

/// libx264 on the same frames, fed through a pipe; ffmpeg's own CPU time excludes ours.
fn reference_x264(
    b: &PipelineBench,
    clock: &Arc<dyn Clock>,
    w: u32,
    h: u32,
) -> Result<Option<f64>, Error> {
    let Some(mut child) = start_x264(w, h, b.fps) else {
        return Ok(None);
    };
    let mut stdin = child.stdin.take();
    let mut source = open_source(b, clock, false)?;
    for _ in 0..b.frames {
        let Some(frame) = source.next_frame()? else {
            break;
        };
        if stdin
            .as_mut()
            .is_some_and(|s| s.write_all(frame.data()).is_err())
        {
            stdin = None;
        }
    }
    drop(stdin);
    Ok(x264_fps(child, b.frames))
}

/// Frames per CPU-second from ffmpeg's `-benchmark` line (`bench: utime=1.234s stime=…`).
fn x264_fps(child: std::process::Child, frames: u64) -> Option<f64> {
    let out = child.wait_with_output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let field = |name: &str| -> Option<f64> {
        let at = text.find(&format!("{name}="))? + name.len() + 1;
        text[at..].split('s').next()?.parse().ok()
    };
    let cpu = field("utime")? + field("stime")?;
    (cpu > 0.0).then(|| frames as f64 / cpu)
}

pub fn pipeline(b: &PipelineBench) -> Result<serde_json::Value, Error> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let through = throughput(b, &clock)?;
    let rt_frames = b.frames.min(u64::from(b.fps) * 10);
    let rt = realtime(b, &clock, rt_frames)?;
    let (w, h) = (
        through["width"].as_u64().unwrap_or(0) as u32,
        through["height"].as_u64().unwrap_or(0) as u32,
    );
    let raw_fps = raw_openh264(b, &clock)?;
    let x264_fps = if b.reference {
        reference_x264(b, &clock, w, h)?
    } else {
        None
    };
    let fps = through["fps"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "source": match &b.source { BenchSource::Synthetic { .. } => "synthetic".to_string(), BenchSource::File(p) => p.display().to_string() },
        "width": w, "height": h, "frames": through["frames"],
        "fps": fps,
        "encode_ms_p50": through["encode_ms_p50"],
        "encode_ms_p99": through["encode_ms_p99"],
        "latency_ms_p50": rt["latency_ms_p50"],
        "latency_ms_p99": rt["latency_ms_p99"],
        "latency_run_fps": b.fps,
        "drops": rt["drops"],
        "cpu_cores": through["cpu_cores"],
        "rss_mb": through["rss_mb"],
        "bitrate_kbps": through["bitrate_kbps"],
        "raw_openh264_fps_per_core": round2(raw_fps),
        "pipeline_overhead_pct": round2((1.0 - fps / raw_fps).max(0.0) * 100.0),
        "x264_ultrafast_fps_per_core": x264_fps.map(round2),
    }))
}

/// Redaction kernels on a 1080p frame: ns per redacted pixel for each style, on face-sized
/// boxes and on the whole frame.
pub fn redact(rounds: u32) -> serde_json::Value {
    use veil_privacy::redact::{self, Rect, Style};
    let (w, h) = (1920u32, 1080u32);
    let mut frame = Frame::new(w, h);
    veil_media::SyntheticSource::new(w, h).render(&mut frame, veil_media::FrameMeta::default());
    let cases = [
        (
            "face_200",
            Rect {
                x: 600,
                y: 300,
                w: 200,
                h: 200,
            },
        ),
        (
            "full_frame",
            Rect {
                x: 0,
                y: 0,
                w: w as i32,
                h: h as i32,
            },
        ),
    ];
    let mut out = serde_json::Map::new();
    for (style_name, style) in [
        ("solid", Style::Solid),
        ("pixelate", Style::Pixelate),
        ("blur", Style::Blur),
    ] {
        for (case, r) in cases {
            let mut runs: Vec<f64> = (0..rounds.max(1))
                .map(|_| {
                    let t = Instant::now();
                    redact::apply(&mut frame, r, style);
                    t.elapsed().as_nanos() as f64 / (r.w as f64 * r.h as f64)
                })
                .collect();
            runs.sort_by(f64::total_cmp);
            out.insert(
                format!("{style_name}_{case}_ns_per_pixel"),
                json!(round2(percentile(&runs, 0.5))),
            );
        }
    }
    serde_json::Value::Object(out)
}

/// The privacy engine at work: the pipeline with the engine as its privacy stage, the engine's
/// per-frame cost, and the detector alone on the same frames.
pub fn privacy(
    b: &PipelineBench,
    filter: veil_privacy::Filter,
    detection: veil_privacy::DetectionSetup,
) -> Result<serde_json::Value, Error> {
    use std::sync::Mutex;
    use veil_privacy::{Detector, Engine, EngineConfig, FailSafePolicy, Style};
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let config = || EngineConfig {
        filter,
        masks: Vec::new(),
        style: Style::Pixelate,
        policy: FailSafePolicy::default(),
        detection: Some(detection.clone()),
    };
    let mut engine = Engine::new("bench", config())?;
    let stage_ms = Arc::new(Mutex::new(Vec::new()));
    let stage: veil_media::pipeline::PrivacyStage = Box::new({
        let stage_ms = stage_ms.clone();
        move |frame| {
            let t = Instant::now();
            engine.process(frame);
            stage_ms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ms(t.elapsed()));
        }
    });
    let through = throughput_with(b, &clock, stage)?;
    let mut stage_ms = std::mem::take(&mut *stage_ms.lock().unwrap_or_else(|e| e.into_inner()));
    stage_ms.sort_by(f64::total_cmp);
    // Each detector alone, one thread, on the same frames.
    let mut detectors: Vec<(&str, Box<dyn Detector>)> = Vec::new();
    if filter.needs_face_model() {
        detectors.push(("faces", Box::new(detection.face_detector()?)));
    }
    if filter.needs_plate_model() {
        detectors.push(("plates", Box::new(detection.plate_detector()?)));
    }
    if filter.hides_motion() {
        let motion = veil_privacy::motion::MotionDetector::new(Default::default());
        detectors.push(("motion", Box::new(motion)));
    }
    let mut detect = serde_json::Map::new();
    for (name, mut detector) in detectors {
        let mut source = open_source(b, &clock, false)?;
        let mut times = Vec::new();
        for _ in 0..b.frames.min(if name == "motion" { 300 } else { 60 }) {
            let Some(frame) = source.next_frame()? else {
                break;
            };
            let t = Instant::now();
            detector.detect(&frame)?;
            times.push(ms(t.elapsed()));
        }
        times.sort_by(f64::total_cmp);
        detect.insert(
            format!("{name}_detect_ms_p50"),
            json!(round2(percentile(&times, 0.5))),
        );
        detect.insert(
            format!("{name}_detect_ms_p99"),
            json!(round2(percentile(&times, 0.99))),
        );
    }
    Ok(json!({
        "filter": filter.name(),
        "width": through["width"], "height": through["height"], "frames": through["frames"],
        "fps": through["fps"],
        "privacy_stage_ms_p50": round2(percentile(&stage_ms, 0.5)),
        "privacy_stage_ms_p99": round2(percentile(&stage_ms, 0.99)),
        "detectors": detect,
        "cpu_cores": through["cpu_cores"],
        "rss_mb": through["rss_mb"],
    }))
}

/// `veild bench store`: each camera on its own thread writes `seconds` of a 4 Mbit/s, 30 fps
/// stream (keyframes every 2 s, ten times a P-frame) through the store's full discipline.
pub fn store(
    cameras: u32,
    seconds: u32,
    dir: &std::path::Path,
) -> Result<serde_json::Value, Error> {
    use veil_store::{Store, WriterSettings, Written};
    let root = dir.join(format!("veil-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (store, _) = Store::open(&root, "veil-bench")?;
    const FPS: u64 = 30;
    // 4 Mbit/s at 30 fps with a keyframe every 60 frames ten times the size of a P-frame.
    let p_frame = (4_000_000 / 8 * 60 / FPS / (59 + 10)) as usize;
    let frames = seconds as u64 * FPS;
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let results: Vec<Result<(u64, u64), Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..cameras)
            .map(|c| {
                let store = store.clone();
                scope.spawn(move || {
                    let mut w = store.writer(&format!("cam{c}"), WriterSettings::default());
                    let key = vec![0x65u8; p_frame * 10];
                    let p = vec![0x41u8; p_frame];
                    let (mut bytes, mut syncs) = (0u64, 0u64);
                    for i in 0..frames {
                        let keyframe = i % 60 == 0;
                        let data = if keyframe { &key } else { &p };
                        let at = 1_700_000_000_000 + (i * 1000 / FPS) as i64;
                        if let Written::Flushed(_) = w.write(at, keyframe, data)? {
                            syncs += 1;
                        }
                        bytes += data.len() as u64;
                    }
                    w.close()?;
                    Ok((bytes, syncs + 1))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::internal("writer panicked")))
            })
            .collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let (mut bytes, mut syncs) = (0, 0);
    for r in results {
        let (b, s) = r?;
        bytes += b;
        syncs += s;
    }
    let segments = store.segments()?.len();
    drop(store);
    // Index size once the write-ahead log is folded in, as it sits on disk at rest.
    let (store, _) = Store::open(&root, "veil-bench")?;
    drop(store);
    let index_bytes: u64 = ["index.sqlite3", "index.sqlite3-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(root.join(f)).ok())
        .map(|m| m.len())
        .sum();
    if std::env::var_os("VEIL_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
    let camera_hours = cameras as f64 * seconds as f64 / 3600.0;
    Ok(json!({
        "cameras": cameras,
        "seconds_per_camera": seconds,
        "segments": segments,
        "bytes_written": bytes,
        "write_mb_per_s": round2(bytes as f64 / 1e6 / wall),
        "realtime_factor": round2(seconds as f64 / wall),
        "cpu_seconds_per_camera_hour": round2(cpu / camera_hours),
        "index_bytes": index_bytes,
        "index_bytes_per_camera_hour": (index_bytes as f64 / camera_hours).round(),
        "index_mb_per_camera_month_projected": round2(index_bytes as f64 / camera_hours * 24.0 * 30.0 / 1e6),
        "file_syncs_per_footage_second": round2(syncs as f64 / (cameras as f64 * seconds as f64)),
    }))
}

/// `veild bench export`: an hour of 1080p footage (real H.264 from openh264, one 2-second GOP
/// repeated) recorded into a store, then exported to MP4, next to `cp` of the same segment
/// files on the same disk; three alternating rounds, medians.
pub fn export(seconds: u32, dir: &std::path::Path) -> Result<serde_json::Value, Error> {
    use veil_store::{Store, WriterSettings};
    const FPS: u32 = 30;
    let root = dir.join(format!("veil-bench-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let footage = root.join("footage");
    let (store, _) = Store::open(&footage, "veil-bench")?;
    let mut encoder = Openh264Encoder::new(EncoderSettings {
        keyframe_interval: FPS * 2,
        bitrate_bps: 4_000_000,
        ..EncoderSettings::for_stream(1920, 1080, FPS)
    })?;
    let source = veil_media::SyntheticSource::new(1920, 1080);
    let mut frame = Frame::new(1920, 1080);
    let mut gop = Vec::new();
    for seq in 0..(FPS * 2) as u64 {
        source.render(
            &mut frame,
            veil_media::FrameMeta {
                seq,
                ..Default::default()
            },
        );
        if let Some(e) = encoder.encode(&frame, seq == 0)? {
            // The synthetic picture compresses far below a real scene's 4 Mbit/s: pad each
            // access unit with a filler NAL unit (type 12, ignored by decoders) to a real
            // camera's sizes: 150 kB keyframes, 15 kB P-frames.
            let target = if e.keyframe { 150_000 } else { 15_000 };
            let mut data = e.data.to_vec();
            if data.len() + 6 < target {
                data.extend_from_slice(&[0, 0, 1, 12]);
                data.resize(target - 1, 0xff);
                data.push(0x80);
            }
            gop.push((e.keyframe, data));
        }
    }
    // Stored as the recorder stores it: AVCC, the MP4 sample form.
    let gop: Vec<(bool, Vec<u8>)> = gop
        .into_iter()
        .map(|(k, d)| {
            let mut avcc = Vec::with_capacity(d.len() + 16);
            veil_media::h264::annexb::annexb_to_avcc(&d, &mut avcc);
            (k, avcc)
        })
        .collect();
    let settings = WriterSettings {
        format: veil_store::SampleFormat::Avcc,
        ..WriterSettings::default()
    };
    let mut writer = store.writer("cam", settings);
    let total = seconds as u64 * FPS as u64;
    for i in 0..total {
        let (key, data) = &gop[(i % gop.len() as u64) as usize];
        let at = 1_700_000_000_000 + (i * 1000 / FPS as u64) as i64;
        writer.write(at, *key, data)?;
    }
    writer.close()?;
    let footage_bytes = store.used_bytes()?;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let filters = |_: &str| Some(veil_core::config::FilterName::FacesPlates);
    let engines = |_: &str, _| -> Result<veil_privacy::Engine, Error> {
        Err(Error::internal(
            "the export benchmark copies anonymized footage",
        ))
    };
    let identity = veil_evidence::export::Identity {
        device_id: "veil-bench",
        firmware: env!("CARGO_PKG_VERSION"),
        key: &key,
        filters: &filters,
        engines: &engines,
        watch: veil_evidence::export::Watch::none(),
    };
    let (mut cp_s, mut export_s, mut mp4_bytes) = (Vec::new(), Vec::new(), 0u64);
    for round in 0..3 {
        let copy = root.join(format!("copy-{round}"));
        let t = Instant::now();
        let ok = std::process::Command::new("cp")
            .arg("-r")
            .arg(footage.join("cam"))
            .arg(&copy)
            .status()
            .map_err(|e| Error::wrap(ErrorKind::Unavailable, "cannot run cp", e))?
            .success();
        // cp returns once the bytes are in the page cache; sync so both sides pay the disk.
        let _ = std::process::Command::new("sync")
            .arg("-f")
            .arg(&copy)
            .status();
        cp_s.push(t.elapsed().as_secs_f64());
        if !ok {
            return Err(Error::internal("cp failed"));
        }
        let _ = std::fs::remove_dir_all(&copy);
        let out = root.join(format!("export-{round}"));
        let request = veil_evidence::export::ExportRequest {
            cameras: vec!["cam".into()],
            from_ms: 1_700_000_000_000,
            to_ms: 1_700_000_000_000 + seconds as i64 * 1000,
            name: None,
            description: None,
            recipients: Vec::new(),
            filter: None,
            stretches: Vec::new(),
            attachments: Vec::new(),
        };
        let t = Instant::now();
        veil_evidence::export::export(&store, &request, &out, &identity)?;
        export_s.push(t.elapsed().as_secs_f64());
        mp4_bytes = std::fs::read_dir(&out)
            .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot list the export", e))?
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        let _ = std::fs::remove_dir_all(&out);
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&root);
    cp_s.sort_by(f64::total_cmp);
    export_s.sort_by(f64::total_cmp);
    let mb = footage_bytes as f64 / 1e6;
    let (export_rate, cp_rate) = (mb / export_s[1], mb / cp_s[1]);
    Ok(json!({
        "seconds_of_footage": seconds,
        "footage_mb": round2(mb),
        "export_mb": round2(mp4_bytes as f64 / 1e6),
        "export_mb_per_s": round2(export_rate),
        "cp_mb_per_s": round2(cp_rate),
        "export_vs_cp": round2(export_rate / cp_rate),
    }))
}

/// `veild bench upload`: an export-sized file uploaded to a local s3s-fs (the tests' S3
/// server, `VEIL_S3S_FS` or `~/.cache/veil/tools/s3s-fs`) with 1 and with 5 parts in flight,
/// next to `curl -T --aws-sigv4` of the same bytes; three alternating rounds, medians.
pub fn upload(mb: u64, dir: &std::path::Path) -> Result<serde_json::Value, Error> {
    use veil_uplink::upload::{Settings, Target, Upload, Uploader};
    const AK: &str = "bench-ak";
    const SK: &str = "bench-sk";
    let root = dir.join(format!("veil-bench-upload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("s3");
    std::fs::create_dir_all(data.join("bench"))
        .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot create the bench dir", e))?;
    let bin = std::env::var("VEIL_S3S_FS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/veil/tools/s3s-fs/bin/s3s-fs")
        });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::wrap(ErrorKind::Internal, "no free port", e))?;
    let mut server = std::process::Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", AK, "--secret-key", SK])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            Error::wrap(
                ErrorKind::Unavailable,
                format!("cannot start {} (scripts/test installs it)", bin.display()),
                e,
            )
        })?;
    let result = (|| {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(Error::new(ErrorKind::Unavailable, "s3s-fs did not start"));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // The export: pseudo-random bytes (incompressible, like H.264).
        let path = root.join("export.mp4");
        {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(&path)
                    .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot create the file", e))?,
            );
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let mut block = vec![0u8; 1 << 20];
            for _ in 0..mb * 1_000_000 / block.len() as u64 {
                for chunk in block.chunks_exact_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    chunk.copy_from_slice(&x.to_le_bytes());
                }
                f.write_all(&block)
                    .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot write the file", e))?;
            }
        }
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let endpoint = format!("http://127.0.0.1:{port}");
        let ours = |parallel: usize, round: usize| -> Result<(f64, f64), Error> {
            let prefix = format!("p{parallel}-{round}/");
            let target = Target::sigv4(&endpoint, "us-east-1", "bench", AK, SK, &prefix)?;
            let settings = Settings {
                parallel,
                part_size: 16 * 1024 * 1024,
                ..Settings::default()
            };
            let journal = root.join(format!("journal-{parallel}-{round}.json"));
            let file = Upload {
                path: path.clone(),
                name: "export.mp4".into(),
                bytes,
            };
            let manifest_path = root.join("manifest.json");
            std::fs::write(&manifest_path, b"{}")
                .map_err(|e| Error::wrap(ErrorKind::Internal, "manifest", e))?;
            let manifest = Upload {
                path: manifest_path,
                name: "manifest.json".into(),
                bytes: 2,
            };
            let t = Instant::now();
            let summary =
                Uploader::new(target, settings).upload(&[file], &manifest, &journal, &|_, _| {})?;
            let s = (t.elapsed().as_secs_f64(), summary.complete_seconds);
            let _ =
                std::fs::remove_dir_all(data.join("bench").join(format!("p{parallel}-{round}")));
            Ok(s)
        };
        let curl = |round: usize| -> Result<f64, Error> {
            let t = Instant::now();
            let ok = std::process::Command::new("curl")
                .args([
                    "-sS",
                    "-f",
                    "--aws-sigv4",
                    "aws:amz:us-east-1:s3",
                    "--user",
                    &format!("{AK}:{SK}"),
                ])
                // Unsigned payload, as the device's own part uploads are signed.
                .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
                .arg("-T")
                .arg(&path)
                .arg(format!("{endpoint}/bench/curl-{round}.mp4"))
                .status()
                .map_err(|e| Error::wrap(ErrorKind::Unavailable, "cannot run curl", e))?
                .success();
            let s = t.elapsed().as_secs_f64();
            let _ = std::fs::remove_file(data.join("bench").join(format!("curl-{round}.mp4")));
            if !ok {
                return Err(Error::new(ErrorKind::Unavailable, "curl -T failed"));
            }
            Ok(s)
        };
        let (mut one, mut five, mut reference) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..3 {
            reference.push(curl(round)?);
            one.push(ours(1, round)?);
            five.push(ours(5, round)?);
        }
        reference.sort_by(f64::total_cmp);
        let median = |v: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
            let mut x: Vec<f64> = v.iter().map(pick).collect();
            x.sort_by(f64::total_cmp);
            x[1]
        };
        let mbs = |s: f64| round2(bytes as f64 / 1e6 / s);
        let (total1, total5) = (median(&one, |t| t.0), median(&five, |t| t.0));
        // The parts alone: what the device sends, without the store assembling the object.
        let sent5 = median(&five, |t| t.0 - t.1);
        Ok(json!({
            "mb": round2(bytes as f64 / 1e6),
            "parts_1_mb_per_s": mbs(total1),
            "parts_5_mb_per_s": mbs(total5),
            "parts_5_transfer_mb_per_s": mbs(sent5),
            "store_complete_seconds_5": round2(median(&five, |t| t.1)),
            "curl_mb_per_s": mbs(reference[1]),
            "parts_5_vs_curl": round2(reference[1] / total5),
            "parts_5_transfer_vs_curl": round2(reference[1] / sent5),
            "parts_1_vs_curl": round2(reference[1] / total1),
        }))
    })();
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&root);
    result
}

#[derive(Debug, Clone)]
pub struct LiveBench {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Seconds the measured session runs.
    pub seconds: u64,
    /// Sessions started one after another for the start-time figures.
    pub starts: u32,
    /// Relay-only through a TURN server (Debian's coturn in the namespace) instead of direct.
    pub turn: bool,
    /// Each session on its own branch of the pipeline (privacy stage and encoder threads).
    pub branches: bool,
}

/// The peer's newest session posted at or after `t0` (wall ms).
fn newest_since(stats: &serde_json::Value, t0: f64) -> Option<serde_json::Value> {
    stats
        .as_object()?
        .values()
        .filter(|s| s["posted_ms"].as_f64() >= Some(t0))
        .max_by(|a, b| {
            a["posted_ms"]
                .as_f64()
                .partial_cmp(&b["posted_ms"].as_f64())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .cloned()
}

/// A live session from the synthetic camera through the privacy engine, openh264 and the WHIP
/// relay to aiortc (a private network namespace: the process runs itself again inside one).
/// Glass to glass is the capture time burned into the pixels to the frame decoded at the peer
/// (same host clock); start is `live.start`'s relay launch to the peer's first decoded frame.
pub fn live(b: &LiveBench) -> Result<serde_json::Value, Error> {
    use veil_uplink::testbed;
    if !testbed::inside() {
        let ns = testbed::Namespace::create()?;
        let exe = std::env::current_exe()
            .map_err(|e| Error::wrap(ErrorKind::Internal, "no path to this program", e))?;
        let out = ns
            .command(exe)
            .args(std::env::args_os().skip(1))
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot run inside the namespace", e))?;
        return serde_json::from_slice(&out.stdout).map_err(|_| {
            Error::internal(format!(
                "the benchmark inside the namespace failed ({})",
                out.status
            ))
        });
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let peer = testbed::IngestPeer::start("bench")?;
    let turn = if b.turn {
        Some(testbed::TurnServer::start("bench", "bench-turn")?)
    } else {
        None
    };
    let settings = || {
        let mut s = veil_uplink::whip::RelaySettings::new(peer.endpoint(), "bench");
        if let Some(t) = &turn {
            s.ice_servers = vec![veil_uplink::whip::IceServer {
                url: t.url(),
                username: Some(t.username.clone()),
                credential: Some(t.password.clone()),
            }];
            s.relay_only = true;
        }
        s
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot start a runtime", e))?;
    // The privacy engine with masks only: the peer must still read the burned-in strip, and
    // the figure is the relay's, not a detector's (`veild bench privacy` measures those).
    let mut engine = veil_privacy::Engine::new(
        "bench",
        veil_privacy::EngineConfig {
            filter: veil_privacy::Filter::MasksOnly,
            masks: Vec::new(),
            style: veil_privacy::Style::Pixelate,
            policy: veil_privacy::FailSafePolicy::default(),
            detection: None,
        },
    )?;
    let config = PipelineConfig {
        keyframe_secs: 1,
        ..PipelineConfig::new("bench-live", b.fps)
    };
    let pipeline = Pipeline::start(
        config,
        Box::new(move |f| engine.process(f)),
        openh264_factory(),
        clock.clone(),
    )
    .map_err(|e| Error::wrap(ErrorKind::Internal, "starting the pipeline", e))?;
    let source_bench = PipelineBench {
        source: BenchSource::Synthetic {
            width: b.width,
            height: b.height,
        },
        frames: 0,
        fps: b.fps,
        reference: false,
    };
    let mut source = open_source(&source_bench, &clock, true)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let capture = std::thread::spawn({
        let (input, stop) = (pipeline.input(), stop.clone());
        move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match source.next_frame() {
                    Ok(Some(frame)) => {
                        input.offer(frame);
                    }
                    _ => return,
                }
            }
        }
    });
    // The device's own share: capture to encoded.
    let mut encoded = pipeline.subscribe();
    let device_share = std::thread::spawn({
        let clock = clock.clone();
        move || {
            let mut latency = Vec::new();
            loop {
                match encoded.blocking_recv() {
                    Ok(f) => {
                        latency.push(ms(clock.monotonic().saturating_sub(f.meta.capture_mono)))
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return latency,
                }
            }
        }
    });
    let cpu0 = cpu_seconds();
    let mut starts = Vec::new();
    let mut last = None;
    // Resident memory before the first session and after every tenth: sessions that come
    // and go must not leave memory behind.
    let mut rss_by_sessions = vec![(0u32, round2(rss_mb()))];
    for i in 0..b.starts.max(1) {
        let branch = if b.branches {
            let config = PipelineConfig {
                keyframe_secs: 1,
                ..PipelineConfig::new(format!("bench-live-{i}"), b.fps)
            };
            let masks_only: veil_media::pipeline::PrivacyStage = Box::new(|_| {});
            Some(
                pipeline
                    .branch(config, masks_only, openh264_factory(), clock.clone())
                    .map_err(|e| Error::wrap(ErrorKind::Internal, "starting a branch", e))?,
            )
        } else {
            None
        };
        let feed = match &branch {
            Some(br) => veil_uplink::whip::EncodeFeed::new(br.subscribe(), br.keyframe_trigger()),
            None => veil_uplink::whip::EncodeFeed::new(
                pipeline.subscribe(),
                pipeline.keyframe_trigger(),
            ),
        };
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let (stop_relay, stop_rx) = tokio::sync::watch::channel(false);
        let t0 = clock.wall_millis() as f64;
        let task = runtime.spawn(veil_uplink::whip::relay(settings(), feed, tx, stop_rx));
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = loop {
            let stats = peer.stats();
            let newest = newest_since(&stats, t0);
            if let Some(ms) = newest.as_ref().and_then(|s| s["first_frame_ms"].as_f64()) {
                break ms;
            }
            if let Ok(veil_uplink::whip::RelayEvent::Failed { reason, .. }) = events.try_recv() {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("session {i}: {reason}"),
                ));
            }
            if Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::DeadlineExceeded,
                    format!("session {i}: no frame at the peer within 10 s"),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        starts.push(first - t0);
        if i + 1 < b.starts.max(1) {
            let _ = stop_relay.send(true);
            let _ = runtime.block_on(task);
            drop(branch);
            if (i + 1) % 10 == 0 {
                rss_by_sessions.push((i + 1, round2(rss_mb())));
            }
        } else {
            last = Some((stop_relay, task, t0, branch));
        }
    }
    std::thread::sleep(Duration::from_secs(b.seconds));
    let stats = peer.stats();
    let cpu = cpu_seconds() - cpu0;
    let (stop_relay, task, t0, branch) = last.expect("at least one session");
    let _ = stop_relay.send(true);
    let _ = runtime.block_on(task);
    drop(branch);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = capture.join();
    pipeline.finish();
    let mut device = device_share
        .join()
        .map_err(|_| Error::internal("collector panicked"))?;
    device.sort_by(f64::total_cmp);
    let session = newest_since(&stats, t0).unwrap_or_default();
    let mut latency: Vec<f64> = session["latencies_ms"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    latency.sort_by(f64::total_cmp);
    let seqs: Vec<u64> = session["seqs"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    let missing = match (seqs.first(), seqs.last()) {
        (Some(a), Some(z)) => (z - a + 1).saturating_sub(seqs.len() as u64),
        _ => 0,
    };
    let mut sorted_starts = starts.clone();
    sorted_starts.sort_by(f64::total_cmp);
    Ok(json!({
        "bench": "live",
        "width": b.width,
        "height": b.height,
        "fps": b.fps,
        "filter": "masks-only",
        "seconds": b.seconds,
        "peer": "aiortc (Debian python3-aiortc), libavcodec H.264 decode",
        "path": if b.turn { "relay-only through coturn (Debian), TURN over UDP" } else { "direct (host candidates)" },
        "frames_decoded_at_peer": latency.len(),
        "frames_missing_at_peer": missing,
        "glass_to_glass_ms_p50": round2(percentile(&latency, 0.5)),
        "glass_to_glass_ms_p90": round2(percentile(&latency, 0.9)),
        "glass_to_glass_ms_p99": round2(percentile(&latency, 0.99)),
        "glass_to_glass_ms_max": round2(latency.last().copied().unwrap_or(0.0)),
        "device_capture_to_encoded_ms_p50": round2(percentile(&device, 0.5)),
        "device_capture_to_encoded_ms_p99": round2(percentile(&device, 0.99)),
        "session_start_ms": starts.iter().map(|s| round2(*s)).collect::<Vec<_>>(),
        "session_start_ms_median": round2(percentile(&sorted_starts, 0.5)),
        "session_start_ms_max": round2(sorted_starts.last().copied().unwrap_or(0.0)),
        "rss_mb_after_sessions": rss_by_sessions,
        "cpu_seconds_of_veild_per_second": round2(cpu / b.seconds.max(1) as f64),
    }))
}

/// `veild bench incidents`: `projects` incident projects (each with a type, status, two
/// category values, data fields, 3 comments, a call and 1–2 sequences holding footage) made
/// through the same calls the page uses, then every list query the page offers timed (median
/// of 15 runs each, the first page of 50 serialised to JSON as the page receives it), and one
/// project with everything in it, and its PDF report.
pub fn incidents(projects: u32, dir: &std::path::Path) -> Result<serde_json::Value, Error> {
    use veil_incident::Incidents;
    use veil_incident::model::Properties;
    let root = dir.join(format!("veil-bench-incidents-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (store, _) = veil_store::Store::open(&root.join("footage"), "bench")?;
    let incidents = Incidents::open(&root.join("incidents.sqlite3"), store)?;
    let current = incidents.properties()?;
    let form: Properties = serde_json::from_value(json!({
        "version": current.version,
        "types": [{"name": "Injury - employee"}, {"name": "Injury - contractor"}, {"name": "Injury - visitor"}, {"name": "Theft"}, {"name": "Vandalism"}],
        "statuses": current.statuses,
        "categories": [
            {"name": "Reason", "values": [{"name": "Trapped"}, {"name": "Fallen from height"}, {"name": "Struck"}, {"name": "Tripped"}, {"name": "Other"}]},
            {"name": "Location", "values": [{"name": "Laboratory"}, {"name": "Storage room"}, {"name": "Parking lot"}, {"name": "Gate"}]}
        ],
        "fields": [
            {"kind": "integer", "name": "People involved"},
            {"kind": "checkbox", "name": "Police called"},
            {"kind": "decimal", "name": "Damage (EUR)"},
            {"kind": "text", "name": "Vehicle"}
        ],
        "retention_days": 3650,
        "report_title": "Benchmark site"
    }))
    .map_err(|e| Error::internal(format!("bench properties: {e}")))?;
    let (_, p) = incidents.save_properties(form)?;
    let base = jiff::Timestamp::now().as_millisecond() - i64::from(projects) * 60_000;
    let rfc3339 = veil_incident::model::rfc3339;
    let words = [
        "forklift", "ladder", "spill", "glass", "pallet", "door", "badge", "camera", "van", "fence",
    ];
    let fill = Instant::now();
    for n in 0..i64::from(projects) {
        let at = base + n * 60_000;
        let i = n as usize;
        let (reason, location) = (&p.categories[0], &p.categories[1]);
        let mut sequences =
            vec![json!({"camera": "dock", "from": rfc3339(at - 300_000), "to": rfc3339(at)})];
        if n % 2 == 0 {
            sequences.push(json!({"camera": "yard", "from": rfc3339(at - 120_000), "to": rfc3339(at + 60_000)}));
        }
        let form = serde_json::from_value(json!({
            "name": format!("Incident {n} at the {}", words[i % words.len()]),
            "type_id": p.types[i % p.types.len()].id,
            "status_id": p.statuses[i % p.statuses.len()].id,
            "start": rfc3339(at - 600_000),
            "end": rfc3339(at),
            "categories": {
                reason.id.clone(): reason.values[i % reason.values.len()].id.clone(),
                location.id.clone(): location.values[i % location.values.len()].id.clone()
            },
            "fields": {
                p.fields[0].id.clone(): (n % 5) + 1,
                p.fields[1].id.clone(): n % 3 == 0,
                p.fields[2].id.clone(): (n % 1000) as f64 * 1.5
            },
            "sequences": sequences
        }))
        .map_err(|e| Error::internal(format!("bench project: {e}")))?;
        let user = ["olga", "piet", "mara", "jon"][i % 4];
        let id = incidents.create(form, user, at)?.summary.id;
        for c in 0..3 {
            let word = words[(i * 7 + c * 3) % words.len()];
            incidents.add_comment(
                id,
                &format!(
                    "Checked the {word} near bay {}; note {n}-{c} for the insurer.",
                    n % 40
                ),
                user,
                at + c as i64,
            )?;
        }
        incidents.add_call(
            id,
            veil_incident::store::CallForm {
                caller: user.into(),
                callee: "Site security".into(),
                at: rfc3339(at),
                phone: "+49 30 1234567".into(),
                notes: "Reported".into(),
            },
            user,
            at,
        )?;
    }
    let fill_s = fill.elapsed().as_secs_f64();
    let mid = rfc3339(base + i64::from(projects) * 30_000);
    let late = rfc3339(base + i64::from(projects) * 35_000);
    let queries = [
        ("newest first (the default page)", json!({})),
        ("by status", json!({"status": p.statuses[1].id})),
        ("by type", json!({"type": p.types[2].id})),
        (
            "by category value",
            json!({"category_value": p.categories[1].values[2].id}),
        ),
        ("by date range", json!({"from": mid, "to": late})),
        ("by creator", json!({"created_by": "mara"})),
        ("text in comments", json!({"q": "near bay 17;"})),
        ("text, no match", json!({"q": "submarine"})),
        (
            "all filters",
            json!({"status": p.statuses[0].id, "type": p.types[0].id, "created_by": "olga", "q": "forklift"}),
        ),
        (
            "by start, page 100",
            json!({"sort": "start", "order": "asc", "offset": 4950}),
        ),
    ];
    let mut results = Vec::new();
    let mut worst: f64 = 0.0;
    for (name, q) in queries {
        let query: veil_incident::ListQuery = serde_json::from_value(q.clone())
            .map_err(|e| Error::internal(format!("bench query: {e}")))?;
        let mut times = Vec::new();
        let mut total = 0;
        for _ in 0..15 {
            let t = Instant::now();
            let page = incidents.list(&query)?;
            let body = serde_json::to_vec(&page).expect("pages serialize");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            total = page.total;
            std::hint::black_box(body);
        }
        times.sort_by(f64::total_cmp);
        let median = percentile(&times, 0.5);
        worst = worst.max(median);
        results.push(json!({"query": name, "matches": total, "median_ms": round2(median), "max_ms": round2(times[times.len() - 1])}));
    }
    let mut get_ms = Vec::new();
    let mut pdf_ms = Vec::new();
    let tz = veil_incident::report::Clockface(jiff::tz::TimeZone::UTC);
    for k in 0..15 {
        let id = 1 + (k * 631) % i64::from(projects.max(1));
        let t = Instant::now();
        let project = incidents.get(id)?;
        get_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let pdf =
            veil_incident::report::pdf(&veil_incident::report::build(&p, &project, &tz, "bench"));
        pdf_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(pdf);
    }
    get_ms.sort_by(f64::total_cmp);
    pdf_ms.sort_by(f64::total_cmp);
    let db_mb = std::fs::metadata(root.join("incidents.sqlite3"))
        .map(|m| m.len())
        .unwrap_or(0) as f64
        / 1e6;
    let _ = std::fs::remove_dir_all(&root);
    Ok(json!({
        "projects": projects,
        "fill_s": round2(fill_s),
        "database_mb": round2(db_mb),
        "list": results,
        "slowest_list_median_ms": round2(worst),
        "target_ms": 100,
        "project_get_median_ms": round2(percentile(&get_ms, 0.5)),
        "report_pdf_median_ms": round2(percentile(&pdf_ms, 0.5)),
    }))
}
