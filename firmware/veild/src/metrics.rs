//! Prometheus metrics of the daemon, in the OpenMetrics text format.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use veil_media::pipeline::PipelineStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CameraLabels {
    pub camera: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub camera: String,
    /// `source` (the camera fell behind its rate), `privacy` or `encoder` (queue full).
    pub stage: &'static str,
}

/// Every metric the daemon exports. Handles are cheap clones of atomics: the media threads
/// update them directly, the scrape only reads.
pub struct Metrics {
    registry: Registry,
    pub camera_frames: Family<CameraLabels, Counter>,
    pub camera_source_dropped: Family<CameraLabels, Counter>,
    camera_dropped: Family<StageLabels, Counter>,
    camera_encoded: Family<CameraLabels, Counter>,
    camera_encoded_bytes: Family<CameraLabels, Counter>,
    camera_keyframes: Family<CameraLabels, Counter>,
    camera_encode_seconds: Family<CameraLabels, Gauge<f64, AtomicU64>>,
    camera_latency_seconds: Family<CameraLabels, Gauge<f64, AtomicU64>>,
    camera_queue_depth: Family<StageLabels, Gauge>,
    pipelines: Mutex<Vec<(CameraLabels, Arc<PipelineStats>)>>,
    camera_blanked: Family<CameraLabels, Counter>,
    camera_regional: Family<CameraLabels, Counter>,
    privacy: Mutex<Vec<(CameraLabels, Arc<veil_privacy::PrivacyStats>)>>,
    pub camera_fps: Family<CameraLabels, Gauge<f64, AtomicU64>>,
    pub camera_up: Family<CameraLabels, Gauge>,
    pub camera_restarts: Family<CameraLabels, Counter>,
    uptime: Gauge<f64, AtomicU64>,
    rss: Gauge,
    /// Registered only when the board's sensor is readable: no made-up zero.
    temperature: Option<Gauge<f64, AtomicU64>>,
    thermal_sensor: PathBuf,
}

impl Metrics {
    pub fn new(version: &str, board: &str, device: &str, thermal_sensor: PathBuf) -> Metrics {
        let mut registry = Registry::with_prefix("veil");
        let build = Info::new(vec![
            ("version", version.to_string()),
            ("board", board.to_string()),
            ("device", device.to_string()),
        ]);
        registry.register(
            "build",
            "Firmware version, board profile and device id",
            build,
        );
        let m = Metrics {
            camera_frames: Family::default(),
            camera_source_dropped: Family::default(),
            camera_dropped: Family::default(),
            camera_encoded: Family::default(),
            camera_encoded_bytes: Family::default(),
            camera_keyframes: Family::default(),
            camera_encode_seconds: Family::default(),
            camera_latency_seconds: Family::default(),
            camera_queue_depth: Family::default(),
            pipelines: Mutex::new(Vec::new()),
            camera_blanked: Family::default(),
            camera_regional: Family::default(),
            privacy: Mutex::new(Vec::new()),
            camera_fps: Family::default(),
            camera_up: Family::default(),
            camera_restarts: Family::default(),
            uptime: Gauge::default(),
            rss: Gauge::default(),
            temperature: read_temperature(&thermal_sensor).map(|_| Gauge::default()),
            thermal_sensor,
            registry,
        };
        let mut m = m;
        let r = &mut m.registry;
        r.register(
            "camera_frames",
            "Frames captured per camera",
            m.camera_frames.clone(),
        );
        r.register(
            "camera_frames_dropped",
            "Frames lost before the encoder, by stage",
            m.camera_dropped.clone(),
        );
        r.register(
            "camera_frames_blanked",
            "Frames the privacy engine blanked whole: no detection could vouch for them",
            m.camera_blanked.clone(),
        );
        r.register(
            "camera_frames_regional",
            "Frames let out with every moving region hidden: the detection was too old to vouch for what moved",
            m.camera_regional.clone(),
        );
        r.register(
            "camera_frames_encoded",
            "Frames encoded per camera",
            m.camera_encoded.clone(),
        );
        r.register(
            "camera_encoded_bytes",
            "H.264 bytes produced per camera",
            m.camera_encoded_bytes.clone(),
        );
        r.register(
            "camera_keyframes",
            "Keyframes produced per camera",
            m.camera_keyframes.clone(),
        );
        r.register(
            "camera_encode_seconds",
            "Encode time of the last frame",
            m.camera_encode_seconds.clone(),
        );
        r.register(
            "camera_latency_seconds",
            "Capture to encoded time of the last frame",
            m.camera_latency_seconds.clone(),
        );
        r.register(
            "camera_queue_depth",
            "Frames waiting in front of a stage (privacy, encoder)",
            m.camera_queue_depth.clone(),
        );
        r.register(
            "camera_fps",
            "Frames per second over the last seconds",
            m.camera_fps.clone(),
        );
        r.register(
            "camera_up",
            "1 while the camera delivers frames",
            m.camera_up.clone(),
        );
        r.register(
            "camera_restarts",
            "Times the supervisor restarted a failed camera",
            m.camera_restarts.clone(),
        );
        r.register(
            "uptime_seconds",
            "Seconds since the daemon started",
            m.uptime.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the daemon",
            m.rss.clone(),
        );
        if let Some(t) = &m.temperature {
            r.register(
                "soc_temperature_celsius",
                "SoC temperature from the board profile's sensor",
                t.clone(),
            );
        }
        m
    }

