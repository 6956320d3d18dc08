//! Face flow: does the face's own texture move as one plane, or as a face's relief? A print,
//! however tilted, swayed or gently bent, moves every point of its face through one homography;
//! a head that turns does not (the nose moves against the cheeks, the cheeks against the face's
//! edge). Unlike the face mesh, which regresses a face-shaped point set onto a photo too, this
//! follows the pixels themselves: patches on a grid of the face (the eyes and the mouth left
//! out, so blinks and talking do not count here) are matched between a frame and the one `GAP`
//! frames before, starting from where the face's similarity motion carries them. One plane plus
//! a face-shaped relief (a half ellipsoid and a nose ridge, `relief`) times one parallax vector
//! is fitted through the matches: that vector is the observation (and the plain homography's
//! residual, for tuning). A bent print has a relief too, a cylinder's: the same fit with a
//! cylinder about the image's vertical axis and a parallax of its own (`ReliefFit::unbent`) gives
//! the relief that no bend explains. A screen's moiré fringes move against its content and
//! make noise here, in random directions from frame to frame: the liveness rule takes the
//! vector's median over several frame pairs, and the moiré cue (`screen.rs`) is what catches
//! screens.
//!
//! The same matching between a frame and the one before gives the texture change
//! (`texture_change`): how little the face's smoothed texture correlates with where it moved.
//! Skin and paper carry their texture along; a screen's moiré fringes shift by the screen's
//! motion divided by how far its pixel pitch is from the camera's (tens of pixels for a pixel
//! of sway), so even coarse fringes, which `screen.rs` cannot see, change it.
//!
//! Invariant: pure arithmetic on the pixels of two frames around one face and its landmarks in
//! both; a patch without texture, or whose best match is at the edge of its search, is left
//! out, and too few patches give no observation.

use image::RgbImage;

use super::align::{ARCFACE_112, Similarity};
use super::context::luma_row;
use super::mesh::{Homography, add_row, normalised, plane_fit, solve, spread};

/// Frames between the two compared (as context motion: 0.3 s at 10 fps).
pub const GAP: usize = 3;

/// Eye distance the patch is sampled at, at least (larger faces are box-averaged by a whole
/// factor, to between this and twice this; smaller faces are sampled as they are).
const TARGET_IOD: f32 = 32.0;

/// Grid of canonical (ArcFace 112) points: from the forehead to the chin, cheek to cheek.
const GRID_X: [f32; 8] = [28.0, 36.0, 44.0, 52.0, 60.0, 68.0, 76.0, 84.0];
const GRID_Y: [f32; 10] = [28.0, 36.0, 44.0, 52.0, 60.0, 68.0, 76.0, 84.0, 92.0, 100.0];

/// Least texture a patch needs (smaller eigenvalue of its structure tensor, per pixel).
const MIN_TEXTURE: f32 = 2.0;

/// Fewest matched patches for an observation.
const MIN_POINTS: usize = 12;

/// Frame pixels the texture change's luminance is box-filtered over (with the patch's own
/// box-averaging): a sensor's pixel noise averages away, a screen's moiré fringes (10 or more
/// pixels apart where `screen.rs` cannot see them) stay.
const SMOOTH_PX: usize = 5;

/// Least contrast (standard deviation of the smoothed luminance, grey levels) a patch needs for
/// its texture change to count: below it, what is compared is noise.
const MIN_CHANGE_CONTRAST: f32 = 2.0;

/// Fewest patches with contrast for a texture change.
const MIN_CHANGE_POINTS: usize = 8;

/// Canonical points on the lips and the chin, which move against the face when a person talks.
const MOUTH_X: [f32; 5] = [44.0, 50.0, 56.0, 62.0, 68.0];
const MOUTH_Y: [f32; 4] = [88.0, 94.0, 100.0, 106.0];

/// Fewest matched mouth patches for a mouth observation.
const MIN_MOUTH_POINTS: usize = 4;

/// Whether a canonical point lies on an eye or the mouth (which move on their own).
fn excluded([x, y]: [f32; 2]) -> bool {
    let eye = |[ex, ey]: [f32; 2]| (x - ex).abs() < 11.0 && (y - ey).abs() < 8.0;
    let mouth = (x - 56.0).abs() < 20.0 && (y - 92.0).abs() < 8.0;
    eye(ARCFACE_112[0]) || eye(ARCFACE_112[1]) || mouth
}

/// The box-averaging factor for a face `iod` pixels between the eyes: the one that puts
/// `TARGET_IOD` to twice that between the eyes in the patch, or `current` while the patch's eye
/// distance under it stays within `HYSTERESIS` (a face hovering at a boundary keeps one factor).
fn averaging(iod: f32, current: Option<usize>) -> usize {
    let fresh = ((iod / TARGET_IOD).floor() as usize).max(1);
    match current {
        Some(k) if k != fresh => {
            let patch_iod = iod / k as f32;
            let (lo, hi) = (HYSTERESIS[0] * TARGET_IOD, HYSTERESIS[1] * TARGET_IOD);
            if (lo..=hi).contains(&patch_iod) {
                k
            } else {
                fresh
            }
        }
        _ => fresh,
    }
}

/// Eye distances in the patch (in units of `TARGET_IOD`) within which a face keeps its
/// box-averaging factor.
const HYSTERESIS: [f32; 2] = [0.85, 2.3];

