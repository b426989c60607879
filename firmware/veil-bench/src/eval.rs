//! `veild eval privacy`: the privacy engine against hand annotations of real clips, either
//! waiting for the detectors on every frame (figures independent of the machine) or in real
//! time, as a camera runs it (detectors at their own pace, the fail-safe deciding).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use veil_core::{Clock, Error, ErrorKind, SystemClock};
use veil_media::file::{FileOptions, FileSource};
use veil_media::source::Source;
use veil_privacy::eval::{Annotations, coverage, redacted_fraction};
use veil_privacy::{DetectionSetup, Engine, EngineConfig, FailSafePolicy, Filter, Style};

/// Coverage from which an object counts as hidden (the IoU 0.3 bar), and the stricter
/// "hidden almost entirely" bar reported beside it.
const COVERED: f64 = 0.3;
const FULLY_COVERED: f64 = 0.9;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Every frame waits for every detector's answer on it.
    Waiting,
    /// Frames come at the clip's own rate (times `speed`) and never wait: what leaves a
    /// camera (on a CPU `speed` times slower).
    Realtime { speed: f64 },
}

pub fn privacy(
    annotations: &Path,
    media: &Path,
    filter: Filter,
    detection: DetectionSetup,
    mode: Mode,
    limit: Option<u64>,
) -> Result<serde_json::Value, Error> {
    let text = std::fs::read_to_string(annotations).map_err(|e| {
        Error::new(
            ErrorKind::NotFound,
            format!("{}: cannot read: {e}", annotations.display()),
        )
    })?;
    let a = Annotations::parse(&text)
        .map_err(|e| Error::invalid_input(format!("{}: {e}", annotations.display())))?;
    let clip: PathBuf = media.join(&a.clip);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let mut source = FileSource::open(
        &clip,
        &FileOptions {
            looped: false,
            fps: None,
            realtime: false,
        },
        clock,
    )?;
    let period = Duration::from_secs(1) / source.fps().max(1);
    let config = EngineConfig {
        filter,
        masks: Vec::new(),
        // Solid fill: every hidden pixel changes, so "changed" measures "hidden" exactly
        // (a mosaic block can leave a flat patch unchanged).
        style: Style::Solid,
        policy: FailSafePolicy::default(),
        detection: Some(detection),
    };
    let mut engine = Engine::new("eval", config)?;
    let stats = engine.stats();

    let (mut frames, mut area_sum) = (0u64, 0.0);
    // Per annotated object: class, box height, share hidden.
    let mut results: Vec<(String, u32, f64)> = Vec::new();
    // Per annotated track: the first frame it is annotated in, and the first it is hidden in.
    let mut tracks: std::collections::BTreeMap<String, (u64, Option<u64>)> = Default::default();
    let started = std::time::Instant::now();
    let cpu_before = cpu_seconds();
    while limit.is_none_or(|n| frames < n)
        && let Some(mut frame) = source.next_frame()?
    {
        if (frame.width(), frame.height()) != (a.width, a.height) {
            return Err(Error::invalid_input(format!(
                "{} is {}x{}, the annotations are for {}x{}",
                clip.display(),
                frame.width(),
                frame.height(),
                a.width,
                a.height
            )));
        }
        // Capture times at the clip's own rate, so the fail-safe ages results as it would live.
        frame.meta.capture_mono = period * frames as u32;
        let before = (*frame).clone();
        match mode {
            Mode::Waiting => engine.process_waiting(&mut frame),
            Mode::Realtime { speed } => {
                // The frame is due at its place in the clip; a late one goes at once.
                let due = (period * frames as u32).div_f64(speed);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
                engine.process(&mut frame);
            }
        }
        area_sum += redacted_fraction(&before, &frame);
        if let Some(annotated) = a.frames.iter().find(|f| f.index == frames) {
            for o in &annotated.objects {
                let covered = coverage(&before, &frame, o.bbox);
                results.push((o.class.clone(), o.bbox[3], covered));
                if let Some(id) = &o.id {
                    let t = tracks.entry(id.clone()).or_insert((frames, None));
                    if covered >= FULLY_COVERED && t.1.is_none() {
                        t.1 = Some(frames);
                    }
                }
            }
        }
        frames += 1;
    }
    let wall = started.elapsed().as_secs_f64();
    let cores = cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| (after - before) / wall.max(1e-9));
    let share = |of: &mut dyn Iterator<Item = f64>, bar: f64| {
        let (n, hit) = of.fold((0usize, 0usize), |(n, hit), v| {
            (n + 1, hit + (v >= bar) as usize)
        });
        (n > 0).then(|| hit as f64 / n as f64)
    };
    let recall = |class: &str, bar: f64| {
        share(
            &mut results.iter().filter(|r| r.0 == class).map(|r| r.2),
            bar,
        )
    };
    let r2 = |x: Option<f64>| x.map(|v| (v * 1000.0).round() / 1000.0);
    // Faces fully hidden by their height in pixels: where a detector's sensitivity ends.
    let by_height: serde_json::Map<String, serde_json::Value> =
        [(0, 30), (30, 45), (45, 70), (70, u32::MAX)]
            .into_iter()
            .filter_map(|(lo, hi)| {
                let hidden = share(
                    &mut results
                        .iter()
                        .filter(|r| r.0 == "face" && (lo..hi).contains(&r.1))
                        .map(|r| r.2),
                    FULLY_COVERED,
                )?;
                let name = if hi == u32::MAX {
                    format!("{lo}+")
                } else {
                    format!("{lo}-{}", hi - 1)
                };
                Some((name, json!(r2(Some(hidden)))))
            })
            .collect();
    // Frames from a track's first appearance to its first frame hidden (>= 90 %); a track
    // never hidden counts as its whole length.
    let mut latencies: Vec<u64> = tracks
        .values()
        .map(|(first, hidden)| hidden.unwrap_or(frames).saturating_sub(*first))
        .collect();
    latencies.sort_unstable();
    let ms = |f: u64| (f as f64 * period.as_secs_f64() * 1000.0).round();
    Ok(json!({
        "clip": a.clip,
        "filter": filter.name(),
        "mode": match mode { Mode::Waiting => "waiting", Mode::Realtime { .. } => "realtime" },
        "speed": match mode { Mode::Waiting => None, Mode::Realtime { speed } => Some(speed) },
        "frames": frames,
        "frames_blanked": stats.blanked(),
        "blanked_share": r2(Some(stats.blanked() as f64 / frames.max(1) as f64)),
        "frames_regional": stats.regional(),
        "cores_used": r2(cores),
        "tracks": latencies.len(),
        "first_hidden_latency_ms_median": latencies.get(latencies.len() / 2).map(|&f| ms(f)),
        "first_hidden_latency_ms_max": latencies.last().map(|&f| ms(f)),
        "objects": results.len(),
        "face_recall": r2(recall("face", COVERED)),
        "face_recall_fully_hidden": r2(recall("face", FULLY_COVERED)),
        "face_fully_hidden_by_height_px": by_height,
        "plate_recall": r2(recall("plate", COVERED)),
        "plate_recall_fully_hidden": r2(recall("plate", FULLY_COVERED)),
        "redacted_area": (area_sum / frames.max(1) as f64 * 1000.0).round() / 1000.0,
    }))
}

/// CPU time this process has used (user and system), from /proc/self/stat; `None` where
/// there is no procfs. Its unit is USER_HZ, which Linux fixes at 100 on every architecture.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}
