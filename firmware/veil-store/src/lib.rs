//! The footage store: each camera's encoded stream cut into segments (starting on a keyframe)
//! in sample files, indexed in SQLite, so that after a crash or power loss the index matches
//! the disk and at most the last flush interval is lost.
//!
//! Write discipline: a segment's file is created and synced (file, then directory) before its
//! index row exists; frames are appended, and every flush interval the file is synced and only
//! then the row updated with what is now durable (bytes, frames, timing, keyframes). Deletes
//! go through a garbage list (row moved to the list in one transaction, then the file
//! unlinked, then the list entry dropped). Recovery at open finishes all of that.
//!
//! Sample file format: per frame, a 4-byte big-endian length and the access unit, as the
//! writer's [`SampleFormat`] says (the store does not parse video). A segment written with a
//! [`SealKey`] holds each access unit encrypted with AES-256-GCM instead (see [`seal`]).
//!
//! Owns: segment files, the SQLite index, recovery after a crash, holds and retention.
//! Never: decodes or anonymizes video, or deletes footage under a hold.

pub mod audit;
pub mod codec;
pub mod retention;
pub mod seal;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use veil_core::{Error, ErrorKind};

use crate::codec::{Timing, decode_keyframes, encode_keyframes};
use crate::retention::{CameraRetention, Hold, Plan, SegmentFacts};
pub use crate::seal::SealKey;

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    camera TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 BLOB,
    open INTEGER NOT NULL,
    timing BLOB NOT NULL,
    keyframes BLOB NOT NULL
);
CREATE INDEX segments_by_time ON segments (camera, start_ms);
CREATE TABLE holds (
    id TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    from_ms INTEGER NOT NULL,
    to_ms INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE garbage (file TEXT PRIMARY KEY);
"#,
    r#"
ALTER TABLE segments ADD COLUMN sample_format INTEGER NOT NULL DEFAULT 0;
ALTER TABLE segments ADD COLUMN seal_salt BLOB;
"#,
];

/// How a segment's access units are laid out (the writer says; readers convert as needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleFormat {
    /// H.264 byte stream with start codes, as encoders emit it.
    #[default]
    AnnexB,
    /// H.264 NAL units with 4-byte big-endian lengths, as MP4 samples hold them: exports copy
    /// these bytes into the MP4 without touching them.
    Avcc,
}

impl SampleFormat {
    fn code(self) -> i64 {
        match self {
            SampleFormat::AnnexB => 0,
            SampleFormat::Avcc => 1,
        }
    }

    fn from_code(code: i64) -> Option<SampleFormat> {
        match code {
            0 => Some(SampleFormat::AnnexB),
            1 => Some(SampleFormat::Avcc),
            _ => None,
        }
    }
}

/// Longest time between two frames still counted as continuous footage; a longer pause ends
/// the segment (the camera stalled, or the clock jumped) and shows as a gap.
const MAX_FRAME_GAP_MS: i64 = 5_000;

/// Size of the reserve file released when the disk is full (see `Store::ballast_path`).
const BALLAST_BYTES: u64 = 256 * 1024;

fn db_err(what: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |e| {
        let full = matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull));
        let kind = if full {
            ErrorKind::ResourceExhausted
        } else {
            ErrorKind::Internal
        };
        Error::wrap(kind, format!("footage index: {what}"), e)
    }
}

fn io_err<'a>(what: &'a str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| {
        let kind = if e.raw_os_error() == Some(28) {
            ErrorKind::ResourceExhausted
        } else {
            ErrorKind::Internal
        };
        Error::wrap(kind, format!("{what} {}", path.display()), e)
    }
}

/// What recovery found and did at open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments left open by a crash, closed at their last durable frame.
    pub closed_open_segments: u64,
    /// Bytes cut off the end of those (frames written after the last flush).
    pub truncated_bytes: u64,
    /// Index rows whose file was missing, removed.
    pub rows_without_file: u64,
    /// Files no row points to, removed.
    pub orphan_files: u64,
    /// Deletions interrupted by the crash, finished.
    pub garbage_collected: u64,
}

impl RecoveryReport {
    pub fn is_clean(&self) -> bool {
        *self == RecoveryReport::default()
    }
}

