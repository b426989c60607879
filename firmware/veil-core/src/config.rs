//! The daemon's configuration: schema, defaults, layering and validation.
//!
//! Sources, lowest precedence first: built-in defaults, an optional base layer (the `--dev`
//! defaults), the TOML file, then `VEIL_*` environment variables. Every problem is reported
//! with the key it concerns, so a technician knows what to change; unknown keys are errors,
//! never silently ignored. Parsing is pure: the caller reads the file and the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::id::{CameraId, DeviceId};

/// Environment variables with this prefix override config keys: `VEIL_HTTP__LISTEN` sets
/// `http.listen` (`__` separates table levels, case is folded to lower).
pub const ENV_PREFIX: &str = "VEIL_";
/// Environment variables with the prefix that are not config keys.
pub const ENV_RESERVED: &[&str] = &[
    "VEIL_CONFIG",
    "VEIL_BOARD",
    // Build and test tooling (scripts/test, scripts/fetch-media, scripts/fetch-models); the
    // model cache is also where `--dev` looks for models.
    "VEIL_MEDIA_DIR",
    "VEIL_MODEL_DIR",
    "VEIL_REQUIRE_NASM",
    "VEIL_BLESS",
    "VEIL_S3S_FS",
    "VEIL_RUMQTTD",
    "VEIL_MOTO",
    "VEIL_S3RVER",
    "VEIL_CARGO_DENY",
    "VEIL_WHIP_PEER",
    "VEIL_SCHEMATHESIS",
    "VEIL_BROWSER",
    "VEIL_REQUIRE_E2E",
    "VEIL_TEST_BROKER_PORT",
    "VEIL_TEST_BROKER_DIR",
];
/// At most this many cameras per device; a board profile may allow fewer.
pub const MAX_CAMERAS: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub device: DeviceConfig,
    pub storage: StorageConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub detection: DetectionConfig,
    pub cameras: Vec<CameraConfig>,
    /// The fleet broker; absent: the device runs without fleet control.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttConfig>,
    pub requests: RequestsConfig,
    /// Where exports are uploaded; absent: exports stay on the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadConfig>,
}

/// S3-compatible object storage for exports (AWS S3, MinIO, Garage, Ceph RGW).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadConfig {
    /// `https://host[:port]`; `http://` only to a loopback address.
    pub endpoint: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// Object keys start with this (default: the device id and a `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// PEM file of the CA that signed the endpoint's certificate (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Parts in flight at once.
    #[serde(default = "default_parallel")]
    pub parallel: u32,
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: u32,
    /// Upload bandwidth cap in Mbit/s (unset: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mbit_per_s: Option<u32>,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_parallel() -> u32 {
    5
}
fn default_part_size_mib() -> u32 {
    16
}

fn validate_upload(u: &UploadConfig) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let (scheme, rest) = u.endpoint.split_once("://").unwrap_or(("", ""));
    let host = rest
        .split(['/', '?'])
        .next()
        .unwrap_or_default()
        .rsplit_once(':')
        .map_or(rest.split('/').next().unwrap_or_default(), |(h, _)| h)
        .trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match scheme {
        "https" if !host.is_empty() => {}
        "http" if loopback => {}
        "http" => issues.push(ConfigIssue::at(
            "upload.endpoint",
            format!("plain http:// is allowed only to a loopback address; use https:// for {host}"),
        )),
        _ => issues.push(ConfigIssue::at(
            "upload.endpoint",
            format!("must be https://host[:port], found '{}'", u.endpoint),
        )),
    }
    let bucket_ok = (3..=63).contains(&u.bucket.len())
        && u.bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !bucket_ok {
        issues.push(ConfigIssue::at(
            "upload.bucket",
            format!("must be an S3 bucket name (3 to 63 lowercase letters, digits, '-', '.'), found '{}'", u.bucket),
        ));
    }
    if u.access_key.is_empty() {
        issues.push(ConfigIssue::at("upload.access_key", "must not be empty"));
    }
    if u.secret_key.is_empty() {
        issues.push(ConfigIssue::at("upload.secret_key", "must not be empty"));
    }
    if !(1..=16).contains(&u.parallel) {
        issues.push(ConfigIssue::at(
            "upload.parallel",
            format!("must be 1 to 16, found {}", u.parallel),
        ));
    }
    if !(5..=1024).contains(&u.part_size_mib) {
        issues.push(ConfigIssue::at(
            "upload.part_size_mib",
            format!(
                "must be 5 to 1024 MiB (S3's smallest part is 5 MiB), found {}",
                u.part_size_mib
            ),
        ));
    }
    if u.max_mbit_per_s == Some(0) {
        issues.push(ConfigIssue::at(
            "upload.max_mbit_per_s",
            "must be at least 1, or unset for no cap",
        ));
    }
    if let Some(p) = &u.prefix
        && (p.starts_with('/') || p.contains("..") || p.chars().any(char::is_control))
    {
        issues.push(ConfigIssue::at(
            "upload.prefix",
            format!("must be a relative key prefix without '..', found '{p}'"),
        ));
    }
    issues
}

/// How video requests from the fleet are handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RequestsConfig {
    /// Approve every valid request at once instead of waiting for the owner.
    pub auto_approve: bool,
}

/// The fleet's MQTT broker and how the device signs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtts://host[:port]` (port 8883 by default); `mqtt://` only to a loopback address.
    pub broker: String,
    /// PEM file of the CA(s) that signed the broker's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for brokers that authenticate devices by certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// First level of every topic (`<prefix>/v1/<device id>/...`).
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Seconds between telemetry messages.
    #[serde(default = "default_telemetry_seconds")]
    pub telemetry_seconds: u32,
    /// Seconds between keep-alive pings; the broker declares the device offline after 1.5x.
    #[serde(default = "default_keep_alive_seconds")]
    pub keep_alive_seconds: u32,
}

fn default_topic_prefix() -> String {
    "veil".into()
}
fn default_telemetry_seconds() -> u32 {
    60
}
fn default_keep_alive_seconds() -> u32 {
    30
}

