//! Recovery at open: what a crash or power cut left half done is finished or undone, so the
//! index matches the disk.

use std::fs::OpenOptions;

use rusqlite::params;
use veil_core::Error;

use crate::codec::{Timing, decode_keyframes, encode_keyframes};

use crate::files::*;
use crate::index::*;

impl Store {
    pub(crate) fn recover(&self) -> Result<RecoveryReport, Error> {
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
    pub(crate) fn frame_index(&self, id: i64) -> Result<(Vec<u8>, Vec<u8>), Error> {
        self.db()
            .query_row(
                "SELECT timing, keyframes FROM segments WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db_err("read segment"))
    }

    /// The salt a sealed segment's key is derived with.
    pub(crate) fn seal_salt(&self, id: i64) -> Result<Option<Vec<u8>>, Error> {
        self.db()
            .query_row("SELECT seal_salt FROM segments WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .map_err(db_err("read segment"))
    }

    /// Cuts an open segment back to its last durable frame and closes it; returns the bytes cut.
    pub(crate) fn close_after_crash(&self, seg: &Segment, len: u64) -> Result<u64, Error> {
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
}
