//! I420 frames in pooled buffers.
//!
//! A camera at 1080p30 would otherwise allocate and free 90 MB a second; the pool hands the
//! same few buffers round, so steady state allocates nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// When and in what order a frame was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameMeta {
    /// Per-source sequence number, starting at 0; gaps mean dropped frames.
    pub seq: u64,
    /// Capture time on the monotonic clock (for latency and pacing).
    pub capture_mono: Duration,
    /// Capture time on the wall clock, ms since the Unix epoch (for footage and overlays).
    pub capture_wall_ms: u64,
}

impl FrameMeta {
    /// Metadata for a frame captured now.
    pub fn captured_now(seq: u64, clock: &dyn veil_core::Clock) -> FrameMeta {
        FrameMeta {
            seq,
            capture_mono: clock.monotonic(),
            capture_wall_ms: clock.wall_millis(),
        }
    }
}

/// A planar YUV 4:2:0 frame (I420): full-size Y, then quarter-size U and V.
#[derive(Debug, Clone)]
pub struct Frame {
    width: u32,
    height: u32,
    data: Vec<u8>,
    pub meta: FrameMeta,
}

impl Frame {
    /// A black frame. Width and height must be even (4:2:0 chroma).
    pub fn new(width: u32, height: u32) -> Frame {
        assert!(
            width.is_multiple_of(2) && height.is_multiple_of(2) && width > 0 && height > 0,
            "I420 needs even, non-zero dimensions, got {width}x{height}"
        );
        let mut data = vec![0u8; Self::byte_len(width, height)];
        let luma = (width * height) as usize;
        data[..luma].fill(16);
        data[luma..].fill(128);
        Frame {
            width,
            height,
            data,
            meta: FrameMeta::default(),
        }
    }

    pub fn byte_len(width: u32, height: u32) -> usize {
        let luma = width as usize * height as usize;
        luma + luma / 2
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// The whole I420 buffer.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// The Y, U and V planes, mutably.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let luma = self.width as usize * self.height as usize;
        let (y, uv) = self.data.split_at_mut(luma);
        let (u, v) = uv.split_at_mut(luma / 4);
        (y, u, v)
    }

    pub fn y(&self) -> &[u8] {
        &self.data[..self.width as usize * self.height as usize]
    }

    pub fn u(&self) -> &[u8] {
        let luma = self.width as usize * self.height as usize;
        &self.data[luma..luma + luma / 4]
    }

    pub fn v(&self) -> &[u8] {
        let luma = self.width as usize * self.height as usize;
        &self.data[luma + luma / 4..]
    }
}

struct PoolInner {
    width: u32,
    height: u32,
    free: Mutex<Vec<Frame>>,
    allocated: std::sync::atomic::AtomicUsize,
}

/// A pool of same-sized frames. Cloning the pool shares it.
#[derive(Clone)]
pub struct FramePool {
    inner: Arc<PoolInner>,
}

impl FramePool {
    pub fn new(width: u32, height: u32) -> FramePool {
        FramePool {
            inner: Arc::new(PoolInner {
                width,
                height,
                free: Mutex::new(Vec::new()),
                allocated: Default::default(),
            }),
        }
    }

    /// A frame from the pool, or a new one when all are in use. Its content is whatever the
    /// previous user left: sources overwrite every pixel.
    pub fn get(&self) -> PooledFrame {
        let reused = self
            .inner
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let frame = reused.unwrap_or_else(|| {
            self.inner
                .allocated
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Frame::new(self.inner.width, self.inner.height)
        });
        PooledFrame {
            frame: Some(frame),
            pool: self.inner.clone(),
        }
    }

    /// (width, height) of the pool's frames.
    pub fn size(&self) -> (u32, u32) {
        (self.inner.width, self.inner.height)
    }

    /// How many frames the pool has ever allocated.
    pub fn allocated(&self) -> usize {
        self.inner
            .allocated
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A frame that goes back to its pool when dropped.
pub struct PooledFrame {
    frame: Option<Frame>,
    pool: Arc<PoolInner>,
}

impl std::ops::Deref for PooledFrame {
    type Target = Frame;
    fn deref(&self) -> &Frame {
        self.frame.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for PooledFrame {
    fn deref_mut(&mut self) -> &mut Frame {
        self.frame.as_mut().expect("present until drop")
    }
}

impl Drop for PooledFrame {
    fn drop(&mut self) {
        if let Some(frame) = self.frame.take() {
            self.pool
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_have_i420_sizes() {
        let mut f = Frame::new(64, 32);
        let (y, u, v) = f.planes_mut();
        assert_eq!((y.len(), u.len(), v.len()), (2048, 512, 512));
        assert_eq!(f.data().len(), Frame::byte_len(64, 32));
    }

    #[test]
    #[should_panic(expected = "even")]
    fn odd_sizes_are_refused() {
        Frame::new(63, 32);
    }

    #[test]
    fn pool_reuses_buffers_in_steady_state() {
        let pool = FramePool::new(64, 64);
        for _ in 0..100 {
            let a = pool.get();
            let b = pool.get();
            drop((a, b));
        }
        assert_eq!(pool.allocated(), 2);
    }
}
