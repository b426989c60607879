//! The device's secrets: 32-byte keys in files under `state/`, readable by veild alone (mode
//! 0600), created on first use from the kernel's random source. On boards with a hardware key
//! store (i.MX CAAM, OP-TEE) the state partition is where a sealed blob would be unwrapped to;
//! the format of the key itself does not change.

use std::io::Write;
use std::path::Path;

use veil_core::{Error, ErrorKind};

/// The secret in `state_dir/name`, created if missing. `loss` says what losing it means, for
/// the message when the file is damaged.
pub fn secret(state_dir: &Path, name: &str, loss: &str) -> Result<[u8; 32], Error> {
    if let Some(existing) = existing(state_dir, name, loss)? {
        return Ok(existing);
    }
    let path = state_dir.join(name);
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)
        .map_err(|e| Error::internal(format!("no randomness for {name}: {e}")))?;
    std::fs::create_dir_all(state_dir)
        .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot create the state dir", e))?;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&seed)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(state_dir)?.sync_all()
    };
    write().map_err(|e| {
        Error::wrap(
            ErrorKind::Internal,
            format!("cannot write {}", path.display()),
            e,
        )
    })?;
    Ok(seed)
}

/// The secret in `state_dir/name`, if it exists.
pub fn existing(state_dir: &Path, name: &str, loss: &str) -> Result<Option<[u8; 32]>, Error> {
    let path = state_dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => bytes.try_into().map(Some).map_err(|_| {
            Error::invalid_input(format!(
                "{} is not a 32-byte key: restore it from backup ({loss})",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::wrap(
            ErrorKind::Internal,
            format!("cannot read {}", path.display()),
            e,
        )),
    }
}

/// Name of the key kept originals are sealed with.
pub const ORIGINALS_KEY: &str = "originals-aes256.key";
/// What losing it means.
pub const ORIGINALS_LOSS: &str =
    "without it the kept originals on this device cannot be opened by anyone";

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_is_made_once_private_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(existing(dir.path(), "k", "x").unwrap(), None);
        let a = secret(dir.path(), "k", "x").unwrap();
        assert_eq!(secret(dir.path(), "k", "x").unwrap(), a);
        assert_eq!(existing(dir.path(), "k", "x").unwrap(), Some(a));
        let mode = std::fs::metadata(dir.path().join("k"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_ne!(secret(dir.path(), "other", "x").unwrap(), a);
        std::fs::write(dir.path().join("k"), b"short").unwrap();
        let e = secret(dir.path(), "k", "exports break").unwrap_err();
        assert!(
            e.message().contains("not a 32-byte key") && e.message().contains("exports break"),
            "{e}"
        );
    }
}
