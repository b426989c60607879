//! The live port: the cameras as the live-view service sees them (`LiveCameras`).

use veil_core::{Error, ErrorKind};
use veil_web::DeviceView;

use super::device::*;
use super::media::*;
use veil_privacy::Filter;

impl crate::live::LiveCameras for Device {
    fn snapshot(&self, camera: &str, max_width: u32) -> Result<Vec<u8>, Error> {
        DeviceView::snapshot(self, camera, max_width)
    }

    fn own_stream(
        &self,
        camera: &str,
    ) -> Option<(
        tokio::sync::broadcast::Receiver<veil_media::h264::EncodedFrame>,
        veil_media::pipeline::KeyframeTrigger,
    )> {
        let cameras = self.cameras.lock().unwrap_or_else(|e| e.into_inner());
        let cam = cameras.iter().find(|c| c.id() == camera)?;
        Some((cam.subscribe()?, cam.keyframe_trigger()?))
    }

    /// An engine of the camera's (its masks, kept current) with `filter`, and an encoder.
    fn branch(
        &self,
        camera: &str,
        filter: veil_core::config::FilterName,
    ) -> Result<veil_media::pipeline::Branch, Error> {
        let mut config = self
            .camera_book
            .get(camera)
            .ok_or_else(|| Error::not_found(format!("no camera '{camera}' on this device")))?;
        config.masks = self.masks.get(camera)?;
        config.filter = filter;
        let (privacy, failed, _) = privacy_stage(&config, &self.settings.detection(), &self.masks);
        if let Some(why) = failed {
            tracing::error!(camera, %why, "live encode blanks every frame");
        }
        let cameras = self.cameras.lock().unwrap_or_else(|e| e.into_inner());
        let cam = cameras
            .iter()
            .find(|c| c.id() == camera)
            .ok_or_else(|| Error::not_found(format!("camera '{camera}' is not running")))?;
        cam.branch(
            filter.as_str(),
            privacy,
            encoder_factory(&self.settings),
            Filter::from(filter).frame_rate(),
        )
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!("camera '{camera}' is disabled"),
            )
        })?
        .map_err(|e| Error::wrap(ErrorKind::Internal, "cannot start a live encode", e))
    }
}
