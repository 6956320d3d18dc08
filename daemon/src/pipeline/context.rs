//! Context motion: does the scene around a face stay where it was (a person before a fixed
//! camera: the wall behind them does not move when they do) or move with the face (a print or
//! a screen held up: the sheet around the face, and whatever it shows beside the face, moves
//! with it)? This is the face/background motion test of Anjos & Marcel (2011, the PRINT-ATTACK
//! baseline), made a two-hypothesis test per block: between a frame and the one `GAP` frames
//! before it, a block of the ring around the face is compared with the same place in the old
//! frame (static) and with the place the face's own motion carries it from (with the face).
//!
//! Invariant: pure arithmetic on two luminance images and two sets of landmarks; a block votes
//! only where it has texture and the two hypotheses predict clearly different content, so a
//! still face or a plain wall gives no votes either way.

use image::RgbImage;

use super::align::Similarity;
use super::mesh::Homography;
use super::resize::round_u8;

/// Luminance at half resolution (a 2x2 box), enough for motion of a few pixels; one byte per
/// pixel (77 KB for a 640x480 frame; a stream keeps `GAP + 1` of them).
#[derive(Debug, Clone)]
pub struct Gray {
    w: usize,
    h: usize,
    data: Vec<u8>,
}

impl Gray {
    /// The luminance of `img`, written into `reuse`'s buffer when given (a stream recycles the
    /// oldest frame's).
    pub fn from_rgb(img: &RgbImage, reuse: Option<Gray>) -> Gray {
        let (w, h) = ((img.width() / 2) as usize, (img.height() / 2) as usize);
        let raw = img.as_raw();
        let stride = img.width() as usize * 3;
        let mut data = reuse.map(|g| g.data).unwrap_or_default();
        data.clear();
        data.resize(w * h, 0);
        if w == 0 {
            return Gray { w, h, data };
        }
        // Row by row in passes the compiler vectorises (it was 1-4 ms a frame as one scalar
        // loop): each source pixel's luminance, then each 2x2 box. The same f32 operations in
        // the same order as `(l(x, y) + l(x + 1, y) + l(x, y + 1) + l(x + 1, y + 1)) / 4` with
        // `l = 0.299 r + 0.587 g + 0.114 b`, hence the same bytes.
        let (mut top, mut bottom) = (vec![0f32; 2 * w], vec![0f32; 2 * w]);
        for (y, out) in data.chunks_exact_mut(w).enumerate() {
            let row = |k: usize| &raw[k * stride..k * stride + 6 * w];
            luma_row(row(2 * y), &mut top);
            luma_row(row(2 * y + 1), &mut bottom);
            for ((o, t), b) in out
                .iter_mut()
                .zip(top.chunks_exact(2))
                .zip(bottom.chunks_exact(2))
            {
                *o = round_u8((t[0] + t[1] + b[0] + b[1]) / 4.0);
            }
        }
        Gray { w, h, data }
    }

    /// Width and height (half the frame's, rounded down).
    pub fn dimensions(&self) -> (usize, usize) {
        (self.w, self.h)
    }

    /// The luminance bytes, row after row.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Bilinear sample at half-resolution coordinates; `None` outside.
    pub(super) fn at(&self, x: f32, y: f32) -> Option<f32> {
        let (w1, h1) = (
            self.w.saturating_sub(1) as f32,
            self.h.saturating_sub(1) as f32,
        );
        if !(x >= 0.0 && y >= 0.0 && x < w1 && y < h1) {
            return None;
        }
        let (x0, y0) = (x as usize, y as usize);
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let i = y0 * self.w + x0;
        let (a, b, c, d) = (
            f32::from(self.data[i]),
            f32::from(self.data[i + 1]),
            f32::from(self.data[i + self.w]),
            f32::from(self.data[i + self.w + 1]),
        );
        let top = a + (b - a) * fx;
        let bottom = c + (d - c) * fx;
        Some(top + (bottom - top) * fy)
    }
}