/// Luminance around one face in one frame, box-averaged by a whole factor (`averaging`),
/// with the face's landmarks.
#[derive(Debug, Clone)]
pub struct FacePatch {
    /// Frame pixels per patch pixel.
    k: usize,
    /// Frame coordinates of patch pixel (0, 0)'s corner.
    x0: usize,
    y0: usize,
    w: usize,
    h: usize,
    data: Vec<f32>,
    /// `data` box-filtered to about `SMOOTH_PX` frame pixels (`smoothed`): what the texture
    /// change compares, without the sensor's pixel noise. Empty where the box-averaging alone
    /// spans that many pixels (`data` is used as it is).
    smooth: Vec<f32>,
    landmarks: [[f32; 2]; 5],
}

impl FacePatch {
    /// The face of `landmarks` in `img`; `None` when it is (nearly) outside. `previous`: the
    /// face's patch a frame before, whose box-averaging factor is kept while the face's size
    /// allows (two patches are compared only at one factor, and a face whose eye distance
    /// hovers at a multiple of `TARGET_IOD` would otherwise switch factors frame by frame and
    /// lose most of its observations).
    pub fn from_rgb(
        img: &RgbImage,
        landmarks: &[[f32; 2]; 5],
        previous: Option<&FacePatch>,
    ) -> Option<FacePatch> {
        let to_frame = Similarity::estimate(&ARCFACE_112, landmarks)?;
        let iod = to_frame.scale() * (ARCFACE_112[1][0] - ARCFACE_112[0][0]);
        if !iod.is_finite() || iod < 4.0 {
            return None;
        }
        let k = averaging(iod, previous.map(|p| p.k));
        // The canonical square with a margin for the search, in frame pixels.
        let corners =
            [[-8.0, -8.0], [120.0, -8.0], [-8.0, 120.0], [120.0, 120.0]].map(|p| to_frame.apply(p));
        // Their extent along axis `i`, inside the image (`limit` wide or high).
        let span = |i: usize, limit: f32| {
            let (lo, hi) = corners.iter().fold((f32::MAX, f32::MIN), |(lo, hi), p| {
                (lo.min(p[i]), hi.max(p[i]))
            });
            (lo.max(0.0), hi.min(limit))
        };
        let (lo_x, hi_x) = span(0, img.width() as f32);
        let (lo_y, hi_y) = span(1, img.height() as f32);
        let (x0, y0) = (lo_x as usize, lo_y as usize);
        let w = ((hi_x - lo_x).max(0.0) as usize) / k;
        let h = ((hi_y - lo_y).max(0.0) as usize) / k;
        if w < 8 || h < 8 {
            return None;
        }
        let raw = img.as_raw();
        let stride = img.width() as usize * 3;
        let mut data = vec![0f32; w * h];
        let mut row = vec![0f32; w * k];
        let norm = 1.0 / (k * k) as f32;
        for (py, out) in data.chunks_exact_mut(w).enumerate() {
            for dy in 0..k {
                let y = y0 + py * k + dy;
                let start = y * stride + x0 * 3;
                luma_row(&raw[start..start + w * k * 3], &mut row);
                for (o, block) in out.iter_mut().zip(row.chunks_exact(k)) {
                    *o += block.iter().sum::<f32>();
                }
            }
            for o in out.iter_mut() {
                *o *= norm;
            }
        }
        let side = (SMOOTH_PX / k).max(1) | 1;
        let smooth = smoothed(&data, w, h, side / 2);
        Some(FacePatch {
            k,
            x0,
            y0,
            w,
            h,
            data,
            smooth,
            landmarks: *landmarks,
        })
    }

    fn at(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.w + x]
    }

    /// The smoothed luminance's window of radius `r` around (x, y), row by row.
    fn smooth_window(&self, x: isize, y: isize, r: isize) -> impl Iterator<Item = f32> + '_ {
        (y - r..=y + r).flat_map(move |yy| {
            let start = yy as usize * self.w + (x - r) as usize;
            let smooth = if self.smooth.is_empty() {
                &self.data
            } else {
                &self.smooth
            };
            smooth[start..start + (2 * r + 1) as usize].iter().copied()
        })
    }

    /// Frame coordinates -> patch coordinates.
    fn to_patch(&self, [x, y]: [f32; 2]) -> [f32; 2] {
        let k = self.k as f32;
        [
            (x - self.x0 as f32) / k - 0.5 + 0.5 / k,
            (y - self.y0 as f32) / k - 0.5 + 0.5 / k,
        ]
    }

    fn to_frame(&self, [x, y]: [f32; 2]) -> [f32; 2] {
        let k = self.k as f32;
        [
            (x + 0.5 - 0.5 / k) * k + self.x0 as f32,
            (y + 0.5 - 0.5 / k) * k + self.y0 as f32,
        ]
    }
}

