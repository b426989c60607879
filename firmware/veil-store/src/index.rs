//! The index: the SQLite database of segments, its schema and migrations, opening the store,
//! and reading footage back by range.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension};
use veil_core::{Error, ErrorKind};

use crate::codec::{Timing, decode_keyframes};
use crate::seal;

use crate::files::*;
pub use crate::seal::SealKey;

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
pub(crate) const MIGRATIONS: &[&str] = &[
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
    pub(crate) fn code(self) -> i64 {
        match self {
            SampleFormat::AnnexB => 0,
            SampleFormat::Avcc => 1,
        }
    }

    pub(crate) fn from_code(code: i64) -> Option<SampleFormat> {
        match code {
            0 => Some(SampleFormat::AnnexB),
            1 => Some(SampleFormat::Avcc),
            _ => None,
        }
    }
}

/// Size of the reserve file released when the disk is full (see `Store::ballast_path`).
pub(crate) const BALLAST_BYTES: u64 = 256 * 1024;

pub(crate) fn db_err(what: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
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
    pub(crate) root: PathBuf,
    pub(crate) db: Mutex<Connection>,
    /// The next segment id; ids are never reused, so a file name (`CAMERA/ID.seg`) always
    /// means one segment.
    pub(crate) next_id: std::sync::atomic::AtomicI64,
    /// Whether this process owns the store (recovers it, checkpoints it at close).
    pub(crate) writable: bool,
    /// Opens sealed segments (kept originals); set by the daemon from its keystore.
    pub(crate) seal_key: std::sync::OnceLock<SealKey>,
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

    pub(crate) fn open_mode(
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

    pub(crate) fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn path_of(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    /// A file kept only to be deleted when the disk is full, so the index can still commit
    /// the deletions that free space (SQLite needs room for its journal even to delete).
    pub(crate) fn ballast_path(&self) -> PathBuf {
        self.root.join("reserve.bin")
    }

    pub(crate) fn release_ballast(&self) {
        let _ = std::fs::remove_file(self.ballast_path());
    }

    pub(crate) fn restore_ballast(&self) {
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

    pub(crate) fn segments_where(
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
    pub(crate) fn opener(&self, seg: &Segment) -> Result<Option<seal::SegmentCipher>, Error> {
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

    /// Deletes a segment through the garbage list.
    pub(crate) fn delete(&self, id: i64) -> Result<(), Error> {
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