/// A parsed `mqtt.broker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl MqttConfig {
    /// The broker's address, or what is wrong with `mqtt.broker`.
    pub fn address(&self) -> Result<BrokerAddress, String> {
        let (tls, rest) = if let Some(r) = self.broker.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = self.broker.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!(
                "must be mqtts://host[:port] (or mqtt:// to a loopback address), found '{}'",
                self.broker
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
                Ok(p) if p > 0 => (h, p),
                _ => return Err(format!("port '{p}' is not 1 to 65535")),
            },
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return Err(format!("'{}' has no usable host name", self.broker));
        }
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !tls && !loopback {
            return Err(format!(
                "plain mqtt:// is allowed only to a loopback address; use mqtts:// for {host}"
            ));
        }
        Ok(BrokerAddress {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

/// Where the detection models are and what runs them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectionConfig {
    /// Directory of the model files; unset means `/usr/share/veil/models`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<PathBuf>,
    /// `tract` or `tflite`; unset means the board profile's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<crate::board::DetectorBackend>,
    /// The LiteRT runtime library for the `tflite` backend; unset means `libLiteRt.so` from
    /// the library path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_library: Option<PathBuf>,
    /// Side of the square tiles faces are searched in, in pixels (0: the whole frame only).
    pub face_tile: u32,
    /// Face detections scoring below this are ignored.
    pub face_min_score: f32,
    /// Narrowest licence plate searched, in pixels of the camera's picture.
    pub plate_min_width: u32,
}

/// Where the firmware image installs the models.
pub const DEFAULT_MODEL_DIR: &str = "/usr/share/veil/models";

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            model_dir: None,
            backend: None,
            runtime_library: None,
            face_tile: 256,
            face_min_score: 0.35,
            plate_min_width: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    /// Fleet id; unset means derived from the machine id at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<DeviceId>,
    /// Human name shown on the web page and in the registry.
    pub name: String,
    /// Board profile name (a file in `boards/`); unset means the default for the CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub board: Option<String>,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            id: None,
            name: "Veil gateway".into(),
            board: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Root of everything the device writes; unset means the board profile's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Whether cameras record their anonymized stream to the footage store.
    pub record: bool,
    /// Length of a footage segment (the unit of eviction), in seconds.
    pub segment_seconds: u32,
    /// How often written footage is made durable; a power cut loses at most this much.
    pub flush_ms: u32,
    /// Footage older than this is evicted (0: no age limit), unless held.
    pub retention_days: u32,
    /// Most bytes all footage may use (unset: no quota besides the free-space floor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Free space always left on the data partition: the oldest unheld footage is evicted
    /// before the disk gets fuller than this.
    pub min_free_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: None,
            record: true,
            segment_seconds: 60,
            flush_ms: 1000,
            retention_days: 30,
            max_bytes: None,
            min_free_bytes: 512 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port of the local web page and API.
    pub listen: SocketAddr,
    /// HTTPS on `listen` (a self-signed certificate made at first boot, or an installed one).
    /// Plain HTTP is allowed only on a loopback address.
    pub tls: bool,
    /// A plain HTTP listener that only redirects to the HTTPS page (e.g. `0.0.0.0:80`).
    pub redirect_listen: Option<SocketAddr>,
}

impl Default for HttpConfig {
    /// Loopback by default: the device image opens it to the network (`0.0.0.0:443`) where
    /// it is installed.
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: true,
            redirect_listen: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A level (`info`) or per-module directives (`info,veil_media=debug`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub id: CameraId,
    /// Shown to people; defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub source: SourceConfig,
    /// How the camera's anonymized stream is encoded.
    #[serde(default)]
    pub encoder: EncoderConfig,
    /// Static privacy masks: always blanked, whatever detection finds.
    #[serde(default)]
    pub masks: Vec<MaskConfig>,
    /// What the privacy engine hides besides the masks.
    #[serde(default)]
    pub filter: FilterName,
    /// This camera's footage is evicted after this many days (unset: `storage.retention_days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// Most bytes this camera's footage may use (unset: only the volume limits apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// What the footage store keeps of this camera.
    #[serde(default)]
    pub storage: StoragePolicy,
    /// Where the camera is mounted, for investigators looking for cameras near an incident.
    #[serde(default)]
    pub mount: Mount,
    /// Where the camera stands (WGS 84); unset for a vehicle camera, whose position moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// Whether and how the camera is shared live with other domains.
    #[serde(default)]
    pub live: LiveConfig,
}

/// `cameras[].live`: sharing the anonymized picture live (docs/mqtt-api.md, live sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    #[serde(default)]
    pub approval: LiveApproval,
}

/// Who lets a live session on a camera start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LiveApproval {
    /// Every request within capacity starts at once.
    Automatic,
    /// An operator accepts or refuses each request on the web page: the default.
    #[default]
    Operator,
    /// The camera is never shared live.
    Never,
}

impl LiveApproval {
    pub fn as_str(self) -> &'static str {
        match self {
            LiveApproval::Automatic => "automatic",
            LiveApproval::Operator => "operator",
            LiveApproval::Never => "never",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mount {
    #[default]
    Fixed,
    Vehicle,
}

impl Mount {
    pub fn as_str(self) -> &'static str {
        match self {
            Mount::Fixed => "fixed",
            Mount::Vehicle => "vehicle",
        }
    }
}

/// A WGS 84 position in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub lat: f64,
    pub lon: f64,
}

/// What is recorded of a camera (docs/privacy.md explains the trade-off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StoragePolicy {
    /// Only the anonymized stream is recorded: the default.
    #[default]
    Anonymized,
    /// The stream as captured is recorded, encrypted at rest (AES-256-GCM), and anonymized
    /// again on the way out with the filter the recipient is entitled to.
    Originals,
}

impl StoragePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            StoragePolicy::Anonymized => "anonymized",
            StoragePolicy::Originals => "originals",
        }
    }
}

fn validate_mqtt(m: &MqttConfig) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    match m.address() {
        Err(e) => issues.push(ConfigIssue::at("mqtt.broker", e)),
        Ok(a) if a.tls && m.ca_file.is_none() => issues.push(ConfigIssue::at(
            "mqtt.ca_file",
            "is needed for mqtts://: the PEM file of the CA that signed the broker's certificate",
        )),
        Ok(_) => {}
    }
    if m.client_cert.is_some() != m.client_key.is_some() {
        issues.push(ConfigIssue::at(
            if m.client_cert.is_some() {
                "mqtt.client_key"
            } else {
                "mqtt.client_cert"
            },
            "client_cert and client_key go together",
        ));
    }
    if m.password.is_some() && m.username.is_none() {
        issues.push(ConfigIssue::at(
            "mqtt.username",
            "a password needs a username",
        ));
    }
    let prefix_ok = !m.topic_prefix.is_empty()
        && m.topic_prefix.len() <= 64
        && m.topic_prefix.split('/').all(|level| {
            !level.is_empty()
                && level
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !prefix_ok {
        issues.push(ConfigIssue::at(
            "mqtt.topic_prefix",
            format!(
                "must be 1 to 64 characters of letters, digits, '-', '_' in '/'-separated levels, found '{}'",
                m.topic_prefix
            ),
        ));
    }
    if !(5..=3600).contains(&m.telemetry_seconds) {
        issues.push(ConfigIssue::at(
            "mqtt.telemetry_seconds",
            format!("must be 5 to 3600 seconds, found {}", m.telemetry_seconds),
        ));
    }
    if !(5..=1200).contains(&m.keep_alive_seconds) {
        issues.push(ConfigIssue::at(
            "mqtt.keep_alive_seconds",
            format!("must be 5 to 1200 seconds, found {}", m.keep_alive_seconds),
        ));
    }
    issues
}

/// Privacy filter presets (docs/privacy.md says what each hides).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum FilterName {
    /// Static masks only: everything else is shown.
    MasksOnly,
    /// Masks, and every moving object pixelated.
    Motion,
    /// Masks, and every face found by the face model, tracked between detections.
    Faces,
    /// Masks, faces, and licence plates: the default.
    #[default]
    FacesPlates,
    /// Masks, faces, plates, and every moving object: the strictest.
    Strict,
    /// The whole picture as coarse blocks, for traffic monitoring: no model needed.
    Silhouette,
}