/// How one plane explains the face's texture motion between two frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowObservation {
    /// RMS residual of the best homography through the matches, in units of their spread.
    pub residual: f32,
    /// Patches matched.
    pub points: u32,
    /// The same fit with a face-shaped relief term (plane plus parallax): the parallax per unit
    /// of relief, in the face's axes (x along the eyes, y down; spread units).
    pub e: [f32; 2],
    /// `e` from the same fit with a print's bend as well (`ReliefFit::unbent`); `None` when that
    /// fit is singular.
    pub unbent: Option<[f32; 2]>,
    /// How far the lips and the chin moved against where that fit carries them (median over
    /// the matched mouth patches, eye distances): talking, which a print cannot do. `None` when
    /// too few mouth patches matched.
    pub mouth: Option<f32>,
    /// The same for the face's own patches: the fit's noise, which the lip rule must clearly
    /// exceed (a screen's moiré raises both).
    pub face: f32,
}

impl FlowObservation {
    /// The parallax vector's length.
    pub fn parallax(&self) -> f32 {
        self.e[0].hypot(self.e[1])
    }
}

/// A face's relief at a canonical point (ArcFace 112 units, arbitrary scale): a half
/// ellipsoid for the head and a ridge for the nose.
fn relief([x, y]: [f32; 2]) -> f32 {
    let head = (1.0 - ((x - 56.0) / 44.0).powi(2) - ((y - 62.0) / 62.0).powi(2))
        .max(0.0)
        .sqrt();
    let nose = (-((x - 56.0) / 7.0).powi(2) / 2.0 - ((y - 66.0) / 12.0).powi(2) / 2.0).exp();
    head + 0.6 * nose
}

/// The plane-plus-parallax fit (`plane_plus_parallax`): a homography in coordinates centred
/// and scaled by each point set's spread, plus a parallax vector times each point's relief.
struct ReliefFit {
    h: [f64; 10],
    src: [f64; 3],
    dst: [f64; 3],
    depth: [f64; 2],
    /// The fit's inputs: the points normalised by their spread, the relief standardised (for
    /// `unbent`, which fits them again with one more term).
    ns: Vec<[f64; 2]>,
    nd: Vec<[f64; 2]>,
    z: Vec<f64>,
}

impl ReliefFit {
    /// The relief's parallax vector (as this fit's) when a print's bend is fitted too: a
    /// cylinder about the image's vertical axis (`bend`, one value per point) with a parallax
    /// vector of its own. A print bent as it is held has that relief and no other, so it leaves
    /// this vector near zero however it sways; a head keeps what of its relief a cylinder does
    /// not explain (the nose, the brow and the chin curving back).
    fn unbent(&self, bend: &[f32]) -> Option<[f64; 2]> {
        let (c, _) = standardised(bend.get(..self.z.len())?)?;
        let h = parallax_fit::<12>(&self.ns, &self.nd, &[&self.z, &c])?;
        Some([h[8], h[9]])
    }

    /// Where the fit carries `p` (frame coordinates, relief `d`) in the second frame.
    fn apply(&self, p: [f32; 2], d: f32) -> Option<[f32; 2]> {
        let h = &self.h;
        let x = (f64::from(p[0]) - self.src[0]) / self.src[2];
        let y = (f64::from(p[1]) - self.src[1]) / self.src[2];
        let z = (f64::from(d) - self.depth[0]) / self.depth[1];
        let w = h[6] * x + h[7] * y + 1.0;
        if w.abs() < 1e-9 {
            return None;
        }
        let u = (h[0] * x + h[1] * y + h[2] + h[8] * z) / w;
        let v = (h[3] * x + h[4] * y + h[5] + h[9] * z) / w;
        Some([
            (u * self.dst[2] + self.dst[0]) as f32,
            (v * self.dst[2] + self.dst[1]) as f32,
        ])
    }
}

