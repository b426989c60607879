// Geometry of privacy masks drawn on a picture: points relative to the frame (0..1), and the
// same simple-polygon rule the device applies (edges must not cross), so the page can say
// what is wrong before sending.

export type Pt = [number, number];

/** A pointer position inside an element of width w and height h, as frame coordinates. */
export function relative(x: number, y: number, w: number, h: number): Pt {
  const c = (v: number) => Math.min(1, Math.max(0, v));
  return [Math.round(c(x / w) * 10000) / 10000, Math.round(c(y / h) * 10000) / 10000];
}

function orient(a: Pt, b: Pt, c: Pt): number {
  const v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
  return Math.abs(v) < 1e-12 ? 0 : Math.sign(v);
}

function onSegment(a: Pt, b: Pt, p: Pt): boolean {
  return Math.min(a[0], b[0]) <= p[0] && p[0] <= Math.max(a[0], b[0]) && Math.min(a[1], b[1]) <= p[1] && p[1] <= Math.max(a[1], b[1]);
}

export function segmentsIntersect(p1: Pt, p2: Pt, q1: Pt, q2: Pt): boolean {
  const d1 = orient(q1, q2, p1), d2 = orient(q1, q2, p2), d3 = orient(p1, p2, q1), d4 = orient(p1, p2, q2);
  if (d1 !== d2 && d3 !== d4 && d1 !== 0 && d2 !== 0 && d3 !== 0 && d4 !== 0) return true;
  return (d1 === 0 && onSegment(q1, q2, p1)) || (d2 === 0 && onSegment(q1, q2, p2)) || (d3 === 0 && onSegment(p1, p2, q1)) || (d4 === 0 && onSegment(p1, p2, q2));
}

/** Why the polygon would be refused, or null when it is a valid mask. */
export function problem(points: Pt[]): string | null {
  const n = points.length;
  if (n < 3) return "a mask needs at least 3 points";
  if (n > 64) return "a mask has at most 64 points";
  for (let a = 0; a < n; a++) {
    for (let b = a + 1; b < n; b++) {
      if (b === a + 1 || (a === 0 && b === n - 1)) continue;
      if (segmentsIntersect(points[a], points[(a + 1) % n], points[b], points[(b + 1) % n])) return "its edges cross; draw the outline without crossing";
    }
  }
  let area = 0;
  for (let i = 0; i < n; i++) {
    const [x1, y1] = points[i], [x2, y2] = points[(i + 1) % n];
    area += x1 * y2 - x2 * y1;
  }
  if (Math.abs(area) < 1e-9) return "the mask has no area";
  return null;
}
