//! Eyes: the eyelid opening of each eye from MediaPipe's iris/eye-contour model, and how
//! visible the eyes are (texture and darkness of the eye region against the cheek), which is
//! the evidence for blinks and for sunglasses.
//!
//! Invariant: one 64x64 crop per eye, centred on the detector's eye landmark, rotated to the
//! eye line, side = `CROP_IOD` x the inter-ocular distance; the image-right eye is mirrored
//! (the model sees both eyes the same way round). Openings are scale-free ratios.

use image::RgbImage;
use tract_onnx::prelude::*;

use super::PipelineError;
use super::align::warp_affine;
use super::detect::Face;
use super::models::{self, ModelError, ModelStore, Plan, Precision, Role};

const SIDE: usize = 64;
/// Crop side as a multiple of the inter-ocular distance (about 2.3 eye widths).
const CROP_IOD: f32 = 1.0;

/// What the eyes of one face look like in one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EyeObservation {
    /// Eyelid opening (lid distance / eye width) of the image-left and image-right eye:
    /// about 0.25-0.36 open, under 0.1 closed.
    pub opening: [f32; 2],
    /// Standard deviation of the eye region's luminance over the cheek's mean luminance:
    /// an eye (iris, lashes, sclera) is textured, a dark lens is flat.
    pub texture: f32,
    /// Eye region mean luminance over the cheek's.
    pub darkness: f32,
    /// Variance of the Laplacian over both eye crops (64x64 each), luminance 0-255: how much
    /// detail the eyes have. A blurry or upscaled eye cannot show a blink reliably.
    pub sharpness: f32,
}

impl EyeObservation {
    pub fn mean_opening(&self) -> f32 {
        (self.opening[0] + self.opening[1]) / 2.0
    }
}

#[derive(Debug)]
pub struct EyeModel {
    plan: Plan,
}

/// Statistics of one crop region (rows, cols) of the luminance.
fn region_stats(
    gray: &[f32],
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> (f32, f32) {
    let mut n = 0f32;
    let (mut sum, mut sq) = (0f32, 0f32);
    for r in rows {
        for c in cols.clone() {
            let v = gray[r * SIDE + c];
            sum += v;
            sq += v * v;
            n += 1.0;
        }
    }
    let mean = sum / n.max(1.0);
    (mean, (sq / n.max(1.0) - mean * mean).max(0.0).sqrt())
}

/// Variance of the 4-neighbour Laplacian over a region of a 64x64 luminance crop.
fn laplacian_variance(
    gray: &[f32],
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> f32 {
    let mut values = Vec::with_capacity(rows.len() * cols.len());
    for y in rows.start.max(1)..rows.end.min(SIDE - 1) {
        for x in cols.start.max(1)..cols.end.min(SIDE - 1) {
            let i = y * SIDE + x;
            values
                .push(gray[i - 1] + gray[i + 1] + gray[i - SIDE] + gray[i + SIDE] - 4.0 * gray[i]);
        }
    }
    let n = values.len().max(1) as f32;
    let mean = values.iter().sum::<f32>() / n;
    values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n
}

/// Lid distance over eye width from the 71-point contour: points 0 and 8 are the corners,
/// 1..=7 the lower lid and 9..=15 the upper lid, in the same order.
fn opening(contour: &[f32]) -> f32 {
    let p = |i: usize| [contour[i * 3], contour[i * 3 + 1]];
    let dist = |a: [f32; 2], b: [f32; 2]| (a[0] - b[0]).hypot(a[1] - b[1]);
    let width = dist(p(0), p(8)).max(1e-3);
    let lids: f32 = (2..=6).map(|i| dist(p(i), p(i + 8))).sum::<f32>() / 5.0;
    lids / width
}

impl EyeModel {
    pub fn load(store: &ModelStore) -> Result<EyeModel, ModelError> {
        let entry = store.entry(Role::Eyes, Precision::Fp32)?;
        let plan = models::plan(store.parse(entry)?, &entry.name, &[1, SIDE, SIDE, 3])?;
        Ok(EyeModel { plan })
    }

    /// The 64x64 crop of one eye (`mirror` for the image-right eye).
    fn crop(img: &RgbImage, center: [f32; 2], angle: f32, side: f32, mirror: bool) -> RgbImage {
        let s = side / SIDE as f32;
        let (c, sn) = (angle.cos(), angle.sin());
        let flip = if mirror { -1.0 } else { 1.0 };
        // image = center + R(angle) * (flip * (u - 32) * s, (v - 32) * s)
        let (a, b, d, e) = (c * s * flip, -sn * s, sn * s * flip, c * s);
        let half = SIDE as f32 / 2.0;
        warp_affine(
            img,
            [
                a,
                b,
                center[0] - half * (a + b),
                d,
                e,
                center[1] - half * (d + e),
            ],
            SIDE as u32,
            SIDE as u32,
        )
    }

    pub fn observe(&self, img: &RgbImage, face: &Face) -> Result<EyeObservation, PipelineError> {
        let err = |e: TractError| PipelineError::Inference {
            stage: "eyes",
            message: format!("{e:#}"),
        };
        let [l, r] = [face.landmarks[0], face.landmarks[1]];
        let iod = (r[0] - l[0]).hypot(r[1] - l[1]);
        if iod < 4.0 {
            return Err(PipelineError::DegenerateLandmarks);
        }
        let angle = (r[1] - l[1]).atan2(r[0] - l[0]);
        let mut openings = [0f32; 2];
        let (mut texture, mut darkness, mut sharpness) = (0f32, 0f32, 0f32);
        for (i, (center, mirror)) in [(l, false), (r, true)].into_iter().enumerate() {
            let crop = Self::crop(img, center, angle, CROP_IOD * iod, mirror);
            let input: Vec<f32> = crop
                .as_raw()
                .iter()
                .map(|&p| f32::from(p) / 255.0)
                .collect();
            let gray: Vec<f32> = crop
                .as_raw()
                .chunks_exact(3)
                .map(|p| {
                    0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
                })
                .collect();
            let tensor = Tensor::from_shape(&[1, SIDE, SIDE, 3], &input).map_err(err)?;
            let out = models::run(&self.plan, tensor).map_err(err)?;
            let contour = models::as_f32(&out[0]).map_err(err)?;
            if contour.len() < 16 * 3 {
                return Err(PipelineError::Inference {
                    stage: "eyes",
                    message: format!("eye contour has {} values", contour.len()),
                });
            }
            openings[i] = opening(contour);
            let (eye_mean, eye_std) = region_stats(&gray, 24..40, 16..48);
            let (cheek_mean, _) = region_stats(&gray, 54..62, 16..48);
            let cheek = cheek_mean.max(8.0);
            texture += eye_std / cheek / 2.0;
            sharpness += laplacian_variance(&gray, 16..48, 8..56) / 2.0;
            darkness += eye_mean / cheek / 2.0;
        }
        Ok(EyeObservation {
            opening: openings,
            texture,
            darkness,
            sharpness,
        })
    }
}
