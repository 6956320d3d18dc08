//! Cameras: frame sources (V4L2 devices, replayed recordings) and a capture thread per camera
//! that keeps only the latest frame, reconnects a lost device with backoff, and counts what it
//! saw (frames in, corrupt, reconnects, the last error).
//!
//! Invariant: capture never waits for a consumer: the slot holds the latest frame only, a
//! frame replaced before the pipeline took it is dropped (and counted by the pipeline from the
//! gap in sequence numbers); frame buffers are reused from a small pool once every reader has
//! let go of them. camera/ depends on no other module of the crate; frames never leave the
//! process except through the API's authenticated camera routes.

pub mod convert;
pub mod replay;
pub mod spec;
pub mod v4l2;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;

pub use spec::{CameraSpec, SourceSpec};

/// One captured frame. Cloning is cheap (shared buffers).
#[derive(Debug, Clone)]
pub struct Frame {
    /// Camera-wide sequence number (never reset, also across reconnects).
    pub seq: u64,
    pub captured: Instant,
    pub image: Arc<RgbImage>,
    /// The frame's JPEG bytes when they are at hand for free (replayed JPEG files and .mjpeg
    /// recordings); a V4L2 frame is encoded from `image` only when a snapshot asks for it.
    pub jpeg: Option<Arc<Vec<u8>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error("cannot open {source_name}: {message}")]
    Open {
        source_name: String,
        message: String,
    },
    #[error("capture failed: {0}")]
    Io(String),
    /// One frame could not be decoded (skipped and counted; the stream goes on).
    #[error(transparent)]
    Corrupt(convert::ConvertError),
}

/// A blocking source of frames.
pub trait FrameSource: Send {
    /// What it is, with the negotiated format (`v4l:/dev/video0 MJPG 640x480@30`).
    fn describe(&self) -> String;
    /// Blocks until the next frame; `Ok(None)` when a recording played once has ended.
    fn next_frame(&mut self) -> Result<Option<Frame>, CameraError>;
}

/// Opens the source a spec names.
pub fn open(spec: &SourceSpec, max_pixels: u64) -> Result<Box<dyn FrameSource>, CameraError> {
    Ok(match spec {
        SourceSpec::V4l2 {
            path,
            width,
            height,
            fps,
        } => Box::new(v4l2::V4l2Source::open(
            path, *width, *height, *fps, max_pixels,
        )?),
        SourceSpec::Replay {
            path,
            fps,
            once,
            delay_s,
        } => Box::new(replay::ReplaySource::open(path, *fps, *once, max_pixels)?.delayed(*delay_s)),
    })
}

/// Frame buffers handed out and taken back once every reader has dropped them.
#[derive(Debug, Default)]
pub struct BufferPool {
    held: Vec<Arc<RgbImage>>,
    /// Buffers allocated (steady state: no new ones).
    pub allocations: u64,
}

impl BufferPool {
    const MAX: usize = 4;

    /// A buffer nobody else holds (its pixels are stale), or a new one.
    pub fn take(&mut self) -> Arc<RgbImage> {
        if let Some(i) = self
            .held
            .iter()
            .position(|b| Arc::strong_count(b) == 1 && Arc::weak_count(b) == 0)
        {
            return self.held.swap_remove(i);
        }
        self.allocations += 1;
        Arc::new(RgbImage::new(0, 0))
    }