    /// Exports a camera pipeline's counters.
    pub fn register_pipeline(&self, labels: &CameraLabels, stats: Arc<PipelineStats>) {
        self.pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((labels.clone(), stats));
    }

    /// Exports a camera privacy engine's count of blanked frames.
    pub fn register_privacy(&self, labels: &CameraLabels, stats: Arc<veil_privacy::PrivacyStats>) {
        self.privacy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((labels.clone(), stats));
    }

    /// Copies pipeline counters (atomics owned by the media threads) into the registry.
    fn sample_pipelines(&self) {
        for (l, st) in self
            .privacy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let c = self.camera_blanked.get_or_create(l);
            c.inc_by(st.blanked().saturating_sub(c.get()));
            let c = self.camera_regional.get_or_create(l);
            c.inc_by(st.regional().saturating_sub(c.get()));
        }
        let sync = |c: &Counter, now: u64| c.inc_by(now.saturating_sub(c.get()));
        for (l, st) in self
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let stage = |stage| StageLabels {
                camera: l.camera.clone(),
                stage,
            };
            sync(
                &self.camera_dropped.get_or_create(&stage("source")),
                self.camera_source_dropped.get_or_create(l).get(),
            );
            sync(
                &self.camera_dropped.get_or_create(&stage("privacy")),
                load(&st.dropped_before_privacy),
            );
            sync(
                &self.camera_dropped.get_or_create(&stage("encoder")),
                load(&st.dropped_before_encoder),
            );
            sync(
                &self.camera_encoded.get_or_create(l),
                load(&st.frames_encoded),
            );
            sync(
                &self.camera_encoded_bytes.get_or_create(l),
                load(&st.bytes_out),
            );
            sync(&self.camera_keyframes.get_or_create(l), load(&st.keyframes));
            self.camera_encode_seconds
                .get_or_create(l)
                .set(load(&st.last_encode_us) as f64 / 1e6);
            self.camera_queue_depth
                .get_or_create(&stage("privacy"))
                .set(load(&st.queue_privacy) as i64);
            self.camera_queue_depth
                .get_or_create(&stage("encoder"))
                .set(load(&st.queue_encode) as i64);
            self.camera_latency_seconds
                .get_or_create(l)
                .set(load(&st.last_latency_us) as f64 / 1e6);
        }
    }

    /// Refreshes the sampled gauges and encodes everything.
    pub fn render(&self, uptime_secs: f64) -> String {
        self.sample_pipelines();
        self.uptime.set(uptime_secs);
        if let Some(rss) = resident_bytes() {
            self.rss.set(rss as i64);
        }
        if let (Some(gauge), Some(t)) = (&self.temperature, read_temperature(&self.thermal_sensor))
        {
            gauge.set(t);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics failed: {e}");
        }
        out
    }
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Linux thermal zones report millidegrees Celsius.
fn read_temperature(path: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let milli: f64 = text.trim().parse().ok()?;
    Some(milli / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_camera_series_and_build_info() {
        let dir = tempfile::tempdir().unwrap();
        let sensor = dir.path().join("temp");
        std::fs::write(&sensor, "48500\n").unwrap();
        let m = Metrics::new("0.1.0", "x86_64-dev", "veil-dev", sensor);
        let cam = CameraLabels {
            camera: "gate".into(),
        };
        m.camera_frames.get_or_create(&cam).inc_by(5);
        let text = m.render(12.5);
        assert!(
            text.contains(r#"veil_camera_frames_total{camera="gate"} 5"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"veil_build_info{version="0.1.0",board="x86_64-dev",device="veil-dev"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("veil_uptime_seconds 12.5"), "{text}");
        assert!(text.contains("veil_soc_temperature_celsius 48.5"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        let without = Metrics::new("0.1.0", "b", "d", "/nonexistent/temp".into()).render(1.0);
        assert!(!without.contains("temperature"), "{without}");
    }
}
