//! The 468-point face mesh (MediaPipe face landmark model): many points where the detector
//! gives 5, for the two liveness cues that need them: how the mouth moves (a talking face is
//! not a photo) and whether the face moves as one rigid plane (a photo or a screen does,
//! however it is tilted; a turning head does not).
//!
//! Invariant: the crop is the detector box's centre, side `CROP_SCALE` x its longer side,
//! rotated to the eye line, resampled to 192x192; points come back in source-image pixels.

use image::RgbImage;
use tract_onnx::prelude::*;

use super::PipelineError;
use super::align::warp_affine;
use super::detect::Face;
use super::models::{self, ModelError, ModelStore, Plan, Precision, Role};

const SIDE: usize = 192;
/// Crop side as a multiple of the detector box's longer side (MediaPipe's ROI scale).
const CROP_SCALE: f32 = 1.5;

/// Mesh points on rigid parts of the face (forehead, brows, eye corners, nose, cheekbones,
/// temples): no lips, jaw or eyelids, which move with speech and expression.
pub const RIGID: [usize; 52] = [
    10, 151, 9, 8, 109, 338, 67, 297, 103, 332, // forehead
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300, // brows
    33, 133, 362, 263, // eye corners
    168, 6, 197, 195, 5, 4, 1, 19, 98, 327, // nose
    116, 345, 117, 346, 50, 280, 101, 330, 36, 266, // cheeks
    127, 356, 234, 454, 93, 323, 162, 389, // temples and outline
];

/// Inner lips (upper, lower), outer eye corners.
const LIP_UPPER: usize = 13;
const LIP_LOWER: usize = 14;
const EYE_OUTER_R: usize = 33;
const EYE_OUTER_L: usize = 263;
/// Per eye (image-left = the subject's right, then image-right): outer and inner corner, and
/// three upper-lid points over three lower-lid points (MediaPipe's eye contour).
const LIDS: [([usize; 2], [usize; 3], [usize; 3]); 2] = [
    ([33, 133], [160, 159, 158], [144, 145, 153]),
    ([263, 362], [387, 386, 385], [373, 374, 380]),
];

/// The mesh of one face in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshObservation {
    /// The `RIGID` points, in image pixels.
    pub rigid: Vec<[f32; 2]>,
    /// Inner-lip distance over the outer eye-corner distance.
    pub mouth_open: f32,
    /// Eyelid opening of the image-left and image-right eye: mean lid distance over the eye's
    /// corner distance (the eye aspect ratio of the mesh's contour). Measured, not used for
    /// blinks: this mesh barely closes its eyes when the person does (ARCHITECTURE.md); kept
    /// in `facegate pad-eval --dump` so that the comparison can be re-run.
    pub eyelids: [f32; 2],
}

#[derive(Debug)]
pub struct MeshModel {
    plan: Plan,
}

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    (a[0] - b[0]).hypot(a[1] - b[1])
}

impl MeshModel {
    pub fn load(store: &ModelStore) -> Result<MeshModel, ModelError> {
        let entry = store.entry(Role::Mesh, Precision::Fp32)?;
        let plan = models::plan(store.parse(entry)?, &entry.name, &[1, SIDE, SIDE, 3])?;
        Ok(MeshModel { plan })
    }

    pub fn observe(&self, img: &RgbImage, face: &Face) -> Result<MeshObservation, PipelineError> {
        let err = |e: TractError| PipelineError::Inference {
            stage: "mesh",
            message: format!("{e:#}"),
        };
        let [x1, y1, x2, y2] = face.bbox;
        let side = CROP_SCALE * (x2 - x1).max(y2 - y1);
        if side < 8.0 {
            return Err(PipelineError::DegenerateLandmarks);
        }
        let center = [(x1 + x2) / 2.0, (y1 + y2) / 2.0];
        let [l, r] = [face.landmarks[0], face.landmarks[1]];
        let angle = (r[1] - l[1]).atan2(r[0] - l[0]);
        let s = side / SIDE as f32;
        let (c, sn) = (angle.cos(), angle.sin());
        // image = center + R(angle) * ((u - 96) * s, (v - 96) * s)
        let (a, b, d, e) = (c * s, -sn * s, sn * s, c * s);
        let half = SIDE as f32 / 2.0;
        let m = [
            a,
            b,
            center[0] - half * (a + b),
            d,
            e,
            center[1] - half * (d + e),
        ];
        let crop = warp_affine(img, m, SIDE as u32, SIDE as u32);
        let input: Vec<f32> = crop
            .as_raw()
            .iter()
            .map(|&p| f32::from(p) / 255.0)
            .collect();
        let tensor = Tensor::from_shape(&[1, SIDE, SIDE, 3], &input).map_err(err)?;
        let out = models::run(&self.plan, tensor).map_err(err)?;
        let pts = match out.first() {
            Some(p) => models::as_f32(p).map_err(err)?,
            None => {
                return Err(PipelineError::Inference {
                    stage: "mesh",
                    message: "the mesh model gave no output".to_owned(),
                });
            }
        };
        if pts.len() < 468 * 3 {
            return Err(PipelineError::Inference {
                stage: "mesh",
                message: format!("the mesh has {} values", pts.len()),
            });
        }
        let point = |i: usize| {
            let (u, v) = (pts[i * 3], pts[i * 3 + 1]);
            [m[0] * u + m[1] * v + m[2], m[3] * u + m[4] * v + m[5]]
        };
        let eyes = dist(point(EYE_OUTER_R), point(EYE_OUTER_L)).max(1e-3);
        let eyelids = LIDS.map(|([a, b], upper, lower)| {
            let lids: f32 = upper
                .iter()
                .zip(&lower)
                .map(|(&u, &l)| dist(point(u), point(l)))
                .sum();
            lids / (3.0 * dist(point(a), point(b)).max(1e-3))
        });
        Ok(MeshObservation {
            rigid: RIGID.iter().map(|&i| point(i)).collect(),
            mouth_open: dist(point(LIP_UPPER), point(LIP_LOWER)) / eyes,
            eyelids,
        })
    }
}

