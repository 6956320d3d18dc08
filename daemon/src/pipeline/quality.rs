//! Face quality in [0, 1] from size, sharpness, exposure and pose, each reported.
//!
//! Invariant: every component and the score are finite and within [0, 1]; the score is the
//! geometric mean of the components, so any one bad component pulls it down.

use image::RgbImage;
use serde::Deserialize;

use super::detect::Face;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityConfig {
    pub min_face_px: f32,
    pub good_face_px: f32,
    pub sharpness_scale: f32,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            min_face_px: 40.0,
            good_face_px: 112.0,
            sharpness_scale: 60.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    pub score: f32,
    /// Face width against `min_face_px..good_face_px`.
    pub size: f32,
    /// Variance of the Laplacian of the aligned crop, mapped by `1 - exp(-v / scale)`.
    pub sharpness: f32,
    /// Mean luminance near mid-grey and few clipped pixels.
    pub exposure: f32,
    /// Frontal: nose centred between the eyes (yaw), at the usual height (pitch), level eyes (roll).
    pub pose: f32,
}

/// Inner region of the aligned crop: the face, without background or warp borders.
const INNER: std::ops::Range<u32> = 20..92;

pub fn assess(face: &Face, aligned: &RgbImage, cfg: &QualityConfig) -> Quality {
    let size = unit((face.width() - cfg.min_face_px) / (cfg.good_face_px - cfg.min_face_px));
    let gray = luminance(aligned);
    let side = aligned.width();
    let sharpness = unit(1.0 - (-laplacian_variance(&gray, side) / cfg.sharpness_scale).exp());
    let exposure = exposure(&gray, side);
    let pose = pose(&face.landmarks);
    let score = (size * sharpness * exposure * pose).max(0.0).powf(0.25);
    Quality {
        score: unit(score),
        size,
        sharpness,
        exposure,
        pose,
    }
}

fn unit(x: f32) -> f32 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

fn luminance(img: &RgbImage) -> Vec<f32> {
    img.pixels()
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect()
}

pub fn laplacian_variance(gray: &[f32], side: u32) -> f32 {
    let s = side as usize;
    let (lo, hi) = (
        INNER.start as usize,
        (INNER.end as usize).min(s.saturating_sub(1)),
    );
    let mut values = Vec::with_capacity((hi - lo) * (hi - lo));
    for y in lo.max(1)..hi {
        for x in lo.max(1)..hi {
            let c = gray[y * s + x];
            let l = gray[y * s + x - 1]
                + gray[y * s + x + 1]
                + gray[(y - 1) * s + x]
                + gray[(y + 1) * s + x]
                - 4.0 * c;
            values.push(l);
        }
    }
    if values.is_empty() {
        return 0.0;
    }
    let n = values.len() as f32;
    let mean = values.iter().sum::<f32>() / n;
    values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n
}

fn exposure(gray: &[f32], side: u32) -> f32 {
    let s = side as usize;
    let (mut sum, mut clipped, mut n) = (0f32, 0u32, 0u32);
    for y in INNER {
        for x in INNER {
            let Some(&v) = gray.get(y as usize * s + x as usize) else {
                continue;
            };
            sum += v;
            n += 1;
            if !(12.0..=243.0).contains(&v) {
                clipped += 1;
            }
        }
    }
    if n == 0 {
        return 0.0;
    }
    let mean = sum / n as f32;
    let clipped = clipped as f32 / n as f32;
    unit(1.0 - ((mean - 128.0).abs() - 40.0).max(0.0) / 70.0) * unit(1.0 - 2.0 * clipped)
}

fn pose(lm: &[[f32; 2]; 5]) -> f32 {
    let [el, er, nose, ml, mr] = *lm;
    let e = [er[0] - el[0], er[1] - el[1]];
    let d = e[0].hypot(e[1]);
    if d < 1e-3 {
        return 0.0;
    }
    let ex = [e[0] / d, e[1] / d];
    let ey = [-ex[1], ex[0]];
    let mid = [(el[0] + er[0]) / 2.0, (el[1] + er[1]) / 2.0];
    let mouth = [(ml[0] + mr[0]) / 2.0, (ml[1] + mr[1]) / 2.0];
    let along = |p: [f32; 2], axis: [f32; 2]| (p[0] - mid[0]) * axis[0] + (p[1] - mid[1]) * axis[1];
    // Yaw: the nose leaves the eyes' midline (0 frontal, ~0.5 in profile).
    let yaw = along(nose, ex).abs() / d;
    // Pitch: nose height over mouth height below the eye line (template: 0.49).
    let mouth_drop = along(mouth, ey);
    let pitch = if mouth_drop > 1e-3 {
        along(nose, ey) / mouth_drop
    } else {
        0.0
    };
    let roll = ex[1].atan2(ex[0]).to_degrees().abs();
    unit(1.0 - yaw / 0.35)
        * unit(1.0 - (pitch - 0.49).abs() / 0.3)
        * unit(1.0 - (roll - 20.0).max(0.0) / 40.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::align::ARCFACE_112;

    fn face(width: f32, landmarks: [[f32; 2]; 5]) -> Face {
        Face {
            bbox: [0.0, 0.0, width, width],
            score: 1.0,
            landmarks,
        }
    }

    #[test]
    fn template_pose_is_frontal_and_profile_is_not() {
        assert!(pose(&ARCFACE_112) > 0.95);
        let mut profile = ARCFACE_112;
        profile[2][0] += 14.0; // nose 0.4 eye-distances off the midline
        assert!(pose(&profile) < 0.1, "{}", pose(&profile));
    }

    #[test]
    fn flat_grey_crop_is_well_exposed_but_not_sharp() {
        let flat = RgbImage::from_pixel(112, 112, image::Rgb([128, 128, 128]));
        let q = assess(&face(200.0, ARCFACE_112), &flat, &QualityConfig::default());
        assert!(q.exposure > 0.99);
        assert!(q.sharpness < 0.01);
        assert!(q.size == 1.0);
        assert!(q.score < 0.2, "a blank crop must not pass quality: {q:?}");
        let dark = RgbImage::from_pixel(112, 112, image::Rgb([5, 5, 5]));
        let q = assess(&face(200.0, ARCFACE_112), &dark, &QualityConfig::default());
        assert_eq!(q.exposure, 0.0);
    }

    #[test]
    fn small_faces_score_low_on_size() {
        let img = RgbImage::new(112, 112);
        let q = assess(&face(30.0, ARCFACE_112), &img, &QualityConfig::default());
        assert_eq!(q.size, 0.0);
        assert!((0.0..=1.0).contains(&q.score));
    }
}
