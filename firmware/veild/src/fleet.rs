//! What the fleet sees of the device over MQTT (`veil-uplink`): its state, the registry of its
//! cameras, telemetry, and the commands it carries out. Secrets never leave: `config.get`
//! answers `***` for every password, and RTSP URLs lose theirs.

use base64::Engine as _;
use serde_json::{Value, json};
use veil_core::config::FilterName;
use veil_core::{Error, ErrorKind};
use veil_web::StatusResponse;

/// The filters a camera can be shared with, and the frame rate each is offered at.
pub fn filters_offered() -> Value {
    let all = [
        FilterName::FacesPlates,
        FilterName::Strict,
        FilterName::Faces,
        FilterName::Motion,
        FilterName::Silhouette,
        FilterName::MasksOnly,
    ];
    Value::Array(
        all.iter()
            .map(
                |f| json!({ "name": f.as_str(), "fps": veil_privacy::Filter::from(*f).frame_rate() }),
            )
            .collect(),
    )
}

pub fn state(status: &StatusResponse, online: bool) -> Value {
    let d = &status.device;
    json!({
        "online": online,
        "device_id": d.id,
        "name": d.name,
        "firmware_version": d.firmware_version,
        "board": d.board,
        "uptime_seconds": d.uptime_seconds,
        "time": jiff::Timestamp::from_millisecond(d.time_ms as i64).map(|t| t.to_string()).unwrap_or_default(),
    })
}

/// The registry: every camera with where it is (from its configuration) and what it offers.
/// A camera's picture in the registry: taken every few minutes, small, anonymized.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    pub jpeg: Vec<u8>,
    pub sha256: String,
    pub taken_at: String,
}

impl Thumbnail {
    pub fn new(jpeg: Vec<u8>) -> Thumbnail {
        use sha2::Digest;
        Thumbnail {
            sha256: hex::encode(sha2::Sha256::digest(&jpeg)),
            jpeg,
            taken_at: jiff::Timestamp::now().to_string(),
        }
    }
}

pub fn registry(
    status: &StatusResponse,
    config: &[veil_core::config::CameraConfig],
    thumbnails: &std::collections::HashMap<String, Thumbnail>,
) -> Value {
    let cameras: Vec<Value> = status
        .cameras
        .iter()
        .map(|c| {
            let configured = config.iter().find(|k| k.id.as_str() == c.id);
            json!({
                "id": c.id,
                "name": c.name,
                "kind": configured.map_or("fixed", |k| k.mount.as_str()),
                "position": configured
                    .and_then(|k| k.position)
                    .map(|p| json!({ "lat": p.lat, "lon": p.lon })),
                "status": c.state,
                "resolution": { "width": c.width, "height": c.height },
                "filter": c.filter,
                "filters_offered": filters_offered(),
                "capabilities": ["snapshot", "export"],
                // The hash names the picture; `thumbnail` fetches exactly that one.
                "thumbnail": thumbnails.get(&c.id).map(|t| json!({
                    "sha256": t.sha256,
                    "bytes": t.jpeg.len(),
                    "taken_at": t.taken_at,
                    "command": "thumbnail",
                    "params": { "camera": c.id },
                })),
            })
        })
        .collect();
    json!({
        "device_id": status.device.id,
        "name": status.device.name,
        "cameras": cameras,
    })
}

/// Replaces every secret in a configuration rendered as JSON.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if matches!(key.as_str(), "password" | "secret_key") && !v.is_null() {
                    *v = json!("***");
                } else if key == "url"
                    && let Some(url) = v.as_str()
                    && let Some((scheme, rest)) = url.split_once("://")
                    && let Some((userinfo, host)) = rest.split_once('@')
                {
                    let user = userinfo.split(':').next().unwrap_or_default();
                    *v = json!(format!("{scheme}://{user}:***@{host}"));
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// System figures from `sysinfo`, refreshed on each call.
pub struct SystemProbe {
    system: sysinfo::System,
    disks: sysinfo::Disks,
    networks: sysinfo::Networks,
    components: sysinfo::Components,
}

impl SystemProbe {
    pub fn new() -> SystemProbe {
        SystemProbe {
            system: sysinfo::System::new(),
            disks: sysinfo::Disks::new_with_refreshed_list(),
            networks: sysinfo::Networks::new_with_refreshed_list(),
            components: sysinfo::Components::new_with_refreshed_list(),
        }
    }

    pub fn sample(&mut self, data_dir: &std::path::Path) -> Value {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        self.components.refresh(true);
        // The disk holding the data directory: the longest mount point that contains it.
        let disk = self
            .disks
            .iter()
            .filter(|d| data_dir.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len());
        let temperature = self
            .components
            .iter()
            .filter_map(|c| c.temperature())
            .fold(None, |m: Option<f32>, t| Some(m.map_or(t, |m| m.max(t))));
        let (rx, tx) = self
            .networks
            .iter()
            .filter(|(name, _)| *name != "lo")
            .fold((0u64, 0u64), |(r, t), (_, n)| {
                (r + n.total_received(), t + n.total_transmitted())
            });
        json!({
            "cpu_percent": (self.system.global_cpu_usage() * 10.0).round() / 10.0,
            "memory": { "total_bytes": self.system.total_memory(), "used_bytes": self.system.used_memory() },
            "temperature_celsius": temperature,
            "disk": disk.map(|d| json!({
                "mount": d.mount_point().display().to_string(),
                "total_bytes": d.total_space(),
                "free_bytes": d.available_space(),
            })),
            "network": { "received_bytes": rx, "transmitted_bytes": tx },
        })
    }
}

pub fn telemetry(status: &StatusResponse, system: Value) -> Value {
    let cameras: Vec<Value> = status
        .cameras
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "state": c.state,
                "fps": c.fps,
                "fps_encoded": c.fps_encoded,
                "bitrate_kbps": c.bitrate_kbps,
                "frames_dropped": c.frames_dropped,
                "frames_blanked": c.frames_blanked,
                "frames_regional": c.frames_regional,
                "blank_reason": c.blank_reason,
            })
        })
        .collect();
    json!({
        "device_id": status.device.id,
        "time": jiff::Timestamp::from_millisecond(status.device.time_ms as i64).map(|t| t.to_string()).unwrap_or_default(),
        "uptime_seconds": status.device.uptime_seconds,
        "system": system,
        "cameras": cameras,
    })
}