/// `depth` to zero mean and unit RMS, with that mean and RMS; `None` when it is (nearly) flat.
fn standardised(depth: &[f32]) -> Option<(Vec<f64>, [f64; 2])> {
    let n = depth.len().max(1) as f64;
    let dm = depth.iter().map(|&d| f64::from(d)).sum::<f64>() / n;
    let ds = (depth
        .iter()
        .map(|&d| (f64::from(d) - dm).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    (ds >= 1e-9).then(|| {
        (
            depth.iter().map(|&d| (f64::from(d) - dm) / ds).collect(),
            [dm, ds],
        )
    })
}

/// The homography plus one 2-D parallax vector per depth basis (each scaled by the point's
/// value of it) that best maps `ns` onto `nd` (both normalised by their spread), linearised as
/// the DLT is: `N` = 8 + 2 x the bases; the solution's entries 8 + 2j, 9 + 2j are basis j's
/// vector.
fn parallax_fit<const N: usize>(
    ns: &[[f64; 2]],
    nd: &[[f64; 2]],
    bases: &[&[f64]],
) -> Option<[f64; N]> {
    debug_assert_eq!(N, 8 + 2 * bases.len());
    let mut ata = [[0f64; N]; N];
    let mut atb = [0f64; N];
    for (i, (p, q)) in ns.iter().zip(nd).enumerate() {
        let (x, y, u, v) = (p[0], p[1], q[0], q[1]);
        let mut row_u = [0f64; N];
        let mut row_v = [0f64; N];
        row_u[..8].copy_from_slice(&[x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y]);
        row_v[..8].copy_from_slice(&[0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y]);
        for (j, basis) in bases.iter().enumerate() {
            row_u[8 + 2 * j] = basis[i];
            row_v[9 + 2 * j] = basis[i];
        }
        add_row(&mut ata, &mut atb, row_u, u);
        add_row(&mut ata, &mut atb, row_v, v);
    }
    let h = solve(ata, atb)?;
    h.iter().all(|c| c.is_finite()).then_some(h)
}

/// The homography plus `e * relief` (one 2-D parallax vector scaled by each point's relief)
/// that best maps `src` onto `dst` (`parallax_fit`); coordinates centred and scaled by each
/// set's spread, the relief to zero mean and unit RMS.
fn plane_plus_parallax(src: &[[f32; 2]], dst: &[[f32; 2]], depth: &[f32]) -> Option<ReliefFit> {
    let n = src.len().min(dst.len()).min(depth.len());
    if n < 12 {
        return None;
    }
    let (ns, nd) = (normalised(&src[..n]), normalised(&dst[..n]));
    let (z, depth) = standardised(&depth[..n])?;
    let h = parallax_fit::<10>(&ns, &nd, &[&z])?;
    Some(ReliefFit {
        h,
        src: spread(&src[..n]),
        dst: spread(&dst[..n]),
        depth,
        ns,
        nd,
        z,
    })
}

/// A print's bend about the image's vertical axis (a print held by its sides, however the
/// face on it is rolled): the depth of a cylinder at `dx` frame pixels across from the face's
/// centre, for `iod` pixels between the eyes (arbitrary scale; the homography takes up any
/// other choice of centre).
fn bend(dx: f32, iod: f32) -> f32 {
    (dx / iod).powi(2)
}

/// Two frames' patches of one face, and how their canonical points are matched.
struct Pairing<'a> {
    then: &'a FacePatch,
    now: &'a FacePatch,
    s_then: Similarity,
    s_now: Similarity,
    /// Eye distance in `then`'s patch pixels.
    iod: f32,
    /// Half-size of a compared patch, and the search's reach (patch pixels).
    r: isize,
    search: isize,
}

/// A canonical point's patch in `then` and where it matched in `now`: in patch pixels (the
/// match rounded) and in frame coordinates.
struct Match {
    at: [(isize, isize); 2],
    then: [f32; 2],
    now: [f32; 2],
}

impl<'a> Pairing<'a> {
    fn new(then: &'a FacePatch, now: &'a FacePatch) -> Option<Pairing<'a>> {
        if then.k != now.k {
            return None;
        }
        let s_then = Similarity::estimate(&ARCFACE_112, &then.landmarks)?;
        let s_now = Similarity::estimate(&ARCFACE_112, &now.landmarks)?;
        let iod = s_then.scale() * (ARCFACE_112[1][0] - ARCFACE_112[0][0]) / then.k as f32;
        Some(Pairing {
            then,
            now,
            s_then,
            s_now,
            iod,
            r: ((iod * 0.12).round() as isize).clamp(2, 5),
            search: ((iod * 0.15).round() as isize).clamp(2, 6),
        })
    }

    /// The canonical point `p`'s patch in `then`, searched for in `now` around where the
    /// face's similarity motion carries it.
    fn matched(&self, p: [f32; 2]) -> Option<Match> {
        let a = self.then.to_patch(self.s_then.apply(p));
        let b = self.now.to_patch(self.s_now.apply(p));
        let (ax, ay) = (a[0].round() as isize, a[1].round() as isize);
        let (bx, by) = (b[0].round() as isize, b[1].round() as isize);
        let m = match_patch(self.then, self.now, ax, ay, bx, by, self.r, self.search)?;
        Some(Match {
            at: [(ax, ay), (m[0].round() as isize, m[1].round() as isize)],
            then: self.then.to_frame([ax as f32, ay as f32]),
            now: self.now.to_frame(m),
        })
    }

    /// The face grid's points (the eyes and the mouth left out).
    fn face_points() -> impl Iterator<Item = [f32; 2]> {
        GRID_Y
            .iter()
            .flat_map(|&y| GRID_X.iter().map(move |&x| [x, y]))
            .filter(|&p| !excluded(p))
    }
}

