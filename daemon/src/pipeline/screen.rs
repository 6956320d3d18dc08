//! Screen texture: a face replayed on a screen is seen through the screen's pixel grid, which
//! the camera's sensor aliases into moiré, a periodic pattern over the whole face that skin
//! does not have (the replay cue of Patel, Han and Jain, 2015). Measured as the sharpest peak
//! of the power spectrum of a patch of the face (cheeks, nose, under the eyes) over the median
//! power at the same radius.
//!
//! Invariant: the patch is taken from the frame's own pixels, never resampled (resampling
//! would blur the very aliasing it looks for); spatial frequencies of JPEG's 8x8 blocks are not
//! peaks (every MJPEG camera frame has them).

use std::sync::OnceLock;

use image::RgbImage;

use super::detect::Face;

/// The peak-to-median power ratio (log10) of the face patch's spectrum; `None` when the face
/// is too small for a 32x32 patch inside it.
pub fn moire(img: &RgbImage, face: &Face) -> Option<f32> {
    let [l, r, nose, ..] = face.landmarks;
    let iod = (r[0] - l[0]).hypot(r[1] - l[1]);
    let n = if 1.3 * iod >= 64.0 {
        64
    } else if 1.3 * iod >= 32.0 {
        32
    } else {
        return None;
    };
    // Centred between the eyes' midpoint and the nose tip.
    let cx = ((l[0] + r[0]) / 2.0 + nose[0]) / 2.0;
    let cy = ((l[1] + r[1]) / 2.0 + nose[1]) / 2.0;
    let x0 = (cx - n as f32 / 2.0).round();
    let y0 = (cy - n as f32 / 2.0).round();
    if x0 < 0.0
        || y0 < 0.0
        || x0 as u32 + n as u32 > img.width()
        || y0 as u32 + n as u32 > img.height()
    {
        return None;
    }
    let (x0, y0) = (x0 as u32, y0 as u32);
    let mut patch = vec![0f32; n * n];
    for y in 0..n {
        for x in 0..n {
            let p = img.get_pixel(x0 + x as u32, y0 + y as u32).0;
            patch[y * n + x] =
                0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
        }
    }
    let mean = patch.iter().sum::<f32>() / patch.len() as f32;
    let hann: Vec<f32> = (0..n)
        .map(|i| 0.5 - 0.5 * (std::f32::consts::TAU * i as f32 / n as f32).cos())
        .collect();
    for y in 0..n {
        for x in 0..n {
            patch[y * n + x] = (patch[y * n + x] - mean) * hann[x] * hann[y];
        }
    }
    let power = spectrum(&patch, n);
    // Per radius (in bins), the median power: the smooth spectrum of skin and shading.
    let half = n as i32 / 2;
    let block = n as i32 / 8;
    let radius = |u: i32, v: i32| f64::from(u * u + v * v).sqrt();
    let mut rings: Vec<Vec<f32>> = vec![Vec::new(); n / 2 + 2];
    let mut bins = Vec::new();
    for v in -half + 1..half {
        for u in 0..half {
            let rad = radius(u, v);
            if rad < f64::from(n as i32 / 10) || rad > f64::from(half - 1) {
                continue;
            }
            let jpeg = |f: i32| {
                let m = f.rem_euclid(block);
                m == 0 || m == 1 || m == block - 1
            };
            let p = power[(v.rem_euclid(n as i32) as usize) * n + u as usize];
            rings[rad.round() as usize].push(p);
            // A block frequency on either axis, with the other on a block frequency or ~0.
            let blocky = (jpeg(u) && (jpeg(v) || v.abs() <= 1)) || (jpeg(v) && u <= 1);
            if !blocky {
                bins.push((rad.round() as usize, p));
            }
        }
    }
    let medians: Vec<f32> = rings
        .iter_mut()
        .map(|r| {
            r.sort_by(f32::total_cmp);
            r.get(r.len() / 2).copied().unwrap_or(0.0)
        })
        .collect();
    let peak = bins
        .iter()
        .map(|&(rad, p)| p / medians[rad].max(1e-3))
        .fold(0f32, f32::max);
    (peak > 0.0).then(|| peak.log10())
}

/// `twiddle[(k * x) % n]` as a table indexed `x * n + k` (symmetric in `k` and `x`), for n = 32
/// and 64, built once.
fn twiddles(n: usize) -> &'static [(f32, f32)] {
    static T32: OnceLock<Vec<(f32, f32)>> = OnceLock::new();
    static T64: OnceLock<Vec<(f32, f32)>> = OnceLock::new();
    let build = || {
        let twiddle: Vec<(f32, f32)> = (0..n)
            .map(|k| {
                let a = std::f32::consts::TAU * k as f32 / n as f32;
                (a.cos(), -a.sin())
            })
            .collect();
        (0..n * n).map(|i| twiddle[(i / n * (i % n)) % n]).collect()
    };
    match n {
        32 => T32.get_or_init(build),
        64 => T64.get_or_init(build),
        _ => unreachable!("patches are 32 or 64 pixels"),
    }
}

