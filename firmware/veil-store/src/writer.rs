//! Writing: each camera's writer cuts its stream into segments and makes them durable every
//! flush interval (the write discipline in the crate's documentation).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::params;
use sha2::{Digest, Sha256};
use veil_core::Error;

use crate::codec::{Timing, encode_keyframes};
use crate::seal;

use crate::files::*;
use crate::index::*;
pub use crate::seal::SealKey;

/// Longest time between two frames still counted as continuous footage; a longer pause ends
/// the segment (the camera stalled, or the clock jumped) and shows as a gap.
pub(crate) const MAX_FRAME_GAP_MS: i64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterSettings {
    /// A segment is closed at the first keyframe after this long.
    pub segment_ms: i64,
    /// What is written becomes durable (and indexed) at least this often.
    pub flush_ms: i64,
    /// The layout of the access units handed to `write` (recorded with each segment).
    pub format: SampleFormat,
}

impl Default for WriterSettings {
    fn default() -> Self {
        WriterSettings {
            segment_ms: 60_000,
            flush_ms: 1_000,
            format: SampleFormat::AnnexB,
        }
    }
}

pub(crate) struct OpenSegment {
    id: i64,
    file: File,
    path: PathBuf,
    start_ms: i64,
    last_ms: i64,
    frames: u64,
    bytes: u64,
    timing: Timing,
    keyframes: Vec<u64>,
    hasher: Sha256,
    flushed_ms: i64,
    cipher: Option<seal::SegmentCipher>,
}

/// Writes one camera's frames into segments; times come with the frames (no clock inside).
pub struct CameraWriter {
    store: Arc<Store>,
    camera: String,
    settings: WriterSettings,
    open: Option<OpenSegment>,
    /// Frames dropped because no segment was open and they were not keyframes.
    waiting_for_keyframe: u64,
    /// Seals every frame (kept originals) when set.
    seal: Option<SealKey>,
}

/// What became durable with a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Appended; not yet durable.
    Buffered,
    /// Appended, and everything up to and including the frame at this time is durable.
    Flushed(i64),
    /// Dropped: a segment must start on a keyframe. `flushed` is set when writing it closed
    /// the segment before (everything up to that time is durable).
    SkippedUntilKeyframe { flushed: Option<i64> },
}

impl CameraWriter {
    pub fn camera(&self) -> &str {
        &self.camera
    }

    /// Encrypts every frame this writer stores with `key` (AES-256-GCM, see [`seal`]).
    pub fn sealed(mut self, key: SealKey) -> CameraWriter {
        self.seal = Some(key);
        self
    }

    pub fn skipped_frames(&self) -> u64 {
        self.waiting_for_keyframe
    }

    /// Appends one encoded frame captured at `wall_ms`.
    pub fn write(&mut self, wall_ms: i64, keyframe: bool, data: &[u8]) -> Result<Written, Error> {
        let mut flushed = None;
        if let Some(seg) = &self.open {
            let gap = wall_ms - seg.last_ms;
            let long_enough = wall_ms - seg.start_ms >= self.settings.segment_ms;
            if !(0..=MAX_FRAME_GAP_MS).contains(&gap) || (keyframe && long_enough) {
                flushed = self.close()?;
            }
        }
        if self.open.is_none() {
            if !keyframe {
                self.waiting_for_keyframe += 1;
                return Ok(Written::SkippedUntilKeyframe { flushed });
            }
            self.open = Some(self.start(wall_ms)?);
        }
        let seg = self.open.as_mut().expect("opened above");
        if seg.frames > 0 {
            seg.timing.push((wall_ms - seg.last_ms) as u64);
        }
        if keyframe {
            seg.keyframes.push(seg.frames);
        }
        let sealed;
        let data = match &seg.cipher {
            Some(c) => {
                sealed = c.seal(seg.frames, data);
                &sealed[..]
            }
            None => data,
        };
        let len = (data.len() as u32).to_be_bytes();
        seg.file
            .write_all(&len)
            .and_then(|_| seg.file.write_all(data))
            .map_err(io_err("cannot write", &seg.path))?;
        seg.hasher.update(len);
        seg.hasher.update(data);
        seg.frames += 1;
        seg.bytes += 4 + data.len() as u64;
        seg.last_ms = wall_ms;
        if wall_ms - seg.flushed_ms >= self.settings.flush_ms {
            return Ok(Written::Flushed(self.flush()?));
        }
        Ok(match flushed {
            Some(t) => Written::Flushed(t),
            None => Written::Buffered,
        })
    }

