//! Face detection with 5 landmarks: CenterFace (default) or BlazeFace full-range.
//!
//! Invariant: boxes and landmarks are in source-image pixels, clamped to the image, after
//! non-maximum suppression, sorted by score; landmark order is the ArcFace template's
//! (image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth corner).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

use image::RgbImage;
use image::imageops::{self, FilterType};
use serde::Deserialize;
use tract_onnx::prelude::*;

use super::PipelineError;
use super::models::{self, ModelError, ModelStore, Plan, Precision, Role};

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
    /// Fully convolutional: one optimized plan per padded input shape.
    CenterFace {
        model: Box<InferenceModel>,
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
                let model = store.parse(entry)?;
                let backend = Backend::CenterFace {
                    model: Box::new(model),
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
        let mut faces = match &self.backend {
            Backend::CenterFace { .. } => self.detect_centerface(img)?,
            Backend::BlazeFace { plan } => self.detect_blazeface(plan, img)?,
        };
        faces.retain(|f| f.width() >= self.cfg.min_face_px);
        let mut faces = nms(faces, self.cfg.nms_iou);
        for f in &mut faces {
            f.bbox[0] = f.bbox[0].clamp(0.0, w as f32);
            f.bbox[2] = f.bbox[2].clamp(0.0, w as f32);
            f.bbox[1] = f.bbox[1].clamp(0.0, h as f32);
            f.bbox[3] = f.bbox[3].clamp(0.0, h as f32);
        }
        Ok(faces)
    }

    fn centerface_plan(&self, pw: usize, ph: usize) -> Result<Plan, ModelError> {
        let Backend::CenterFace { model, plans } = &self.backend else {
            unreachable!("centerface_plan is only called for the CenterFace backend")
        };
        // A poisoned lock only means another thread panicked while planning; the map is intact.
        let mut plans = plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(plan) = plans.get(&(pw, ph)) {
            return Ok(plan.clone());
        }
        let plan = models::plan((**model).clone(), &self.name, &[1, 3, ph, pw])?;
        if plans.len() >= PLAN_CACHE {
            plans.clear();
        }
        plans.insert((pw, ph), plan.clone());
        Ok(plan)
    }

    fn detect_centerface(&self, img: &RgbImage) -> Result<Vec<Face>, PipelineError> {
        let (w, h) = img.dimensions();
        let longest = w.max(h);
        let (rw, rh) = if longest > self.cfg.max_side {
            let s = self.cfg.max_side as f32 / longest as f32;
            (
                ((w as f32 * s).round() as u32).max(1),
                ((h as f32 * s).round() as u32).max(1),
            )
        } else {
            (w, h)
        };
        let resized: Cow<'_, RgbImage> = if (rw, rh) == (w, h) {
            Cow::Borrowed(img)
        } else {
            Cow::Owned(imageops::resize(img, rw, rh, FilterType::Triangle))
        };
        let (rw, rh) = (rw as usize, rh as usize);
        let (pw, ph) = (rw.div_ceil(32) * 32, rh.div_ceil(32) * 32);
        let plan = self.centerface_plan(pw, ph)?;

        // NCHW, RGB 0..255, zero padding right and bottom.
        let mut input = vec![0f32; 3 * ph * pw];
        for (x, y, p) in resized.enumerate_pixels() {
            let (x, y) = (x as usize, y as usize);
            for c in 0..3 {
                input[c * ph * pw + y * pw + x] = f32::from(p[c]);
            }
        }
        let input = Tensor::from_shape(&[1, 3, ph, pw], &input).map_err(inference)?;
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
        let (sx, sy) = (rw as f32 / w as f32, rh as f32 / h as f32);
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
                    (lms[(2 * j + 1) * n + i] * s1 + x1) / sx,
                    (lms[2 * j * n + i] * s0 + y1) / sy,
                ];
            }
            faces.push(Face {
                bbox: [x1 / sx, y1 / sy, (x1 + s1) / sx, (y1 + s0) / sy],
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
        let resized = imageops::resize(img, rw, rh, FilterType::Triangle);
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
