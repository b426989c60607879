//! Video files as cameras: MP4 (H.264), raw H.264 byte streams (Annex B) and Y4M, decoded to
//! I420, played at their frame rate, looped or once.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
        mp4: Box<mp4::Mp4Reader<BufReader<File>>>,
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

fn open_mp4(path: &Path, file: File) -> Result<(Reader, u32), Error> {
    let size = file.metadata().map_err(|e| io_err(path, "stat", e))?.len();
    let mp4 = mp4::Mp4Reader::read_header(BufReader::new(file), size)
        .map_err(|e| io_err(path, "not a readable MP4", e))?;
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
    fn frames(w: u32, h: u32, n: u64) -> Vec<Frame> {
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