/// Power spectrum of an n x n real patch by a separable DFT (n is 32 or 64): one 1-D DFT
/// over the rows, then the same over the columns. Each output frequency `k` sums
/// `a c - b d` and `a d + b c` over the inputs `x = 0..n` in order, `(a, b)` the input and
/// `(c, d)` the twiddle of `k x`; the loops run `x` outside and the outputs inside, which the
/// compiler vectorises, and each sum keeps its order (the bytes of the direct loop, kept in the
/// tests; that loop was 2 ms a frame for a 64-pixel patch).
fn spectrum(patch: &[f32], n: usize) -> Vec<f32> {
    let table = twiddles(n);
    // Rows: (re, im) of row y at frequency u, at y * n + u.
    let (mut re, mut im) = (vec![0f32; n * n], vec![0f32; n * n]);
    for y in 0..n {
        let (sr, si) = (&mut re[y * n..][..n], &mut im[y * n..][..n]);
        for x in 0..n {
            let (a, b) = (patch[y * n + x], 0f32);
            let tw = &table[x * n..][..n];
            for ((r, i), &(c, d)) in sr.iter_mut().zip(si.iter_mut()).zip(tw) {
                *r += a * c - b * d;
                *i += a * d + b * c;
            }
        }
    }
    // Columns: frequency v of column u, summed over y, every column at once.
    let mut power = vec![0f32; n * n];
    let (mut sr, mut si) = (vec![0f32; n], vec![0f32; n]);
    for v in 0..n {
        sr.fill(0.0);
        si.fill(0.0);
        for y in 0..n {
            let (c, d) = table[v * n + y];
            let (ar, ai) = (&re[y * n..][..n], &im[y * n..][..n]);
            for (((r, i), &a), &b) in sr.iter_mut().zip(si.iter_mut()).zip(ar).zip(ai) {
                *r += a * c - b * d;
                *i += a * d + b * c;
            }
        }
        for ((p, r), i) in power[v * n..][..n].iter_mut().zip(&sr).zip(&si) {
            *p = r * r + i * i;
        }
    }
    power
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(cx: f32, cy: f32) -> Face {
        Face {
            bbox: [cx - 60.0, cy - 70.0, cx + 60.0, cy + 80.0],
            score: 0.9,
            landmarks: [
                [cx - 30.0, cy - 10.0],
                [cx + 30.0, cy - 10.0],
                [cx, cy + 20.0],
                [cx - 22.0, cy + 45.0],
                [cx + 22.0, cy + 45.0],
            ],
        }
    }

    /// The spectrum as it was first written: one 1-D DFT per row, then per column, each output
    /// summed over its inputs in order, twiddles `(k x) % n`.
    fn direct_spectrum(patch: &[f32], n: usize) -> Vec<f32> {
        let twiddle: Vec<(f32, f32)> = (0..n)
            .map(|k| {
                let a = std::f32::consts::TAU * k as f32 / n as f32;
                (a.cos(), -a.sin())
            })
            .collect();
        let dft = |at: &dyn Fn(usize) -> (f32, f32), put: &mut dyn FnMut(usize, (f32, f32))| {
            for k in 0..n {
                let (mut sr, mut si) = (0f32, 0f32);
                for x in 0..n {
                    let (a, b) = at(x);
                    let (c, d) = twiddle[(k * x) % n];
                    sr += a * c - b * d;
                    si += a * d + b * c;
                }
                put(k, (sr, si));
            }
        };
        let mut rows = vec![(0f32, 0f32); n * n];
        for y in 0..n {
            dft(&|x| (patch[y * n + x], 0.0), &mut |u, v| {
                rows[y * n + u] = v
            });
        }
        let mut power = vec![0f32; n * n];
        for u in 0..n {
            dft(&|y| rows[y * n + u], &mut |v, (re, im)| {
                power[v * n + u] = re * re + im * im;
            });
        }
        power
    }

    /// The vectorised spectrum has the direct loop's bits, on windowed noise with a grid, on
    /// a constant patch and on one with signed zeros and large values.
    #[test]
    fn the_spectrum_has_the_direct_dfts_bits() {
        let mut seed = 11u32;
        let mut noise = move || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (seed >> 16) as f32 / 65536.0 - 0.5
        };
        for n in [32usize, 64] {
            let patches: Vec<Vec<f32>> = vec![
                (0..n * n)
                    .map(|i| 60.0 * noise() + 9.0 * ((i % n) as f32 * 2.9).cos())
                    .collect(),
                vec![17.25; n * n],
                (0..n * n)
                    .map(|i| match i % 5 {
                        0 => -0.0,
                        1 => 0.0,
                        2 => 1e6 * noise(),
                        _ => noise(),
                    })
                    .collect(),
            ];
            for (k, p) in patches.iter().enumerate() {
                let (got, want) = (spectrum(p, n), direct_spectrum(p, n));
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(bits(&got) == bits(&want), "patch {k} at n = {n}");
            }
        }
    }

    #[test]
    fn a_pixel_grid_seen_through_the_sensor_peaks_and_smooth_shading_does_not() {
        // Smooth shading with some noise: skin.
        let mut seed = 7u32;
        let mut noise = move || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (seed >> 16) as f32 / 65536.0 * 8.0 - 4.0
        };
        let skin = RgbImage::from_fn(320, 240, |x, y| {
            let v = 120.0 + 40.0 * ((x as f32 / 50.0).sin() + (y as f32 / 70.0).cos()) + noise();
            image::Rgb([v as u8; 3])
        });
        let f = face(160.0, 110.0);
        let smooth = moire(&skin, &f).unwrap();
        // The same through a grid of pitch 1.1 px (20 % deep).
        let grid = |c: f32| 0.5 + 0.5 * (std::f32::consts::TAU * c / 1.1).cos();
        let screen = RgbImage::from_fn(320, 240, |x, y| {
            let p = skin.get_pixel(x, y).0[0] as f32;
            let v = p * (1.0 - 0.2 * grid(x as f32) * grid(y as f32 * 1.05));
            image::Rgb([v as u8; 3])
        });
        let peaked = moire(&screen, &f).unwrap();
        assert!(smooth < 1.3 && peaked > 2.0, "{smooth} {peaked}");
        // A face too small for a patch: no measurement.
        let mut tiny = f.clone();
        tiny.landmarks[1][0] = tiny.landmarks[0][0] + 20.0;
        assert_eq!(moire(&skin, &tiny), None);
    }
}
