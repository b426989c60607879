//! `[upload]`: the S3 target evidence exports go to.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::issue::ConfigIssue;

/// S3-compatible object storage for exports (AWS S3, MinIO, Garage, Ceph RGW).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadConfig {
    /// `https://host[:port]`; `http://` only to a loopback address.
    pub endpoint: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// Object keys start with this (default: the device id and a `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// PEM file of the CA that signed the endpoint's certificate (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Parts in flight at once.
    #[serde(default = "default_parallel")]
    pub parallel: u32,
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: u32,
    /// Upload bandwidth cap in Mbit/s (unset: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mbit_per_s: Option<u32>,
}

pub(crate) fn default_region() -> String {
    "us-east-1".into()
}

pub(crate) fn default_parallel() -> u32 {
    5
}

pub(crate) fn default_part_size_mib() -> u32 {
    16
}

pub(crate) fn validate_upload(u: &UploadConfig) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let (scheme, rest) = u.endpoint.split_once("://").unwrap_or(("", ""));
    let host = rest
        .split(['/', '?'])
        .next()
        .unwrap_or_default()
        .rsplit_once(':')
        .map_or(rest.split('/').next().unwrap_or_default(), |(h, _)| h)
        .trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match scheme {
        "https" if !host.is_empty() => {}
        "http" if loopback => {}
        "http" => issues.push(ConfigIssue::at(
            "upload.endpoint",
            format!("plain http:// is allowed only to a loopback address; use https:// for {host}"),
        )),
        _ => issues.push(ConfigIssue::at(
            "upload.endpoint",
            format!("must be https://host[:port], found '{}'", u.endpoint),
        )),
    }
    let bucket_ok = (3..=63).contains(&u.bucket.len())
        && u.bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !bucket_ok {
        issues.push(ConfigIssue::at(
            "upload.bucket",
            format!("must be an S3 bucket name (3 to 63 lowercase letters, digits, '-', '.'), found '{}'", u.bucket),
        ));
    }
    if u.access_key.is_empty() {
        issues.push(ConfigIssue::at("upload.access_key", "must not be empty"));
    }
    if u.secret_key.is_empty() {
        issues.push(ConfigIssue::at("upload.secret_key", "must not be empty"));
    }
    if !(1..=16).contains(&u.parallel) {
        issues.push(ConfigIssue::at(
            "upload.parallel",
            format!("must be 1 to 16, found {}", u.parallel),
        ));
    }
    if !(5..=1024).contains(&u.part_size_mib) {
        issues.push(ConfigIssue::at(
            "upload.part_size_mib",
            format!(
                "must be 5 to 1024 MiB (S3's smallest part is 5 MiB), found {}",
                u.part_size_mib
            ),
        ));
    }
    if u.max_mbit_per_s == Some(0) {
        issues.push(ConfigIssue::at(
            "upload.max_mbit_per_s",
            "must be at least 1, or unset for no cap",
        ));
    }
    if let Some(p) = &u.prefix
        && (p.starts_with('/') || p.contains("..") || p.chars().any(char::is_control))
    {
        issues.push(ConfigIssue::at(
            "upload.prefix",
            format!("must be a relative key prefix without '..', found '{p}'"),
        ));
    }
    issues
}
