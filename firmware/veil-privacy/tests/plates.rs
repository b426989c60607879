//! OpenCV's plate cascade, evaluated by `veil_privacy::cascade`, on a real photo of a parked
//! car (fetched by `scripts/fetch-media`). Without `VEIL_MODEL_DIR`/`VEIL_MEDIA_DIR` (a plain
//! `cargo test`) these tests say so and pass; `scripts/test` sets both.

mod common;
use common::fetched;

use std::sync::Arc;

use veil_core::SystemClock;
use veil_media::Frame;
use veil_media::file::{FileOptions, FileSource};
use veil_media::source::Source;
use veil_privacy::Detector;
use veil_privacy::cascade::Cascade;
use veil_privacy::eval::Annotations;
use veil_privacy::plate::{PlateDetector, PlateSettings};

fn first_frame(annotations: &str) -> Option<(Frame, Annotations)> {
    let path = format!("{}/eval/{annotations}", env!("CARGO_MANIFEST_DIR"));
    let a = Annotations::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    let clip = fetched("VEIL_MEDIA_DIR", &a.clip)?;
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
    let f = (*src.next_frame().unwrap().unwrap()).clone();
    Some((f, a))
}

fn cascade() -> Option<Cascade> {
    let path = fetched("VEIL_MODEL_DIR", "haarcascade_russian_plate_number.xml")?;
    Some(Cascade::load(&path).unwrap())
}

/// Share of `bbox` inside the union of `boxes`.
fn covered(bbox: [u32; 4], boxes: &[veil_privacy::Rect]) -> f64 {
    let [x, y, w, h] = bbox.map(|v| v as i32);
    let mut hit = 0;
    for py in y..y + h {
        for px in x..x + w {
            if boxes
                .iter()
                .any(|b| px >= b.x && px < b.x + b.w && py >= b.y && py < b.y + b.h)
            {
                hit += 1;
            }
        }
    }
    hit as f64 / (w * h) as f64
}

#[test]
fn opencvs_plate_cascade_loads_whole() {
    let Some(c) = cascade() else { return };
    assert_eq!(c.window, (60, 20));
    assert_eq!(c.stage_count(), 20);
}

#[test]
fn the_plate_in_the_photo_is_found_and_covered() {
    let (Some(c), Some((frame, a))) = (cascade(), first_frame("plate-photo.json")) else {
        return;
    };
    let mut d = PlateDetector::new(c, PlateSettings::default());
    let boxes = d.detect(&frame).unwrap();
    let plate = a.frames[0].objects[0].bbox;
    assert!(
        covered(plate, &boxes) > 0.95,
        "plate {plate:?} not covered by {boxes:?}"
    );
    // Few false alarms on the rest of the picture (cars, kerb, building).
    assert!(boxes.len() <= 3, "{boxes:?}");
}

#[test]
fn plates_at_two_scales_in_1080p_are_found() {
    let (Some(c), Some((frame, a))) = (cascade(), first_frame("plates-1080p.json")) else {
        return;
    };
    let mut d = PlateDetector::new(c, PlateSettings::default());
    let boxes = d.detect(&frame).unwrap();
    for o in &a.frames[0].objects {
        assert!(
            covered(o.bbox, &boxes) > 0.95,
            "plate {:?} not covered by {boxes:?}",
            o.bbox
        );
    }
    // Nothing on the plain grey canvas.
    assert!(
        boxes.iter().all(|b| b.y + b.h > 200 && b.x + b.w > 100),
        "{boxes:?}"
    );
}
