//! H.264 byte-stream (Annex B) helpers: find NAL units, convert from the length-prefixed form
//! MP4 and RTSP depacketizers give, and group NAL units into access units.

/// NAL unit types this code cares about (ITU-T H.264, table 7-1).
pub mod nal_type {
    pub const NON_IDR_SLICE: u8 = 1;
    pub const IDR_SLICE: u8 = 5;
    pub const SEI: u8 = 6;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const AUD: u8 = 9;
}

pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The NAL units of an Annex-B buffer, without their start codes.
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = find_start(data, 0).map(|(_, after)| after);
    std::iter::from_fn(move || {
        let start = pos?;
        match find_start(data, start) {
            Some((code_at, after)) => {
                pos = Some(after);
                Some(trim_trailing_zeros(&data[start..code_at]))
            }
            None => {
                pos = None;
                Some(&data[start..])
            }
        }
    })
    .filter(|n| !n.is_empty())
}

/// (index of the start code, index after it) of the first 3-byte start code at or after `from`.
fn find_start(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 3 <= data.len() {
        if data[i + 2] > 1 {
            i += 3;
        } else if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            return Some((i, i + 3));
        } else {
            i += 1;
        }
    }
    None
}

/// A four-byte start code leaves a zero at the end of the previous unit.
fn trim_trailing_zeros(nal: &[u8]) -> &[u8] {
    let end = nal.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    &nal[..end]
}

pub fn nal_unit_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Whether an access unit holds an IDR slice (a point a decoder can start from).
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    nal_units(access_unit).any(|n| nal_unit_type(n) == nal_type::IDR_SLICE)
}

/// Appends length-prefixed NAL units (AVCC, `length_size` bytes of big-endian length each) to
/// `out` as Annex B. Fails on a length that runs past the buffer.
pub fn avcc_to_annexb(data: &[u8], length_size: usize, out: &mut Vec<u8>) -> Result<(), String> {
    if !(1..=4).contains(&length_size) {
        return Err(format!("NAL length size {length_size} is not 1 to 4"));
    }
    let mut pos = 0;
    while pos < data.len() {
        if pos + length_size > data.len() {
            return Err(format!(
                "truncated NAL length at byte {pos} of {}",
                data.len()
            ));
        }
        let len = data[pos..pos + length_size]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        pos += length_size;
        if len == 0 || pos + len > data.len() {
            return Err(format!(
                "NAL of {len} bytes at byte {pos} runs past the {}-byte sample",
                data.len()
            ));
        }
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(&data[pos..pos + len]);
        pos += len;
    }
    Ok(())
}

