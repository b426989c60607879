//! Segment files on disk: their names, whole frames in a file cut short, hashes and syncs.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use veil_core::{Error, ErrorKind};

pub(crate) fn io_err<'a>(
    what: &'a str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| {
        let kind = if e.raw_os_error() == Some(28) {
            ErrorKind::ResourceExhausted
        } else {
            ErrorKind::Internal
        };
        Error::wrap(kind, format!("{what} {}", path.display()), e)
    }
}

/// Where a segment's samples live, relative to the store root.
pub(crate) fn segment_file(camera: &str, id: i64) -> String {
    format!("{camera}/{id}.seg")
}

pub(crate) fn read_dir_paths(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    Ok(std::fs::read_dir(dir)
        .map_err(io_err("cannot list", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect())
}

/// The whole frames in the first `len` bytes of a sample file: (count, bytes).
pub(crate) fn whole_frames(file: &File, len: u64) -> std::io::Result<(u64, u64)> {
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

pub(crate) fn sha256_of(path: &Path, len: u64) -> Result<[u8; 32], Error> {
    let file = File::open(path).map_err(io_err("cannot read", path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file.take(len), &mut hasher).map_err(io_err("cannot read", path))?;
    Ok(hasher.finalize().into())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync directory", dir))
}