/// Least-squares homography (h33 = 1) mapping `src` onto `dst`, in coordinates centred and
/// scaled by `src`'s own spread; the RMS residual in units of that spread, and the anisotropy of
/// its linear part (larger singular value over the smaller, minus 1: how much a plane was
/// foreshortened). `None` when degenerate.
pub fn plane_fit(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Option<PlaneFit> {
    let n = src.len().min(dst.len());
    if n < 6 {
        return None;
    }
    let (ns, nd) = (normalised(&src[..n]), normalised(&dst[..n]));
    let h = dlt(&ns, &nd)?;
    let mut sq = 0f64;
    for (p, q) in ns.iter().zip(&nd) {
        let w = h[6] * p[0] + h[7] * p[1] + 1.0;
        if w.abs() < 1e-9 {
            return None;
        }
        let u = (h[0] * p[0] + h[1] * p[1] + h[2]) / w;
        let v = (h[3] * p[0] + h[4] * p[1] + h[5]) / w;
        sq += (u - q[0]).powi(2) + (v - q[1]).powi(2);
    }
    let rms = (sq / n as f64).sqrt();
    // Singular values of the linear part [[h0 h1] [h3 h4]].
    let (a, b, c, d) = (h[0], h[1], h[3], h[4]);
    let s1 = a * a + b * b + c * c + d * d;
    let det = a * d - b * c;
    let disc = (s1 * s1 - 4.0 * det * det).max(0.0).sqrt();
    let big = ((s1 + disc) / 2.0).sqrt();
    let small = ((s1 - disc) / 2.0).max(0.0).sqrt();
    if small < 1e-9 || !rms.is_finite() {
        return None;
    }
    Some(PlaneFit {
        residual: rms as f32,
        anisotropy: (big / small - 1.0) as f32,
        perspective: (h[6].hypot(h[7])) as f32,
    })
}

/// The linear DLT with h33 = 1 (least squares, normal equations) mapping `ns` onto `nd`.
fn dlt(ns: &[[f64; 2]], nd: &[[f64; 2]]) -> Option<[f64; 8]> {
    let mut ata = [[0f64; 8]; 8];
    let mut atb = [0f64; 8];
    for (p, q) in ns.iter().zip(nd) {
        let (x, y, u, v) = (p[0], p[1], q[0], q[1]);
        add_row(
            &mut ata,
            &mut atb,
            [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y],
            u,
        );
        add_row(
            &mut ata,
            &mut atb,
            [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y],
            v,
        );
    }
    solve(ata, atb)
}

/// A plane's motion between two frames: the least-squares homography through point matches,
/// in coordinates centred and scaled by each point set's spread (as `plane_fit`'s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography {
    h: [f64; 8],
    src: [f64; 3],
    dst: [f64; 3],
}

impl Homography {
    /// The homography mapping `src` onto `dst` best; `None` with fewer than 6 points or when
    /// degenerate.
    pub fn estimate(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Option<Homography> {
        let n = src.len().min(dst.len());
        if n < 6 {
            return None;
        }
        let h = dlt(&normalised(&src[..n]), &normalised(&dst[..n]))?;
        h.iter().all(|c| c.is_finite()).then(|| Homography {
            h,
            src: spread(&src[..n]),
            dst: spread(&dst[..n]),
        })
    }

    /// Where the plane carries `p`; `None` on (or beyond) its horizon.
    pub fn apply(&self, [x, y]: [f32; 2]) -> Option<[f32; 2]> {
        let h = &self.h;
        let x = (f64::from(x) - self.src[0]) / self.src[2];
        let y = (f64::from(y) - self.src[1]) / self.src[2];
        let w = h[6] * x + h[7] * y + 1.0;
        if w < 1e-6 {
            return None;
        }
        let u = (h[0] * x + h[1] * y + h[2]) / w;
        let v = (h[3] * x + h[4] * y + h[5]) / w;
        Some([
            (u * self.dst[2] + self.dst[0]) as f32,
            (v * self.dst[2] + self.dst[1]) as f32,
        ])
    }
}

/// How well one plane explains the motion of the rigid points between two frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlaneFit {
    /// RMS residual after the best homography, in units of the point spread.
    pub residual: f32,
    /// Foreshortening of the best homography (0 = none).
    pub anisotropy: f32,
    /// Size of its projective terms.
    pub perspective: f32,
}

