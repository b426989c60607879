//! MP4 files made from stored footage without passing the video through memory: the store keeps
//! each frame as an MP4 sample already (AVCC), so the `mdat` box is the sample files' own byte
//! ranges, copied in the kernel (`copy_file_range`), and the `moov` box is built from the index
//! and the files' 4-byte length prefixes. Each sample is its own chunk, so the length prefixes
//! between samples stay in `mdat` as unreferenced bytes (4 per frame). `moov` comes first, so
//! browsers can start playing before the whole file has arrived.
//!
//! The file's SHA-256 (for the manifest) is computed on a second thread reading the same
//! ranges while the kernel copies them.
//!
//! The boxes are written here (ISO/IEC 14496-12 and -15) because the `mp4` crate writes only
//! whole samples through its own writer and keeps its box types private.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use veil_core::{Error, ErrorKind};
use veil_media::h264::Openh264Decoder;
use veil_media::h264::annexb::avcc_to_annexb;
use veil_store::SampleRef;

/// MP4 timescale: milliseconds, the store's resolution.
pub const TIMESCALE: u32 = 1000;

/// Consecutive samples of one sample file.
pub struct Piece {
    pub path: PathBuf,
    pub samples: Vec<SampleRef>,
}

impl Piece {
    /// The byte range the piece occupies in its file: first sample to the end of the last.
    fn range(&self) -> (u64, u64) {
        let (first, last) = (&self.samples[0], &self.samples[self.samples.len() - 1]);
        (first.offset, last.offset + last.size as u64)
    }
}

/// What was written, for the manifest.
pub struct Written {
    pub sha256: String,
    pub bytes: u64,
    pub frames: u64,
    pub first_ms: i64,
    pub end_ms: i64,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| {
        let kind = if e.raw_os_error() == Some(28) {
            ErrorKind::ResourceExhausted
        } else {
            ErrorKind::Internal
        };
        Error::wrap(kind, what, e)
    }
}

/// The NAL units of an AVCC sample.
fn avcc_nals(sample: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let len = u32::from_be_bytes(sample.get(pos..pos + 4)?.try_into().ok()?) as usize;
        let nal = sample.get(pos + 4..pos + 4 + len)?;
        pos += 4 + len;
        Some(nal)
    })
}

/// What the sample description needs.
struct StreamConfig {
    width: u16,
    height: u16,
    sps: Vec<u8>,
    pps: Vec<u8>,
}

/// SPS, PPS and picture size from the first (key)frame.
fn stream_config(first: &[u8], path: &Path) -> Result<StreamConfig, Error> {
    let (mut sps, mut pps) = (None, None);
    for nal in avcc_nals(first) {
        match nal.first().map(|b| b & 0x1f) {
            Some(7) => sps = Some(nal.to_vec()),
            Some(8) => pps = Some(nal.to_vec()),
            _ => {}
        }
    }
    let (Some(sps), Some(pps)) = (sps, pps) else {
        return Err(Error::internal(format!(
            "{}: the first keyframe carries no SPS/PPS",
            path.display()
        )));
    };
    if sps.len() < 4 || sps.len() > u16::MAX as usize || pps.len() > u16::MAX as usize {
        return Err(Error::internal(format!(
            "{}: the first keyframe's SPS/PPS are malformed",
            path.display()
        )));
    }
    let mut annexb = Vec::with_capacity(first.len() + 16);
    avcc_to_annexb(first, 4, &mut annexb)
        .map_err(|e| Error::internal(format!("{}: damaged first frame: {e}", path.display())))?;
    let mut decoder = Openh264Decoder::new()?;
    let picture = match decoder.decode(&annexb)? {
        Some(p) => p,
        None => decoder.flush()?.into_iter().next().ok_or_else(|| {
            Error::internal(format!(
                "{}: the first keyframe does not decode",
                path.display()
            ))
        })?,
    };
    Ok(StreamConfig {
        width: picture.width() as u16,
        height: picture.height() as u16,
        sps,
        pps,
    })
}

/// Serializes nested boxes: `open` writes a header with a size to fill in, `close` fills it.
#[derive(Default)]
struct Boxes(Vec<u8>);

