//! BlazeFace on real footage, with the real model files fetched by `scripts/fetch-models`.
//! Without `VEIL_MODEL_DIR` (a plain `cargo test`) these tests say so and pass; `scripts/test`
//! sets it, and then a missing file fails the test.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use veil_core::SystemClock;
use veil_media::Frame;
use veil_media::file::{FileOptions, FileSource};
use veil_media::source::Source;
use veil_privacy::Detector;
use veil_privacy::eval::Annotations;
use veil_privacy::face::{FaceDetector, FaceSettings};
use veil_privacy::tract_backend::TractInference;

fn fetched(var: &str, name: &str) -> Option<PathBuf> {
    let Some(dir) = std::env::var_os(var) else {
        eprintln!("{var} unset: skipping the test on {name} (scripts/test fetches it)");
        return None;
    };
    let path = Path::new(&dir).join(name);
    assert!(path.is_file(), "{} missing", path.display());
    Some(path)
}

fn carphone() -> Option<(Vec<(u64, Frame)>, Annotations)> {
    let clip = fetched("VEIL_MEDIA_DIR", "carphone_pristine.mp4")?;
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/eval/carphone.json"));
    let a = Annotations::parse(&text.unwrap()).unwrap();
    let mut src = FileSource::open(
        &clip,
        &FileOptions {
            looped: false,
            fps: None,
            realtime: false,
        },
        Arc::new(SystemClock::new()),
    )
    .unwrap();
    let mut frames = Vec::new();
    let mut i = 0;
    while let Some(f) = src.next_frame().unwrap() {
        if a.frames.iter().any(|af| af.index == i) {
            frames.push((i, (*f).clone()));
        }
        i += 1;
    }
    Some((frames, a))
}

fn iou(a: [i32; 4], b: [i32; 4]) -> f64 {
    let ix = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let iy = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if ix <= 0 || iy <= 0 {
        return 0.0;
    }
    let inter = (ix * iy) as f64;
    inter / ((a[2] * a[3] + b[2] * b[3]) as f64 - inter)
}

#[test]
fn blazeface_finds_every_annotated_face_in_carphone() {
    let (Some(model), Some((frames, a))) = (
        fetched("VEIL_MODEL_DIR", "face_detection_full_range.tflite"),
        carphone(),
    ) else {
        return;
    };
    let backend = TractInference::load(&model).unwrap();
    let settings = FaceSettings {
        margin: 0.0,
        ..FaceSettings::default()
    };
    let mut detector = FaceDetector::new(Box::new(backend), settings).unwrap();
    for (index, frame) in &frames {
        let found = detector.detect(frame).unwrap();
        let truth = a.frames.iter().find(|f| f.index == *index).unwrap();
        for o in &truth.objects {
            let b = o.bbox.map(|v| v as i32);
            let best = found
                .iter()
                .map(|r| iou(b, [r.x, r.y, r.w, r.h]))
                .fold(0.0, f64::max);
            eprintln!("frame {index}: {found:?} vs {b:?}: iou {best:.2}");
            assert!(
                best >= 0.3,
                "frame {index}: face {b:?} not found ({found:?})"
            );
        }
    }
}
