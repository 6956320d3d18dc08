//! Sheet edges: a print, or a phone or tablet held up to the camera, has a border, and at a
//! door's distances it is in view: a long straight edge beside or above the face (the photo's
//! cut against the room, a screen's dark bezel). A room has straight edges too (a door frame,
//! a shelf), but before a fixed camera they stay where they are, while a held sheet's move as
//! it is held. So for each side of the face (left, right, above) this finds the strongest
//! straight edge and how far it moved since the frame `context::GAP` before; `liveness.rs`
//! counts the frames where a strong one moved against those where it stayed.
//!
//! Invariant: pure arithmetic on two luminance images (`context::Gray`, half resolution) and
//! the face's box; a line counts only where nearly all of it is inside the frame, and its
//! strength is the median step across it, so a short strong edge (a collar, the rim of a pair
//! of glasses) is not a long one.

use super::context::{Gray, MARGIN, texture, zero_mean_error};

/// The strongest straight edge on one side of the face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeLine {
    /// The luminance step across it (grey levels per half-resolution pixel, central
    /// difference), median along its length (a step the other way counts as none: one edge
    /// is darker on the same side all along).
    pub strength: f32,
    /// How far it moved since the frame `GAP` before, full-resolution pixels, where the earlier
    /// frame has an edge at least `KEPT` as strong near it (else `None`).
    pub shift: Option<f32>,
    /// How far it is from the face's centre (along the side's axis, at the centre), in face
    /// widths (above: face heights).
    pub distance: f32,
    /// Blocks of the band beyond it (away from the face) that stayed where they were / moved
    /// as the edge did (none when it did not move): a held sheet's border moves against the
    /// room behind it, while a camera that moves moves the edge and the room alike.
    pub beyond: [u32; 2],
}

/// The edges of one frame pair: left of the face, right of it, above it (image sides).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EdgeObservation {
    pub sides: [Option<EdgeLine>; 3],
}

/// Line angles tried, from the side's axis: a sheet held with some roll, yaw and pitch.
const ANGLES: usize = 17;
const ANGLE_STEP: f32 = 2.5;
/// Samples along a line, at most (a long line is sampled sparser: the cost does not grow with
/// the face).
const SAMPLES: usize = 64;
/// The search score clips each step here: a line strong along most of its length beats one
/// that is very strong along a part of it.
const CLIP: f32 = 24.0;
/// How far (half-resolution pixels) the edge is looked for in the earlier frame, either way.
const REACH: i32 = 16;
/// The earlier frame's edge must be this strong relative to the current one's to be the same.
const KEPT: f32 = 0.6;
/// In the earlier frame, the lines near an edge that score at least this share of the best
/// there are candidates for the same edge (the nearest is taken).
const STAYED: f32 = 0.8;
/// The band beyond an edge whose blocks vote, in face widths from it (moved out past any edge
/// beside it, keeping its width).
const BEYOND: (f32, f32) = (0.1, 0.5);
/// At least this share of a line's samples must fall inside the frame.
const INSIDE: f32 = 0.9;

#[derive(Debug, Clone, Copy)]
enum Side {
    Left,
    Right,
    Above,
}

/// Where a side's lines lie, half-resolution pixels: line `(offset, angle)` passes through
/// `offset` on the axis across the side (x for left and right, y above) at the face's centre
/// line, at `angle` from the side's axis, over `span` either way of the centre.
struct Geometry {
    side: Side,
    centre: [f32; 2],
    /// The face's width and height.
    width: f32,
    height: f32,
    span: f32,
    offsets: (f32, f32),
    /// Where each sample of a line lies along it, from its centre (`walk`): the first `n` of
    /// `along`, worked out once per side instead of once per line.
    n: usize,
    along: [f32; SAMPLES],
}

impl Geometry {
    fn new(side: Side, bbox: [f32; 4]) -> Geometry {
        let [x1, y1, x2, y2] = bbox.map(|v| v / 2.0);
        let (w, h) = (x2 - x1, y2 - y1);
        let centre = [(x1 + x2) / 2.0, (y1 + y2) / 2.0];
        // Beside the face: from 0.75 face widths out from its centre (clear of the ears and of
        // hair that falls beside the face) to 2; above: from 0.75 face heights (clear of the
        // hair) to 1.8.
        let (span, offsets) = match side {
            Side::Left => (0.75 * h, (centre[0] - 2.0 * w, centre[0] - 0.75 * w)),
            Side::Right => (0.75 * h, (centre[0] + 0.75 * w, centre[0] + 2.0 * w)),
            Side::Above => (0.75 * w, (centre[1] - 1.8 * h, centre[1] - 0.75 * h)),
        };
        let n = ((2.0 * span) as usize).clamp(8, SAMPLES);
        let along = std::array::from_fn(|i| -span + 2.0 * span * (i as f32 + 0.5) / n as f32);
        Geometry {
            side,
            centre,
            width: w,
            height: h,
            span,
            offsets,
            n,
            along,
        }
    }

