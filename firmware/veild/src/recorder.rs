//! Recording: each camera's anonymized stream into the footage store, on a thread of its own,
//! and the retention pass that keeps the disk from filling.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use veil_core::ErrorKind;
use veil_core::config::StorageConfig;
use veil_media::h264::EncodedFrame;
use veil_media::h264::annexb::annexb_to_avcc;
use veil_store::retention::CameraRetention;
use veil_store::{SampleFormat, SealKey, Store, WriterSettings};

/// A camera's retention limits: its own, else the store's.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraLimits {
    pub id: String,
    pub retention_days: Option<u32>,
    pub max_bytes: Option<u64>,
}

/// Evicts what retention requires: age, the quotas, and the free-space floor.
pub fn enforce_retention(
    store: &Store,
    config: &StorageConfig,
    cameras: &[CameraLimits],
    now_ms: i64,
) {
    let limits: BTreeMap<String, CameraRetention> = cameras
        .iter()
        .map(|c| {
            let days = c.retention_days.unwrap_or(config.retention_days);
            (
                c.id.clone(),
                CameraRetention {
                    max_age_ms: (days > 0).then(|| days as i64 * 86_400_000),
                    max_bytes: c.max_bytes,
                },
            )
        })
        .collect();
    let result = store
        .volume_limit(config.max_bytes, config.min_free_bytes)
        .and_then(|limit| store.enforce(&limits, Some(limit), now_ms));
    match result {
        Ok(plan) => {
            if !plan.evict.is_empty() {
                tracing::info!(segments = plan.evict.len(), "footage evicted by retention");
            }
            if plan.over_quota_held > 0 {
                tracing::warn!(
                    bytes = plan.over_quota_held,
                    "held footage alone exceeds the storage limit; release holds or add space"
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "retention pass failed"),
    }
}

/// Records one camera until its stream closes (the camera stopped). Frames are stored as
/// AVCC, the MP4 sample form, so exports copy them without rewriting; with `seal` (kept
/// originals) each is encrypted.
pub fn spawn(
    store: Arc<Store>,
    camera: String,
    mut frames: Receiver<EncodedFrame>,
    config: StorageConfig,
    all_cameras: Vec<CameraLimits>,
    seal: Option<SealKey>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("rec-{camera}"))
        .spawn(move || {
            let mut writer = store.writer(
                &camera,
                WriterSettings {
                    segment_ms: config.segment_seconds as i64 * 1000,
                    flush_ms: config.flush_ms as i64,
                    format: SampleFormat::Avcc,
                },
            );
            if let Some(key) = seal {
                writer = writer.sealed(key);
            }
            let mut sample = Vec::new();
            loop {
                match frames.blocking_recv() {
                    Ok(f) => {
                        let at = f.meta.capture_wall_ms as i64;
                        sample.clear();
                        annexb_to_avcc(&f.data, &mut sample);
                        match writer.write(at, f.keyframe, &sample) {
                            Ok(_) => {}
                            Err(e) if e.kind() == ErrorKind::ResourceExhausted => {
                                tracing::warn!(%camera, error = %e, "disk full; evicting the oldest footage");
                                let _ = writer.close();
                                enforce_retention(&store, &config, &all_cameras, at);
                            }
                            Err(e) => {
                                tracing::error!(%camera, error = %e, "recording failed; starting a new segment");
                                let _ = writer.close();
                            }
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        // Frames were lost: the next ones would not decode without their
                        // reference, so the segment ends and recording resumes at a keyframe.
                        tracing::warn!(%camera, frames = n, "recorder fell behind; frames lost");
                        let _ = writer.close();
                    }
                    Err(RecvError::Closed) => break,
                }
            }
            if let Err(e) = writer.close() {
                tracing::warn!(%camera, error = %e, "closing the last segment failed");
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_camera_keeps_its_own_retention() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), "dev").unwrap();
        let day = 86_400_000i64;
        let t0 = 1_700_000_000_000i64;
        for cam in ["short", "default"] {
            let mut w = store.writer(cam, WriterSettings::default());
            for i in 0..50 {
                w.write(t0 + i * 40, i % 25 == 0, &[1u8; 100]).unwrap();
            }
        }
        let cameras = [
            CameraLimits {
                id: "short".into(),
                retention_days: Some(2),
                max_bytes: None,
            },
            CameraLimits {
                id: "default".into(),
                retention_days: None,
                max_bytes: None,
            },
        ];
        let config = StorageConfig {
            min_free_bytes: 0,
            ..StorageConfig::default()
        };
        // Three days later: past the short camera's 2 days, within the default 30.
        enforce_retention(&store, &config, &cameras, t0 + 3 * day);
        let left: Vec<String> = store
            .segments()
            .unwrap()
            .into_iter()
            .map(|s| s.camera)
            .collect();
        assert_eq!(left, vec!["default".to_string()]);
    }
}