impl Boxes {
    fn open(&mut self, kind: &[u8; 4]) -> usize {
        let at = self.0.len();
        self.0.extend_from_slice(&[0, 0, 0, 0]);
        self.0.extend_from_slice(kind);
        at
    }

    /// A full box: header, then version and flags.
    fn open_full(&mut self, kind: &[u8; 4], version: u8, flags: u32) -> usize {
        let at = self.open(kind);
        self.u32(((version as u32) << 24) | (flags & 0xff_ffff));
        at
    }

    fn close(&mut self, at: usize) {
        let size = (self.0.len() - at) as u32;
        self.0[at..at + 4].copy_from_slice(&size.to_be_bytes());
    }

    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn zeros(&mut self, n: usize) {
        self.0.resize(self.0.len() + n, 0);
    }
    /// The identity transform of `mvhd` and `tkhd`.
    fn matrix(&mut self) {
        for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            self.u32(v);
        }
    }
    /// A duration-carrying header's times: version 1 (64-bit) only when needed.
    fn times(&mut self, wide: bool, middle: &[u32], duration: u64) {
        if wide {
            self.u64(0);
            self.u64(0);
        } else {
            self.u32(0);
            self.u32(0);
        }
        for &m in middle {
            self.u32(m);
        }
        if wide {
            self.u64(duration);
        } else {
            self.u32(duration as u32);
        }
    }
}

fn ftyp() -> Vec<u8> {
    let mut b = Boxes::default();
    let at = b.open(b"ftyp");
    b.bytes(b"isom");
    b.u32(512);
    for brand in [b"isom", b"iso2", b"avc1", b"mp41"] {
        b.bytes(brand);
    }
    b.close(at);
    b.0
}

