//! Face detection with MediaPipe's BlazeFace models, on whichever inference backend the board
//! has, over overlapping tiles so that small faces in a large frame are found.
//!
//! The model sees a square view of the frame scaled to its input (192 px for full range). A
//! 1080p frame scaled whole makes a 25 px face 2.5 px tall; tiles of `tile` pixels keep faces
//! large enough, and one whole-frame view catches faces larger than a tile. Overlapping
//! detections are merged with NMS.

use veil_core::Error;
use veil_media::Frame;

use crate::detector::Detector;
use crate::redact::Rect;

/// Runs a model on one input tensor (NHWC f32) and returns its outputs as flat f32 vectors.
pub trait Inference: Send {
    /// Input shape `[1, h, w, 3]`, read from the model.
    fn input_side(&self) -> usize;
    /// Runs the model; returns (regressors `[n * 16]`, scores `[n]`).
    fn run(&mut self, input: &[f32]) -> Result<(Vec<f32>, Vec<f32>), Error>;
}

/// Which BlazeFace variant a model file is, from its shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// 192 px input, 2304 anchors (one 48x48 layer): faces up to ~5 m from the camera.
    FullRange,
    /// 128 px input, 896 anchors: faces within ~2 m (selfie distance).
    ShortRange,
}

impl Variant {
    pub fn from_shapes(input_side: usize, boxes: usize) -> Result<Variant, String> {
        match (input_side, boxes) {
            (192, 2304) => Ok(Variant::FullRange),
            (128, 896) => Ok(Variant::ShortRange),
            _ => Err(format!(
                "a {input_side} px input with {boxes} boxes is not a BlazeFace model \
                 (expected 192 px / 2304 boxes for full range or 128 px / 896 for short range)"
            )),
        }
    }

    pub fn input_side(self) -> usize {
        match self {
            Variant::FullRange => 192,
            Variant::ShortRange => 128,
        }
    }

    /// Anchor centres, normalized to the input, in the model's output order.
    fn anchors(self) -> Vec<[f32; 2]> {
        // (stride, anchors per cell), as MediaPipe's SsdAnchorsCalculator produces them.
        let layers: &[(usize, usize)] = match self {
            Variant::FullRange => &[(4, 1)],
            Variant::ShortRange => &[(8, 2), (16, 6)],
        };
        let side = self.input_side();
        let mut out = Vec::new();
        for &(stride, per_cell) in layers {
            let cells = side / stride;
            for y in 0..cells {
                for x in 0..cells {
                    let c = [
                        (x as f32 + 0.5) / cells as f32,
                        (y as f32 + 0.5) / cells as f32,
                    ];
                    out.extend(std::iter::repeat_n(c, per_cell));
                }
            }
        }
        out
    }
}

/// A detection in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub score: f32,
}

impl Scored {
    fn iou(&self, o: &Scored) -> f32 {
        let ix = (self.x + self.w).min(o.x + o.w) - self.x.max(o.x);
        let iy = (self.y + self.h).min(o.y + o.h) - self.y.max(o.y);
        if ix <= 0.0 || iy <= 0.0 {
            return 0.0;
        }
        let inter = ix * iy;
        inter / (self.w * self.h + o.w * o.h - inter)
    }

    /// The smaller box's share covered by the other: merges a tile's half face with the
    /// whole face found by the neighbouring tile.
    fn overlap_of_smaller(&self, o: &Scored) -> f32 {
        let ix = (self.x + self.w).min(o.x + o.w) - self.x.max(o.x);
        let iy = (self.y + self.h).min(o.y + o.h) - self.y.max(o.y);
        if ix <= 0.0 || iy <= 0.0 {
            return 0.0;
        }
        ix * iy / (self.w * self.h).min(o.w * o.h)
    }
}

/// Greedy NMS that keeps the union of merged boxes: for redaction a larger box is the safe
/// side, so merged detections widen the kept one rather than being thrown away.
pub fn merge(mut found: Vec<Scored>, threshold: f32) -> Vec<Scored> {
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Scored> = Vec::new();
    for d in found {
        match kept
            .iter_mut()
            .find(|k| k.iou(&d) > threshold || k.overlap_of_smaller(&d) > 0.6)
        {
            Some(k) => {
                let x1 = (k.x + k.w).max(d.x + d.w);
                let y1 = (k.y + k.h).max(d.y + d.h);
                k.x = k.x.min(d.x);
                k.y = k.y.min(d.y);
                k.w = x1 - k.x;
                k.h = y1 - k.y;
            }
            None => kept.push(d),
        }
    }
    kept
}

