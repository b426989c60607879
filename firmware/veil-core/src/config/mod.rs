//! The daemon's configuration: schema, defaults, layering and validation.
//!
//! Sources, lowest precedence first: built-in defaults, an optional base layer (the `--dev`
//! defaults), the TOML file, then `VEIL_*` environment variables. Every problem is reported
//! with the key it concerns, so a technician knows what to change; unknown keys are errors,
//! never silently ignored. Parsing is pure: the caller reads the file and the environment.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod cameras;
mod detection;
mod device;
mod http;
mod issue;
mod mqtt;
mod storage;
mod upload;

pub use cameras::*;
pub use detection::*;
pub use device::*;
pub use http::*;
pub use issue::*;
pub use mqtt::*;
pub use storage::*;
pub use upload::*;

/// Environment variables with this prefix override config keys: `VEIL_HTTP__LISTEN` sets
/// `http.listen` (`__` separates table levels, case is folded to lower).
pub const ENV_PREFIX: &str = "VEIL_";
/// Environment variables with the prefix that are not config keys.
pub const ENV_RESERVED: &[&str] = &[
    "VEIL_CONFIG",
    "VEIL_BOARD",
    // Build and test tooling (scripts/test, scripts/fetch-media, scripts/fetch-models); the
    // model cache is also where `--dev` looks for models.
    "VEIL_MEDIA_DIR",
    "VEIL_MODEL_DIR",
    "VEIL_REQUIRE_NASM",
    "VEIL_BLESS",
    "VEIL_S3S_FS",
    "VEIL_RUMQTTD",
    "VEIL_MOTO",
    "VEIL_S3RVER",
    "VEIL_CARGO_DENY",
    "VEIL_CROSS_PROFILE",
    "VEIL_WHIP_PEER",
    "VEIL_SCHEMATHESIS",
    "VEIL_BROWSER",
    "VEIL_REQUIRE_E2E",
    "VEIL_TEST_BROKER_PORT",
    "VEIL_TEST_BROKER_DIR",
];

/// The whole configuration, one field per table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub device: DeviceConfig,
    pub storage: StorageConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub detection: DetectionConfig,
    pub cameras: Vec<CameraConfig>,
    /// The fleet broker; absent: the device runs without fleet control.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttConfig>,
    pub requests: RequestsConfig,
    /// Where exports are uploaded; absent: exports stay on the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadConfig>,
}

/// Parses TOML text over the defaults, then applies `VEIL_*` overrides from `env`.
pub fn parse(text: &str, env: &[(String, String)]) -> Result<Config, Vec<ConfigIssue>> {
    parse_layered(&[text], env)
}

/// Like [`parse`] with several TOML layers, each overriding the ones before it (tables merge
/// key by key; arrays and values replace).
pub fn parse_layered(
    layers: &[&str],
    env: &[(String, String)],
) -> Result<Config, Vec<ConfigIssue>> {
    let mut merged = toml::Table::new();
    for text in layers {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| vec![syntax_issue(text, &e)])?;
        merge(&mut merged, table);
    }
    let env_keys = apply_env(&mut merged, env)?;
    let config: Config =
        serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().message().to_string();
            let key = if key == "." { None } else { Some(key) };
            vec![ConfigIssue {
                env_var: key.as_ref().and_then(|k| env_var_for(&env_keys, k)),
                key,
                message,
            }]
        })?;
    let mut issues = config.validate();
    for issue in &mut issues {
        if let Some(key) = &issue.key {
            issue.env_var = env_var_for(&env_keys, key);
        }
    }
    if issues.is_empty() {
        Ok(config)
    } else {
        Err(issues)
    }
}

