//! Board profiles: what a supported board has and how Veil should use it.
//!
//! One TOML file per board in `boards/`, embedded in the daemon. A profile names the CPU
//! architecture, the H.264 encoder, the detector backend and its hardware delegate, the
//! thermal sensor, the default storage path and camera defaults. `veild run --board NAME`
//! picks one; unset, the default for the CPU is used.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardProfile {
    /// Equals the file name without `.toml`.
    pub name: String,
    pub description: String,
    pub arch: Arch,
    pub encoder: EncoderProfile,
    pub detector: DetectorProfile,
    pub thermal: ThermalProfile,
    pub storage: StorageProfile,
    pub camera_defaults: CameraDefaults,
    /// How many anonymized encodes at once the board sustains next to recording.
    pub max_live_encodes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Aarch64,
    X86_64,
}

impl Arch {
    /// The architecture this binary was built for.
    pub fn current() -> Option<Arch> {
        match std::env::consts::ARCH {
            "aarch64" => Some(Arch::Aarch64),
            "x86_64" => Some(Arch::X86_64),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum EncoderProfile {
    /// Software H.264 (openh264), any CPU.
    Openh264 { threads: u32 },
    /// Hardware H.264 through a V4L2 memory-to-memory device.
    V4l2m2m { device: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorProfile {
    pub backend: DetectorBackend,
    pub delegate: Delegate,
    /// Shared library of the delegate, for external delegates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate_library: Option<PathBuf>,
    /// CPU threads the detector may use.
    pub threads: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorBackend {
    /// Pure-Rust inference; runs everywhere.
    Tract,
    /// TensorFlow Lite / LiteRT C runtime, with a hardware delegate.
    Tflite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delegate {
    None,
    Xnnpack,
    /// i.MX 8M Plus NPU through the VeriSilicon VX delegate (external library).
    Vx,
    /// Coral Edge TPU (external library).
    Edgetpu,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThermalProfile {
    /// sysfs file with the SoC temperature in millidegrees Celsius.
    pub sensor: PathBuf,
    /// Above this the device sheds optional work (previews, extra live encodes).
    pub throttle_celsius: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageProfile {
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraDefaults {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// Checks a profile name: a file stem of lowercase letters, digits, `-` and `_`.
pub fn check_profile_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("'{name}' is not a board profile name"))
    }
}

impl BoardProfile {
    /// Parses a profile file; `stem` is the file name without `.toml`. Errors name the key.
    pub fn parse(stem: &str, text: &str) -> Result<BoardProfile, String> {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| format!("not valid TOML: {}", e.message().trim()))?;
        let profile: BoardProfile = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let path = e.path().to_string();
                format!("key '{path}': {}", e.into_inner().message())
            })?;
        profile.validate(stem)?;
        Ok(profile)
    }

    fn validate(&self, stem: &str) -> Result<(), String> {
        check_profile_name(&self.name)?;
        if self.name != stem {
            return Err(format!(
                "key 'name': '{}' differs from the file name '{stem}'",
                self.name
            ));
        }
        match &self.encoder {
            EncoderProfile::Openh264 { threads } if !(1..=16).contains(threads) => {
                return Err(format!(
                    "key 'encoder.threads': must be 1 to 16, found {threads}"
                ));
            }
            EncoderProfile::V4l2m2m { device } if !device.starts_with("/dev/") => {
                return Err(format!(
                    "key 'encoder.device': '{}' must be a /dev path",
                    device.display()
                ));
            }
            _ => {}
        }
        let d = &self.detector;
        let external = matches!(d.delegate, Delegate::Vx | Delegate::Edgetpu);
        if external && d.delegate_library.is_none() {
            return Err(
                "key 'detector.delegate_library': an external delegate needs its library path"
                    .into(),
            );
        }
        if d.delegate != Delegate::None && d.backend != DetectorBackend::Tflite {
            return Err("key 'detector.delegate': delegates need backend = \"tflite\"".into());
        }
        if !(1..=16).contains(&d.threads) {
            return Err(format!(
                "key 'detector.threads': must be 1 to 16, found {}",
                d.threads
            ));
        }
        if !self.thermal.sensor.is_absolute() {
            return Err("key 'thermal.sensor': must be an absolute path".into());
        }
        if !(40.0..=110.0).contains(&self.thermal.throttle_celsius) {
            return Err("key 'thermal.throttle_celsius': must be 40 to 110".into());
        }
        if !self.storage.data_dir.is_absolute() {
            return Err("key 'storage.data_dir': must be an absolute path".into());
        }
        let c = &self.camera_defaults;
        if !c.width.is_multiple_of(2)
            || !c.height.is_multiple_of(2)
            || c.width < 64
            || c.height < 64
        {
            return Err(
                "key 'camera_defaults': width and height must be even and at least 64".into(),
            );
        }
        if !(1..=120).contains(&c.fps) {
            return Err("key 'camera_defaults.fps': must be 1 to 120".into());
        }
        if !(1..=32).contains(&self.max_live_encodes) {
            return Err("key 'max_live_encodes': must be 1 to 32".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RPI4: &str = r#"
        name = "rpi4-64"
        description = "Raspberry Pi 4"
        arch = "aarch64"
        max_live_encodes = 1
        encoder = { kind = "v4l2m2m", device = "/dev/video11" }
        detector = { backend = "tflite", delegate = "xnnpack", threads = 3 }
        thermal = { sensor = "/sys/class/thermal/thermal_zone0/temp", throttle_celsius = 80.0 }
        storage = { data_dir = "/data/veil" }
        camera_defaults = { width = 1280, height = 720, fps = 15 }
    "#;

    #[test]
    fn a_good_profile_parses() {
        let p = BoardProfile::parse("rpi4-64", RPI4).unwrap();
        assert_eq!(p.arch, Arch::Aarch64);
        assert_eq!(
            p.encoder,
            EncoderProfile::V4l2m2m {
                device: "/dev/video11".into()
            }
        );
    }

    #[test]
    fn name_must_match_the_file() {
        let e = BoardProfile::parse("rpi5", RPI4).unwrap_err();
        assert!(e.contains("differs from the file name"), "{e}");
    }

    #[test]
    fn bad_profiles_name_the_key() {
        let e =
            BoardProfile::parse("rpi4-64", &RPI4.replace("/dev/video11", "video11")).unwrap_err();
        assert!(e.starts_with("key 'encoder.device'"), "{e}");
        let e = BoardProfile::parse("rpi4-64", &RPI4.replace("\"xnnpack\"", "\"vx\"")).unwrap_err();
        assert!(e.contains("delegate_library"), "{e}");
        let e = BoardProfile::parse(
            "rpi4-64",
            &RPI4.replace("threads = 3", "threads = 3, extra = 1"),
        )
        .unwrap_err();
        assert!(e.starts_with("key 'detector.extra'"), "{e}");
    }
}
