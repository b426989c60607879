//! The media path as the daemon wires it: each camera's source, privacy stage, encoder and
//! recorder.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use veil_core::board::{BoardProfile, EncoderProfile};
use veil_core::config::{CameraConfig, FilterName, RtspTransport, SourceConfig, StoragePolicy};
use veil_core::{Clock, Error, ErrorKind};
use veil_media::file::{FileOptions, FileSource};
use veil_media::rtsp::{RtspOptions, RtspSource};
use veil_media::source::Source;
use veil_media::v4l2::{V4l2Options, V4l2Source};

use super::data_dir::DataDir;
use crate::camera::{
    Camera, CameraParts, CameraSpec, RetryPolicy, SourceFactory, synthetic_factory,
};
use crate::metrics::Metrics;
use crate::settings::Settings;
use veil_media::pipeline::{PrivacyStage, openh264_factory, v4l2m2m_factory};
use veil_privacy::{DetectionSetup, Engine, EngineConfig, FailSafePolicy, Style};

/// An RTSP camera that sends nothing for this long is reconnected.
const RTSP_STALL: Duration = Duration::from_secs(10);
/// What happens to every frame before anything else sees it: the camera's privacy engine
/// (masks always; detection per its filter), with its counts of frames let out and blanked.
/// If the engine cannot start, every frame is blanked: no camera runs unprotected.
pub(super) fn privacy_stage(
    cam: &CameraConfig,
    detection: &DetectionSetup,
    masks: &crate::masks::MaskBook,
) -> (
    PrivacyStage,
    Option<String>,
    Arc<veil_privacy::PrivacyStats>,
) {
    let config = EngineConfig {
        filter: cam.filter.into(),
        masks: cam.masks.iter().map(|m| m.polygon()).collect(),
        style: Style::Pixelate,
        policy: FailSafePolicy::default(),
        detection: Some(detection.clone()),
    };
    match Engine::new(cam.id.as_str(), config) {
        Ok(mut engine) => {
            masks.attach(cam.id.as_str(), engine.mask_handle());
            let stats = engine.stats();
            (Box::new(move |frame| engine.process(frame)), None, stats)
        }
        Err(e) => {
            tracing::error!(camera = %cam.id, error = %e, "privacy engine did not start; blanking every frame");
            let stats = Arc::<veil_privacy::PrivacyStats>::default();
            let why = format!("did not start: {e}");
            let blank: PrivacyStage = Box::new({
                let stats = stats.clone();
                move |frame| {
                    let (w, h) = (frame.width() as i32, frame.height() as i32);
                    veil_privacy::redact::solid(frame, veil_privacy::Rect { x: 0, y: 0, w, h });
                    stats.count_blank("privacy engine", &why);
                }
            });
            let message = format!("privacy engine did not start, every frame is blanked: {e}");
            (blank, Some(message), stats)
        }
    }
}

/// The engine that anonymizes recorded footage of a camera again (on export) with `filter`:
/// the camera's masks (if it is still configured) and the device's models.
pub fn export_engine(
    camera: &str,
    masks: &[veil_core::config::MaskConfig],
    filter: FilterName,
    detection: &DetectionSetup,
) -> Result<Engine, Error> {
    let config = EngineConfig {
        filter: filter.into(),
        masks: masks.iter().map(|m| m.polygon()).collect(),
        style: Style::Pixelate,
        policy: FailSafePolicy::default(),
        detection: Some(detection.clone()),
    };
    Engine::new(camera, config)
}

