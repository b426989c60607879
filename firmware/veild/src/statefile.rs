//! Small JSON files in `state/` that the page edits (cameras, masks, fleet settings): written
//! to a temporary file, synced, then renamed, so a power cut leaves the old or the new file,
//! never half of one. A file that cannot be used is copied aside before anything replaces it.

use std::path::Path;

use serde::Serialize;
use veil_core::{Error, ErrorKind};

pub fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let body = serde_json::to_vec_pretty(value).expect("state files serialize");
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, body)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            Error::wrap(
                ErrorKind::Unavailable,
                format!("cannot save {}", path.display()),
                e,
            )
        })
}

/// Keeps a damaged or invalid state file as `<name>.damaged` (the newest one), so the next
/// save from the page does not destroy what a technician may still want to recover.
pub fn set_aside(path: &Path) -> Option<std::path::PathBuf> {
    let mut name = path.file_name()?.to_os_string();
    name.push(".damaged");
    let aside = path.with_file_name(name);
    std::fs::copy(path, &aside).ok().map(|_| aside)
}
