//! Identifiers that cross boundaries (config, MQTT topics, URLs, file names).
//!
//! Device and camera ids appear in MQTT topic levels and file paths, so they are restricted to
//! a safe alphabet: no `/`, `+`, `#`, `..` or spaces can ever reach a topic or a path.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Checks a slug: 1..=max chars of `a-z 0-9 - _`, starting with a letter or digit.
fn check_slug(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if s.len() > max {
        return Err(format!("{what} '{s}' is longer than {max} characters"));
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(format!("{what} '{s}' must start with a letter or digit"));
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "{what} '{s}' contains '{bad}': use lowercase letters, digits, '-' and '_' only"
        ));
    }
    Ok(())
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn new(s: impl Into<String>) -> Result<Self, String> {
                let s = s.into();
                check_slug($what, &s, $max)?;
                Ok($name(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

slug_id!(
    /// A device's id in the fleet: an MQTT topic level and part of export manifests.
    DeviceId,
    "device id",
    64
);
slug_id!(
    /// A camera's id on its device: stable across renames, used in topics, URLs and paths.
    CameraId,
    "camera id",
    32
);

/// A unique id for events, commands and records: UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(uuid::Uuid);

impl EventId {
    /// A new id for the given wall time (milliseconds since the epoch) and random bits.
    pub fn new(unix_millis: u64, random: u128) -> Self {
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            unix_millis / 1000,
            ((unix_millis % 1000) * 1_000_000) as u32,
        );
        let mut id = *uuid::Uuid::new_v7(ts).as_bytes();
        // Keep the 48-bit timestamp and version/variant bits; fill the rest from `random`.
        let all = random.to_be_bytes();
        let r = &all[6..]; // the low 80 bits
        id[6] = (id[6] & 0xf0) | (r[0] & 0x0f);
        id[7] = r[1];
        id[8] = (id[8] & 0xc0) | (r[2] & 0x3f);
        id[9..16].copy_from_slice(&r[3..10]);
        EventId(uuid::Uuid::from_bytes(id))
    }

    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_ids_accept_safe_slugs() {
        for ok in ["cam1", "front-door", "lot_b", "0", &"a".repeat(32)] {
            assert!(CameraId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn camera_ids_reject_what_would_break_topics_or_paths() {
        for (bad, why) in [
            ("", "empty"),
            ("Cam1", "'C'"),
            ("a/b", "'/'"),
            ("a+b", "'+'"),
            ("a#", "'#'"),
            ("..", "start with"),
            ("-x", "start with"),
            ("a b", "' '"),
        ] {
            let err = CameraId::new(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(
            CameraId::new("a".repeat(33))
                .unwrap_err()
                .contains("longer than 32")
        );
    }

    #[test]
    fn ids_deserialize_with_validation() {
        let ok: CameraId = serde_json::from_str("\"cam1\"").unwrap();
        assert_eq!(ok.as_str(), "cam1");
        let err = serde_json::from_str::<CameraId>("\"a/b\"").unwrap_err();
        assert!(err.to_string().contains("'/'"));
    }

    #[test]
    fn event_ids_sort_by_time_and_differ_by_randomness() {
        let a = EventId::new(1_700_000_000_000, 1);
        let b = EventId::new(1_700_000_000_001, 0);
        let c = EventId::new(1_700_000_000_000, 2);
        assert!(a < b);
        assert_ne!(a, c);
        assert_eq!(a.as_uuid().get_version_num(), 7);
    }
}
