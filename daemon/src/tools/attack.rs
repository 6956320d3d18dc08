//! SYNTHETIC presentation attacks: a still photo rendered as a frame sequence of the photo
//! held up to the camera — a rigid plane (print), a bent print, or a screen showing it —
//! with hand tremor and sway, blur, glare, screen moiré, sensor noise, at door distances, in
//! front of a textured room (static value noise: what surrounds the sheet has detail that stays
//! while the sheet moves, as a real room's does). A screen's moiré is its pixel grid (pitch just
//! over one camera pixel) sampled at the camera's pixels, so the fringes move and change with
//! the screen, as real moiré does (an earlier version drew them fixed in the image).
//! These are synthetic attacks, named so everywhere; they stand in for real print/replay
//! captures, which no registry package provides.
//!
//! Two kinds carry real motion: a **replay screen** plays a real clip of a person (blinking,
//! talking, turning) on the moving screen, and an **eye-cut print** is a print of a photo with
//! the eyes cut out and a real person's blinking eyes behind the holes (their eye regions from
//! a real clip, warped onto the photo's eyes frame by frame).
//!
//! Geometry: a pinhole camera (640x480, focal 600 px) looks at the sheet; every output pixel's
//! ray is intersected with the sheet (a plane, or a cylinder for a bent print) and the photo
//! is sampled there bilinearly. The motion is smooth sway (yaw up to 25°, pitch up to 18°,
//! roll up to 8°, drift and distance changes) plus per-frame tremor, seeded, so a sequence is
//! reproducible.

use image::{Rgb, RgbImage};

use super::bench_index::Rng;

pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 480;
const FOCAL: f32 = 600.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// A flat print held by hand.
    Print,
    /// A print bent around a vertical axis, the bend changing as it is held.
    BentPrint,
    /// A phone or tablet screen showing the photo: bezel, emitted light, moiré, glare.
    Screen,
    /// A print with the eyes cut out and real blinking eyes behind it (needs --clip).
    EyeCutPrint,
    /// A screen replaying a real clip of a person (needs --clip; --photo is not used).
    ReplayScreen,
}

impl AttackKind {
    pub const ALL: [AttackKind; 5] = [
        AttackKind::Print,
        AttackKind::BentPrint,
        AttackKind::Screen,
        AttackKind::EyeCutPrint,
        AttackKind::ReplayScreen,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AttackKind::Print => "print",
            AttackKind::BentPrint => "bent_print",
            AttackKind::Screen => "screen",
            AttackKind::EyeCutPrint => "eye_cut_print",
            AttackKind::ReplayScreen => "replay_screen",
        }
    }

    /// Whether the attack plays a real clip (the eyes of an eye-cut print, a replay).
    pub fn needs_clip(self) -> bool {
        matches!(self, AttackKind::EyeCutPrint | AttackKind::ReplayScreen)
    }

    fn screen(self) -> bool {
        matches!(self, AttackKind::Screen | AttackKind::ReplayScreen)
    }
}

/// What the sheet shows.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    /// A still photo.
    Photo(&'a RgbImage),
    /// A real clip, looped (a replay).
    Clip(&'a [RgbImage]),
    /// A photo whose eyes (image-left, image-right) are cut out, with the eyes of a real clip
    /// behind the holes (`clip_eyes`: that clip's eye landmarks per frame, where seen).
    EyeCut {
        photo: &'a RgbImage,
        photo_eyes: [[f32; 2]; 2],
        clip: &'a [RgbImage],
        clip_eyes: &'a [Option<[[f32; 2]; 2]>],
    },
}

impl Content<'_> {
    /// The sheet in frame `i` (all frames of a clip share its size).
    fn sheet(
        &self,
        i: usize,
        last_eyes: &mut Option<[[f32; 2]; 2]>,
    ) -> std::borrow::Cow<'_, RgbImage> {
        use std::borrow::Cow;
        match *self {
            Content::Photo(p) => Cow::Borrowed(p),
            Content::Clip(c) => Cow::Borrowed(&c[i % c.len().max(1)]),
            Content::EyeCut {
                photo,
                photo_eyes,
                clip,
                clip_eyes,
            } => {
                let j = i % clip.len().max(1);
                if let Some(e) = clip_eyes.get(j).copied().flatten() {
                    *last_eyes = Some(e);
                }
                match *last_eyes {
                    Some(eyes) => Cow::Owned(eye_cut(photo, photo_eyes, &clip[j], eyes)),
                    None => Cow::Borrowed(photo),
                }
            }
        }
    }
}

