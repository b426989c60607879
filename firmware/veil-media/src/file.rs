//! Video files as cameras: MP4 (H.264), raw H.264 byte streams (Annex B) and Y4M, decoded to
//! I420, played at their frame rate, looped or once.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use veil_core::{Clock, Error, ErrorKind};

use crate::frame::{FramePool, PooledFrame};
use crate::h264::Openh264Decoder;
use crate::h264::annexb::{self, AccessUnitSplitter};
use crate::source::{Pacer, Source};

/// Raw H.264 files are read whole; larger ones should be MP4.
const MAX_ANNEXB_BYTES: u64 = 512 << 20;

#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Start again at the end (a camera), or end the stream (a one-off analysis).
    pub looped: bool,
    /// Frame rate for raw H.264, which carries none; MP4 and Y4M say their own.
    pub fps: Option<u32>,
    /// Pace at the file's rate (a camera) or deliver as fast as asked (benchmarks, analysis).
    pub realtime: bool,
}

enum Reader {
    Y4m {
        file: BufReader<File>,
        data_start: u64,
        frame_len: usize,
        pool: FramePool,
    },
    AnnexB {
        units: Vec<Vec<u8>>,
        next: usize,
        decoder: Openh264Decoder,
    },
    Mp4 {
        mp4: Box<mp4::Mp4Reader<BufReader<Budgeted>>>,
        track: u32,
        samples: u32,
        next: u32,
        length_size: usize,
        params: Vec<u8>,
        scratch: Vec<u8>,
        decoder: Openh264Decoder,
    },
}

pub struct FileSource {
    path: PathBuf,
    reader: Reader,
    /// Pictures the decoder released at the end of the file (B-frame reordering).
    flushed: std::collections::VecDeque<PooledFrame>,
    pacer: Pacer,
    fps: u32,
    looped: bool,
    frames_read: u64,
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("{}: {what}: {e}", path.display()),
    )
}