/// The `moov` box for `samples`, sample `i` at byte `base + relative[i]` of the file.
fn moov(
    config: &StreamConfig,
    samples: &[SampleRef],
    relative: &[u64],
    base: u64,
    last_duration: u32,
    wide_offsets: bool,
) -> Vec<u8> {
    let mut deltas = Vec::with_capacity(samples.len());
    for (i, s) in samples.iter().enumerate() {
        deltas.push(match samples.get(i + 1) {
            Some(next) => (next.wall_ms - s.wall_ms).max(1) as u32,
            None => last_duration.max(1),
        });
    }
    let duration: u64 = deltas.iter().map(|&d| d as u64).sum();
    let wide_time = duration > u32::MAX as u64;
    let version = u8::from(wide_time);
    let mut b = Boxes::default();
    let moov = b.open(b"moov");
    let mvhd = b.open_full(b"mvhd", version, 0);
    b.times(wide_time, &[TIMESCALE], duration);
    b.u32(0x0001_0000); // rate 1.0
    b.u16(0x0100); // volume 1.0
    b.zeros(10);
    b.matrix();
    b.zeros(24);
    b.u32(2); // next track id
    b.close(mvhd);
    let trak = b.open(b"trak");
    let tkhd = b.open_full(b"tkhd", version, 0x3); // enabled, in movie
    b.times(wide_time, &[1, 0], duration); // track 1, reserved
    b.zeros(8);
    b.u16(0); // layer
    b.u16(0); // alternate group
    b.u16(0); // volume: video has none
    b.u16(0);
    b.matrix();
    b.u32((config.width as u32) << 16);
    b.u32((config.height as u32) << 16);
    b.close(tkhd);
    let mdia = b.open(b"mdia");
    let mdhd = b.open_full(b"mdhd", version, 0);
    b.times(wide_time, &[TIMESCALE], duration);
    b.u16(0x55c4); // language "und"
    b.u16(0);
    b.close(mdhd);
    let hdlr = b.open_full(b"hdlr", 0, 0);
    b.u32(0);
    b.bytes(b"vide");
    b.zeros(12);
    b.bytes(b"VideoHandler\0");
    b.close(hdlr);
    let minf = b.open(b"minf");
    let vmhd = b.open_full(b"vmhd", 0, 1);
    b.zeros(8);
    b.close(vmhd);
    let dinf = b.open(b"dinf");
    let dref = b.open_full(b"dref", 0, 0);
    b.u32(1);
    let url = b.open_full(b"url ", 0, 1); // the media is in this file
    b.close(url);
    b.close(dref);
    b.close(dinf);
    let stbl = b.open(b"stbl");
    let stsd = b.open_full(b"stsd", 0, 0);
    b.u32(1);
    let avc1 = b.open(b"avc1");
    b.zeros(6);
    b.u16(1); // data reference index
    b.zeros(16);
    b.u16(config.width);
    b.u16(config.height);
    b.u32(0x0048_0000); // 72 dpi
    b.u32(0x0048_0000);
    b.u32(0);
    b.u16(1); // frame count
    b.zeros(32); // compressor name
    b.u16(0x0018); // depth
    b.u16(0xffff);
    let avcc = b.open(b"avcC");
    b.u8(1);
    b.bytes(&config.sps[1..4]); // profile, compatibility, level
    b.u8(0xff); // 4-byte NAL lengths
    b.u8(0xe1); // one SPS
    b.u16(config.sps.len() as u16);
    b.bytes(&config.sps);
    b.u8(1); // one PPS
    b.u16(config.pps.len() as u16);
    b.bytes(&config.pps);
    b.close(avcc);
    b.close(avc1);
    b.close(stsd);
    let stts = b.open_full(b"stts", 0, 0);
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &d in &deltas {
        match runs.last_mut() {
            Some((n, delta)) if *delta == d => *n += 1,
            _ => runs.push((1, d)),
        }
    }
    b.u32(runs.len() as u32);
    for (n, d) in runs {
        b.u32(n);
        b.u32(d);
    }
    b.close(stts);
    let stss = b.open_full(b"stss", 0, 0);
    let keys: Vec<u32> = (0..samples.len())
        .filter(|&i| samples[i].keyframe)
        .map(|i| i as u32 + 1)
        .collect();
    b.u32(keys.len() as u32);
    keys.iter().for_each(|&k| b.u32(k));
    b.close(stss);
    let stsc = b.open_full(b"stsc", 0, 0);
    b.u32(1);
    b.u32(1); // from chunk 1 on,
    b.u32(1); // one sample per chunk,
    b.u32(1); // described by entry 1
    b.close(stsc);
    let stsz = b.open_full(b"stsz", 0, 0);
    b.u32(0);
    b.u32(samples.len() as u32);
    samples.iter().for_each(|s| b.u32(s.size));
    b.close(stsz);
    if wide_offsets {
        let co64 = b.open_full(b"co64", 0, 0);
        b.u32(relative.len() as u32);
        relative.iter().for_each(|r| b.u64(base + r));
        b.close(co64);
    } else {
        let stco = b.open_full(b"stco", 0, 0);
        b.u32(relative.len() as u32);
        relative.iter().for_each(|r| b.u32((base + r) as u32));
        b.close(stco);
    }
    for at in [stbl, minf, mdia, trak, moov] {
        b.close(at);
    }
    b.0
}

