//! Eviction: the retention plan (`retention`, pure) carried out on the index and the disk.

use std::collections::BTreeMap;

use veil_core::{Error, ErrorKind};

use crate::retention;
use crate::retention::{CameraRetention, Plan, SegmentFacts};

use crate::index::*;

impl Store {
    /// The most footage may use now: the configured quota, and no more than leaves
    /// `min_free` bytes free on the disk.
    pub fn volume_limit(&self, quota: Option<u64>, min_free: u64) -> Result<u64, Error> {
        let (used, free) = (self.used_bytes()?, self.free_bytes()?);
        let by_floor = (used + free).saturating_sub(min_free);
        Ok(quota.map_or(by_floor, |q| q.min(by_floor)))
    }

    /// Evicts what the retention policy says must go (never held footage, never a segment
    /// being written); returns the plan carried out.
    pub fn enforce(
        &self,
        cameras: &BTreeMap<String, CameraRetention>,
        volume_max_bytes: Option<u64>,
        now_ms: i64,
    ) -> Result<Plan, Error> {
        let facts: Vec<SegmentFacts> = self
            .segments()?
            .into_iter()
            .filter(|s| !s.open)
            .map(|s| SegmentFacts {
                id: s.id,
                camera: s.camera,
                start_ms: s.start_ms,
                end_ms: s.end_ms,
                bytes: s.bytes,
            })
            .collect();
        let plan = retention::plan(&facts, &self.holds()?, cameras, volume_max_bytes, now_ms);
        for id in &plan.evict {
            match self.delete(*id) {
                Err(e) if e.kind() == ErrorKind::ResourceExhausted => {
                    self.release_ballast();
                    self.delete(*id)?;
                }
                other => other?,
            }
        }
        if !plan.evict.is_empty() {
            self.restore_ballast();
        }
        Ok(plan)
    }
}