fn syntax_issue(text: &str, e: &toml::de::Error) -> ConfigIssue {
    let message = e.message().trim().to_string();
    let message = match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    };
    ConfigIssue {
        key: None,
        env_var: None,
        message: format!("not valid TOML: {message}"),
    }
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Applies `VEIL_A__B=value` as `a.b = value`; returns which variable set which key.
fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<BTreeMap<String, String>, Vec<ConfigIssue>> {
    let mut set = BTreeMap::new();
    let mut issues = Vec::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_RESERVED.contains(&var.as_str()) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let key = path.join(".");
        if path.iter().any(|p| p.is_empty()) {
            issues.push(ConfigIssue {
                key: None,
                env_var: Some(var.clone()),
                message: format!(
                    "environment variable {var} is not a config key: use VEIL_<TABLE>__<KEY>, e.g. VEIL_HTTP__LISTEN"
                ),
            });
            continue;
        }
        if path[0] == "cameras" {
            issues.push(ConfigIssue {
                key: Some(key),
                env_var: Some(var.clone()),
                message: "cameras are configured in the config file, not the environment".into(),
            });
            continue;
        }
        match insert_path(table, &path, env_value(raw)) {
            Ok(()) => {
                set.insert(key, var.clone());
            }
            Err(depth) => issues.push(ConfigIssue {
                key: Some(path[..=depth].join(".")),
                env_var: Some(var.clone()),
                message: "is a value, not a table".into(),
            }),
        }
    }
    if issues.is_empty() {
        Ok(set)
    } else {
        Err(issues)
    }
}

/// Sets `path` to `value`, creating tables on the way; on a value where a table is needed,
/// returns the depth of that value.
fn insert_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), usize> {
    let (first, rest) = path.split_first().expect("path has at least one part");
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => insert_path(t, rest, value).map_err(|d| d + 1),
        _ => Err(0),
    }
}

/// An environment value is read as a TOML value when it is one (`8080`, `true`, `"x"`,
/// `[1, 2]`), and as a plain string otherwise (`0.0.0.0:80`, `/var/lib/veil`).
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// The variable that set `key`, a key inside it, or (for an unknown table such as
/// `VEIL_HTPP__LISTEN`, reported at `htpp`) a key below it.
fn env_var_for(env_keys: &BTreeMap<String, String>, key: &str) -> Option<String> {
    env_keys
        .iter()
        .find(|(k, _)| {
            key == k.as_str()
                || key.starts_with(&format!("{k}."))
                || k.starts_with(&format!("{key}."))
        })
        .map(|(_, v)| v.clone())
}

impl Config {
    /// Checks what types alone cannot: ranges, uniqueness, relations between keys.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        self.device.check(&mut issues);
        if let Some(m) = &self.mqtt {
            issues.extend(validate_mqtt(m));
        }
        if let Some(u) = &self.upload {
            issues.extend(validate_upload(u));
        }
        self.storage.check(&mut issues);
        self.detection.check(&mut issues);
        self.http.check(&mut issues);
        self.log.check(&mut issues);
        check_cameras(&self.cameras, &mut issues);
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn one_issue(text: &str, e: &[(&str, &str)]) -> ConfigIssue {
        let mut issues = parse(text, &env(e)).unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        issues.remove(0)
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert!(c.cameras.is_empty());
    }

    #[test]
    fn full_file_parses() {
        let c = parse(
            r#"
            [device]
            id = "gw-12"
            name = "Harbour gate"
            board = "rpi5"
            [storage]
            data_dir = "/var/lib/veil"
            [http]
            listen = "127.0.0.1:9000"
            [log]
            format = "json"
            level = "info,veil_media=debug"
            [[cameras]]
            id = "gate"
            name = "Gate"
            source = { kind = "synthetic", width = 1920, height = 1080, fps = 30 }
            "#,
            &[],
        )
        .unwrap();
        assert_eq!(c.device.id.unwrap().as_str(), "gw-12");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.cameras[0].display_name(), "Gate");
        assert_eq!(
            c.cameras[0].source,
            SourceConfig::Synthetic {
                width: Some(1920),
                height: Some(1080),
                fps: Some(30)
            }
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let i = one_issue("[http]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n", &[]);
        assert_eq!(i.key.as_deref(), Some("http.lisen"));
        assert!(i.message.contains("unknown field `lisen`"), "{i}");
        let i = one_issue("[htp]\n", &[]);
        assert_eq!(i.key.as_deref(), Some("htp"));
    }