/// `0.299 v`, `0.587 v` and `0.114 v` for every byte value `v`: the products the luminance
/// formula computes (exact f32 products, so a lookup gives the same values), 1.4x faster than
/// converting and multiplying each channel.
const LUMA: [[f32; 256]; 3] = {
    let mut t = [[0f32; 256]; 3];
    let mut v = 0;
    while v < 256 {
        t[0][v] = 0.299 * v as f32;
        t[1][v] = 0.587 * v as f32;
        t[2][v] = 0.114 * v as f32;
        v += 1;
    }
    t
};

/// Each RGB pixel's luminance, `0.299 r + 0.587 g + 0.114 b` in that order.
pub(super) fn luma_row(rgb: &[u8], out: &mut [f32]) {
    let [r, g, b] = &LUMA;
    for (p, o) in rgb.chunks_exact(3).zip(out.iter_mut()) {
        *o = r[usize::from(p[0])] + g[usize::from(p[1])] + b[usize::from(p[2])];
    }
}

/// Frames between the two compared (0.3 s at 10 fps: a held sheet sways a few pixels).
pub const GAP: usize = 3;

/// The votes of one frame pair.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ContextObservation {
    /// Blocks whose content stayed in place.
    pub still: u32,
    /// Blocks whose content moved with the face.
    pub with_face: u32,
    /// Of those, the blocks beyond a head's reach (`HEAD_REACH`) that stayed and that moved
    /// with the face. Near the face a real head moves blocks with it (hair, ears, a hand on the
    /// cheek); out there only a sheet or a screen does.
    pub far_still: u32,
    pub far_with_face: u32,
}

/// Beyond a head's reach: blocks whose centre is at least this many face widths beside the
/// face's centre, or this many face heights above it. Measured on 2026-12-05: on
/// headtrackr_cap4 (a head that turns and nods) and pexels_eyes_hand (a hand at the face), the
/// blocks that moved with the face were within 0.9 face widths of its centre, beside the
/// face, and within 0.9 face heights above it (hair, ears, the hand); on a print filling the
/// view they were everywhere.
pub const HEAD_REACH: f32 = 0.9;

/// Block side, half-resolution pixels.
const BLOCK: usize = 6;
/// A hypothesis wins a block when its error is under this fraction of the other's.
pub(super) const MARGIN: f32 = 0.7;

/// How the face moved, now -> then (half-resolution pixels): where a point moving with it
/// comes from.
enum Back {
    /// The similarity of the face's landmarks.
    Landmarks(Similarity),
    /// The plane of the face's own texture (`flow::observe`; full-resolution pixels), which
    /// carries a print's whole sheet, however tilted, where a similarity misses its far parts.
    Plane(Homography),
}

impl Back {
    fn apply(&self, [x, y]: [f32; 2]) -> [f32; 2] {
        match self {
            Back::Landmarks(s) => s.apply([x, y]),
            // Off the plane's horizon: no pixel (outside every frame).
            Back::Plane(h) => h
                .apply([2.0 * x, 2.0 * y])
                .map_or([f32::NAN; 2], |[u, v]| [u / 2.0, v / 2.0]),
        }
    }
}