impl FilterName {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterName::MasksOnly => "masks-only",
            FilterName::Motion => "motion",
            FilterName::Faces => "faces",
            FilterName::FacesPlates => "faces-plates",
            FilterName::Strict => "strict",
            FilterName::Silhouette => "silhouette",
        }
    }
}

/// A privacy polygon in normalized coordinates: `[x, y]` pairs from 0.0 to 1.0, `[0, 0]` the
/// top-left corner of the picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    pub name: String,
    pub points: Vec<[f64; 2]>,
}

impl MaskConfig {
    pub fn polygon(&self) -> Vec<crate::geometry::Point> {
        self.points
            .iter()
            .map(|&[x, y]| crate::geometry::Point { x, y })
            .collect()
    }
}

/// At most this many masks per camera.
pub const MAX_MASKS: usize = 32;

/// Checks one camera's masks (names, simple polygons inside the frame, count), with keys
/// relative to the camera (`masks[2].points`): the config file and the web page share it.
pub fn check_masks(camera: &str, masks: &[MaskConfig]) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    if masks.len() > MAX_MASKS {
        issues.push(ConfigIssue::at(
            "masks",
            format!(
                "camera '{camera}' has {} masks, at most {MAX_MASKS}",
                masks.len()
            ),
        ));
    }
    for (m, mask) in masks.iter().enumerate() {
        let name = mask.name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            issues.push(ConfigIssue::at(
                format!("masks[{m}].name"),
                "must be 1 to 64 printable characters",
            ));
        }
        if let Err(e) = crate::geometry::check_polygon(&mask.polygon()) {
            issues.push(ConfigIssue::at(
                format!("masks[{m}].points"),
                format!("mask '{}' of camera '{camera}' {e}", mask.name),
            ));
        }
    }
    issues
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderConfig {
    /// Target bitrate in kbit/s; unset picks ~0.1 bit per pixel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<u32>,
    /// Seconds from one keyframe to the next.
    pub keyframe_secs: u32,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            bitrate_kbps: None,
            keyframe_secs: 2,
        }
    }
}

impl CameraConfig {
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.id.as_str())
    }
}

fn yes() -> bool {
    true
}

/// Where a camera's frames come from. More kinds (rtsp, v4l2, file) arrive with the media
/// pipeline; an unknown kind is rejected, not ignored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    /// A moving test pattern with the frame counter and capture time burned into the pixels.
    /// Unset sizes and rate come from the board profile's camera defaults.
    Synthetic {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        height: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fps: Option<u32>,
    },
    /// A USB or CSI camera through V4L2 (uncompressed NV12, YU12 or YUYV modes).
    V4l2 {
        /// The device node, e.g. `/dev/video0`.
        device: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        height: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fps: Option<u32>,
    },
    /// An IP camera over RTSP, H.264 video.
    Rtsp {
        /// `rtsp://host[:port]/path`; may carry `user:password@`.
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
        transport: RtspTransport,
    },
    /// A video file played as a camera: MP4 (H.264), raw H.264 (Annex B) or Y4M.
    File {
        /// Absolute path of the file.
        path: PathBuf,
        /// Start again at the end (default) or stop.
        #[serde(rename = "loop")]
        looped: bool,
        /// Frame rate; MP4 and Y4M files carry their own, raw H.264 defaults to 25.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fps: Option<u32>,
    },
}

/// The source table as written. Read through this flat form (rather than serde's tagged enum,
/// which buffers its content) so that a type error names the exact key, e.g.
/// `cameras[0].source.fps`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: SourceKind,
    width: Option<u32>,
    height: Option<u32>,
    fps: Option<u32>,
    path: Option<PathBuf>,
    #[serde(rename = "loop")]
    looped: Option<bool>,
    url: Option<String>,
    username: Option<String>,
    password: Option<String>,
    transport: Option<RtspTransport>,
    device: Option<PathBuf>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum SourceKind {
    Synthetic,
    File,
    Rtsp,
    V4l2,
}

impl RawSource {
    fn into_config(self) -> Result<SourceConfig, String> {
        let kind = match self.kind {
            SourceKind::Synthetic => "synthetic",
            SourceKind::File => "file",
            SourceKind::Rtsp => "rtsp",
            SourceKind::V4l2 => "v4l2",
        };
        let allowed: &[&str] = match self.kind {
            SourceKind::Synthetic => &["width", "height", "fps"],
            SourceKind::File => &["path", "loop", "fps"],
            SourceKind::Rtsp => &["url", "username", "password", "transport"],
            SourceKind::V4l2 => &["device", "width", "height", "fps"],
        };
        let present = [
            ("width", self.width.is_some()),
            ("height", self.height.is_some()),
            ("fps", self.fps.is_some()),
            ("path", self.path.is_some()),
            ("loop", self.looped.is_some()),
            ("url", self.url.is_some()),
            ("username", self.username.is_some()),
            ("password", self.password.is_some()),
            ("transport", self.transport.is_some()),
            ("device", self.device.is_some()),
        ];
        if let Some((key, _)) = present.iter().find(|(k, set)| *set && !allowed.contains(k)) {
            return Err(format!(
                "`{key}` does not apply to a {kind} source (its keys: {})",
                allowed.join(", ")
            ));
        }
        let required = |name: &str| format!("a {kind} source needs `{name}`");
        Ok(match self.kind {
            SourceKind::Synthetic => SourceConfig::Synthetic {
                width: self.width,
                height: self.height,
                fps: self.fps,
            },
            SourceKind::File => SourceConfig::File {
                path: self.path.ok_or_else(|| required("path"))?,
                looped: self.looped.unwrap_or(true),
                fps: self.fps,
            },
            SourceKind::V4l2 => SourceConfig::V4l2 {
                device: self.device.ok_or_else(|| required("device"))?,
                width: self.width,
                height: self.height,
                fps: self.fps,
            },
            SourceKind::Rtsp => SourceConfig::Rtsp {
                url: self.url.ok_or_else(|| required("url"))?,
                username: self.username,
                password: self.password,
                transport: self.transport.unwrap_or_default(),
            },
        })
    }
}

impl<'de> Deserialize<'de> for SourceConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawSource::deserialize(d)?
            .into_config()
            .map_err(serde::de::Error::custom)
    }
}

impl SourceConfig {
    /// The source's kind as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Synthetic { .. } => "synthetic",
            SourceConfig::File { .. } => "file",
            SourceConfig::Rtsp { .. } => "rtsp",
            SourceConfig::V4l2 { .. } => "v4l2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// RTP interleaved on the RTSP connection: passes firewalls and NAT.
    #[default]
    Tcp,
    Udp,
}

/// One problem in a configuration, tied to the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path (`cameras[0].source.fps`); `None` for a whole-file problem.
    pub key: Option<String>,
    /// The environment variable that set this key, when one did.
    pub env_var: Option<String>,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(key) = &self.key {
            write!(f, "key '{key}': ")?;
        }
        f.write_str(&self.message)?;
        if let Some(var) = &self.env_var {
            write!(f, " (set by environment variable {var})")?;
        }
        Ok(())
    }
}