/// Writes `pieces` (all from AVCC sample files, the first sample a keyframe) as one MP4 file at
/// `path`; the last frame lasts `last_duration` ms. The file is synced before this returns.
pub fn write_mp4(path: &Path, pieces: &[Piece], last_duration: u32) -> Result<Written, Error> {
    let pieces: Vec<&Piece> = pieces.iter().filter(|p| !p.samples.is_empty()).collect();
    let Some(first_piece) = pieces.first() else {
        return Err(Error::internal("an MP4 file needs at least one frame"));
    };
    let first = first_piece.samples[0];
    let mut first_bytes = vec![0u8; first.size as usize];
    File::open(&first_piece.path)
        .and_then(|f| f.read_exact_at(&mut first_bytes, first.offset))
        .map_err(io(format!("cannot read {}", first_piece.path.display())))?;
    let config = stream_config(&first_bytes, path)?;

    // Sample offsets relative to the start of mdat's payload.
    let mut relative = Vec::new();
    let mut payload = 0u64;
    for p in &pieces {
        let (start, end) = p.range();
        relative.extend(p.samples.iter().map(|s| payload + (s.offset - start)));
        payload += end - start;
    }
    let samples: Vec<SampleRef> = pieces
        .iter()
        .flat_map(|p| p.samples.iter().copied())
        .collect();
    let ftyp = ftyp();
    let large_mdat = payload + 8 > u32::MAX as u64;
    let mdat_header = if large_mdat { 16 } else { 8 };
    // 32-bit offsets while they fit (every player reads them), 64-bit beyond 4 GiB. The box
    // sizes do not depend on the offsets' values, so one dry run gives the final layout.
    let narrow = moov(&config, &samples, &relative, 0, last_duration, false).len() as u64;
    let wide = ftyp.len() as u64 + narrow + mdat_header + payload > u32::MAX as u64;
    let moov_len = if wide {
        moov(&config, &samples, &relative, 0, last_duration, true).len() as u64
    } else {
        narrow
    };
    let base = ftyp.len() as u64 + moov_len + mdat_header;
    let mut header = ftyp;
    header.extend_from_slice(&moov(
        &config,
        &samples,
        &relative,
        base,
        last_duration,
        wide,
    ));
    if large_mdat {
        header.extend_from_slice(&1u32.to_be_bytes());
        header.extend_from_slice(b"mdat");
        header.extend_from_slice(&(payload + 16).to_be_bytes());
    } else {
        header.extend_from_slice(&((payload + 8) as u32).to_be_bytes());
        header.extend_from_slice(b"mdat");
    }

    let mut out = File::create(path).map_err(io(format!("cannot create {}", path.display())))?;
    let ranges: Vec<(&Path, u64, u64)> = pieces
        .iter()
        .map(|p| {
            let (start, end) = p.range();
            (p.path.as_path(), start, end - start)
        })
        .collect();
    let sha = std::thread::scope(|scope| -> Result<String, Error> {
        let hasher = scope.spawn(|| hash_ranges(&header, &ranges));
        out.write_all(&header)
            .map_err(io(format!("cannot write {}", path.display())))?;
        let mut written = header.len() as u64;
        for &(src, start, len) in &ranges {
            let mut file = File::open(src).map_err(io(format!("cannot read {}", src.display())))?;
            file.seek(SeekFrom::Start(start))
                .map_err(io(format!("cannot read {}", src.display())))?;
            // File to file: the standard library copies in the kernel (copy_file_range).
            let copied = std::io::copy(&mut (&file).take(len), &mut out)
                .map_err(io(format!("cannot write {}", path.display())))?;
            if copied != len {
                return Err(Error::internal(format!(
                    "{} ended early: the store changed while exporting",
                    src.display()
                )));
            }
            start_writeback(&out, written, len);
            written += len;
        }
        // The disk catches up while the hash is still being computed.
        out.sync_all()
            .map_err(io(format!("cannot sync {}", path.display())))?;
        hasher
            .join()
            .map_err(|_| Error::internal("the hashing thread crashed"))?
    })?;
    let last = samples[samples.len() - 1];
    Ok(Written {
        sha256: sha,
        bytes: header.len() as u64 + payload,
        frames: samples.len() as u64,
        first_ms: first.wall_ms,
        end_ms: last.wall_ms + last_duration.max(1) as i64,
    })
}

use std::io::Read;

/// Asks the kernel to start writing a range to disk now, without waiting for it, so the final
/// sync has little left to do. Only a hint: errors surface at that sync.
#[allow(unsafe_code)]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on an open descriptor; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// SHA-256 of `header` followed by the file ranges.
fn hash_ranges(header: &[u8], ranges: &[(&Path, u64, u64)]) -> Result<String, Error> {
    let mut h = Sha256::new();
    h.update(header);
    let mut buf = vec![0u8; 1 << 20];
    for &(src, start, len) in ranges {
        let file = File::open(src).map_err(io(format!("cannot read {}", src.display())))?;
        let mut at = 0u64;
        while at < len {
            let want = buf.len().min((len - at) as usize);
            let n = file
                .read_at(&mut buf[..want], start + at)
                .map_err(io(format!("cannot read {}", src.display())))?;
            if n == 0 {
                return Err(Error::internal(format!("{} ended early", src.display())));
            }
            h.update(&buf[..n]);
            at += n as u64;
        }
    }
    Ok(hex::encode(h.finalize()))
}