impl FileSource {
    pub fn open(
        path: &Path,
        options: &FileOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<FileSource, Error> {
        let mut file = File::open(path).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::Unavailable
            };
            Error::new(kind, format!("{}: cannot open: {e}", path.display()))
        })?;
        let mut head = [0u8; 12];
        let n = file
            .read(&mut head)
            .map_err(|e| io_err(path, "cannot read", e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io_err(path, "cannot seek", e))?;
        let head = &head[..n];
        let (reader, fps) = if head.starts_with(b"YUV4MPEG2 ") {
            open_y4m(path, file)?
        } else if head.len() >= 8 && &head[4..8] == b"ftyp" {
            open_mp4(path, file)?
        } else if head.starts_with(&[0, 0, 1]) || head.starts_with(&[0, 0, 0, 1]) {
            let fps = options.fps.unwrap_or(25);
            (open_annexb(path, file)?, fps)
        } else {
            return Err(Error::invalid_input(format!(
                "{}: not a supported video file: expected MP4 (H.264), raw H.264 (Annex B) or Y4M",
                path.display()
            )));
        };
        let fps = options.fps.unwrap_or(fps).clamp(1, 120);
        Ok(FileSource {
            path: path.to_path_buf(),
            reader,
            flushed: Default::default(),
            pacer: Pacer::new(clock, fps, options.realtime),
            fps,
            looped: options.looped,
            frames_read: 0,
        })
    }

    /// Reads the next picture in display order; `None` at the end of the file.
    fn read_picture(&mut self) -> Result<Option<PooledFrame>, Error> {
        if let Some(f) = self.flushed.pop_front() {
            return Ok(Some(f));
        }
        match self.read_coded()? {
            Some(f) => Ok(Some(f)),
            None => {
                if let Reader::AnnexB { decoder, .. } | Reader::Mp4 { decoder, .. } =
                    &mut self.reader
                {
                    self.flushed.extend(decoder.flush()?);
                }
                Ok(self.flushed.pop_front())
            }
        }
    }

    fn read_coded(&mut self) -> Result<Option<PooledFrame>, Error> {
        let path = &self.path;
        match &mut self.reader {
            Reader::Y4m {
                file,
                frame_len,
                pool,
                ..
            } => {
                let mut line = Vec::new();
                let n = file
                    .read_until(b'\n', &mut line)
                    .map_err(|e| io_err(path, "read", e))?;
                if n == 0 {
                    return Ok(None);
                }
                if !line.starts_with(b"FRAME") {
                    return Err(Error::invalid_input(format!(
                        "{}: Y4M frame header missing",
                        path.display()
                    )));
                }
                let mut frame = pool.get();
                match file.read_exact(&mut frame.data_mut()[..*frame_len]) {
                    Ok(()) => Ok(Some(frame)),
                    // A file cut short ends on its last whole frame.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
                    Err(e) => Err(io_err(path, "read", e)),
                }
            }
            Reader::AnnexB {
                units,
                next,
                decoder,
            } => {
                while *next < units.len() {
                    let unit = &units[*next];
                    *next += 1;
                    if let Some(frame) = decoder
                        .decode(unit)
                        .map_err(|e| e.context(path.display().to_string()))?
                    {
                        return Ok(Some(frame));
                    }
                }
                Ok(None)
            }
            Reader::Mp4 {
                mp4,
                track,
                samples,
                next,
                length_size,
                params,
                scratch,
                decoder,
            } => {
                while *next <= *samples {
                    let id = *next;
                    *next += 1;
                    let sample = mp4
                        .read_sample(*track, id)
                        .map_err(|e| io_err(path, &format!("sample {id}"), e))?;
                    let Some(sample) = sample else { continue };
                    scratch.clear();
                    if sample.is_sync {
                        scratch.extend_from_slice(params);
                    }
                    annexb::avcc_to_annexb(&sample.bytes, *length_size, scratch)
                        .map_err(|e| io_err(path, &format!("sample {id}"), e))?;
                    if let Some(frame) = decoder
                        .decode(scratch)
                        .map_err(|e| e.context(path.display().to_string()))?
                    {
                        return Ok(Some(frame));
                    }
                }
                Ok(None)
            }
        }
    }

    fn rewind(&mut self) -> Result<(), Error> {
        let path = &self.path;
        match &mut self.reader {
            Reader::Y4m {
                file, data_start, ..
            } => {
                file.seek(SeekFrom::Start(*data_start))
                    .map_err(|e| io_err(path, "seek", e))?;
            }
            // A decoder flushed at the end of a stream does not take a new one: start afresh.
            Reader::AnnexB { next, decoder, .. } => {
                *next = 0;
                *decoder = Openh264Decoder::new()?;
            }
            Reader::Mp4 { next, decoder, .. } => {
                *next = 1;
                *decoder = Openh264Decoder::new()?;
            }
        }
        Ok(())
    }
}

impl Source for FileSource {
    fn next_frame(&mut self) -> Result<Option<PooledFrame>, Error> {
        let mut frame = match self.read_picture()? {
            Some(f) => f,
            None if self.looped && self.frames_read > 0 => {
                self.rewind()?;
                match self.read_picture()? {
                    Some(f) => f,
                    None => return Ok(None),
                }
            }
            None if self.frames_read == 0 => {
                return Err(Error::invalid_input(format!(
                    "{}: no decodable picture in the file",
                    self.path.display()
                )));
            }
            None => return Ok(None),
        };
        self.frames_read += 1;
        frame.meta = self.pacer.wait();
        Ok(Some(frame))
    }

    fn fps(&self) -> u32 {
        self.fps
    }
}