/// Matches the face's patches of `then` in `now`: the observation, and the face plane's motion
/// back from `now` to `then` (frame coordinates; the homography through the matches, `None`
/// when degenerate), which is how a print's sheet around the face moved if the face is on one
/// (`context::observe`).
pub fn observe(then: &FacePatch, now: &FacePatch) -> Option<(FlowObservation, Option<Homography>)> {
    let pairing = Pairing::new(then, now)?;
    let s_now = pairing.s_now;
    let iod = pairing.iod;
    let mut src = Vec::new();
    let mut dst = Vec::new();
    let mut depth = Vec::new();
    let mut bends = Vec::new();
    let centre_x = pairing.s_then.apply([56.0, 56.0])[0];
    let iod_frame = iod * then.k as f32;
    for p in Pairing::face_points() {
        if let Some(m) = pairing.matched(p) {
            src.push(m.then);
            dst.push(m.now);
            depth.push(relief(p));
            bends.push(bend(m.then[0] - centre_x, iod_frame));
        }
    }
    if src.len() < MIN_POINTS {
        return None;
    }
    let fit = plane_fit(&src, &dst)?;
    let relief_fit = plane_plus_parallax(&src, &dst, &depth)?;
    let [ex, ey] = [relief_fit.h[8], relief_fit.h[9]];
    // In the face's own axes (its roll removed): x along the eyes.
    let (c, sn) = (
        f64::from(s_now.a / s_now.scale()),
        f64::from(s_now.b / s_now.scale()),
    );
    let face_axes = |[ex, ey]: [f64; 2]| [(c * ex + sn * ey) as f32, (-sn * ex + c * ey) as f32];
    let e = face_axes([ex, ey]);
    let unbent = relief_fit.unbent(&bends).map(face_axes);
    // How far matched points are from where the face's fit carries them, in eye distances.
    let off = |a: [f32; 2], m: [f32; 2], d: f32| {
        relief_fit
            .apply(a, d)
            .map(|p| (m[0] - p[0]).hypot(m[1] - p[1]) / iod_frame)
    };
    let mut face: Vec<f32> = src
        .iter()
        .zip(&dst)
        .zip(&depth)
        .filter_map(|((a, m), d)| off(*a, *m, *d))
        .collect();
    let mut mouth = Vec::new();
    for &gy in &MOUTH_Y {
        for &gx in &MOUTH_X {
            if let Some(m) = pairing.matched([gx, gy]) {
                mouth.extend(off(m.then, m.now, relief([gx, gy])));
            }
        }
    }
    let observation = FlowObservation {
        residual: fit.residual,
        points: src.len() as u32,
        e,
        unbent,
        mouth: (mouth.len() >= MIN_MOUTH_POINTS).then(|| median_of(&mut mouth)),
        face: median_of(&mut face),
    };
    Some((observation, Homography::estimate(&dst, &src)))
}

/// How much the face's smoothed texture changed between two frames, where it moved to: the
/// median, over the face grid's patches with contrast (eyes and mouth left out), of 1 minus
/// the normalised cross-correlation of a patch and its match (0: the same texture, moved; 1:
/// unrelated). Skin and paper keep their texture from one frame to the next; a screen's moiré
/// fringes, which move many times faster than the screen does, change it. `None` when too few
/// patches had contrast, or the patches cannot be compared.
pub fn texture_change(then: &FacePatch, now: &FacePatch) -> Option<f32> {
    let pairing = Pairing::new(then, now)?;
    let mut change: Vec<f32> = Pairing::face_points()
        .filter_map(|p| pairing.matched(p))
        .filter_map(|m| patch_change(then, now, m.at, pairing.r))
        .collect();
    (change.len() >= MIN_CHANGE_POINTS).then(|| median_of(&mut change))
}

/// 1 minus the normalised cross-correlation of the smoothed window of radius `r` at `at[0]` in
/// `then` and at `at[1]` in `now`; `None` for a window with too little contrast, or at the
/// edge.
fn patch_change(
    then: &FacePatch,
    now: &FacePatch,
    [(ax, ay), (mx, my)]: [(isize, isize); 2],
    r: isize,
) -> Option<f32> {
    let inside = |p: &FacePatch, x: isize, y: isize| {
        x - r >= 0 && y - r >= 0 && x + r < p.w as isize && y + r < p.h as isize
    };
    if !inside(then, ax, ay) || !inside(now, mx, my) {
        return None;
    }
    let n = ((2 * r + 1) * (2 * r + 1)) as f32;
    let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0f32, 0f32, 0f32, 0f32, 0f32);
    for (a, b) in then
        .smooth_window(ax, ay, r)
        .zip(now.smooth_window(mx, my, r))
    {
        sa += a;
        sb += b;
        saa += a * a;
        sbb += b * b;
        sab += a * b;
    }
    let var_a = (saa - sa * sa / n).max(0.0);
    let var_b = (sbb - sb * sb / n).max(0.0);
    if (var_a / n).sqrt() < MIN_CHANGE_CONTRAST || var_b <= 0.0 {
        return None;
    }
    let ncc = (sab - sa * sb / n) / (var_a * var_b).sqrt();
    Some(1.0 - ncc.clamp(-1.0, 1.0))
}

/// `data` (`w` by `h`) averaged over the (2 `r` + 1)-pixel square around each pixel, the
/// square cut at the borders; empty for `r` 0 (the data as it is).
fn smoothed(data: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    if r == 0 {
        return Vec::new();
    }
    let pass = |src: &[f32], len: usize, step: usize, lines: usize, line_step: usize| {
        let mut out = vec![0f32; src.len()];
        for l in 0..lines {
            let at = |j: usize| l * line_step + j * step;
            // A running sum over the square's span [i - r, i + r], cut to [0, len) (in f64: in
            // f32 its rounding drifts along a row).
            let mut sum: f64 = (0..=r.min(len - 1)).map(|j| f64::from(src[at(j)])).sum();
            for i in 0..len {
                let (lo, hi) = (i.saturating_sub(r), (i + r).min(len - 1));
                out[at(i)] = (sum / (hi - lo + 1) as f64) as f32;
                if i + r + 1 < len {
                    sum += f64::from(src[at(i + r + 1)]);
                }
                if i >= r {
                    sum -= f64::from(src[at(i - r)]);
                }
            }
        }
        out
    };
    let rows = pass(data, w, 1, h, w);
    pass(&rows, h, w, w, 1)
}

