//! The detector's downscale: `image` 0.25's Triangle resize computed the same way (the same
//! weights, the same f32 operations in the same order, hence the same bytes), but row by row,
//! without its per-pixel bounds checks and unused fourth channel, and for a window of the result
//! alone (a tracked face's window needs a few rows and columns of the frame, not all of it).
//!
//! The liveness rules were measured on the exact output of `image::imageops::resize(..,
//! FilterType::Triangle)` (a box filter that moved the landmarks slightly added a false blink),
//! so this must not drift from it: `daemon/tests/pipeline_data.rs` compares the two byte for
//! byte on real frames at many sizes and windows.

use std::ops::Range;

use image::RgbImage;

/// One output index: its first source index and normalised weights.
struct Taps {
    left: usize,
    weights: Vec<f32>,
}

/// `x.clamp(0.0, 255.0).round() as u8` (round half away from zero; NaN gives 0), without the
/// libm call `round` is on baseline x86-64, which has no SSE4.1 rounding instruction: it was 3 %
/// of a door's frame (`perf`), once per output byte here, in `align.rs` and in `context.rs`.
/// Exact: on [0, 255] truncation is the floor, and `x - floor(x)` is exact for such an `x`.
#[inline]
pub(crate) fn round_u8(x: f32) -> u8 {
    let x = x.clamp(0.0, 255.0);
    let t = x as u8;
    if x - f32::from(t) >= 0.5 { t + 1 } else { t }
}

/// `image`'s `triangle_kernel`.
fn triangle(x: f32) -> f32 {
    if x.abs() < 1.0 { 1.0 - x.abs() } else { 0.0 }
}

/// The taps of output indices `range` when `src` samples become `dst` (as `image`'s
/// `vertical_sample` / `horizontal_sample` compute them; Triangle's support is 1).
fn taps(src: u32, dst: u32, range: Range<u32>) -> Vec<Taps> {
    let ratio = src as f32 / dst as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    let support = sratio;
    range
        .map(|out| {
            let centre = (out as f32 + 0.5) * ratio;
            let left = ((centre - support).floor() as i64).clamp(0, i64::from(src) - 1);
            let right = ((centre + support).ceil() as i64).clamp(left + 1, i64::from(src));
            let centre = centre - 0.5;
            let mut weights = Vec::with_capacity((right - left) as usize);
            let mut sum = 0.0f32;
            for i in left..right {
                let w = triangle((i as f32 - centre) / sratio);
                weights.push(w);
                sum += w;
            }
            for w in &mut weights {
                *w /= sum;
            }
            Taps {
                left: left as usize,
                weights,
            }
        })
        .collect()
}

/// `image::imageops::resize(img, nw, nh, FilterType::Triangle)`, byte for byte.
pub fn triangle_resize(img: &RgbImage, nw: u32, nh: u32) -> RgbImage {
    triangle_resize_window(img, nw, nh, 0, 0, nw, nh)
}

/// The `cw` x `ch` window at (`x0`, `y0`) of `triangle_resize(img, nw, nh)`, computing only its
/// pixels (the part of the window beyond the resized image is left black).
pub fn triangle_resize_window(
    img: &RgbImage,
    nw: u32,
    nh: u32,
    x0: u32,
    y0: u32,
    cw: u32,
    ch: u32,
) -> RgbImage {
    let mut out = RgbImage::new(cw, ch);
    let (w, h) = img.dimensions();
    let (x1, y1) = (x0.saturating_add(cw).min(nw), y0.saturating_add(ch).min(nh));
    if w == 0 || h == 0 || x0 >= x1 || y0 >= y1 {
        return out;
    }
    let (ow, src) = (cw as usize, img.as_raw());
    if (nw, nh) == (w, h) {
        // `image` copies an image asked for at its own size.
        for y in y0..y1 {
            let from = (y as usize * w as usize + x0 as usize) * 3;
            let to = (y - y0) as usize * ow * 3;
            let n = (x1 - x0) as usize * 3;
            out.as_mut()[to..to + n].copy_from_slice(&src[from..from + n]);
        }
        return out;
    }
    let cols = taps(w, nw, x0..x1);
    let rows = taps(h, nh, y0..y1);
    // The source columns the window's output columns read.
    let c0 = cols.first().map_or(0, |t| t.left);
    let c1 = cols
        .iter()
        .map(|t| t.left + t.weights.len())
        .max()
        .unwrap_or(c0);
    let stride = w as usize * 3;
    let mut line = vec![0f32; (c1 - c0) * 3];
    let dst = out.as_mut();
    for (r, row) in rows.iter().enumerate() {
        // Vertical pass (`image` runs it first, into f32): t = 0 + v0 w0 + v1 w1 + ...
        line.fill(0.0);
        for (k, &wt) in row.weights.iter().enumerate() {
            let y = row.left + k;
            let s = &src[y * stride + c0 * 3..y * stride + c1 * 3];
            for (t, &v) in line.iter_mut().zip(s) {
                *t += f32::from(v) * wt;
            }
        }
        // Horizontal pass, then clamp and round to the nearest (half away from zero).
        let o = &mut dst[r * ow * 3..];
        for (j, col) in cols.iter().enumerate() {
            for c in 0..3 {
                let mut t = 0.0f32;
                for (k, &wt) in col.weights.iter().enumerate() {
                    t += line[(col.left + k - c0) * 3 + c] * wt;
                }
                // `image`'s clamp and `FloatNearest` (the same for every finite value).
                o[j * 3 + c] = round_u8(t);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::round_u8;

    /// The rounding every output byte goes through gives what `f32::round` gave, on every
    /// value these paths can produce and around every half-way point.
    #[test]
    fn round_u8_is_libm_round_clamped() {
        let libm = |x: f32| x.clamp(0.0, 255.0).round() as u8;
        // Every 61st f32 from 0 to 260 and from -0 to -4 (~36 million values, every exponent
        // in those ranges).
        let positive = 0..=260.0f32.to_bits();
        let negative = (-0.0f32).to_bits()..=(-4.0f32).to_bits();
        for bits in positive.step_by(61).chain(negative.step_by(61)) {
            let x = f32::from_bits(bits);
            assert_eq!(round_u8(x), libm(x), "{x:e}");
        }
        // Each half-way point and its neighbours, the ends, and the odd values.
        for k in -2..=258 {
            let h = k as f32 + 0.5;
            for x in [h, h.next_down(), h.next_up(), k as f32] {
                assert_eq!(round_u8(x), libm(x), "{x:e}");
            }
        }
        for x in [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            f32::MAX,
            f32::MIN,
        ] {
            assert_eq!(round_u8(x), libm(x), "{x:e}");
        }
    }
}
