//! Boosted Haar cascades in OpenCV's XML format (as `opencv_traincascade` writes them),
//! evaluated the way OpenCV's `CascadeClassifier` does: a pyramid of the luma plane, the
//! cascade's fixed window slid over each level, features normalized by the window's contrast,
//! and stages that reject most windows after a handful of features.
//!
//! Any cascade trained for local plates (or anything else) can be dropped in; the file is
//! checked when it is loaded and refused with a message naming it.

use std::ops::Range;
use std::path::Path;

use veil_core::{Error, ErrorKind};

/// One weak classifier: a small decision tree over features.
#[derive(Debug, Clone)]
struct Weak {
    /// `(left, right, feature, threshold)`; a child `<= 0` is leaf `-child`.
    nodes: Vec<(i32, i32, usize, f32)>,
    leaves: Vec<f32>,
}

#[derive(Debug, Clone)]
struct Stage {
    threshold: f32,
    weak: Range<usize>,
}

/// A Haar feature: weighted rectangles, upright or turned by 45 degrees.
#[derive(Debug, Clone)]
struct Feature {
    rects: Vec<([i32; 4], f32)>,
    tilted: bool,
}

/// A parsed cascade.
#[derive(Debug, Clone)]
pub struct Cascade {
    /// The window the cascade was trained on: (width, height).
    pub window: (usize, usize),
    stages: Vec<Stage>,
    weak: Vec<Weak>,
    /// The same weak classifiers flattened, when every tree is a single split (the common
    /// case, and the fast path).
    stumps: Option<Vec<Stump>>,
    features: Vec<Feature>,
}

#[derive(Debug, Clone, Copy)]
struct Stump {
    feature: usize,
    threshold: f32,
    left: f32,
    right: f32,
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|c| c.has_tag_name(name))
}

fn items<'a, 'i>(node: roxmltree::Node<'a, 'i>) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    node.children().filter(|c| c.has_tag_name("_"))
}

fn text_of(node: roxmltree::Node, name: &str) -> Result<String, String> {
    child(node, name)
        .and_then(|c| c.text())
        .map(|t| t.trim().to_string())
        .ok_or_else(|| format!("<{name}> is missing"))
}

fn numbers<T: std::str::FromStr>(text: &str, what: &str) -> Result<Vec<T>, String> {
    text.split_whitespace()
        .map(|t| {
            t.parse()
                .map_err(|_| format!("{what}: '{t}' is not a number"))
        })
        .collect()
}