/// The photo with elliptical holes at its eyes, showing `real`'s eyes behind them (a similarity
/// maps the photo's eye pair onto the real eye pair), the hole's cut edge in shadow.
fn eye_cut(
    photo: &RgbImage,
    eyes: [[f32; 2]; 2],
    real: &RgbImage,
    real_eyes: [[f32; 2]; 2],
) -> RgbImage {
    let mut out = photo.clone();
    let (a, b) = (eyes[0], eyes[1]);
    let (ra, rb) = (real_eyes[0], real_eyes[1]);
    let iod = (b[0] - a[0]).hypot(b[1] - a[1]).max(1.0);
    // Similarity photo -> real: z' = ra + k (z - a), k complex.
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let (ex, ey) = (rb[0] - ra[0], rb[1] - ra[1]);
    let den = dx * dx + dy * dy;
    let (kr, ki) = ((ex * dx + ey * dy) / den, (ey * dx - ex * dy) / den);
    let (rx, ry) = (0.34 * iod, 0.2 * iod);
    let angle = dy.atan2(dx);
    let (c, sn) = (angle.cos(), angle.sin());
    for centre in eyes {
        let x0 = (centre[0] - rx).floor().max(0.0) as u32;
        let x1 = ((centre[0] + rx).ceil() as u32).min(photo.width().saturating_sub(1));
        let y0 = (centre[1] - rx).floor().max(0.0) as u32;
        let y1 = ((centre[1] + rx).ceil() as u32).min(photo.height().saturating_sub(1));
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (px, py) = (x as f32 - centre[0], y as f32 - centre[1]);
                let (u, v) = (c * px + sn * py, -sn * px + c * py);
                let r = ((u / rx).powi(2) + (v / ry).powi(2)).sqrt();
                if r > 1.0 {
                    continue;
                }
                let (zx, zy) = (x as f32 - a[0], y as f32 - a[1]);
                let (qx, qy) = (ra[0] + kr * zx - ki * zy, ra[1] + ki * zx + kr * zy);
                let Some(mut p) = bilinear(real, qx, qy) else {
                    continue;
                };
                if r > 0.85 {
                    p = p.map(|v| v * 0.55);
                }
                out.put_pixel(x, y, Rgb(p.map(|v| v.clamp(0.0, 255.0) as u8)));
            }
        }
    }
    out
}

impl Rng {
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// Row-major 3x3 rotation from yaw (about y), pitch (about x), roll (about z), radians.
fn rotation(yaw: f32, pitch: f32, roll: f32) -> [[f32; 3]; 3] {
    let (cy, sy) = (yaw.cos(), yaw.sin());
    let (cp, sp) = (pitch.cos(), pitch.sin());
    let (cr, sr) = (roll.cos(), roll.sin());
    let ry = [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]];
    let rx = [[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]];
    let rz = [[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]];
    mul(&mul(&rz, &ry), &rx)
}

fn mul(a: &[[f32; 3]; 3], b: &[[f32; 3]; 3]) -> [[f32; 3]; 3] {
    std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| a[i][k] * b[k][j]).sum()))
}

/// Rᵀ v.
fn tmul(r: &[[f32; 3]; 3], v: [f32; 3]) -> [f32; 3] {
    std::array::from_fn(|j| (0..3).map(|i| r[i][j] * v[i]).sum())
}

