//! Where detection models come from and which runtime runs them.

use std::path::PathBuf;

use veil_core::Error;

use crate::cascade::Cascade;
use crate::face::{FaceDetector, FaceSettings, Inference};
use crate::litert::{LiteRt, LiteRtOptions};
use crate::plate::{PlateDetector, PlateSettings};
use crate::tract_backend::TractInference;

/// The face model file every face filter uses (MediaPipe BlazeFace, full range).
pub const FACE_MODEL: &str = "face_detection_full_range.tflite";

/// The plate model every plate filter uses: OpenCV's plate cascade (BSD-3-Clause), or any
/// cascade in OpenCV's format installed under this name.
pub const PLATE_MODEL: &str = "haarcascade_russian_plate_number.xml";

/// Which runtime runs the models.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// tract: pure Rust, every board.
    Tract,
    /// The LiteRT (TensorFlow Lite) C runtime, loaded at run time, with its accelerator.
    LiteRt(LiteRtOptions),
}

#[derive(Debug, Clone, PartialEq)]
pub struct DetectionSetup {
    pub model_dir: PathBuf,
    pub backend: Backend,
    pub face: FaceSettings,
    pub plate: PlateSettings,
}

impl DetectionSetup {
    pub fn face_model_path(&self) -> PathBuf {
        self.model_dir.join(FACE_MODEL)
    }

    pub fn face_inference(&self) -> Result<Box<dyn Inference>, Error> {
        let path = self.face_model_path();
        Ok(match &self.backend {
            Backend::Tract => Box::new(TractInference::load(&path)?),
            Backend::LiteRt(options) => Box::new(LiteRt::load(&path, options)?),
        })
    }

    pub fn face_detector(&self) -> Result<FaceDetector, Error> {
        FaceDetector::new(self.face_inference()?, self.face)
    }

    pub fn plate_model_path(&self) -> PathBuf {
        self.model_dir.join(PLATE_MODEL)
    }

    pub fn plate_detector(&self) -> Result<PlateDetector, Error> {
        Ok(PlateDetector::new(
            Cascade::load(&self.plate_model_path())?,
            self.plate,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_model_is_an_error_naming_the_file() {
        let setup = DetectionSetup {
            model_dir: PathBuf::from("/nonexistent/models"),
            backend: Backend::Tract,
            face: FaceSettings::default(),
            plate: PlateSettings::default(),
        };
        let e = setup.face_detector().err().unwrap();
        assert!(
            e.message()
                .contains("/nonexistent/models/face_detection_full_range.tflite"),
            "{e}"
        );
        assert!(e.message().contains("fetch-models"), "{e}");
        let e = setup.plate_detector().err().unwrap();
        assert!(
            e.message()
                .contains("/nonexistent/models/haarcascade_russian_plate_number.xml"),
            "{e}"
        );
        assert!(e.message().contains("fetch-models"), "{e}");
    }

    #[test]
    fn a_model_of_the_wrong_kind_is_refused() {
        let dir = std::env::temp_dir().join(format!("veil-models-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(FACE_MODEL), b"PK\x03\x04 not a model").unwrap();
        let setup = DetectionSetup {
            model_dir: dir.clone(),
            backend: Backend::Tract,
            face: FaceSettings::default(),
            plate: PlateSettings::default(),
        };
        let e = setup.face_detector().err().unwrap();
        assert!(e.message().contains("not a TensorFlow Lite model"), "{e}");
        std::fs::write(dir.join(PLATE_MODEL), "<opencv_storage><cascade>").unwrap();
        let e = setup.plate_detector().err().unwrap();
        assert!(e.message().contains("not a usable cascade"), "{e}");
        assert!(e.message().contains(PLATE_MODEL), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