/// Compares the ring around the face (box `bbox_now`, full-resolution pixels) in `now` with
/// `prev`, given the face's landmarks in both frames and, when known, the face plane's motion
/// back from `now` to `prev` (`plane`, full-resolution pixels): a sheet around a printed face
/// moves as that plane does, so that is the "with the face" hypothesis; without it, the
/// landmarks' similarity is.
pub fn observe(
    prev: &Gray,
    now: &Gray,
    landmarks_prev: &[[f32; 2]; 5],
    landmarks_now: &[[f32; 2]; 5],
    bbox_now: [f32; 4],
    plane: Option<&Homography>,
) -> Option<ContextObservation> {
    let half = |l: &[[f32; 2]; 5]| l.map(|[x, y]| [x / 2.0, y / 2.0]);
    let (lp, ln) = (half(landmarks_prev), half(landmarks_now));
    // now -> prev: where the face's motion brings each point from.
    let back = match plane {
        Some(h) => Back::Plane(*h),
        None => Back::Landmarks(Similarity::estimate(&ln, &lp)?),
    };
    let [x1, y1, x2, y2] = bbox_now.map(|v| v / 2.0);
    let (w, h) = (x2 - x1, y2 - y1);
    if w < 8.0 || h < 8.0 {
        return None;
    }
    let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
    // The ring: beside and above the face (out to 1.5 face widths from its centre, up to 1.2
    // face heights above it), not the face itself (the box grown by 15 %) and not below the
    // chin (a body moves with its head).
    let (outer_x, inner_x) = (1.5 * w, 0.575 * w);
    let (top, inner_top) = (cy - 1.2 * h, cy - 0.575 * h);
    let bottom = y2;
    let mut out = ContextObservation::default();
    let mut blocks = 0u32;
    let b = BLOCK as f32;
    let mut y = top;
    while y + b <= bottom {
        let mut x = cx - outer_x;
        while x + b <= cx + outer_x {
            let (bx, by) = (x + b / 2.0, y + b / 2.0);
            let inside = (bx - cx).abs() < inner_x && by > inner_top;
            if !inside && let Some(v) = vote(prev, now, &back, x, y) {
                blocks += 1;
                let far = (bx - cx).abs() >= HEAD_REACH * w || by <= cy - HEAD_REACH * h;
                match v {
                    Some(true) => {
                        out.with_face += 1;
                        out.far_with_face += u32::from(far);
                    }
                    Some(false) => {
                        out.still += 1;
                        out.far_still += u32::from(far);
                    }
                    None => {}
                }
            }
            x += b;
        }
        y += b;
    }
    (blocks > 0).then_some(out)
}

