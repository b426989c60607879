//! The board profiles of `boards/`, embedded so one binary carries them all.

use veil_core::board::{Arch, BoardProfile};

/// (name, file text) of every profile in `boards/`. A test checks this list against the folder.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("imx8mp", include_str!("../../../boards/imx8mp.toml")),
    ("qemuarm64", include_str!("../../../boards/qemuarm64.toml")),
    ("rk3588", include_str!("../../../boards/rk3588.toml")),
    ("rpi4-64", include_str!("../../../boards/rpi4-64.toml")),
    ("rpi5", include_str!("../../../boards/rpi5.toml")),
    (
        "x86_64-dev",
        include_str!("../../../boards/x86_64-dev.toml"),
    ),
];

/// The profile used when none is named: the plainest one for this CPU.
pub fn default_name() -> &'static str {
    match Arch::current() {
        Some(Arch::Aarch64) => "qemuarm64",
        _ => "x86_64-dev",
    }
}

pub fn names() -> Vec<&'static str> {
    EMBEDDED.iter().map(|(n, _)| *n).collect()
}

/// Loads a profile by name, or explains which names exist.
pub fn load(name: &str) -> Result<BoardProfile, String> {
    let (_, text) = EMBEDDED.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        format!(
            "unknown board '{name}': known boards are {}",
            names().join(", ")
        )
    })?;
    BoardProfile::parse(name, text).map_err(|e| format!("board profile '{name}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_in_the_folder_is_embedded_and_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../boards");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        assert_eq!(on_disk, names(), "boards/ and EMBEDDED differ");
        for name in names() {
            let profile = load(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(profile.name, name);
        }
        for required in [
            "x86_64-dev",
            "rpi4-64",
            "rpi5",
            "imx8mp",
            "rk3588",
            "qemuarm64",
        ] {
            assert!(names().contains(&required), "{required} missing");
        }
    }

    #[test]
    fn unknown_board_lists_the_known_ones() {
        let e = load("rpi9").unwrap_err();
        assert!(
            e.contains("unknown board 'rpi9'") && e.contains("rpi5"),
            "{e}"
        );
    }

    #[test]
    fn the_default_board_exists() {
        load(default_name()).unwrap();
    }
}