    /// Keeps a handed-out buffer for reuse.
    pub fn keep(&mut self, buf: &Arc<RgbImage>) {
        if self.held.len() < Self::MAX {
            self.held.push(buf.clone());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraState {
    Starting,
    Streaming,
    /// The source failed or is absent: reopened with backoff.
    Reconnecting,
    /// A recording played once has ended.
    Ended,
    Stopped,
}

impl CameraState {
    pub fn as_str(self) -> &'static str {
        match self {
            CameraState::Starting => "starting",
            CameraState::Streaming => "streaming",
            CameraState::Reconnecting => "reconnecting",
            CameraState::Ended => "ended",
            CameraState::Stopped => "stopped",
        }
    }
}

#[derive(Debug)]
struct Slot {
    latest: Option<Frame>,
    state: CameraState,
    last_error: Option<String>,
    describe: String,
    /// Frames per second in (moving average).
    fps_in: f64,
    last_at: Option<Instant>,
}

/// Counters of one camera (monotonic).
#[derive(Debug, Default)]
pub struct CameraCounters {
    pub captured: AtomicU64,
    pub corrupt: AtomicU64,
    pub reconnects: AtomicU64,
    /// Frames the pipeline processed / never saw (replaced in the slot before it took them).
    pub processed: AtomicU64,
    pub dropped: AtomicU64,
    /// Frames a door left on purpose while nobody was in view (`door.idle_fps`): not a sign of
    /// overload, so not `dropped`.
    pub idle_skipped: AtomicU64,
    /// Frames left on purpose because they came faster than liveness analyses them
    /// (`liveness.analysis_fps`, a `Pacer`): not `dropped` either.
    pub paced_skipped: AtomicU64,
}

/// A running camera: its capture thread fills the slot.
#[derive(Debug)]
pub struct Camera {
    pub id: String,
    pub spec: SourceSpec,
    slot: Mutex<Slot>,
    cond: Condvar,
    pub counters: CameraCounters,
    stop: AtomicBool,
}

/// What `/health/` and `/api/cameras/` show of a camera.
#[derive(Debug, Clone)]
pub struct CameraHealth {
    pub id: String,
    pub source: String,
    pub state: CameraState,
    pub width: u32,
    pub height: u32,
    pub fps_in: f64,
    pub captured: u64,
    pub processed: u64,
    pub dropped: u64,
    pub idle_skipped: u64,
    pub paced_skipped: u64,
    pub corrupt: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

/// Consecutive undecodable frames after which the device is reopened.
const MAX_CORRUPT_RUN: u32 = 30;
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(8);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Camera {
    /// Starts the capture thread of `spec`.
    pub fn start(spec: CameraSpec, max_pixels: u64) -> Arc<Camera> {
        let cam = Arc::new(Camera {
            id: spec.id.clone(),
            spec: spec.source.clone(),
            slot: Mutex::new(Slot {
                latest: None,
                state: CameraState::Starting,
                last_error: None,
                describe: spec.source.describe(),
                fps_in: 0.0,
                last_at: None,
            }),
            cond: Condvar::new(),
            counters: CameraCounters::default(),
            stop: AtomicBool::new(false),
        });
        let c = cam.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("capture-{}", cam.id))
            .spawn(move || c.capture(max_pixels));
        if let Err(e) = spawned {
            cam.set_state(
                CameraState::Stopped,
                Some(format!("no capture thread: {e}")),
            );
        }
        cam
    }

    fn set_state(&self, state: CameraState, error: Option<String>) {
        let mut s = lock(&self.slot);
        s.state = state;
        if error.is_some() {
            s.last_error = error;
        }
        drop(s);
        self.cond.notify_all();
    }

    fn capture(&self, max_pixels: u64) {
        let mut seq = 0u64;
        let mut backoff = BACKOFF_MIN;
        while !self.stop.load(Ordering::Relaxed) {
            let mut source = match open(&self.spec, max_pixels) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(camera = %self.id, error = %e, retry_ms = backoff.as_millis() as u64, "camera unavailable");
                    self.set_state(CameraState::Reconnecting, Some(e.to_string()));
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    self.sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let describe = source.describe();
            tracing::info!(camera = %self.id, source = %describe, "camera streaming");
            lock(&self.slot).describe = describe;
            self.set_state(CameraState::Streaming, None);
            let mut corrupt_run = 0u32;
            loop {
                if self.stop.load(Ordering::Relaxed) {
                    self.set_state(CameraState::Stopped, None);
                    return;
                }
                match source.next_frame() {
                    Ok(Some(mut frame)) => {
                        corrupt_run = 0;
                        backoff = BACKOFF_MIN;
                        seq += 1;
                        frame.seq = seq;
                        self.counters.captured.fetch_add(1, Ordering::Relaxed);
                        let mut s = lock(&self.slot);
                        let now = frame.captured;
                        if let Some(prev) = s.last_at {
                            let dt = now.duration_since(prev).as_secs_f64().max(1e-3);
                            s.fps_in = if s.fps_in == 0.0 {
                                1.0 / dt
                            } else {
                                0.9 * s.fps_in + 0.1 / dt
                            };
                        }
                        s.last_at = Some(now);
                        s.latest = Some(frame);
                        drop(s);
                        self.cond.notify_all();
                    }
                    Ok(None) => {
                        tracing::info!(camera = %self.id, "recording ended");
                        self.set_state(CameraState::Ended, None);
                        return;
                    }
                    Err(CameraError::Corrupt(e)) => {
                        self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                        corrupt_run += 1;
                        tracing::debug!(camera = %self.id, error = %e, "corrupt frame skipped");
                        lock(&self.slot).last_error = Some(e.to_string());
                        if corrupt_run >= MAX_CORRUPT_RUN {
                            self.set_state(
                                CameraState::Reconnecting,
                                Some(format!("{corrupt_run} corrupt frames in a row: {e}")),
                            );
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(camera = %self.id, error = %e, "camera lost; reconnecting");
                        self.set_state(CameraState::Reconnecting, Some(e.to_string()));
                        break;
                    }
                }
            }
            drop(source);
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            self.sleep(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        self.set_state(CameraState::Stopped, None);
    }

    /// Sleeps, waking early when the camera is stopped.
    fn sleep(&self, d: Duration) {
        let deadline = Instant::now() + d;
        let mut s = lock(&self.slot);
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = self
                .cond
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Asks the capture thread to end (it does after its current frame).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cond.notify_all();
    }

    /// The latest frame.
    pub fn latest(&self) -> Option<Frame> {
        lock(&self.slot).latest.clone()
    }

    /// The first frame newer than `seq`, waiting up to `timeout`; `None` on timeout, and at
    /// once when the recording has ended or the camera stopped.
    pub fn next_after(&self, seq: u64, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.slot);
        loop {
            if let Some(f) = s.latest.as_ref().filter(|f| f.seq > seq) {
                return Some(f.clone());
            }
            if matches!(s.state, CameraState::Ended | CameraState::Stopped) {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            s = self
                .cond
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn state(&self) -> CameraState {
        lock(&self.slot).state
    }

    pub fn health(&self) -> CameraHealth {
        let s = lock(&self.slot);
        let (width, height) = s.latest.as_ref().map_or((0, 0), |f| f.image.dimensions());
        let c = &self.counters;
        CameraHealth {
            id: self.id.clone(),
            source: s.describe.clone(),
            state: s.state,
            width,
            height,
            fps_in: s.fps_in,
            captured: c.captured.load(Ordering::Relaxed),
            processed: c.processed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            idle_skipped: c.idle_skipped.load(Ordering::Relaxed),
            paced_skipped: c.paced_skipped.load(Ordering::Relaxed),
            corrupt: c.corrupt.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            last_error: s.last_error.clone(),
        }
    }
}

/// Picks a camera's frames at most `fps` a second, by capture time and evenly on average.
///
/// Liveness counts frames (the open-eye baseline, the medians of 3, the context gap) and was
/// tuned and measured at 10 fps; a 30 fps camera would shrink each of those windows to a third
/// (a door denied headtrackr_cap4 at 30 fps, which it grants at 10). A frame is taken when it
/// was captured no more than a quarter of the interval before the next one is due, and the
/// next is then due one interval later: 30 fps gives every third frame, 25 fps intervals of
/// 80 and 120 ms, 15 fps of 133 and 67 ms, 10 fps or slower every frame. After a stall the
/// schedule restarts from the frame taken (no burst to catch up).
#[derive(Debug, Clone)]
pub struct Pacer {
    gap: Option<Duration>,
    due: Option<Instant>,
}

impl Pacer {
    /// At most `fps` frames a second; 0 (or less): every frame.
    pub fn new(fps: f64) -> Pacer {
        Pacer {
            gap: (fps > 0.0).then(|| Duration::from_secs_f64(1.0 / fps)),
            due: None,
        }
    }

    /// Whether the frame captured at `at` is taken (and when the next one is then due).
    pub fn take(&mut self, at: Instant) -> bool {
        let Some(gap) = self.gap else {
            return true;
        };
        if self.due.is_some_and(|due| at + gap / 4 < due) {
            return false;
        }
        self.due = Some(match self.due {
            Some(due) if at < due + gap => due + gap,
            _ => at + gap,
        });
        true
    }

    /// Forgets the schedule: the next frame is taken whenever it comes.
    pub fn reset(&mut self) {
        self.due = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames a pacer at 10 fps takes of `n` frames `interval_ms` apart (with `jitter_ms`
    /// added to every other capture time).
    fn taken(interval_ms: f64, jitter_ms: f64, n: usize) -> Vec<usize> {
        let t0 = Instant::now();
        let mut p = Pacer::new(10.0);
        (0..n)
            .filter(|&i| {
                let ms = i as f64 * interval_ms + if i % 2 == 1 { jitter_ms } else { 0.0 };
                p.take(t0 + Duration::from_secs_f64(ms / 1000.0))
            })
            .collect()
    }

    #[test]
    fn a_pacer_takes_ten_frames_a_second_of_faster_cameras_and_every_frame_of_slower_ones() {
        // 30 fps: every third frame, whatever the jitter.
        let expect: Vec<usize> = (0..90).step_by(3).collect();
        assert_eq!(taken(1000.0 / 30.0, 0.0, 90), expect);
        assert_eq!(taken(1000.0 / 30.0, 8.0, 90), expect);
        // 25 and 15 fps: 10 a second on average (3 s of frames: 30 taken).
        assert_eq!(taken(40.0, 0.0, 75).len(), 30);
        assert_eq!(taken(1000.0 / 15.0, 0.0, 45).len(), 30);
        // 10 fps with jitter, and slower cameras: every frame.
        assert_eq!(taken(100.0, -15.0, 30), (0..30).collect::<Vec<_>>());
        assert_eq!(taken(100.0, 15.0, 30), (0..30).collect::<Vec<_>>());
        assert_eq!(taken(200.0, 0.0, 10), (0..10).collect::<Vec<_>>());
        // 0: no pacing.
        let t0 = Instant::now();
        let mut all = Pacer::new(0.0);
        assert!((0..5).all(|_| all.take(t0)));
        // After a stall (nothing for a second) the next frame is taken, then the schedule
        // restarts from it: no burst of back-to-back frames.
        let mut p = Pacer::new(10.0);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(p.take(at(0)));
        assert!(p.take(at(1000)));
        assert!(!p.take(at(1033)));
        assert!(!p.take(at(1067)));
        assert!(p.take(at(1100)));
        // A reset takes the next frame whenever it comes.
        p.reset();
        assert!(p.take(at(1133)));
    }

    fn write_clip(dir: &std::path::Path, n: usize, corrupt_at: Option<usize>) {
        std::fs::create_dir_all(dir).unwrap();
        for i in 0..n {
            let img = RgbImage::from_pixel(32, 24, image::Rgb([i as u8 * 10, 0, 0]));
            let mut jpeg = convert::encode_jpeg(&img, 80);
            if corrupt_at == Some(i) {
                jpeg.truncate(jpeg.len() / 2);
            }
            std::fs::write(dir.join(format!("{i:04}.jpg")), jpeg).unwrap();
        }
    }

    #[test]
    fn replay_once_delivers_latest_frames_counts_corrupt_ones_and_ends() {
        let dir = std::env::temp_dir().join(format!("facegate-replay-{}", std::process::id()));
        write_clip(&dir, 12, Some(5));
        let spec = CameraSpec::parse(&format!("replay:{}@50,once", dir.display()), 0).unwrap();
        let cam = Camera::start(spec, 1 << 20);
        let mut seen = Vec::new();
        let mut seq = 0;
        while let Some(f) = cam.next_after(seq, Duration::from_secs(5)) {
            assert_eq!(f.image.dimensions(), (32, 24));
            assert!(f.jpeg.is_some());
            seq = f.seq;
            seen.push(f.seq);
        }
        assert_eq!(cam.state(), CameraState::Ended);
        let h = cam.health();
        assert_eq!(h.captured, 11, "{h:?}");
        assert_eq!(h.corrupt, 1, "{h:?}");
        assert!(h.last_error.is_some_and(|e| e.contains("truncated")));
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*seen.last().unwrap(), 11);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_device_is_retried_with_backoff_and_reported() {
        let spec = CameraSpec::parse("v4l:/dev/video-does-not-exist", 0).unwrap();
        let cam = Camera::start(spec, 1 << 20);
        std::thread::sleep(Duration::from_millis(900));
        let h = cam.health();
        assert_eq!(h.state, CameraState::Reconnecting);
        assert!(h.reconnects >= 2, "{h:?}");
        assert!(h.last_error.unwrap().contains("/dev/video-does-not-exist"));
        cam.stop();
        assert!(cam.next_after(0, Duration::from_secs(1)).is_none());
    }

    #[test]
    fn the_pool_reuses_a_buffer_once_readers_let_go() {
        let mut pool = BufferPool::default();
        let a = pool.take();
        pool.keep(&a);
        let b = pool.take();
        pool.keep(&b);
        assert_eq!(pool.allocations, 2, "a is still held");
        drop(a);
        let c = pool.take();
        assert_eq!(pool.allocations, 2, "a's buffer came back");
        drop((b, c));
    }
}
