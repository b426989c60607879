//! The fleet broker and upload target as set on the page: kept in `state/fleet.json`, which
//! then takes the place of the config file's `[mqtt]` and `[upload]` (delete it to go back),
//! checked exactly as the config file is. Secrets shown as `***` on the page are kept when the
//! form sends `***` back.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use veil_core::config::{Config, MqttConfig, UploadConfig};
use veil_core::{Error, ErrorKind};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    pub mqtt: Option<MqttConfig>,
    pub upload: Option<UploadConfig>,
}

pub struct FleetBook {
    path: PathBuf,
    base: Config,
    current: Mutex<Fleet>,
}

impl FleetBook {
    /// Reads `state/fleet.json` over `config.mqtt` and `config.upload`; a damaged or invalid
    /// file is logged and the config file's settings run.
    pub fn open(state: &Path, config: &mut Config) -> FleetBook {
        let path = state.join("fleet.json");
        if let Ok(bytes) = std::fs::read(&path) {
            match serde_json::from_slice::<Fleet>(&bytes) {
                Ok(fleet) => match check(config, &fleet) {
                    Ok(()) => (config.mqtt, config.upload) = (fleet.mqtt, fleet.upload),
                    Err(e) => {
                        let kept = crate::statefile::set_aside(&path);
                        tracing::error!(file = %path.display(), error = %e, kept = ?kept,
                            "invalid fleet settings from the page; using the config file's");
                    }
                },
                Err(e) => {
                    let kept = crate::statefile::set_aside(&path);
                    tracing::error!(file = %path.display(), error = %e, kept = ?kept,
                        "damaged fleet settings from the page; using the config file's");
                }
            }
        }
        FleetBook {
            path,
            base: config.clone(),
            current: Mutex::new(Fleet {
                mqtt: config.mqtt.clone(),
                upload: config.upload.clone(),
            }),
        }
    }

    pub fn get(&self) -> Fleet {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `new` with `***` secrets filled from the current settings, checked as the config file
    /// would be (the error names the key, e.g. `mqtt.broker: …`).
    pub fn prepare(&self, mut new: Fleet) -> Result<Fleet, Error> {
        let old = self.get();
        if let (Some(n), Some(o)) = (new.mqtt.as_mut(), old.mqtt.as_ref())
            && n.password.as_deref() == Some("***")
        {
            n.password.clone_from(&o.password);
        }
        if let (Some(n), Some(o)) = (new.upload.as_mut(), old.upload.as_ref())
            && n.secret_key == "***"
        {
            n.secret_key.clone_from(&o.secret_key);
        }
        check(&self.base, &new)?;
        Ok(new)
    }

    /// Saves prepared settings; returns the settings before.
    pub fn save(&self, new: Fleet) -> Result<Fleet, Error> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        crate::statefile::save_json(&self.path, &new)?;
        Ok(std::mem::replace(&mut *current, new))
    }
}

fn check(base: &Config, fleet: &Fleet) -> Result<(), Error> {
    let mut candidate = base.clone();
    candidate.mqtt.clone_from(&fleet.mqtt);
    candidate.upload.clone_from(&fleet.upload);
    match candidate.validate().into_iter().next() {
        None => Ok(()),
        Some(issue) => Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{}: {}", issue.key.unwrap_or_default(), issue.message),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(json: &str) -> Fleet {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn settings_are_checked_secrets_kept_and_saved_over_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let with = |password: &str| {
            fleet(&format!(
                r#"{{"mqtt": {{"broker": "mqtts://broker.example:8883", "ca_file": "{}", "username": "dev1", "password": "{password}"}}}}"#,
                ca.display()
            ))
        };
        let mut config = Config::default();
        let book = FleetBook::open(dir.path(), &mut config);
        let first = book.prepare(with("s3cret")).unwrap();
        book.save(first).unwrap();
        let again = book.prepare(with("***")).unwrap();
        assert_eq!(again.mqtt.unwrap().password.as_deref(), Some("s3cret"));
        let e = book
            .prepare(fleet(r#"{"mqtt": {"broker": "http://broker.example"}}"#))
            .unwrap_err();
        assert!(e.to_string().starts_with("mqtt.broker: "), "{e}");
        let mut config = Config::default();
        FleetBook::open(dir.path(), &mut config);
        assert_eq!(config.mqtt.unwrap().username.as_deref(), Some("dev1"));
    }
}
