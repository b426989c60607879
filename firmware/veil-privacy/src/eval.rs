//! Measuring the engine against hand annotations: was each face or plate hidden, and how much
//! of the picture was hidden to get there.

use serde::Deserialize;
use veil_media::Frame;

/// Hand annotations of one clip (`firmware/veil-privacy/eval/*.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct Annotations {
    /// File name of the clip, looked up in the media directory.
    pub clip: String,
    pub width: u32,
    pub height: u32,
    pub frames: Vec<AnnotatedFrame>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AnnotatedFrame {
    /// 0-based index in display order.
    pub index: u64,
    pub objects: Vec<Object>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Object {
    /// `face` or `plate`.
    pub class: String,
    /// The same person or plate across frames, where the annotations follow one (for the
    /// latency from its first appearance to its first hidden frame).
    #[serde(default)]
    pub id: Option<String>,
    /// `[x, y, w, h]` in pixels.
    #[serde(rename = "box")]
    pub bbox: [u32; 4],
}

impl Annotations {
    pub fn parse(text: &str) -> Result<Annotations, String> {
        let a: Annotations = serde_json::from_str(text).map_err(|e| format!("annotations: {e}"))?;
        for f in &a.frames {
            for o in &f.objects {
                let [x, y, w, h] = o.bbox;
                if w == 0 || h == 0 || x + w > a.width || y + h > a.height {
                    return Err(format!(
                        "annotations: frame {}: box {:?} is empty or outside {}x{}",
                        f.index, o.bbox, a.width, a.height
                    ));
                }
                if o.class != "face" && o.class != "plate" {
                    return Err(format!(
                        "annotations: frame {}: class '{}' is not face or plate",
                        f.index, o.class
                    ));
                }
            }
        }
        Ok(a)
    }
}

/// Whether a pixel of the output differs visibly from the input (luma, or its chroma sample).
fn changed(before: &Frame, after: &Frame, x: usize, y: usize) -> bool {
    let w = before.width() as usize;
    let c = (y / 2) * (w / 2) + x / 2;
    let dy = (before.y()[y * w + x] as i32 - after.y()[y * w + x] as i32).abs();
    let du = (before.u()[c] as i32 - after.u()[c] as i32).abs();
    let dv = (before.v()[c] as i32 - after.v()[c] as i32).abs();
    dy > 6 || du > 6 || dv > 6
}

/// The fraction of `bbox` that the engine changed.
pub fn coverage(before: &Frame, after: &Frame, bbox: [u32; 4]) -> f64 {
    let [x, y, w, h] = bbox.map(|v| v as usize);
    let hit = (y..y + h)
        .flat_map(|row| (x..x + w).map(move |col| (col, row)))
        .filter(|&(c, r)| changed(before, after, c, r))
        .count();
    hit as f64 / (w * h) as f64
}

/// The fraction of the whole frame that the engine changed, sampled at every second pixel of
/// every second row (the chroma grid; redaction works in whole blocks), so a real-time
/// evaluation spends little of the frame's time measuring it.
pub fn redacted_fraction(before: &Frame, after: &Frame) -> f64 {
    let (w, h) = (before.width() as usize, before.height() as usize);
    let (mut hit, mut all) = (0usize, 0usize);
    for r in (0..h).step_by(2) {
        for c in (0..w).step_by(2) {
            all += 1;
            hit += changed(before, after, c, r) as usize;
        }
    }
    hit as f64 / all.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::{Rect, solid};

    #[test]
    fn coverage_counts_changed_pixels_in_the_box() {
        let mut before = Frame::new(64, 64);
        before.planes_mut().0.fill(120);
        let mut after = before.clone();
        solid(
            &mut after,
            Rect {
                x: 0,
                y: 0,
                w: 32,
                h: 64,
            },
        );
        assert_eq!(coverage(&before, &after, [0, 0, 32, 32]), 1.0);
        assert_eq!(coverage(&before, &after, [16, 0, 32, 32]), 0.5);
        assert_eq!(coverage(&before, &after, [40, 0, 10, 10]), 0.0);
        assert!((redacted_fraction(&before, &after) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn the_shipped_annotations_are_valid() {
        let a = Annotations::parse(include_str!("../eval/carphone.json")).unwrap();
        assert_eq!((a.width, a.height), (176, 144));
        assert_eq!(a.frames.len(), 5);
        // The crowd set: over a thousand face instances, from 19 to 119 px, many people.
        let a = Annotations::parse(include_str!("../eval/crowd-1080p.json")).unwrap();
        let faces: Vec<&Object> = a.frames.iter().flat_map(|f| &f.objects).collect();
        assert!(faces.len() >= 1000, "{}", faces.len());
        let heights = faces.iter().map(|o| o.bbox[3]);
        assert_eq!(
            (heights.clone().min(), heights.max()),
            (Some(19), Some(119))
        );
        let people: std::collections::BTreeSet<_> = faces.iter().map(|o| &o.id).collect();
        assert_eq!(people.len(), 27);
    }

    #[test]
    fn bad_annotations_are_refused() {
        let e = Annotations::parse(r#"{"clip":"c","width":10,"height":10,"frames":[{"index":0,"objects":[{"class":"face","box":[5,5,10,10]}]}]}"#).unwrap_err();
        assert!(e.contains("outside 10x10"), "{e}");
        let e = Annotations::parse(r#"{"clip":"c","width":10,"height":10,"frames":[{"index":0,"objects":[{"class":"cat","box":[1,1,2,2]}]}]}"#).unwrap_err();
        assert!(e.contains("'cat'"), "{e}");
        assert!(Annotations::parse("{").is_err());
    }
}
