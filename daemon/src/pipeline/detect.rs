//! Face detection with 5 landmarks: CenterFace (default) or BlazeFace full-range.
//!
//! Invariant: boxes and landmarks are in source-image pixels, clamped to the image, after
//! non-maximum suppression, sorted by score; landmark order is the ArcFace template's
//! (image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth corner).

use std::collections::HashMap;
use std::sync::Mutex;

use image::RgbImage;
use serde::Deserialize;
use tract_onnx::prelude::*;

use super::PipelineError;
use super::models::{self, ModelEntry, ModelError, ModelStore, Plan, Precision, Role};
use super::resize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    Centerface,
    Blazeface,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    pub kind: DetectorKind,
    pub score_threshold: f32,
    pub nms_iou: f32,
    pub max_side: u32,
    pub min_face_px: f32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            kind: DetectorKind::Centerface,
            score_threshold: 0.5,
            nms_iou: 0.3,
            max_side: 320,
            min_face_px: 16.0,
        }
    }
}

/// One detected face, in source-image pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    pub score: f32,
    pub landmarks: [[f32; 2]; 5],
}

impl Face {
    pub fn width(&self) -> f32 {
        self.bbox[2] - self.bbox[0]
    }
    pub fn height(&self) -> f32 {
        self.bbox[3] - self.bbox[1]
    }
    pub fn area(&self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }
}

/// Sides of the square windows of the whole-frame input the detector may see around a
/// tracked face (`detect_around`); few sizes, so few optimized plans.
pub const ROI_WINDOWS: [usize; 4] = [64, 128, 192, 256];
/// The window is at least this many times the face box's size, so the face is found
/// again after moving by up to 0.3 of its width between frames.
const ROI_CONTEXT: f32 = 1.6;
/// A crop whose input would cost more than this share of the whole-frame pass is not worth
/// it (a close-up face fills the frame): the whole frame is searched instead.
const ROI_MAX_SHARE: f32 = 0.5;
/// A followed face (`Detector::follow`) is searched at the scale where it is this many pixels
/// wide in the detector's input (unless the whole-frame pass is coarser): its window, with
/// `ROI_CONTEXT`, is then the smallest of `ROI_WINDOWS`.
pub const FOLLOW_FACE_PX: f32 = 36.0;

/// Distinct input shapes kept optimized at once (a camera uses one; an eval a few).
const PLAN_CACHE: usize = 8;

#[derive(Debug)]
pub struct Detector {
    cfg: DetectorConfig,
    name: String,
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    /// Fully convolutional: one optimized plan per padded input shape. The parsed graph is
    /// not kept between plans (7 MB of weights that each plan packs again anyway): a new shape
    /// reads, verifies and parses the file again, which costs little next to optimizing.
    CenterFace {
        store: ModelStore,
        entry: ModelEntry,
        plans: Mutex<HashMap<(usize, usize), Plan>>,
    },
    /// Fixed 192x192 input.
    BlazeFace { plan: Plan },
}

const BLAZE_SIDE: usize = 192;
const BLAZE_GRID: usize = 48;

