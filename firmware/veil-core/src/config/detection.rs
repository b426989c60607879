//! `[detection]`: models and detector settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::issue::ConfigIssue;

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

impl DetectionConfig {
    /// What types alone cannot check of `[detection]`.
    pub(crate) fn check(&self, issues: &mut Vec<ConfigIssue>) {
        if let Some(dir) = &self.model_dir
            && !dir.is_absolute()
        {
            issues.push(ConfigIssue::at(
                "detection.model_dir",
                format!("'{}' must be an absolute path", dir.display()),
            ));
        }
        let tile = self.face_tile;
        if tile != 0 && !(128..=2048).contains(&tile) {
            issues.push(ConfigIssue::at(
                "detection.face_tile",
                format!("must be 0 (whole frame only) or 128 to 2048 pixels, found {tile}"),
            ));
        }
        let score = self.face_min_score;
        if !(0.05..=0.95).contains(&score) {
            issues.push(ConfigIssue::at(
                "detection.face_min_score",
                format!("must be 0.05 to 0.95, found {score}"),
            ));
        }
        let plate = self.plate_min_width;
        if !(24..=1000).contains(&plate) {
            issues.push(ConfigIssue::at(
                "detection.plate_min_width",
                format!("must be 24 to 1000 pixels, found {plate}"),
            ));
        }
    }
}
