//! Everything `veild` decides before it starts: the config layers, the board, the data dir.

use std::path::{Path, PathBuf};

use veil_core::board::BoardProfile;
use veil_core::config::{self, Config, ConfigIssue};
use veil_core::id::DeviceId;

/// Where the daemon looks for its config when none is named.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/veil/veil.toml";

/// A failure to configure: one line per problem, naming the file and the key. Exit code 2.
#[derive(Debug)]
pub struct ConfigError {
    pub lines: Vec<String>,
}

impl ConfigError {
    fn one(line: String) -> Self {
        ConfigError { lines: vec![line] }
    }
}

/// How the daemon was asked to start.
#[derive(Debug, Default, Clone)]
pub struct StartOptions {
    pub config_path: Option<PathBuf>,
    pub dev: bool,
    pub board: Option<String>,
}

/// The resolved settings the daemon runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub board: BoardProfile,
    pub device_id: DeviceId,
    pub data_dir: PathBuf,
    /// The file the config came from, if any (for status and logs).
    pub source: String,
    /// Where the detection models are.
    pub model_dir: PathBuf,
    /// The firmware image's version (`/etc/veil-release`), else the daemon's own.
    pub firmware_version: String,
}

/// Where a firmware image says which version it is (`VERSION=…`, written by scripts/image).
pub const RELEASE_FILE: &str = "/etc/veil-release";

/// The image's version from its release file's text, else the daemon's own version.
pub fn firmware_version(release: Option<&str>) -> String {
    release
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("VERSION="))
                .map(|v| v.trim().trim_matches('"').to_string())
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
}

/// The built-in development defaults, a layer beneath any config file.
fn dev_layer(cwd: &Path) -> String {
    let data_dir = cwd.join(".veil-dev");
    format!(
        r#"
[device]
id = "veil-dev"
name = "Veil (development)"
[storage]
data_dir = {data_dir}
[http]
listen = "127.0.0.1:8080"
[[cameras]]
id = "synthetic-1"
name = "Test pattern"
source = {{ kind = "synthetic" }}
"#,
        data_dir = toml::Value::String(data_dir.to_string_lossy().into_owned())
    )
}

/// Reads and checks the configuration. `env` is the process environment.
pub fn load(opts: &StartOptions, env: &[(String, String)]) -> Result<Settings, ConfigError> {
    let mut layers = Vec::new();
    if opts.dev {
        let cwd = std::env::current_dir()
            .map_err(|e| ConfigError::one(format!("cannot read the current directory: {e}")))?;
        layers.push(dev_layer(&cwd));
    }
    let (path, required) = match &opts.config_path {
        Some(p) => (p.clone(), true),
        None if opts.dev => (PathBuf::new(), false),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let mut source = if opts.dev {
        "built-in development defaults".to_string()
    } else {
        "built-in defaults".to_string()
    };
    if !path.as_os_str().is_empty() {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                layers.push(text);
                source = path.display().to_string();
            }
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ConfigError::one(format!(
                    "config {}: cannot read: {e}",
                    path.display()
                )));
            }
        }
    }
    let layer_refs: Vec<&str> = layers.iter().map(String::as_str).collect();
    let config = config::parse_layered(&layer_refs, env).map_err(|issues| ConfigError {
        lines: issues.iter().map(|i| line(&source, i)).collect(),
    })?;

    let board_name = opts
        .board
        .clone()
        .or_else(|| config.device.board.clone())
        .unwrap_or_else(|| crate::boards::default_name().to_string());
    let board = crate::boards::load(&board_name)
        .map_err(|e| ConfigError::one(format!("config {source}: {e}")))?;
    let data_dir = config
        .storage
        .data_dir
        .clone()
        .unwrap_or_else(|| board.storage.data_dir.clone());
    let device_id = match &config.device.id {
        Some(id) => id.clone(),
        None => derived_device_id(),
    };
    // In development the models come from the fetch-models cache unless configured.
    let model_dir = match &config.detection.model_dir {
        Some(dir) => dir.clone(),
        None if opts.dev => env
            .iter()
            .find(|(k, _)| k == "VEIL_MODEL_DIR")
            .map(|(_, v)| PathBuf::from(v))
            .or_else(|| {
                let home = env.iter().find(|(k, _)| k == "HOME")?;
                Some(Path::new(&home.1).join(".cache/veil/models"))
            })
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_MODEL_DIR)),
        None => PathBuf::from(config::DEFAULT_MODEL_DIR),
    };
    Ok(Settings {
        config,
        board,
        device_id,
        data_dir,
        source,
        model_dir,
        firmware_version: firmware_version(std::fs::read_to_string(RELEASE_FILE).ok().as_deref()),
    })
}