    #[test]
    fn unknown_key_inside_a_camera_source_names_the_camera() {
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\", fsp = 3 }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.fsp"));
        assert!(i.message.contains("unknown field `fsp`"), "{i}");
    }

    #[test]
    fn wrong_type_is_named() {
        let i = one_issue("[http]\nlisten = 8080\n", &[]);
        assert_eq!(i.key.as_deref(), Some("http.listen"));
        assert!(i.message.contains("invalid type"), "{i}");
        let i = one_issue("[log]\nformat = \"xml\"\n", &[]);
        assert_eq!(i.key.as_deref(), Some("log.format"));
        assert!(
            i.message.contains("human") && i.message.contains("json"),
            "{i}"
        );
    }

    #[test]
    fn out_of_range_values_are_named() {
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\", fps = 500 }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.fps"));
        assert_eq!(i.message, "must be 1 to 120 frames per second, found 500");
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\", width = 641 }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.width"));
        let i = one_issue("[storage]\nsegment_seconds = 5\n", &[]);
        assert_eq!(i.key.as_deref(), Some("storage.segment_seconds"));
        let i = one_issue("[storage]\nflush_ms = 50000\n", &[]);
        assert_eq!(i.key.as_deref(), Some("storage.flush_ms"));
        let i = one_issue("[storage]\nmax_bytes = 1000\n", &[]);
        assert_eq!(i.key.as_deref(), Some("storage.max_bytes"));
        let cam = "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\n";
        let i = one_issue(&format!("{cam}retention_days = 5000\n"), &[]);
        assert_eq!(i.key.as_deref(), Some("cameras[0].retention_days"));
        let i = one_issue(&format!("{cam}max_bytes = 1024\n"), &[]);
        assert_eq!(i.key.as_deref(), Some("cameras[0].max_bytes"));
        assert!(i.message.contains("16 MiB"), "{}", i.message);
        let i = one_issue("[storage]\ndata_dir = \"relative/dir\"\n", &[]);
        assert_eq!(i.key.as_deref(), Some("storage.data_dir"));
        let i = one_issue("[log]\nlevel = \"loud\"\n", &[]);
        assert_eq!(i.key.as_deref(), Some("log.level"));
    }

    #[test]
    fn masks_are_checked_and_name_the_camera_and_mask() {
        let cam = |masks: &str| {
            format!("[[cameras]]\nid = \"gate\"\nsource = {{ kind = \"synthetic\" }}\n{masks}")
        };
        let c = parse(&cam("[[cameras.masks]]\nname = \"window\"\npoints = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.5]]\n"), &[]).unwrap();
        assert_eq!(c.cameras[0].masks[0].polygon().len(), 3);
        let i = one_issue(
            &cam(
                "[[cameras.masks]]\nname = \"bow\"\npoints = [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]\n",
            ),
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].masks[0].points"));
        assert!(
            i.message.starts_with("mask 'bow' of camera 'gate' edges"),
            "{i}"
        );
        let i = one_issue(
            &cam(
                "[[cameras.masks]]\nname = \"far\"\npoints = [[0.1, 0.1], [1.5, 0.1], [0.4, 0.5]]\n",
            ),
            &[],
        );
        assert!(i.message.contains("point 1 is outside the frame"), "{i}");
        let i = one_issue(
            &cam("[[cameras.masks]]\nname = \"x\"\npoints = [[0.1, 0.1, 0.3]]\n"),
            &[],
        );
        assert_eq!(
            i.key.as_deref(),
            Some("cameras[0].masks[0].points[0]"),
            "{i}"
        );
        let i = one_issue(
            &cam("[[cameras.masks]]\nname = \"\"\npoints = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.5]]\n"),
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].masks[0].name"));
    }

    #[test]
    fn the_broker_is_checked_and_named_in_every_problem() {
        let ok = parse(
            "[mqtt]\nbroker = \"mqtts://fleet.example:8884\"\nca_file = \"/etc/veil/ca.pem\"\n",
            &[],
        )
        .unwrap();
        let m = ok.mqtt.unwrap();
        assert_eq!(
            m.address().unwrap(),
            BrokerAddress {
                tls: true,
                host: "fleet.example".into(),
                port: 8884
            }
        );
        assert_eq!((m.topic_prefix.as_str(), m.telemetry_seconds), ("veil", 60));
        let local = MqttConfig {
            broker: "mqtt://127.0.0.1".into(),
            ..m.clone()
        };
        assert_eq!(local.address().unwrap().port, 1883);
        for (toml, key, words) in [
            ("broker = \"http://x\"", "mqtt.broker", "must be mqtts://"),
            (
                "broker = \"mqtt://fleet.example\"",
                "mqtt.broker",
                "only to a loopback",
            ),
            (
                "broker = \"mqtts://x:0\"\nca_file = \"/c\"",
                "mqtt.broker",
                "not 1 to 65535",
            ),
            (
                "broker = \"mqtts://x\"",
                "mqtt.ca_file",
                "is needed for mqtts",
            ),
            (
                "broker = \"mqtt://localhost\"\nclient_cert = \"/c\"",
                "mqtt.client_key",
                "go together",
            ),
            (
                "broker = \"mqtt://localhost\"\npassword = \"p\"",
                "mqtt.username",
                "needs a username",
            ),
            (
                "broker = \"mqtt://localhost\"\ntopic_prefix = \"a/#\"",
                "mqtt.topic_prefix",
                "letters, digits",
            ),
            (
                "broker = \"mqtt://localhost\"\ntelemetry_seconds = 1",
                "mqtt.telemetry_seconds",
                "5 to 3600",
            ),
        ] {
            let i = one_issue(&format!("[mqtt]\n{toml}\n"), &[]);
            assert_eq!(i.key.as_deref(), Some(key), "{toml}: {i}");
            assert!(i.message.contains(words), "{toml}: {i}");
        }
    }

    #[test]
    fn the_upload_target_is_checked_key_by_key() {
        let base = "[upload]\nendpoint = \"https://s3.example\"\nbucket = \"evidence\"\naccess_key = \"a\"\nsecret_key = \"s\"\n";
        let u = parse(base, &[]).unwrap().upload.unwrap();
        assert_eq!(
            (u.parallel, u.part_size_mib, u.region.as_str()),
            (5, 16, "us-east-1")
        );
        for (extra, key, words) in [
            (
                "endpoint = \"http://s3.example\"",
                "upload.endpoint",
                "only to a loopback",
            ),
            (
                "endpoint = \"ftp://x\"",
                "upload.endpoint",
                "must be https://",
            ),
            ("bucket = \"Evidence!\"", "upload.bucket", "S3 bucket name"),
            ("parallel = 0", "upload.parallel", "1 to 16"),
            ("part_size_mib = 1", "upload.part_size_mib", "smallest part"),
            ("prefix = \"../x\"", "upload.prefix", "without '..'"),
        ] {
            let field = extra.split(' ').next().unwrap();
            let toml: String = base
                .lines()
                .filter(|l| !l.starts_with(&format!("{field} ")))
                .chain([extra])
                .map(|l| format!("{l}\n"))
                .collect();
            let i = one_issue(&toml, &[]);
            assert_eq!(i.key.as_deref(), Some(key), "{extra}: {i}");
            assert!(i.message.contains(words), "{extra}: {i}");
        }
        let local = base.replace("https://s3.example", "http://127.0.0.1:9000");
        assert!(parse(&local, &[]).is_ok());
    }

    #[test]
    fn camera_positions_are_checked() {
        let cam = "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\n";
        let c = parse(
            &format!("{cam}mount = \"fixed\"\nposition = {{ lat = 52.37, lon = 4.89 }}\n"),
            &[],
        )
        .unwrap();
        assert_eq!(
            c.cameras[0].position,
            Some(Position {
                lat: 52.37,
                lon: 4.89
            })
        );
        assert_eq!(parse(cam, &[]).unwrap().cameras[0].mount, Mount::Fixed);
        let i = one_issue(
            &format!("{cam}position = {{ lat = 95.0, lon = 4.89 }}\n"),
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].position.lat"), "{i}");
        let i = one_issue(
            &format!("{cam}position = {{ lat = 5.0, lon = 190.0 }}\n"),
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].position.lon"), "{i}");
        let i = one_issue(&format!("{cam}mount = \"boat\"\n"), &[]);
        assert_eq!(i.key.as_deref(), Some("cameras[0].mount"), "{i}");
    }

    #[test]
    fn storage_defaults_to_anonymized_and_names_its_choices() {
        let cam = "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\n";
        let c = parse(cam, &[]).unwrap();
        assert_eq!(c.cameras[0].storage, StoragePolicy::Anonymized);
        let c = parse(&format!("{cam}storage = \"originals\"\n"), &[]).unwrap();
        assert_eq!(c.cameras[0].storage, StoragePolicy::Originals);
        let i = one_issue(&format!("{cam}storage = \"raw\"\n"), &[]);
        assert_eq!(i.key.as_deref(), Some("cameras[0].storage"));
        assert!(
            i.message.contains("anonymized") && i.message.contains("originals"),
            "{i}"
        );
    }

    #[test]
    fn live_sharing_waits_for_an_operator_unless_told_otherwise() {
        let cam = "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\n";
        let c = parse(cam, &[]).unwrap();
        assert_eq!(c.cameras[0].live.approval, LiveApproval::Operator);
        let c = parse(
            &format!("{cam}live = {{ approval = \"automatic\" }}\n"),
            &[],
        )
        .unwrap();
        assert_eq!(c.cameras[0].live.approval, LiveApproval::Automatic);
        let i = one_issue(
            &format!("{cam}live = {{ approval = \"sometimes\" }}\n"),
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].live.approval"), "{i}");
        assert!(
            i.message.contains("operator") && i.message.contains("never"),
            "{i}"
        );
        let i = one_issue(&format!("{cam}live = {{ share = true }}\n"), &[]);
        assert!(i.message.contains("share"), "{i}");
    }

    #[test]
    fn filters_default_to_faces_and_plates() {
        let c = parse(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.cameras[0].filter, FilterName::FacesPlates);
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\nfilter = \"plates\"\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].filter"));
        assert!(
            i.message.contains("masks-only") && i.message.contains("strict"),
            "{i}"
        );
        let i = one_issue("detection = { plate_min_width = 8 }", &[]);
        assert_eq!(i.key.as_deref(), Some("detection.plate_min_width"));
        let i = one_issue("detection = { face_tile = 64 }", &[]);
        assert_eq!(i.key.as_deref(), Some("detection.face_tile"));
        let i = one_issue("detection = { model_dir = \"models\" }", &[]);
        assert_eq!(i.key.as_deref(), Some("detection.model_dir"));
        let i = one_issue("", &[("VEIL_DETECTION__FACE_MIN_SCORE", "2")]);
        assert_eq!(i.key.as_deref(), Some("detection.face_min_score"));
    }

    #[test]
    fn encoder_settings_are_range_checked() {
        let cam = |enc: &str| {
            format!(
                "[[cameras]]\nid = \"a\"\nsource = {{ kind = \"synthetic\" }}\nencoder = {{ {enc} }}\n"
            )
        };
        let c = parse(&cam("bitrate_kbps = 4000"), &[]).unwrap();
        assert_eq!(
            c.cameras[0].encoder,
            EncoderConfig {
                bitrate_kbps: Some(4000),
                keyframe_secs: 2
            }
        );
        let i = one_issue(&cam("bitrate_kbps = 5"), &[]);
        assert_eq!(i.key.as_deref(), Some("cameras[0].encoder.bitrate_kbps"));
        let i = one_issue(&cam("keyframe_secs = 0"), &[]);
        assert_eq!(i.key.as_deref(), Some("cameras[0].encoder.keyframe_secs"));
        let i = one_issue(&cam("gop = 3"), &[]);
        assert_eq!(i.key.as_deref(), Some("cameras[0].encoder.gop"));
    }

    #[test]
    fn bad_ids_and_duplicates_are_named() {
        let i = one_issue(
            "[[cameras]]\nid = \"Front Door\"\nsource = { kind = \"synthetic\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].id"));
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\n[[cameras]]\nid = \"a\"\nsource = { kind = \"synthetic\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[1].id"));
        assert!(i.message.contains("used twice"));
    }

    #[test]
    fn v4l2_cameras_need_a_dev_node() {
        let c = parse("[[cameras]]\nid = \"a\"\nsource = { kind = \"v4l2\", device = \"/dev/video0\", fps = 30 }\n", &[]).unwrap();
        assert!(matches!(
            &c.cameras[0].source,
            SourceConfig::V4l2 { fps: Some(30), .. }
        ));
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"v4l2\", device = \"/tmp/cam\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.device"));
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"v4l2\" }\n",
            &[],
        );
        assert!(i.message.contains("a v4l2 source needs `device`"), "{i}");
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"v4l2\", device = \"/dev/video0\", width = 7 }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.width"));
    }

    #[test]
    fn rtsp_cameras_need_an_rtsp_url() {
        let c = parse("[[cameras]]\nid = \"a\"\nsource = { kind = \"rtsp\", url = \"rtsp://u:p@10.1.2.3:554/h264\", transport = \"udp\" }\n", &[]).unwrap();
        assert!(matches!(
            c.cameras[0].source,
            SourceConfig::Rtsp {
                transport: RtspTransport::Udp,
                ..
            }
        ));
        for bad in ["http://cam/x", "rtsp://", "rtsp:///x", "cam.local"] {
            let i = one_issue(
                &format!(
                    "[[cameras]]\nid = \"a\"\nsource = {{ kind = \"rtsp\", url = \"{bad}\" }}\n"
                ),
                &[],
            );
            assert_eq!(i.key.as_deref(), Some("cameras[0].source.url"), "{bad}");
        }
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"rtsp\", url = \"rtsp://h/x\", transport = \"sctp\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.transport"));
    }

    #[test]
    fn file_cameras_need_an_absolute_path() {
        let c = parse(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"file\", path = \"/srv/clip.mp4\" }\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.cameras[0].source,
            SourceConfig::File {
                path: "/srv/clip.mp4".into(),
                looped: true,
                fps: None
            }
        );
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"file\", path = \"clip.mp4\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.path"));
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"file\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source"));
        assert!(i.message.contains("a file source needs `path`"), "{i}");
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"file\", path = \"/a\", url = \"rtsp://x/y\" }\n",
            &[],
        );
        assert!(
            i.message.contains("`url` does not apply to a file source"),
            "{i}"
        );
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"file\", path = \"/a\", fps = \"ten\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.fps"), "{i}");
    }

    #[test]
    fn unknown_source_kind_lists_the_known_ones() {
        let i = one_issue(
            "[[cameras]]\nid = \"a\"\nsource = { kind = \"webcam\" }\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("cameras[0].source.kind"));
        assert!(i.message.contains("synthetic"), "{i}");
    }

    #[test]
    fn plain_http_only_on_loopback_and_redirects_need_https() {
        let c = parse("[http]\ntls = false\n", &[]).unwrap();
        assert!(!c.http.tls);
        let i = one_issue("[http]\nlisten = \"0.0.0.0:8080\"\ntls = false\n", &[]);
        assert_eq!(i.key.as_deref(), Some("http.tls"));
        assert!(i.message.contains("in clear"), "{i}");
        let i = one_issue(
            "[http]\nlisten = \"0.0.0.0:443\"\nredirect_listen = \"0.0.0.0:443\"\n",
            &[],
        );
        assert_eq!(i.key.as_deref(), Some("http.redirect_listen"));
        let i = one_issue(
            "[http]\ntls = false\nredirect_listen = \"127.0.0.1:80\"\n",
            &[],
        );
        assert!(i.message.contains("need http.tls"), "{i}");
        let c = parse(
            "[http]\nlisten = \"0.0.0.0:443\"\nredirect_listen = \"0.0.0.0:80\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.http.redirect_listen.unwrap().port(), 80);
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let i = one_issue("[http]\nlisten = \n", &[]);
        assert_eq!(i.key, None);
        assert!(i.message.starts_with("not valid TOML: line 2"), "{i}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = parse(
            "[http]\nlisten = \"0.0.0.0:80\"\n",
            &env(&[
                ("VEIL_HTTP__LISTEN", "127.0.0.1:18080"),
                ("VEIL_LOG__FORMAT", "json"),
                ("VEIL_DEVICE__NAME", "Lab"),
                ("VEIL_CONFIG", "/etc/veil/veil.toml"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:18080");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.device.name, "Lab");
    }

    #[test]
    fn bad_environment_overrides_name_the_variable() {
        let i = one_issue("", &[("VEIL_HTTP__LISTN", "1")]);
        assert_eq!(i.key.as_deref(), Some("http.listn"));
        assert_eq!(i.env_var.as_deref(), Some("VEIL_HTTP__LISTN"));
        assert!(
            i.to_string()
                .contains("set by environment variable VEIL_HTTP__LISTN")
        );
        let i = one_issue("", &[("VEIL_HTTP__LISTEN", "nowhere")]);
        assert_eq!(i.env_var.as_deref(), Some("VEIL_HTTP__LISTEN"));
        let i = one_issue("", &[("VEIL_LOG__LEVEL", "shouting")]);
        assert_eq!(i.env_var.as_deref(), Some("VEIL_LOG__LEVEL"));
        let i = one_issue("", &[("VEIL_CAMERAS", "[]")]);
        assert!(i.message.contains("config file"));
        let i = one_issue("", &[("VEIL_HTTP____X", "1")]);
        assert!(i.message.contains("VEIL_<TABLE>__<KEY>"));
    }

    #[test]
    fn layers_merge_tables_and_replace_values() {
        let c = parse_layered(
            &[
                "[http]\nlisten = \"127.0.0.1:8080\"\n[device]\nname = \"Dev\"\n",
                "[device]\nid = \"x1\"\n",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.device.name, "Dev");
        assert_eq!(c.device.id.unwrap().as_str(), "x1");
    }

    #[test]
    fn issue_display_is_one_line_naming_the_key() {
        let i = ConfigIssue::at("http.listen", "bad");
        assert_eq!(i.to_string(), "key 'http.listen': bad");
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    /// Dotted names of every key in `value`, arrays of tables written `name[]`.
    fn keys(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if !matches!(v, toml::Value::Table(_) | toml::Value::Array(_)) {
                        out.push(name.clone());
                    }
                    keys(&name, v, out);
                }
            }
            toml::Value::Array(items) => {
                for item in items.iter().take(1) {
                    keys(&format!("{prefix}[]"), item, out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_config_key_is_documented() {
        let full = parse(
            r#"
            device = { id = "a", name = "b", board = "rpi5" }
            storage = { data_dir = "/data" }
            detection = { model_dir = "/m", backend = "tflite", runtime_library = "/l.so" }
            [[cameras]]
            id = "c"
            name = "d"
            enabled = true
            source = { kind = "synthetic", width = 640, height = 480, fps = 5 }
            encoder = { bitrate_kbps = 2000, keyframe_secs = 4 }
            masks = [{ name = "window", points = [[0.1, 0.1], [0.3, 0.1], [0.3, 0.4]] }]
            filter = "masks-only"
            retention_days = 7
            max_bytes = 10000000000
            "#,
            &[],
        )
        .unwrap();
        let file = parse(
            "[[cameras]]\nid = \"f\"\nsource = { kind = \"file\", path = \"/a.mp4\", loop = false, fps = 5 }\n",
            &[],
        )
        .unwrap();
        let mut all = Vec::new();
        keys("", &toml::Value::try_from(&file).unwrap(), &mut all);
        let rtsp = parse(
            "[[cameras]]\nid = \"r\"\nsource = { kind = \"rtsp\", url = \"rtsp://h/x\", username = \"u\", password = \"p\" }\n",
            &[],
        )
        .unwrap();
        keys("", &toml::Value::try_from(&rtsp).unwrap(), &mut all);
        let v4l2 = parse(
            "[[cameras]]\nid = \"v\"\nsource = { kind = \"v4l2\", device = \"/dev/video0\" }\n",
            &[],
        )
        .unwrap();
        keys("", &toml::Value::try_from(&v4l2).unwrap(), &mut all);
        let value = toml::Value::try_from(&full).unwrap();
        keys("", &value, &mut all);
        assert!(all.len() >= 16, "{all:?}");
        let doc = include_str!("../../../../docs/configuration.md");
        let missing: Vec<_> = all
            .iter()
            .filter(|k| !doc.contains(&format!("`{k}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md lacks {missing:?}"
        );
    }
}
