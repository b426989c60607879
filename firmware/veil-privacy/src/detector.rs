//! What every detector is to the engine: something that finds regions to hide in a frame.

use veil_core::Error;
use veil_media::Frame;

use crate::redact::Rect;

/// Finds regions to hide in a frame.
pub trait Detector: Send {
    fn detect(&mut self, frame: &Frame) -> Result<Vec<Rect>, Error>;
    /// Looks only where `focus` says (regions that moved, and tracked boxes), if the detector
    /// can; returns what it found and the regions it actually looked at (`None`: the whole
    /// frame). The default looks everywhere.
    fn detect_in(
        &mut self,
        frame: &Frame,
        focus: &[Rect],
    ) -> Result<(Vec<Rect>, Option<Vec<Rect>>), Error> {
        let _ = focus; // looks everywhere
        Ok((self.detect(frame)?, None))
    }
    /// What it finds, for status and logs (`faces`, `plates`, `motion`).
    fn name(&self) -> &'static str {
        "detector"
    }
}