    fn angle(k: usize) -> f32 {
        ((k as f32 - (ANGLES / 2) as f32) * ANGLE_STEP).to_radians()
    }

    /// Calls `each` with the signed step across line `(offset, angle)` at each of its samples
    /// in order (0 outside the frame); whether enough of it is inside (`INSIDE`).
    fn walk(&self, g: &Gray, offset: f32, angle: f32, mut each: impl FnMut(f32)) -> bool {
        let (w, h) = g.dimensions();
        let bytes = g.bytes();
        let n = self.n;
        let (t, (sin, cos)) = (angle.tan(), angle.sin_cos());
        let mut inside = 0;
        for &along in &self.along[..n] {
            // Vertical lines (beside) or horizontal ones (above), and their normal.
            let ((x, y), (nx, ny)) = match self.side {
                Side::Left | Side::Right => {
                    ((offset + t * along, self.centre[1] + along), (cos, -sin))
                }
                Side::Above => ((self.centre[0] + along, offset + t * along), (-sin, cos)),
            };
            let (xi, yi) = (round(x), round(y));
            if !(xi >= 1.0 && yi >= 1.0 && xi < (w - 1) as f32 && yi < (h - 1) as f32) {
                each(0.0);
                continue;
            }
            inside += 1;
            let i = yi as usize * w + xi as usize;
            let px = |k: usize| f32::from(bytes[k]);
            let gx = (px(i + 1) - px(i - 1)) / 2.0;
            let gy = (px(i + w) - px(i - w)) / 2.0;
            each(gx * nx + gy * ny);
        }
        inside as f32 >= INSIDE * n as f32
    }

    /// The signed step across line `(offset, angle)` at each of its samples (0 outside the
    /// frame), or `None` when too little of it is inside.
    fn steps(&self, g: &Gray, offset: f32, angle: f32, out: &mut Vec<f32>) -> Option<()> {
        out.clear();
        self.walk(g, offset, angle, |s| out.push(s)).then_some(())
    }

    /// The search score of a line: its clipped mean step, signed (an edge darker on one side
    /// and the edge beside it darker on the other, as a bezel's inner and outer edges are, are
    /// told apart). Summed as the samples come (no buffer: the search scores thousands of
    /// lines a frame).
    fn score(&self, g: &Gray, offset: f32, angle: f32) -> f32 {
        let (mut sum, mut n) = (-0.0f32, 0usize);
        let inside = self.walk(g, offset, angle, |s| {
            sum += s.clamp(-CLIP, CLIP);
            n += 1;
        });
        if inside { sum / n as f32 } else { 0.0 }
    }

    /// The best line of the side, its step of either sign: (sign, offset refined to a fraction
    /// of a pixel, angle index).
    fn best(&self, g: &Gray) -> Option<(f32, f32, usize)> {
        let (first, last) = (self.offsets.0.ceil() as i32, self.offsets.1.floor() as i32);
        let mut best: Option<(f32, f32, i32, usize)> = None;
        for k in 0..ANGLES {
            let a = Self::angle(k);
            for o in first..=last {
                let raw = self.score(g, o as f32, a);
                if raw != 0.0 && best.is_none_or(|(b, ..)| raw.abs() > b) {
                    best = Some((raw.abs(), raw.signum(), o, k));
                }
            }
        }
        let (s, sign, o, k) = best?;
        // A parabola through the scores beside the peak places it between pixels.
        let a = Self::angle(k);
        let (l, r) = (
            sign * self.score(g, (o - 1) as f32, a),
            sign * self.score(g, (o + 1) as f32, a),
        );
        Some((sign, o as f32 + peak_offset(l, s, r), k))
    }