/// The camera's description and a factory that opens its source.
pub(super) fn camera_source(
    cam: &CameraConfig,
    board: &BoardProfile,
    clock: &Arc<dyn Clock>,
) -> (CameraSpec, SourceFactory) {
    let defaults = &board.camera_defaults;
    let encoder_threads = match board.encoder {
        EncoderProfile::Openh264 { threads } => threads.clamp(1, 16) as u16,
        EncoderProfile::V4l2m2m { .. } => 1,
    };
    let mut spec = CameraSpec {
        id: cam.id.to_string(),
        name: cam.display_name().to_string(),
        kind: cam.source.kind(),
        filter: cam.filter.as_str(),
        masks: cam.masks.len() as u32,
        width: 0,
        height: 0,
        fps: 0,
        bitrate_kbps: cam.encoder.bitrate_kbps.unwrap_or(0),
        keyframe_secs: cam.encoder.keyframe_secs,
        encoder_threads,
        privacy_error: None,
        privacy: Default::default(),
        keep_originals: cam.storage == StoragePolicy::Originals,
    };
    match &cam.source {
        SourceConfig::Synthetic { width, height, fps } => {
            spec.width = width.unwrap_or(defaults.width);
            spec.height = height.unwrap_or(defaults.height);
            spec.fps = fps.unwrap_or(defaults.fps);
            let factory = synthetic_factory(spec.width, spec.height, spec.fps, clock.clone());
            (spec, factory)
        }
        SourceConfig::V4l2 {
            device,
            width,
            height,
            fps,
        } => {
            let options = V4l2Options {
                device: device.clone(),
                width: width.unwrap_or(defaults.width),
                height: height.unwrap_or(defaults.height),
                fps: fps.unwrap_or(defaults.fps),
            };
            (spec.width, spec.height, spec.fps) = (options.width, options.height, options.fps);
            let clock = clock.clone();
            let factory: SourceFactory = Box::new(move || {
                Ok(Box::new(V4l2Source::open(&options, clock.clone())?) as Box<dyn Source>)
            });
            (spec, factory)
        }
        SourceConfig::Rtsp {
            url,
            username,
            password,
            transport,
        } => {
            let options = RtspOptions {
                url: url.clone(),
                username: username.clone(),
                password: password.clone(),
                transport: match transport {
                    RtspTransport::Tcp => veil_media::rtsp::RtspTransport::Tcp,
                    RtspTransport::Udp => veil_media::rtsp::RtspTransport::Udp,
                },
                stall_timeout: RTSP_STALL,
                fps_hint: defaults.fps,
            };
            // Until the camera's SDP says otherwise (the capture thread passes its rate on to
            // the encoder), assume the board's default rate.
            spec.fps = defaults.fps;
            let clock = clock.clone();
            let factory: SourceFactory = Box::new(move || {
                Ok(Box::new(RtspSource::open(&options, clock.clone())?) as Box<dyn Source>)
            });
            (spec, factory)
        }
        SourceConfig::File { path, looped, fps } => {
            let options = FileOptions {
                looped: *looped,
                fps: *fps,
                realtime: true,
            };
            // Probe once for the rate the encoder needs; a file that does not open now is
            // reported by the supervisor, which keeps trying.
            spec.fps = FileSource::open(path, &options, clock.clone())
                .map(|f| f.fps())
                .unwrap_or(fps.unwrap_or(25));
            let (path, clock) = (path.clone(), clock.clone());
            let factory: SourceFactory = Box::new(move || {
                Ok(Box::new(FileSource::open(&path, &options, clock.clone())?) as Box<dyn Source>)
            });
            (spec, factory)
        }
    }
}

/// Starts one camera's capture, privacy stage and encoders (or registers it disabled).
pub(super) fn start_camera(
    cam: &CameraConfig,
    settings: &Settings,
    clock: &Arc<dyn Clock>,
    metrics: &Metrics,
    masks: &crate::masks::MaskBook,
) -> Result<Camera, Error> {
    let (mut spec, source) = camera_source(cam, &settings.board, clock);
    if !cam.enabled {
        return Ok(Camera::disabled(spec));
    }
    let (privacy, privacy_error, privacy_stats) = privacy_stage(cam, &settings.detection(), masks);
    spec.privacy_error = privacy_error;
    spec.privacy = privacy_stats;
    let encoder = || encoder_factory(settings);
    let parts = CameraParts {
        source,
        privacy,
        encoder: encoder(),
        original_encoder: spec.keep_originals.then(encoder),
    };
    Camera::spawn(spec, parts, clock.clone(), metrics, RetryPolicy::default()).map_err(|e| {
        Error::wrap(
            ErrorKind::Internal,
            format!("cannot start a thread for camera {}", cam.id),
            e,
        )
    })
}

/// The board's H.264 encoder.
pub(super) fn encoder_factory(settings: &Settings) -> veil_media::pipeline::EncoderFactory {
    match &settings.board.encoder {
        EncoderProfile::Openh264 { .. } => openh264_factory(),
        EncoderProfile::V4l2m2m { device } => v4l2m2m_factory(device.clone()),
    }
}

pub(super) fn start_cameras(
    settings: &Settings,
    clock: &Arc<dyn Clock>,
    metrics: &Metrics,
    masks: &crate::masks::MaskBook,
) -> Result<Vec<Camera>, Error> {
    settings
        .config
        .cameras
        .iter()
        .map(|cam| start_camera(cam, settings, clock, metrics, masks))
        .collect()
}