    fn start(&self, wall_ms: i64) -> Result<OpenSegment, Error> {
        let dir = self.store.root.join(&self.camera);
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
            sync_dir(&self.store.root)?;
        }
        let id = self
            .store
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rel = segment_file(&self.camera, id);
        let path = self.store.root.join(&rel);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("cannot create", &path))?;
        // The file and its directory entry are durable before any row points to them.
        file.sync_all().map_err(io_err("cannot sync", &path))?;
        sync_dir(&dir)?;
        let (salt, cipher) = match &self.seal {
            Some(key) => {
                let salt = seal::new_salt().map_err(|e| {
                    Error::internal(format!("no randomness for a segment key: {e}"))
                })?;
                (
                    Some(salt.to_vec()),
                    Some(seal::SegmentCipher::new(key, &salt)),
                )
            }
            None => (None, None),
        };
        self.store
            .db()
            .execute(
                "INSERT INTO segments (id, camera, start_ms, end_ms, frames, bytes, open, \
                 timing, keyframes, sample_format, seal_salt) \
                 VALUES (?1, ?2, ?3, ?3, 0, 0, 1, x'', x'', ?4, ?5)",
                params![id, self.camera, wall_ms, self.settings.format.code(), salt],
            )
            .map_err(db_err("start segment"))?;
        Ok(OpenSegment {
            id,
            file,
            path,
            start_ms: wall_ms,
            last_ms: wall_ms,
            frames: 0,
            bytes: 0,
            timing: Timing::default(),
            keyframes: Vec::new(),
            hasher: Sha256::new(),
            flushed_ms: wall_ms,
            cipher,
        })
    }

    /// Makes everything written so far durable and indexed; returns the last frame's time.
    pub fn flush(&mut self) -> Result<i64, Error> {
        let Some(seg) = self.open.as_mut() else {
            return Ok(0);
        };
        seg.file
            .sync_data()
            .map_err(io_err("cannot sync", &seg.path))?;
        let end = seg.start_ms + seg.timing.offsets().last().unwrap_or(0) as i64;
        self.store
            .db()
            .execute(
                "UPDATE segments SET end_ms = ?2, frames = ?3, bytes = ?4, timing = ?5, \
                 keyframes = ?6 WHERE id = ?1",
                params![
                    seg.id,
                    end.max(seg.last_ms),
                    seg.frames as i64,
                    seg.bytes as i64,
                    seg.timing.encode(),
                    encode_keyframes(&seg.keyframes)
                ],
            )
            .map_err(db_err("flush segment"))?;
        seg.flushed_ms = seg.last_ms;
        Ok(seg.last_ms)
    }

    /// Closes the open segment (durable, with its SHA-256); returns the last frame's time.
    pub fn close(&mut self) -> Result<Option<i64>, Error> {
        if self.open.is_none() {
            return Ok(None);
        }
        let last = self.flush()?;
        let seg = self.open.take().expect("checked above");
        // The last frame lasts as long as the one before it (its true end is unknown).
        let last_duration = seg.timing.offsets().collect::<Vec<_>>();
        let tail = match last_duration.as_slice() {
            [.., a, b] => b - a,
            _ => 0,
        };
        let end = seg.last_ms + tail as i64;
        let sha: [u8; 32] = seg.hasher.finalize().into();
        let mut timing = seg.timing;
        if seg.frames > 0 {
            timing.push(tail);
        }
        self.store
            .db()
            .execute(
                "UPDATE segments SET open = 0, sha256 = ?2, end_ms = ?3, timing = ?4 WHERE id = ?1",
                params![seg.id, &sha[..], end, timing.encode()],
            )
            .map_err(db_err("close segment"))?;
        Ok(Some(last))
    }
}

impl Drop for CameraWriter {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(camera = %self.camera, error = %e, "closing the last segment failed");
        }
    }
}

impl Store {
    /// A writer for one camera's stream.
    pub fn writer(self: &Arc<Self>, camera: &str, settings: WriterSettings) -> CameraWriter {
        CameraWriter {
            store: self.clone(),
            camera: camera.to_string(),
            settings,
            open: None,
            waiting_for_keyframe: 0,
            seal: None,
        }
    }
}