/// A square region of the frame shown to the model; it may extend past the frame (the part
/// outside is black, as MediaPipe's letterboxing does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    pub x: f32,
    pub y: f32,
    pub side: f32,
}

/// The views that cover a `width`x`height` frame: the whole frame, plus overlapping tiles of
/// `tile` pixels when the frame is larger than that (`tile` 0: whole frame only).
pub fn views(width: u32, height: u32, tile: u32) -> Vec<View> {
    let (w, h) = (width as f32, height as f32);
    let side = w.max(h);
    let mut out = vec![View {
        x: (w - side) / 2.0,
        y: (h - side) / 2.0,
        side,
    }];
    if tile == 0 || (tile as f32) * 1.25 >= side {
        return out;
    }
    let t = tile as f32;
    // Tiles overlap by at least a quarter so a face cut by one tile is whole in the next.
    let starts = |len: f32| -> Vec<f32> {
        if len <= t {
            return vec![(len - t) / 2.0];
        }
        let n = ((len - t) / (t * 0.75)).ceil() as usize + 1;
        (0..n)
            .map(|i| (len - t) * i as f32 / (n - 1) as f32)
            .collect()
    };
    for y in starts(h) {
        for x in starts(w) {
            out.push(View { x, y, side: t });
        }
    }
    out
}

/// Fills `out` (`side`x`side`x3, RGB in [-1, 1]) from the `view` of an I420 frame, bilinear on
/// luma, nearest on chroma (colour matters little to the model, edges do).
pub fn fill_input(frame: &Frame, view: View, side: usize, out: &mut [f32]) {
    let (fw, fh) = (frame.width() as usize, frame.height() as usize);
    let (y_plane, u_plane, v_plane) = (frame.y(), frame.u(), frame.v());
    let cw = fw / 2;
    let scale = view.side / side as f32;
    // Per column: source x (integer part, clamped), weight; None when outside the frame.
    let axis = |origin: f32, limit: usize| -> Vec<Option<(usize, usize, f32)>> {
        (0..side)
            .map(|i| {
                let s = origin + (i as f32 + 0.5) * scale - 0.5;
                if s < -0.5 || s > limit as f32 - 0.5 {
                    return None;
                }
                let s = s.clamp(0.0, (limit - 1) as f32);
                let i0 = s.floor() as usize;
                let i1 = (i0 + 1).min(limit - 1);
                Some((i0, i1, s - i0 as f32))
            })
            .collect()
    };
    let cols = axis(view.x, fw);
    let rows = axis(view.y, fh);
    for (oy, row) in rows.iter().enumerate() {
        let line = &mut out[oy * side * 3..(oy + 1) * side * 3];
        let Some((y0, y1, wy)) = *row else {
            line.fill(-1.0);
            continue;
        };
        let (r0, r1) = (&y_plane[y0 * fw..], &y_plane[y1 * fw..]);
        let crow = (y0 / 2) * cw;
        for (ox, col) in cols.iter().enumerate() {
            let px = &mut line[ox * 3..ox * 3 + 3];
            let Some((x0, x1, wx)) = *col else {
                px.fill(-1.0);
                continue;
            };
            let top = r0[x0] as f32 + (r0[x1] as f32 - r0[x0] as f32) * wx;
            let bottom = r1[x0] as f32 + (r1[x1] as f32 - r1[x0] as f32) * wx;
            let luma = 1.164 * (top + (bottom - top) * wy - 16.0);
            let u = u_plane[crow + x0 / 2] as f32 - 128.0;
            let v = v_plane[crow + x0 / 2] as f32 - 128.0;
            let r = luma + 1.596 * v;
            let g = luma - 0.392 * u - 0.813 * v;
            let b = luma + 2.017 * u;
            px[0] = (r.clamp(0.0, 255.0) / 127.5) - 1.0;
            px[1] = (g.clamp(0.0, 255.0) / 127.5) - 1.0;
            px[2] = (b.clamp(0.0, 255.0) / 127.5) - 1.0;
        }
    }
}

/// Settings of the face detector. The defaults are the ones measured on the crowd set
/// (docs/benchmarks.md): 256 px tiles show BlazeFace a 20 px face at 15 px, where it still
/// finds most; 384 px tiles found under half of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceSettings {
    /// Detections scoring below this are ignored. Well below MediaPipe's 0.6: a missed face
    /// is a leak, a spurious box only hides a patch of background.
    pub min_score: f32,
    /// Tile side in frame pixels (0: the whole frame only).
    pub tile: u32,
    /// Boxes are widened by this fraction of their size on each side (hair, ears, chin, and
    /// the model's box being a little off on small faces).
    pub margin: f32,
}