impl Cascade {
    /// Reads a cascade file, naming it in every error.
    pub fn load(path: &Path) -> Result<Cascade, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (run scripts/fetch-models, or set [detection] model_dir)"
            } else {
                ""
            };
            Error::new(
                ErrorKind::NotFound,
                format!("plate model {}: cannot read: {e}{hint}", path.display()),
            )
        })?;
        Cascade::parse(&text).map_err(|e| {
            Error::invalid_input(format!(
                "plate model {}: not a usable cascade: {e}",
                path.display()
            ))
        })
    }

    /// Parses the XML of an OpenCV boosted Haar cascade (the format of OpenCV 2.4 and later).
    pub fn parse(text: &str) -> Result<Cascade, String> {
        let doc = roxmltree::Document::parse(text).map_err(|e| format!("bad XML: {e}"))?;
        let root = doc.root_element();
        let cascade = child(root, "cascade").ok_or_else(|| {
            if root
                .children()
                .any(|c| c.attribute("type_id") == Some("opencv-haar-classifier"))
            {
                "old-format cascade (opencv-haar-classifier); convert it with OpenCV's \
                 opencv_traincascade / CascadeClassifier::convert, or use a cascade in the \
                 current format"
                    .to_string()
            } else {
                "no <cascade> element (not an OpenCV cascade file)".to_string()
            }
        })?;
        let stage_type = text_of(cascade, "stageType")?;
        let feature_type = text_of(cascade, "featureType")?;
        if stage_type != "BOOST" || feature_type != "HAAR" {
            return Err(format!(
                "{stage_type}/{feature_type} cascades are not supported (only BOOST/HAAR)"
            ));
        }
        let width: usize = text_of(cascade, "width")?
            .parse()
            .map_err(|_| "<width> is not a number")?;
        let height: usize = text_of(cascade, "height")?
            .parse()
            .map_err(|_| "<height> is not a number")?;
        if !(4..=512).contains(&width) || !(4..=512).contains(&height) {
            return Err(format!("window {width}x{height} is out of range"));
        }

        let mut features = Vec::new();
        let list = child(cascade, "features").ok_or("<features> is missing")?;
        for (i, f) in items(list).enumerate() {
            let rects_node = child(f, "rects").ok_or(format!("feature {i}: <rects> missing"))?;
            let mut rects = Vec::new();
            for r in items(rects_node) {
                let v: Vec<f32> = numbers(r.text().unwrap_or(""), &format!("feature {i}"))?;
                if v.len() != 5 {
                    return Err(format!("feature {i}: a rectangle needs 5 numbers"));
                }
                rects.push(([v[0] as i32, v[1] as i32, v[2] as i32, v[3] as i32], v[4]));
            }
            if !(2..=3).contains(&rects.len()) {
                return Err(format!(
                    "feature {i}: {} rectangles (2 or 3 expected)",
                    rects.len()
                ));
            }
            let tilted = text_of(f, "tilted").unwrap_or_default() == "1";
            let feature = Feature { rects, tilted };
            feature
                .check(width, height)
                .map_err(|e| format!("feature {i}: {e}"))?;
            features.push(feature);
        }

        let mut stages = Vec::new();
        let mut weak = Vec::new();
        let stage_list = child(cascade, "stages").ok_or("<stages> is missing")?;
        for (s, stage) in items(stage_list).enumerate() {
            let threshold: f32 = text_of(stage, "stageThreshold")?
                .parse()
                .map_err(|_| format!("stage {s}: bad threshold"))?;
            let start = weak.len();
            let list = child(stage, "weakClassifiers")
                .ok_or(format!("stage {s}: <weakClassifiers> missing"))?;
            for w in items(list) {
                let what = format!("stage {s}");
                let raw: Vec<f64> = numbers(&text_of(w, "internalNodes")?, &what)?;
                let leaves: Vec<f32> = numbers(&text_of(w, "leafValues")?, &what)?;
                if raw.is_empty() || !raw.len().is_multiple_of(4) {
                    return Err(format!("{what}: internalNodes must come in fours"));
                }
                let nodes: Vec<(i32, i32, usize, f32)> = raw
                    .chunks(4)
                    .map(|c| (c[0] as i32, c[1] as i32, c[2] as usize, c[3] as f32))
                    .collect();
                for &(l, r, f, _) in &nodes {
                    let ok_child = |c: i32| {
                        if c > 0 {
                            (c as usize) < nodes.len()
                        } else {
                            ((-c) as usize) < leaves.len()
                        }
                    };
                    if f >= features.len() || !ok_child(l) || !ok_child(r) {
                        return Err(format!(
                            "{what}: a node refers to a missing feature or leaf"
                        ));
                    }
                }
                // Children only point forward, so evaluation always ends.
                for (i, &(l, r, _, _)) in nodes.iter().enumerate() {
                    if (l > 0 && l as usize <= i) || (r > 0 && r as usize <= i) {
                        return Err(format!("{what}: a tree loops back"));
                    }
                }
                weak.push(Weak { nodes, leaves });
            }
            if weak.len() == start {
                return Err(format!("stage {s} has no weak classifiers"));
            }
            stages.push(Stage {
                threshold,
                weak: start..weak.len(),
            });
        }
        if stages.is_empty() {
            return Err("no stages".into());
        }
        let stumps = weak
            .iter()
            .map(|w| match w.nodes[..] {
                [(l, r, feature, threshold)] => Some(Stump {
                    feature,
                    threshold,
                    left: w.leaves[(-l) as usize],
                    right: w.leaves[(-r) as usize],
                }),
                _ => None,
            })
            .collect();
        Ok(Cascade {
            window: (width, height),
            stages,
            weak,
            stumps,
            features,
        })
    }

    pub fn stage_count(&self) -> usize {
        self.stages.len()
    }
}