/// One indexed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub id: i64,
    pub camera: String,
    pub file: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub frames: u64,
    pub bytes: u64,
    pub sha256: Option<[u8; 32]>,
    pub open: bool,
    pub format: SampleFormat,
    /// Whether its access units are encrypted (kept originals).
    pub sealed: bool,
}

/// A frame read back (decrypted if it was sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFrame {
    pub wall_ms: i64,
    pub keyframe: bool,
    pub format: SampleFormat,
    pub data: Vec<u8>,
}

/// Where one frame's bytes are in its sample file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRef {
    /// Offset of the access unit (after its length prefix).
    pub offset: u64,
    pub size: u32,
    pub wall_ms: i64,
    pub keyframe: bool,
    /// Frame number within the segment (the nonce of a sealed frame).
    pub index: u64,
}

/// The frames of one segment that fall in a requested range, starting at a keyframe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentLayout {
    pub segment: Segment,
    pub path: PathBuf,
    pub samples: Vec<SampleRef>,
    /// The segment's last frame's end (ms), for the duration of a range's final frame.
    pub end_ms: i64,
}

/// Footage of a camera over a range: the segments that hold it, and the holes between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    pub segments: Vec<Segment>,
    /// `(from_ms, to_ms)` stretches of the range with no footage.
    pub gaps: Vec<(i64, i64)>,
}

pub struct Store {
    root: PathBuf,
    db: Mutex<Connection>,
    /// The next segment id; ids are never reused, so a file name (`CAMERA/ID.seg`) always
    /// means one segment.
    next_id: std::sync::atomic::AtomicI64,
    /// Whether this process owns the store (recovers it, checkpoints it at close).
    writable: bool,
    /// Opens sealed segments (kept originals); set by the daemon from its keystore.
    seal_key: std::sync::OnceLock<SealKey>,
}

/// Where a segment's samples live, relative to the store root.
fn segment_file(camera: &str, id: i64) -> String {
    format!("{camera}/{id}.seg")
}

impl Store {
    /// Opens (or creates) the store under `root` for `device_id`, and recovers from whatever
    /// a crash left behind. An index written by another device is refused.
    pub fn open(root: &Path, device_id: &str) -> Result<(Arc<Store>, RecoveryReport), Error> {
        Store::open_mode(root, device_id, true)
    }

    /// Opens a store another process (the running daemon) may be writing, for reading only:
    /// no recovery, no migration.
    pub fn open_for_reading(root: &Path, device_id: &str) -> Result<Arc<Store>, Error> {
        if !root.join("index.sqlite3").is_file() {
            return Err(Error::not_found(format!(
                "no footage store at {} (nothing recorded yet, or another storage.data_dir)",
                root.display()
            )));
        }
        Ok(Store::open_mode(root, device_id, false)?.0)
    }