impl ConfigIssue {
    fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            key: Some(key.into()),
            env_var: None,
            message: message.into(),
        }
    }
}

/// Parses TOML text over the defaults, then applies `VEIL_*` overrides from `env`.
pub fn parse(text: &str, env: &[(String, String)]) -> Result<Config, Vec<ConfigIssue>> {
    parse_layered(&[text], env)
}

/// Like [`parse`] with several TOML layers, each overriding the ones before it (tables merge
/// key by key; arrays and values replace).
pub fn parse_layered(
    layers: &[&str],
    env: &[(String, String)],
) -> Result<Config, Vec<ConfigIssue>> {
    let mut merged = toml::Table::new();
    for text in layers {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| vec![syntax_issue(text, &e)])?;
        merge(&mut merged, table);
    }
    let env_keys = apply_env(&mut merged, env)?;
    let config: Config =
        serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().message().to_string();
            let key = if key == "." { None } else { Some(key) };
            vec![ConfigIssue {
                env_var: key.as_ref().and_then(|k| env_var_for(&env_keys, k)),
                key,
                message,
            }]
        })?;
    let mut issues = config.validate();
    for issue in &mut issues {
        if let Some(key) = &issue.key {
            issue.env_var = env_var_for(&env_keys, key);
        }
    }
    if issues.is_empty() {
        Ok(config)
    } else {
        Err(issues)
    }
}

fn syntax_issue(text: &str, e: &toml::de::Error) -> ConfigIssue {
    let message = e.message().trim().to_string();
    let message = match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    };
    ConfigIssue {
        key: None,
        env_var: None,
        message: format!("not valid TOML: {message}"),
    }
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Applies `VEIL_A__B=value` as `a.b = value`; returns which variable set which key.
fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<BTreeMap<String, String>, Vec<ConfigIssue>> {
    let mut set = BTreeMap::new();
    let mut issues = Vec::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_RESERVED.contains(&var.as_str()) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let key = path.join(".");
        if path.iter().any(|p| p.is_empty()) {
            issues.push(ConfigIssue {
                key: None,
                env_var: Some(var.clone()),
                message: format!(
                    "environment variable {var} is not a config key: use VEIL_<TABLE>__<KEY>, e.g. VEIL_HTTP__LISTEN"
                ),
            });
            continue;
        }
        if path[0] == "cameras" {
            issues.push(ConfigIssue {
                key: Some(key),
                env_var: Some(var.clone()),
                message: "cameras are configured in the config file, not the environment".into(),
            });
            continue;
        }
        match insert_path(table, &path, env_value(raw)) {
            Ok(()) => {
                set.insert(key, var.clone());
            }
            Err(depth) => issues.push(ConfigIssue {
                key: Some(path[..=depth].join(".")),
                env_var: Some(var.clone()),
                message: "is a value, not a table".into(),
            }),
        }
    }
    if issues.is_empty() {
        Ok(set)
    } else {
        Err(issues)
    }
}

/// Sets `path` to `value`, creating tables on the way; on a value where a table is needed,
/// returns the depth of that value.
fn insert_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), usize> {
    let (first, rest) = path.split_first().expect("path has at least one part");
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => insert_path(t, rest, value).map_err(|d| d + 1),
        _ => Err(0),
    }
}

/// An environment value is read as a TOML value when it is one (`8080`, `true`, `"x"`,
/// `[1, 2]`), and as a plain string otherwise (`0.0.0.0:80`, `/var/lib/veil`).
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// The variable that set `key`, a key inside it, or (for an unknown table such as
/// `VEIL_HTPP__LISTEN`, reported at `htpp`) a key below it.
fn env_var_for(env_keys: &BTreeMap<String, String>, key: &str) -> Option<String> {
    env_keys
        .iter()
        .find(|(k, _)| {
            key == k.as_str()
                || key.starts_with(&format!("{k}."))
                || k.starts_with(&format!("{key}."))
        })
        .map(|(_, v)| v.clone())
}

const LOG_LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

fn check_log_level(level: &str) -> Result<(), String> {
    let expected = "expected a level (off, error, warn, info, debug, trace) or directives like 'info,veil_media=debug'";
    if level.trim().is_empty() {
        return Err(format!("is empty: {expected}"));
    }
    for directive in level.split(',') {
        let lvl = match directive.split_once('=') {
            Some((target, lvl)) => {
                let target_ok = !target.is_empty()
                    && target
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
                if !target_ok {
                    return Err(format!("'{directive}' has a bad module name: {expected}"));
                }
                lvl
            }
            None => directive,
        };
        if !LOG_LEVELS.contains(&lvl.trim().to_ascii_lowercase().as_str()) {
            return Err(format!("'{directive}' is not a level: {expected}"));
        }
    }
    Ok(())
}

fn check_fps(fps: Option<u32>, key: &str, issues: &mut Vec<ConfigIssue>) {
    if let Some(fps) = fps
        && !(1..=120).contains(&fps)
    {
        issues.push(ConfigIssue::at(
            key,
            format!("must be 1 to 120 frames per second, found {fps}"),
        ));
    }
}