impl Feature {
    fn check(&self, width: usize, height: usize) -> Result<(), String> {
        for &([x, y, w, h], _) in &self.rects {
            if w <= 0 || h <= 0 || x < 0 || y < 0 {
                return Err(format!("rectangle {x} {y} {w} {h} is empty or negative"));
            }
            let fits = if self.tilted {
                x - h >= 0 && x + w <= width as i32 && y + w + h <= height as i32
            } else {
                x + w <= width as i32 && y + h <= height as i32
            };
            if !fits {
                return Err(format!("rectangle {x} {y} {w} {h} leaves the window"));
            }
        }
        Ok(())
    }
}

/// The integral images a cascade reads, for one grey picture: upright sums, sums of
/// squares, and OpenCV's rotated sums `T(X, Y)` over the pixels `(x, y)` with `y < Y` and
/// `|x - X + 1| <= Y - y - 1` (a triangle opening upward), all `(width + 1) x (height + 1)`.
struct Integrals {
    width: usize,
    sum: Vec<u32>,
    squares: Vec<u64>,
    tilted: Vec<u32>,
}

impl Integrals {
    fn new(luma: &[u8], width: usize, height: usize) -> Integrals {
        let stride = width + 1;
        let mut sum = vec![0u32; stride * (height + 1)];
        let mut squares = vec![0u64; stride * (height + 1)];
        for y in 0..height {
            let (mut row, mut row_sq) = (0u32, 0u64);
            for x in 0..width {
                let p = luma[y * width + x] as u32;
                row += p;
                row_sq += (p * p) as u64;
                let i = (y + 1) * stride + x + 1;
                sum[i] = sum[i - stride] + row;
                squares[i] = squares[i - stride] + row_sq;
            }
        }
        Integrals {
            width,
            sum,
            squares,
            tilted: tilted_integral(luma, width, height),
        }
    }
}

/// The rotated integral by the recurrence
/// `T(X,Y) = T(X-1,Y-1) + T(X+1,Y-1) - T(X,Y-2) + I(X-1,Y-1) + I(X-1,Y-2)`. Triangles whose
/// apex lies left or right of the picture equal, inside it, a triangle with its apex on the
/// border one step down the diagonal: `T(X,Y) = T(1, Y+X-1)` for `X <= 0`, and
/// `T(X,Y) = T(W, Y-(X-W))` for `X > W`. Sums stay below 2^32 (wrapping steps are exact).
fn tilted_integral(luma: &[u8], width: usize, height: usize) -> Vec<u32> {
    let stride = width + 1;
    let mut t = vec![0u32; stride * (height + 1)];
    let at = |t: &[u32], x: i64, y: i64| -> u32 {
        let (x, y) = if x <= 0 {
            (1, y + x - 1)
        } else if x > width as i64 {
            (width as i64, y - (x - width as i64))
        } else {
            (x, y)
        };
        if y <= 0 {
            0
        } else {
            t[y as usize * stride + x as usize]
        }
    };
    let pixel = |x: i64, y: i64| -> u32 {
        if x < 0 || y < 0 || x >= width as i64 || y >= height as i64 {
            0
        } else {
            luma[y as usize * width + x as usize] as u32
        }
    };
    for y in 1..=height as i64 {
        for x in 1..=width as i64 {
            let interior = x >= 2 && x < width as i64 && y >= 3;
            let v = if interior {
                // The common case, without border rules.
                let (xu, yu) = (x as usize, y as usize);
                let row1 = (yu - 1) * stride;
                t[row1 + xu - 1]
                    .wrapping_add(t[row1 + xu + 1])
                    .wrapping_sub(t[(yu - 2) * stride + xu])
                    .wrapping_add(luma[(yu - 1) * width + xu - 1] as u32)
                    .wrapping_add(luma[(yu - 2) * width + xu - 1] as u32)
            } else {
                at(&t, x - 1, y - 1)
                    .wrapping_add(at(&t, x + 1, y - 1))
                    .wrapping_sub(at(&t, x, y - 2))
                    .wrapping_add(pixel(x - 1, y - 1))
                    .wrapping_add(pixel(x - 1, y - 2))
            };
            t[y as usize * stride + x as usize] = v;
        }
        // Column 0 by the border rule, now that its source exists.
        t[y as usize * stride] = at(&t, 0, y);
    }
    t
}