pub fn thumbnail_result(camera: &str, t: &Thumbnail) -> Value {
    json!({
        "camera": camera,
        "content_type": "image/jpeg",
        "sha256": t.sha256,
        "taken_at": t.taken_at,
        "jpeg_base64": base64::engine::general_purpose::STANDARD.encode(&t.jpeg),
    })
}

pub fn snapshot_result(camera: &str, jpeg: &[u8]) -> Value {
    use sha2::Digest;
    json!({
        "camera": camera,
        "content_type": "image/jpeg",
        "sha256": hex::encode(sha2::Sha256::digest(jpeg)),
        "jpeg_base64": base64::engine::general_purpose::STANDARD.encode(jpeg),
    })
}

pub fn not_yet(name: &str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("{name} is not available in this firmware yet"),
    )
}

/// RFC 7386 JSON merge patch, except that a `"***"` string leaves the value as it is (the
/// way secrets are shown).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("made an object above");
    for (key, change) in changes {
        match change {
            Value::Null => {
                map.remove(key);
            }
            Value::String(s) if s == "***" => {}
            _ => merge_patch(map.entry(key.clone()).or_insert(Value::Null), change),
        }
    }
}

/// One point of the dashboard's graphs, from a status and a system sample.
pub fn history_sample(status: &StatusResponse, system: &Value, t: u64) -> veil_web::HealthSample {
    let disk = &system["disk"];
    let total = disk["total_bytes"].as_f64().unwrap_or(0.0);
    let free = disk["free_bytes"].as_f64().unwrap_or(0.0);
    veil_web::HealthSample {
        t,
        cpu: system["cpu_percent"].as_f64().unwrap_or(0.0),
        temp_c: system["temperature_celsius"]
            .as_f64()
            .map(|c| (c * 10.0).round() / 10.0),
        disk_used_pct: if total > 0.0 {
            ((total - free) / total * 1000.0).round() / 10.0
        } else {
            0.0
        },
        fps: status
            .cameras
            .iter()
            .map(|c| (c.id.clone(), (c.fps * 10.0).round() / 10.0))
            .collect(),
    }
}

/// Footage and gaps of a camera in a window; segments less than 2 s apart are one span.
pub fn timeline(
    camera: &str,
    from_ms: i64,
    to_ms: i64,
    coverage: &veil_store::Coverage,
) -> veil_web::Timeline {
    let mut spans: Vec<veil_web::Span> = Vec::new();
    for s in &coverage.segments {
        let (a, b) = (s.start_ms.max(from_ms), s.end_ms.min(to_ms));
        match spans.last_mut() {
            Some(last) if a - last.to_ms < 2000 => last.to_ms = last.to_ms.max(b),
            _ => spans.push(veil_web::Span {
                from_ms: a,
                to_ms: b,
            }),
        }
    }
    veil_web::Timeline {
        camera: camera.into(),
        from_ms,
        to_ms,
        spans,
        gaps: coverage
            .gaps
            .iter()
            .filter(|(a, b)| b - a >= 2000)
            .map(|&(from_ms, to_ms)| veil_web::Span { from_ms, to_ms })
            .collect(),
    }
}

#[cfg(test)]
mod merge_tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386_and_keeps_masked_secrets() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "mqtt": {"password": "s3cret"}});
        merge_patch(
            &mut doc,
            &json!({"a": "z", "c": {"f": null}, "mqtt": {"password": "***"}, "n": [1]}),
        );
        assert_eq!(
            doc,
            json!({"a": "z", "c": {"d": "e"}, "mqtt": {"password": "s3cret"}, "n": [1]})
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_wherever_they_are() {
        let mut v = json!({
            "mqtt": { "password": "hunter2", "username": "dev" },
            "cameras": [{ "source": { "url": "rtsp://admin:pw@10.0.0.5/live", "password": "x" } },
                        { "source": { "url": "rtsp://10.0.0.6/live", "password": null } }],
        });
        redact(&mut v);
        let text = v.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains(":pw@") && !text.contains("\"x\""),
            "{text}"
        );
        assert_eq!(
            v["cameras"][0]["source"]["url"],
            "rtsp://admin:***@10.0.0.5/live"
        );
        assert_eq!(v["cameras"][1]["source"]["url"], "rtsp://10.0.0.6/live");
        assert_eq!(v["mqtt"]["username"], "dev");
    }
}