/// Where the sheet is in one frame.
#[derive(Debug, Clone, Copy)]
struct Pose {
    rot: [[f32; 3]; 3],
    /// Sheet centre in camera coordinates (units: sheet pixels at scale 1).
    centre: [f32; 3],
    /// Bend radius in sheet pixels (None: flat).
    bend: Option<f32>,
}

/// The sheet point (photo pixel, centred) seen along the ray of image pixel (x, y).
fn hit(pose: &Pose, x: f32, y: f32) -> Option<[f32; 2]> {
    let d = [
        (x - WIDTH as f32 / 2.0) / FOCAL,
        (y - HEIGHT as f32 / 2.0) / FOCAL,
        1.0,
    ];
    let o = tmul(&pose.rot, pose.centre.map(|c| -c));
    let d = tmul(&pose.rot, d);
    match pose.bend {
        None => {
            if d[2].abs() < 1e-6 {
                return None;
            }
            let s = -o[2] / d[2];
            (s > 0.0).then(|| [o[0] + s * d[0], o[1] + s * d[1]])
        }
        Some(rho) => {
            // The sheet is the arc x = rho sin(t), z = -rho (1 - cos t): edges towards the camera.
            let oz = o[2] + rho;
            let a = d[0] * d[0] + d[2] * d[2];
            let b = 2.0 * (o[0] * d[0] + oz * d[2]);
            let c = o[0] * o[0] + oz * oz - rho * rho;
            let disc = b * b - 4.0 * a * c;
            if disc < 0.0 || a < 1e-9 {
                return None;
            }
            let root = disc.sqrt();
            [(-b - root) / (2.0 * a), (-b + root) / (2.0 * a)]
                .into_iter()
                .filter(|s| *s > 0.0)
                .filter_map(|s| {
                    let (px, pz) = (o[0] + s * d[0], oz + s * d[2]);
                    let theta = px.atan2(pz);
                    (theta.abs() < std::f32::consts::FRAC_PI_2)
                        .then_some([rho * theta, o[1] + s * d[1]])
                })
                .next()
        }
    }
}

fn bilinear(img: &RgbImage, x: f32, y: f32) -> Option<[f32; 3]> {
    let (w, h) = (img.width() as f32, img.height() as f32);
    if !(0.0..w - 1.0).contains(&x) || !(0.0..h - 1.0).contains(&y) {
        return None;
    }
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let p = |dx: u32, dy: u32| img.get_pixel(x0 + dx, y0 + dy).0.map(f32::from);
    let (a, b, c, d) = (p(0, 0), p(1, 0), p(0, 1), p(1, 1));
    Some(std::array::from_fn(|i| {
        let top = a[i] + (b[i] - a[i]) * fx;
        let bottom = c[i] + (d[i] - c[i]) * fx;
        top + (bottom - top) * fy
    }))
}