impl Detector {
    pub fn load(
        store: &ModelStore,
        cfg: &DetectorConfig,
        precision: Precision,
    ) -> Result<Detector, ModelError> {
        let (name, backend) = match cfg.kind {
            DetectorKind::Centerface => {
                let entry = store.entry(Role::Centerface, precision)?;
                let backend = Backend::CenterFace {
                    store: store.clone(),
                    entry: entry.clone(),
                    plans: Mutex::new(HashMap::new()),
                };
                (entry.name.clone(), backend)
            }
            DetectorKind::Blazeface => {
                // Only an fp32 BlazeFace ships: int8 requests fall back to it.
                let entry = store
                    .entry(Role::Blazeface, precision)
                    .or_else(|_| store.entry(Role::Blazeface, Precision::Fp32))?;
                let plan = models::plan(
                    store.parse(entry)?,
                    &entry.name,
                    &[1, BLAZE_SIDE, BLAZE_SIDE, 3],
                )?;
                (entry.name.clone(), Backend::BlazeFace { plan })
            }
        };
        let detector = Detector {
            cfg: cfg.clone(),
            name,
            backend,
        };
        // Plan the camera-sized shape now so the first frame does not pay for it.
        if let Backend::CenterFace { .. } = &detector.backend {
            let side = cfg.max_side as usize;
            detector.centerface_plan(side.div_ceil(32) * 32, (side * 3 / 4).div_ceil(32) * 32)?;
        }
        Ok(detector)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// All faces in the image, best first.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Face>, PipelineError> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        let faces = match &self.backend {
            Backend::CenterFace { .. } => self.detect_centerface(img)?,
            Backend::BlazeFace { plan } => self.detect_blazeface(plan, img)?,
        };
        Ok(self.finish(faces, w, h))
    }

    /// Size filter, NMS, boxes clamped to the image.
    fn finish(&self, mut faces: Vec<Face>, w: u32, h: u32) -> Vec<Face> {
        faces.retain(|f| f.width() >= self.cfg.min_face_px);
        let mut faces = nms(faces, self.cfg.nms_iou);
        for f in &mut faces {
            f.bbox[0] = f.bbox[0].clamp(0.0, w as f32);
            f.bbox[2] = f.bbox[2].clamp(0.0, w as f32);
            f.bbox[1] = f.bbox[1].clamp(0.0, h as f32);
            f.bbox[3] = f.bbox[3].clamp(0.0, h as f32);
        }
        faces
    }

    fn centerface_plan(&self, pw: usize, ph: usize) -> Result<Plan, ModelError> {
        let Backend::CenterFace {
            store,
            entry,
            plans,
        } = &self.backend
        else {
            unreachable!("centerface_plan is only called for the CenterFace backend")
        };
        // A poisoned lock only means another thread panicked while planning; the map is intact.
        let mut plans = plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(plan) = plans.get(&(pw, ph)) {
            return Ok(plan.clone());
        }
        let plan = models::plan(store.parse(entry)?, &self.name, &[1, 3, ph, pw])?;
        if plans.len() >= PLAN_CACHE {
            plans.clear();
        }
        plans.insert((pw, ph), plan.clone());
        Ok(plan)
    }

    fn detect_centerface(&self, img: &RgbImage) -> Result<Vec<Face>, PipelineError> {
        let (w, h) = img.dimensions();
        let (rw, rh) = self.input_size(w, h);
        self.centerface_at(img, rw, rh)
    }

    /// CenterFace over the whole frame downscaled to `rw` x `rh`; faces in source pixels.
    fn centerface_at(&self, img: &RgbImage, rw: u32, rh: u32) -> Result<Vec<Face>, PipelineError> {
        let (w, h) = img.dimensions();
        let (pw, ph) = (
            (rw as usize).div_ceil(32) * 32,
            (rh as usize).div_ceil(32) * 32,
        );
        let mut input = Tensor::zero::<f32>(&[1, 3, ph, pw]).map_err(inference)?;
        let mut view = input.try_as_plain_ram_mut().map_err(inference)?;
        let buf = view.as_slice_mut::<f32>().map_err(inference)?;
        // (A 2x2 box filter straight into the tensor saves ~2 ms at 640x480, but moves the
        // landmarks enough to change blinks the liveness rules were measured on: Triangle.)
        if (rw, rh) == (w, h) {
            fill_nchw(buf, img, pw, ph, 0, 0);
        } else {
            let resized = resize::triangle_resize(img, rw, rh);
            fill_nchw(buf, &resized, pw, ph, 0, 0);
        }
        let faces = self.run_centerface(input, pw, ph)?;
        let (sx, sy) = (rw as f32 / w as f32, rh as f32 / h as f32);
        Ok(faces
            .into_iter()
            .map(|f| map_face(f, sx, sy, 0.0, 0.0))
            .collect())
    }

    /// Faces in a square window around `bbox` (a tracked face's last box), detected on that
    /// window of the whole-frame pass's input alone: the same scale and the same pixels, the
    /// window's corner on the network's 32-pixel stride grid, so the face's landmarks come out
    /// as the whole-frame pass gives them (only the context beyond the window is zeros). The
    /// window is `ROI_CONTEXT` times the face, rounded up to one of `ROI_WINDOWS`. `None` when
    /// that is not worth it (the window would cost over `ROI_MAX_SHARE` of the whole frame's
    /// pass: a close-up face) or the detector cannot (BlazeFace has a fixed whole-frame
    /// input). Same invariants as `detect`: source pixels, clamped, after NMS, best first.
    pub fn detect_around(
        &self,
        img: &RgbImage,
        bbox: [f32; 4],
    ) -> Result<Option<Vec<Face>>, PipelineError> {
        let Some(face) = self.tracked_side(img, bbox) else {
            return Ok(None);
        };
        let (w, h) = img.dimensions();
        let (rw, rh) = self.input_size(w, h);
        self.around(img, bbox, face, rw, rh, false)
    }

    /// A decided face that is only followed (`Stream::settle`): found again on a 64x64 window
    /// (the smallest of `ROI_WINDOWS`, so one plan for every camera and face size) centred on
    /// it, of the frame downscaled until the face is `FOLLOW_FACE_PX` wide (never finer than
    /// the whole-frame pass), or on the whole of that input when it is too small for the
    /// window. Its landmarks are coarser than `detect_around`'s: no liveness cue reads a
    /// followed face. `None` when the detector cannot (BlazeFace).
    pub fn follow(
        &self,
        img: &RgbImage,
        bbox: [f32; 4],
    ) -> Result<Option<Vec<Face>>, PipelineError> {
        let Some(face) = self.tracked_side(img, bbox) else {
            return Ok(None);
        };
        let (w, h) = img.dimensions();
        let (rw, rh) = follow_size((w, h), self.input_size(w, h), face);
        self.around(img, bbox, face, rw, rh, true)
    }

    /// The side of a tracked face's box (geometric mean: CenterFace's boxes are ~1.35 times
    /// taller than wide), or `None` if there is nothing to search around.
    fn tracked_side(&self, img: &RgbImage, bbox: [f32; 4]) -> Option<f32> {
        if !matches!(self.backend, Backend::CenterFace { .. }) {
            return None;
        }
        let (w, h) = img.dimensions();
        let face = ((bbox[2] - bbox[0]).max(0.0) * (bbox[3] - bbox[1]).max(0.0)).sqrt();
        (w > 0 && h > 0 && face.is_finite() && face >= 1.0).then_some(face)
    }

    /// The window search of `detect_around` (`follow` false) and of `follow` on the frame
    /// downscaled to `rw` x `rh`. `detect_around`'s window is on the 32-pixel grid and only
    /// where it costs at most `ROI_MAX_SHARE` of the whole input, else `None`; `follow`'s is
    /// centred on the face, and where no window fits, the whole of that input is searched.
    fn around(
        &self,
        img: &RgbImage,
        bbox: [f32; 4],
        face: f32,
        rw: u32,
        rh: u32,
        follow: bool,
    ) -> Result<Option<Vec<Face>>, PipelineError> {
        let (w, h) = img.dimensions();
        let (pw, ph) = (
            (rw as usize).div_ceil(32) * 32,
            (rh as usize).div_ceil(32) * 32,
        );
        let (sx, sy) = (rw as f32 / w as f32, rh as f32 / h as f32);
        let wanted = ROI_CONTEXT * face * sx;
        let Some(n) = ROI_WINDOWS
            .iter()
            .copied()
            .find(|&n| n as f32 >= wanted)
            .filter(|&n| n <= pw && n <= ph)
            .filter(|&n| follow || (n * n) as f32 <= ROI_MAX_SHARE * (pw * ph) as f32)
        else {
            return if follow {
                let faces = self.centerface_at(img, rw, rh)?;
                Ok(Some(self.finish(faces, w, h)))
            } else {
                Ok(None)
            };
        };
        // The window's corner: centred on the face (on the 32-pixel grid unless following),
        // inside the input.
        let centre = |a: f32, b: f32, s: f32| (a + b) / 2.0 * s;
        let grid = if follow { 1.0 } else { 32.0 };
        let corner = |c: f32, padded: usize| {
            let x = ((c - n as f32 / 2.0) / grid).round().max(0.0) as usize * grid as usize;
            x.min(padded - n)
        };
        let x0 = corner(centre(bbox[0], bbox[2], sx), pw);
        let y0 = corner(centre(bbox[1], bbox[3], sy), ph);
        let mut input = Tensor::zero::<f32>(&[1, 3, n, n]).map_err(inference)?;
        let mut view = input.try_as_plain_ram_mut().map_err(inference)?;
        let buf = view.as_slice_mut::<f32>().map_err(inference)?;
        if (rw, rh) == (w, h) {
            fill_window(buf, img, n, x0, y0);
        } else {
            // Only the window's pixels of the downscaled frame (the same bytes as downscaling
            // the whole frame and cutting the window out).
            let (x, y, n32) = (x0 as u32, y0 as u32, n as u32);
            let window = resize::triangle_resize_window(img, rw, rh, x, y, n32, n32);
            fill_window(buf, &window, n, 0, 0);
        }
        let faces = self.run_centerface(input, n, n)?;
        let faces = faces
            .into_iter()
            .map(|f| {
                map_face(
                    map_face(f, 1.0, 1.0, x0 as f32, y0 as f32),
                    sx,
                    sy,
                    0.0,
                    0.0,
                )
            })
            .collect();
        Ok(Some(self.finish(faces, w, h)))
    }

    /// The size a frame is scaled to for the whole-frame pass (longer side <= `max_side`).
    fn input_size(&self, w: u32, h: u32) -> (u32, u32) {
        let longest = w.max(h);
        if longest > self.cfg.max_side {
            let s = self.cfg.max_side as f32 / longest as f32;
            (
                ((w as f32 * s).round() as u32).max(1),
                ((h as f32 * s).round() as u32).max(1),
            )
        } else {
            (w, h)
        }
    }

    /// Runs CenterFace on a `pw` x `ph` NCHW input; faces in input pixels.
    fn run_centerface(
        &self,
        input: Tensor,
        pw: usize,
        ph: usize,
    ) -> Result<Vec<Face>, PipelineError> {
        let plan = self.centerface_plan(pw, ph)?;
        let out = models::run(&plan, input).map_err(inference)?;
        let [heat, scale, offset, lms] = [0, 1, 2, 3].map(|i| models::as_f32(&out[i]));
        let (heat, scale, offset, lms) = (
            heat.map_err(inference)?,
            scale.map_err(inference)?,
            offset.map_err(inference)?,
            lms.map_err(inference)?,
        );
        let (gh, gw) = (ph / 4, pw / 4);
        let n = gh * gw;
        if heat.len() != n || scale.len() != 2 * n || offset.len() != 2 * n || lms.len() != 10 * n {
            return Err(PipelineError::Inference {
                stage: "detect",
                message: format!("unexpected CenterFace output sizes for a {pw}x{ph} input"),
            });
        }
        let mut faces = Vec::new();
        for (i, &score) in heat.iter().enumerate() {
            if score <= self.cfg.score_threshold {
                continue;
            }
            let (gy, gx) = ((i / gw) as f32, (i % gw) as f32);
            let s0 = scale[i].exp() * 4.0; // height
            let s1 = scale[n + i].exp() * 4.0; // width
            let x1 = (gx + offset[n + i] + 0.5) * 4.0 - s1 / 2.0;
            let y1 = (gy + offset[i] + 0.5) * 4.0 - s0 / 2.0;
            let mut landmarks = [[0f32; 2]; 5];
            for (j, lm) in landmarks.iter_mut().enumerate() {
                *lm = [
                    lms[(2 * j + 1) * n + i] * s1 + x1,
                    lms[2 * j * n + i] * s0 + y1,
                ];
            }
            faces.push(Face {
                bbox: [x1, y1, x1 + s1, y1 + s0],
                score,
                landmarks,
            });
        }
        Ok(faces)
    }

    fn detect_blazeface(&self, plan: &Plan, img: &RgbImage) -> Result<Vec<Face>, PipelineError> {
        let (w, h) = img.dimensions();
        let s = BLAZE_SIDE as f32 / w.max(h) as f32;
        let rw = ((w as f32 * s).round() as u32).clamp(1, BLAZE_SIDE as u32);
        let rh = ((h as f32 * s).round() as u32).clamp(1, BLAZE_SIDE as u32);
        let resized = resize::triangle_resize(img, rw, rh);
        let (ox, oy) = (
            (BLAZE_SIDE - rw as usize) / 2,
            (BLAZE_SIDE - rh as usize) / 2,
        );
        // NHWC in [-1, 1]; letterbox padding is black (-1).
        let mut input = vec![-1f32; BLAZE_SIDE * BLAZE_SIDE * 3];
        for (x, y, p) in resized.enumerate_pixels() {
            let base = ((y as usize + oy) * BLAZE_SIDE + x as usize + ox) * 3;
            for c in 0..3 {
                input[base + c] = f32::from(p[c]) / 127.5 - 1.0;
            }
        }
        let input =
            Tensor::from_shape(&[1, BLAZE_SIDE, BLAZE_SIDE, 3], &input).map_err(inference)?;
        let out = models::run(plan, input).map_err(inference)?;
        let reg = models::as_f32(&out[0]).map_err(inference)?;
        let cls = models::as_f32(&out[1]).map_err(inference)?;
        let anchors = BLAZE_GRID * BLAZE_GRID;
        if reg.len() != anchors * 16 || cls.len() != anchors {
            return Err(PipelineError::Inference {
                stage: "detect",
                message: "unexpected BlazeFace output sizes".into(),
            });
        }
        let side = BLAZE_SIDE as f32;
        // input pixel -> source pixel
        let to_src = |px: f32, py: f32| [(px - ox as f32) / s, (py - oy as f32) / s];
        let mut faces = Vec::new();
        for (i, &logit) in cls.iter().enumerate() {
            let score = 1.0 / (1.0 + (-logit.clamp(-100.0, 100.0)).exp());
            if score <= self.cfg.score_threshold {
                continue;
            }
            let r = &reg[i * 16..(i + 1) * 16];
            let ax = ((i % BLAZE_GRID) as f32 + 0.5) / BLAZE_GRID as f32 * side;
            let ay = ((i / BLAZE_GRID) as f32 + 0.5) / BLAZE_GRID as f32 * side;
            let (cx, cy) = (ax + r[0], ay + r[1]);
            let [x1, y1] = to_src(cx - r[2] / 2.0, cy - r[3] / 2.0);
            let [x2, y2] = to_src(cx + r[2] / 2.0, cy + r[3] / 2.0);
            let kp = |k: usize| to_src(ax + r[4 + 2 * k], ay + r[5 + 2 * k]);
            let (eye_l, eye_r, nose, mouth) = (kp(0), kp(1), kp(2), kp(3));
            // BlazeFace gives the mouth centre; place the corners on the eye direction with the
            // template's mouth-width / eye-distance ratio (29.18 / 35.24).
            let half = 0.414;
            let d = [eye_r[0] - eye_l[0], eye_r[1] - eye_l[1]];
            let mouth_l = [mouth[0] - half * d[0], mouth[1] - half * d[1]];
            let mouth_r = [mouth[0] + half * d[0], mouth[1] + half * d[1]];
            faces.push(Face {
                bbox: [x1, y1, x2, y2],
                score,
                landmarks: [eye_l, eye_r, nose, mouth_l, mouth_r],
            });
        }
        Ok(faces)
    }
}