fn open_y4m(path: &Path, file: File) -> Result<(Reader, u32), Error> {
    let mut file = BufReader::new(file);
    let mut header = String::new();
    file.read_line(&mut header)
        .map_err(|e| io_err(path, "read", e))?;
    let (mut w, mut h, mut fps, mut chroma) = (0u32, 0u32, 25u32, "420".to_string());
    for token in header.split_whitespace().skip(1) {
        let (tag, value) = token.split_at(1);
        match tag {
            "W" => w = value.parse().unwrap_or(0),
            "H" => h = value.parse().unwrap_or(0),
            "F" => {
                if let Some((n, d)) = value.split_once(':') {
                    let (n, d): (u32, u32) = (n.parse().unwrap_or(25), d.parse().unwrap_or(1));
                    fps = (n as f64 / d.max(1) as f64).round() as u32;
                }
            }
            "C" => chroma = value.to_string(),
            _ => {}
        }
    }
    if w == 0 || h == 0 || w % 2 != 0 || h % 2 != 0 {
        return Err(Error::invalid_input(format!(
            "{}: Y4M size {w}x{h} is not even and non-zero",
            path.display()
        )));
    }
    if !chroma.starts_with("420") {
        return Err(Error::invalid_input(format!(
            "{}: Y4M colour space C{chroma} is not supported; convert to 4:2:0 (C420)",
            path.display()
        )));
    }
    let data_start = file
        .stream_position()
        .map_err(|e| io_err(path, "seek", e))?;
    let frame_len = crate::frame::Frame::byte_len(w, h);
    Ok((
        Reader::Y4m {
            file,
            data_start,
            frame_len,
            pool: FramePool::new(w, h),
        },
        fps,
    ))
}

fn open_annexb(path: &Path, mut file: File) -> Result<Reader, Error> {
    let len = file.metadata().map_err(|e| io_err(path, "stat", e))?.len();
    if len > MAX_ANNEXB_BYTES {
        return Err(Error::invalid_input(format!(
            "{}: raw H.264 files are limited to {} MiB; use MP4 for longer footage",
            path.display(),
            MAX_ANNEXB_BYTES >> 20
        )));
    }
    let mut data = Vec::with_capacity(len as usize);
    file.read_to_end(&mut data)
        .map_err(|e| io_err(path, "read", e))?;
    let mut splitter = AccessUnitSplitter::new();
    let mut units: Vec<Vec<u8>> = annexb::nal_units(&data)
        .filter_map(|n| splitter.push(n))
        .collect();
    units.extend(splitter.finish());
    let decoder = Openh264Decoder::new()?;
    Ok(Reader::AnnexB {
        units,
        next: 0,
        decoder,
    })
}

fn open_mp4(path: &Path, mut file: File) -> Result<(Reader, u32), Error> {
    let size = file.metadata().map_err(|e| io_err(path, "stat", e))?.len();
    check_boxes(&mut file, size).map_err(|e| io_err(path, "not a readable MP4", e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_err(path, "cannot seek", e))?;
    let budget = Arc::new(AtomicU64::new(size.saturating_mul(4) + (1 << 20)));
    let reader = BufReader::new(Budgeted {
        file,
        left: budget.clone(),
    });
    let mp4 = mp4::Mp4Reader::read_header(reader, size)
        .map_err(|e| io_err(path, "not a readable MP4", e))?;
    // Samples are read by offset from here on; a looped camera reads the file for ever.
    budget.store(u64::MAX, Ordering::Relaxed);
    let track = mp4
        .tracks()
        .values()
        .find(|t| t.media_type().is_ok_and(|m| m == mp4::MediaType::H264))
        .ok_or_else(|| {
            Error::invalid_input(format!(
                "{}: the MP4 has no H.264 video track",
                path.display()
            ))
        })?;
    let mut params = Vec::new();
    for ps in [
        track.sequence_parameter_set(),
        track.picture_parameter_set(),
    ] {
        let ps = ps.map_err(|e| io_err(path, "H.264 parameter sets", e))?;
        params.extend_from_slice(&annexb::START_CODE);
        params.extend_from_slice(ps);
    }
    let fps = track.frame_rate().round().clamp(1.0, 120.0) as u32;
    let (id, samples) = (track.track_id(), track.sample_count());
    Ok((
        Reader::Mp4 {
            mp4: Box::new(mp4),
            track: id,
            samples,
            next: 1,
            length_size: 4,
            params,
            scratch: Vec::new(),
            decoder: Openh264Decoder::new()?,
        },
        fps,
    ))
}

/// The file under the `mp4` crate, with a limit on the bytes its header parse may read:
/// parsing reads each box about once, so a parse that re-reads the file over and over is
/// caught in a loop by damaged boxes the checks above do not descend into.
struct Budgeted {
    file: File,
    left: Arc<AtomicU64>,
}

impl Read for Budgeted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        let spent = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n as u64)
            });
        if spent.is_err() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "its boxes make the reader go round in circles (damaged file)",
            ));
        }
        Ok(n)
    }
}