impl Default for FaceSettings {
    fn default() -> Self {
        FaceSettings {
            min_score: 0.35,
            tile: 256,
            margin: 0.4,
        }
    }
}

/// BlazeFace over tiles, on any [`Inference`] backend.
pub struct FaceDetector {
    backend: Box<dyn Inference>,
    variant: Variant,
    anchors: Vec<[f32; 2]>,
    settings: FaceSettings,
    input: Vec<f32>,
}

impl FaceDetector {
    pub fn new(backend: Box<dyn Inference>, settings: FaceSettings) -> Result<Self, Error> {
        let side = backend.input_side();
        let variant = match side {
            192 => Variant::FullRange,
            128 => Variant::ShortRange,
            _ => {
                return Err(Error::invalid_input(
                    Variant::from_shapes(side, 0).unwrap_err(),
                ));
            }
        };
        Ok(FaceDetector {
            backend,
            variant,
            anchors: variant.anchors(),
            settings,
            input: vec![0.0; side * side * 3],
        })
    }

    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// Faces in one view, in frame pixels, before merging.
    pub fn detect_view(&mut self, frame: &Frame, view: View) -> Result<Vec<Scored>, Error> {
        let side = self.variant.input_side();
        fill_input(frame, view, side, &mut self.input);
        let (boxes, scores) = self.backend.run(&self.input)?;
        if scores.len() != self.anchors.len() || boxes.len() != self.anchors.len() * 16 {
            return Err(Error::internal(format!(
                "face model returned {} scores and {} box values for {} anchors",
                scores.len(),
                boxes.len(),
                self.anchors.len()
            )));
        }
        // Score threshold as a logit, so the sigmoid runs only for candidates.
        let min_logit = (self.settings.min_score / (1.0 - self.settings.min_score)).ln();
        let mut out = Vec::new();
        for (i, &logit) in scores.iter().enumerate() {
            if logit < min_logit {
                continue;
            }
            let r = &boxes[i * 16..i * 16 + 4];
            let [ax, ay] = self.anchors[i];
            let cx = r[0] / side as f32 + ax;
            let cy = r[1] / side as f32 + ay;
            let (w, h) = (r[2] / side as f32, r[3] / side as f32);
            if w <= 0.0 || h <= 0.0 {
                continue;
            }
            out.push(Scored {
                x: view.x + (cx - w / 2.0) * view.side,
                y: view.y + (cy - h / 2.0) * view.side,
                w: w * view.side,
                h: h * view.side,
                score: 1.0 / (1.0 + (-logit.clamp(-100.0, 100.0)).exp()),
            });
        }
        Ok(out)
    }

    /// Faces in the frame, merged across views, in frame pixels.
    pub fn detect_scored(&mut self, frame: &Frame) -> Result<Vec<Scored>, Error> {
        self.detect_views(
            frame,
            views(frame.width(), frame.height(), self.settings.tile),
        )
    }

    fn detect_views(&mut self, frame: &Frame, views: Vec<View>) -> Result<Vec<Scored>, Error> {
        let mut all = Vec::new();
        for view in views {
            all.extend(self.detect_view(frame, view)?);
        }
        Ok(merge(all, 0.3))
    }

    /// The views that look at `focus`: every tile within a quarter tile of a focus region
    /// (so a face that reaches past the region's edge is whole in one of them), and the
    /// whole-frame view for faces larger than a tile. Nothing when there is no focus.
    pub fn views_for(&self, width: u32, height: u32, focus: &[Rect]) -> Vec<View> {
        if focus.is_empty() {
            return Vec::new();
        }
        // Focused looks are few: their tiles are three quarters the sweep's, so a 20 px face
        // reaches the model at 20 px instead of 15.
        let tile = self.settings.tile * 3 / 4;
        let reach = tile as f32 / 4.0;
        let near = |v: &View| {
            focus.iter().any(|r| {
                let (x0, y0) = (r.x as f32 - reach, r.y as f32 - reach);
                let (x1, y1) = ((r.x + r.w) as f32 + reach, (r.y + r.h) as f32 + reach);
                v.x < x1 && x0 < v.x + v.side && v.y < y1 && y0 < v.y + v.side
            })
        };
        let mut all = views(width, height, tile).into_iter();
        let whole = all.next();
        whole.into_iter().chain(all.filter(near)).collect()
    }

    fn with_margin(&self, found: Vec<Scored>) -> Vec<Rect> {
        let m = self.settings.margin;
        found
            .into_iter()
            .map(|s| {
                let (dx, dy) = (s.w * m, s.h * m);
                Rect {
                    x: (s.x - dx).floor() as i32,
                    y: (s.y - dy).floor() as i32,
                    w: (s.w + 2.0 * dx).ceil() as i32,
                    h: (s.h + 2.0 * dy).ceil() as i32,
                }
            })
            .collect()
    }
}

