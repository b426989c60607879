//! BlazeFace on real footage, with the real model files fetched by `scripts/fetch-models`.
//! Without `VEIL_MODEL_DIR` (a plain `cargo test`) these tests say so and pass; `scripts/test`
//! sets it, and then a missing file fails the test.

mod common;
use common::fetched;

use std::sync::Arc;

use veil_core::SystemClock;
use veil_media::Frame;
use veil_media::file::{FileOptions, FileSource};
use veil_media::source::Source;
use veil_privacy::Detector;
use veil_privacy::eval::Annotations;
use veil_privacy::face::{FaceDetector, FaceSettings};
use veil_privacy::litert::{Accelerator, LiteRt, LiteRtOptions};
use veil_privacy::tract_backend::TractInference;

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

/// The accelerated backend (the real LiteRT C runtime from PyPI's ai-edge-litert, loaded at
/// run time) and the portable one agree on the same frames: same faces, boxes within 2 px.
#[test]
fn litert_and_tract_find_the_same_faces() {
    let (Some(model), Some(runtime), Some((frames, _))) = (
        fetched("VEIL_MODEL_DIR", "face_detection_full_range.tflite"),
        fetched("VEIL_MODEL_DIR", "litert/libLiteRt.so"),
        carphone(),
    ) else {
        return;
    };
    let settings = FaceSettings {
        margin: 0.0,
        ..FaceSettings::default()
    };
    let options = LiteRtOptions {
        library: runtime,
        accelerator: Accelerator::Cpu,
    };
    let mut litert =
        FaceDetector::new(Box::new(LiteRt::load(&model, &options).unwrap()), settings).unwrap();
    let mut tract =
        FaceDetector::new(Box::new(TractInference::load(&model).unwrap()), settings).unwrap();
    for (index, frame) in &frames {
        let a = litert.detect_scored(frame).unwrap();
        let b = tract.detect_scored(frame).unwrap();
        eprintln!("frame {index}: litert {a:?}\n          tract  {b:?}");
        assert_eq!(a.len(), b.len(), "frame {index}: different number of faces");
        for (x, y) in a.iter().zip(&b) {
            for (p, q) in [(x.x, y.x), (x.y, y.y), (x.w, y.w), (x.h, y.h)] {
                assert!((p - q).abs() <= 2.0, "frame {index}: {x:?} vs {y:?}");
            }
            assert!(
                (x.score - y.score).abs() < 0.02,
                "frame {index}: {x:?} vs {y:?}"
            );
        }
    }
}

#[test]
fn a_library_that_is_not_litert_is_refused_clearly() {
    let Some(model) = fetched("VEIL_MODEL_DIR", "face_detection_full_range.tflite") else {
        return;
    };
    let options = LiteRtOptions {
        library: "/nonexistent/libLiteRt.so".into(),
        accelerator: Accelerator::Cpu,
    };
    let e = LiteRt::load(&model, &options).err().unwrap();
    assert!(e.message().contains("/nonexistent/libLiteRt.so"), "{e}");
    let options = LiteRtOptions {
        library: "libc.so.6".into(),
        accelerator: Accelerator::Cpu,
    };
    let e = LiteRt::load(&model, &options).err().unwrap();
    assert!(e.message().contains("not a LiteRT 2 C runtime"), "{e}");
}