/// Renders `frames` frames of `kind` showing `content`. `face` is the box (sheet pixels; for a
/// clip, in its first frame) of the face to present: the sheet is placed so that this face
/// appears 120-220 px wide near the image centre, as a face at a door does.
pub fn render(
    content: Content<'_>,
    face: [f32; 4],
    kind: AttackKind,
    frames: usize,
    fps: f32,
    seed: u64,
) -> Vec<RgbImage> {
    let mut last_eyes = None;
    let first = content.sheet(0, &mut last_eyes).into_owned();
    let photo = &first;
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let target = rng.range(120.0, 220.0);
    // Distance (in sheet pixels) at which the face appears `target` px wide.
    let z0 = FOCAL * (face[2] - face[0]).max(8.0) / target;
    let (pw, ph) = (photo.width() as f32, photo.height() as f32);
    let face_at = [
        (face[0] + face[2]) / 2.0 - pw / 2.0,
        (face[1] + face[3]) / 2.0 - ph / 2.0,
        0.0,
    ];
    let amp = [
        rng.range(8.0, 25.0).to_radians(),
        rng.range(5.0, 18.0).to_radians(),
        rng.range(2.0, 8.0).to_radians(),
    ];
    let freq = [
        rng.range(0.2, 0.6),
        rng.range(0.15, 0.5),
        rng.range(0.1, 0.4),
    ];
    let phase = [
        rng.range(0.0, 6.3),
        rng.range(0.0, 6.3),
        rng.range(0.0, 6.3),
    ];
    let drift = [rng.range(-60.0, 60.0), rng.range(-40.0, 40.0)];
    let bend0 = rng.range(0.7, 2.0) * pw;
    let background = [
        rng.range(40.0, 200.0),
        rng.range(40.0, 200.0),
        rng.range(40.0, 200.0),
    ];
    let glare = [
        rng.range(0.2, 0.8),
        rng.range(0.2, 0.8),
        rng.range(0.05, 0.2) * pw,
    ];
    // The screen's pixel grid, pitch in camera pixels at the starting distance (just over
    // one, so the sensor aliases it into moiré fringes that move and change as the screen does,
    // as real moiré does), and its depth of modulation.
    let moire = [
        rng.range(1.04, 1.25),
        rng.range(1.04, 1.25),
        rng.range(0.1, 0.3),
    ];
    let pitch = [moire[0] * z0 / FOCAL, moire[1] * z0 / FOCAL];
    // A room behind the sheet: static texture (value noise on a 24 px and a 6 px lattice), so
    // that what surrounds the sheet has detail that stays while the sheet moves.
    let room = Room::new(&mut rng);
    let blur_every = (rng.next() % 4 + 3) as usize;
    let mut tremor = [0f32; 5];
    (0..frames)
        .map(|i| {
            let t = i as f32 / fps;
            for v in tremor.iter_mut() {
                *v = 0.7 * *v + rng.range(-1.0, 1.0);
            }
            let angle = |k: usize| amp[k] * (std::f32::consts::TAU * freq[k] * t + phase[k]).sin();
            let rot = rotation(
                angle(0) + tremor[0] * 0.006,
                angle(1) + tremor[1] * 0.006,
                angle(2) + tremor[2] * 0.004,
            );
            let z = z0 * (1.0 + 0.1 * (0.7 * t + phase[0]).sin());
            // The face's image position: drift and tremor in pixels around the centre.
            let offset = [
                drift[0] * (0.5 * t).sin() + 2.0 * tremor[3],
                drift[1] * (0.4 * t).cos() + 2.0 * tremor[4],
            ];
            let rf: [f32; 3] =
                std::array::from_fn(|i| (0..3).map(|k| rot[i][k] * face_at[k]).sum());
            let centre = [
                offset[0] * z / FOCAL - rf[0],
                offset[1] * z / FOCAL - rf[1],
                z - rf[2],
            ];
            let bend = (kind == AttackKind::BentPrint)
                .then(|| bend0 * (1.0 + 0.3 * (0.9 * t + phase[1]).sin()));
            let pose = Pose { rot, centre, bend };
            let glare_at = [
                pw * (glare[0] + 0.1 * (0.8 * t).sin()),
                ph * (glare[1] + 0.1 * (0.6 * t).cos()),
            ];
            let sheet = content.sheet(i, &mut last_eyes);
            let photo: &RgbImage = &sheet;
            let mut frame = RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
                let noise = rng.range(-4.0, 4.0);
                let texture = room.at(x, y);
                let bg = |k: usize| {
                    background[k] * (0.8 + 0.2 * y as f32 / HEIGHT as f32) + texture + noise
                };
                let Some([sx, sy]) = hit(&pose, x as f32, y as f32) else {
                    return Rgb(std::array::from_fn(|k| bg(k).clamp(0.0, 255.0) as u8));
                };
                let (u, v) = (sx + pw / 2.0, sy + ph / 2.0);
                let border = 0.06 * pw;
                let inside_bezel = kind.screen()
                    && (-border..pw + border).contains(&u)
                    && (-border..ph + border).contains(&v);
                let Some(mut c) = bilinear(photo, u, v) else {
                    return Rgb(std::array::from_fn(|k| {
                        if inside_bezel { 12.0 + noise } else { bg(k) }.clamp(0.0, 255.0) as u8
                    }));
                };
                match kind {
                    AttackKind::Screen | AttackKind::ReplayScreen => {
                        // Emitted light (lifted blacks, cool cast) and moiré from the pixel grid.
                        let grid =
                            |c: f32, p: f32| 0.5 + 0.5 * (std::f32::consts::TAU * c / p).cos();
                        let m = 1.0 - moire[2] * grid(sx, pitch[0]) * grid(sy, pitch[1]);
                        c = [
                            (25.0 + 0.85 * c[0]) * m,
                            (25.0 + 0.9 * c[1]) * m,
                            (30.0 + 0.95 * c[2]) * m,
                        ];
                    }
                    AttackKind::Print | AttackKind::BentPrint | AttackKind::EyeCutPrint => {
                        // Paper: lower contrast, warmer.
                        c = [12.0 + 0.9 * c[0], 10.0 + 0.88 * c[1], 8.0 + 0.84 * c[2]];
                    }
                }
                let g = {
                    let (dx, dy) = (u - glare_at[0], v - glare_at[1]);
                    110.0 * (-(dx * dx + dy * dy) / (2.0 * glare[2] * glare[2])).exp()
                };
                Rgb(std::array::from_fn(|k| {
                    (c[k] + g + noise).clamp(0.0, 255.0) as u8
                }))
            });
            if i % blur_every == 0 {
                frame = box_blur(&frame);
            }
            frame
        })
        .collect()
}