impl Detector for FaceDetector {
    fn name(&self) -> &'static str {
        "faces"
    }

    fn detect(&mut self, frame: &Frame) -> Result<Vec<Rect>, Error> {
        let found = self.detect_scored(frame)?;
        Ok(self.with_margin(found))
    }

    fn detect_in(
        &mut self,
        frame: &Frame,
        focus: &[Rect],
    ) -> Result<(Vec<Rect>, Option<Vec<Rect>>), Error> {
        let views = self.views_for(frame.width(), frame.height(), focus);
        let found = self.detect_views(frame, views)?;
        Ok((self.with_margin(found), Some(focus.to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_match_the_models_outputs() {
        assert_eq!(Variant::FullRange.anchors().len(), 2304);
        assert_eq!(Variant::ShortRange.anchors().len(), 896);
        let a = Variant::FullRange.anchors();
        assert_eq!(a[0], [0.5 / 48.0, 0.5 / 48.0]);
        assert_eq!(a[1], [1.5 / 48.0, 0.5 / 48.0]);
        assert_eq!(a[48], [0.5 / 48.0, 1.5 / 48.0]);
        let s = Variant::ShortRange.anchors();
        assert_eq!(s[0], s[1]);
        assert_eq!(s[512], [0.5 / 8.0, 0.5 / 8.0]);
        assert!(Variant::from_shapes(224, 100).is_err());
    }

    #[test]
    fn views_cover_every_pixel_with_overlap() {
        let v = views(1920, 1080, 384);
        assert_eq!(v[0].side, 1920.0);
        for y in (0..1080).step_by(7) {
            for x in (0..1920).step_by(7) {
                let (x, y) = (x as f32, y as f32);
                let tiles = v[1..]
                    .iter()
                    .filter(|t| x >= t.x && x < t.x + t.side && y >= t.y && y < t.y + t.side)
                    .count();
                assert!(tiles >= 1, "pixel {x},{y} in no tile");
            }
        }
        // Neighbouring tiles overlap by at least a quarter.
        assert!(v[1].x + v[1].side - v[2].x >= 384.0 * 0.25);
        assert_eq!(views(320, 240, 384).len(), 1);
    }

    #[test]
    fn merged_boxes_keep_the_union() {
        let a = Scored {
            x: 0.0,
            y: 0.0,
            w: 10.0,
            h: 10.0,
            score: 0.9,
        };
        let b = Scored { x: 2.0, ..a };
        let far = Scored { x: 50.0, ..a };
        let m = merge(vec![a, b, far], 0.3);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].w, 12.0);
    }

    #[test]
    fn input_is_letterboxed_in_black_and_normalized() {
        let mut f = Frame::new(64, 32);
        f.planes_mut().0.fill(235);
        f.planes_mut().1.fill(128);
        f.planes_mut().2.fill(128);
        let mut input = vec![0.0; 16 * 16 * 3];
        fill_input(&f, views(64, 32, 0)[0], 16, &mut input);
        // Rows 0..4 and 12..16 are outside the frame.
        assert!(input[..4 * 16 * 3].iter().all(|&v| v == -1.0));
        let mid = &input[8 * 16 * 3..9 * 16 * 3];
        assert!(mid.iter().all(|&v| (v - 1.0).abs() < 0.01), "{mid:?}");
    }

    #[test]
    fn a_focused_look_takes_the_tiles_near_the_focus_and_the_whole_frame() {
        struct Nothing;
        impl Inference for Nothing {
            fn input_side(&self) -> usize {
                192
            }
            fn run(&mut self, _: &[f32]) -> Result<(Vec<f32>, Vec<f32>), Error> {
                Ok((vec![0.0; 2304 * 16], vec![-10.0; 2304]))
            }
        }
        let d = FaceDetector::new(Box::new(Nothing), FaceSettings::default()).unwrap();
        assert!(d.views_for(1920, 1080, &[]).is_empty());
        let corner = Rect {
            x: 10,
            y: 10,
            w: 30,
            h: 30,
        };
        let v = d.views_for(1920, 1080, &[corner]);
        let all = views(1920, 1080, 192);
        assert_eq!(v[0], all[0], "the whole frame first");
        assert!(v.len() > 1 && v.len() <= 5, "{} views", v.len());
        // Every tile that holds the focus whole is among them.
        for t in &all[1..] {
            let holds = t.x <= 10.0 && t.y <= 10.0 && t.x + t.side >= 40.0 && t.y + t.side >= 40.0;
            assert!(!holds || v.contains(t), "{t:?} missing");
        }
    }
}
