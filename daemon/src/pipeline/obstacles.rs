//! Obstacles over a face, each a confidence in [0, 1]: mask (MobileNetV2 mask classifier),
//! hand (MediaPipe palm detector, a palm overlapping the face box), sunglasses (eye region
//! flat and dark against the cheek, from `eyes`), hat (forehead unlike the cheeks).
//!
//! Invariant: every score is finite and in [0, 1]; which of them block is the caller's
//! decision (`ObstacleThresholds`). The mask and the palm models run only when asked.

use image::RgbImage;
use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;

use super::PipelineError;
use super::align::{crop_resize, letterbox, warp_affine};
use super::detect::Face;
use super::eyes::EyeObservation;
use super::models::{self, ModelError, ModelStore, Plan, Precision, Role};

const MASK_SIDE: usize = 224;
const PALM_SIDE: usize = 256;
/// Palm detector anchors: (stride, anchors per cell) at 256x256 -> 2944 anchors.
const PALM_LAYERS: [(usize, usize); 3] = [(8, 2), (16, 2), (32, 6)];
const PALM_MIN_SCORE: f32 = 0.5;

/// Obstacle confidences in [0, 1].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ObstacleScores {
    pub mask: f32,
    pub hand: f32,
    pub sunglasses: f32,
    pub hat: f32,
}

/// Above these an obstacle blocks (the contract's defaults: glasses 0.5, others 0.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObstacleThresholds {
    pub mask: f32,
    pub hand: f32,
    /// Dark lenses that hide the eyes. Clear glasses are not an obstacle (see ARCHITECTURE.md).
    pub sunglasses: f32,
    pub hat: f32,
}

impl Default for ObstacleThresholds {
    fn default() -> Self {
        ObstacleThresholds {
            mask: 0.3,
            // Advisory by default: the palm detector finds hands in close-up real faces (chin,
            // ears, cheeks) as often as real hands (ARCHITECTURE.md); 0.3 is the contract's.
            hand: 1.0,
            sunglasses: 0.5,
            hat: 0.3,
        }
    }
}

impl ObstacleScores {
    /// The names of the obstacles over their thresholds (contract names: `glasses` is sunglasses).
    pub fn blocking(&self, t: &ObstacleThresholds) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.mask > t.mask {
            out.push("mask");
        }
        if self.hand > t.hand {
            out.push("hand");
        }
        if self.sunglasses > t.sunglasses {
            out.push("glasses");
        }
        if self.hat > t.hat {
            out.push("hat");
        }
        out
    }

    /// The strongest score (for `obstacle_confidence`).
    pub fn max(&self) -> f32 {
        self.mask.max(self.hand).max(self.sunglasses).max(self.hat)
    }
}

/// A detected palm in source pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Palm {
    pub bbox: [f32; 4],
    pub score: f32,
}

#[derive(Debug)]
pub struct ObstacleModels {
    mask: Plan,
    palm: Plan,
    anchors: Vec<[f32; 2]>,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-60.0, 60.0)).exp())
}

fn tract_err(stage: &'static str) -> impl Fn(TractError) -> PipelineError {
    move |e| PipelineError::Inference {
        stage,
        message: format!("{e:#}"),
    }
}

impl ObstacleModels {
    pub fn load(store: &ModelStore) -> Result<ObstacleModels, ModelError> {
        let entry = store.entry(Role::Mask, Precision::Fp32)?;
        let mask = models::plan(
            store.parse(entry)?,
            &entry.name,
            &[1, MASK_SIDE, MASK_SIDE, 3],
        )?;
        let entry = store.entry(Role::Palm, Precision::Fp32)?;
        let palm = models::plan(
            store.parse(entry)?,
            &entry.name,
            &[1, PALM_SIDE, PALM_SIDE, 3],
        )?;
        let mut anchors = Vec::with_capacity(2944);
        for (stride, per_cell) in PALM_LAYERS {
            let grid = PALM_SIDE / stride;
            for y in 0..grid {
                for x in 0..grid {
                    for _ in 0..per_cell {
                        anchors.push([
                            (x as f32 + 0.5) / grid as f32,
                            (y as f32 + 0.5) / grid as f32,
                        ]);
                    }
                }
            }
        }
        Ok(ObstacleModels {
            mask,
            palm,
            anchors,
        })
    }

