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

/// Frame durations in milliseconds, as `(duration, run length)` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timing {
    runs: Vec<(u64, u64)>,
}

impl Timing {
    pub fn push(&mut self, duration_ms: u64) {
        match self.runs.last_mut() {
            Some((d, n)) if *d == duration_ms => *n += 1,
            _ => self.runs.push((duration_ms, 1)),
        }
    }

    pub fn frames(&self) -> u64 {
        self.runs.iter().map(|r| r.1).sum()
    }

    /// The start offset (ms from the segment start) of every frame, and the end offset.
    pub fn offsets(&self) -> impl Iterator<Item = u64> + '_ {
        let mut at = 0;
        std::iter::once(0).chain(self.runs.iter().flat_map(move |&(d, n)| {
            (0..n).map(move |_| {
                at += d;
                at
            })
        }))
    }

    /// The first `frames` durations.
    pub fn truncated(&self, frames: u64) -> Timing {
        let mut left = frames;
        let mut runs = Vec::new();
        for &(d, n) in &self.runs {
            if left == 0 {
                break;
            }
            runs.push((d, n.min(left)));
            left -= n.min(left);
        }
        Timing { runs }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.runs.len() * 3);
        for &(d, n) in &self.runs {
            put_varint(&mut out, d);
            put_varint(&mut out, n);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Timing> {
        let mut pos = 0;
        let mut runs = Vec::new();
        while pos < bytes.len() {
            runs.push((get_varint(bytes, &mut pos)?, get_varint(bytes, &mut pos)?));
        }
        Some(Timing { runs })
    }
}

/// Where the keyframes are: `(frame number, byte offset)` pairs in increasing order.
pub fn encode_keyframes(keyframes: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(keyframes.len() * 4);
    let (mut last_frame, mut last_offset) = (0, 0);
    for &(f, o) in keyframes {
        put_varint(&mut out, f - last_frame);
        put_varint(&mut out, o - last_offset);
        (last_frame, last_offset) = (f, o);
    }
    out
}

pub fn decode_keyframes(bytes: &[u8]) -> Option<Vec<(u64, u64)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    let (mut f, mut o) = (0u64, 0u64);
    while pos < bytes.len() {
        f = f.checked_add(get_varint(bytes, &mut pos)?)?;
        o = o.checked_add(get_varint(bytes, &mut pos)?)?;
        out.push((f, o));
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
        let mut t = Timing::default();
        for _ in 0..1800 {
            t.push(33);
        }
        assert!(t.encode().len() <= 4, "{}", t.encode().len());
        assert_eq!(Timing::decode(&t.encode()).unwrap(), t);
        assert_eq!(t.frames(), 1800);
        assert_eq!(t.offsets().nth(2), Some(66));
        assert_eq!(t.truncated(10).frames(), 10);
        let k: Vec<(u64, u64)> = (0..30).map(|i| (i * 60, i * 1_000_000)).collect();
        let enc = encode_keyframes(&k);
        assert!(enc.len() <= 30 * 5, "{}", enc.len());
        assert_eq!(decode_keyframes(&enc).unwrap(), k);
    }
}