/// The four corners of a rectangle in an integral image of row length `stride`, in the order
/// `(a, b, c, d)` with the sum `d + a - b - c`.
fn corners([x, y, w, h]: [i32; 4], tilted: bool, stride: usize) -> [u32; 4] {
    let o = |x: i32, y: i32| (y as usize * stride + x as usize) as u32;
    if tilted {
        [
            o(x, y),
            o(x + w, y + w),
            o(x - h, y + h),
            o(x + w - h, y + w + h),
        ]
    } else {
        [o(x, y), o(x + w, y), o(x, y + h), o(x + w, y + h)]
    }
}

/// A weak classifier's feature compiled for one level's row length, so the hot loop reads one
/// contiguous array.
#[derive(Debug, Clone, Copy)]
struct Compiled {
    corners: [[u32; 4]; 3],
    /// Unused slots have weight 0.
    weights: [f32; 3],
    tilted: bool,
}

impl Compiled {
    fn new(f: &Feature, stride: usize) -> Compiled {
        let mut c = Compiled {
            corners: [[0; 4]; 3],
            weights: [0.0; 3],
            tilted: f.tilted,
        };
        for (i, &(r, weight)) in f.rects.iter().enumerate() {
            c.corners[i] = corners(r, f.tilted, stride);
            c.weights[i] = weight;
        }
        c
    }

    /// The feature at the window whose integral images start at `sum` and `tilted`.
    #[inline]
    fn value(&self, sum: &[u32], tilted: &[u32]) -> f32 {
        let table = if self.tilted { tilted } else { sum };
        let mut v = 0f32;
        for (k, c) in self.corners.iter().enumerate() {
            let [a, b, cc, d] = c.map(|o| table[o as usize]);
            v += self.weights[k] * d.wrapping_add(a).wrapping_sub(b).wrapping_sub(cc) as f32;
        }
        v
    }
}

/// A single-split weak classifier with its feature compiled in.
#[derive(Debug, Clone, Copy)]
struct FastStump {
    feature: Compiled,
    threshold: f32,
    left: f32,
    right: f32,
}

/// Bilinear resize of a grey plane (pixel centres aligned, as OpenCV's `INTER_LINEAR`).
fn resize_bilinear(src: &[u8], sw: usize, sh: usize, dst: &mut [u8], dw: usize, dh: usize) {
    let (fx, fy) = (sw as f32 / dw as f32, sh as f32 / dh as f32);
    let cols: Vec<(usize, usize, u32)> = (0..dw)
        .map(|x| {
            let s = ((x as f32 + 0.5) * fx - 0.5).clamp(0.0, (sw - 1) as f32);
            let x0 = s as usize;
            (x0, (x0 + 1).min(sw - 1), ((s - x0 as f32) * 256.0) as u32)
        })
        .collect();
    for y in 0..dh {
        let s = ((y as f32 + 0.5) * fy - 0.5).clamp(0.0, (sh - 1) as f32);
        let y0 = s as usize;
        let y1 = (y0 + 1).min(sh - 1);
        let wy = ((s - y0 as f32) * 256.0) as u32;
        let (r0, r1) = (&src[y0 * sw..][..sw], &src[y1 * sw..][..sw]);
        let out = &mut dst[y * dw..][..dw];
        for (o, &(x0, x1, wx)) in out.iter_mut().zip(&cols) {
            let top = r0[x0] as u32 * (256 - wx) + r0[x1] as u32 * wx;
            let bottom = r1[x0] as u32 * (256 - wx) + r1[x1] as u32 * wx;
            *o = ((top * (256 - wy) + bottom * wy + (1 << 15)) >> 16) as u8;
        }
    }
}