    /// Mask confidence: the classifier's softmax "mask" output, gated by the lower face being
    /// unlike skin (`lower_face_covered`).
    pub fn mask(&self, img: &RgbImage, face: &Face) -> Result<f32, PipelineError> {
        let crop = crop_resize(img, face.bbox, MASK_SIDE as u32, MASK_SIDE as u32);
        let input: Vec<f32> = crop
            .as_raw()
            .iter()
            .map(|&p| f32::from(p) / 127.5 - 1.0)
            .collect();
        let err = tract_err("mask");
        let tensor = Tensor::from_shape(&[1, MASK_SIDE, MASK_SIDE, 3], &input).map_err(&err)?;
        let out = models::run(&self.mask, tensor).map_err(&err)?;
        let v = models::as_f32(&out[0]).map_err(&err)?;
        let (m, n) = (
            v.first().copied().unwrap_or(0.0),
            v.get(1).copied().unwrap_or(1.0),
        );
        // The model ends in a softmax; normalise anyway so the score is a probability.
        let p = if (m + n - 1.0).abs() < 1e-3 && m >= 0.0 {
            m
        } else {
            sigmoid(m - n)
        };
        Ok((p * lower_face_covered(img, face)).clamp(0.0, 1.0))
    }

    /// Palms in the whole frame (letterboxed to 256x256), after NMS.
    pub fn palms(&self, img: &RgbImage) -> Result<Vec<Palm>, PipelineError> {
        let (square, [scale, pad_x, pad_y]) = letterbox(img, PALM_SIDE as u32);
        let input: Vec<f32> = square
            .as_raw()
            .iter()
            .map(|&p| f32::from(p) / 127.5 - 1.0)
            .collect();
        let err = tract_err("palm");
        let tensor = Tensor::from_shape(&[1, PALM_SIDE, PALM_SIDE, 3], &input).map_err(&err)?;
        let out = models::run(&self.palm, tensor).map_err(&err)?;
        let raw = models::as_f32(&out[0]).map_err(&err)?;
        let side = PALM_SIDE as f32;
        let mut palms: Vec<Palm> = raw
            .chunks_exact(19)
            .zip(&self.anchors)
            .filter_map(|(o, a)| {
                let score = sigmoid(o[0]);
                (score >= PALM_MIN_SCORE).then(|| {
                    let (cx, cy) = (o[1] / side + a[0], o[2] / side + a[1]);
                    let (w, h) = (o[3] / side, o[4] / side);
                    let to_src =
                        |u: f32, v: f32| [u * side * scale - pad_x, v * side * scale - pad_y];
                    let [x1, y1] = to_src(cx - w / 2.0, cy - h / 2.0);
                    let [x2, y2] = to_src(cx + w / 2.0, cy + h / 2.0);
                    Palm {
                        bbox: [x1, y1, x2, y2],
                        score,
                    }
                })
            })
            .collect();
        palms.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut kept: Vec<Palm> = Vec::new();
        for p in palms {
            if kept
                .iter()
                .all(|k| super::detect::iou(&k.bbox, &p.bbox) < 0.3)
            {
                kept.push(p);
            }
        }
        Ok(kept)
    }
}

/// Hand over the face: the best palm score among palms whose box lies at least 30 % inside
/// the face box (grown by 15 %: a hand at the chin or forehead counts).
pub fn hand_over_face(face: &Face, palms: &[Palm]) -> f32 {
    let grow = 0.15 * face.width().max(face.height());
    let f = [
        face.bbox[0] - grow,
        face.bbox[1] - grow,
        face.bbox[2] + grow,
        face.bbox[3] + grow,
    ];
    palms
        .iter()
        .filter(|p| {
            let ix = (p.bbox[2].min(f[2]) - p.bbox[0].max(f[0])).max(0.0);
            let iy = (p.bbox[3].min(f[3]) - p.bbox[1].max(f[1])).max(0.0);
            let area = ((p.bbox[2] - p.bbox[0]) * (p.bbox[3] - p.bbox[1])).max(1.0);
            ix * iy / area >= 0.3
        })
        .map(|p| p.score)
        .fold(0.0, f32::max)
}

/// Sunglasses: eyes whose region is flat (little texture) and dark against the cheek. An eye,
/// even half closed, has lashes, iris and sclera (texture ~0.25-0.4 of the cheek's luminance);
/// a dark lens is ~0.05. Clear glasses keep the eye visible and score low.
pub fn sunglasses(eyes: &EyeObservation) -> f32 {
    let flat = sigmoid((0.14 - eyes.texture) / 0.03);
    let dark = sigmoid((0.6 - eyes.darkness) / 0.08);
    (flat * dark).clamp(0.0, 1.0)
}

