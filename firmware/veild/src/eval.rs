//! `veild eval privacy`: the privacy engine against hand annotations of real clips.

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

pub fn privacy(
    annotations: &Path,
    media: &Path,
    filter: Filter,
    detection: DetectionSetup,
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

    let (mut frames, mut area_sum) = (0u64, 0.0);
    let mut results: Vec<(String, f64)> = Vec::new();
    while let Some(mut frame) = source.next_frame()? {
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
        engine.process_waiting(&mut frame);
        area_sum += redacted_fraction(&before, &frame);
        if let Some(annotated) = a.frames.iter().find(|f| f.index == frames) {
            for o in &annotated.objects {
                results.push((o.class.clone(), coverage(&before, &frame, o.bbox)));
            }
        }
        frames += 1;
    }
    let recall = |class: &str, bar: f64| {
        let of: Vec<f64> = results
            .iter()
            .filter(|(c, _)| c == class)
            .map(|(_, v)| *v)
            .collect();
        (!of.is_empty()).then(|| of.iter().filter(|&&v| v >= bar).count() as f64 / of.len() as f64)
    };
    let r2 = |x: Option<f64>| x.map(|v| (v * 1000.0).round() / 1000.0);
    Ok(json!({
        "clip": a.clip,
        "filter": filter.name(),
        "frames": frames,
        "objects": results.len(),
        "face_recall": r2(recall("face", COVERED)),
        "face_recall_fully_hidden": r2(recall("face", FULLY_COVERED)),
        "plate_recall": r2(recall("plate", COVERED)),
        "plate_recall_fully_hidden": r2(recall("plate", FULLY_COVERED)),
        "redacted_area": (area_sum / frames.max(1) as f64 * 1000.0).round() / 1000.0,
    }))
}