    fn open_mode(
        root: &Path,
        device_id: &str,
        writable: bool,
    ) -> Result<(Arc<Store>, RecoveryReport), Error> {
        std::fs::create_dir_all(root).map_err(io_err("cannot create", root))?;
        let db_path = root.join("index.sqlite3");
        let conn = Connection::open(&db_path).map_err(|e| {
            Error::wrap(
                ErrorKind::Internal,
                format!("footage index {}: cannot open", db_path.display()),
                e,
            )
        })?;
        let not_sqlite = |e: rusqlite::Error| {
            Error::wrap(
                ErrorKind::InvalidInput,
                format!(
                    "footage index {} is not a usable SQLite database (move it away to start a \
                     new index; the sample files are then removed as orphans)",
                    db_path.display()
                ),
                e,
            )
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_err("set busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(not_sqlite)?;
        // FULL: a committed transaction survives power loss, not only a process crash.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(not_sqlite)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(not_sqlite)?;
        if version as usize > MIGRATIONS.len() {
            return Err(Error::invalid_input(format!(
                "footage index {} has schema {version}, newer than this firmware's {}: \
                 downgrade refused",
                db_path.display(),
                MIGRATIONS.len()
            )));
        }
        if !writable && (version as usize) < MIGRATIONS.len() {
            return Err(Error::invalid_input(format!(
                "footage index {} has schema {version}; start veild once to migrate it",
                db_path.display()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(&format!(
                "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))
            .map_err(db_err("migration"))?;
        }
        let owner: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'device_id'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err("read device id"))?;
        match owner {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('device_id', ?1)",
                    [device_id],
                )
                .map_err(db_err("write device id"))?;
            }
            Some(o) if o != device_id => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "footage index {} belongs to device {o}, this is {device_id}: refusing \
                         to mix footage (move the directory away to start afresh)",
                        db_path.display()
                    ),
                ));
            }
            Some(_) => {}
        }
        let last_id: i64 = conn
            .query_row(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'segments'), 0), \
                 coalesce((SELECT max(id) FROM segments), 0))",
                [],
                |r| r.get(0),
            )
            .map_err(db_err("read segment ids"))?;
        let store = Store {
            root: root.to_path_buf(),
            db: Mutex::new(conn),
            next_id: std::sync::atomic::AtomicI64::new(last_id + 1),
            writable,
            seal_key: std::sync::OnceLock::new(),
        };
        if !writable {
            return Ok((Arc::new(store), RecoveryReport::default()));
        }
        let report = match store.recover() {
            Err(e) if e.kind() == ErrorKind::ResourceExhausted => {
                store.release_ballast();
                store.recover()?
            }
            other => other?,
        };
        store.restore_ballast();
        if !report.is_clean() {
            tracing::warn!(?report, "footage store recovered after an unclean stop");
        }
        Ok((Arc::new(store), report))
    }

    /// The key sealed segments are opened with (see [`CameraWriter::sealed`]).
    pub fn set_seal_key(&self, key: SealKey) {
        let _ = self.seal_key.set(key);
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    /// A file kept only to be deleted when the disk is full, so the index can still commit
    /// the deletions that free space (SQLite needs room for its journal even to delete).
    fn ballast_path(&self) -> PathBuf {
        self.root.join("reserve.bin")
    }

    fn release_ballast(&self) {
        let _ = std::fs::remove_file(self.ballast_path());
    }

    fn restore_ballast(&self) {
        let path = self.ballast_path();
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == BALLAST_BYTES) {
            return;
        }
        let made = File::create(&path).and_then(|mut f| {
            f.write_all(&vec![0u8; BALLAST_BYTES as usize])?;
            f.sync_all()
        });
        if made.is_err() {
            // No room yet: it comes back after the next eviction.
            let _ = std::fs::remove_file(&path);
        }
    }

    fn recover(&self) -> Result<RecoveryReport, Error> {
        let mut report = RecoveryReport::default();
        // Deletions that were cut short.
        let garbage: Vec<String> = {
            let db = self.db();
            let mut st = db
                .prepare("SELECT file FROM garbage")
                .map_err(db_err("read garbage"))?;
            st.query_map([], |r| r.get(0))
                .map_err(db_err("read garbage"))?
                .collect::<Result<_, _>>()
                .map_err(db_err("read garbage"))?
        };
        for file in garbage {
            let _ = std::fs::remove_file(self.path_of(&file));
            self.db()
                .execute("DELETE FROM garbage WHERE file = ?1", [&file])
                .map_err(db_err("drop garbage"))?;
            report.garbage_collected += 1;
        }
        // Rows whose file is gone; segments a crash left open.
        for seg in self.segments_where("1 = 1", &[])? {
            let path = self.path_of(&seg.file);
            let len = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(_) => {
                    tracing::warn!(file = %path.display(), "index row without its file; removed");
                    self.db()
                        .execute("DELETE FROM segments WHERE id = ?1", [seg.id])
                        .map_err(db_err("remove row"))?;
                    report.rows_without_file += 1;
                    continue;
                }
            };
            if seg.open {
                report.closed_open_segments += 1;
                report.truncated_bytes += self.close_after_crash(&seg, len)?;
            }
        }
        // Files no row knows (created just before a crash, or left by a lost index).
        let known: std::collections::HashSet<String> = self
            .segments_where("1 = 1", &[])?
            .into_iter()
            .map(|s| s.file)
            .collect();
        for camera_dir in read_dir_paths(&self.root)? {
            if !camera_dir.is_dir() {
                continue;
            }
            for file in read_dir_paths(&camera_dir)? {
                let Ok(rel) = file.strip_prefix(&self.root) else {
                    continue;
                };
                let rel = rel.to_string_lossy().into_owned();
                if rel.ends_with(".seg") && !known.contains(&rel) {
                    std::fs::remove_file(&file).map_err(io_err("cannot remove orphan", &file))?;
                    report.orphan_files += 1;
                }
            }
        }
        Ok(report)
    }

    /// A segment's encoded frame index: (timing, keyframes).
    fn frame_index(&self, id: i64) -> Result<(Vec<u8>, Vec<u8>), Error> {
        self.db()
            .query_row(
                "SELECT timing, keyframes FROM segments WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db_err("read segment"))
    }

    /// The salt a sealed segment's key is derived with.
    fn seal_salt(&self, id: i64) -> Result<Option<Vec<u8>>, Error> {
        self.db()
            .query_row("SELECT seal_salt FROM segments WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .map_err(db_err("read segment"))
    }

    /// Cuts an open segment back to its last durable frame and closes it; returns the bytes cut.
    fn close_after_crash(&self, seg: &Segment, len: u64) -> Result<u64, Error> {
        let path = self.path_of(&seg.file);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("cannot open", &path))?;
        // Normally the file holds at least what the row says (frames after the last flush are
        // extra). If it holds less (the disk lost a sync), keep its whole frames.
        let (frames, bytes) = if len >= seg.bytes {
            (seg.frames, seg.bytes)
        } else {
            let (n, b) = whole_frames(&file, len).map_err(io_err("cannot read", &path))?;
            (n.min(seg.frames), b)
        };
        file.set_len(bytes)
            .map_err(io_err("cannot truncate", &path))?;
        file.sync_all().map_err(io_err("cannot sync", &path))?;
        let sha = sha256_of(&path, bytes)?;
        let (timing, keyframes) = self.frame_index(seg.id)?;
        let timing = Timing::decode(&timing)
            .unwrap_or_default()
            .truncated(frames);
        let keyframes: Vec<u64> = decode_keyframes(&keyframes)
            .unwrap_or_default()
            .into_iter()
            .filter(|&f| f < frames)
            .collect();
        let end = seg.start_ms + timing.offsets().last().unwrap_or(0) as i64;
        if frames == 0 {
            self.db()
                .execute("DELETE FROM segments WHERE id = ?1", [seg.id])
                .map_err(db_err("remove empty segment"))?;
            let _ = std::fs::remove_file(&path);
        } else {
            self.db()
                .execute(
                    "UPDATE segments SET open = 0, frames = ?2, bytes = ?3, end_ms = ?4, \
                     sha256 = ?5, timing = ?6, keyframes = ?7 WHERE id = ?1",
                    params![
                        seg.id,
                        frames as i64,
                        bytes as i64,
                        end,
                        &sha[..],
                        timing.encode(),
                        encode_keyframes(&keyframes)
                    ],
                )
                .map_err(db_err("close segment"))?;
        }
        Ok(len.saturating_sub(bytes))
    }

    fn segments_where(
        &self,
        condition: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Segment>, Error> {
        let db = self.db();
        let mut st = db
            .prepare(&format!(
                "SELECT id, camera, start_ms, end_ms, frames, bytes, sha256, open, \
                 sample_format, seal_salt IS NOT NULL \
                 FROM segments WHERE {condition} ORDER BY camera, start_ms, id"
            ))
            .map_err(db_err("list segments"))?;
        st.query_map(args, |r| {
            let sha: Option<Vec<u8>> = r.get(6)?;
            let (id, camera): (i64, String) = (r.get(0)?, r.get(1)?);
            Ok(Segment {
                id,
                file: segment_file(&camera, id),
                camera,
                start_ms: r.get(2)?,
                end_ms: r.get(3)?,
                frames: r.get::<_, i64>(4)? as u64,
                bytes: r.get::<_, i64>(5)? as u64,
                sha256: sha.and_then(|s| s.try_into().ok()),
                open: r.get::<_, i64>(7)? != 0,
                // An unknown code (from a newer firmware) reads as Annex B; the migration
                // check refuses newer schemas before it could matter.
                format: SampleFormat::from_code(r.get(8)?).unwrap_or_default(),
                sealed: r.get(9)?,
            })
        })
        .map_err(db_err("list segments"))?
        .collect::<Result<_, _>>()
        .map_err(db_err("list segments"))
    }

    /// Every segment, by camera and time.
    pub fn segments(&self) -> Result<Vec<Segment>, Error> {
        self.segments_where("1 = 1", &[])
    }

    /// Checks every closed segment's file against its size and SHA-256; returns the problems.
    pub fn verify(&self) -> Result<Vec<String>, Error> {
        let mut problems = Vec::new();
        for seg in self.segments()? {
            let path = self.path_of(&seg.file);
            match std::fs::metadata(&path) {
                Err(e) => problems.push(format!("{}: {e}", path.display())),
                Ok(m) if m.len() < seg.bytes => problems.push(format!(
                    "{}: {} bytes, the index says {}",
                    path.display(),
                    m.len(),
                    seg.bytes
                )),
                Ok(_) if !seg.open => {
                    let sha = sha256_of(&path, seg.bytes)?;
                    if Some(sha) != seg.sha256 {
                        problems.push(format!("{}: SHA-256 does not match", path.display()));
                    }
                }
                Ok(_) => {}
            }
        }
        Ok(problems)
    }

    /// The segments of `camera` overlapping `[from_ms, to_ms)` and the gaps between them.
    pub fn coverage(&self, camera: &str, from_ms: i64, to_ms: i64) -> Result<Coverage, Error> {
        if from_ms >= to_ms {
            return Err(Error::invalid_input(format!(
                "time range is empty or reversed: from {from_ms} is not before to {to_ms}"
            )));
        }
        let known: bool = self
            .db()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM segments WHERE camera = ?1)",
                [camera],
                |r| r.get(0),
            )
            .map_err(db_err("find camera"))?;
        if !known {
            return Err(Error::not_found(format!(
                "camera '{camera}' has no footage in this store"
            )));
        }
        let segments = self.segments_where(
            // A segment whose last frame is at `from_ms` has that frame in the range.
            "camera = ?1 AND start_ms < ?3 AND end_ms >= ?2",
            &[&camera, &from_ms, &to_ms],
        )?;
        let mut gaps = Vec::new();
        let mut at = from_ms;
        for s in &segments {
            if s.start_ms > at {
                gaps.push((at, s.start_ms));
            }
            at = at.max(s.end_ms);
        }
        if at < to_ms {
            gaps.push((at, to_ms));
        }
        Ok(Coverage { segments, gaps })
    }

    /// Where the frames of `camera` in `[from_ms, to_ms)` are, segment by segment, each
    /// segment's list starting at the keyframe at or before `from_ms` so it decodes. Reads only
    /// the index and the 4-byte length prefixes, not the frames.
    pub fn layout(
        &self,
        camera: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Coverage, Vec<SegmentLayout>), Error> {
        use std::os::unix::fs::FileExt;
        let coverage = self.coverage(camera, from_ms, to_ms)?;
        let mut layouts = Vec::with_capacity(coverage.segments.len());
        for seg in &coverage.segments {
            let (timing, keyframes) = self.frame_index(seg.id)?;
            let corrupt = || {
                Error::internal(format!(
                    "footage index: segment {} of {camera} has a corrupt frame index",
                    seg.id
                ))
            };
            let timing = Timing::decode(&timing).ok_or_else(corrupt)?;
            let keyframes = decode_keyframes(&keyframes).ok_or_else(corrupt)?;
            let offsets: Vec<i64> = timing.offsets().map(|o| seg.start_ms + o as i64).collect();
            if offsets.len() < seg.frames as usize {
                return Err(corrupt());
            }
            // The last keyframe at or before the range start.
            let first = keyframes
                .iter()
                .rev()
                .find(|&&f| offsets.get(f as usize).is_some_and(|&t| t <= from_ms))
                .or(keyframes.first())
                .copied()
                .ok_or_else(corrupt)?;
            let path = self.path_of(&seg.file);
            let file = File::open(&path).map_err(io_err("cannot open", &path))?;
            let truncated = |what: &str| {
                io_err("truncated sample file", &path)(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    what.to_string(),
                ))
            };
            let key_set: std::collections::HashSet<u64> = keyframes.iter().copied().collect();
            let mut samples = Vec::new();
            let mut at = 0u64;
            for n in 0..seg.frames {
                if offsets[n as usize] >= to_ms {
                    break;
                }
                let mut len = [0u8; 4];
                file.read_exact_at(&mut len, at)
                    .map_err(io_err("truncated sample file", &path))?;
                let size = u32::from_be_bytes(len);
                if at + 4 + size as u64 > seg.bytes {
                    return Err(truncated("a frame runs past the indexed end"));
                }
                if n >= first {
                    samples.push(SampleRef {
                        offset: at + 4,
                        size,
                        wall_ms: offsets[n as usize],
                        keyframe: key_set.contains(&n),
                        index: n,
                    });
                }
                at += 4 + size as u64;
            }
            layouts.push(SegmentLayout {
                segment: seg.clone(),
                path,
                samples,
                end_ms: offsets.last().copied().unwrap_or(seg.start_ms),
            });
        }
        Ok((coverage, layouts))
    }

    /// The cipher that opens a sealed segment's frames.
    fn opener(&self, seg: &Segment) -> Result<Option<seal::SegmentCipher>, Error> {
        if !seg.sealed {
            return Ok(None);
        }
        let key = self.seal_key.get().ok_or_else(|| {
            Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "segment {} of camera '{}' holds encrypted originals and no originals key \
                     was given to open it",
                    seg.id, seg.camera
                ),
            )
        })?;
        let salt = self.seal_salt(seg.id)?.unwrap_or_default();
        Ok(Some(seal::SegmentCipher::new(key, &salt)))
    }

    /// Calls `each` for every frame of `camera` in `[from_ms, to_ms)`, starting at the keyframe
    /// at or before `from_ms` so the first frame decodes. Sealed frames come decrypted.
    pub fn read(
        &self,
        camera: &str,
        from_ms: i64,
        to_ms: i64,
        mut each: impl FnMut(StoredFrame) -> Result<(), Error>,
    ) -> Result<Coverage, Error> {
        use std::os::unix::fs::FileExt;
        let (coverage, layouts) = self.layout(camera, from_ms, to_ms)?;
        for layout in layouts {
            let path = &layout.path;
            let file = File::open(path).map_err(io_err("cannot open", path))?;
            let cipher = self.opener(&layout.segment)?;
            for s in layout.samples {
                let mut data = vec![0u8; s.size as usize];
                file.read_exact_at(&mut data, s.offset)
                    .map_err(io_err("truncated sample file", path))?;
                if let Some(c) = &cipher {
                    data = c.open(s.index, &data).map_err(|_| {
                        Error::new(
                            ErrorKind::PermissionDenied,
                            format!(
                                "{}: frame {} does not decrypt (damaged, altered, or another \
                                 device's key)",
                                path.display(),
                                s.index
                            ),
                        )
                    })?;
                }
                each(StoredFrame {
                    wall_ms: s.wall_ms,
                    keyframe: s.keyframe,
                    format: layout.segment.format,
                    data,
                })?;
            }
        }
        Ok(coverage)
    }

    /// Places (or replaces) a hold: footage it covers is never evicted.
    pub fn hold(&self, hold: &Hold) -> Result<(), Error> {
        if hold.from_ms >= hold.to_ms {
            return Err(Error::invalid_input(format!(
                "hold {}: empty or reversed time range",
                hold.id
            )));
        }
        self.db()
            .execute(
                "INSERT OR REPLACE INTO holds (id, camera, from_ms, to_ms, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hold.id, hold.camera, hold.from_ms, hold.to_ms, hold.reason],
            )
            .map_err(db_err("place hold"))?;
        Ok(())
    }

    pub fn release(&self, hold_id: &str) -> Result<bool, Error> {
        Ok(self
            .db()
            .execute("DELETE FROM holds WHERE id = ?1", [hold_id])
            .map_err(db_err("release hold"))?
            > 0)
    }

    pub fn holds(&self) -> Result<Vec<Hold>, Error> {
        let db = self.db();
        let mut st = db
            .prepare("SELECT id, camera, from_ms, to_ms, reason FROM holds ORDER BY id")
            .map_err(db_err("list holds"))?;
        st.query_map([], |r| {
            Ok(Hold {
                id: r.get(0)?,
                camera: r.get(1)?,
                from_ms: r.get(2)?,
                to_ms: r.get(3)?,
                reason: r.get(4)?,
            })
        })
        .map_err(db_err("list holds"))?
        .collect::<Result<_, _>>()
        .map_err(db_err("list holds"))
    }

    /// Bytes of footage indexed (closed and open segments).
    pub fn used_bytes(&self) -> Result<u64, Error> {
        let used: i64 = self
            .db()
            .query_row("SELECT coalesce(sum(bytes), 0) FROM segments", [], |r| {
                r.get(0)
            })
            .map_err(db_err("sum sizes"))?;
        Ok(used as u64)
    }

    /// Free bytes on the store's file system (for unprivileged writers).
    pub fn free_bytes(&self) -> Result<u64, Error> {
        let st = rustix::fs::statvfs(&self.root).map_err(|e| {
            Error::wrap(
                ErrorKind::Internal,
                format!("cannot read free space of {}", self.root.display()),
                std::io::Error::from(e),
            )
        })?;
        Ok(st.f_bavail * st.f_frsize)
    }

    /// The most footage may use now: the configured quota, and no more than leaves
    /// `min_free` bytes free on the disk.
    pub fn volume_limit(&self, quota: Option<u64>, min_free: u64) -> Result<u64, Error> {
        let (used, free) = (self.used_bytes()?, self.free_bytes()?);
        let by_floor = (used + free).saturating_sub(min_free);
        Ok(quota.map_or(by_floor, |q| q.min(by_floor)))
    }

    /// Evicts what the retention policy says must go (never held footage, never a segment
    /// being written); returns the plan carried out.
    pub fn enforce(
        &self,
        cameras: &BTreeMap<String, CameraRetention>,
        volume_max_bytes: Option<u64>,
        now_ms: i64,
    ) -> Result<Plan, Error> {
        let facts: Vec<SegmentFacts> = self
            .segments()?
            .into_iter()
            .filter(|s| !s.open)
            .map(|s| SegmentFacts {
                id: s.id,
                camera: s.camera,
                start_ms: s.start_ms,
                end_ms: s.end_ms,
                bytes: s.bytes,
            })
            .collect();
        let plan = retention::plan(&facts, &self.holds()?, cameras, volume_max_bytes, now_ms);
        for id in &plan.evict {
            match self.delete(*id) {
                Err(e) if e.kind() == ErrorKind::ResourceExhausted => {
                    self.release_ballast();
                    self.delete(*id)?;
                }
                other => other?,
            }
        }
        if !plan.evict.is_empty() {
            self.restore_ballast();
        }
        Ok(plan)
    }

    /// Deletes a segment through the garbage list.
    fn delete(&self, id: i64) -> Result<(), Error> {
        let file: String = {
            let mut db = self.db();
            let tx = db.transaction().map_err(db_err("delete"))?;
            let camera: String = tx
                .query_row("SELECT camera FROM segments WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .map_err(db_err("delete"))?;
            let file = segment_file(&camera, id);
            tx.execute("INSERT OR IGNORE INTO garbage (file) VALUES (?1)", [&file])
                .map_err(db_err("delete"))?;
            tx.execute("DELETE FROM segments WHERE id = ?1", [id])
                .map_err(db_err("delete"))?;
            tx.commit().map_err(db_err("delete"))?;
            file
        };
        let path = self.path_of(&file);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot remove", &path)(e)),
        }
        self.db()
            .execute("DELETE FROM garbage WHERE file = ?1", [&file])
            .map_err(db_err("delete"))?;
        Ok(())
    }

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