impl Settings {
    /// How the privacy engines find and run their models.
    pub fn detection(&self) -> veil_privacy::DetectionSetup {
        use veil_core::board::{Delegate, DetectorBackend};
        use veil_privacy::litert::{Accelerator, LiteRtOptions};
        let d = &self.config.detection;
        let backend = match d.backend.unwrap_or(self.board.detector.backend) {
            DetectorBackend::Tract => veil_privacy::Backend::Tract,
            DetectorBackend::Tflite => veil_privacy::Backend::LiteRt(LiteRtOptions {
                library: d
                    .runtime_library
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("libLiteRt.so")),
                accelerator: match self.board.detector.delegate {
                    Delegate::None | Delegate::Xnnpack => Accelerator::Cpu,
                    Delegate::Vx | Delegate::Edgetpu => Accelerator::Npu,
                },
            }),
        };
        veil_privacy::DetectionSetup {
            model_dir: self.model_dir.clone(),
            backend,
            face: veil_privacy::face::FaceSettings {
                min_score: d.face_min_score,
                tile: d.face_tile,
                ..Default::default()
            },
            plate: veil_privacy::plate::PlateSettings {
                min_width: d.plate_min_width,
                ..Default::default()
            },
        }
    }
}

fn line(source: &str, issue: &ConfigIssue) -> String {
    format!("config {source}: {issue}")
}

/// `veil-` and the first 12 hex digits of the systemd machine id: stable for the life of the
/// installed system, unique across a fleet.
fn derived_device_id() -> DeviceId {
    let machine_id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let hex: String = machine_id
        .trim()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    let id = if hex.len() == 12 {
        format!("veil-{hex}")
    } else {
        "veil-unknown".to_string()
    };
    DeviceId::new(id).expect("derived id is a valid slug")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_defaults_give_one_synthetic_camera_on_loopback() {
        let s = load(
            &StartOptions {
                dev: true,
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        assert_eq!(s.config.cameras.len(), 1);
        assert_eq!(s.config.http.listen.to_string(), "127.0.0.1:8080");
        assert!(s.data_dir.ends_with(".veil-dev"));
        assert_eq!(s.device_id.as_str(), "veil-dev");
    }

    #[test]
    fn board_from_options_beats_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("veil.toml");
        std::fs::write(&path, "[device]\nboard = \"rpi5\"\n").unwrap();
        let opts = StartOptions {
            config_path: Some(path.clone()),
            ..Default::default()
        };
        assert_eq!(load(&opts, &[]).unwrap().board.name, "rpi5");
        let opts = StartOptions {
            board: Some("imx8mp".into()),
            ..opts
        };
        let s = load(&opts, &[]).unwrap();
        assert_eq!(s.board.name, "imx8mp");
        assert_eq!(s.data_dir, PathBuf::from("/data/veil"));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("veil.toml");
        std::fs::write(&path, "[http]\nlisten = 1\n").unwrap();
        let err = load(
            &StartOptions {
                config_path: Some(path.clone()),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err();
        assert_eq!(err.lines.len(), 1);
        assert!(err.lines[0].starts_with(&format!("config {}: key 'http.listen'", path.display())));
    }
}