impl Config {
    /// Checks what types alone cannot: ranges, uniqueness, relations between keys.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let name = self.device.name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            issues.push(ConfigIssue::at(
                "device.name",
                "must be 1 to 64 printable characters",
            ));
        }
        if let Some(board) = &self.device.board
            && crate::board::check_profile_name(board).is_err()
        {
            issues.push(ConfigIssue::at(
                "device.board",
                format!(
                    "'{board}' is not a board profile name (lowercase letters, digits, '-', '_')"
                ),
            ));
        }
        if let Some(m) = &self.mqtt {
            issues.extend(validate_mqtt(m));
        }
        if let Some(u) = &self.upload {
            issues.extend(validate_upload(u));
        }
        let st = &self.storage;
        if !(10..=3600).contains(&st.segment_seconds) {
            issues.push(ConfigIssue::at(
                "storage.segment_seconds",
                format!("must be 10 to 3600 seconds, found {}", st.segment_seconds),
            ));
        }
        if !(100..=10_000).contains(&st.flush_ms) {
            issues.push(ConfigIssue::at(
                "storage.flush_ms",
                format!("must be 100 to 10000 ms, found {}", st.flush_ms),
            ));
        }
        if st.retention_days > 3650 {
            issues.push(ConfigIssue::at(
                "storage.retention_days",
                format!(
                    "must be 0 (no limit) to 3650 days, found {}",
                    st.retention_days
                ),
            ));
        }
        if st.max_bytes.is_some_and(|b| b < 64 * 1024 * 1024) {
            issues.push(ConfigIssue::at(
                "storage.max_bytes",
                "must be at least 67108864 (64 MiB): a smaller quota cannot hold one segment per camera",
            ));
        }
        if let Some(dir) = &self.storage.data_dir
            && !dir.is_absolute()
        {
            issues.push(ConfigIssue::at(
                "storage.data_dir",
                format!("'{}' must be an absolute path", dir.display()),
            ));
        }
        if let Some(dir) = &self.detection.model_dir
            && !dir.is_absolute()
        {
            issues.push(ConfigIssue::at(
                "detection.model_dir",
                format!("'{}' must be an absolute path", dir.display()),
            ));
        }
        let tile = self.detection.face_tile;
        if tile != 0 && !(128..=2048).contains(&tile) {
            issues.push(ConfigIssue::at(
                "detection.face_tile",
                format!("must be 0 (whole frame only) or 128 to 2048 pixels, found {tile}"),
            ));
        }
        let score = self.detection.face_min_score;
        if !(0.05..=0.95).contains(&score) {
            issues.push(ConfigIssue::at(
                "detection.face_min_score",
                format!("must be 0.05 to 0.95, found {score}"),
            ));
        }
        let plate = self.detection.plate_min_width;
        if !(24..=1000).contains(&plate) {
            issues.push(ConfigIssue::at(
                "detection.plate_min_width",
                format!("must be 24 to 1000 pixels, found {plate}"),
            ));
        }
        if self.http.listen.port() == 0 {
            issues.push(ConfigIssue::at(
                "http.listen",
                "port must be 1 to 65535, found 0",
            ));
        }
        if !self.http.tls && !self.http.listen.ip().is_loopback() {
            issues.push(ConfigIssue::at(
                "http.tls",
                format!(
                    "plain HTTP would send passwords and camera pictures in clear on {}: \
                     keep tls = true, or listen on a loopback address",
                    self.http.listen
                ),
            ));
        }
        if let Some(r) = self.http.redirect_listen {
            if !self.http.tls {
                issues.push(ConfigIssue::at(
                    "http.redirect_listen",
                    "redirects to HTTPS need http.tls = true",
                ));
            } else if r == self.http.listen || r.port() == 0 {
                issues.push(ConfigIssue::at(
                    "http.redirect_listen",
                    format!("must be another address:port than http.listen, found {r}"),
                ));
            }
        }
        if let Err(e) = check_log_level(&self.log.level) {
            issues.push(ConfigIssue::at("log.level", e));
        }
        if self.cameras.len() > MAX_CAMERAS {
            issues.push(ConfigIssue::at(
                "cameras",
                format!(
                    "at most {MAX_CAMERAS} cameras, found {}",
                    self.cameras.len()
                ),
            ));
        }
        for (i, cam) in self.cameras.iter().enumerate() {
            let key = |k: &str| format!("cameras[{i}].{k}");
            if let Some(p) = cam.position {
                if !(-90.0..=90.0).contains(&p.lat) {
                    issues.push(ConfigIssue::at(
                        key("position.lat"),
                        format!("must be -90 to 90 degrees, found {}", p.lat),
                    ));
                }
                if !(-180.0..=180.0).contains(&p.lon) {
                    issues.push(ConfigIssue::at(
                        key("position.lon"),
                        format!("must be -180 to 180 degrees, found {}", p.lon),
                    ));
                }
            }
            if cam.retention_days.is_some_and(|d| d > 3650) {
                issues.push(ConfigIssue::at(
                    key("retention_days"),
                    "must be 0 (no age limit) to 3650 days",
                ));
            }
            if cam.max_bytes.is_some_and(|b| b < 16 * 1024 * 1024) {
                issues.push(ConfigIssue::at(
                    key("max_bytes"),
                    "must be at least 16777216 (16 MiB): a smaller quota cannot hold a segment",
                ));
            }
            if self.cameras[..i].iter().any(|c| c.id == cam.id) {
                issues.push(ConfigIssue::at(
                    key("id"),
                    format!("camera id '{}' is used twice; ids must be unique", cam.id),
                ));
            }
            if let Some(n) = &cam.name
                && (n.trim().is_empty()
                    || n.chars().count() > 64
                    || n.chars().any(char::is_control))
            {
                issues.push(ConfigIssue::at(
                    key("name"),
                    "must be 1 to 64 printable characters",
                ));
            }
            for issue in check_masks(cam.id.as_str(), &cam.masks) {
                issues.push(ConfigIssue {
                    key: issue.key.map(|k| key(&k)),
                    ..issue
                });
            }
            if let Some(kbps) = cam.encoder.bitrate_kbps
                && !(100..=50_000).contains(&kbps)
            {
                issues.push(ConfigIssue::at(
                    key("encoder.bitrate_kbps"),
                    format!("must be 100 to 50000 kbit/s, found {kbps}"),
                ));
            }
            if !(1..=60).contains(&cam.encoder.keyframe_secs) {
                issues.push(ConfigIssue::at(
                    key("encoder.keyframe_secs"),
                    format!(
                        "must be 1 to 60 seconds, found {}",
                        cam.encoder.keyframe_secs
                    ),
                ));
            }
            match &cam.source {
                SourceConfig::Synthetic { width, height, fps }
                | SourceConfig::V4l2 {
                    width, height, fps, ..
                } => {
                    if let SourceConfig::V4l2 { device, .. } = &cam.source
                        && !device.starts_with("/dev/")
                    {
                        issues.push(ConfigIssue::at(
                            key("source.device"),
                            format!(
                                "'{}' must be a device under /dev, e.g. /dev/video0",
                                device.display()
                            ),
                        ));
                    }
                    for (k, v, max) in [("width", *width, 7680), ("height", *height, 4320)] {
                        let Some(v) = v else { continue };
                        if !(64..=max).contains(&v) || !v.is_multiple_of(2) {
                            issues.push(ConfigIssue::at(
                                key(&format!("source.{k}")),
                                format!("must be an even number from 64 to {max}, found {v}"),
                            ));
                        }
                    }
                    check_fps(*fps, &key("source.fps"), &mut issues);
                }
                SourceConfig::Rtsp { url, .. } => {
                    let lower = url.to_ascii_lowercase();
                    let host = lower
                        .strip_prefix("rtsp://")
                        .map(|rest| rest.rsplit_once('@').map_or(rest, |(_, h)| h))
                        .unwrap_or("");
                    if !lower.starts_with("rtsp://") || host.is_empty() || host.starts_with('/') {
                        issues.push(ConfigIssue::at(
                            key("source.url"),
                            "must look like rtsp://host[:port]/path",
                        ));
                    }
                }
                SourceConfig::File { path, fps, .. } => {
                    if !path.is_absolute() {
                        issues.push(ConfigIssue::at(
                            key("source.path"),
                            format!("'{}' must be an absolute path", path.display()),
                        ));
                    }
                    check_fps(*fps, &key("source.fps"), &mut issues);
                }
            }
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn one_issue(text: &str, e: &[(&str, &str)]) -> ConfigIssue {
        let mut issues = parse(text, &env(e)).unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        issues.remove(0)
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert!(c.cameras.is_empty());
    }

    #[test]
    fn full_file_parses() {
        let c = parse(
            r#"
            [device]
            id = "gw-12"
            name = "Harbour gate"
            board = "rpi5"
            [storage]
            data_dir = "/var/lib/veil"
            [http]
            listen = "127.0.0.1:9000"
            [log]
            format = "json"
            level = "info,veil_media=debug"
            [[cameras]]
            id = "gate"
            name = "Gate"
            source = { kind = "synthetic", width = 1920, height = 1080, fps = 30 }
            "#,
            &[],
        )
        .unwrap();
        assert_eq!(c.device.id.unwrap().as_str(), "gw-12");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.cameras[0].display_name(), "Gate");
        assert_eq!(
            c.cameras[0].source,
            SourceConfig::Synthetic {
                width: Some(1920),
                height: Some(1080),
                fps: Some(30)
            }
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let i = one_issue("[http]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n", &[]);
        assert_eq!(i.key.as_deref(), Some("http.lisen"));
        assert!(i.message.contains("unknown field `lisen`"), "{i}");
        let i = one_issue("[htp]\n", &[]);
        assert_eq!(i.key.as_deref(), Some("htp"));
    }

    #[test]
    fn unknown_key_inside_a_camera_source_names_the_camera() {
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\", fsp = 3 }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.fsp"));
        assert!(i.message.contains("unknown field `fsp`"), "{i}");
    }

    #[test]
    fn wrong_type_is_named() {
        let i = one_issue("[http]\nlisten = 8080\n", &[]);
        assert_eq!(i.key.as_deref(), Some("http.listen"));
        assert!(i.message.contains("invalid type"), "{i}");
        let i = one_issue("[log]\nformat = \"xml\"\n", &[]);
        assert_eq!(i.key.as_deref(), Some("log.format"));
        assert!(
            i.message.contains("human") && i.message.contains("json"),
            "{i}"
        );
    }

    #[test]
    fn out_of_range_values_are_named() {
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\", fps = 500 }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.fps"));
        assert_eq!(i.message, "must be 1 to 120 frames per second, found 500");
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\", width = 641 }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.width"));
        let i = one_issue("[storage]\nsegment_seconds = 5\n", &[]);
        assert_eq!(i.key.as_deref(), Some("storage.segment_seconds"));
        let i = one_issue("[storage]\nflush_ms = 50000\n", &[]);
        assert_eq!(i.key.as_deref(), Some("storage.flush_ms"));
        let i = one_issue("[storage]\nmax_bytes = 1000\n", &[]);
        assert_eq!(i.key.as_deref(), Some("storage.max_bytes"));
        let cam = "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\n";
        let i = one_issue(&format!("{cam}retention_days = 5000\n"), &[]);
        assert_eq!(i.key.as_deref(), Some("cameras[0].retention_days"));
        let i = one_issue(&format!("{cam}max_bytes = 1024\n"), &[]);
        assert_eq!(i.key.as_deref(), Some("cameras[0].max_bytes"));
        assert!(i.message.contains("16 MiB"), "{}", i.message);
        let i = one_issue("[storage]\ndata_dir = \"relative/dir\"\n", &[]);
        assert_eq!(i.key.as_deref(), Some("storage.data_dir"));
        let i = one_issue("[log]\nlevel = \"loud\"\n", &[]);
        assert_eq!(i.key.as_deref(), Some("log.level"));
    }

    #[test]
    fn masks_are_checked_and_name_the_camera_and_mask() {
        let cam = |masks: &str| {
            format!("[[cameras]]\nid = \"gate\"\nsource = {{ kind = \"synthetic\" }}\n{masks}")
        };
        let c = parse(&cam("[[cameras.masks]]\nname = \"window\"\npoints = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.5]]\n"), &[]).unwrap();
        assert_eq!(c.cameras[0].masks[0].polygon().len(), 3);
        let i = one_issue(
            &cam(
                "[[cameras.masks]]\nname = \"bow\"\npoints = [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]\n",
            ),
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].masks[0].points"));
        assert!(
            i.message.starts_with("mask 'bow' of camera 'gate' edges"),
            "{i}"
        );
        let i = one_issue(
            &cam(
                "[[cameras.masks]]\nname = \"far\"\npoints = [[0.1, 0.1], [1.5, 0.1], [0.4, 0.5]]\n",
            ),
            &[],
        );
        assert!(i.message.contains("point 1 is outside the frame"), "{i}");
        let i = one_issue(
            &cam("[[cameras.masks]]\nname = \"x\"\npoints = [[0.1, 0.1, 0.3]]\n"),
            &[],
        );
        assert_eq!(
            i.key.as_deref(),
            Some("cameras[0].masks[0].points[0]"),
            "{i}"
        );
        let i = one_issue(
            &cam("[[cameras.masks]]\nname = \"\"\npoints = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.5]]\n"),
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].masks[0].name"));
    }

    #[test]
    fn the_broker_is_checked_and_named_in_every_problem() {
        let ok = parse(
            "[mqtt]\nbroker = \"mqtts://fleet.example:8884\"\nca_file = \"/etc/veil/ca.pem\"\n",
            &[],
        )
        .unwrap();
        let m = ok.mqtt.unwrap();
        assert_eq!(
            m.address().unwrap(),
            BrokerAddress {
                tls: true,
                host: "fleet.example".into(),
                port: 8884
            }
        );
        assert_eq!((m.topic_prefix.as_str(), m.telemetry_seconds), ("veil", 60));
        let local = MqttConfig {
            broker: "mqtt://127.0.0.1".into(),
            ..m.clone()
        };
        assert_eq!(local.address().unwrap().port, 1883);
        for (toml, key, words) in [
            ("broker = \"http://x\"", "mqtt.broker", "must be mqtts://"),
            (
                "broker = \"mqtt://fleet.example\"",
                "mqtt.broker",
                "only to a loopback",
            ),
            (
                "broker = \"mqtts://x:0\"\nca_file = \"/c\"",
                "mqtt.broker",
                "not 1 to 65535",
            ),
            (
                "broker = \"mqtts://x\"",
                "mqtt.ca_file",
                "is needed for mqtts",
            ),
            (
                "broker = \"mqtt://localhost\"\nclient_cert = \"/c\"",
                "mqtt.client_key",
                "go together",
            ),
            (
                "broker = \"mqtt://localhost\"\npassword = \"p\"",
                "mqtt.username",
                "needs a username",
            ),
            (
                "broker = \"mqtt://localhost\"\ntopic_prefix = \"a/#\"",
                "mqtt.topic_prefix",
                "letters, digits",
            ),
            (
                "broker = \"mqtt://localhost\"\ntelemetry_seconds = 1",
                "mqtt.telemetry_seconds",
                "5 to 3600",
            ),
        ] {
            let i = one_issue(&format!("[mqtt]\n{toml}\n"), &[]);
            assert_eq!(i.key.as_deref(), Some(key), "{toml}: {i}");
            assert!(i.message.contains(words), "{toml}: {i}");
        }
    }

    #[test]
    fn the_upload_target_is_checked_key_by_key() {
        let base = "[upload]\nendpoint = \"https://s3.example\"\nbucket = \"evidence\"\naccess_key = \"a\"\nsecret_key = \"s\"\n";
        let u = parse(base, &[]).unwrap().upload.unwrap();
        assert_eq!(
            (u.parallel, u.part_size_mib, u.region.as_str()),
            (5, 16, "us-east-1")
        );
        for (extra, key, words) in [
            (
                "endpoint = \"http://s3.example\"",
                "upload.endpoint",
                "only to a loopback",
            ),
            (
                "endpoint = \"ftp://x\"",
                "upload.endpoint",
                "must be https://",
            ),
            ("bucket = \"Evidence!\"", "upload.bucket", "S3 bucket name"),
            ("parallel = 0", "upload.parallel", "1 to 16"),
            ("part_size_mib = 1", "upload.part_size_mib", "smallest part"),
            ("prefix = \"../x\"", "upload.prefix", "without '..'"),
        ] {
            let field = extra.split(' ').next().unwrap();
            let toml: String = base
                .lines()
                .filter(|l| !l.starts_with(&format!("{field} ")))
                .chain([extra])
                .map(|l| format!("{l}\n"))
                .collect();
            let i = one_issue(&toml, &[]);
            assert_eq!(i.key.as_deref(), Some(key), "{extra}: {i}");
            assert!(i.message.contains(words), "{extra}: {i}");
        }
        let local = base.replace("https://s3.example", "http://127.0.0.1:9000");
        assert!(parse(&local, &[]).is_ok());
    }

    #[test]
    fn camera_positions_are_checked() {
        let cam = "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\n";
        let c = parse(
            &format!("{cam}mount = \"fixed\"\nposition = {{ lat = 52.37, lon = 4.89 }}\n"),
            &[],
        )
        .unwrap();
        assert_eq!(
            c.cameras[0].position,
            Some(Position {
                lat: 52.37,
                lon: 4.89
            })
        );
        assert_eq!(parse(cam, &[]).unwrap().cameras[0].mount, Mount::Fixed);
        let i = one_issue(
            &format!("{cam}position = {{ lat = 95.0, lon = 4.89 }}\n"),
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].position.lat"), "{i}");
        let i = one_issue(
            &format!("{cam}position = {{ lat = 5.0, lon = 190.0 }}\n"),
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].position.lon"), "{i}");
        let i = one_issue(&format!("{cam}mount = \"boat\"\n"), &[]);
        assert_eq!(i.key.as_deref(), Some("cameras[0].mount"), "{i}");
    }

    #[test]
    fn storage_defaults_to_anonymized_and_names_its_choices() {
        let cam = "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\n";
        let c = parse(cam, &[]).unwrap();
        assert_eq!(c.cameras[0].storage, StoragePolicy::Anonymized);
        let c = parse(&format!("{cam}storage = \"originals\"\n"), &[]).unwrap();
        assert_eq!(c.cameras[0].storage, StoragePolicy::Originals);
        let i = one_issue(&format!("{cam}storage = \"raw\"\n"), &[]);
        assert_eq!(i.key.as_deref(), Some("cameras[0].storage"));
        assert!(
            i.message.contains("anonymized") && i.message.contains("originals"),
            "{i}"
        );
    }

    #[test]
    fn live_sharing_waits_for_an_operator_unless_told_otherwise() {
        let cam = "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\n";
        let c = parse(cam, &[]).unwrap();
        assert_eq!(c.cameras[0].live.approval, LiveApproval::Operator);
        let c = parse(
            &format!("{cam}live = {{ approval = \"automatic\" }}\n"),
            &[],
        )
        .unwrap();
        assert_eq!(c.cameras[0].live.approval, LiveApproval::Automatic);
        let i = one_issue(
            &format!("{cam}live = {{ approval = \"sometimes\" }}\n"),
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].live.approval"), "{i}");
        assert!(
            i.message.contains("operator") && i.message.contains("never"),
            "{i}"
        );
        let i = one_issue(&format!("{cam}live = {{ share = true }}\n"), &[]);
        assert!(i.message.contains("share"), "{i}");
    }

    #[test]
    fn filters_default_to_faces_and_plates() {
        let c = parse(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.cameras[0].filter, FilterName::FacesPlates);
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\nfilter = \"plates\"\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].filter"));
        assert!(
            i.message.contains("masks-only") && i.message.contains("strict"),
            "{i}"
        );
        let i = one_issue("detection = { plate_min_width = 8 }", &[]);
        assert_eq!(i.key.as_deref(), Some("detection.plate_min_width"));
        let i = one_issue("detection = { face_tile = 64 }", &[]);
        assert_eq!(i.key.as_deref(), Some("detection.face_tile"));
        let i = one_issue("detection = { model_dir = \"models\" }", &[]);
        assert_eq!(i.key.as_deref(), Some("detection.model_dir"));
        let i = one_issue("", &[("VEIL_DETECTION__FACE_MIN_SCORE", "2")]);
        assert_eq!(i.key.as_deref(), Some("detection.face_min_score"));
    }

    #[test]
    fn encoder_settings_are_range_checked() {
        let cam = |enc: &str| {
            format!(
                "[[cameras]]\nid = \"a\"\nsource = {{ kind = \"synthetic\" }}\nencoder = {{ {enc} }}\n"
            )
        };
        let c = parse(&cam("bitrate_kbps = 4000"), &[]).unwrap();
        assert_eq!(
            c.cameras[0].encoder,
            EncoderConfig {
                bitrate_kbps: Some(4000),
                keyframe_secs: 2
            }
        );
        let i = one_issue(&cam("bitrate_kbps = 5"), &[]);
        assert_eq!(i.key.as_deref(), Some("cameras[0].encoder.bitrate_kbps"));
        let i = one_issue(&cam("keyframe_secs = 0"), &[]);
        assert_eq!(i.key.as_deref(), Some("cameras[0].encoder.keyframe_secs"));
        let i = one_issue(&cam("gop = 3"), &[]);
        assert_eq!(i.key.as_deref(), Some("cameras[0].encoder.gop"));
    }

    #[test]
    fn bad_ids_and_duplicates_are_named() {
        let i = one_issue(
            "[[cameras]]\nid = \"Front Door\"\nsource = { kind = \"synthetic\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].id"));
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\n[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[1].id"));
        assert!(i.message.contains("used twice"));
    }

    #[test]
    fn v4l2_cameras_need_a_dev_node() {
        let c = parse("[[cameras]]\nid = \"a\"\nsource = { kind = \"v4l2\", device = \"/dev/video0\", fps = 30 }\n", &[]).unwrap();
        assert!(matches!(
            &c.cameras[0].source,
            SourceConfig::V4l2 { fps: Some(30), .. }
        ));
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"v4l2\", device = \"/tmp/cam\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.device"));
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"v4l2\" }\n",
            &[],
        );
        assert!(i.message.contains("a v4l2 source needs `device`"), "{i}");
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"v4l2\", device = \"/dev/video0\", width = 7 }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.width"));
    }

    #[test]
    fn rtsp_cameras_need_an_rtsp_url() {
        let c = parse("[[cameras]]\nid = \"a\"\nsource = { kind = \"rtsp\", url = \"rtsp://u:p@10.1.2.3:554/h264\", transport = \"udp\" }\n", &[]).unwrap();
        assert!(matches!(
            c.cameras[0].source,
            SourceConfig::Rtsp {
                transport: RtspTransport::Udp,
                ..
            }
        ));
        for bad in ["http://cam/x", "rtsp://", "rtsp:///x", "cam.local"] {
            let i = one_issue(
                &format!(
                    "[[cameras]]\nid = \"a\"\nsource = {{ kind = \"rtsp\", url = \"{bad}\" }}\n"
                ),
                &[],
            );
            assert_eq!(i.key.as_deref(), Some("cameras[0].source.url"), "{bad}");
        }
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"rtsp\", url = \"rtsp://h/x\", transport = \"sctp\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.transport"));
    }

    #[test]
    fn file_cameras_need_an_absolute_path() {
        let c = parse(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"file\", path = \"/srv/clip.mp4\" }\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.cameras[0].source,
            SourceConfig::File {
                path: "/srv/clip.mp4".into(),
                looped: true,
                fps: None
            }
        );
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"file\", path = \"clip.mp4\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.path"));
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"file\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source"));
        assert!(i.message.contains("a file source needs `path`"), "{i}");
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"file\", path = \"/a\", url = \"rtsp://x/y\" }\n",
            &[],
        );
        assert!(
            i.message.contains("`url` does not apply to a file source"),
            "{i}"
        );
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"file\", path = \"/a\", fps = \"ten\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.fps"), "{i}");
    }

    #[test]
    fn unknown_source_kind_lists_the_known_ones() {
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"webcam\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.kind"));
        assert!(i.message.contains("synthetic"), "{i}");
    }

    #[test]
    fn plain_http_only_on_loopback_and_redirects_need_https() {
        let c = parse("[http]\ntls = false\n", &[]).unwrap();
        assert!(!c.http.tls);
        let i = one_issue("[http]\nlisten = \"0.0.0.0:8080\"\ntls = false\n", &[]);
        assert_eq!(i.key.as_deref(), Some("http.tls"));
        assert!(i.message.contains("in clear"), "{i}");
        let i = one_issue(
            "[http]\nlisten = \"0.0.0.0:443\"\nredirect_listen = \"0.0.0.0:443\"\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("http.redirect_listen"));
        let i = one_issue(
            "[http]\ntls = false\nredirect_listen = \"127.0.0.1:80\"\n",
            &[],
        );
        assert!(i.message.contains("need http.tls"), "{i}");
        let c = parse(
            "[http]\nlisten = \"0.0.0.0:443\"\nredirect_listen = \"0.0.0.0:80\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.http.redirect_listen.unwrap().port(), 80);
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let i = one_issue("[http]\nlisten = \n", &[]);
        assert_eq!(i.key, None);
        assert!(i.message.starts_with("not valid TOML: line 2"), "{i}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = parse(
            "[http]\nlisten = \"0.0.0.0:80\"\n",
            &env(&[
                ("VEIL_HTTP__LISTEN", "127.0.0.1:18080"),
                ("VEIL_LOG__FORMAT", "json"),
                ("VEIL_DEVICE__NAME", "Lab"),
                ("VEIL_CONFIG", "/etc/veil/veil.toml"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:18080");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.device.name, "Lab");
    }

    #[test]
    fn bad_environment_overrides_name_the_variable() {
        let i = one_issue("", &[("VEIL_HTTP__LISTN", "1")]);
        assert_eq!(i.key.as_deref(), Some("http.listn"));
        assert_eq!(i.env_var.as_deref(), Some("VEIL_HTTP__LISTN"));
        assert!(
            i.to_string()
                .contains("set by environment variable VEIL_HTTP__LISTN")
        );
        let i = one_issue("", &[("VEIL_HTTP__LISTEN", "nowhere")]);
        assert_eq!(i.env_var.as_deref(), Some("VEIL_HTTP__LISTEN"));
        let i = one_issue("", &[("VEIL_LOG__LEVEL", "shouting")]);
        assert_eq!(i.env_var.as_deref(), Some("VEIL_LOG__LEVEL"));
        let i = one_issue("", &[("VEIL_CAMERAS", "[]")]);
        assert!(i.message.contains("config file"));
        let i = one_issue("", &[("VEIL_HTTP____X", "1")]);
        assert!(i.message.contains("VEIL_<TABLE>__<KEY>"));
    }

    #[test]
    fn layers_merge_tables_and_replace_values() {
        let c = parse_layered(
            &[
                "[http]\nlisten = \"127.0.0.1:8080\"\n[device]\nname = \"Dev\"\n",
                "[device]\nid = \"x1\"\n",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.device.name, "Dev");
        assert_eq!(c.device.id.unwrap().as_str(), "x1");
    }

    #[test]
    fn issue_display_is_one_line_naming_the_key() {
        let i = ConfigIssue::at("http.listen", "bad");
        assert_eq!(i.to_string(), "key 'http.listen': bad");
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    /// Dotted names of every key in `value`, arrays of tables written `name[]`.
    fn keys(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if !matches!(v, toml::Value::Table(_) | toml::Value::Array(_)) {
                        out.push(name.clone());
                    }
                    keys(&name, v, out);
                }
            }
            toml::Value::Array(items) => {
                for item in items.iter().take(1) {
                    keys(&format!("{prefix}[]"), item, out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_config_key_is_documented() {
        let full = parse(
            r#"
            device = { id = "a", name = "b", board = "rpi5" }
            storage = { data_dir = "/data" }
            detection = { model_dir = "/m", backend = "tflite", runtime_library = "/l.so" }
            [[cameras]]
            id = "c"
            name = "d"
            enabled = true
            source = { kind = "synthetic", width = 640, height = 480, fps = 5 }
            encoder = { bitrate_kbps = 2000, keyframe_secs = 4 }
            masks = [{ name = "window", points = [[0.1, 0.1], [0.3, 0.1], [0.3, 0.4]] }]
            filter = "masks-only"
            retention_days = 7
            max_bytes = 10000000000
            "#,
            &[],
        )
        .unwrap();
        let file = parse(
            "[[cameras]]\nid = \"f\"\nsource = { kind = \"file\", path = \"/a.mp4\", loop = false, fps = 5 }\n",
            &[],
        )
        .unwrap();
        let mut all = Vec::new();
        keys("", &toml::Value::try_from(&file).unwrap(), &mut all);
        let rtsp = parse(
            "[[cameras]]\nid = \"r\"\nsource = { kind = \"rtsp\", url = \"rtsp://h/x\", username = \"u\", password = \"p\" }\n",
            &[],
        )
        .unwrap();
        keys("", &toml::Value::try_from(&rtsp).unwrap(), &mut all);
        let v4l2 = parse(
            "[[cameras]]\nid = \"v\"\nsource = { kind = \"v4l2\", device = \"/dev/video0\" }\n",
            &[],
        )
        .unwrap();
        keys("", &toml::Value::try_from(&v4l2).unwrap(), &mut all);
        let value = toml::Value::try_from(&full).unwrap();
        keys("", &value, &mut all);
        assert!(all.len() >= 16, "{all:?}");
        let doc = include_str!("../../../docs/configuration.md");
        let missing: Vec<_> = all
            .iter()
            .filter(|k| !doc.contains(&format!("`{k}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md lacks {missing:?}"
        );
    }
}
