//! The camera list as the page edits it. Once a camera is added, changed or removed on the
//! page, the whole list is kept in `state/cameras.json` and takes the place of the config
//! file's `[[cameras]]` (delete the file to go back to the config file's). Every change is
//! checked exactly as the config file is, against the rest of the configuration.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use veil_core::config::{CameraConfig, Config};
use veil_core::{Error, ErrorKind};

pub struct CameraBook {
    path: PathBuf,
    /// The configuration the list is checked against (storage limits, detection…).
    base: Config,
    list: Mutex<Vec<CameraConfig>>,
}

impl CameraBook {
    /// Reads `state/cameras.json` over `config.cameras`. A damaged or invalid file is logged
    /// and the config file's cameras run.
    pub fn open(state: &Path, config: &mut Config) -> CameraBook {
        let path = state.join("cameras.json");
        if let Ok(bytes) = std::fs::read(&path) {
            match serde_json::from_slice::<Vec<CameraConfig>>(&bytes) {
                Ok(cameras) => {
                    let mut candidate = config.clone();
                    candidate.cameras = cameras;
                    match candidate.validate().into_iter().next() {
                        None => config.cameras = candidate.cameras,
                        Some(issue) => {
                            let kept = crate::statefile::set_aside(&path);
                            tracing::error!(file = %path.display(), %issue, kept = ?kept,
                                "invalid camera list from the page; running the config file's cameras");
                        }
                    }
                }
                Err(e) => {
                    let kept = crate::statefile::set_aside(&path);
                    tracing::error!(file = %path.display(), error = %e, kept = ?kept,
                        "damaged camera list from the page; running the config file's cameras");
                }
            }
        }
        CameraBook {
            path,
            base: config.clone(),
            list: Mutex::new(config.cameras.clone()),
        }
    }

    pub fn list(&self) -> Vec<CameraConfig> {
        self.list.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn get(&self, id: &str) -> Option<CameraConfig> {
        self.list().into_iter().find(|c| c.id.as_str() == id)
    }

    /// Applies `change` to a copy of the list, checks the result as the config file would be
    /// checked (the error names the camera's key, e.g. `source.fps: …`), saves it, and keeps
    /// it. Returns the list before.
    pub fn change(
        &self,
        change: impl FnOnce(&mut Vec<CameraConfig>) -> Result<(), Error>,
    ) -> Result<Vec<CameraConfig>, Error> {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = list.clone();
        change(&mut next)?;
        let mut candidate = self.base.clone();
        candidate.cameras = next;
        if let Some(issue) = candidate.validate().into_iter().next() {
            // "cameras[2].source.fps" → "source.fps": the form knows which camera it is.
            let key = issue.key.unwrap_or_default();
            let key = key
                .split_once("].")
                .filter(|(head, _)| head.starts_with("cameras["))
                .map(|(_, rest)| rest.to_string())
                .unwrap_or(key);
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{key}: {}", issue.message),
            ));
        }
        crate::statefile::save_json(&self.path, &candidate.cameras)?;
        Ok(std::mem::replace(&mut *list, candidate.cameras))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        veil_core::config::parse(
            "[[cameras]]\nid = \"gate\"\nsource = { kind = \"synthetic\" }\n",
            &[],
        )
        .unwrap()
    }

    fn camera(json: &str) -> CameraConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn changes_are_checked_saved_and_replace_the_config_file_list() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config();
        let book = CameraBook::open(dir.path(), &mut c);
        let lab = camera(
            r#"{"id": "lab", "source": {"kind": "synthetic", "width": 320, "height": 240, "fps": 5}}"#,
        );
        book.change(|l| {
            l.push(lab.clone());
            Ok(())
        })
        .unwrap();
        let bad = camera(r#"{"id": "bad", "source": {"kind": "synthetic", "fps": 500}}"#);
        let e = book
            .change(|l| {
                l.push(bad);
                Ok(())
            })
            .unwrap_err();
        assert!(e.to_string().starts_with("source.fps: "), "{e}");
        let dup = book
            .change(|l| {
                l.push(lab.clone());
                Ok(())
            })
            .unwrap_err();
        assert!(dup.to_string().contains("lab"), "{dup}");
        assert_eq!(book.list().len(), 2);
        let mut c = config();
        CameraBook::open(dir.path(), &mut c);
        assert_eq!(
            c.cameras.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["gate", "lab"]
        );
        std::fs::write(dir.path().join("cameras.json"), "[{\"id\": 1}]").unwrap();
        let mut c = config();
        CameraBook::open(dir.path(), &mut c);
        assert_eq!(
            c.cameras.len(),
            1,
            "a damaged file keeps the config file's cameras"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Whatever is in `cameras.json` (bytes, or JSON of any shape), opening never panics,
        /// the cameras that run are a valid list, and an unusable file is kept aside.
        #[test]
        fn any_camera_file_opens_to_a_valid_list(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            json in "\\[\\{\"id\": \"[a-z]{1,8}\", \"source\": \\{\"kind\": \"(synthetic|file|rtsp)\", \"fps\": [0-9]{1,4}\\}\\}\\]",
            as_json in proptest::prelude::any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("cameras.json");
            std::fs::write(&file, if as_json { json.as_bytes() } else { &bytes[..] }).unwrap();
            let mut c = config();
            CameraBook::open(dir.path(), &mut c);
            proptest::prop_assert!(c.validate().is_empty(), "{:?}", c.validate());
            let used = c.cameras.iter().any(|c| c.id.as_str() != "gate");
            if !used {
                proptest::prop_assert!(dir.path().join("cameras.json.damaged").is_file());
            }
        }
    }
}
