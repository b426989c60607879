//! `[mqtt]`: the fleet broker.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::issue::ConfigIssue;

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

pub(crate) fn default_topic_prefix() -> String {
    "veil".into()
}

pub(crate) fn default_telemetry_seconds() -> u32 {
    60
}

pub(crate) fn default_keep_alive_seconds() -> u32 {
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

pub(crate) fn validate_mqtt(m: &MqttConfig) -> Vec<ConfigIssue> {
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