impl Seek for Budgeted {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

/// Boxes the `mp4` crate descends into; their children are checked too.
const CONTAINER_BOXES: [&[u8; 4]; 8] = [
    b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"edts", b"mvex",
];

/// Largest `moov` read into memory for the check (a day of 60 fps is a few MiB of tables).
const MAX_MOOV_BYTES: u64 = 64 * 1024 * 1024;

/// Walks the file's box tree before the `mp4` crate parses it: that crate loops for ever on
/// a box shorter than its own header (a damaged file would hang the camera thread at full
/// CPU), so every box, down through the containers it reads, must be at least a header long
/// and fit inside its parent.
fn check_boxes(file: &mut File, size: u64) -> Result<(), String> {
    let mut at = 0u64;
    while at < size {
        file.seek(SeekFrom::Start(at)).map_err(|e| e.to_string())?;
        let mut head = [0u8; 16];
        let n = read_up_to(file, &mut head).map_err(|e| e.to_string())?;
        let (name, len, header) = box_header(&head[..n], size - at)?;
        if &name == b"moov" {
            if len > MAX_MOOV_BYTES {
                return Err(format!("moov box of {len} bytes is implausibly large"));
            }
            let mut body = vec![0u8; (len - header) as usize];
            file.seek(SeekFrom::Start(at + header))
                .and_then(|_| file.read_exact(&mut body))
                .map_err(|e| e.to_string())?;
            check_children(&body, 1)?;
        }
        at += len;
    }
    Ok(())
}

fn check_children(mut body: &[u8], depth: u32) -> Result<(), String> {
    if depth > 16 {
        return Err("boxes nested too deep".into());
    }
    while !body.is_empty() {
        let (name, len, header) = box_header(body, body.len() as u64)?;
        if CONTAINER_BOXES.contains(&&name) {
            check_children(&body[header as usize..len as usize], depth + 1)?;
        }
        body = &body[len as usize..];
    }
    Ok(())
}

/// A box's name, whole length and header length, checked against the `room` left for it.
fn box_header(head: &[u8], room: u64) -> Result<([u8; 4], u64, u64), String> {
    if head.len() < 8 {
        return Err(format!(
            "{} stray bytes where a box should start",
            head.len()
        ));
    }
    let name: [u8; 4] = head[4..8].try_into().expect("four bytes");
    let shown = String::from_utf8_lossy(&name).into_owned();
    let (len, header) = match u32::from_be_bytes(head[..4].try_into().expect("four bytes")) {
        0 => (room, 8),
        1 if head.len() >= 16 => (
            u64::from_be_bytes(head[8..16].try_into().expect("eight")),
            16,
        ),
        1 => return Err(format!("box '{shown}' is cut short")),
        n => (u64::from(n), 8),
    };
    if len < header || len > room {
        return Err(format!(
            "box '{shown}' claims {len} bytes where {room} remain"
        ));
    }
    Ok((name, len, header))
}

/// Reads as much of `buf` as the file still has.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use veil_core::SystemClock;

    use super::*;
    use crate::frame::{Frame, FrameMeta};
    use crate::h264::{EncoderSettings, Openh264Encoder, VideoEncoder};
    use crate::synthetic::{SyntheticSource, read_burned_in};

    fn clock() -> Arc<dyn Clock> {
        Arc::new(SystemClock::new())
    }

    fn fast(looped: bool) -> FileOptions {
        FileOptions {
            looped,
            fps: None,
            realtime: false,
        }
    }

    /// Renders `n` synthetic frames (their code carries seq = index).
    pub(super) fn frames(w: u32, h: u32, n: u64) -> Vec<Frame> {
        let src = SyntheticSource::new(w, h);
        (0..n)
            .map(|seq| {
                let mut f = Frame::new(w, h);
                src.render(
                    &mut f,
                    FrameMeta {
                        seq,
                        capture_wall_ms: 5,
                        ..Default::default()
                    },
                );
                f
            })
            .collect()
    }

