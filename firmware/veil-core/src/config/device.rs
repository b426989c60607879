//! `[device]`, `[requests]` and `[log]`: who the device is and how it behaves.

use serde::{Deserialize, Serialize};

use crate::id::DeviceId;

use super::issue::ConfigIssue;

/// How video requests from the fleet are handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RequestsConfig {
    /// Approve every valid request at once instead of waiting for the owner.
    pub auto_approve: bool,
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

pub(crate) const LOG_LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

pub(crate) fn check_log_level(level: &str) -> Result<(), String> {
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

impl DeviceConfig {
    /// What types alone cannot check of `[device]`.
    pub(crate) fn check(&self, issues: &mut Vec<ConfigIssue>) {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            issues.push(ConfigIssue::at(
                "device.name",
                "must be 1 to 64 printable characters",
            ));
        }
        if let Some(board) = &self.board
            && crate::board::check_profile_name(board).is_err()
        {
            issues.push(ConfigIssue::at(
                "device.board",
                format!(
                    "'{board}' is not a board profile name (lowercase letters, digits, '-', '_')"
                ),
            ));
        }
    }
}

impl LogConfig {
    /// What types alone cannot check of `[log]`.
    pub(crate) fn check(&self, issues: &mut Vec<ConfigIssue>) {
        if let Err(e) = check_log_level(&self.level) {
            issues.push(ConfigIssue::at("log.level", e));
        }
    }
}