/// Static texture of the room behind the sheet: value noise on a coarse and a fine lattice.
struct Room {
    coarse: Vec<f32>,
    fine: Vec<f32>,
}

const COARSE: u32 = 24;
const FINE: u32 = 6;

impl Room {
    fn new(rng: &mut Rng) -> Room {
        let lattice = |cell: u32, amp: f32, rng: &mut Rng| {
            let n = ((WIDTH / cell + 2) * (HEIGHT / cell + 2)) as usize;
            (0..n).map(|_| rng.range(-amp, amp)).collect()
        };
        Room {
            coarse: lattice(COARSE, 30.0, rng),
            fine: lattice(FINE, 10.0, rng),
        }
    }

    fn at(&self, x: u32, y: u32) -> f32 {
        let sample = |v: &[f32], cell: u32| {
            let cols = WIDTH / cell + 2;
            let (cx, cy) = (x / cell, y / cell);
            let (fx, fy) = (
                (x % cell) as f32 / cell as f32,
                (y % cell) as f32 / cell as f32,
            );
            let g = |i: u32, j: u32| v[((cy + j) * cols + cx + i) as usize];
            let top = g(0, 0) + (g(1, 0) - g(0, 0)) * fx;
            let bottom = g(0, 1) + (g(1, 1) - g(0, 1)) * fx;
            top + (bottom - top) * fy
        };
        sample(&self.coarse, COARSE) + sample(&self.fine, FINE)
    }
}

/// 3x3 box blur (hand motion blur on some frames).
fn box_blur(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let mut s = [0u32; 3];
        let mut n = 0;
        for dy in -1i32..=1 {
            for dx in -1i32..=1 {
                let (xx, yy) = (x as i32 + dx, y as i32 + dy);
                if xx >= 0 && yy >= 0 && (xx as u32) < w && (yy as u32) < h {
                    let p = img.get_pixel(xx as u32, yy as u32).0;
                    for k in 0..3 {
                        s[k] += u32::from(p[k]);
                    }
                    n += 1;
                }
            }
        }
        Rgb(s.map(|v| (v / n) as u8))
    })
}
