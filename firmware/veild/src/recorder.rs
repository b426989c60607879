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
use veil_store::retention::CameraRetention;
use veil_store::{Store, WriterSettings};

/// Evicts what retention requires: age, the quota, and the free-space floor.
pub fn enforce_retention(store: &Store, config: &StorageConfig, cameras: &[String], now_ms: i64) {
    let limits: BTreeMap<String, CameraRetention> = cameras
        .iter()
        .map(|c| {
            let age =
                (config.retention_days > 0).then(|| config.retention_days as i64 * 86_400_000);
            (
                c.clone(),
                CameraRetention {
                    max_age_ms: age,
                    max_bytes: None,
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

/// Records one camera until its stream closes (the camera stopped).
pub fn spawn(
    store: Arc<Store>,
    camera: String,
    mut frames: Receiver<EncodedFrame>,
    config: StorageConfig,
    all_cameras: Vec<String>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("rec-{camera}"))
        .spawn(move || {
            let mut writer = store.writer(
                &camera,
                WriterSettings {
                    segment_ms: config.segment_seconds as i64 * 1000,
                    flush_ms: config.flush_ms as i64,
                },
            );
            loop {
                match frames.blocking_recv() {
                    Ok(f) => {
                        let at = f.meta.capture_wall_ms as i64;
                        match writer.write(at, f.keyframe, &f.data) {
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
