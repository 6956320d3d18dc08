//! The replay source: recorded frames (a folder of images sorted by name, or an `.mjpeg` file)
//! paced at a frame rate, looping or once. For tests, demos and benches on machines without a
//! camera.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;

use super::convert::{jpeg_to_rgb, split_mjpeg};
use super::{BufferPool, CameraError, Frame, FrameSource};

#[derive(Debug)]
enum Frames {
    Files(Vec<PathBuf>),
    /// The file's bytes and each frame's range.
    Mjpeg(Vec<u8>, Vec<std::ops::Range<usize>>),
}

#[derive(Debug)]
pub struct ReplaySource {
    describe: String,
    frames: Frames,
    fps: f64,
    once: bool,
    next: usize,
    seq: u64,
    started: Option<Instant>,
    delay: Duration,
    pool: BufferPool,
    max_pixels: u64,
}

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        matches!(
            e.to_ascii_lowercase().as_str(),
            "jpg" | "jpeg" | "png" | "pgm" | "ppm"
        )
    })
}

impl ReplaySource {
    pub fn open(
        path: &Path,
        fps: f64,
        once: bool,
        max_pixels: u64,
    ) -> Result<ReplaySource, CameraError> {
        let open_err = |e: std::io::Error| CameraError::Open {
            source_name: path.display().to_string(),
            message: e.to_string(),
        };
        let frames = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(open_err)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_image(p))
                .collect();
            files.sort();
            Frames::Files(files)
        } else {
            let data = std::fs::read(path).map_err(open_err)?;
            let ranges = split_mjpeg(&data);
            Frames::Mjpeg(data, ranges)
        };
        let count = match &frames {
            Frames::Files(f) => f.len(),
            Frames::Mjpeg(_, r) => r.len(),
        };
        if count == 0 {
            return Err(CameraError::Open {
                source_name: path.display().to_string(),
                message: "no frames (expected .jpg/.png/.pgm files or an .mjpeg file)".into(),
            });
        }
        Ok(ReplaySource {
            describe: format!(
                "replay:{} ({count} frames at {fps} fps{})",
                path.display(),
                if once { ", once" } else { "" }
            ),
            frames,
            fps,
            once,
            next: 0,
            seq: 0,
            started: None,
            delay: Duration::ZERO,
            pool: BufferPool::default(),
            max_pixels,
        })
    }

    /// Waits `seconds` before the first frame.
    pub fn delayed(mut self, seconds: f64) -> ReplaySource {
        self.delay = Duration::from_secs_f64(seconds.max(0.0));
        self
    }

    fn len(&self) -> usize {
        match &self.frames {
            Frames::Files(f) => f.len(),
            Frames::Mjpeg(_, r) => r.len(),
        }
    }

    /// Reads frame `i` into `out`; the JPEG bytes when the frame is one (served as is).
    fn load(&self, i: usize, out: &mut RgbImage) -> Result<Option<Vec<u8>>, CameraError> {
        match &self.frames {
            Frames::Files(files) => {
                let path = &files[i];
                let bytes = std::fs::read(path).map_err(|e| CameraError::Io(e.to_string()))?;
                if bytes.starts_with(&[0xFF, 0xD8]) {
                    jpeg_to_rgb(&bytes, self.max_pixels, out).map_err(CameraError::Corrupt)?;
                    Ok(Some(bytes))
                } else {
                    let img = image::load_from_memory(&bytes)
                        .map_err(|e| {
                            CameraError::Corrupt(super::convert::ConvertError::Jpeg(e.to_string()))
                        })?
                        .to_rgb8();
                    *out = img;
                    Ok(None)
                }
            }
            Frames::Mjpeg(data, ranges) => {
                let raw = &data[ranges[i].clone()];
                jpeg_to_rgb(raw, self.max_pixels, out).map_err(CameraError::Corrupt)?;
                Ok(Some(raw.to_vec()))
            }
        }
    }
}

impl FrameSource for ReplaySource {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, CameraError> {
        if self.next >= self.len() {
            if self.once {
                return Ok(None);
            }
            self.next = 0;
        }
        if self.started.is_none() && !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        // Frame n is due at n / fps after the first: a slow reader gets the frames it missed
        // skipped by the capture loop's latest-frame slot, never a slower clock.
        let due = started + Duration::from_secs_f64(self.seq as f64 / self.fps);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let i = self.next;
        self.next += 1;
        self.seq += 1;
        let mut buf = self.pool.take();
        let loaded = self.load(i, std::sync::Arc::make_mut(&mut buf));
        self.pool.keep(&buf);
        match loaded {
            Ok(jpeg) => Ok(Some(Frame {
                seq: self.seq,
                captured: Instant::now(),
                image: buf,
                jpeg: jpeg.map(std::sync::Arc::new),
            })),
            Err(e) => Err(e),
        }
    }
}