/// Appends an Annex B access unit to `out` as AVCC (each NAL unit behind its 4-byte
/// big-endian length), the form MP4 samples take. Parameter sets stay in band.
pub fn annexb_to_avcc(annexb: &[u8], out: &mut Vec<u8>) {
    for nal in nal_units(annexb) {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
}

/// SPS and PPS from an `avcC` box body (ISO/IEC 14496-15 5.2.4.1), as Annex B, and the NAL
/// length size the samples use.
pub fn parse_avcc_config(avcc: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let bad = || "avcC record is truncated or malformed".to_string();
    if avcc.len() < 7 || avcc[0] != 1 {
        return Err(bad());
    }
    let length_size = (avcc[4] & 0x03) as usize + 1;
    let mut out = Vec::new();
    let mut pos = 5;
    let num_sps = (avcc[pos] & 0x1f) as usize;
    pos += 1;
    for round in 0..2 {
        let count = if round == 0 {
            num_sps
        } else {
            let c = *avcc.get(pos).ok_or_else(bad)? as usize;
            pos += 1;
            c
        };
        for _ in 0..count {
            let len_bytes = avcc.get(pos..pos + 2).ok_or_else(bad)?;
            let len = u16::from_be_bytes([len_bytes[0], len_bytes[1]]) as usize;
            pos += 2;
            let nal = avcc.get(pos..pos + len).ok_or_else(bad)?;
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
            pos += len;
        }
    }
    Ok((out, length_size))
}

/// Splits an Annex-B elementary stream into access units: a new one starts at an AUD, or at
/// SPS/PPS/SEI or a slice with `first_mb_in_slice == 0` after a slice of the previous one.
pub struct AccessUnitSplitter {
    pending: Vec<u8>,
    has_slice: bool,
}

impl Default for AccessUnitSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl AccessUnitSplitter {
    pub fn new() -> Self {
        AccessUnitSplitter {
            pending: Vec::new(),
            has_slice: false,
        }
    }

    /// Feeds one NAL unit; returns the previous access unit when this NAL starts a new one.
    pub fn push(&mut self, nal: &[u8]) -> Option<Vec<u8>> {
        let t = nal_unit_type(nal);
        let is_slice = t == nal_type::NON_IDR_SLICE || t == nal_type::IDR_SLICE;
        // first_mb_in_slice is ue(v) at the start of the slice header: a leading 1 bit means 0.
        let first_slice = is_slice && nal.get(1).is_some_and(|b| b & 0x80 != 0);
        let starts_new = self.has_slice
            && (first_slice
                || matches!(
                    t,
                    nal_type::AUD | nal_type::SPS | nal_type::PPS | nal_type::SEI
                ));
        let done = if starts_new {
            self.has_slice = false;
            Some(std::mem::take(&mut self.pending))
        } else {
            None
        };
        self.pending.extend_from_slice(&START_CODE);
        self.pending.extend_from_slice(nal);
        self.has_slice |= is_slice;
        done
    }

    /// The last access unit, at the end of the stream.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        self.has_slice = false;
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nal_units_with_3_and_4_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let nals: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(
            nals,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]
        );
        assert!(is_keyframe(&data));
        assert_eq!(nal_units(&[1, 2, 3]).count(), 0);
        assert_eq!(nal_units(&[]).count(), 0);
    }

    #[test]
    fn avcc_samples_become_annexb() {
        let mut out = Vec::new();
        avcc_to_annexb(&[0, 0, 0, 2, 0x65, 9, 0, 0, 0, 1, 0x41], 4, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x65, 9, 0, 0, 0, 1, 0x41]);
        let err = avcc_to_annexb(&[0, 0, 0, 9, 0x65], 4, &mut Vec::new()).unwrap_err();
        assert!(err.contains("runs past"), "{err}");
        assert!(avcc_to_annexb(&[0, 0], 4, &mut Vec::new()).is_err());
    }

    #[test]
    fn avcc_config_yields_parameter_sets() {
        let avcc = [
            1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, 2, 0x67, 1, 1, 0, 2, 0x68, 2,
        ];
        let (ps, len) = parse_avcc_config(&avcc).unwrap();
        assert_eq!(len, 4);
        assert_eq!(ps, [0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2]);
        assert!(parse_avcc_config(&avcc[..9]).is_err());
        assert!(parse_avcc_config(&[]).is_err());
    }

    #[test]
    fn splits_access_units_at_parameter_sets_and_first_slices() {
        let mut s = AccessUnitSplitter::new();
        let units: Vec<&[u8]> = vec![
            &[0x67, 0],    // SPS
            &[0x68, 0],    // PPS
            &[0x65, 0x80], // IDR, first slice
            &[0x65, 0x20], // IDR, second slice of the same picture
            &[0x41, 0x80], // P, first slice: new AU
            &[0x41, 0x80], // P: new AU
        ];
        let mut aus: Vec<Vec<u8>> = units.into_iter().filter_map(|n| s.push(n)).collect();
        aus.extend(s.finish());
        assert_eq!(aus.len(), 3);
        assert_eq!(nal_units(&aus[0]).count(), 4);
        assert!(is_keyframe(&aus[0]));
        assert!(!is_keyframe(&aus[1]));
    }
}
