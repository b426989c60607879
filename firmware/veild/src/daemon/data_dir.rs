//! The data directory: one root, one folder per kind of data, and a lock.

use std::fs::File;
use std::path::{Path, PathBuf};

use veil_core::{Error, ErrorKind};

/// The data directory: one root, one folder per kind of data, and a lock so two daemons
/// never write the same footage.
pub struct DataDir {
    pub root: PathBuf,
    _lock: File,
}

/// Sub-folders of the data directory, created at start.
pub const DATA_SUBDIRS: &[&str] = &["state", "footage", "exports", "tmp"];

impl DataDir {
    pub fn open(root: &Path) -> Result<DataDir, Error> {
        for sub in DATA_SUBDIRS {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| {
                Error::wrap(
                    ErrorKind::Unavailable,
                    format!("cannot create {}", dir.display()),
                    e,
                )
            })?;
        }
        let lock_path = root.join("veil.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                Error::wrap(
                    ErrorKind::Unavailable,
                    format!("cannot open {}", lock_path.display()),
                    e,
                )
            })?;
        lock.try_lock().map_err(|_| {
            Error::new(
                ErrorKind::Conflict,
                format!(
                    "data directory {} is in use by another veild (lock file {})",
                    root.display(),
                    lock_path.display()
                ),
            )
        })?;
        // Leftovers of an interrupted write are never valid data.
        let tmp = root.join("tmp");
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(DataDir {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }
}