/// The mean of the points and their RMS distance from it: [x, y, spread].
pub(super) fn spread(p: &[[f32; 2]]) -> [f64; 3] {
    let n = p.len().max(1) as f64;
    let (mx, my) = p.iter().fold((0f64, 0f64), |(x, y), q| {
        (x + f64::from(q[0]), y + f64::from(q[1]))
    });
    let (mx, my) = (mx / n, my / n);
    let s = (p
        .iter()
        .map(|q| (f64::from(q[0]) - mx).powi(2) + (f64::from(q[1]) - my).powi(2))
        .sum::<f64>()
        / n)
        .sqrt()
        .max(1e-9);
    [mx, my, s]
}

/// The points centred on their mean and scaled to unit RMS distance from it.
pub(super) fn normalised(p: &[[f32; 2]]) -> Vec<[f64; 2]> {
    let [mx, my, s] = spread(p);
    p.iter()
        .map(|q| [(f64::from(q[0]) - mx) / s, (f64::from(q[1]) - my) / s])
        .collect()
}

/// Adds one equation `row . h = b` of a least-squares system to its normal equations.
pub(super) fn add_row<const N: usize>(
    ata: &mut [[f64; N]; N],
    atb: &mut [f64; N],
    row: [f64; N],
    b: f64,
) {
    for i in 0..N {
        atb[i] += row[i] * b;
        for j in 0..N {
            ata[i][j] += row[i] * row[j];
        }
    }
}

/// Solves an NxN system by Gaussian elimination with partial pivoting.
pub(super) fn solve<const N: usize>(mut a: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for r in 0..N {
            if r != col {
                let f = a[r][col] / a[col][col];
                if f != 0.0 {
                    let pivot_row = a[col];
                    for (x, p) in a[r].iter_mut().zip(pivot_row).skip(col) {
                        *x -= f * p;
                    }
                    b[r] -= f * b[col];
                }
            }
        }
    }
    Some(std::array::from_fn(|i| b[i] / a[i][i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Vec<[f32; 2]> {
        (0..60)
            .map(|i| {
                let (x, y) = ((i % 8) as f32 * 10.0, (i / 8) as f32 * 12.0);
                [100.0 + x, 80.0 + y]
            })
            .collect()
    }

    #[test]
    fn a_tilted_plane_fits_exactly_and_a_bulge_does_not() {
        let src = grid();
        // A plane under perspective: any homography.
        let h = [0.9f32, 0.1, 5.0, -0.05, 1.1, -3.0, 0.0008, -0.0004];
        let dst: Vec<[f32; 2]> = src
            .iter()
            .map(|&[x, y]| {
                let w = h[6] * x + h[7] * y + 1.0;
                [
                    (h[0] * x + h[1] * y + h[2]) / w,
                    (h[3] * x + h[4] * y + h[5]) / w,
                ]
            })
            .collect();
        let fit = plane_fit(&src, &dst).unwrap();
        assert!(fit.residual < 1e-4, "{fit:?}");
        assert!(fit.anisotropy > 0.1, "{fit:?}");
        // The same plane's homography carries points far outside the fitted ones too.
        let plane = Homography::estimate(&src, &dst).unwrap();
        for p in [[0.0f32, 0.0], [400.0, 20.0], [150.0, 300.0]] {
            let w = h[6] * p[0] + h[7] * p[1] + 1.0;
            let want = [
                (h[0] * p[0] + h[1] * p[1] + h[2]) / w,
                (h[3] * p[0] + h[4] * p[1] + h[5]) / w,
            ];
            let got = plane.apply(p).unwrap();
            assert!(
                (got[0] - want[0]).hypot(got[1] - want[1]) < 0.05,
                "{got:?} {want:?}"
            );
        }
        // Points off the plane (a nose) shift sideways when the head turns.
        let bulge: Vec<[f32; 2]> = src
            .iter()
            .map(|&[x, y]| {
                let depth = 1.0 - ((x - 135.0).powi(2) + (y - 110.0).powi(2)) / 3000.0;
                [x + 8.0 * depth.max(0.0), y]
            })
            .collect();
        let fit = plane_fit(&src, &bulge).unwrap();
        assert!(fit.residual > 0.02, "{fit:?}");
    }
}