    #[test]
    fn y4m_plays_once_and_loops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.y4m");
        let mut out = File::create(&path).unwrap();
        writeln!(out, "YUV4MPEG2 W160 H96 F10:1 Ip A1:1 C420jpeg").unwrap();
        for f in frames(160, 96, 3) {
            out.write_all(b"FRAME\n").unwrap();
            out.write_all(f.data()).unwrap();
        }
        drop(out);
        let mut once = FileSource::open(&path, &fast(false), clock()).unwrap();
        assert_eq!(once.fps(), 10);
        let seqs: Vec<u32> = std::iter::from_fn(|| once.next_frame().unwrap())
            .map(|f| read_burned_in(f.y(), 160, 96).unwrap().seq)
            .collect();
        assert_eq!(seqs, [0, 1, 2]);
        let mut looped = FileSource::open(&path, &fast(true), clock()).unwrap();
        let seqs: Vec<u32> = (0..7)
            .map(|_| looped.next_frame().unwrap().unwrap())
            .map(|f| read_burned_in(f.y(), 160, 96).unwrap().seq)
            .collect();
        assert_eq!(seqs, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn annexb_file_decodes_every_picture() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.h264");
        let mut enc = Openh264Encoder::new(EncoderSettings::for_stream(320, 240, 25)).unwrap();
        let mut bytes = Vec::new();
        for f in frames(320, 240, 30) {
            bytes.extend_from_slice(&enc.encode(&f, false).unwrap().unwrap().data);
        }
        std::fs::write(&path, &bytes).unwrap();
        let mut src = FileSource::open(
            &path,
            &FileOptions {
                fps: Some(30),
                ..fast(false)
            },
            clock(),
        )
        .unwrap();
        assert_eq!(src.fps(), 30);
        let seqs: Vec<u32> = std::iter::from_fn(|| src.next_frame().unwrap())
            .map(|f| read_burned_in(f.y(), 320, 240).unwrap().seq)
            .collect();
        assert_eq!(seqs, (0..30).collect::<Vec<_>>());
    }

    #[test]
    fn bad_files_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = FileSource::open(&dir.path().join("nope.mp4"), &fast(true), clock())
            .err()
            .unwrap();
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert!(
            missing.to_string().contains("nope.mp4: cannot open"),
            "{missing}"
        );

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello world, not video").unwrap();
        let e = FileSource::open(&text, &fast(true), clock()).err().unwrap();
        assert!(e.to_string().contains("not a supported video file"), "{e}");

        let y4m = dir.path().join("422.y4m");
        std::fs::write(&y4m, "YUV4MPEG2 W64 H64 F25:1 C422\n").unwrap();
        let e = FileSource::open(&y4m, &fast(true), clock()).err().unwrap();
        assert!(e.to_string().contains("C422 is not supported"), "{e}");

        // A truncated H.264 stream: the start of one keyframe, then nothing.
        let mut enc = Openh264Encoder::new(EncoderSettings::for_stream(320, 240, 25)).unwrap();
        let au = enc.encode(&frames(320, 240, 1)[0], false).unwrap().unwrap();
        let cut = dir.path().join("cut.h264");
        std::fs::write(&cut, &au.data[..au.data.len() / 3]).unwrap();
        let mut src = FileSource::open(&cut, &fast(true), clock()).unwrap();
        match src.next_frame() {
            Err(e) => assert!(e.to_string().contains("cut.h264"), "{e}"),
            Ok(Some(f)) => assert_eq!((f.width(), f.height()), (320, 240)), // concealed picture
            Ok(None) => panic!("a looped file must not end"),
        }

        let fake_mp4 = dir.path().join("fake.mp4");
        std::fs::write(&fake_mp4, b"\0\0\0\x18ftypisom\0\0\0\0garbage-garbage").unwrap();
        let e = FileSource::open(&fake_mp4, &fast(true), clock())
            .err()
            .unwrap();
        assert!(e.to_string().contains("fake.mp4"), "{e}");
    }
}

