//! Camera sources behind one trait.

use std::sync::Arc;
use std::time::Duration;

use veil_core::{Clock, Error};

use crate::frame::{FrameMeta, FramePool, PooledFrame};
use crate::synthetic::SyntheticSource;

/// Where a camera's frames come from. `next_frame` blocks until a frame is due (live cameras
/// wait for the device; generated and file sources pace themselves) and returns `None` at the
/// end of a stream that does not loop. Sequence numbers count frames the source meant to
/// deliver, so a gap is a drop.
pub trait Source: Send {
    fn next_frame(&mut self) -> Result<Option<PooledFrame>, Error>;
    /// Nominal frames per second.
    fn fps(&self) -> u32;
}

/// Paces a generated stream on a clock: one slot every `1/fps`. Late by whole periods, it
/// skips those slots (the sequence number jumps) instead of bursting to catch up.
pub struct Pacer {
    clock: Arc<dyn Clock>,
    period: Duration,
    next_due: Option<Duration>,
    seq: u64,
    /// `false` runs as fast as the consumer takes frames (benchmarks).
    realtime: bool,
}

impl Pacer {
    pub fn new(clock: Arc<dyn Clock>, fps: u32, realtime: bool) -> Self {
        Pacer {
            clock,
            period: Duration::from_secs(1) / fps.max(1),
            next_due: None,
            seq: 0,
            realtime,
        }
    }

    /// Waits for the next slot; returns its metadata.
    pub fn wait(&mut self) -> FrameMeta {
        if self.realtime {
            let now = self.clock.monotonic();
            let due = *self.next_due.get_or_insert(now);
            if now < due {
                std::thread::sleep(due - now);
            } else {
                let late = ((now - due).as_nanos() / self.period.as_nanos()) as u64;
                self.seq += late;
                self.next_due = Some(due + self.period * late as u32);
            }
            self.next_due = self.next_due.map(|d| d + self.period);
        }
        let meta = FrameMeta::captured_now(self.seq, &*self.clock);
        self.seq += 1;
        meta
    }
}

/// The synthetic test pattern as a camera.
pub struct SyntheticCamera {
    pattern: SyntheticSource,
    pool: FramePool,
    pacer: Pacer,
    fps: u32,
}

impl SyntheticCamera {
    pub fn new(width: u32, height: u32, fps: u32, clock: Arc<dyn Clock>, realtime: bool) -> Self {
        SyntheticCamera {
            pattern: SyntheticSource::new(width, height),
            pool: FramePool::new(width, height),
            pacer: Pacer::new(clock, fps, realtime),
            fps,
        }
    }
}

impl Source for SyntheticCamera {
    fn next_frame(&mut self) -> Result<Option<PooledFrame>, Error> {
        let meta = self.pacer.wait();
        let mut frame = self.pool.get();
        self.pattern.render(&mut frame, meta);
        Ok(Some(frame))
    }

    fn fps(&self) -> u32 {
        self.fps
    }
}

#[cfg(test)]
mod tests {
    use veil_core::SystemClock;

    use super::*;

    #[test]
    fn pacer_keeps_the_rate_and_skips_when_late() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let mut p = Pacer::new(clock.clone(), 100, true);
        let start = clock.monotonic();
        for _ in 0..10 {
            p.wait();
        }
        let took = clock.monotonic() - start;
        assert!(
            took >= Duration::from_millis(85),
            "10 frames at 100 fps took {took:?}"
        );
        std::thread::sleep(Duration::from_millis(55));
        let meta = p.wait();
        assert!(
            (13..=17).contains(&meta.seq),
            "seq {} after a 55 ms stall",
            meta.seq
        );
    }

    #[test]
    fn unpaced_runs_flat_out() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let mut cam = SyntheticCamera::new(160, 96, 1, clock.clone(), false);
        let start = clock.monotonic();
        for seq in 0..5 {
            assert_eq!(cam.next_frame().unwrap().unwrap().meta.seq, seq);
        }
        assert!(clock.monotonic() - start < Duration::from_millis(500));
    }
}
