//! Plane geometry in normalized frame coordinates (0.0 = left/top, 1.0 = right/bottom), so a
//! privacy mask drawn on a thumbnail fits the camera at any resolution.

use serde::{Deserialize, Serialize};

/// A point in normalized coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

/// Why a polygon is not usable as a mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolygonError {
    TooFewPoints(usize),
    TooManyPoints(usize),
    OutOfRange { index: usize },
    SelfIntersecting { a: usize, b: usize },
    Degenerate,
}

impl std::fmt::Display for PolygonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolygonError::TooFewPoints(n) => write!(f, "needs at least 3 points, has {n}"),
            PolygonError::TooManyPoints(n) => {
                write!(f, "has {n} points, at most {MAX_POINTS} are allowed")
            }
            PolygonError::OutOfRange { index } => {
                write!(
                    f,
                    "point {index} is outside the frame: coordinates go from 0.0 to 1.0"
                )
            }
            PolygonError::SelfIntersecting { a, b } => write!(
                f,
                "edges {a} and {b} cross: draw the outline without crossing itself"
            ),
            PolygonError::Degenerate => write!(f, "has no area (all points on a line)"),
        }
    }
}

pub const MAX_POINTS: usize = 64;

/// Checks that `points` form a simple polygon inside the frame.
pub fn check_polygon(points: &[Point]) -> Result<(), PolygonError> {
    let n = points.len();
    if n < 3 {
        return Err(PolygonError::TooFewPoints(n));
    }
    if n > MAX_POINTS {
        return Err(PolygonError::TooManyPoints(n));
    }
    if let Some(index) = points
        .iter()
        .position(|p| !(0.0..=1.0).contains(&p.x) || !(0.0..=1.0).contains(&p.y))
    {
        return Err(PolygonError::OutOfRange { index });
    }
    let edge = |i: usize| (points[i], points[(i + 1) % n]);
    for a in 0..n {
        for b in a + 1..n {
            // Neighbouring edges share a vertex; that is not a crossing.
            if b == a + 1 || (a == 0 && b == n - 1) {
                continue;
            }
            let (p1, p2) = edge(a);
            let (q1, q2) = edge(b);
            if segments_intersect(p1, p2, q1, q2) {
                return Err(PolygonError::SelfIntersecting { a, b });
            }
        }
    }
    if area(points).abs() < 1e-9 {
        return Err(PolygonError::Degenerate);
    }
    Ok(())
}

/// Signed area (shoelace formula).
pub fn area(points: &[Point]) -> f64 {
    let n = points.len();
    (0..n)
        .map(|i| {
            let (p, q) = (points[i], points[(i + 1) % n]);
            p.x * q.y - q.x * p.y
        })
        .sum::<f64>()
        / 2.0
}

fn orientation(a: Point, b: Point, c: Point) -> f64 {
    (b.x - a.x) * (c.y - a.y) - (b.y - a.y) * (c.x - a.x)
}

fn on_segment(a: Point, b: Point, p: Point) -> bool {
    p.x >= a.x.min(b.x) && p.x <= a.x.max(b.x) && p.y >= a.y.min(b.y) && p.y <= a.y.max(b.y)
}

fn segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool {
    let (d1, d2) = (orientation(q1, q2, p1), orientation(q1, q2, p2));
    let (d3, d4) = (orientation(p1, p2, q1), orientation(p1, p2, q2));
    if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0))
        && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0))
    {
        return true;
    }
    (d1 == 0.0 && on_segment(q1, q2, p1))
        || (d2 == 0.0 && on_segment(q1, q2, p2))
        || (d3 == 0.0 && on_segment(p1, p2, q1))
        || (d4 == 0.0 && on_segment(p1, p2, q2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poly(coords: &[(f64, f64)]) -> Vec<Point> {
        coords.iter().map(|&(x, y)| Point { x, y }).collect()
    }

    #[test]
    fn accepts_simple_polygons() {
        check_polygon(&poly(&[(0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9)])).unwrap();
        check_polygon(&poly(&[(0.0, 0.0), (1.0, 0.0), (0.5, 1.0)])).unwrap();
        // Concave but simple.
        check_polygon(&poly(&[
            (0.1, 0.1),
            (0.9, 0.1),
            (0.5, 0.4),
            (0.9, 0.9),
            (0.1, 0.9),
        ]))
        .unwrap();
    }

    #[test]
    fn rejects_bad_polygons_with_reasons() {
        assert_eq!(
            check_polygon(&poly(&[(0.1, 0.1), (0.2, 0.2)])),
            Err(PolygonError::TooFewPoints(2))
        );
        assert_eq!(
            check_polygon(&poly(&[(0.1, 0.1), (1.2, 0.1), (0.5, 0.5)])),
            Err(PolygonError::OutOfRange { index: 1 })
        );
        // A bow tie.
        let e =
            check_polygon(&poly(&[(0.1, 0.1), (0.9, 0.9), (0.9, 0.1), (0.1, 0.9)])).unwrap_err();
        assert!(matches!(e, PolygonError::SelfIntersecting { .. }), "{e:?}");
        assert!(e.to_string().contains("cross"));
        assert_eq!(
            check_polygon(&poly(&[(0.1, 0.1), (0.5, 0.5), (0.9, 0.9)])),
            Err(PolygonError::Degenerate)
        );
        let many: Vec<Point> = (0..65)
            .map(|i| {
                let a = i as f64 / 65.0 * std::f64::consts::TAU;
                Point {
                    x: 0.5 + 0.4 * a.cos(),
                    y: 0.5 + 0.4 * a.sin(),
                }
            })
            .collect();
        assert_eq!(check_polygon(&many), Err(PolygonError::TooManyPoints(65)));
    }
}