/// Real clips from registry packages, fetched by `scripts/fetch-media` into `VEIL_MEDIA_DIR`.
/// Without the variable (a plain `cargo test`) these tests say so and pass; `scripts/test` sets
/// it, and then a missing file fails the test.
#[cfg(test)]
pub(crate) fn media(name: &str) -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("VEIL_MEDIA_DIR") else {
        eprintln!("VEIL_MEDIA_DIR unset: skipping the test on {name} (scripts/test fetches it)");
        return None;
    };
    let path = Path::new(&dir).join(name);
    assert!(
        path.is_file(),
        "{} missing: run scripts/fetch-media",
        path.display()
    );
    Some(path)
}

#[cfg(test)]
mod real_clips {
    use veil_core::SystemClock;

    use super::*;

    #[test]
    fn bikes_mp4_decodes_all_250_frames_at_25_fps() {
        let Some(path) = media("bikes.mp4") else {
            return;
        };
        let options = FileOptions {
            looped: false,
            fps: None,
            realtime: false,
        };
        let mut src = FileSource::open(&path, &options, Arc::new(SystemClock::new())).unwrap();
        assert_eq!(src.fps(), 25);
        let mut n = 0;
        let mut last_luma_sum = 0u64;
        let mut changes = 0;
        while let Some(f) = src
            .next_frame()
            .unwrap_or_else(|e| panic!("after {n} frames: {e}"))
        {
            assert_eq!((f.width(), f.height()), (640, 272));
            let sum: u64 = f.y().iter().map(|&p| p as u64).sum();
            changes += usize::from(sum != last_luma_sum);
            last_luma_sum = sum;
            n += 1;
        }
        assert_eq!(n, 250);
        assert!(changes > 200, "decoded pictures do not change: {changes}");
    }
}

/// A file camera reads whatever file a technician points it at. Property tests (proptest;
/// `PROPTEST_CASES` raises the count) spoil valid Y4M, raw H.264 and MP4 files (flipped bytes,
/// cut short, junk inserted, ranges zeroed) and read them: no panic, no runaway allocation,
/// every error names the file, and every picture that comes out is whole.
#[cfg(test)]
mod fuzz {
    use std::io::Write;

    use proptest::prelude::*;
    use veil_core::SystemClock;

    use super::*;
    use crate::h264::{EncoderSettings, Openh264Encoder, VideoEncoder};

    fn y4m() -> Vec<u8> {
        let mut out = b"YUV4MPEG2 W96 H64 F10:1 Ip A1:1 C420jpeg\n".to_vec();
        for f in super::tests::frames(96, 64, 3) {
            out.extend_from_slice(b"FRAME\n");
            out.extend_from_slice(f.data());
        }
        out
    }

    fn annexb() -> Vec<u8> {
        let mut enc = Openh264Encoder::new(EncoderSettings::for_stream(96, 64, 25)).unwrap();
        let mut out = Vec::new();
        for f in super::tests::frames(96, 64, 8) {
            out.extend_from_slice(&enc.encode(&f, false).unwrap().unwrap().data);
        }
        out
    }

    const PICTURES: usize = 6;

    /// A short real MP4 when the media directory is there (scripts/test), else none.
    fn mp4() -> Option<Vec<u8>> {
        let dir = std::env::var_os("VEIL_MEDIA_DIR")?;
        std::fs::read(Path::new(&dir).join("plate_photo.mp4")).ok()
    }

    #[derive(Debug, Clone)]
    enum Spoil {
        Flip(usize, u8),
        Cut(usize),
        Insert(usize, Vec<u8>),
        Zero(usize, usize),
    }

