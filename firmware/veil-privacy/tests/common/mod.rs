//! Helpers shared by the tests on fetched models and clips.

use std::path::{Path, PathBuf};

/// `$var/name`, which must exist when `$var` is set; `None` (the test skips, saying so) when
/// it is not (a plain `cargo test`; `scripts/test` sets it).
pub fn fetched(var: &str, name: &str) -> Option<PathBuf> {
    let Some(dir) = std::env::var_os(var) else {
        eprintln!("{var} unset: skipping the test on {name} (scripts/test fetches it)");
        return None;
    };
    let path = Path::new(&dir).join(name);
    assert!(path.is_file(), "{} missing", path.display());
    Some(path)
}