/// How the cascade is slid over the picture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanSettings {
    /// Smallest object width searched, in picture pixels (below the cascade's window the
    /// picture is enlarged).
    pub min_width: u32,
    /// Largest object width searched, in picture pixels.
    pub max_width: u32,
    /// Ratio between pyramid levels (OpenCV's `scaleFactor`).
    pub scale_step: f32,
    /// Hits a grouped object needs besides its own (OpenCV's `minNeighbors`).
    pub min_neighbors: u32,
}

/// The cascade compiled for one level's row length.
enum Program {
    Stumps(Vec<FastStump>),
    Trees(Vec<Compiled>),
}

impl Cascade {
    fn compile(&self, width: usize) -> Program {
        let stride = width + 1;
        match &self.stumps {
            Some(stumps) => Program::Stumps(
                stumps
                    .iter()
                    .map(|s| FastStump {
                        feature: Compiled::new(&self.features[s.feature], stride),
                        threshold: s.threshold,
                        left: s.left,
                        right: s.right,
                    })
                    .collect(),
            ),
            None => Program::Trees(
                self.features
                    .iter()
                    .map(|f| Compiled::new(f, stride))
                    .collect(),
            ),
        }
    }

    /// The first stage that rejects the window at `(x, y)`, or the stage count if all pass.
    fn run_at(&self, program: &Program, level: &Integrals, x: usize, y: usize) -> usize {
        let stride = level.width + 1;
        let at = y * stride + x;
        let (ww, wh) = self.window;
        // Contrast normalization over the window less a one-pixel border, as OpenCV does.
        let [a, b, c, d] =
            corners([1, 1, ww as i32 - 2, wh as i32 - 2], false, stride).map(|o| at + o as usize);
        let s =
            level.sum[d] as i64 + level.sum[a] as i64 - level.sum[b] as i64 - level.sum[c] as i64;
        let q = level.squares[d] as i64 + level.squares[a] as i64
            - level.squares[b] as i64
            - level.squares[c] as i64;
        let area = ((ww - 2) * (wh - 2)) as f64;
        let nf = area * q as f64 - (s as f64) * (s as f64);
        // Thresholds are scaled by the window's deviation rather than every feature divided.
        let norm = if nf > 0.0 { nf.sqrt() as f32 } else { 1.0 };
        let sum = &level.sum[at..];
        let tilted = &level.tilted[at..];

        for (si, stage) in self.stages.iter().enumerate() {
            let mut total = 0f32;
            match program {
                Program::Stumps(stumps) => {
                    for s in &stumps[stage.weak.clone()] {
                        let v = s.feature.value(sum, tilted);
                        total += if v < s.threshold * norm {
                            s.left
                        } else {
                            s.right
                        };
                    }
                }
                Program::Trees(features) => {
                    for w in &self.weak[stage.weak.clone()] {
                        let mut idx = 0i32;
                        loop {
                            let (l, r, f, t) = w.nodes[idx as usize];
                            let v = features[f].value(sum, tilted);
                            idx = if v < t * norm { l } else { r };
                            if idx <= 0 {
                                total += w.leaves[(-idx) as usize];
                                break;
                            }
                        }
                    }
                }
            }
            if total < stage.threshold {
                return si;
            }
        }
        self.stages.len()
    }

