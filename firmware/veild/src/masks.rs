//! Privacy masks drawn on the web page: kept in `state/masks.json` (camera id → masks), which
//! takes precedence over `cameras[].masks` of the config file for that camera, and pushed into
//! the running privacy engine at once. Exports made from then on use them too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use veil_core::config::{CameraConfig, MaskConfig, check_masks};
use veil_core::{Error, ErrorKind};
use veil_privacy::MaskHandle;

pub struct MaskBook {
    path: PathBuf,
    /// Masks per camera as in effect now (config file, then the page's changes).
    current: Mutex<HashMap<String, Vec<MaskConfig>>>,
    /// Drawn on the page (what the file holds).
    drawn: Mutex<HashMap<String, Vec<MaskConfig>>>,
    /// The last masks of cameras stopped or removed since start: their footage keeps them.
    retired: Mutex<HashMap<String, Vec<MaskConfig>>>,
    /// Every running engine of a camera: its own and those of its live encodes.
    engines: Mutex<HashMap<String, Vec<MaskHandle>>>,
}

impl MaskBook {
    /// Reads `state/masks.json` and applies it over `cameras`. A damaged file or invalid
    /// masks for a camera are logged and that camera keeps its config masks: a mask is never
    /// silently dropped in favour of none.
    pub fn open(state: &Path, cameras: &mut [CameraConfig]) -> MaskBook {
        let path = state.join("masks.json");
        let mut drawn: HashMap<String, Vec<MaskConfig>> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                let kept = crate::statefile::set_aside(&path);
                tracing::error!(file = %path.display(), error = %e, kept = ?kept,
                    "damaged masks file; using the config's masks");
                HashMap::new()
            }),
            Err(_) => HashMap::new(),
        };
        drawn.retain(|camera, masks| {
            let issues = check_masks(camera, masks);
            if let Some(issue) = issues.first() {
                tracing::error!(file = %path.display(), camera, %issue, "invalid drawn masks; using the config's masks");
            }
            issues.is_empty()
        });
        for cam in cameras.iter_mut() {
            if let Some(masks) = drawn.get(cam.id.as_str()) {
                cam.masks = masks.clone();
            }
        }
        MaskBook {
            path,
            current: Mutex::new(
                cameras
                    .iter()
                    .map(|c| (c.id.to_string(), c.masks.clone()))
                    .collect(),
            ),
            drawn: Mutex::new(drawn),
            retired: Mutex::new(HashMap::new()),
            engines: Mutex::new(HashMap::new()),
        }
    }

    /// A camera added or changed on the page: masks drawn for its id earlier stay in force
    /// (never silently dropped); otherwise its own.
    pub fn adopt(&self, cam: &mut CameraConfig) {
        if let Some(drawn) = self
            .drawn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(cam.id.as_str())
        {
            cam.masks = drawn.clone();
        }
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cam.id.to_string(), cam.masks.clone());
    }

    /// A camera removed on the page.
    pub fn forget(&self, camera: &str) {
        let last = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(camera);
        if let Some(last) = last {
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(camera.into(), last);
        }
        self.engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(camera);
    }

    /// The masks an export of `camera`'s footage applies: those in effect, else the ones
    /// drawn for it, else the last it had. A camera removed (or restarting) while its footage
    /// is exported keeps hiding what it hid.
    pub fn for_export(&self, camera: &str) -> Vec<MaskConfig> {
        let lock = |m: &Mutex<HashMap<String, Vec<MaskConfig>>>| {
            m.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(camera)
                .cloned()
        };
        lock(&self.current)
            .or_else(|| lock(&self.drawn))
            .or_else(|| lock(&self.retired))
            .unwrap_or_default()
    }

    /// A running engine of `camera`, which takes new masks (engines that ended are let go).
    pub fn attach(&self, camera: &str, handle: MaskHandle) {
        let mut engines = self.engines.lock().unwrap_or_else(|e| e.into_inner());
        let list = engines.entry(camera.into()).or_default();
        list.retain(MaskHandle::engine_running);
        list.push(handle);
    }

    pub fn get(&self, camera: &str) -> Result<Vec<MaskConfig>, Error> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(camera)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no camera '{camera}' on this device")))
    }

    /// Replaces `camera`'s masks: checked like the config file, saved, applied to the running
    /// engine. Returns the masks before.
    pub fn set(&self, camera: &str, masks: Vec<MaskConfig>) -> Result<Vec<MaskConfig>, Error> {
        let before = self.get(camera)?;
        if let Some(issue) = check_masks(camera, &masks).into_iter().next() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{}: {}", issue.key.unwrap_or_default(), issue.message),
            ));
        }
        let mut drawn = self.drawn.lock().unwrap_or_else(|e| e.into_inner());
        drawn.insert(camera.into(), masks.clone());
        crate::statefile::save_json(&self.path, &*drawn)?;
        if let Some(engines) = self
            .engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(camera)
        {
            for engine in engines {
                engine.replace(masks.iter().map(MaskConfig::polygon).collect());
            }
        }
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(camera.into(), masks);
        Ok(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cams() -> Vec<CameraConfig> {
        veil_core::config::parse(
            "[[cameras]]\nid = \"gate\"\nsource = { kind = \"synthetic\" }\n[[cameras.masks]]\nname = \"door\"\npoints = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.5]]\n",
            &[],
        )
        .unwrap()
        .cameras
    }

    fn square(name: &str) -> MaskConfig {
        MaskConfig {
            name: name.into(),
            points: vec![[0.5, 0.5], [0.9, 0.5], [0.9, 0.9], [0.5, 0.9]],
        }
    }

    #[test]
    fn drawn_masks_persist_and_override_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cams();
        let book = MaskBook::open(dir.path(), &mut c);
        assert_eq!(book.get("gate").unwrap()[0].name, "door");
        let before = book.set("gate", vec![square("window")]).unwrap();
        assert_eq!(before[0].name, "door");
        let mut c = cams();
        let book = MaskBook::open(dir.path(), &mut c);
        assert_eq!(c[0].masks[0].name, "window");
        assert_eq!(book.get("gate").unwrap(), vec![square("window")]);
        assert_eq!(book.get("nope").unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn a_removed_camera_keeps_its_masks_for_exports() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cams();
        let book = MaskBook::open(dir.path(), &mut c);
        book.forget("gate");
        assert!(book.get("gate").is_err());
        assert_eq!(book.for_export("gate")[0].name, "door");
        let mut c = cams();
        let book = MaskBook::open(dir.path(), &mut c);
        book.set("gate", vec![square("window")]).unwrap();
        book.forget("gate");
        assert_eq!(book.for_export("gate")[0].name, "window");
        assert!(book.for_export("never").is_empty());
    }

    #[test]
    fn invalid_masks_are_refused_with_the_key_and_damaged_files_keep_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cams();
        let book = MaskBook::open(dir.path(), &mut c);
        let bow = MaskConfig {
            name: "bow".into(),
            points: vec![[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]],
        };
        let e = book.set("gate", vec![square("ok"), bow]).unwrap_err();
        assert!(e.to_string().contains("masks[1].points"), "{e}");
        let e = book.set("gate", vec![square("")]).unwrap_err();
        assert!(e.to_string().contains("masks[0].name"), "{e}");
        assert_eq!(book.get("gate").unwrap()[0].name, "door");
        std::fs::write(dir.path().join("masks.json"), "{not json").unwrap();
        let mut c = cams();
        MaskBook::open(dir.path(), &mut c);
        assert_eq!(c[0].masks[0].name, "door");
    }
}
