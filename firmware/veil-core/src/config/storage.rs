//! `[storage]`: the footage store.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::issue::ConfigIssue;

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

impl StorageConfig {
    /// What types alone cannot check of `[storage]`.
    pub(crate) fn check(&self, issues: &mut Vec<ConfigIssue>) {
        let st = self;
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
        if let Some(dir) = &self.data_dir
            && !dir.is_absolute()
        {
            issues.push(ConfigIssue::at(
                "storage.data_dir",
                format!("'{}' must be an absolute path", dir.display()),
            ));
        }
    }
}
