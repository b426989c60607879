//! `[[cameras]]`: sources, filters, masks, live sharing.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::id::CameraId;

use super::issue::ConfigIssue;

/// At most this many cameras per device; a board profile may allow fewer.
pub const MAX_CAMERAS: usize = 16;

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

pub(crate) fn yes() -> bool {
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

pub(crate) fn check_fps(fps: Option<u32>, key: &str, issues: &mut Vec<ConfigIssue>) {
    if let Some(fps) = fps
        && !(1..=120).contains(&fps)
    {
        issues.push(ConfigIssue::at(
            key,
            format!("must be 1 to 120 frames per second, found {fps}"),
        ));
    }
}

/// What types alone cannot check of `[[cameras]]`: ranges, and each source's fields.
pub(crate) fn check_cameras(cameras: &[CameraConfig], issues: &mut Vec<ConfigIssue>) {
    if cameras.len() > MAX_CAMERAS {
        issues.push(ConfigIssue::at(
            "cameras",
            format!("at most {MAX_CAMERAS} cameras, found {}", cameras.len()),
        ));
    }
    for (i, cam) in cameras.iter().enumerate() {
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
        if cameras[..i].iter().any(|c| c.id == cam.id) {
            issues.push(ConfigIssue::at(
                key("id"),
                format!("camera id '{}' is used twice; ids must be unique", cam.id),
            ));
        }
        if let Some(n) = &cam.name
            && (n.trim().is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control))
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
                check_fps(*fps, &key("source.fps"), issues);
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
                check_fps(*fps, &key("source.fps"), issues);
            }
        }
    }
}