/// The size `follow` scales a `frame` to for a `face`-pixel face: the face `FOLLOW_FACE_PX`
/// wide, or the whole-frame pass's `input` size if that is coarser already.
fn follow_size(frame: (u32, u32), input: (u32, u32), face: f32) -> (u32, u32) {
    let s = FOLLOW_FACE_PX / face;
    if s * frame.0 as f32 >= input.0 as f32 {
        return input;
    }
    (
        ((frame.0 as f32 * s).round() as u32).max(1),
        ((frame.1 as f32 * s).round() as u32).max(1),
    )
}

/// Maps a face from input pixels (scaled by `sx`, `sy` from the source, after an offset of
/// `ox`, `oy` source pixels) back to source pixels.
fn map_face(mut f: Face, sx: f32, sy: f32, ox: f32, oy: f32) -> Face {
    f.bbox = [
        f.bbox[0] / sx + ox,
        f.bbox[1] / sy + oy,
        f.bbox[2] / sx + ox,
        f.bbox[3] / sy + oy,
    ];
    for p in &mut f.landmarks {
        *p = [p[0] / sx + ox, p[1] / sy + oy];
    }
    f
}

/// Writes `img` into a zeroed NCHW buffer of `pw` x `ph` at (`ox`, `oy`), RGB 0..255.
fn fill_nchw(buf: &mut [f32], img: &RgbImage, pw: usize, ph: usize, ox: usize, oy: usize) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = pw * ph;
    for (y, row) in img.as_raw().chunks_exact(3 * w).take(h).enumerate() {
        let base = (y + oy) * pw + ox;
        for (x, p) in row.chunks_exact(3).enumerate() {
            for c in 0..3 {
                buf[c * plane + base + x] = f32::from(p[c]);
            }
        }
    }
}

