//! Which segments to evict: by age, by each camera's byte quota, then by the volume's quota
//! (the emergency floor that keeps the disk from filling). Held footage is never chosen. Pure:
//! the store executes the plan.

use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFacts {
    pub id: i64,
    pub camera: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub bytes: u64,
}

/// Footage that must be kept (an export in progress, a video request, an incident).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: String,
    pub camera: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub reason: String,
}

impl Hold {
    /// Whether the segment has a frame in `[from_ms, to_ms)` (`end_ms` is its last frame's
    /// time, so a segment ending at `from_ms` is held too).
    fn covers(&self, s: &SegmentFacts) -> bool {
        self.camera == s.camera && s.start_ms < self.to_ms && s.end_ms >= self.from_ms
    }
}

/// A camera's limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CameraRetention {
    pub max_age_ms: Option<i64>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Segments to delete, oldest first.
    pub evict: Vec<i64>,
    /// Bytes still over a quota after evicting everything allowed: held footage fills it.
    pub over_quota_held: u64,
}

/// Plans evictions. `volume_max_bytes` is the most the whole store may use now (the caller
/// derives it from the configured quota and the free space above the emergency floor).
pub fn plan(
    segments: &[SegmentFacts],
    holds: &[Hold],
    cameras: &BTreeMap<String, CameraRetention>,
    volume_max_bytes: Option<u64>,
    now_ms: i64,
) -> Plan {
    let held: HashSet<i64> = segments
        .iter()
        .filter(|s| holds.iter().any(|h| h.covers(s)))
        .map(|s| s.id)
        .collect();
    let mut by_age: Vec<&SegmentFacts> = segments.iter().collect();
    by_age.sort_by_key(|s| (s.start_ms, s.id));
    let mut evict: Vec<i64> = Vec::new();
    let mut gone: HashSet<i64> = HashSet::new();
    let mut over_quota_held = 0;

    // 1. Age.
    for s in &by_age {
        let limit = cameras.get(&s.camera).and_then(|c| c.max_age_ms);
        if let Some(max_age) = limit
            && s.end_ms < now_ms - max_age
            && !held.contains(&s.id)
        {
            evict.push(s.id);
            gone.insert(s.id);
        }
    }
    // 2. Each camera's quota, oldest first.
    for (camera, limits) in cameras {
        let Some(max) = limits.max_bytes else {
            continue;
        };
        let mine: Vec<&&SegmentFacts> = by_age
            .iter()
            .filter(|s| &s.camera == camera && !gone.contains(&s.id))
            .collect();
        let mut used: u64 = mine.iter().map(|s| s.bytes).sum();
        for s in mine {
            if used <= max {
                break;
            }
            if !held.contains(&s.id) {
                used -= s.bytes;
                evict.push(s.id);
                gone.insert(s.id);
            }
        }
        over_quota_held += used.saturating_sub(max);
    }
    // 3. The volume, oldest first across cameras.
    if let Some(max) = volume_max_bytes {
        let mut used: u64 = by_age
            .iter()
            .filter(|s| !gone.contains(&s.id))
            .map(|s| s.bytes)
            .sum();
        for s in &by_age {
            if used <= max {
                break;
            }
            if !gone.contains(&s.id) && !held.contains(&s.id) {
                used -= s.bytes;
                evict.push(s.id);
                gone.insert(s.id);
            }
        }
        over_quota_held += used.saturating_sub(max);
    }
    evict.sort_by_key(|id| {
        segments
            .iter()
            .find(|s| s.id == *id)
            .map(|s| (s.start_ms, s.id))
    });
    Plan {
        evict,
        over_quota_held,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: i64, camera: &str, start_min: i64) -> SegmentFacts {
        SegmentFacts {
            id,
            camera: camera.into(),
            start_ms: start_min * 60_000,
            end_ms: (start_min + 1) * 60_000,
            bytes: 100,
        }
    }

    fn hold(camera: &str, from_min: i64, to_min: i64) -> Hold {
        Hold {
            id: "h".into(),
            camera: camera.into(),
            from_ms: from_min * 60_000,
            to_ms: to_min * 60_000,
            reason: "video request".into(),
        }
    }

    fn cams(age_min: Option<i64>, bytes: Option<u64>) -> BTreeMap<String, CameraRetention> {
        BTreeMap::from([(
            "a".to_string(),
            CameraRetention {
                max_age_ms: age_min.map(|m| m * 60_000),
                max_bytes: bytes,
            },
        )])
    }

    #[test]
    fn old_footage_goes_unless_held() {
        let s: Vec<_> = (0..10).map(|i| seg(i, "a", i)).collect();
        let p = plan(&s, &[], &cams(Some(5), None), None, 10 * 60_000);
        assert_eq!(p.evict, vec![0, 1, 2, 3]);
        let p = plan(
            &s,
            &[hold("a", 1, 3)],
            &cams(Some(5), None),
            None,
            10 * 60_000,
        );
        assert_eq!(
            p.evict,
            vec![3],
            "segments 1 and 2 are held, and 0, whose last frame is at the hold's start"
        );
        // A hold on another camera protects nothing here.
        let p = plan(
            &s,
            &[hold("b", 0, 10)],
            &cams(Some(5), None),
            None,
            10 * 60_000,
        );
        assert_eq!(p.evict.len(), 4);
    }

    #[test]
    fn quotas_evict_oldest_first_around_holds() {
        let s: Vec<_> = (0..10).map(|i| seg(i, "a", i)).collect();
        let p = plan(&s, &[hold("a", 0, 2)], &cams(None, Some(500)), None, 0);
        assert_eq!(p.evict, vec![2, 3, 4, 5, 6]);
        assert_eq!(p.over_quota_held, 0);
        // Held footage alone over the quota: nothing held goes, and the excess is reported.
        let p = plan(&s, &[hold("a", 0, 10)], &cams(None, Some(500)), None, 0);
        assert!(p.evict.is_empty());
        assert_eq!(p.over_quota_held, 500);
    }

    #[test]
    fn the_volume_limit_takes_the_oldest_across_cameras() {
        let mut s: Vec<_> = (0..5).map(|i| seg(i, "a", i * 2)).collect();
        s.extend((0..5).map(|i| seg(10 + i, "b", i * 2 + 1)));
        let p = plan(&s, &[hold("b", 0, 2)], &BTreeMap::new(), Some(700), 0);
        // Oldest: a0 (min 0), b10 (min 1, held), a1 (min 2), b11 (min 3), ...
        assert_eq!(p.evict, vec![0, 1, 11]);
    }
}