/// One block at (x, y) (half resolution) inside both frames: `Some(true)` moved with the face,
/// `Some(false)` stayed, `None` undecided.
///
/// The cheap tests come first (every sample inside both frames, then the shift, then the
/// block's texture) and the other samples are read only when they decide: most blocks of a
/// still face stop at the shift, and the result is the same as sampling everything first.
fn vote(prev: &Gray, now: &Gray, back: &Back, x: f32, y: f32) -> Option<Option<bool>> {
    let inside = |g: &Gray, [px, py]: [f32; 2]| {
        let (w1, h1) = (g.w.saturating_sub(1) as f32, g.h.saturating_sub(1) as f32);
        px >= 0.0 && py >= 0.0 && px < w1 && py < h1
    };
    // The block's own pixels: `x + i` grows with `i`, so its corners bound them.
    let last = (BLOCK - 1) as f32;
    for g in [now, prev] {
        if !inside(g, [x, y]) || !inside(g, [x + last, y + last]) {
            return None;
        }
    }
    let mut from = [[0f32; 2]; BLOCK * BLOCK];
    for j in 0..BLOCK {
        for i in 0..BLOCK {
            let q = back.apply([x + i as f32, y + j as f32]);
            if !inside(prev, q) {
                return None;
            }
            from[j * BLOCK + i] = q;
        }
    }
    let c = [x + b2(), y + b2()];
    let q = back.apply(c);
    let shift = (q[0] - c[0]).hypot(q[1] - c[1]);
    if shift < 0.75 {
        return Some(None);
    }
    // Inside: every sample is `Some`.
    let sample = |g: &Gray, [px, py]: [f32; 2]| g.at(px, py).unwrap_or_default();
    let grid = |g: &Gray| {
        let mut v = [0f32; BLOCK * BLOCK];
        for j in 0..BLOCK {
            for i in 0..BLOCK {
                v[j * BLOCK + i] = sample(g, [x + i as f32, y + j as f32]);
            }
        }
        v
    };
    let cur = grid(now);
    if texture(&cur) < 4.0 {
        return Some(None);
    }
    // The two hypotheses must predict different content.
    let still = grid(prev);
    let moved = from.map(|q| sample(prev, q));
    if zero_mean_error(&still, &moved) < 3.0 {
        return Some(None);
    }
    let (e_still, e_moved) = (zero_mean_error(&cur, &still), zero_mean_error(&cur, &moved));
    let v = if e_moved < MARGIN * e_still {
        Some(true)
    } else if e_still < MARGIN * e_moved {
        Some(false)
    } else {
        None
    };
    Some(v)
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

/// Mean absolute difference of two blocks once each has its mean removed: a light change over
/// the whole block is not motion.
pub(super) fn zero_mean_error(a: &[f32], b: &[f32]) -> f32 {
    let (ma, mb) = (mean(a), mean(b));
    a.iter()
        .zip(b)
        .map(|(p, q)| ((p - ma) - (q - mb)).abs())
        .sum::<f32>()
        / a.len() as f32
}

/// Mean absolute deviation of a block from its mean.
pub(super) fn texture(v: &[f32]) -> f32 {
    let m = mean(v);
    v.iter().map(|x| (x - m).abs()).sum::<f32>() / v.len() as f32
}

const fn b2() -> f32 {
    BLOCK as f32 / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured scene (value noise) with a textured square "sheet" at `offset`.
    fn scene(offset: [f32; 2], sheet_moves: bool) -> RgbImage {
        let tex = |x: f32, y: f32, seed: f32| {
            let v = ((x * 0.37 + seed).sin() * (y * 0.29 + seed * 1.3).cos()
                + (x * 0.11 - y * 0.17 + seed).sin())
                * 60.0
                + 128.0;
            v.clamp(0.0, 255.0) as u8
        };
        RgbImage::from_fn(320, 240, |x, y| {
            let (xf, yf) = (x as f32, y as f32);
            let (sx, sy) = (xf - offset[0], yf - offset[1]);
            let v = if (40.0..280.0).contains(&sx) && (20.0..230.0).contains(&sy) {
                tex(sx, sy, 2.0)
            } else if sheet_moves {
                tex(xf, yf, 7.0)
            } else {
                tex(sx, sy, 2.0)
            };
            image::Rgb([v, v, v])
        })
    }

    fn face(offset: [f32; 2]) -> ([[f32; 2]; 5], [f32; 4]) {
        let lm = [
            [140.0, 110.0],
            [180.0, 110.0],
            [160.0, 135.0],
            [145.0, 155.0],
            [175.0, 155.0],
        ]
        .map(|[x, y]| [x + offset[0], y + offset[1]]);
        (
            lm,
            [
                130.0 + offset[0],
                90.0 + offset[1],
                190.0 + offset[0],
                170.0 + offset[1],
            ],
        )
    }

    #[test]
    fn a_held_sheet_moves_with_the_face_and_a_wall_stays() {
        let (lp, _) = face([0.0, 0.0]);
        let (ln, bn) = face([6.0, 4.0]);
        // The face and everything around it moved by (6, 4): a sheet.
        let sheet = observe(
            &Gray::from_rgb(&scene([0.0, 0.0], false), None),
            &Gray::from_rgb(&scene([6.0, 4.0], false), None),
            &lp,
            &ln,
            bn,
            None,
        )
        .unwrap();
        assert!(
            sheet.with_face > 10 && sheet.still < sheet.with_face / 5,
            "{sheet:?}"
        );
        // ... out beyond a head's reach too.
        assert!(
            sheet.far_with_face > 10 && sheet.far_still < sheet.far_with_face / 5,
            "{sheet:?}"
        );
        // The face moved, the scene around it did not: a person before a wall.
        let wall = scene([0.0, 0.0], true);
        let person = observe(
            &Gray::from_rgb(&wall, None),
            &Gray::from_rgb(&wall, None),
            &lp,
            &ln,
            bn,
            None,
        )
        .unwrap();
        assert!(
            person.still > 10 && person.with_face < person.still / 5,
            "{person:?}"
        );
        assert!(person.far_still > 10, "{person:?}");
        // Nothing moved: no votes.
        let still = observe(
            &Gray::from_rgb(&wall, None),
            &Gray::from_rgb(&wall, None),
            &lp,
            &lp,
            face([0.0, 0.0]).1,
            None,
        )
        .unwrap();
        assert_eq!((still.still, still.with_face), (0, 0));
    }

    /// A head before a wall: its hair (an ellipse 0.8 face widths and 0.85 face heights from
    /// the face's centre) moves with the face, the wall beyond stays. The near ring votes that
    /// it moved with the face; beyond a head's reach, the blocks say it stayed.
    #[test]
    fn a_heads_hair_moves_with_it_and_the_wall_beyond_its_reach_stays() {
        let (lp, _) = face([0.0, 0.0]);
        let (ln, bn) = face([6.0, 4.0]);
        let head = |offset: [f32; 2]| {
            let moving = scene(offset, false);
            let wall = scene([0.0, 0.0], true);
            RgbImage::from_fn(320, 240, |x, y| {
                let (dx, dy) = (x as f32 - 160.0 - offset[0], y as f32 - 130.0 - offset[1]);
                let inside = (dx / 48.0).powi(2) + (dy / 68.0).powi(2) < 1.0;
                *if inside { &moving } else { &wall }.get_pixel(x, y)
            })
        };
        let obs = observe(
            &Gray::from_rgb(&head([0.0, 0.0]), None),
            &Gray::from_rgb(&head([6.0, 4.0]), None),
            &lp,
            &ln,
            bn,
            None,
        )
        .unwrap();
        let near_with_face = obs.with_face - obs.far_with_face;
        assert!(near_with_face > 10, "{obs:?}");
        assert!(
            obs.far_still > 10 && obs.far_with_face * 5 < obs.far_still,
            "{obs:?}"
        );
    }

    /// The vote as first written: every sample read (a sample outside either frame ends the
    /// block with `None`), then the three tests at once (the block statistics are shared).
    fn vote_direct(
        prev: &Gray,
        now: &Gray,
        back: &Similarity,
        x: f32,
        y: f32,
    ) -> Option<Option<bool>> {
        let mut cur = [0f32; BLOCK * BLOCK];
        let mut still = [0f32; BLOCK * BLOCK];
        let mut moved = [0f32; BLOCK * BLOCK];
        for j in 0..BLOCK {
            for i in 0..BLOCK {
                let (px, py) = (x + i as f32, y + j as f32);
                let k = j * BLOCK + i;
                cur[k] = now.at(px, py)?;
                still[k] = prev.at(px, py)?;
                let [qx, qy] = back.apply([px, py]);
                moved[k] = prev.at(qx, qy)?;
            }
        }
        let c = [x + b2(), y + b2()];
        let q = back.apply(c);
        let shift = (q[0] - c[0]).hypot(q[1] - c[1]);
        let apart = zero_mean_error(&still, &moved);
        if shift < 0.75 || texture(&cur) < 4.0 || apart < 3.0 {
            return Some(None);
        }
        let (e_still, e_moved) = (zero_mean_error(&cur, &still), zero_mean_error(&cur, &moved));
        Some(if e_moved < MARGIN * e_still {
            Some(true)
        } else if e_still < MARGIN * e_moved {
            Some(false)
        } else {
            None
        })
    }

    /// The vote that tests the cheap things first gives the direct vote's answer for every
    /// block: on a moving sheet and before a wall, for still, shifted, rotated and scaled face
    /// motions, at block positions that step over the frames' edges (quarter pixels).
    #[test]
    fn the_early_exits_give_the_direct_votes() {
        let (prev, sheet, wall) = (
            Gray::from_rgb(&scene([0.0, 0.0], false), None),
            Gray::from_rgb(&scene([6.0, 4.0], false), None),
            Gray::from_rgb(&scene([0.0, 0.0], true), None),
        );
        let (lp, _) = face([0.0, 0.0]);
        let mut outcomes = [0usize; 5];
        for (now, moved) in [
            (&sheet, [6.0, 4.0]),
            (&wall, [6.0, 4.0]),
            (&wall, [0.2, 0.1]),
        ] {
            let (ln, _) = face(moved);
            let half = |l: &[[f32; 2]; 5]| l.map(|[x, y]| [x / 2.0, y / 2.0]);
            for turn in [0.0f32, 0.05, -0.12] {
                // The face's motion, then turned and scaled about its centre.
                let ln = ln.map(|[x, y]| {
                    let (dx, dy) = (x - 160.0, y - 130.0);
                    let (c, s) = (turn.cos() * (1.0 + turn), turn.sin());
                    [160.0 + c * dx - s * dy, 130.0 + s * dx + c * dy]
                });
                let back = Similarity::estimate(&half(&ln), &half(&lp)).unwrap();
                let landmarks = Back::Landmarks(back);
                let mut y = -4.0;
                while y < 124.0 {
                    let mut x = -4.0;
                    while x < 164.0 {
                        let want = vote_direct(&prev, now, &back, x, y);
                        assert_eq!(
                            vote(&prev, now, &landmarks, x, y),
                            want,
                            "({x}, {y}), {turn}"
                        );
                        outcomes[match want {
                            None => 0,
                            Some(None) => 1,
                            Some(Some(true)) => 2,
                            Some(Some(false)) => 3,
                        }] += 1;
                        outcomes[4] += 1;
                        x += 1.75;
                    }
                    y += 2.25;
                }
            }
        }
        // Every kind of answer was compared.
        assert!(outcomes[..4].iter().all(|&n| n > 20), "{outcomes:?}");
    }

    /// A sheet filling the view, turned about a vertical axis beside the face (perspective):
    /// the face's five landmarks move by nearly a similarity, which misses where the sheet's
    /// far parts went, so the ring's votes say little; the plane through the face's own
    /// points (as `flow::observe` fits it) carries the whole sheet, and the ring votes that it
    /// moved with the face. Before a wall, that plane's motion predicts nothing the wall does.
    #[test]
    fn a_sheet_turned_in_perspective_moves_as_the_face_plane_and_not_as_its_landmarks() {
        // prev -> now: a turn about the vertical axis through x = 40 (foreshortening grows
        // across the sheet) and a shift; its inverse samples `now` from `prev`.
        let g = 0.0012f64;
        let fwd = |[x, y]: [f32; 2]| {
            let (x, y) = (f64::from(x) - 40.0, f64::from(y) - 130.0);
            let w = 1.0 + g * x;
            [(40.0 + x / w + 5.0) as f32, (130.0 + y / w + 3.0) as f32]
        };
        let inv = |[u, v]: [f32; 2]| {
            let (x, y) = (f64::from(u) - 45.0, f64::from(v) - 133.0);
            let w = 1.0 - g * x;
            [(40.0 + x / w) as f32, (130.0 + y / w) as f32]
        };
        let tex = |[x, y]: [f32; 2]| {
            let v = ((x * 0.37 + 2.0).sin() * (y * 0.29 + 2.6).cos() + (x * 0.11 - y * 0.17).sin())
                * 60.0
                + 128.0;
            image::Rgb([v.clamp(0.0, 255.0) as u8; 3])
        };
        let sheet_then = RgbImage::from_fn(320, 240, |x, y| tex([x as f32, y as f32]));
        let sheet_now = RgbImage::from_fn(320, 240, |x, y| tex(inv([x as f32, y as f32])));
        let (lp, bp) = face([0.0, 0.0]);
        let ln = lp.map(fwd);
        let [a, b] = [fwd([bp[0], bp[1]]), fwd([bp[2], bp[3]])];
        let bn = [a[0], a[1], b[0], b[1]];
        // The plane through points on the face only, now -> then.
        let on_face: Vec<[f32; 2]> = (0..30)
            .map(|i| [135.0 + (i % 6) as f32 * 10.0, 95.0 + (i / 6) as f32 * 15.0])
            .collect();
        let moved: Vec<[f32; 2]> = on_face.iter().map(|&p| fwd(p)).collect();
        let plane = Homography::estimate(&moved, &on_face).unwrap();
        let (then, now) = (
            Gray::from_rgb(&sheet_then, None),
            Gray::from_rgb(&sheet_now, None),
        );
        let by_landmarks = observe(&then, &now, &lp, &ln, bn, None).unwrap();
        let by_plane = observe(&then, &now, &lp, &ln, bn, Some(&plane)).unwrap();
        assert!(
            by_plane.with_face > 20 && by_plane.still * 10 < by_plane.with_face,
            "{by_plane:?}"
        );
        assert!(
            by_plane.far_with_face > 10 && by_plane.far_still * 10 < by_plane.far_with_face,
            "{by_plane:?}"
        );
        // By the landmarks' similarity it is no sheet frame at the default ratio (4).
        assert!(
            by_landmarks.with_face < 4 * by_landmarks.still,
            "{by_landmarks:?}"
        );
        // A person before a wall, their face turning as the sheet did: the wall stays.
        let wall = Gray::from_rgb(&sheet_then, None);
        let person = observe(&wall, &wall, &lp, &ln, bn, Some(&plane)).unwrap();
        assert!(
            person.still > 20 && person.with_face * 10 < person.still,
            "{person:?}"
        );
    }
}