/// Writes the `n` x `n` window at (`x0`, `y0`) of `img` (zeros beyond it) into an NCHW buffer.
fn fill_window(buf: &mut [f32], img: &RgbImage, n: usize, x0: usize, y0: usize) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    for y in 0..n.min(h.saturating_sub(y0)) {
        let row = &raw[(y0 + y) * 3 * w..(y0 + y + 1) * 3 * w];
        for x in 0..n.min(w.saturating_sub(x0)) {
            for c in 0..3 {
                buf[c * n * n + y * n + x] = f32::from(row[3 * (x0 + x) + c]);
            }
        }
    }
}

fn inference(e: TractError) -> PipelineError {
    PipelineError::Inference {
        stage: "detect",
        message: format!("{e:#}"),
    }
}

pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Greedy non-maximum suppression; returns the kept faces, best score first.
pub fn nms(mut faces: Vec<Face>, iou_threshold: f32) -> Vec<Face> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Face> = Vec::with_capacity(faces.len().min(16));
    for f in faces {
        if kept.iter().all(|k| iou(&k.bbox, &f.bbox) < iou_threshold) {
            kept.push(f);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(bbox: [f32; 4], score: f32) -> Face {
        Face {
            bbox,
            score,
            landmarks: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn a_followed_face_is_scaled_to_36_px_never_finer_than_the_whole_frame_pass() {
        // A 640x360 close-up (a ~300 px face; 150 px at the 320x180 pass).
        assert_eq!(follow_size((640, 360), (320, 180), 300.0), (77, 43));
        // 1280x720, the same face twice the size: the same input.
        assert_eq!(follow_size((1280, 720), (320, 180), 600.0), (77, 43));
        // A 67 px webcam face at its own 320x240.
        assert_eq!(follow_size((320, 240), (320, 240), 67.0), (172, 129));
        // A small face is not searched finer than the whole-frame pass.
        assert_eq!(follow_size((640, 480), (320, 240), 60.0), (320, 240));
        assert_eq!(follow_size((640, 480), (320, 240), 72.0), (320, 240));
        // Its window (1.6 times the face) is the smallest of the windows.
        assert!(ROI_CONTEXT * FOLLOW_FACE_PX <= ROI_WINDOWS[0] as f32);
    }

    #[test]
    fn nms_keeps_best_of_overlapping_and_all_disjoint() {
        let faces = vec![
            face([0.0, 0.0, 10.0, 10.0], 0.6),
            face([1.0, 1.0, 11.0, 11.0], 0.9),
            face([50.0, 50.0, 60.0, 60.0], 0.7),
        ];
        let kept = nms(faces, 0.3);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.9);
        assert_eq!(kept[1].score, 0.7);
    }

    #[test]
    fn iou_of_identical_disjoint_and_degenerate_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert!((iou(&a, &a) - 1.0).abs() < 1e-6);
        assert_eq!(iou(&a, &[20.0, 20.0, 30.0, 30.0]), 0.0);
        assert_eq!(iou(&[5.0, 5.0, 5.0, 5.0], &[5.0, 5.0, 5.0, 5.0]), 0.0);
    }
}
