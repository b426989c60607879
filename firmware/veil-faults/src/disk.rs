//! A disk that fills up: a tmpfs of a few MiB mounted on a temporary directory for the life of
//! the value (mounting needs root, as on the CI machine and on the device). Writes past its
//! size fail with ENOSPC, exactly as a full data partition does.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB on a new temporary directory.
    pub fn mount(mib: u32) -> SmallDisk {
        let dir = std::env::temp_dir().join(format!(
            "veil-small-disk-{}-{}",
            std::process::id(),
            next_id()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a small tmpfs on {} needs root", dir.display());
        SmallDisk { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Frees room by deleting `file` (relative to the disk), as a technician would.
    pub fn free(&self, file: &str) {
        let _ = std::fs::remove_file(self.dir.join(file));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a process the test started may still hold a file open on it.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn next_id() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