    /// Of the lines within `reach` of offset `o` with angle indices `angles` and steps of sign
    /// `sign`, the peak (over offsets, each offset's best angle) nearest to `o` among those
    /// scoring at least `STAYED` of the best: (offset refined to a fraction of a pixel, angle
    /// index).
    fn nearest(
        &self,
        g: &Gray,
        o: i32,
        reach: i32,
        angles: std::ops::RangeInclusive<usize>,
        sign: f32,
    ) -> Option<(f32, usize)> {
        let n = (2 * reach + 1) as usize;
        let mut scores = vec![(0f32, 0usize); n];
        for k in angles {
            let a = Self::angle(k);
            for (i, s) in scores.iter_mut().enumerate() {
                let v = sign * self.score(g, (o - reach + i as i32) as f32, a);
                if v > s.0 {
                    *s = (v, k);
                }
            }
        }
        let top = scores.iter().map(|s| s.0).fold(0.0, f32::max);
        if top <= 0.0 {
            return None;
        }
        let at = |i: usize| scores[i].0;
        let peak = (0..n)
            .filter(|&i| at(i) >= STAYED * top)
            .filter(|&i| (i == 0 || at(i) >= at(i - 1)) && (i + 1 == n || at(i) >= at(i + 1)))
            .min_by_key(|&i| (i as i32 - reach).abs())?;
        let frac = if peak > 0 && peak + 1 < n {
            peak_offset(at(peak - 1), at(peak), at(peak + 1))
        } else {
            0.0
        };
        Some(((o - reach + peak as i32) as f32 + frac, scores[peak].1))
    }

    /// Votes of the blocks of the band from `BEYOND.0` to `BEYOND.1` face widths beyond line
    /// `(offset, angle)` (away from the face): [stayed, moved by `moved` along the side's
    /// axis, as the edge did since `prev`]. The two-hypothesis vote of `context.rs`.
    fn beyond(&self, prev: &Gray, now: &Gray, offset: f32, angle: f32, moved: f32) -> [u32; 2] {
        let mut votes = [0u32; 2];
        let t = angle.tan();
        let out = match self.side {
            Side::Left | Side::Above => -1.0,
            Side::Right => 1.0,
        };
        // The band starts past any edge beside this one that is half as strong (a bezel's
        // outer edge, the other side of a door frame): such an edge would vote for the motion
        // it shares with this one, not for the room's.
        let mut near = BEYOND.0 * self.width;
        let own = self.score(now, offset, angle).abs();
        let mut d = 2.0;
        while d < BEYOND.1 * self.width {
            if self.score(now, offset + out * d, angle).abs() >= 0.5 * own {
                near = near.max(d + 2.0);
            }
            d += 1.0;
        }
        // ... and past where those edges were in the earlier frame (the room they uncovered or
        // covered since is not the room either way).
        near += moved.abs();
        let far = near + (BEYOND.1 - BEYOND.0) * self.width;
        // Blocks of B x B samples, one pixel apart (B along the line, B outwards), as large as
        // the context's.
        const B: usize = 6;
        let point = |along: f32, d: f32| match self.side {
            Side::Left | Side::Right => [offset + t * along + out * d, self.centre[1] + along],
            Side::Above => [self.centre[0] + along, offset + t * along + out * d],
        };
        let shifted = |[x, y]: [f32; 2]| match self.side {
            Side::Left | Side::Right => [x + moved, y],
            Side::Above => [x, y + moved],
        };
        let mut d = near;
        while d + B as f32 <= far {
            let mut along = -self.span;
            while along + B as f32 <= self.span {
                let mut blocks = [[0f32; B * B]; 3];
                let mut inside = true;
                'block: for j in 0..B {
                    for i in 0..B {
                        let p = point(along + i as f32, d + j as f32);
                        let q = shifted(p);
                        match (now.at(p[0], p[1]), prev.at(p[0], p[1]), prev.at(q[0], q[1])) {
                            (Some(c), Some(s), Some(m)) => {
                                blocks[0][j * B + i] = c;
                                blocks[1][j * B + i] = s;
                                blocks[2][j * B + i] = m;
                            }
                            _ => {
                                inside = false;
                                break 'block;
                            }
                        }
                    }
                }
                let [cur, still, with] = &blocks;
                if inside && texture(cur) >= 4.0 && zero_mean_error(still, with) >= 3.0 {
                    let (e_still, e_moved) =
                        (zero_mean_error(cur, still), zero_mean_error(cur, with));
                    if e_still < MARGIN * e_moved {
                        votes[0] += 1;
                    } else if e_moved < MARGIN * e_still {
                        votes[1] += 1;
                    }
                }
                along += B as f32;
            }
            d += B as f32;
        }
        votes
    }

    /// The median step of sign `sign` along a line (a step of the other sign counts as none).
    fn strength(&self, g: &Gray, offset: f32, angle: f32, sign: f32, buf: &mut Vec<f32>) -> f32 {
        if self.steps(g, offset, angle, buf).is_none() {
            return 0.0;
        }
        for s in buf.iter_mut() {
            *s = (sign * *s).max(0.0);
        }
        let mid = buf.len() / 2;
        *buf.select_nth_unstable_by(mid, f32::total_cmp).1
    }
}

