//! 5-point similarity alignment onto the 112x112 ArcFace template, and the bilinear warp.
//!
//! Invariant: the transform is the least-squares similarity (rotation, uniform scale,
//! translation) from the detected landmarks to the template; no reflection, no shear.

use image::{Rgb, RgbImage};

use super::resize::round_u8;

/// Side of the aligned crop the embedder expects.
pub const ALIGNED_SIDE: u32 = 112;

/// insightface's ArcFace template for a 112x112 crop, in the detector's landmark order.
pub const ARCFACE_112: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// `u = a*x - b*y + tx`, `v = b*x + a*y + ty`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f32,
    pub b: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Similarity {
    /// Least-squares similarity mapping `src` onto `dst` (closed form, Umeyama without
    /// reflection). `None` when the source points are (nearly) all the same point.
    pub fn estimate(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Option<Similarity> {
        let n = src.len().min(dst.len());
        if n < 2 {
            return None;
        }
        let nf = n as f64;
        let mean = |p: &[[f32; 2]]| {
            let (sx, sy) = p[..n].iter().fold((0f64, 0f64), |(x, y), q| {
                (x + f64::from(q[0]), y + f64::from(q[1]))
            });
            (sx / nf, sy / nf)
        };
        let (mx, my) = mean(src);
        let (mu, mv) = mean(dst);
        let (mut num_a, mut num_b, mut den) = (0f64, 0f64, 0f64);
        for (s, d) in src[..n].iter().zip(&dst[..n]) {
            let (x, y) = (f64::from(s[0]) - mx, f64::from(s[1]) - my);
            let (u, v) = (f64::from(d[0]) - mu, f64::from(d[1]) - mv);
            num_a += x * u + y * v;
            num_b += x * v - y * u;
            den += x * x + y * y;
        }
        if den < 1e-9 {
            return None;
        }
        let (a, b) = (num_a / den, num_b / den);
        let tx = mu - (a * mx - b * my);
        let ty = mv - (b * mx + a * my);
        Some(Similarity {
            a: a as f32,
            b: b as f32,
            tx: tx as f32,
            ty: ty as f32,
        })
    }

    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        [
            self.a * p[0] - self.b * p[1] + self.tx,
            self.b * p[0] + self.a * p[1] + self.ty,
        ]
    }

    pub fn scale(&self) -> f32 {
        self.a.hypot(self.b)
    }

    pub fn inverse(&self) -> Similarity {
        let k = self.a * self.a + self.b * self.b;
        let (a, b) = (self.a / k, -self.b / k);
        Similarity {
            a,
            b,
            tx: -(a * self.tx - b * self.ty),
            ty: -(b * self.tx + a * self.ty),
        }
    }
}

/// The crop `dst_side x dst_side` whose pixel (u, v) samples `img` at `t⁻¹(u, v)` bilinearly;
/// outside the image is black.
pub fn warp(img: &RgbImage, t: &Similarity, dst_side: u32) -> RgbImage {
    let inv = t.inverse();
    sample(img, dst_side, dst_side, |u, v| inv.apply([u, v]))
}

/// An affine map from output pixels to source pixels: `x = m[0] u + m[1] v + m[2]`,
/// `y = m[3] u + m[4] v + m[5]` (reflections allowed: eye crops are mirrored).
pub fn warp_affine(img: &RgbImage, m: [f32; 6], w: u32, h: u32) -> RgbImage {
    sample(img, w, h, |u, v| {
        [m[0] * u + m[1] * v + m[2], m[3] * u + m[4] * v + m[5]]
    })
}

/// The `w x h` image whose pixel (u, v) samples `img` bilinearly at `map(u, v)`; black outside.
pub fn sample(
    img: &RgbImage,
    w_out: u32,
    h_out: u32,
    map: impl Fn(f32, f32) -> [f32; 2],
) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let raw = img.as_raw();
    let px = |x: i64, y: i64| -> [f32; 3] {
        if x < 0 || y < 0 || x >= w || y >= h {
            return [0.0; 3];
        }
        let i = ((y * w + x) * 3) as usize;
        [
            f32::from(raw[i]),
            f32::from(raw[i + 1]),
            f32::from(raw[i + 2]),
        ]
    };
    RgbImage::from_fn(w_out, h_out, |u, v| {
        let [x, y] = map(u as f32, v as f32);
        if !x.is_finite() || !y.is_finite() {
            return Rgb([0, 0, 0]);
        }
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let (p00, p10, p01, p11) = (
            px(x0, y0),
            px(x0 + 1, y0),
            px(x0, y0 + 1),
            px(x0 + 1, y0 + 1),
        );
        let mut out = [0u8; 3];
        for c in 0..3 {
            let top = p00[c] + (p10[c] - p00[c]) * fx;
            let bottom = p01[c] + (p11[c] - p01[c]) * fx;
            out[c] = round_u8(top + (bottom - top) * fy);
        }
        Rgb(out)
    })
}