impl Drop for Store {
    fn drop(&mut self) {
        if !self.writable {
            return;
        }
        // Fold the write-ahead log into the index so it rests at its true size.
        let _ = self
            .db()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
}

fn read_dir_paths(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    Ok(std::fs::read_dir(dir)
        .map_err(io_err("cannot list", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect())
}

/// The whole frames in the first `len` bytes of a sample file: (count, bytes).
fn whole_frames(file: &File, len: u64) -> std::io::Result<(u64, u64)> {
    let mut reader = std::io::BufReader::new(file.try_clone()?.take(len));
    let (mut frames, mut at) = (0u64, 0u64);
    loop {
        let mut l = [0u8; 4];
        if reader.read_exact(&mut l).is_err() {
            return Ok((frames, at));
        }
        let n = u32::from_be_bytes(l) as u64;
        if at + 4 + n > len {
            return Ok((frames, at));
        }
        std::io::copy(&mut (&mut reader).take(n), &mut std::io::sink())?;
        at += 4 + n;
        frames += 1;
    }
}

fn sha256_of(path: &Path, len: u64) -> Result<[u8; 32], Error> {
    let file = File::open(path).map_err(io_err("cannot read", path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file.take(len), &mut hasher).map_err(io_err("cannot read", path))?;
    Ok(hasher.finalize().into())
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync directory", dir))
}

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

struct OpenSegment {
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