/// `x.round()` (half-way cases away from zero), the same value, inline: `f32::round` is a call
/// to libm's `roundf` on x86-64's baseline, and the search rounds two coordinates for each of
/// its ~500 000 samples a frame. Exact: for |x| < 2^23 the truncation and `x` minus it are
/// exact in f32; larger values are integers already (and NaN stays NaN).
#[inline]
fn round(x: f32) -> f32 {
    if x.is_nan() || x.abs() >= 8_388_608.0 {
        return x;
    }
    let t = x as i32 as f32;
    let f = x - t;
    if f >= 0.5 {
        t + 1.0
    } else if f <= -0.5 {
        t - 1.0
    } else {
        // -0.3 rounds to -0.0, as `f32::round` has it.
        t.copysign(x)
    }
}

/// Where between its neighbours a peak of scores `l < c > r` (one pixel apart) lies: the
/// vertex of the parabola through them, within half a pixel.
fn peak_offset(l: f32, c: f32, r: f32) -> f32 {
    let den = l - 2.0 * c + r;
    if den < 0.0 {
        (0.5 * (l - r) / den).clamp(-0.5, 0.5)
    } else {
        0.0
    }
}

/// The strongest straight edge on each side of the face (box `bbox_now`, full-resolution
/// pixels) in `now`, and how far each moved since `prev`.
pub fn observe(prev: &Gray, now: &Gray, bbox_now: [f32; 4]) -> Option<EdgeObservation> {
    let [x1, y1, x2, y2] = bbox_now;
    if x2 - x1 < 16.0 || y2 - y1 < 16.0 || prev.dimensions() != now.dimensions() {
        return None;
    }
    let mut buf = Vec::with_capacity(SAMPLES);
    let sides = [Side::Left, Side::Right, Side::Above].map(|side| {
        let geo = Geometry::new(side, bbox_now);
        let (sign, offset, k) = geo.best(now)?;
        let strength = geo.strength(now, offset, Geometry::angle(k), sign, &mut buf);
        // The same edge in the earlier frame: near it, at about its angle.
        // The same edge in the earlier frame: of the lines near it there, at about its angle,
        // that score at least `STAYED` of the best, the nearest (two parallel edges, a door
        // frame's, are not one edge that moved), and as strong as `KEPT` of it.
        let o = offset.round() as i32;
        let near = k.saturating_sub(1)..=(k + 1).min(ANGLES - 1);
        let moved = geo
            .nearest(prev, o, REACH, near, sign)
            .filter(|&(then, k)| {
                geo.strength(prev, then, Geometry::angle(k), sign, &mut buf) >= KEPT * strength
            })
            .map(|(then, _)| then - offset);
        let beyond = match moved {
            Some(m) if m != 0.0 => geo.beyond(prev, now, offset, Geometry::angle(k), m),
            _ => [0, 0],
        };
        let shift = moved.map(|m| 2.0 * m.abs());
        let distance = match side {
            Side::Left => (geo.centre[0] - offset) / geo.width,
            Side::Right => (offset - geo.centre[0]) / geo.width,
            Side::Above => (geo.centre[1] - offset) / geo.height,
        };
        Some(EdgeLine {
            strength,
            shift,
            distance,
            beyond,
        })
    });
    Some(EdgeObservation { sides })
}

#[cfg(test)]
mod tests {
    use image::{Rgb, RgbImage};

    use super::*;

    /// A textured room (value noise, no straight edges) with, when `sheet` is given, a bright
    /// textured sheet in a dark border whose left edge is at x = `sheet`, tilted by `roll`.
    fn scene(sheet: Option<f32>, roll: f32) -> RgbImage {
        seen_from(sheet, roll, 0.0)
    }