/// The footage store and the recorders writing into it; cameras added later record too.
pub(super) struct Recording {
    pub(super) store: Arc<veil_store::Store>,
    pub(super) config: veil_core::config::StorageConfig,
    pub(super) seal_key: Option<veil_store::SealKey>,
    /// Every camera's retention limits (cameras removed keep theirs until restart: their
    /// footage still ages out).
    pub(super) limits: Mutex<Vec<crate::recorder::CameraLimits>>,
    pub(super) recorders: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Recording {
    pub(super) fn limits_of(cam: &CameraConfig) -> crate::recorder::CameraLimits {
        crate::recorder::CameraLimits {
            id: cam.id.to_string(),
            retention_days: cam.retention_days,
            max_bytes: cam.max_bytes,
        }
    }

    /// Starts the recorder of a running camera (its originals, sealed, when it keeps them).
    pub(super) fn record(&self, cam: &Camera, config: &CameraConfig) {
        {
            let mut limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
            limits.retain(|l| l.id != config.id.as_str());
            limits.push(Self::limits_of(config));
        }
        let (frames, seal) = if cam.keeps_originals() {
            let Some(key) = &self.seal_key else {
                tracing::error!(
                    camera = cam.id(),
                    "no originals key: this camera does not record"
                );
                return;
            };
            (cam.subscribe_originals(), Some(key.clone()))
        } else {
            (cam.subscribe(), None)
        };
        let Some(frames) = frames else { return };
        let limits = self
            .limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match crate::recorder::spawn(
            self.store.clone(),
            cam.id().to_string(),
            frames,
            self.config.clone(),
            limits,
            seal,
        ) {
            Ok(handle) => self
                .recorders
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(handle),
            Err(e) => tracing::error!(camera = cam.id(), error = %e, "cannot start recorder"),
        }
    }
}

/// Opens the footage store and starts a recorder per running camera, and the retention pass
/// (every minute). A store that cannot be opened is logged and the device runs without
/// recording rather than not at all.
pub(super) fn start_recording(
    settings: &Settings,
    data: &DataDir,
    cameras: &[Camera],
    clock: &Arc<dyn Clock>,
) -> Option<Arc<Recording>> {
    let config = &settings.config.storage;
    if !config.record {
        return None;
    }
    let root = data.root.join("footage");
    let store = match veil_store::Store::open(&root, settings.device_id.as_str()) {
        Ok((store, report)) => {
            if !report.is_clean() {
                tracing::warn!(?report, "footage store recovered");
            }
            store
        }
        Err(e) => {
            tracing::error!(error = %e, "footage store unavailable; not recording");
            return None;
        }
    };
    // Every configured camera keeps its limits, recording or not (a disabled camera's old
    // footage still ages out).
    let ids: Vec<crate::recorder::CameraLimits> = settings
        .config
        .cameras
        .iter()
        .map(Recording::limits_of)
        .collect();
    crate::recorder::enforce_retention(&store, config, &ids, clock.wall_millis() as i64);
    // The originals key exists once a camera keeps originals, and stays (old footage needs it).
    let state = data.root.join("state");
    let keeps_originals = cameras.iter().any(Camera::keeps_originals);
    let seal_key = if keeps_originals {
        veil_evidence::keystore::secret(
            &state,
            veil_evidence::keystore::ORIGINALS_KEY,
            veil_evidence::keystore::ORIGINALS_LOSS,
        )
        .map(Some)
    } else {
        veil_evidence::keystore::existing(
            &state,
            veil_evidence::keystore::ORIGINALS_KEY,
            veil_evidence::keystore::ORIGINALS_LOSS,
        )
    };
    let seal_key = match seal_key {
        Ok(k) => k.map(veil_store::SealKey::from_bytes),
        Err(e) => {
            // Without its key, kept originals must not be recorded in the clear: those
            // cameras do not record (their anonymized stream still runs).
            tracing::error!(error = %e, "originals key unavailable; cameras keeping originals do not record");
            None
        }
    };
    if let Some(k) = &seal_key {
        store.set_seal_key(k.clone());
    }
    let recording = Arc::new(Recording {
        store: store.clone(),
        config: config.clone(),
        seal_key,
        limits: Mutex::new(ids),
        recorders: Mutex::new(Vec::new()),
    });
    for (cam, cam_config) in cameras.iter().zip(&settings.config.cameras) {
        recording.record(cam, cam_config);
    }
    tokio::spawn({
        let (recording, clock) = (Arc::downgrade(&recording), clock.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(recording) = recording.upgrade() else {
                    return;
                };
                let (store, config) = (recording.store.clone(), recording.config.clone());
                let ids = recording
                    .limits
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let now = clock.wall_millis() as i64;
                let _ = tokio::task::spawn_blocking(move || {
                    crate::recorder::enforce_retention(&store, &config, &ids, now)
                })
                .await;
            }
        }
    });
    Some(recording)
}