    /// Objects in a grey picture, as `[x, y, w, h]` in its pixels (grouped as OpenCV's
    /// `groupRectangles` does).
    pub fn detect(
        &self,
        luma: &[u8],
        width: usize,
        height: usize,
        settings: &ScanSettings,
    ) -> Vec<[i32; 4]> {
        let (ww, wh) = self.window;
        let mut hits = Vec::new();
        let mut scaled = Vec::new();
        let mut factor = settings.min_width as f32 / ww as f32;
        let step = settings.scale_step.max(1.01);
        loop {
            let (lw, lh) = (
                (width as f32 / factor).round() as usize,
                (height as f32 / factor).round() as usize,
            );
            let object_w = (ww as f32 * factor).round() as u32;
            if lw < ww || lh < wh || object_w > settings.max_width {
                break;
            }
            scaled.resize(lw * lh, 0);
            resize_bilinear(luma, width, height, &mut scaled, lw, lh);
            let level = Integrals::new(&scaled[..lw * lh], lw, lh);
            let program = self.compile(lw);
            let stride = if factor > 2.0 { 1 } else { 2 };
            for y in (0..=lh - wh).step_by(stride) {
                let mut x = 0;
                while x <= lw - ww {
                    let reached = self.run_at(&program, &level, x, y);
                    if reached == self.stages.len() {
                        hits.push([
                            (x as f32 * factor).round() as i32,
                            (y as f32 * factor).round() as i32,
                            object_w as i32,
                            (wh as f32 * factor).round() as i32,
                        ]);
                    } else if reached == 0 {
                        // Rejected at once: the neighbour is very likely background too.
                        x += stride;
                    }
                    x += stride;
                }
            }
            factor *= step;
        }
        group(hits, settings.min_neighbors, 0.2)
    }
}

/// Clusters similar rectangles and keeps clusters with more than `min_neighbors` members,
/// averaged, dropping those inside a stronger one (OpenCV's `groupRectangles`).
pub fn group(rects: Vec<[i32; 4]>, min_neighbors: u32, eps: f32) -> Vec<[i32; 4]> {
    let similar = |a: &[i32; 4], b: &[i32; 4]| {
        let delta = eps * (a[2].min(b[2]) + a[3].min(b[3])) as f32 * 0.5;
        (a[0] - b[0]).abs() as f32 <= delta
            && (a[1] - b[1]).abs() as f32 <= delta
            && (a[0] + a[2] - b[0] - b[2]).abs() as f32 <= delta
            && (a[1] + a[3] - b[1] - b[3]).abs() as f32 <= delta
    };
    // Union-find over the similarity relation.
    let mut parent: Vec<usize> = (0..rects.len()).collect();
    fn root(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for i in 0..rects.len() {
        for j in 0..i {
            if similar(&rects[i], &rects[j]) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a] = b;
            }
        }
    }
    let mut clusters: std::collections::BTreeMap<usize, ([i64; 4], u32)> = Default::default();
    for (i, r) in rects.iter().enumerate() {
        let e = clusters.entry(root(&mut parent, i)).or_default();
        for (total, &v) in e.0.iter_mut().zip(r) {
            *total += v as i64;
        }
        e.1 += 1;
    }
    let averaged: Vec<([i32; 4], u32)> = clusters
        .into_values()
        .filter(|(_, n)| *n > min_neighbors)
        .map(|(s, n)| (s.map(|v| (v as f64 / n as f64).round() as i32), n))
        .collect();
    averaged
        .iter()
        .filter(|(r1, n1)| {
            !averaged.iter().any(|(r2, n2)| {
                let (dx, dy) = ((r2[2] as f32 * eps) as i32, (r2[3] as f32 * eps) as i32);
                r1 != r2
                    && (*n2 > (*n1).max(3) || *n1 < 3)
                    && r1[0] >= r2[0] - dx
                    && r1[1] >= r2[1] - dy
                    && r1[0] + r1[2] <= r2[0] + r2[2] + dx
                    && r1[1] + r1[3] <= r2[1] + r2[3] + dy
            })
        })
        .map(|(r, _)| *r)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A two-stage cascade on a 4x4 window: "the left half is darker than the right".
    pub(crate) const TINY: &str = r#"<?xml version="1.0"?>