/// A box crop resized to `w x h` (stretched), e.g. a face for a classifier.
pub fn crop_resize(img: &RgbImage, bbox: [f32; 4], w: u32, h: u32) -> RgbImage {
    let (sx, sy) = (
        (bbox[2] - bbox[0]) / w as f32,
        (bbox[3] - bbox[1]) / h as f32,
    );
    warp_affine(
        img,
        [
            sx,
            0.0,
            bbox[0] + 0.5 * sx - 0.5,
            0.0,
            sy,
            bbox[1] + 0.5 * sy - 0.5,
        ],
        w,
        h,
    )
}

/// The whole image letterboxed (centred, black bars) into a `side x side` square; returns the
/// square and the map back: source = (u * scale - pad_x, v * scale - pad_y).
pub fn letterbox(img: &RgbImage, side: u32) -> (RgbImage, [f32; 3]) {
    let big = img.width().max(img.height()) as f32;
    let scale = big / side as f32;
    let pad_x = (big - img.width() as f32) / 2.0;
    let pad_y = (big - img.height() as f32) / 2.0;
    let out = warp_affine(
        img,
        [
            scale,
            0.0,
            0.5 * scale - 0.5 - pad_x,
            0.0,
            scale,
            0.5 * scale - 0.5 - pad_y,
        ],
        side,
        side,
    );
    (out, [scale, pad_x, pad_y])
}

/// Aligns a face given its 5 landmarks. `None` for degenerate landmarks.
pub fn align(img: &RgbImage, landmarks: &[[f32; 2]; 5]) -> Option<(Similarity, RgbImage)> {
    let t = Similarity::estimate(landmarks, &ARCFACE_112)?;
    Some((t, warp(img, &t, ALIGNED_SIDE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_an_exact_similarity_within_a_pixel() {
        // Place the template in a frame rotated 23°, scaled 2.7x and shifted.
        let (ang, s) = (23f32.to_radians(), 2.7f32);
        let truth = Similarity {
            a: s * ang.cos(),
            b: s * ang.sin(),
            tx: 311.0,
            ty: 97.0,
        };
        let src: Vec<[f32; 2]> = ARCFACE_112.iter().map(|&p| truth.apply(p)).collect();
        let t = Similarity::estimate(&src, &ARCFACE_112).unwrap();
        for (p, q) in src.iter().zip(ARCFACE_112) {
            let m = t.apply(*p);
            assert!((m[0] - q[0]).hypot(m[1] - q[1]) < 1.0, "{m:?} vs {q:?}");
        }
        assert!((t.scale() - 1.0 / s).abs() < 1e-4);
    }

    #[test]
    fn inverse_round_trips() {
        let t = Similarity {
            a: 0.8,
            b: -0.3,
            tx: 5.0,
            ty: -7.0,
        };
        let p = t.inverse().apply(t.apply([12.5, -3.25]));
        assert!((p[0] - 12.5).abs() < 1e-4 && (p[1] + 3.25).abs() < 1e-4);
    }

    #[test]
    fn degenerate_points_are_refused() {
        assert!(Similarity::estimate(&[[3.0, 3.0]; 5], &ARCFACE_112).is_none());
    }

    #[test]
    fn warp_moves_a_marked_pixel_to_its_template_position() {
        // A white 3x3 dot at the source position of the nose lands on the template nose.
        let t = Similarity {
            a: 0.5,
            b: 0.1,
            tx: -20.0,
            ty: 4.0,
        };
        let nose_src = t.inverse().apply(ARCFACE_112[2]);
        let mut img = RgbImage::new(400, 400);
        for dy in -3..=3 {
            for dx in -3..=3 {
                let (x, y) = (
                    (nose_src[0] as i32 + dx) as u32,
                    (nose_src[1] as i32 + dy) as u32,
                );
                img.put_pixel(x, y, Rgb([255, 255, 255]));
            }
        }
        let crop = warp(&img, &t, ALIGNED_SIDE);
        let [nx, ny] = ARCFACE_112[2];
        assert_eq!(crop.get_pixel(nx.round() as u32, ny.round() as u32)[0], 255);
        assert_eq!(crop.get_pixel(10, 10)[0], 0);
    }
}
