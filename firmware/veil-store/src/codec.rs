//! Compact per-segment frame index: frame durations run-length encoded, keyframes as deltas,
//! all in LEB128 varints. A constant-rate minute of video indexes in a few dozen bytes, which
//! keeps a camera-month of index under 10 MB.

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads a varint at `*pos`, advancing it; `None` when the bytes end or overflow.
pub fn get_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// How far (ms) a stored frame time may be from the one written: ms-rounded timestamps of
/// a 30 fps camera (33, 33, 34, ...) then fold into one run instead of one per frame.
pub const TIMING_TOLERANCE_MS: u64 = 2;

/// Longest run: checking a frame against its run costs one step per frame already in it, so
/// runs are bounded to keep a long segment's writer cheap per frame (a few bytes per run).
const MAX_RUN: u64 = 512;

/// Frame durations in milliseconds, as runs `(count, total)` of `count` durations spread
/// evenly over `total` ms (frame `k` of a run ends at `round(k * total / count)`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timing {
    runs: Vec<(u64, u64)>,
    /// The true ends (from the run's start) of the frames in the last run, while writing.
    actual: Vec<u64>,
}

fn spread(k: u64, total: u64, count: u64) -> u64 {
    (2 * k * total + count) / (2 * count)
}

impl Timing {
    pub fn push(&mut self, duration_ms: u64) {
        if let Some(&(count, total)) = self.runs.last()
            && self.actual.len() as u64 == count
            && count < MAX_RUN
        {
            let (c, t) = (count + 1, total + duration_ms);
            let fits = self
                .actual
                .iter()
                .chain(std::iter::once(&t))
                .enumerate()
                .all(|(k, &real)| spread(k as u64 + 1, t, c).abs_diff(real) <= TIMING_TOLERANCE_MS);
            if fits {
                *self.runs.last_mut().expect("checked") = (c, t);
                self.actual.push(t);
                return;
            }
        }
        self.runs.push((1, duration_ms));
        self.actual = vec![duration_ms];
    }

    pub fn frames(&self) -> u64 {
        self.runs.iter().map(|r| r.0).sum()
    }

    /// The start offset (ms from the segment start) of every frame, and the end offset.
    pub fn offsets(&self) -> impl Iterator<Item = u64> + '_ {
        let mut base = 0;
        std::iter::once(0).chain(self.runs.iter().flat_map(move |&(count, total)| {
            let start = base;
            base += total;
            (1..=count).map(move |k| start + spread(k, total, count))
        }))
    }

    /// The first `frames` durations.
    pub fn truncated(&self, frames: u64) -> Timing {
        let mut left = frames;
        let mut runs = Vec::new();
        for &(count, total) in &self.runs {
            if left == 0 {
                break;
            }
            let keep = count.min(left);
            runs.push((keep, spread(keep, total, count)));
            left -= keep;
        }
        Timing {
            runs,
            actual: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.runs.len() * 4);
        for &(count, total) in &self.runs {
            put_varint(&mut out, count);
            put_varint(&mut out, total);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Timing> {
        let mut pos = 0;
        let mut runs = Vec::new();
        while pos < bytes.len() {
            let count = get_varint(bytes, &mut pos)?;
            let total = get_varint(bytes, &mut pos)?;
            if count == 0 {
                return None;
            }
            runs.push((count, total));
        }
        Some(Timing {
            runs,
            actual: Vec::new(),
        })
    }
}

/// Which frames are keyframes, as varint deltas of their frame numbers (one byte each at a
/// keyframe every 2 s). Their byte offsets are not stored: a reader skips frame by frame through
/// the sample file's length prefixes, which costs little and halves the index.
pub fn encode_keyframes(keyframes: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(keyframes.len());
    let mut last = 0;
    for &f in keyframes {
        put_varint(&mut out, f - last);
        last = f;
    }
    out
}

pub fn decode_keyframes(bytes: &[u8]) -> Option<Vec<u64>> {
    let mut pos = 0;
    let mut out = Vec::new();
    let mut f = 0u64;
    while pos < bytes.len() {
        f = f.checked_add(get_varint(bytes, &mut pos)?)?;
        out.push(f);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut pos = 0;
            assert_eq!(get_varint(&b, &mut pos), Some(v));
            assert_eq!(pos, b.len());
        }
        assert_eq!(get_varint(&[0x80], &mut 0), None);
    }

    #[test]
    fn a_constant_rate_minute_is_a_few_bytes() {
        // 30 fps with ms-rounded timestamps: durations 33, 33, 34, ...
        let times: Vec<u64> = (0..=1800).map(|i| i * 1000 / 30).collect();
        let mut t = Timing::default();
        for w in times.windows(2) {
            t.push(w[1] - w[0]);
        }
        // Four runs of at most 512 frames, a few bytes each.
        assert!(t.encode().len() <= 24, "{}", t.encode().len());
        let back = Timing::decode(&t.encode()).unwrap();
        assert_eq!(back.frames(), 1800);
        for (got, want) in back.offsets().zip(&times) {
            assert!(
                got.abs_diff(*want) <= TIMING_TOLERANCE_MS,
                "{got} vs {want}"
            );
        }
        assert_eq!(back.truncated(10).frames(), 10);
        // A stall is kept exactly: it starts a new run.
        let mut j = Timing::default();
        for d in [40, 40, 40, 900, 40, 40] {
            j.push(d);
        }
        let o: Vec<u64> = j.offsets().collect();
        assert_eq!(o, vec![0, 40, 80, 120, 1020, 1060, 1100]);
        let k: Vec<u64> = (0..30).map(|i| i * 60).collect();
        let enc = encode_keyframes(&k);
        assert_eq!(enc.len(), 30);
        assert_eq!(decode_keyframes(&enc).unwrap(), k);
    }
}