    fn spoil() -> impl Strategy<Value = Spoil> {
        prop_oneof![
            (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Spoil::Flip(i, b)),
            any::<usize>().prop_map(Spoil::Cut),
            (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
                .prop_map(|(i, b)| Spoil::Insert(i, b)),
            (any::<usize>(), 1usize..512).prop_map(|(i, n)| Spoil::Zero(i, n)),
        ]
    }

    fn apply(mut bytes: Vec<u8>, s: &Spoil) -> Vec<u8> {
        if bytes.is_empty() {
            return bytes;
        }
        let len = bytes.len();
        match s {
            Spoil::Flip(i, b) => bytes[i % len] ^= b,
            Spoil::Cut(i) => bytes.truncate(i % len),
            Spoil::Insert(i, junk) => {
                let at = i % len;
                bytes.splice(at..at, junk.iter().copied());
            }
            Spoil::Zero(i, n) => {
                let at = i % len;
                let end = (at + n).min(len);
                bytes[at..end].fill(0);
            }
        }
        bytes
    }

    /// Opens and reads up to `PICTURES` pictures of `bytes` as a file camera would (few: the
    /// damage is in the headers and the first samples, and the aarch64 run emulates each decode).
    fn read_all(bytes: &[u8]) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("camera.bin");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        let options = FileOptions {
            looped: false,
            fps: None,
            realtime: false,
        };
        let named = |e: &Error| e.to_string().contains(&path.display().to_string());
        let mut src = match FileSource::open(&path, &options, Arc::new(SystemClock::new())) {
            Ok(src) => src,
            Err(e) => {
                prop_assert!(named(&e), "error without the file: {e}");
                return Ok(());
            }
        };
        for _ in 0..PICTURES {
            match src.next_frame() {
                Ok(Some(f)) => {
                    let (w, h) = (f.width() as usize, f.height() as usize);
                    prop_assert!(w > 0 && h > 0 && w <= 8192 && h <= 8192, "{w}x{h}");
                    prop_assert_eq!(f.data().len(), w * h + 2 * w.div_ceil(2) * h.div_ceil(2));
                }
                Ok(None) => break,
                Err(e) => {
                    prop_assert!(named(&e), "error without the file: {e}");
                    break;
                }
            }
        }
        Ok(())
    }

    /// Offsets of every box header, top level and inside the containers.
    fn box_offsets(bytes: &[u8], base: usize, out: &mut Vec<usize>) {
        let mut at = 0;
        while let Ok((name, len, header)) = box_header(&bytes[at..], (bytes.len() - at) as u64) {
            out.push(base + at);
            let (len, header) = (len as usize, header as usize);
            if &name == b"moov" || CONTAINER_BOXES.contains(&&name) {
                box_offsets(&bytes[at + header..at + len], base + at + header, out);
            }
            at += len;
            if at >= bytes.len() {
                break;
            }
        }
    }

    /// Every box of a real MP4 in turn gets a size that cannot be (0, 1, shorter than its
    /// header, past its parent, 4 GiB): each is refused or read, none hangs the reader (the
    /// `mp4` crate alone loops for ever on some of them).
    #[test]
    fn every_box_with_an_impossible_size_is_refused_or_read() {
        let Some(mp4) = mp4() else { return };
        let mut offsets = Vec::new();
        box_offsets(&mp4, 0, &mut offsets);
        assert!(offsets.len() > 20, "{} boxes found", offsets.len());
        for at in offsets {
            for size in [0u32, 1, 4, 7, 9, 0x7fff_ffff, u32::MAX] {
                let mut spoilt = mp4.clone();
                spoilt[at..at + 4].copy_from_slice(&size.to_be_bytes());
                read_all(&spoilt).unwrap_or_else(|e| panic!("box at {at} sized {size}: {e}"));
            }
        }
    }

    proptest! {
        // Few cases by default (each decodes); PROPTEST_CASES sets more for a long run.
        #![proptest_config(ProptestConfig::with_cases(
            veil_faults::proptest_cases(48)
        ))]

        #[test]
        fn spoilt_y4m_files_are_read_or_refused_cleanly(
            spoils in prop::collection::vec(spoil(), 1..4),
        ) {
            read_all(&spoils.iter().fold(y4m(), apply))?;
        }

        #[test]
        fn spoilt_raw_h264_files_are_read_or_refused_cleanly(
            spoils in prop::collection::vec(spoil(), 1..6),
        ) {
            read_all(&spoils.iter().fold(annexb(), apply))?;
        }

        #[test]
        fn spoilt_mp4_files_are_read_or_refused_cleanly(
            spoils in prop::collection::vec(spoil(), 1..6),
        ) {
            if let Some(mp4) = mp4() {
                read_all(&spoils.iter().fold(mp4, apply))?;
            }
        }
    }
}