<opencv_storage><cascade>
  <stageType>BOOST</stageType><featureType>HAAR</featureType>
  <height>4</height><width>4</width>
  <stages>
    <_><stageThreshold>0.5</stageThreshold><weakClassifiers>
      <_><internalNodes>0 -1 0 -0.1</internalNodes><leafValues>1.0 -1.0</leafValues></_>
    </weakClassifiers></_>
  </stages>
  <features>
    <_><rects><_>0 0 2 4 1.</_><_>2 0 2 4 -1.</_></rects><tilted>0</tilted></_>
  </features>
</cascade></opencv_storage>"#;

    #[test]
    fn a_tiny_cascade_finds_an_edge_and_nothing_on_flat_grey() {
        let c = Cascade::parse(TINY).unwrap();
        assert_eq!(c.window, (4, 4));
        let settings = ScanSettings {
            min_width: 4,
            max_width: 4,
            scale_step: 1.1,
            min_neighbors: 0,
        };
        let flat = vec![128u8; 16 * 16];
        assert!(c.detect(&flat, 16, 16, &settings).is_empty());
        // Dark left half, bright right half: windows straddling column 8 fire.
        let edge: Vec<u8> = (0..16 * 16)
            .map(|i| if i % 16 < 8 { 40 } else { 200 })
            .collect();
        let found = c.detect(&edge, 16, 16, &settings);
        assert!(!found.is_empty());
        assert!(
            found.iter().all(|r| r[0] <= 8 && r[0] + r[2] >= 8),
            "{found:?}"
        );
    }

    /// `T(X, Y)` straight from its definition.
    fn tilted_by_definition(luma: &[u8], w: usize, h: usize, tx: i64, ty: i64) -> u32 {
        let mut s = 0;
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                if y < ty && (x - tx + 1).abs() < ty - y {
                    s += luma[y as usize * w + x as usize] as u32;
                }
            }
        }
        s
    }

    #[test]
    fn the_rotated_integral_matches_its_definition() {
        let (w, h) = (9, 7);
        let luma: Vec<u8> = (0..w * h).map(|i| (i * 37 % 251) as u8).collect();
        let t = tilted_integral(&luma, w, h);
        for ty in 0..=h {
            for tx in 0..=w {
                assert_eq!(
                    t[ty * (w + 1) + tx],
                    tilted_by_definition(&luma, w, h, tx as i64, ty as i64),
                    "T({tx}, {ty})"
                );
            }
        }
        // A 2x2 rotated rectangle of ones covers 8 pixels (OpenCV's area 2*w*h).
        let ones = vec![1u8; w * h];
        let t = tilted_integral(&ones, w, h);
        let [a, b, c, d] = corners([4, 0, 2, 2], true, w + 1).map(|o| t[o as usize]);
        assert_eq!(d + a - b - c, 8);
    }

    #[test]
    fn grouping_keeps_supported_clusters() {
        let near = |d: i32| [100 + d, 50, 60, 20];
        let g = group(vec![near(0), near(1), near(2), [400, 300, 60, 20]], 2, 0.2);
        assert_eq!(g, vec![[101, 50, 60, 20]]);
        assert_eq!(group(vec![[0, 0, 10, 10]], 0, 0.2).len(), 1);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        assert!(Cascade::parse("<a").unwrap_err().contains("bad XML"));
        assert!(
            Cascade::parse(
                "<opencv_storage><x type_id=\"opencv-haar-classifier\"/></opencv_storage>"
            )
            .unwrap_err()
            .contains("old-format")
        );
        let lbp = TINY.replace("HAAR", "LBP");
        assert!(
            Cascade::parse(&lbp)
                .unwrap_err()
                .contains("only BOOST/HAAR")
        );
        let outside = TINY.replace("2 0 2 4 -1.", "3 0 2 4 -1.");
        assert!(
            Cascade::parse(&outside)
                .unwrap_err()
                .contains("leaves the window")
        );
        let dangling = TINY.replace("0 -1 0 -0.1", "0 -1 5 -0.1");
        assert!(
            Cascade::parse(&dangling)
                .unwrap_err()
                .contains("missing feature")
        );
    }
}