    /// `scene` seen by a camera moved `camera` pixels left (everything in it `camera` pixels
    /// further right).
    fn seen_from(sheet: Option<f32>, roll: f32, camera: f32) -> RgbImage {
        let noise = |x: f32, y: f32| {
            ((x * 0.21).sin() * (y * 0.17).cos() + (x * 0.05 + y * 0.07).sin()) * 30.0
        };
        RgbImage::from_fn(640, 480, |x, y| {
            let (xf, yf) = (x as f32 - camera, y as f32);
            let v = match sheet {
                Some(left) => {
                    // Rotate about (320, 240) by `roll`, then test the sheet's box.
                    let (dx, dy) = (xf - 320.0, yf - 240.0);
                    let (c, s) = (roll.cos(), roll.sin());
                    let (u, v) = (320.0 + c * dx + s * dy, 240.0 - s * dx + c * dy);
                    let (l, r) = (left, 640.0 - left);
                    if (l..r).contains(&u) && (40.0..470.0).contains(&v) {
                        if (l + 16.0..r - 16.0).contains(&u) && v > 56.0 {
                            170.0 + noise(u, v)
                        } else {
                            15.0
                        }
                    } else {
                        110.0 + noise(xf, yf)
                    }
                }
                None => 110.0 + noise(xf, yf),
            };
            let v = v.clamp(0.0, 255.0) as u8;
            Rgb([v, v, v])
        })
    }

    const FACE: [f32; 4] = [270.0, 170.0, 370.0, 290.0];

    fn gray(img: &RgbImage) -> Gray {
        Gray::from_rgb(img, None)
    }

    #[test]
    fn the_inline_round_is_f32_round_bit_for_bit() {
        let mut xs = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            8_388_607.5,
        ];
        for k in -2000..=2000 {
            let h = k as f32 / 2.0;
            // Half-way points, their neighbours either side, and some values between.
            xs.extend([h, h.next_up(), h.next_down(), h + 0.123, h - 0.377]);
        }
        xs.extend([0.49999997, -0.49999997, 1e7 + 0.5, -3e9, 16_777_217.0]);
        for x in xs {
            assert_eq!(round(x).to_bits(), x.round().to_bits(), "{x}");
        }
    }

    #[test]
    fn a_sheets_border_is_found_and_its_motion_measured() {
        for roll in [0.0f32, 0.1, -0.2] {
            let (prev, now) = (scene(Some(150.0), roll), scene(Some(160.0), roll));
            let e = observe(&gray(&prev), &gray(&now), FACE).unwrap();
            for (i, side) in e.sides[..2].iter().enumerate() {
                let side = side.unwrap();
                assert!(side.strength > 20.0, "roll {roll} side {i}: {side:?}");
                // The left edge moved 10 px right, the right one 10 px left, against the room
                // beyond them.
                let shift = side.shift.unwrap();
                assert!((shift - 10.0).abs() < 3.0, "roll {roll} side {i}: {side:?}");
                let [stayed, moved] = side.beyond;
                assert!(
                    stayed >= 10 && moved * 4 < stayed,
                    "roll {roll} side {i}: {side:?}"
                );
            }
            // A camera that moves 10 px moves the same border and the room beyond it alike.
            let (prev, now) = (
                seen_from(Some(150.0), roll, 0.0),
                seen_from(Some(150.0), roll, 10.0),
            );
            let e = observe(&gray(&prev), &gray(&now), FACE).unwrap();
            for side in &e.sides[..2] {
                let side = side.unwrap();
                assert!((side.shift.unwrap() - 10.0).abs() < 3.0, "{side:?}");
                let [stayed, moved] = side.beyond;
                assert!(moved >= 10 && stayed * 4 < moved, "roll {roll}: {side:?}");
            }
            // Held still, the same border has not moved.
            let e = observe(&gray(&now), &gray(&now), FACE).unwrap();
            for side in &e.sides[..2] {
                assert!(side.unwrap().shift.unwrap() < 1.0, "{side:?}");
            }
        }
    }

    #[test]
    fn a_room_without_straight_edges_has_no_strong_edge() {
        let room = gray(&scene(None, 0.0));
        let e = observe(&room, &room, FACE).unwrap();
        for side in e.sides.iter().flatten() {
            assert!(side.strength < 8.0, "{side:?}");
        }
    }

    #[test]
    fn a_face_too_small_or_frames_of_different_sizes_give_nothing() {
        let room = gray(&scene(None, 0.0));
        assert_eq!(observe(&room, &room, [300.0, 200.0, 310.0, 212.0]), None);
        let small = gray(&RgbImage::new(320, 240));
        assert_eq!(observe(&small, &room, FACE), None);
    }
}