/// The median of a list (its upper middle; 0 when empty).
fn median_of(v: &mut [f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

/// The sub-pixel position in `now` of `then`'s patch centred at (ax, ay), searched within
/// `search` of (bx, by); `None` without texture, outside, or at the search's edge.
#[allow(clippy::too_many_arguments)]
fn match_patch(
    then: &FacePatch,
    now: &FacePatch,
    ax: isize,
    ay: isize,
    bx: isize,
    by: isize,
    r: isize,
    search: isize,
) -> Option<[f32; 2]> {
    let inside = |p: &FacePatch, x: isize, y: isize, m: isize| {
        x - m >= 1 && y - m >= 1 && x + m + 1 < p.w as isize && y + m + 1 < p.h as isize
    };
    if !inside(then, ax, ay, r) || !inside(now, bx, by, r + search) {
        return None;
    }
    // Texture: the structure tensor's smaller eigenvalue, and the patch's mean.
    let side = (2 * r + 1) as usize;
    let n = (side * side) as f32;
    let (mut gxx, mut gyy, mut gxy, mut mean) = (0f32, 0f32, 0f32, 0f32);
    let mut tpl = Vec::with_capacity(side * side);
    for y in ay - r..=ay + r {
        for x in ax - r..=ax + r {
            let (xu, yu) = (x as usize, y as usize);
            let gx = (then.at(xu + 1, yu) - then.at(xu - 1, yu)) / 2.0;
            let gy = (then.at(xu, yu + 1) - then.at(xu, yu - 1)) / 2.0;
            gxx += gx * gx;
            gyy += gy * gy;
            gxy += gx * gy;
            let v = then.at(xu, yu);
            mean += v;
            tpl.push(v);
        }
    }
    let (gxx, gyy, gxy) = (gxx / n, gyy / n, gxy / n);
    let min_eig = (gxx + gyy) / 2.0 - (((gxx - gyy) / 2.0).powi(2) + gxy * gxy).sqrt();
    if min_eig < MIN_TEXTURE {
        return None;
    }
    mean /= n;
    for v in &mut tpl {
        *v -= mean;
    }
    // Zero-mean SSD over the search window, from running sums: with the template zero-mean,
    // sum((v - mean(v) - t)^2) = sum(v^2) - sum(v)^2 / n - 2 sum(t v) + sum(t^2).
    let t2: f32 = tpl.iter().map(|t| t * t).sum();
    let span = (2 * search + 1) as usize;
    let mut cost = vec![0f32; span * span];
    for (j, oy) in (-search..=search).enumerate() {
        for (i, ox) in (-search..=search).enumerate() {
            let (cx, cy) = (bx + ox, by + oy);
            let (mut sum, mut sq, mut cross) = (0f32, 0f32, 0f32);
            for (row, y) in tpl.chunks_exact(side).zip(cy - r..=cy + r) {
                let start = y as usize * now.w + (cx - r) as usize;
                for (v, t) in now.data[start..start + side].iter().zip(row) {
                    sum += v;
                    sq += v * v;
                    cross += t * v;
                }
            }
            cost[j * span + i] = sq - sum * sum / n - 2.0 * cross + t2;
        }
    }
    let best = (0..cost.len()).min_by(|&p, &q| cost[p].total_cmp(&cost[q]))?;
    let (i, j) = (best % span, best / span);
    if i == 0 || j == 0 || i + 1 == span || j + 1 == span {
        return None;
    }
    let at = |i: usize, j: usize| cost[j * span + i];
    let sub = |l: f32, c: f32, r: f32| {
        let d = l - 2.0 * c + r;
        if d > 1e-6 {
            (0.5 * (l - r) / d).clamp(-0.5, 0.5)
        } else {
            0.0
        }
    };
    let dx = sub(at(i - 1, j), at(i, j), at(i + 1, j));
    let dy = sub(at(i, j - 1), at(i, j), at(i, j + 1));
    Some([
        (bx + i as isize - search) as f32 + dx,
        (by + j as isize - search) as f32 + dy,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A textured "face" image: smooth blobs, rendered through `map` (frame -> texture).
    fn render(map: impl Fn(f32, f32) -> [f32; 2]) -> RgbImage {
        RgbImage::from_fn(320, 320, |x, y| {
            let [u, v] = map(x as f32, y as f32);
            let t = 128.0
                + 50.0 * (u * 0.21).sin() * (v * 0.17).cos()
                + 30.0 * ((u + 2.0 * v) * 0.11).sin()
                + 20.0 * ((3.0 * u - v) * 0.07).cos();
            let g = t.clamp(0.0, 255.0) as u8;
            Rgb([g, g, g])
        })
    }

    fn landmarks(s: &Similarity) -> [[f32; 2]; 5] {
        ARCFACE_112.map(|p| s.apply(p))
    }

    /// A face 2x the template, and the same plane moved, turned a little and scaled.
    fn plane_moved() -> (Similarity, Similarity) {
        let base = Similarity {
            a: 2.0,
            b: 0.0,
            tx: 50.0,
            ty: 30.0,
        };
        let moved = Similarity {
            a: 2.0 * 1.01,
            b: 2.0 * 0.03,
            tx: 47.0,
            ty: 33.0,
        };
        (base, moved)
    }

    #[test]
    fn a_moving_plane_shows_no_relief_and_a_turning_bulge_does() {
        // The face 2.5x the template, at (40, 40).
        let base = Similarity {
            a: 2.5,
            b: 0.0,
            tx: 40.0,
            ty: 40.0,
        };
        let still = render(|x, y| [x, y]);
        let then = FacePatch::from_rgb(&still, &landmarks(&base), None).unwrap();
        // A plane shifted and rotated a little: the texture and landmarks move together.
        let moved = Similarity {
            a: 2.5 * 0.995,
            b: 2.5 * 0.05,
            tx: 43.0,
            ty: 38.0,
        };
        let m = moved.inverse();
        let b = base;
        let plane = render(|x, y| b.apply(m.apply([x, y])));
        let now = FacePatch::from_rgb(&plane, &landmarks(&moved), None).unwrap();
        let obs = observe(&then, &now).unwrap().0;
        assert!(obs.points >= 30, "{obs:?}");
        assert!(obs.residual < 0.01, "plane: {obs:?}");
        assert!(obs.parallax() < 0.003, "plane: {obs:?}");
        // A bulge centred on the nose moves sideways more than the face's edge (a head turning).
        let nose = base.apply(ARCFACE_112[2]);
        let bulge = render(|x, y| {
            let d2 = ((x - nose[0]).powi(2) + (y - nose[1]).powi(2)) / (60.0f32).powi(2);
            [x - 5.0 * (1.0 - d2).max(0.0), y]
        });
        let now = FacePatch::from_rgb(&bulge, &landmarks(&base), None).unwrap();
        let obs = observe(&then, &now).unwrap().0;
        // The nose moved right against the cheeks: parallax along the eyes, 5x the plane's.
        assert!(obs.residual > 0.015, "bulge: {obs:?}");
        assert!(obs.parallax() > 0.012, "bulge: {obs:?}");
        assert!(obs.e[0].abs() > 4.0 * obs.e[1].abs(), "bulge: {obs:?}");
        // A cylinder does not explain it: the relief stays when a print's bend is fitted too.
        let unbent = obs.unbent.expect("the bend fit is not singular");
        assert!(
            unbent[0].hypot(unbent[1]) > 0.7 * obs.parallax(),
            "bulge: {obs:?}"
        );
    }

    #[test]
    fn a_bent_print_turning_has_a_cylinders_relief_which_the_bend_term_takes_up() {
        // A face 2x the template, rolled by `roll` on a print bent about the image's vertical
        // axis (radius `R` px through the face's centre), seen straight on (orthographic) and
        // then turned by 0.3 rad about that axis (a print swayed by 25 degrees at half a turn
        // a second moves that much in 0.3 s).
        const R: f32 = 300.0;
        let observed = |roll: f32| {
            let base = Similarity {
                a: 2.0 * roll.cos(),
                b: 2.0 * roll.sin(),
                tx: 50.0,
                ty: 30.0,
            };
            let cx = base.apply([56.0, 56.0])[0];
            let (c, s) = (0.3f32.cos(), 0.3f32.sin());
            // The sheet point at texture column `u` lands at this frame column once turned.
            let turned = move |u: f32| {
                let z = (u - cx).powi(2) / (2.0 * R);
                cx + (u - cx) * c + z * s
            };
            let then = render(|x, y| [x, y]);
            let now = render(|x, y| {
                // Frame column -> texture column: a few fixed-point steps of `turned`.
                let mut u = x;
                for _ in 0..6 {
                    u += x - turned(u);
                }
                [u, y]
            });
            let lm_then = landmarks(&base);
            let lm_now = lm_then.map(|[x, y]| [turned(x), y]);
            let then = FacePatch::from_rgb(&then, &lm_then, None).unwrap();
            let now = FacePatch::from_rgb(&now, &lm_now, None).unwrap();
            observe(&then, &now).unwrap().0
        };
        for roll in [0.0, 0.4] {
            let obs = observed(roll);
            let unbent = obs.unbent.expect("the bend fit is not singular");
            let (e, u) = (obs.parallax(), unbent[0].hypot(unbent[1]));
            assert!(
                e > 0.004,
                "roll {roll}: the cylinder looks like relief: {obs:?}"
            );
            assert!(
                u < 0.35 * e,
                "roll {roll}: the bend term takes it up: {obs:?}"
            );
        }
    }

    #[test]
    fn smoothing_averages_the_square_cut_at_the_borders() {
        let (w, h) = (7, 5);
        let data: Vec<f32> = (0..w * h).map(|i| ((i * 37) % 11) as f32).collect();
        assert!(smoothed(&data, w, h, 0).is_empty());
        for r in 1..4 {
            let fast = smoothed(&data, w, h, r);
            for y in 0..h {
                for x in 0..w {
                    let (xs, ys) = (
                        x.saturating_sub(r)..=(x + r).min(w - 1),
                        y.saturating_sub(r)..=(y + r).min(h - 1),
                    );
                    let data = &data;
                    let cells: Vec<f32> = ys
                        .flat_map(|yy| xs.clone().map(move |xx| data[yy * w + xx]))
                        .collect();
                    let direct = cells.iter().sum::<f32>() / cells.len() as f32;
                    assert!(
                        (fast[y * w + x] - direct).abs() < 1e-4,
                        "r {r} at ({x}, {y})"
                    );
                }
            }
        }
    }

    #[test]
    fn moire_fringes_moving_against_a_plane_change_its_texture_and_pixel_noise_does_not() {
        let (base, moved) = plane_moved();
        let (m, b) = (moved.inverse(), base);
        // A frame of the plane, times a screen's coarse dot lattice (18 px apart, 20 % deep) at
        // `phase` (fringes move with the screen's slightest motion), plus pixel noise.
        let frame = |at: &dyn Fn(f32, f32) -> [f32; 2], depth: f32, phase: f32, seed: u64| {
            let mut state = seed;
            let mut img = render(at);
            for (x, y, p) in img.enumerate_pixels_mut() {
                let grid =
                    |c: u32| 0.5 + 0.5 * (std::f32::consts::TAU * c as f32 / 18.0 + phase).cos();
                let moire = 1.0 - depth * grid(x) * grid(y);
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state % 9) as f32 - 4.0;
                // Skin's gentle shading: a third of the test texture's contrast.
                let skin = 128.0 + (f32::from(p.0[0]) - 128.0) / 3.0;
                let g = (skin * moire + noise).clamp(0.0, 255.0) as u8;
                *p = Rgb([g, g, g]);
            }
            img
        };
        let same = |x: f32, y: f32| [x, y];
        let plane = |x: f32, y: f32| b.apply(m.apply([x, y]));
        let change = |depth: f32, phase: f32| {
            let then = FacePatch::from_rgb(&frame(&same, depth, 0.0, 1), &landmarks(&base), None);
            let now = frame(&plane, depth, phase, 2);
            let now = FacePatch::from_rgb(&now, &landmarks(&moved), None).unwrap();
            texture_change(&then.unwrap(), &now).unwrap()
        };
        // Paper (or skin) with the sensor's noise: the texture moved, unchanged.
        let paper = change(0.0, 0.0);
        assert!(paper < 0.02, "paper: {paper}");
        // A screen whose fringes moved by a third of their spacing: over the default
        // `liveness.screen_change` (0.07).
        let third = change(0.2, std::f32::consts::TAU / 3.0);
        assert!(third > 0.07, "fringes moved a third: {third}");
    }

    #[test]
    fn lips_that_move_against_the_face_are_seen_and_a_moving_plane_shows_none() {
        let (base, moved) = plane_moved();
        let iod = 2.0 * (ARCFACE_112[1][0] - ARCFACE_112[0][0]);
        let then = FacePatch::from_rgb(&render(|x, y| [x, y]), &landmarks(&base), None).unwrap();
        // The plane moved, turned a little and scaled: the mouth goes where the face goes.
        let (m, b) = (moved.inverse(), base);
        let plane = render(|x, y| b.apply(m.apply([x, y])));
        let now = FacePatch::from_rgb(&plane, &landmarks(&moved), None).unwrap();
        let obs = observe(&then, &now).unwrap().0;
        let lips = obs.mouth.expect("the mouth's patches match");
        assert!(lips < 0.01, "plane: {obs:?}");
        assert!(obs.face < 0.01, "plane: {obs:?}");
        // The jaw drops: the lips and the chin move down by up to 8 px (0.11 eye distances),
        // the rest of the face stays.
        let jaw = base.apply([56.0, 100.0]);
        let talking = render(|x, y| {
            let d2 = ((x - jaw[0]) / 40.0).powi(2) + ((y - jaw[1]) / 25.0).powi(2);
            [x, y - 8.0 * (-d2 / 2.0).exp()]
        });
        let now = FacePatch::from_rgb(&talking, &landmarks(&base), None).unwrap();
        let obs = observe(&then, &now).unwrap().0;
        let lips = obs.mouth.expect("the mouth's patches match");
        assert!(lips > 0.03, "talking: {obs:?} (iod {iod})");
        assert!(lips > 3.0 * obs.face, "talking: {obs:?}");
    }

    #[test]
    fn a_face_hovering_at_a_patch_scale_boundary_is_still_compared() {
        // Eye distances of 95 and 97 px straddle 3 x TARGET_IOD: on their own the two frames
        // would be box-averaged by 2 and by 3, and could not be compared.
        let span = ARCFACE_112[1][0] - ARCFACE_112[0][0];
        let at = |iod: f32| Similarity {
            a: iod / span,
            b: 0.0,
            tx: 8.0,
            ty: 4.0,
        };
        let (near, far) = (at(97.0), at(95.0));
        let then = FacePatch::from_rgb(&render(|x, y| [x, y]), &landmarks(&far), None).unwrap();
        // The plane came a little closer.
        let (m, b) = (near.inverse(), far);
        let closer = render(|x, y| b.apply(m.apply([x, y])));
        let alone = FacePatch::from_rgb(&closer, &landmarks(&near), None).unwrap();
        assert!(observe(&then, &alone).is_none(), "factors 2 and 3 differ");
        let now = FacePatch::from_rgb(&closer, &landmarks(&near), Some(&then)).unwrap();
        let obs = observe(&then, &now)
            .expect("the factor of the frame before is kept")
            .0;
        assert!(obs.parallax() < 0.003, "plane: {obs:?}");
        // A face that grew far beyond the range takes its own factor again.
        let grown = at(150.0);
        let big = FacePatch::from_rgb(&render(|x, y| [x, y]), &landmarks(&grown), Some(&then));
        assert_eq!(big.map(|p| p.k), Some(4));
    }
}