/// Hat (forehead covered): the forehead band, 0.4-0.9 inter-ocular distances above the eye
/// line, compared with the skin of the nose bridge in colour and luminance. Weak evidence, honestly: a fringe of
/// hair over the forehead looks the same, and a hat above the hairline is not seen at all.
pub fn hat(img: &RgbImage, face: &Face) -> f32 {
    let Some(frame) = FaceFrame::new(face) else {
        return 0.0;
    };
    let forehead = frame.patch(img, 0.0, -0.65, 1.0);
    // The reference skin is the nose bridge between the eyes: a mask starts below it, and
    // the cheeks it would cover are no reference for the forehead.
    let bridge = frame.patch(img, 0.0, 0.12, 0.3);
    let (dchroma, dlum) = unlike(forehead, bridge);
    sigmoid((dchroma - 0.06) / 0.015 + (dlum - 0.7) / 0.15).clamp(0.0, 1.0)
}

/// How unlike skin the lower face is: the lower cheeks (0.75 eye distances below the eye line,
/// where a mask sits) against the nose bridge, in [0, 1]. The mask classifier alone also
/// fires on glasses (10 of 36 faces with synthetic sunglasses, 9 with clear rims) and on one
/// real face with sunglasses; a mask also changes the colour of the lower face.
pub fn lower_face_covered(img: &RgbImage, face: &Face) -> f32 {
    let Some(frame) = FaceFrame::new(face) else {
        return 0.0;
    };
    let bridge = frame.patch(img, 0.0, 0.12, 0.3);
    let (a, b) = (
        unlike(frame.patch(img, -0.5, 0.8, 0.4), bridge),
        unlike(frame.patch(img, 0.5, 0.8, 0.4), bridge),
    );
    // Both sides covered: the weaker side decides.
    let side = |(dchroma, dlum): (f32, f32)| sigmoid((dchroma - 0.04) / 0.01 + (dlum - 0.35) / 0.1);
    side(a).min(side(b)).clamp(0.0, 1.0)
}

/// Chromaticity distance and absolute log-luminance ratio of two mean colours.
fn unlike(p: [f32; 3], q: [f32; 3]) -> (f32, f32) {
    let lum = |p: [f32; 3]| (0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]).max(1.0);
    let chroma = |p: [f32; 3]| {
        let s = (p[0] + p[1] + p[2]).max(1.0);
        [p[0] / s, p[1] / s]
    };
    let (cp, cq) = (chroma(p), chroma(q));
    (
        (cp[0] - cq[0]).hypot(cp[1] - cq[1]),
        (lum(p) / lum(q)).ln().abs(),
    )
}

/// A face's own frame: origin at the eye midpoint, x along the eye line, unit = eye distance.
struct FaceFrame {
    mid: [f32; 2],
    c: f32,
    s: f32,
    iod: f32,
}

impl FaceFrame {
    fn new(face: &Face) -> Option<FaceFrame> {
        let [l, r] = [face.landmarks[0], face.landmarks[1]];
        let iod = (r[0] - l[0]).hypot(r[1] - l[1]);
        (iod >= 4.0).then(|| FaceFrame {
            mid: [(l[0] + r[0]) / 2.0, (l[1] + r[1]) / 2.0],
            c: (r[0] - l[0]) / iod,
            s: (r[1] - l[1]) / iod,
            iod,
        })
    }

    /// Mean colour of a 32x16-sample patch `width` eye distances wide (half as high), centred
    /// `dx`, `dy` eye distances from the eye midpoint along and across the eye line.
    fn patch(&self, img: &RgbImage, dx: f32, dy: f32, width: f32) -> [f32; 3] {
        let (c, s) = (self.c, self.s);
        let k = width * self.iod / 32.0;
        let centre = [
            self.mid[0] + (dx * c - dy * s) * self.iod,
            self.mid[1] + (dx * s + dy * c) * self.iod,
        ];
        let p = warp_affine(
            img,
            [
                c * k,
                -s * k,
                centre[0] - 16.0 * c * k + 8.0 * s * k,
                s * k,
                c * k,
                centre[1] - 16.0 * s * k - 8.0 * c * k,
            ],
            32,
            16,
        );
        let mut m = [0f32; 3];
        for px in p.pixels() {
            for (a, v) in m.iter_mut().zip(px.0) {
                *a += f32::from(v) / 512.0;
            }
        }
        m
    }
}
