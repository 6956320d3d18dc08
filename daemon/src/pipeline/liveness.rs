//! Liveness over frames, per tracked face: blinks (eyelid opening against the person's own
//! open-eye baseline), head motion (affine-invariant pose cues that a flat photo cannot change),
//! mouth movement (talking, expressions: the mesh's lip opening, and the lips' own texture
//! moving against the face in `flow.rs`), relief (the face's own texture moving off one plane,
//! `flow.rs`: the same plane argument over ~60 pixel patches instead of 5 landmarks, which works
//! on faces too blurry for the landmarks), and a presentation-attack score from the same geometry
//! and from three cues that veto everything else: the scene around the face moving with it (a
//! held sheet or screen, `context.rs`), a straight edge beside or above it moving against the
//! room (a sheet's or a screen's border, `edge.rs`) and a screen's pixel grid on the face
//! (`screen.rs`).
//!
//! Why the geometry works: a printed photo or a screen moves as one rigid plane, and the images
//! of a plane in two frames are related by a homography. The eyes and mouth corners give four
//! correspondences, which fix that homography exactly; for a plane it also predicts where the
//! nose goes. A real nose sits ~0.5 eye distances in front of the eye-mouth plane, so a head
//! turn moves it off the prediction (parallax), however the head was shifted, scaled or
//! rolled; a photo, at any tilt and with full perspective, does not. Tilting a photo does change
//! the face's aspect (foreshortening) and roll: plane-like motion without parallax is evidence
//! of an attack. A face presented on a sheet or a screen keeps that verdict when it is lost
//! for a moment and found again as a new track (`PresentationMemory`).
//!
//! Invariant: `LivenessTrack` is pure state over observations (no models, no clock): the same
//! observations give the same events and score.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::context::ContextObservation;
use super::edge::EdgeObservation;
use super::eyes::EyeObservation;
use super::flow::FlowObservation;
use super::mesh::{MeshObservation, PlaneFit, plane_fit};

/// Frame pairs whose face-flow parallax vectors are taken together (median per component) for
/// a relief event: a head turns the same way for half a second, the noise of a screen's moving
/// moiré fringes does not.
pub const RELIEF_FRAMES: usize = 5;

/// The time between frames `screen_change` holds for (10 fps). A real face's texture changes
/// more between frames farther apart (at 5 fps `lp_d9`'s grin reached 0.096, against 0.059 at
/// 10 fps), a screen's fringes change completely either way: the limit grows in proportion.
pub const CHANGE_INTERVAL_MS: f64 = 100.0;

/// Moiré peaks whose median `LivenessConfig::moire_sustained` judges.
pub const MOIRE_FRAMES: usize = 5;

/// How long (ms) and how near (face widths between centres) a presented face's evidence
/// carries over to a new track: a screen or a sheet hidden for a moment and shown again, which
/// the tracker takes for a new face, is still the attack it was.
pub const PRESENTATION_MEMORY_MS: f64 = 3000.0;
pub const PRESENTATION_MEMORY_WIDTHS: f32 = 1.5;

/// The evidence that a face was presented on a held sheet or a screen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Presentation {
    sheet_frames: u32,
    room_frames: u32,
    border_frames: u32,
    room_edge_frames: u32,
    screen_frames: u32,
    screen_certain: bool,
}

/// A presented face last seen at `t_ms`, centred at `centre` (mean of its landmarks), `width`
/// pixels wide.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PresentedNear {
    t_ms: f64,
    centre: [f32; 2],
    width: f32,
    presentation: Presentation,
}

impl PresentedNear {
    /// Whether a face appearing at `t_ms` at `centre`, `width` wide, may be the same one.
    fn covers(&self, t_ms: f64, centre: [f32; 2], width: f32) -> bool {
        let reach = PRESENTATION_MEMORY_WIDTHS * self.width.max(width);
        t_ms - self.t_ms <= PRESENTATION_MEMORY_MS
            && (centre[0] - self.centre[0]).hypot(centre[1] - self.centre[1]) <= reach
    }
}

/// The last face of a sequence presented on a sheet or a screen, handed down to a new track
/// that appears near it soon after: a screen hidden for a moment and shown again stays a
/// screen. One per stream (and per sequence `pad-eval` judges).
#[derive(Debug, Clone, Copy, Default)]
pub struct PresentationMemory(Option<PresentedNear>);

impl PresentationMemory {
    /// Starts a new track, appearing at `t_ms` at `centre` (`centre()`), `width` wide, from
    /// the evidence of a presented face just lost there, if any.
    pub fn hand_down(&self, track: &mut LivenessTrack, t_ms: f64, centre: [f32; 2], width: f32) {
        if let Some(p) = self.0.filter(|p| p.covers(t_ms, centre, width)) {
            track.inherit(p.presentation);
        }
    }

    /// After a track's update at `t_ms`: remembers it where it is, if it is presented.
    pub fn note(&mut self, track: &LivenessTrack, t_ms: f64, centre: [f32; 2], width: f32) {
        if let Some(presentation) = track.presentation() {
            self.0 = Some(PresentedNear {
                t_ms,
                centre,
                width,
                presentation,
            });
        }
    }
}

/// Mean of the landmarks: a face's centre for `PresentationMemory`.
pub fn centre(landmarks: &[[f32; 2]; 5]) -> [f32; 2] {
    let (x, y) = landmarks
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p[0], y + p[1]));
    [x / 5.0, y / 5.0]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LivenessConfig {
    /// Eyes count as closing below this fraction of the open-eye baseline.
    pub blink_close_ratio: f32,
    /// ...and as reopened once back this fraction of the way from the lowest opening to the
    /// baseline.
    pub blink_reopen_fraction: f32,
    /// Longest closure that is a blink (longer is eyes closed, not a blink).
    pub blink_max_ms: f64,
    /// Open-eye frames in the rolling baseline (80th percentile).
    pub blink_baseline_frames: usize,
    /// Open-eye frames needed before a closure can be judged (at least 2: the noise is the
    /// median change between them).
    pub blink_min_baseline_frames: usize,
    /// Below this baseline opening the eyes are not measurable (squint, occlusion): no blinks.
    pub blink_min_baseline: f32,
    /// Below this baseline opening (a squint: laughing, crying, narrow lids) the eye model's
    /// reading of one eye wobbles on its own, on a photo too: a closure is a blink only if each
    /// eye fell under `blink_close_ratio` of its own open level, as a blink closes both. 0: off.
    pub blink_squint_baseline: f32,
    /// A closure must also go this many times the open-eye noise (median frame-to-frame change
    /// of the baseline openings) below the open level: on a small or blurred face the eye
    /// model's opening wobbles, and only a dip beyond that wobble is a blink.
    pub blink_noise_factor: f32,
    /// After a blink ends, no new closure starts for this long (a slow reopening is one blink).
    pub blink_refractory_ms: f64,
    /// Median eye sharpness (Laplacian variance of the eye crops) below which a face is too
    /// blurry or coarse for nose parallax to count as evidence of life (blinks are judged on
    /// their own noise, `blink_noise_factor`).
    pub min_eye_sharpness: f32,
    /// Change of the yaw or pitch cue (see the module doc) that is one head movement.
    pub motion_threshold: f32,
    /// Nose parallax (eye distances) that is evidence of a real head on its own.
    pub parallax_live: f32,
    /// Foreshortening of the rigid upper face (face-mesh plane fit against the track's first
    /// frame) beyond which, with no blink or strong parallax, the face moved like a tilted
    /// sheet; twice it is certain.
    pub planar_anisotropy: f32,
    /// A presentation-attack score above this is an attack.
    pub spoof_threshold: f32,
    /// Obstacle models (mask, palm) run on a track's first frames and then every N frames.
    pub obstacle_every_frames: u32,
    /// Inter-ocular distance (pixels, median of recent frames) under which a face is too small
    /// for its eyelids and head movement to be judged: the person is asked to come closer.
    pub min_face_iod_px: f32,
    /// Context motion (`context.rs`): a frame votes "held sheet" when at least
    /// `context_min_votes` blocks around the face moved with it and `context_ratio` times more
    /// than stayed, and beyond a head's reach (`context::HEAD_REACH`) at least
    /// `context_min_votes` moved with it and no fewer stayed ("room": the whole ring the other
    /// way round).
    pub context_min_votes: u32,
    pub context_ratio: f32,
    /// A track is a held sheet or screen once it has `sheet_frames` sheet frames and more than
    /// `sheet_over_room` times as many as room frames: an attack whatever else it shows (the
    /// eyes behind an eye-cut print blink; a replayed person blinks and talks).
    pub sheet_frames: u32,
    pub sheet_over_room: f32,
    /// Sheet edges (`edge.rs`): a frame shows a held sheet's or screen's border when an edge
    /// beside or above the face at least `edge_strength` strong (grey levels per half-resolution
    /// pixel, median along it) moved `edge_moved` pixels or more since `context::GAP` frames
    /// before while the band beyond it stayed (at least `context_min_votes` of its blocks, and
    /// `context_ratio` times more than moved with the edge); it shows a room's edge when one
    /// that strong moved under a quarter of that.
    /// `edge_frames` border frames, more than `edge_over_room` times the room-edge frames, make
    /// the track a presentation attack. 0 strength: off.
    pub edge_strength: f32,
    pub edge_moved: f32,
    pub edge_frames: u32,
    pub edge_over_room: f32,
    /// Moiré (`screen.rs`, log10 peak-to-median power) above which a frame shows a pixel grid;
    /// `screen_frames` such frames make a track a screen.
    pub moire_peak: f32,
    pub screen_frames: u32,
    /// One frame whose moiré peak is over this makes a track a screen on its own: a screen's
    /// grid aliases intermittently as it sways, and a replayed person blinks before a third
    /// frame shows it.
    pub moire_certain: f32,
    /// Median of the last `MOIRE_FRAMES` moiré peaks above which a frame shows a screen too
    /// (counted towards `screen_frames`): a screen whose grid aliases into a peak over
    /// `moire_peak` only now and then still keeps the peaks raised from frame to frame, as a
    /// real face's texture does not. 0: off.
    pub moire_sustained: f32,
    /// Texture change (`flow::texture_change`: 1 - normalised cross-correlation of the face's
    /// smoothed patches and where they moved to in the next frame; median over the patches,
    /// then over the last 3 frames) above which a frame shows a screen: its moiré fringes move
    /// many times faster than the screen and change the face's texture from one frame to the
    /// next, as skin and paper do not. Such a frame counts towards `screen_frames` as a moiré
    /// peak does; it sees the coarse fringes (10 px apart and more) that the moiré peak cannot.
    /// For frames 0.1 s apart (`CHANGE_INTERVAL_MS`); twice as much for frames 0.2 s apart.
    /// 0: off.
    pub screen_change: f32,
    /// Range of the mouth opening (inner lips over the outer eye corners' distance, face mesh,
    /// median of 3 frames) within `mouth_window_frames` that is a facial movement (talking, an
    /// expression): a motion event and evidence of life, which no print or photo screen makes.
    pub mouth_motion: f32,
    pub mouth_window_frames: usize,
    /// Face-shaped parallax of the face's own texture motion (`flow.rs`: the relief term of a
    /// plane-plus-parallax fit through matched patches, eyes and mouth left out; spread units,
    /// median of `RELIEF_FRAMES` frame pairs) beyond which the face moved as a head does and a
    /// sheet cannot: a motion event and evidence of life. 0: off.
    pub relief_parallax: f32,
    /// The same relief fitted together with a print's bend (`flow.rs`, `ReliefFit::unbent`: a
    /// cylinder about the image's vertical axis with a parallax of its own) must also be longer
    /// than this: a print bent as it is held has a cylinder's relief, which the bend term takes
    /// up; a head keeps its nose, brow and chin. 0: off.
    pub relief_unbent: f32,
    /// Most texture change (`flow::texture_change`, median of the last `RELIEF_FRAMES` frames,
    /// per `CHANGE_INTERVAL_MS` as `screen_change`) with which the face's own movements count as
    /// a head's: a relief (the weaker one with a blink too), the mouth, the lips. A screen's
    /// moving moiré fringes change the face's texture from frame to frame (too little, or too
    /// coarse, for the screen cues themselves when the screen barely moves) and throw the
    /// relief fit about; a replayed person talks and turns on it. Skin keeps its texture as the
    /// head turns and talks (the eyes and the mouth are not in it). 0: off.
    pub movement_max_change: f32,
    /// A weaker relief (same measure) that is evidence of life together with a blink: a real
    /// head that blinks and turns slowly (a smile, a glance up) reaches it; an eye-cut print,
    /// the one flat attack that blinks, rarely does. 0 (or `relief_parallax` 0): off.
    pub relief_with_blink: f32,
    /// The blink that goes with a weak relief must be a clear one: the eyes' mean opening
    /// closed under this fraction of its open level (a closure starts at `blink_close_ratio`).
    /// The eye model's noise on paper or a screen makes shallow closures, and an eye-cut
    /// print's eyes seen through its holes read shallow too; the blinks real people make with a
    /// slow smile or glance close deeper. 0: any blink.
    pub relief_with_blink_depth: f32,
    /// Talking seen in the face flow (`flow.rs`): the lips' and chin's patches moved against
    /// where the face's own fit carries them by more than `lip_flow` eye distances (median of
    /// `RELIEF_FRAMES` frame pairs) and by more than `lip_flow_ratio` times the face's own
    /// patches did (the fit's noise, which a screen's moiré raises everywhere): a motion event
    /// and evidence of life. 0: off.
    pub lip_flow: f32,
    pub lip_flow_ratio: f32,
    /// Frames a second a door or a camera-fed session analyses at most (`camera::Pacer`; the
    /// others are left): the windows above are counted in frames and were tuned and measured
    /// at 10 fps. 0: every frame the camera gives.
    pub analysis_fps: f64,
    /// Whether a blink alone is evidence of life. false: only movement a flat sheet cannot make
    /// counts (a relief, the mouth, strong parallax), which stops eye-cut prints (real eyes
    /// blinking behind a photo) at the price of asking still people to turn their head.
    pub blink_suffices: bool,
    /// Pieces of evidence that the face is a head, not a sheet, a live verdict needs: each
    /// head movement (a mouth, a relief, the lips: each event counts), nose parallax beyond
    /// `parallax_live` (once), a blink (once; never on its own, which is `blink_suffices`).
    /// One of them must be a movement; a blink with a weak relief (`relief_with_blink`) is two
    /// already. Each cue is a threshold on noisy measures, and a print or a screen crosses one
    /// now and then as it sways: a second, independent piece confirms. 1: any one movement.
    pub head_evidence: u32,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            blink_close_ratio: 0.75,
            blink_reopen_fraction: 0.5,
            blink_max_ms: 800.0,
            blink_baseline_frames: 15,
            blink_min_baseline_frames: 3,
            blink_min_baseline: 0.15,
            blink_squint_baseline: 0.23,
            blink_noise_factor: 3.0,
            blink_refractory_ms: 250.0,
            min_eye_sharpness: 100.0,
            motion_threshold: 0.06,
            parallax_live: 0.3,
            planar_anisotropy: 0.035,
            spoof_threshold: 0.5,
            obstacle_every_frames: 5,
            min_face_iod_px: 16.0,
            context_min_votes: 4,
            context_ratio: 4.0,
            sheet_frames: 3,
            sheet_over_room: 3.0,
            edge_strength: 20.0,
            edge_moved: 8.0,
            edge_frames: 3,
            edge_over_room: 2.0,
            moire_peak: 2.7,
            screen_frames: 3,
            moire_certain: 3.2,
            moire_sustained: 2.4,
            screen_change: 0.07,
            mouth_motion: 0.10,
            mouth_window_frames: 10,
            relief_parallax: 0.02,
            relief_unbent: 0.012,
            movement_max_change: 0.04,
            relief_with_blink: 0.015,
            relief_with_blink_depth: 0.65,
            lip_flow: 0.03,
            lip_flow_ratio: 2.0,
            analysis_fps: 10.0,
            blink_suffices: false,
            head_evidence: 2,
        }
    }
}

/// A blink or a head movement: when, and in which frame (index of the frame it started in).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Event {
    /// Seconds from the track's first frame.
    pub t: f64,
    pub frame: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Eyelids {
    Open,
    Closed {
        start_ms: f64,
        start_frame: u64,
        lowest: f32,
        baseline: f32,
        /// Each eye's lowest opening so far and its own open level when the closure started.
        lowest_each: [f32; 2],
        baseline_each: [f32; 2],
    },
}

/// What the models and cues saw of one face in one frame, besides its landmarks (each absent
/// when it did not run or could not measure).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cues<'a> {
    pub eyes: Option<&'a EyeObservation>,
    pub mesh: Option<&'a MeshObservation>,
    pub context: Option<&'a ContextObservation>,
    /// Straight edges beside and above the face and how they moved (`edge.rs`).
    pub edge: Option<&'a EdgeObservation>,
    pub moire: Option<f32>,
    pub flow: Option<&'a FlowObservation>,
    /// The face's texture change since the frame before (`flow::texture_change`).
    pub change: Option<f32>,
}

/// One frame's observations owned, for callers that keep frames to judge later (pad-eval's
/// sequences and dumps, the tests): what `Cues` borrows.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub eyes: Option<EyeObservation>,
    pub mesh: Option<MeshObservation>,
    /// Whether the scene around the face moved with it since `context::GAP` frames ago.
    pub context: Option<ContextObservation>,
    /// Straight edges beside and above the face and how far they moved since then.
    pub edge: Option<EdgeObservation>,
    /// Moiré peak of the face patch (log10 peak-to-median power), when large enough.
    pub moire: Option<f32>,
    /// How one plane explains the face's texture motion since `flow::GAP` frames ago.
    pub flow: Option<FlowObservation>,
    /// How much the face's texture changed since the frame before (`flow::texture_change`).
    pub change: Option<f32>,
}

impl Observed {
    pub fn cues(&self) -> Cues<'_> {
        Cues {
            eyes: self.eyes.as_ref(),
            mesh: self.mesh.as_ref(),
            context: self.context.as_ref(),
            edge: self.edge.as_ref(),
            moire: self.moire,
            flow: self.flow.as_ref(),
            change: self.change,
        }
    }
}

/// What one frame changed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameLiveness {
    pub blink: bool,
    pub motion: bool,
    /// Mean eyelid opening, when the eyes were observed.
    pub eyelid: Option<f32>,
    /// Opening over the open-eye baseline (the contract's `ear`-like indicator).
    pub eyelid_ratio: Option<f32>,
    /// How one plane explains the rigid mesh points' motion since the track's first mesh.
    pub plane: Option<PlaneFit>,
    /// Inner-lip distance over the eye-corner distance.
    pub mouth_open: Option<f32>,
}

/// Appends `v` to `q`, dropping its oldest values beyond `cap`.
fn push_capped<T>(q: &mut VecDeque<T>, v: T, cap: usize) {
    q.push_back(v);
    while q.len() > cap {
        q.pop_front();
    }
}

/// Adds `v` to a window of the last `RELIEF_FRAMES` face-flow values; their component-wise
/// medians once the window is full, none before or while the rule's `limit` is 0 (off).
fn window_medians<const N: usize>(
    window: &mut VecDeque<[f32; N]>,
    v: [f32; N],
    limit: f32,
) -> Option<[f32; N]> {
    push_capped(window, v, RELIEF_FRAMES);
    if limit <= 0.0 || window.len() < RELIEF_FRAMES {
        return None;
    }
    let mut out = [0f32; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = median(window.iter().map(|v| v[i]))?;
    }
    Some(out)
}

/// The homography mapping 4 points onto 4 points (h33 = 1), by Gaussian elimination.
fn homography4(src: &[[f32; 2]; 4], dst: &[[f32; 2]; 4]) -> Option<[f64; 8]> {
    let mut a = [[0f64; 9]; 8];
    for i in 0..4 {
        let (x, y) = (f64::from(src[i][0]), f64::from(src[i][1]));
        let (u, v) = (f64::from(dst[i][0]), f64::from(dst[i][1]));
        a[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
        a[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
    }
    for col in 0..8 {
        let pivot = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-9 {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row.iter_mut().zip(pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    Some(std::array::from_fn(|i| a[i][8] / a[i][i]))
}

/// Where the plane through the reference eyes and mouth corners carries the reference nose,
/// against where the nose is now: the nose's parallax, in current eye distances. `None` if the
/// landmarks are degenerate.
pub fn nose_parallax(reference: &[[f32; 2]; 5], current: &[[f32; 2]; 5]) -> Option<[f32; 2]> {
    let pick = |l: &[[f32; 2]; 5]| [l[0], l[1], l[3], l[4]];
    // Centre and scale the points for a well-conditioned solve.
    let norm = |l: &[[f32; 2]; 5]| {
        let c = [(l[0][0] + l[1][0]) / 2.0, (l[0][1] + l[1][1]) / 2.0];
        let s = (l[1][0] - l[0][0]).hypot(l[1][1] - l[0][1]);
        (c, s)
    };
    let (rc, rs) = norm(reference);
    let (cc, cs) = norm(current);
    if rs < 1.0 || cs < 1.0 {
        return None;
    }
    let n = |p: [f32; 2], c: [f32; 2], s: f32| [(p[0] - c[0]) / s, (p[1] - c[1]) / s];
    let src = pick(reference).map(|p| n(p, rc, rs));
    let dst = pick(current).map(|p| n(p, cc, cs));
    let h = homography4(&src, &dst)?;
    let [x, y] = n(reference[2], rc, rs).map(f64::from);
    let w = h[6] * x + h[7] * y + 1.0;
    if w.abs() < 1e-6 {
        return None;
    }
    let predicted = [
        (h[0] * x + h[1] * y + h[2]) / w,
        (h[3] * x + h[4] * y + h[5]) / w,
    ];
    let now = n(current[2], cc, cs);
    let p = [now[0] - predicted[0] as f32, now[1] - predicted[1] as f32];
    p.iter().all(|v| v.is_finite()).then_some(p)
}

fn median(v: impl Iterator<Item = f32>) -> Option<f32> {
    quantile(v, 0.5)
}

fn quantile(v: impl Iterator<Item = f32>, q: f32) -> Option<f32> {
    let mut v: Vec<f32> = v.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    let i = ((v.len() - 1) as f32 * q).round() as usize;
    Some(v[i.min(v.len() - 1)])
}

/// The open-eye level: the 80th percentile of recent open-state openings (eyes are open most
/// of the time; squints and half-blinks sit below it), of the two eyes' mean (`None`) or of one.
fn open_level(baseline: &VecDeque<[f32; 2]>, eye: Option<usize>) -> Option<f32> {
    let value = |o: &[f32; 2]| eye.map_or((o[0] + o[1]) / 2.0, |i| o[i]);
    quantile(baseline.iter().map(value), 0.8)
}

/// Liveness state of one tracked face.
#[derive(Debug, Clone)]
pub struct LivenessTrack {
    cfg: LivenessConfig,
    first_ms: Option<f64>,
    last_ms: f64,
    frames: u64,
    /// Recent open-state openings (image-left, image-right eye).
    baseline: VecDeque<[f32; 2]>,
    sharpness: VecDeque<f32>,
    /// Recent inter-ocular distances (pixels).
    iod: VecDeque<f32>,
    /// The track's first rigid mesh points.
    mesh_origin: Option<Vec<[f32; 2]>>,
    eyelids: Eyelids,
    blinks: Vec<Event>,
    /// Recent foreshortening of the rigid upper face against the first mesh (median of 3).
    recent_anisotropy: VecDeque<f32>,
    /// Largest smoothed foreshortening seen.
    max_anisotropy: f32,
    /// When the last blink ended (ms), for the refractory period.
    last_blink_end_ms: Option<f64>,

    reference: Option<[[f32; 2]; 5]>,
    recent_parallax: VecDeque<[f32; 2]>,
    /// The track's first landmarks and the recent parallax against them.
    origin: Option<[[f32; 2]; 5]>,
    recent_from_origin: VecDeque<f32>,
    /// Largest smoothed nose parallax seen (eye distances).
    max_parallax: f32,
    motion: Vec<Event>,
    /// Frames whose surroundings moved with the face (a held sheet) / stayed (a room).
    sheet_frames: u32,
    room_frames: u32,
    /// Frames where a strong straight edge beside or above the face moved (a sheet's border) /
    /// stayed (a room's).
    border_frames: u32,
    room_edge_frames: u32,
    /// Frames whose face showed a screen's pixel grid; whether one showed it beyond doubt.
    screen_frames: u32,
    screen_certain: bool,
    /// Whether the presentation evidence was once enough (`presented`): it stays an attack.
    presented_once: bool,
    /// Recent texture changes from the frame before (for the median of 3).
    recent_change: VecDeque<f32>,
    /// The last `MOIRE_FRAMES` moiré peaks (`moire_sustained`).
    recent_moire: VecDeque<f32>,
    /// The last `RELIEF_FRAMES` texture changes per `CHANGE_INTERVAL_MS` (`texture_kept`).
    texture: VecDeque<f32>,
    /// Recent mouth openings (raw, for the median of 3) and their medians (the window).
    mouth_raw: VecDeque<f32>,
    mouth: VecDeque<f32>,
    /// Whether the mouth moved (talking, an expression).
    mouth_moved: bool,
    /// Recent face-flow parallax vectors (for the median of `RELIEF_FRAMES`).
    flow: VecDeque<[f32; 4]>,
    /// Whether the face's texture moved off one plane.
    relief: bool,
    /// The longest relief (window median) seen so far.
    max_relief: f32,
    /// Recent lip and face offsets from the face flow's fit (for the median of
    /// `RELIEF_FRAMES`).
    lips: VecDeque<[f32; 2]>,
    /// Whether the lips moved against the face (talking).
    talked: bool,
    /// Head movement events so far (the mouth, a relief, the lips: `head_evidence`).
    moves: u32,
    /// The deepest blink so far: its lowest mean opening over its open level (infinite
    /// before the first blink).
    deepest_blink: f32,
}

impl LivenessTrack {
    pub fn new(cfg: LivenessConfig) -> LivenessTrack {
        LivenessTrack {
            cfg,
            first_ms: None,
            last_ms: 0.0,
            frames: 0,
            baseline: VecDeque::new(),
            sharpness: VecDeque::new(),
            iod: VecDeque::new(),
            mesh_origin: None,
            eyelids: Eyelids::Open,
            blinks: Vec::new(),
            recent_anisotropy: VecDeque::new(),
            max_anisotropy: 0.0,
            last_blink_end_ms: None,

            reference: None,
            recent_parallax: VecDeque::new(),
            origin: None,
            recent_from_origin: VecDeque::new(),
            max_parallax: 0.0,
            motion: Vec::new(),
            sheet_frames: 0,
            room_frames: 0,
            border_frames: 0,
            room_edge_frames: 0,
            screen_frames: 0,
            screen_certain: false,
            presented_once: false,
            recent_change: VecDeque::new(),
            recent_moire: VecDeque::new(),
            texture: VecDeque::new(),
            mouth_raw: VecDeque::new(),
            mouth: VecDeque::new(),
            mouth_moved: false,
            flow: VecDeque::new(),
            relief: false,
            max_relief: 0.0,
            lips: VecDeque::new(),
            talked: false,
            moves: 0,
            deepest_blink: f32::INFINITY,
        }
    }

    /// Feeds one frame: its time (ms, any origin, increasing), its index, the face's landmarks
    /// and, when the eye model ran on it, the eyes.
    pub fn update(
        &mut self,
        t_ms: f64,
        frame: u64,
        landmarks: &[[f32; 2]; 5],
        cues: &Cues<'_>,
    ) -> FrameLiveness {
        let Cues {
            eyes,
            mesh,
            context,
            edge,
            moire,
            flow,
            change,
        } = *cues;
        if let Some(c) = context {
            let (min, ratio) = (self.cfg.context_min_votes, self.cfg.context_ratio);
            let (moved, stayed) = (c.with_face as f32, c.still as f32);
            // A sheet moves the ring with the face out beyond a head's reach too (a head moves
            // its hair, ears and a hand at the cheek with it, and nothing farther).
            let beyond = c.far_with_face >= min && c.far_with_face >= c.far_still;
            if c.with_face >= min && moved >= ratio * stayed.max(0.5) && beyond {
                self.sheet_frames += 1;
            } else if c.still >= min && stayed >= ratio * moved.max(0.5) {
                self.room_frames += 1;
            }
        }
        if let Some(e) = edge.filter(|_| self.cfg.edge_strength > 0.0) {
            let (min, ratio) = (self.cfg.context_min_votes, self.cfg.context_ratio);
            let (mut moved, mut stayed) = (false, false);
            for l in e.sides.iter().flatten() {
                let Some(shift) = l.shift.filter(|_| l.strength >= self.cfg.edge_strength) else {
                    continue;
                };
                // Moved against the room beyond it, as a held sheet's border does (not with it,
                // as everything does before a camera that moves).
                let [room, along] = l.beyond.map(|v| v as f32);
                moved |= shift >= self.cfg.edge_moved
                    && l.beyond[0] >= min
                    && room >= ratio * along.max(0.5);
                stayed |= shift < self.cfg.edge_moved / 4.0;
            }
            if moved {
                self.border_frames += 1;
            } else if stayed {
                self.room_edge_frames += 1;
            }
        }
        // A screen frame: a moiré peak, peaks raised over several frames, or (below) the
        // texture changing as moiré fringes do.
        let mut screen = moire.is_some_and(|m| m > self.cfg.moire_peak);
        if moire.is_some_and(|m| m > self.cfg.moire_certain) {
            self.screen_certain = true;
        }
        if let Some(m) = moire {
            push_capped(&mut self.recent_moire, m, MOIRE_FRAMES);
            let limit = self.cfg.moire_sustained;
            screen |= limit > 0.0
                && self.recent_moire.len() == MOIRE_FRAMES
                && median(self.recent_moire.iter().copied()).is_some_and(|m| m > limit);
        }
        let first = *self.first_ms.get_or_insert(t_ms);
        let t_rel = (t_ms - first) / 1000.0;
        // A gap longer than a blink breaks the eyelid sequence.
        if self.frames > 0 && t_ms - self.last_ms > self.cfg.blink_max_ms {
            self.eyelids = Eyelids::Open;
        }
        let since_ms = if self.frames > 0 {
            t_ms - self.last_ms
        } else {
            CHANGE_INTERVAL_MS
        };
        self.frames += 1;
        self.last_ms = t_ms;
        let mut out = FrameLiveness::default();
        let [l, r] = [landmarks[0], landmarks[1]];
        push_capped(&mut self.iod, (r[0] - l[0]).hypot(r[1] - l[1]), 5);
        if let Some(m) = mesh {
            out.mouth_open = Some(m.mouth_open);
            let origin = self.mesh_origin.get_or_insert_with(|| m.rigid.clone());
            out.plane = plane_fit(origin, &m.rigid);
            if let Some(p) = out.plane {
                push_capped(&mut self.recent_anisotropy, p.anisotropy, 3);
                if self.recent_anisotropy.len() == 3 {
                    let m = median(self.recent_anisotropy.iter().copied()).unwrap_or(0.0);
                    self.max_anisotropy = self.max_anisotropy.max(m);
                }
            }
        }
        if let Some(e) = eyes {
            push_capped(
                &mut self.sharpness,
                e.sharpness,
                self.cfg.blink_baseline_frames,
            );
        }
        // Eyelids are read on any face large enough to judge; how deep a dip must be to be a
        // blink follows the opening's own noise (`blink_noise_factor`).
        if let Some(e) = eyes.filter(|_| self.judgeable()) {
            out.eyelid = Some(e.mean_opening());
            out.blink = self.eyelid(e.opening, t_ms, frame, first);
            let base = match self.eyelids {
                Eyelids::Closed { baseline, .. } => Some(baseline),
                Eyelids::Open => open_level(&self.baseline, None),
            };
            out.eyelid_ratio = base.filter(|b| *b > 0.0).map(|b| e.mean_opening() / b);
        }
        // The texture's change per `CHANGE_INTERVAL_MS`, for `texture_kept`.
        if let Some(c) = change.filter(|_| self.judgeable()) {
            let per = (since_ms / CHANGE_INTERVAL_MS).max(1.0) as f32;
            push_capped(&mut self.texture, c / per, RELIEF_FRAMES);
        }
        let kept = self.texture_kept();
        out.motion = self.parallax(landmarks, t_rel, frame);
        if let Some(m) = mesh.filter(|_| self.judgeable()) {
            out.motion |= self.mouth(m.mouth_open, kept, t_rel, frame);
        }
        if let Some(f) = flow.filter(|_| self.judgeable()) {
            out.motion |= self.relief(f.e, f.unbent, kept, t_rel, frame);
            if let Some(m) = f.mouth {
                out.motion |= self.talking(m, f.face, kept, t_rel, frame);
            }
        }
        if let Some(c) = change.filter(|_| self.judgeable()) {
            screen |= self.fringes(c, since_ms);
        }
        if screen {
            self.screen_frames += 1;
        }
        self.presented_once |= self.presenting();
        out
    }

    /// Whether the face's texture changed as a screen's moving moiré fringes change it: the
    /// median of the last 3 texture changes over `screen_change`, raised in proportion when
    /// frames come more than `CHANGE_INTERVAL_MS` apart (`since_ms`).
    fn fringes(&mut self, change: f32, since_ms: f64) -> bool {
        push_capped(&mut self.recent_change, change, 3);
        let limit = self.cfg.screen_change * (since_ms / CHANGE_INTERVAL_MS).max(1.0) as f32;
        limit > 0.0
            && self.recent_change.len() == 3
            && median(self.recent_change.iter().copied()).is_some_and(|m| m > limit)
    }

    /// Whether the face's texture kept as skin's does, so that its movements count as a head's:
    /// the median of the last `RELIEF_FRAMES` texture changes per `CHANGE_INTERVAL_MS` at most
    /// `movement_max_change` (or none measured yet).
    fn texture_kept(&self) -> bool {
        let limit = self.cfg.movement_max_change;
        limit <= 0.0 || median(self.texture.iter().copied()).is_none_or(|m| m <= limit)
    }

    /// Talking: the lips and chin moved against the face's fit (median of the last
    /// `RELIEF_FRAMES` pairs) beyond `lip_flow`, and beyond `lip_flow_ratio` times the face's
    /// own patches, through a texture that kept (`kept`: `texture_kept`); the window then
    /// starts afresh.
    fn talking(&mut self, mouth: f32, face: f32, kept: bool, t_rel: f64, frame: u64) -> bool {
        let (limit, ratio) = (self.cfg.lip_flow, self.cfg.lip_flow_ratio);
        let talked = window_medians(&mut self.lips, [mouth, face], limit)
            .is_some_and(|[m, f]| m > limit && m > ratio * f)
            && kept;
        if talked {
            self.talked = true;
            self.moves += 1;
            self.motion.push(Event { t: t_rel, frame });
            self.lips.clear();
        }
        talked
    }

    /// Relief: the face's texture moved like a face's relief, not one plane (the parallax
    /// vector's median over the last `RELIEF_FRAMES` pairs, component by component, longer than
    /// `relief_parallax`), and not as a bent print does (the same for the vector fitted with a
    /// print's bend, `unbent`, longer than `relief_unbent`; a pair without it counts as none),
    /// through a texture that kept (`kept`: `texture_kept`; else no relief at all); the window
    /// then starts afresh.
    fn relief(
        &mut self,
        e: [f32; 2],
        unbent: Option<[f32; 2]>,
        kept: bool,
        t_rel: f64,
        frame: u64,
    ) -> bool {
        let limit = self.cfg.relief_parallax;
        let u = unbent.unwrap_or([0.0; 2]);
        let medians =
            window_medians(&mut self.flow, [e[0], e[1], u[0], u[1]], limit).filter(|_| kept);
        let relief = medians.map(|m| m[0].hypot(m[1]));
        let unbent = medians.map(|m| m[2].hypot(m[3]));
        self.max_relief = self.max_relief.max(relief.unwrap_or(0.0));
        let bend_limit = self.cfg.relief_unbent;
        let moved = relief.is_some_and(|r| r > limit)
            && (bend_limit <= 0.0 || unbent.is_some_and(|r| r > bend_limit));
        if moved {
            self.relief = true;
            self.moves += 1;
            self.motion.push(Event { t: t_rel, frame });
            self.flow.clear();
        }
        moved
    }

    /// A facial movement: the mouth opening (median of 3 frames) ranged over more than
    /// `mouth_motion` within the window, through a texture that kept (`kept`: `texture_kept`);
    /// the window then starts afresh.
    fn mouth(&mut self, open: f32, kept: bool, t_rel: f64, frame: u64) -> bool {
        push_capped(&mut self.mouth_raw, open, 3);
        if self.mouth_raw.len() < 3 {
            return false;
        }
        let Some(m) = median(self.mouth_raw.iter().copied()) else {
            return false;
        };
        push_capped(&mut self.mouth, m, self.cfg.mouth_window_frames.max(2));
        let (lo, hi) = self
            .mouth
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        let enough = (self.cfg.mouth_window_frames / 2).max(2);
        if self.mouth.len() >= enough && hi - lo > self.cfg.mouth_motion && kept {
            self.mouth_moved = true;
            self.moves += 1;
            self.motion.push(Event { t: t_rel, frame });
            self.mouth.clear();
            return true;
        }
        false
    }

    /// The eyelid state machine over one frame's openings (image-left, image-right eye); their
    /// mean opens and closes it. Whether a closure just ended as a blink.
    fn eyelid(&mut self, each: [f32; 2], t_ms: f64, frame: u64, first_ms: f64) -> bool {
        let cfg = &self.cfg;
        let mean = |v: &[f32; 2]| (v[0] + v[1]) / 2.0;
        let o = mean(&each);
        match self.eyelids {
            Eyelids::Open => {
                let base = (self.baseline.len() >= cfg.blink_min_baseline_frames)
                    .then(|| open_level(&self.baseline, None))
                    .flatten();
                let noise = median(
                    self.baseline
                        .iter()
                        .zip(self.baseline.iter().skip(1))
                        .map(|(a, b)| (mean(b) - mean(a)).abs()),
                )
                .unwrap_or(0.0);
                let refractory = self
                    .last_blink_end_ms
                    .is_some_and(|end| t_ms - end < cfg.blink_refractory_ms);
                match base {
                    Some(b)
                        if b >= cfg.blink_min_baseline
                            && !refractory
                            && o < (cfg.blink_close_ratio * b)
                                .min(b - cfg.blink_noise_factor * noise) =>
                    {
                        let level = |i| open_level(&self.baseline, Some(i)).unwrap_or(b);
                        self.eyelids = Eyelids::Closed {
                            start_ms: t_ms,
                            start_frame: frame,
                            lowest: o,
                            baseline: b,
                            lowest_each: each,
                            baseline_each: [level(0), level(1)],
                        };
                    }
                    _ => {
                        push_capped(&mut self.baseline, each, cfg.blink_baseline_frames);
                    }
                }
                false
            }
            Eyelids::Closed {
                start_ms,
                start_frame,
                lowest,
                baseline,
                lowest_each,
                baseline_each,
            } => {
                let lowest = lowest.min(o);
                let lowest_each = [lowest_each[0].min(each[0]), lowest_each[1].min(each[1])];
                if o >= lowest + cfg.blink_reopen_fraction * (baseline - lowest) {
                    self.eyelids = Eyelids::Open;
                    self.last_blink_end_ms = Some(t_ms);
                    push_capped(&mut self.baseline, each, cfg.blink_baseline_frames);
                    // In a squint one eye's reading can dip alone: both must have closed.
                    let both_closed = baseline >= cfg.blink_squint_baseline
                        || (0..2)
                            .all(|i| lowest_each[i] < cfg.blink_close_ratio * baseline_each[i]);
                    if t_ms - start_ms <= cfg.blink_max_ms && both_closed {
                        self.deepest_blink = self.deepest_blink.min(lowest / baseline);
                        self.blinks.push(Event {
                            t: (start_ms - first_ms) / 1000.0,
                            frame: start_frame,
                        });
                        return true;
                    }
                } else {
                    self.eyelids = Eyelids::Closed {
                        start_ms,
                        start_frame,
                        lowest,
                        baseline,
                        lowest_each,
                        baseline_each,
                    };
                }
                false
            }
        }
    }

    /// A head movement: the nose's parallax against the reference frame's eye-mouth plane
    /// (median of the last 3 frames) exceeds the threshold; the reference then moves on.
    fn parallax(&mut self, landmarks: &[[f32; 2]; 5], t_rel: f64, frame: u64) -> bool {
        // Against the first frame: how far the head has turned overall (attack evidence).
        let origin = *self.origin.get_or_insert(*landmarks);
        if let Some(p) = nose_parallax(&origin, landmarks) {
            push_capped(&mut self.recent_from_origin, p[0].hypot(p[1]), 3);
            if self.recent_from_origin.len() == 3 {
                let m = median(self.recent_from_origin.iter().copied()).unwrap_or(0.0);
                self.max_parallax = self.max_parallax.max(m);
            }
        }
        let Some(reference) = self.reference else {
            self.reference = Some(*landmarks);
            return false;
        };
        let Some(p) = nose_parallax(&reference, landmarks) else {
            return false;
        };
        push_capped(&mut self.recent_parallax, p, 3);
        let smooth: [f32; 2] = std::array::from_fn(|i| {
            median(self.recent_parallax.iter().map(|c| c[i])).unwrap_or(p[i])
        });
        let size = smooth[0].hypot(smooth[1]);
        if size > self.cfg.motion_threshold {
            self.motion.push(Event { t: t_rel, frame });
            self.reference = Some(*landmarks);
            self.recent_parallax.clear();
            return true;
        }
        false
    }

    /// Whether the face shows enough detail (median eye sharpness) for eyelids and landmark
    /// parallax to be evidence.
    pub fn detailed(&self) -> bool {
        median(self.sharpness.iter().copied()).is_some_and(|m| m >= self.cfg.min_eye_sharpness)
    }

    /// Whether the face is large enough (median inter-ocular distance of the last frames) for
    /// its liveness to be judged.
    pub fn judgeable(&self) -> bool {
        median(self.iod.iter().copied()).is_some_and(|m| m >= self.cfg.min_face_iod_px)
    }

    /// The largest foreshortening of the rigid upper face against the track's first frame.
    pub fn max_anisotropy(&self) -> f32 {
        self.max_anisotropy
    }

    /// The largest nose parallax against the track's first frame (eye distances, median of
    /// 3 frames).
    pub fn max_parallax(&self) -> f32 {
        self.max_parallax
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Frames whose surroundings moved with the face, frames whose surroundings stayed, frames
    /// that showed a screen's pixel grid, frames whose edge beside or above the face moved
    /// against the room (a border), and frames whose strong edge stayed (a room's).
    pub fn presentation_frames(&self) -> [u32; 5] {
        [
            self.sheet_frames,
            self.room_frames,
            self.screen_frames,
            self.border_frames,
            self.room_edge_frames,
        ]
    }

    /// Whether the scene around the face moved with it, as a sheet or a screen held up does
    /// (and a room before a fixed camera does not), a sheet's border moved beside or above it,
    /// or the face showed a screen's pixel grid: an attack, whatever else the face does. Once
    /// so, always so for the track: a hand that holds the sheet still for a while, or a screen
    /// whose bezel stops, adds frames where the room stayed, and until 2026-12-05 those could
    /// outvote the evidence and let the face go live (4 of the 11 accepted attacks of the
    /// seeds 36-40 draw).
    pub fn presented(&self) -> bool {
        self.presented_once || self.presenting()
    }

    /// Whether the evidence counted so far makes the face presented (`presented`).
    fn presenting(&self) -> bool {
        let held = self.sheet_frames >= self.cfg.sheet_frames
            && self.sheet_frames as f32 > self.cfg.sheet_over_room * self.room_frames as f32;
        let bordered = self.cfg.edge_strength > 0.0
            && self.border_frames >= self.cfg.edge_frames
            && self.border_frames as f32 > self.cfg.edge_over_room * self.room_edge_frames as f32;
        held || bordered || self.screen_frames >= self.cfg.screen_frames || self.screen_certain
    }

    /// The presentation evidence, when the face was presented (`presented`).
    pub fn presentation(&self) -> Option<Presentation> {
        self.presented().then_some(Presentation {
            sheet_frames: self.sheet_frames,
            room_frames: self.room_frames,
            border_frames: self.border_frames,
            room_edge_frames: self.room_edge_frames,
            screen_frames: self.screen_frames,
            screen_certain: self.screen_certain,
        })
    }

    /// Starts this (new) track from the evidence of a presented face just lost where it
    /// appears (`PresentationMemory::hand_down`).
    fn inherit(&mut self, p: Presentation) {
        self.presented_once = true;
        self.sheet_frames += p.sheet_frames;
        self.room_frames += p.room_frames;
        self.border_frames += p.border_frames;
        self.room_edge_frames += p.room_edge_frames;
        self.screen_frames += p.screen_frames;
        self.screen_certain |= p.screen_certain;
    }

    pub fn blinks(&self) -> &[Event] {
        &self.blinks
    }

    pub fn motion_events(&self) -> &[Event] {
        &self.motion
    }

    /// Presentation-attack score in [0, 1]: 1 when the face was presented on a held sheet or a
    /// screen (`presented`), whatever else it did; else 0 with evidence of life: a blink (a
    /// print or a screen showing a photo cannot blink; not with `blink_suffices` off) or a
    /// movement a flat sheet cannot make, confirmed (`moved_as_a_head`, `head_evidence`); 0.5
    /// (no evidence either way) with such a movement not yet confirmed; else from 0.5 towards
    /// 1 as the face moved like a plane (the face mesh's rigid upper face foreshortened beyond
    /// `planar_anisotropy`).
    ///
    /// Parallax below `parallax_live` is not evidence of life: CenterFace's landmarks on a
    /// tilted photo drift systematically (0.05-0.10 eye distances at 25° of tilt, measured with
    /// `facegate pad-eval`), as much as a real head's small turns do. Such movements still
    /// count as motion events for the enrollment rule; they do not lower this score.
    pub fn spoof_score(&self) -> f32 {
        if self.presented() {
            return 1.0;
        }
        let blinked = self.cfg.blink_suffices && !self.blinks.is_empty();
        if blinked || self.moved_as_a_head() {
            return 0.0;
        }
        // A movement a sheet cannot make, not yet confirmed (`head_evidence`): no evidence
        // either way, whatever the face's plane did as the head turned.
        if self.moved_at_all() {
            return 0.5;
        }
        // The rigid upper face foreshortened like a tilted sheet (the mesh, not the mouth or
        // roll, which a talking or tilting head changes too).
        let a = self.cfg.planar_anisotropy;
        let planar = ((self.max_anisotropy - a) / a).clamp(0.0, 1.0);
        0.5 + 0.5 * planar
    }

    /// Whether the face moved as a head does and a flat sheet cannot: a mouth movement (the
    /// mesh's or the lips' in the face flow), a relief, a clear blink with a weaker relief
    /// (`relief_with_blink`, `relief_with_blink_depth`: an eye-cut print blinks, but its relief
    /// is paper's), or nose parallax beyond what the synthetic attacks reach. Parallax under
    /// `parallax_live` is no evidence at all (until 2026-12-04 half of it counted in part:
    /// held-out prints tilted by up to 18° reached 0.19 and were live by it; no bona fide window
    /// at 10 fps needed it).
    fn moved_as_a_head(&self) -> bool {
        self.head_cues().iter().any(|(shown, _)| *shown)
    }

    /// Nose parallax beyond `parallax_live` on a detailed face (landmarks of a blurry face drift
    /// too).
    fn strong_parallax(&self) -> bool {
        self.detailed() && self.judgeable() && self.max_parallax >= self.cfg.parallax_live
    }

    /// Whether the face made a movement a sheet cannot make (a head movement or strong
    /// parallax), whether or not the evidence is enough yet (`head_evidence`).
    fn moved_at_all(&self) -> bool {
        self.moves > 0 || self.strong_parallax()
    }

    /// Each way of moving as a head does (`moved_as_a_head`), whether it was shown (with enough
    /// pieces of evidence, `head_evidence`), by name.
    fn head_cues(&self) -> [(bool, &'static str); 5] {
        let weak = self.cfg.relief_with_blink;
        let depth = self.cfg.relief_with_blink_depth;
        let clear_blink = !self.blinks.is_empty() && (depth <= 0.0 || self.deepest_blink <= depth);
        let blink_and_weak_relief = weak > 0.0 && self.max_relief >= weak && clear_blink;
        let parallax = self.strong_parallax();
        // Each movement, strong parallax and a blink are a piece of evidence each.
        let pieces = self.moves + u32::from(parallax) + u32::from(!self.blinks.is_empty());
        let enough = pieces >= self.cfg.head_evidence;
        [
            (self.mouth_moved && enough, "mouth"),
            (self.relief && enough, "relief"),
            (self.talked && enough, "lips"),
            (blink_and_weak_relief, "blink+relief"),
            (parallax && enough, "parallax"),
        ]
    }

    /// The cues that have shown life so far, by name (`blink` where a blink suffices on its
    /// own, then `head_cues`): what a live verdict rests on, for the evaluation's report of
    /// each accepted attack.
    pub fn life_cues(&self) -> Vec<&'static str> {
        let blink = (self.cfg.blink_suffices && !self.blinks.is_empty(), "blink");
        std::iter::once(blink)
            .chain(self.head_cues())
            .filter_map(|(shown, name)| shown.then_some(name))
            .collect()
    }

    /// Whether the face still has to move as a head does before it can be live: a blink alone
    /// does not do (`blink_suffices` off) and no such movement was seen yet. The person is asked
    /// to turn their head.
    pub fn needs_movement(&self) -> bool {
        !self.cfg.blink_suffices && !self.moved_as_a_head()
    }

    /// Live: a blink or a head movement, and the attack score under the threshold (by default a
    /// blink alone leaves the score at 0.5: `blink_suffices`). Spoof: the score over it.
    /// Unknown: neither yet (keep asking: to turn the head, or to blink where that suffices).
    pub fn verdict(&self) -> Verdict {
        let score = self.spoof_score();
        if score > self.cfg.spoof_threshold {
            Verdict::Spoof
        } else if score < self.cfg.spoof_threshold
            && (!self.blinks.is_empty() || !self.motion.is_empty())
        {
            Verdict::Live
        } else {
            Verdict::Unknown
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Live,
    Spoof,
    Unknown,
}

/// What a session requires before it decides (the contract's rules).
#[derive(Debug, Clone, PartialEq)]
pub struct Requirements {
    pub blinks: usize,
    pub motion_events: usize,
    /// Authentication: a blink OR a head movement suffices; enrollment needs both.
    pub either: bool,
    pub frames: u64,
    pub min_quality: f32,
}

impl Requirements {
    /// Enrollment: blinks >= required AND motion >= 1 AND frames >= target.
    pub fn enrollment(blinks: usize, frames: u64, min_quality: f32) -> Requirements {
        Requirements {
            blinks,
            motion_events: 1,
            either: false,
            frames,
            min_quality,
        }
    }

    /// Authentication: (blink OR motion) AND frames >= minimum.
    pub fn authentication(frames: u64, min_quality: f32) -> Requirements {
        Requirements {
            blinks: 1,
            motion_events: 1,
            either: true,
            frames,
            min_quality,
        }
    }
}

/// The evidence of one track so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence<'a> {
    pub blinks: usize,
    pub motion_events: usize,
    pub frames: u64,
    pub quality: f32,
    pub obstacles: &'a [&'static str],
    pub spoof_score: f32,
    pub spoof_threshold: f32,
    /// The face is large and sharp enough for blinks and head movement to be seen.
    pub judgeable: bool,
    /// A blink is not enough here: the face must still move as a head does
    /// (`LivenessTrack::needs_movement`).
    pub needs_movement: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    Obstacle,
    /// The face is too small or blurred to judge: the person should come closer.
    Closer,
    Quality,
    Blink,
    Motion,
    Frames,
    /// The attack score is over the threshold: never coached.
    Liveness,
}

/// A prompt for the person at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Instruction {
    pub instruction: &'static str,
    pub message: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub passed: bool,
    pub missing: Vec<Missing>,
    pub instruction: Option<Instruction>,
}

fn obstacle_instruction(name: &str) -> Instruction {
    match name {
        "mask" => Instruction {
            instruction: "remove_mask",
            message: "Please remove your mask",
        },
        "hand" => Instruction {
            instruction: "move_hand",
            message: "Please move your hand away from your face",
        },
        "glasses" => Instruction {
            instruction: "remove_sunglasses",
            message: "Please take off your sunglasses",
        },
        _ => Instruction {
            instruction: "remove_hat",
            message: "Please take off your hat",
        },
    }
}

/// Applies the rules: every requirement met, no obstacle, quality, and an attack score under
/// the threshold. The instruction asks for the first missing thing a person can fix, in the
/// order obstacle, quality, blink, head movement; an attack score is never explained.
pub fn decide(req: &Requirements, ev: &Evidence<'_>) -> Decision {
    let mut missing = Vec::new();
    if !ev.obstacles.is_empty() {
        missing.push(Missing::Obstacle);
    }
    if !ev.judgeable {
        missing.push(Missing::Closer);
    }
    if ev.quality < req.min_quality {
        missing.push(Missing::Quality);
    }
    let blink_ok = ev.blinks >= req.blinks;
    let motion_ok = ev.motion_events >= req.motion_events;
    if req.either {
        if ev.needs_movement {
            // A blink would not do (`liveness.blink_suffices` off): ask for the head.
            missing.push(Missing::Motion);
        } else if !blink_ok && !motion_ok {
            missing.push(Missing::Blink);
        }
    } else {
        if !blink_ok {
            missing.push(Missing::Blink);
        }
        if !motion_ok || ev.needs_movement {
            missing.push(Missing::Motion);
        }
    }
    if ev.frames < req.frames {
        missing.push(Missing::Frames);
    }
    if ev.spoof_score >= ev.spoof_threshold {
        missing.push(Missing::Liveness);
    }
    let instruction = missing.iter().find_map(|m| match m {
        Missing::Obstacle => ev.obstacles.first().map(|o| obstacle_instruction(o)),
        Missing::Closer => Some(Instruction {
            instruction: "come_closer",
            message: "Please come closer to the camera",
        }),
        Missing::Quality => Some(Instruction {
            instruction: "face_camera",
            message: "Please face the camera, closer and in good light",
        }),
        Missing::Blink => Some(Instruction {
            instruction: "blink",
            message: "Please blink",
        }),
        Missing::Motion => Some(Instruction {
            instruction: "turn_head",
            message: "Please turn your head slightly",
        }),
        Missing::Frames | Missing::Liveness => None,
    });
    Decision {
        passed: missing.is_empty(),
        missing,
        instruction,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::edge::EdgeLine;

    fn eyes(o: f32) -> EyeObservation {
        EyeObservation {
            opening: [o, o],
            texture: 0.3,
            darkness: 0.8,
            sharpness: 500.0,
        }
    }

    const FACE: [[f32; 2]; 5] = [
        [100.0, 100.0],
        [160.0, 100.0],
        [130.0, 135.0],
        [108.0, 165.0],
        [152.0, 165.0],
    ];

    fn run(openings: &[f32]) -> LivenessTrack {
        run_with(LivenessConfig::default(), openings)
    }

    /// Feeds `t` the frames `frames` (frame `i` at `i * ms` ms) of a face with landmarks
    /// `landmarks(i)` and observations `frame(i)`.
    fn feed(
        t: &mut LivenessTrack,
        frames: std::ops::Range<usize>,
        ms: f64,
        landmarks: impl Fn(usize) -> [[f32; 2]; 5],
        frame: impl Fn(usize) -> Observed,
    ) {
        for i in frames {
            t.update(i as f64 * ms, i as u64, &landmarks(i), &frame(i).cues());
        }
    }

    /// A new track fed `n` frames `ms` apart of a face at `FACE` (`feed`).
    fn run_frames(
        cfg: &LivenessConfig,
        n: usize,
        ms: f64,
        frame: impl Fn(usize) -> Observed,
    ) -> LivenessTrack {
        let mut t = LivenessTrack::new(cfg.clone());
        feed(&mut t, 0..n, ms, |_| FACE, frame);
        t
    }

    /// A face flow observation whose relief is `e`, and `unbent` with a print's bend fitted.
    fn relief_flow(e: [f32; 2], unbent: Option<[f32; 2]>) -> FlowObservation {
        FlowObservation {
            residual: 0.05,
            points: 40,
            e,
            unbent,
            mouth: None,
            face: 0.01,
        }
    }

    /// Twelve frames 100 ms apart of an open-eyed face whose face flow gave `flow(i)`.
    fn run_flow(cfg: &LivenessConfig, flow: impl Fn(usize) -> FlowObservation) -> LivenessTrack {
        run_frames(cfg, 12, 100.0, |i| Observed {
            eyes: Some(eyes(0.32)),
            flow: Some(flow(i)),
            ..Observed::default()
        })
    }

    fn run_with(cfg: LivenessConfig, openings: &[f32]) -> LivenessTrack {
        let each: Vec<[f32; 2]> = openings.iter().map(|&o| [o, o]).collect();
        run_each(cfg, &each)
    }

    /// Frames 100 ms apart whose eye model read these openings (image-left, image-right eye).
    fn run_each(cfg: LivenessConfig, openings: &[[f32; 2]]) -> LivenessTrack {
        run_frames(&cfg, openings.len(), 100.0, |i| Observed {
            eyes: Some(EyeObservation {
                opening: openings[i],
                ..eyes(0.0)
            }),
            ..Observed::default()
        })
    }

    #[test]
    fn a_one_frame_dip_is_a_blink_and_a_long_closure_is_not() {
        let open = [0.32, 0.31, 0.33, 0.32, 0.30];
        let blink = run(&[&open[..], &[0.2, 0.31, 0.32]].concat());
        assert_eq!(blink.blinks().len(), 1);
        assert_eq!(blink.blinks()[0].frame, 5);
        let long = run(&[&open[..], &[0.05; 12], &[0.31, 0.32]].concat());
        assert!(long.blinks().is_empty(), "1.2 s closed is not a blink");
        // Noise of +-10 % is not a blink.
        let noise = run(&[0.32, 0.29, 0.34, 0.30, 0.33, 0.28, 0.31, 0.35, 0.29]);
        assert!(noise.blinks().is_empty());
        // Squinting eyes (baseline under the minimum) never count.
        let squint = run(&[0.1, 0.11, 0.1, 0.1, 0.03, 0.1, 0.1]);
        assert!(squint.blinks().is_empty());
    }

    #[test]
    fn in_a_squint_one_eye_dipping_alone_is_not_a_blink() {
        let blinks =
            |openings: &[[f32; 2]]| run_each(LivenessConfig::default(), openings).blinks().len();
        // A laughing face's narrowed eyes (open level 0.2): the left eye's reading dips to a
        // third while the right stays at 0.8 of its level, as on the printed laughing face.
        let squint = [[0.18, 0.22]; 5];
        let one_eye = [[0.06, 0.18], [0.18, 0.22], [0.18, 0.22]];
        assert_eq!(blinks(&[&squint[..], &one_eye[..]].concat()), 0);
        // Both eyes closing from the same squint is a blink (narrow eyes still blink).
        let both = [[0.06, 0.08], [0.18, 0.22], [0.18, 0.22]];
        assert_eq!(blinks(&[&squint[..], &both[..]].concat()), 1);
        // Wide open eyes read steadily: the same one-eye dip is judged by the mean, as before.
        let open = [[0.31, 0.33]; 5];
        let one_eye_open = [[0.08, 0.28], [0.31, 0.33], [0.31, 0.33]];
        assert_eq!(blinks(&[&open[..], &one_eye_open[..]].concat()), 1);
    }

    #[test]
    fn a_reopening_to_a_lower_level_still_ends_the_blink() {
        // The expression changes during the blink: eyes reopen to 0.25 after 0.33.
        let t = run(&[0.33, 0.34, 0.33, 0.32, 0.33, 0.21, 0.08, 0.25, 0.25, 0.26]);
        assert_eq!(t.blinks().len(), 1);
        assert_eq!(t.blinks()[0].frame, 5);
    }

    /// Maps the face through a plane tilted by `yaw` about the vertical axis (weak perspective),
    /// shifted and rolled: what a photo held in a hand does.
    fn photo(yaw: f32, roll: f32, dx: f32) -> [[f32; 2]; 5] {
        let (c, s) = (roll.cos(), roll.sin());
        FACE.map(|[x, y]| {
            let (x, y) = ((x - 130.0) * yaw.cos(), y - 130.0);
            [c * x - s * y + 130.0 + dx, s * x + c * y + 130.0]
        })
    }

    /// The rigid mesh points of a face on a sheet tilted by `yaw` (perspective, focal 600 px,
    /// sheet 600 px away), shifted by `dx`.
    fn sheet_mesh(yaw: f32, dx: f32) -> MeshObservation {
        let rigid = (0..52)
            .map(|i| {
                let (x, y) = ((i % 8) as f32 * 10.0 - 35.0, (i / 8) as f32 * 10.0 - 30.0);
                let (xr, zr) = (x * yaw.cos(), 600.0 + x * yaw.sin());
                [130.0 + dx + 600.0 * xr / zr, 130.0 + 600.0 * y / zr]
            })
            .collect();
        MeshObservation {
            rigid,
            mouth_open: 0.05,
            eyelids: [0.3, 0.3],
        }
    }

    #[test]
    fn a_tilted_photo_makes_no_motion_and_scores_as_an_attack() {
        let sway = |i: usize| {
            let a = i as f32 / 30.0 * std::f32::consts::TAU;
            (a, 0.45 * a.sin(), 20.0 * a.sin())
        };
        let mut t = LivenessTrack::new(LivenessConfig::default());
        feed(
            &mut t,
            0..30,
            100.0,
            |i| {
                let (a, yaw, dx) = sway(i);
                photo(yaw, 0.2 * a.cos(), dx)
            },
            |i| {
                let (_, yaw, dx) = sway(i);
                Observed {
                    mesh: Some(sheet_mesh(yaw, dx)),
                    ..Observed::default()
                }
            },
        );
        assert!(t.motion_events().is_empty());
        assert!(t.max_anisotropy() > 0.07, "{}", t.max_anisotropy());
        assert!(t.spoof_score() > 0.9, "{}", t.spoof_score());
        assert_eq!(t.verdict(), Verdict::Spoof);
    }

    #[test]
    fn a_head_turn_is_motion_and_scores_live() {
        // Strong parallax is one piece of evidence: alone it is confirmed only with
        // `head_evidence` 1 (below, `one_movement_is_confirmed_by_a_second_piece_of_evidence`).
        let turn = |cfg: LivenessConfig| {
            let mut t = LivenessTrack::new(cfg);
            // The nose moves sideways relative to the eyes: the head turns.
            drift_nose(&mut t, &eyes(0.32), 0..20, 1.1);
            t
        };
        let t = turn(LivenessConfig {
            head_evidence: 1,
            ..LivenessConfig::default()
        });
        assert!(!t.motion_events().is_empty());
        assert!(t.spoof_score() < 0.1, "{}", t.spoof_score());
        assert_eq!(t.verdict(), Verdict::Live);
        let unconfirmed = turn(LivenessConfig::default());
        assert_eq!(unconfirmed.spoof_score(), 0.5);
        assert_eq!(unconfirmed.verdict(), Verdict::Unknown);
        let still = {
            let mut t = LivenessTrack::new(LivenessConfig::default());
            for i in 0..20u64 {
                t.update(i as f64 * 100.0, i, &FACE, &Cues::default());
            }
            t
        };
        assert_eq!(still.verdict(), Verdict::Unknown);
        assert!((still.spoof_score() - 0.5).abs() < 1e-6);
    }

    #[test]
    fn a_dip_within_the_eyes_own_wobble_is_no_blink_and_a_tiny_face_is_not_judged() {
        // A small, blurred face: the opening wobbles 0.24-0.32; a dip to 0.22 is within it.
        let wobbly = [
            0.30, 0.25, 0.32, 0.24, 0.31, 0.26, 0.30, 0.22, 0.29, 0.31, 0.25, 0.30,
        ];
        assert!(run(&wobbly).blinks().is_empty());
        // The same face really closing its eyes (0.08) blinks, however blurred.
        let mut closed = wobbly;
        closed[7] = 0.08;
        assert_eq!(run(&closed).blinks().len(), 1);
        // A slow reopening (0.08 -> 0.2 -> 0.22 -> 0.3) is one blink, not two.
        let slow = [
            0.32, 0.31, 0.33, 0.32, 0.30, 0.32, 0.08, 0.2, 0.22, 0.3, 0.32, 0.31,
        ];
        assert_eq!(run(&slow).blinks().len(), 1);
        // A face 12 px between the eyes: eyelids are not read at all, parallax is no evidence.
        let tiny = FACE.map(|[x, y]| [x / 5.0, y / 5.0]);
        let mut t = LivenessTrack::new(LivenessConfig::default());
        feed(
            &mut t,
            0..closed.len(),
            100.0,
            |i| {
                let mut lm = tiny;
                lm[2][0] += i as f32 * 0.3;
                lm
            },
            |i| Observed {
                eyes: Some(eyes(closed[i])),
                ..Observed::default()
            },
        );
        assert!(!t.judgeable());
        assert!(t.blinks().is_empty());
        assert_ne!(t.verdict(), Verdict::Live);
    }

    /// A frame pair whose surroundings moved with the face (a held sheet) / stayed (a room).
    const SHEET: ContextObservation = ContextObservation {
        still: 2,
        with_face: 30,
        far_still: 2,
        far_with_face: 12,
    };
    const ROOM: ContextObservation = ContextObservation {
        still: 30,
        with_face: 3,
        far_still: 20,
        far_with_face: 0,
    };

    /// Eye openings of 10 frames with one blink (frame 6).
    const ONE_BLINK: [f32; 10] = [0.32, 0.31, 0.33, 0.32, 0.30, 0.32, 0.2, 0.31, 0.32, 0.31];

    /// The defaults, where a blink alone suffices (else a still person who blinks is not live
    /// either).
    fn blink_suffices() -> LivenessConfig {
        LivenessConfig {
            blink_suffices: true,
            ..LivenessConfig::default()
        }
    }

    /// Frames 100 ms apart of a face whose eyes open `open[i]`, with `each(i)`'s other cues.
    fn run_eyes(
        cfg: &LivenessConfig,
        open: &[f32],
        each: impl Fn(usize) -> Observed,
    ) -> LivenessTrack {
        run_frames(cfg, open.len(), 100.0, |i| Observed {
            eyes: Some(eyes(open[i])),
            ..each(i)
        })
    }

    /// A straight edge `strength` strong right of the face that moved `shift` px while the
    /// band beyond it stayed (20 blocks against 2).
    fn edge_beside(strength: f32, shift: f32) -> EdgeObservation {
        EdgeObservation {
            sides: [
                None,
                Some(EdgeLine {
                    strength,
                    shift: Some(shift),
                    distance: 1.2,
                    beyond: [20, 2],
                }),
                None,
            ],
        }
    }

    #[test]
    fn a_face_whose_surroundings_move_with_it_is_an_attack_even_when_it_blinks() {
        let cfg = blink_suffices();
        let run = |ctx: &dyn Fn(usize) -> Option<ContextObservation>,
                   moire: &dyn Fn(usize) -> Option<f32>| {
            run_eyes(&cfg, &ONE_BLINK, |i| Observed {
                context: ctx(i),
                moire: moire(i),
                ..Observed::default()
            })
        };
        // The eyes behind an eye-cut print blink, and the sheet moves with the face.
        let held = run(&|i| (i % 2 == 0).then_some(SHEET), &|_| None);
        assert_eq!(held.blinks().len(), 1);
        assert!(held.presented());
        assert_eq!(held.verdict(), Verdict::Spoof);
        // A person before a wall: the room stays; a few sheet-like frames (hair moving with the
        // head) do not outweigh it.
        let person = run(&|i| Some(if i % 3 == 0 { SHEET } else { ROOM }), &|_| None);
        assert!(!person.presented());
        assert_eq!(person.verdict(), Verdict::Live);
        // A head whose hair and hand move with it in every frame, before a wall that stays
        // (headtrackr_cap4, pexels_eyes_hand): the near ring moved with the face, and beyond a
        // head's reach the room stayed, so no frame is a sheet's.
        let head = ContextObservation {
            far_with_face: 1,
            far_still: 2,
            ..SHEET
        };
        let turning = run(&|_| Some(head), &|_| None);
        assert_eq!(turning.presentation_frames()[0], 0);
        assert_eq!(turning.verdict(), Verdict::Live);
        // The same near ring with too few far blocks to tell (an attack whose sheet ends near
        // the face) is not a sheet frame either: the sheet's border and the screen's grid are
        // the cues for those.
        let few = ContextObservation {
            far_with_face: 3,
            far_still: 0,
            ..SHEET
        };
        assert!(!run(&|_| Some(few), &|_| None).presented());
        // A pixel grid over the face in enough frames: a screen.
        let screen = run(&|_| None, &|_| Some(2.9));
        assert!(screen.presented());
        assert_eq!(screen.verdict(), Verdict::Spoof);
        assert!(!run(&|_| None, &|_| Some(1.5)).presented());
        // Two grid frames are not enough, unless one of them is beyond doubt.
        assert!(!run(&|_| None, &|i| Some(if i < 2 { 2.9 } else { 1.5 })).presented());
        let glimpse = run(&|_| None, &|i| Some(if i == 4 { 3.5 } else { 1.5 }));
        assert!(glimpse.presented());
        assert_eq!(glimpse.verdict(), Verdict::Spoof);
    }

    #[test]
    fn a_strong_edge_that_moves_beside_the_face_is_a_sheets_border_and_one_that_stays_is_not() {
        let cfg = blink_suffices();
        let run = |cfg: &LivenessConfig, edge: &dyn Fn(usize) -> EdgeObservation| {
            run_eyes(cfg, &ONE_BLINK, |i| Observed {
                edge: Some(edge(i)),
                ..Observed::default()
            })
        };
        // A bezel beside the face moves 10 px in every other frame pair: an attack, blink and
        // all.
        let border = |i: usize| edge_beside(60.0, if i.is_multiple_of(2) { 10.0 } else { 2.0 });
        let held = run(&cfg, &border);
        assert_eq!(held.blinks().len(), 1);
        assert!(held.presented());
        assert_eq!(held.verdict(), Verdict::Spoof);
        // Off, or the edge too weak to be one: live.
        let off = LivenessConfig {
            edge_strength: 0.0,
            ..cfg.clone()
        };
        assert_eq!(run(&off, &border).verdict(), Verdict::Live);
        let faint = run(&cfg, &|i| {
            edge_beside(10.0, if i.is_multiple_of(2) { 10.0 } else { 2.0 })
        });
        assert_eq!(faint.verdict(), Verdict::Live);
        // A door frame beside a person stays; one frame pair in three where it seemed to move
        // (two parallel edges confused) does not outweigh it.
        let door = run(&cfg, &|i| {
            edge_beside(60.0, if i.is_multiple_of(3) { 10.0 } else { 0.0 })
        });
        assert!(!door.presented());
        assert_eq!(door.verdict(), Verdict::Live);
    }

    #[test]
    fn a_face_once_shown_presented_stays_an_attack_when_the_sheet_or_bezel_is_held_still() {
        // 16 frames; the eyes behind an eye-cut print blink at frame 12, long after the hand
        // stopped moving the sheet (frame 4).
        let mut open = [0.32; 16];
        open[12] = 0.2;
        let cfg = blink_suffices();
        let run =
            |cfg: &LivenessConfig, each: &dyn Fn(usize) -> Observed| run_eyes(cfg, &open, each);
        // Four frames where the surroundings moved with the face, then twelve where they
        // stayed: the count alone (4 against 3 x 12) would no longer call it a sheet.
        let held = run(&cfg, &|i| Observed {
            context: Some(if i < 4 { SHEET } else { ROOM }),
            ..Observed::default()
        });
        assert_eq!(held.presentation_frames()[..2], [4, 12]);
        assert_eq!(held.blinks().len(), 1);
        assert!(held.presented());
        assert_eq!(held.verdict(), Verdict::Spoof);
        // A phone's bezel that moved in four frame pairs, then stopped: the same.
        let stopped = run(&cfg, &|i| Observed {
            edge: Some(edge_beside(60.0, if i < 4 { 12.0 } else { 0.5 })),
            ..Observed::default()
        });
        assert_eq!(stopped.presentation_frames()[3..], [4, 12]);
        assert_eq!(stopped.verdict(), Verdict::Spoof);
        // Stays an attack for a new track that the tracker starts where it was lost.
        let mut memory = PresentationMemory::default();
        memory.note(&stopped, 1500.0, [100.0, 100.0], 80.0);
        let mut next = LivenessTrack::new(cfg.clone());
        memory.hand_down(&mut next, 1600.0, [104.0, 100.0], 80.0);
        assert!(next.presented());
        // A person whose hair moved with the head in two early frames never was presented:
        // live by the blink.
        let person = run(&cfg, &|i| Observed {
            context: Some(if i < 2 { SHEET } else { ROOM }),
            ..Observed::default()
        });
        assert!(!person.presented());
        assert_eq!(person.verdict(), Verdict::Live);
    }

    /// Frames 100 ms apart of an open-eyed face whose moiré peak was `peaks[i]`.
    fn run_moire(cfg: LivenessConfig, peaks: &[f32]) -> LivenessTrack {
        run_frames(&cfg, peaks.len(), 100.0, |i| Observed {
            eyes: Some(eyes(0.32)),
            moire: Some(peaks[i]),
            ..Observed::default()
        })
    }

    #[test]
    fn moire_peaks_raised_over_frames_are_a_screen_and_a_real_faces_single_peak_is_not() {
        let run = run_moire;
        let cfg = LivenessConfig::default();
        // A replayed clip's screen whose grid never aliases over `moire_peak` (2.7): its peaks
        // stay raised, as the SYNTHETIC replays' do (1.7-3.3, median of their first 20 frames).
        let screen = [2.5, 2.45, 2.6, 2.3, 2.5, 2.55, 2.42, 2.48, 2.5, 2.6];
        assert!(screen.iter().all(|m| *m < cfg.moire_peak));
        let t = run(cfg.clone(), &screen);
        assert!(t.presented());
        assert_eq!(t.verdict(), Verdict::Spoof);
        let off = LivenessConfig {
            moire_sustained: 0.0,
            ..cfg.clone()
        };
        assert!(!run(off, &screen).presented(), "0 turns it off");
        // A real face: one frame's peak as high as a screen's, a few raised ones around it
        // (the most any real clip's median of 5 reached was 2.34, in one frame).
        let face = [1.4, 1.6, 2.5, 2.3, 2.35, 2.2, 1.5, 2.6, 1.3, 1.6];
        assert!(!run(cfg.clone(), &face).presented());
        // Fewer than 5 peaks so far: no median yet.
        assert!(!run(cfg, &screen[..4]).presented());
    }

    #[test]
    fn a_screen_shown_again_as_a_new_track_is_still_a_screen() {
        let screen_then_plain = |moire: f32| run_moire(LivenessConfig::default(), &[moire; 5]);
        let seen = screen_then_plain(3.5);
        let p = seen
            .presentation()
            .expect("a grid beyond doubt is a screen");
        assert!(screen_then_plain(1.5).presentation().is_none());
        assert!(p.screen_certain);
        let mut memory = PresentationMemory::default();
        memory.note(&seen, 400.0, centre(&FACE), 80.0);
        // Hidden for a moment, shown again a little aside: the same screen, whatever it does.
        let mut again = LivenessTrack::new(LivenessConfig::default());
        memory.hand_down(&mut again, 2000.0, [150.0, 140.0], 80.0);
        let open = [0.32, 0.31, 0.33, 0.32, 0.30, 0.32, 0.2, 0.31, 0.32];
        for (i, o) in open.iter().enumerate() {
            again.update(
                2000.0 + i as f64 * 100.0,
                i as u64,
                &FACE,
                &Cues {
                    eyes: Some(&eyes(*o)),
                    moire: Some(1.5),
                    ..Cues::default()
                },
            );
        }
        assert_eq!(again.blinks().len(), 1);
        assert_eq!(again.verdict(), Verdict::Spoof);
        // Later than the memory, or elsewhere in the frame: a face of its own.
        let fresh = |t_ms: f64, at: [f32; 2]| {
            let mut t = LivenessTrack::new(LivenessConfig::default());
            memory.hand_down(&mut t, t_ms, at, 80.0);
            t.presentation()
        };
        assert!(fresh(2000.0, [150.0, 140.0]).is_some());
        assert!(fresh(400.0 + PRESENTATION_MEMORY_MS + 1.0, centre(&FACE)).is_none());
        assert!(fresh(2000.0, [130.0 + 200.0, 140.0]).is_none());
        // A track that shows nothing is not remembered.
        let mut plain = PresentationMemory::default();
        plain.note(&screen_then_plain(1.5), 400.0, centre(&FACE), 80.0);
        let mut t = LivenessTrack::new(LivenessConfig::default());
        plain.hand_down(&mut t, 500.0, centre(&FACE), 80.0);
        assert!(t.presentation().is_none());
    }

    #[test]
    fn a_face_whose_texture_changes_as_moving_fringes_do_is_a_screen_whatever_it_moves() {
        // A replayed head turning (a relief of 0.03), its texture changing by `change` from
        // every frame to the next, or in every `every`-th frame only.
        let run_at = |cfg: &LivenessConfig, change: f32, every: usize, interval_ms: f64| {
            run_frames(cfg, 12, interval_ms, |i| Observed {
                eyes: Some(eyes(0.32)),
                flow: Some(relief_flow([0.03, 0.0], Some([0.03, 0.0]))),
                change: Some(if i % every == 0 { change } else { 0.01 }),
                ..Observed::default()
            })
        };
        let run =
            |cfg: &LivenessConfig, change: f32, every: usize| run_at(cfg, change, every, 100.0);
        let cfg = LivenessConfig::default();
        let screen = run(&cfg, 0.15, 1);
        assert!(screen.presented(), "{:?}", screen.presentation_frames());
        assert_eq!(screen.verdict(), Verdict::Spoof);
        // Skin and paper keep their texture (0.01-0.04): the relief makes it live.
        let head = run(&cfg, 0.04, 1);
        assert!(!head.presented());
        assert_eq!(head.verdict(), Verdict::Live);
        // One odd frame in three (a hand passing, a blurred frame) is no screen: the median of
        // 3 frames counts.
        let odd = run(&cfg, 0.3, 3);
        assert!(!odd.presented(), "{:?}", odd.presentation_frames());
        // Frames 0.2 s apart (5 fps): a real face's texture changes more between them, and the
        // limit is twice as high; a screen's fringes still pass it.
        assert!(run_at(&cfg, 0.1, 1, 100.0).presented());
        assert!(!run_at(&cfg, 0.1, 1, 200.0).presented());
        assert!(run_at(&cfg, 0.15, 1, 200.0).presented());
        // Turned off: no screen, though the relief through such a texture counts only with
        // `movement_max_change` off too.
        let off = LivenessConfig {
            screen_change: 0.0,
            ..LivenessConfig::default()
        };
        assert!(!run(&off, 0.15, 1).presented());
        assert_ne!(run(&off, 0.15, 1).verdict(), Verdict::Live);
        let both_off = LivenessConfig {
            movement_max_change: 0.0,
            ..off
        };
        assert_eq!(run(&both_off, 0.15, 1).verdict(), Verdict::Live);
    }

    #[test]
    fn a_face_shaped_parallax_in_one_direction_is_a_relief_and_noise_is_not() {
        let run = |e: &dyn Fn(usize) -> [f32; 2]| {
            run_flow(&LivenessConfig::default(), |i| {
                relief_flow(e(i), Some(e(i)))
            })
        };
        // A head turning: the nose moves the same way against the cheeks for half a second.
        let head = run(&|_| [0.03, 0.004]);
        assert_eq!(head.motion_events().len(), 2, "one event per 5 frame pairs");
        assert_eq!(head.verdict(), Verdict::Live);
        // A screen's moiré: as large, but its direction changes from pair to pair.
        let noise = run(&|i| {
            let a = i as f32 * 2.4;
            [0.03 * a.cos(), 0.03 * a.sin()]
        });
        assert!(
            noise.motion_events().is_empty(),
            "{:?}",
            noise.motion_events()
        );
        assert_ne!(noise.verdict(), Verdict::Live);
        // A sheet: under the limit.
        assert!(run(&|_| [0.009, 0.0]).motion_events().is_empty());
    }

    #[test]
    fn a_relief_a_prints_bend_explains_is_no_head_movement() {
        let run = |cfg: &LivenessConfig, unbent: Option<[f32; 2]>| {
            run_flow(cfg, |_| relief_flow([0.03, 0.004], unbent))
        };
        let cfg = LivenessConfig::default();
        assert!(cfg.relief_unbent > 0.0, "on by default");
        // A head: what a cylinder does not explain stays (its nose, brow and chin).
        let head = run(&cfg, Some([0.028, 0.005]));
        assert_eq!(head.motion_events().len(), 2, "{:?}", head.motion_events());
        assert_eq!(head.verdict(), Verdict::Live);
        // A bent print swaying: the same relief, all of it a cylinder's.
        let bent = run(&cfg, Some([0.004, -0.002]));
        assert!(
            bent.motion_events().is_empty(),
            "{:?}",
            bent.motion_events()
        );
        assert_ne!(bent.verdict(), Verdict::Live);
        // No bend fit (singular): no evidence either.
        assert!(run(&cfg, None).motion_events().is_empty());
        // Off: the relief alone counts, as before.
        let off = LivenessConfig {
            relief_unbent: 0.0,
            ..cfg
        };
        assert_eq!(run(&off, Some([0.004, -0.002])).verdict(), Verdict::Live);
        assert_eq!(run(&off, None).verdict(), Verdict::Live);
    }

    #[test]
    fn movements_through_a_changing_texture_are_no_head_movement() {
        // 12 frames `ms` apart whose texture changed by `change` from each frame to the next,
        // showing a head's relief (bend fitted too) or a talking mouth (the mesh's opening);
        // the eyes dip once at frame 6 when `blink`.
        let run = |cfg: &LivenessConfig, ms: f64, change: f32, talk: bool, blink: bool| {
            let speech = [
                0.02, 0.03, 0.02, 0.08, 0.15, 0.2, 0.18, 0.1, 0.04, 0.03, 0.02, 0.02,
            ];
            run_frames(cfg, 12, ms, |i| Observed {
                eyes: Some(eyes(if blink && i == 6 { 0.2 } else { 0.32 })),
                flow: (!talk).then(|| relief_flow([0.03, 0.004], Some([0.028, 0.005]))),
                mesh: talk.then(|| MeshObservation {
                    rigid: Vec::new(),
                    mouth_open: speech[i],
                    eyelids: [0.3, 0.3],
                }),
                change: Some(change),
                ..Observed::default()
            })
        };
        let cfg = LivenessConfig::default();
        let limit = cfg.movement_max_change;
        assert!(
            limit > 0.0 && limit < cfg.screen_change,
            "on by default, under the screen cue"
        );
        let fringes = 1.5 * limit;
        for (talk, cue) in [(false, "relief"), (true, "mouth")] {
            // Skin keeps its texture as the head turns or talks: live by that movement.
            let skin = run(&cfg, 100.0, 0.01, talk, false);
            assert_eq!(skin.life_cues(), [cue]);
            assert_eq!(skin.verdict(), Verdict::Live);
            // A screen's moving fringes, too slow for the screen cue itself: no movement.
            let screen = run(&cfg, 100.0, fringes, talk, false);
            assert!(!screen.presented(), "the screen cue alone does not see it");
            let events = screen.motion_events();
            assert!(events.is_empty(), "{cue}: {events:?}");
            assert_ne!(screen.verdict(), Verdict::Live);
            // Frames 0.2 s apart: the same change is half as much per 0.1 s, as a head's is.
            assert_eq!(
                run(&cfg, 200.0, fringes, talk, false).verdict(),
                Verdict::Live
            );
            // Off: the movement counts whatever the texture did.
            let off = LivenessConfig {
                movement_max_change: 0.0,
                ..cfg.clone()
            };
            assert_eq!(
                run(&off, 100.0, fringes, talk, false).verdict(),
                Verdict::Live
            );
        }
        // A blink with the fringes' relief is no blink with a relief either.
        let blinked = run(&cfg, 100.0, fringes, false, true);
        assert_eq!(blinked.blinks().len(), 1);
        assert!(blinked.life_cues().is_empty(), "{:?}", blinked.life_cues());
        assert_ne!(blinked.verdict(), Verdict::Live);
    }

    #[test]
    fn a_clear_blink_with_a_weak_relief_is_live_and_either_alone_is_not() {
        // 12 frames 100 ms apart; the eyes (open 0.32) dip once at frame 6 to `dip`; the face
        // flow's parallax vector is `relief` on every pair.
        let run = |cfg: &LivenessConfig, dip: Option<f32>, relief: f32| {
            run_frames(cfg, 12, 100.0, |i| Observed {
                eyes: Some(eyes(dip.filter(|_| i == 6).unwrap_or(0.32))),
                flow: Some(relief_flow([relief, 0.002], Some([relief, 0.002]))),
                ..Observed::default()
            })
        };
        let cfg = LivenessConfig::default();
        // A clear blink (0.2 of 0.32: 0.625, under `relief_with_blink_depth`, 0.65) and a relief
        // between `relief_with_blink` (0.015) and `relief_parallax` (0.02): no motion event.
        let both = run(&cfg, Some(0.2), 0.017);
        assert_eq!(both.blinks().len(), 1);
        assert!(both.motion_events().is_empty());
        assert!(!both.needs_movement());
        assert_eq!(both.verdict(), Verdict::Live);
        // A blink alone (an eye-cut print), or the weak relief alone: not live.
        let blink_only = run(&cfg, Some(0.2), 0.012);
        assert_eq!(blink_only.blinks().len(), 1);
        assert!(blink_only.needs_movement());
        assert_ne!(blink_only.verdict(), Verdict::Live);
        let relief_only = run(&cfg, None, 0.017);
        assert!(relief_only.blinks().is_empty());
        assert_ne!(relief_only.verdict(), Verdict::Live);
        // A shallow blink (0.23 of 0.32: 0.72, a closure under `blink_close_ratio`, 0.75, but
        // not a clear one) with the weak relief: a blink, not enough; any blink with the depth
        // off.
        let shallow = run(&cfg, Some(0.23), 0.017);
        assert_eq!(shallow.blinks().len(), 1);
        assert!(shallow.needs_movement());
        assert_ne!(shallow.verdict(), Verdict::Live);
        let any = LivenessConfig {
            relief_with_blink_depth: 0.0,
            ..cfg.clone()
        };
        assert_eq!(run(&any, Some(0.23), 0.017).verdict(), Verdict::Live);
        // Off: the blink and the weak relief are not enough.
        let off = LivenessConfig {
            relief_with_blink: 0.0,
            ..cfg
        };
        assert_ne!(run(&off, Some(0.2), 0.017).verdict(), Verdict::Live);
    }

    #[test]
    fn a_talking_mouth_is_a_movement_and_a_still_one_is_not() {
        let mesh = |open: f32| MeshObservation {
            rigid: Vec::new(),
            mouth_open: open,
            eyelids: [0.3, 0.3],
        };
        let run = |openings: &[f32]| {
            run_frames(&LivenessConfig::default(), openings.len(), 100.0, |i| {
                Observed {
                    mesh: Some(mesh(openings[i])),
                    ..Observed::default()
                }
            })
        };
        // Speech: the lips open to 0.2 eye widths and close again within a second; once is a
        // movement not yet confirmed (`head_evidence`), twice is live.
        let word = [
            0.02, 0.03, 0.02, 0.08, 0.15, 0.2, 0.18, 0.1, 0.04, 0.03, 0.02,
        ];
        let once = run(&word);
        assert_eq!(once.motion_events().len(), 1);
        assert_eq!(once.spoof_score(), 0.5);
        assert_eq!(once.verdict(), Verdict::Unknown);
        let talk = run(&[word, word].concat());
        assert!(
            talk.motion_events().len() >= 2,
            "{:?}",
            talk.motion_events()
        );
        assert!(talk.spoof_score() < 0.1, "{}", talk.spoof_score());
        assert_eq!(talk.verdict(), Verdict::Live);
        // A print: the mesh's mouth wobbles by a few hundredths; one outlier frame is smoothed.
        let print = run(&[
            0.03, 0.05, 0.02, 0.04, 0.03, 0.2, 0.04, 0.05, 0.03, 0.02, 0.04,
        ]);
        assert!(print.motion_events().is_empty());
        assert_eq!(print.verdict(), Verdict::Unknown);
    }

    /// A face seen with the eye model and the face mesh: `openings[i]` and `mouth[i]` in frame
    /// `i` (frames 100 ms apart; the shorter list is padded with its last value).
    fn run_eyes_and_mouth(cfg: LivenessConfig, openings: &[f32], mouth: &[f32]) -> LivenessTrack {
        let n = openings.len().max(mouth.len());
        run_frames(&cfg, n, 100.0, |i| {
            let at = |v: &[f32]| v[i.min(v.len() - 1)];
            Observed {
                eyes: Some(eyes(at(openings))),
                mesh: Some(MeshObservation {
                    rigid: Vec::new(),
                    mouth_open: at(mouth),
                    eyelids: [0.3, 0.3],
                }),
                ..Observed::default()
            }
        })
    }

    #[test]
    fn one_movement_is_confirmed_by_a_second_piece_of_evidence() {
        // One spoken word (a mouth movement), one blink, each alone and together.
        let word = [
            0.02, 0.03, 0.02, 0.08, 0.15, 0.2, 0.18, 0.1, 0.04, 0.03, 0.02,
        ];
        let open = [0.32];
        let blink = [
            0.32, 0.31, 0.33, 0.32, 0.30, 0.2, 0.31, 0.32, 0.32, 0.32, 0.32,
        ];
        let still = [0.02];
        let cfg = LivenessConfig::default();
        assert_eq!(cfg.head_evidence, 2, "the default");

        let mut once = run_eyes_and_mouth(cfg.clone(), &open, &word);
        assert_eq!((once.moves, once.blinks().len()), (1, 0));
        assert_eq!(once.verdict(), Verdict::Unknown);
        assert!(once.needs_movement(), "the person is still asked to turn");
        assert!(once.life_cues().is_empty(), "{:?}", once.life_cues());
        // Unconfirmed, the movement still keeps the plane's foreshortening (which a turning
        // head shows too) from scoring it as a sheet.
        once.max_anisotropy = 0.2;
        assert_eq!(once.spoof_score(), 0.5);
        // With the rule at 1, that movement is enough.
        let lenient = LivenessConfig {
            head_evidence: 1,
            ..cfg.clone()
        };
        let once_lenient = run_eyes_and_mouth(lenient, &open, &word);
        assert_eq!(once_lenient.verdict(), Verdict::Live);
        assert_eq!(once_lenient.life_cues(), ["mouth"]);

        // A blink confirms the movement; a blink alone is no movement at all.
        let both = run_eyes_and_mouth(cfg.clone(), &blink, &word);
        assert_eq!((both.moves, both.blinks().len()), (1, 1));
        assert_eq!(both.verdict(), Verdict::Live);
        assert_eq!(both.life_cues(), ["mouth"]);
        let mut blinked = run_eyes_and_mouth(cfg.clone(), &blink, &still);
        assert_eq!((blinked.moves, blinked.blinks().len()), (0, 1));
        assert_eq!(blinked.verdict(), Verdict::Unknown);
        // Strong parallax is a movement: with the blink, two pieces.
        blinked.max_parallax = cfg.parallax_live;
        assert_eq!(blinked.verdict(), Verdict::Live);
        assert_eq!(blinked.life_cues(), ["parallax"]);

        // A second word confirms the first.
        let twice = run_eyes_and_mouth(cfg, &open, &[word, word].concat());
        assert!(twice.moves >= 2, "{}", twice.moves);
        assert_eq!(twice.verdict(), Verdict::Live);
    }

    /// Feeds `t` the frames `frames` of a face whose nose drifts `step` px a frame against its
    /// eyes and mouth, seen with `eyes`.
    fn drift_nose(
        t: &mut LivenessTrack,
        eyes: &EyeObservation,
        frames: std::ops::Range<usize>,
        step: f32,
    ) {
        feed(
            t,
            frames,
            100.0,
            |i| {
                let mut lm = FACE;
                lm[2][0] += i as f32 * step;
                lm
            },
            |_| Observed {
                eyes: Some(*eyes),
                ..Observed::default()
            },
        );
    }

    #[test]
    fn nose_parallax_under_parallax_live_is_no_evidence_and_over_it_is() {
        let sharp = eyes(0.32);
        // Strong parallax alone, confirmed by nothing else (`head_evidence` 1).
        let mut t = LivenessTrack::new(LivenessConfig {
            head_evidence: 1,
            ..LivenessConfig::default()
        });
        // The nose drifts 12 px against the eyes and the mouth, as CenterFace's landmarks do
        // on a print tilted by 18°: head movements for the enrollment rule, not life.
        drift_nose(&mut t, &sharp, 0..16, 0.8);
        assert!(t.detailed() && t.judgeable());
        assert!(
            (0.15..0.3).contains(&t.max_parallax()),
            "{}",
            t.max_parallax()
        );
        assert!(!t.motion_events().is_empty());
        assert_eq!(t.verdict(), Verdict::Unknown);
        // Twice as far: beyond what a sheet's landmarks drift, a real head.
        drift_nose(&mut t, &sharp, 16..32, 0.8);
        assert!(t.max_parallax() >= 0.3, "{}", t.max_parallax());
        assert_eq!(t.verdict(), Verdict::Live);
    }

    #[test]
    fn a_blurry_face_gives_no_parallax_evidence() {
        let mut blurry = eyes(0.32);
        blurry.sharpness = 20.0;
        let mut t = LivenessTrack::new(LivenessConfig::default());
        drift_nose(&mut t, &blurry, 0..20, 0.8);
        assert!(!t.detailed());
        assert_ne!(t.verdict(), Verdict::Live);
    }

    #[test]
    fn decisions_follow_the_contract_and_instruct_what_is_missing() {
        let ev =
            |blinks, motion_events, obstacles: &'static [&'static str], spoof_score| Evidence {
                blinks,
                motion_events,
                frames: 10,
                quality: 0.8,
                obstacles,
                spoof_score,
                spoof_threshold: 0.5,
                judgeable: true,
                needs_movement: false,
            };
        let enroll = Requirements::enrollment(2, 10, 0.5);
        let auth = Requirements::authentication(3, 0.5);
        // Enrollment needs both blinks and motion.
        let d = decide(&enroll, &ev(2, 0, &[], 0.0));
        assert!(!d.passed);
        assert_eq!(d.instruction.unwrap().instruction, "turn_head");
        let d = decide(&enroll, &ev(1, 1, &[], 0.0));
        assert_eq!(d.instruction.unwrap().instruction, "blink");
        assert!(decide(&enroll, &ev(2, 1, &[], 0.0)).passed);
        // Authentication: either suffices.
        assert!(decide(&auth, &ev(0, 1, &[], 0.2)).passed);
        assert!(decide(&auth, &ev(1, 0, &[], 0.2)).passed);
        assert_eq!(
            decide(&auth, &ev(0, 0, &[], 0.5))
                .instruction
                .unwrap()
                .instruction,
            "blink"
        );
        // An obstacle blocks and comes first; an attack score blocks without a hint.
        let d = decide(&auth, &ev(1, 1, &["hand"], 0.0));
        assert_eq!(d.missing, vec![Missing::Obstacle]);
        assert_eq!(d.instruction.unwrap().instruction, "move_hand");
        let d = decide(&auth, &ev(1, 1, &[], 0.9));
        assert_eq!((d.passed, d.instruction), (false, None));
        assert_eq!(d.missing, vec![Missing::Liveness]);
        // A face too small to judge is asked to come closer, even with evidence.
        let small = Evidence {
            judgeable: false,
            ..ev(1, 1, &[], 0.1)
        };
        let d = decide(&auth, &small);
        assert!(!d.passed);
        assert_eq!(d.instruction.unwrap().instruction, "come_closer");
        // Where a blink alone does not do (`blink_suffices` off), a face without a head's
        // movement is asked to turn its head, before and after it blinked; enrollment too.
        let still = |blinks, motion_events| Evidence {
            needs_movement: true,
            ..ev(blinks, motion_events, &[], 0.5)
        };
        for (blinks, motion_events) in [(0, 0), (1, 0), (1, 1)] {
            let d = decide(&auth, &still(blinks, motion_events));
            assert!(!d.passed);
            assert_eq!(d.instruction.unwrap().instruction, "turn_head");
        }
        let d = decide(&enroll, &still(2, 1));
        assert_eq!(d.instruction.unwrap().instruction, "turn_head");
        assert_eq!(
            decide(&enroll, &still(0, 1))
                .instruction
                .unwrap()
                .instruction,
            "blink"
        );
    }

    /// With `blink_suffices` off, a blink leaves the score at 0.5 (no evidence either way) and
    /// the face needs a head's movement; a mouth movement then makes it live.
    #[test]
    fn by_default_a_blink_alone_is_not_live() {
        let lenient = blink_suffices();
        let openings = [0.32, 0.31, 0.33, 0.32, 0.30, 0.2, 0.31, 0.32];
        let blink_suffices = run_with(lenient, &openings);
        let mut strict = run(&openings);
        assert_eq!(blink_suffices.blinks().len(), 1);
        assert_eq!(blink_suffices.verdict(), Verdict::Live);
        assert!(!blink_suffices.needs_movement());
        assert_eq!(strict.blinks().len(), 1, "the blink is still seen");
        assert_eq!(strict.spoof_score(), 0.5);
        assert_eq!(strict.verdict(), Verdict::Unknown);
        assert!(strict.needs_movement());
        // The blink is the second piece of evidence (`head_evidence`) to one mouth movement.
        strict.mouth_moved = true;
        strict.moves = 1;
        assert_eq!(strict.verdict(), Verdict::Live);
        assert!(!strict.needs_movement());
    }

    #[test]
    fn lips_moving_against_a_quiet_face_are_talking_and_moire_noise_is_not() {
        let strict = LivenessConfig::default();
        let run = |cfg: &LivenessConfig, mouth: f32, face: f32| {
            run_flow(cfg, |_| FlowObservation {
                residual: 0.02,
                points: 40,
                e: [0.0, 0.0],
                unbent: Some([0.0, 0.0]),
                mouth: Some(mouth),
                face,
            })
        };
        // A GRID speaker: the lips move 0.04-0.06 eye distances, the face 0.01.
        let speaker = run(&strict, 0.045, 0.012);
        assert_eq!(
            speaker.motion_events().len(),
            2,
            "one event per 5 frame pairs"
        );
        assert!(!speaker.needs_movement());
        assert_eq!(speaker.verdict(), Verdict::Live);
        // A print's paper mouth: the matching noise only.
        let print = run(&strict, 0.015, 0.008);
        assert!(print.motion_events().is_empty());
        assert!(print.needs_movement());
        assert_eq!(print.verdict(), Verdict::Unknown);
        // A screen's moiré moves every patch alike: not the lips against the face.
        let screen = run(&strict, 0.06, 0.04);
        assert!(screen.motion_events().is_empty());
        assert!(screen.needs_movement());
        let off = LivenessConfig {
            lip_flow: 0.0,
            ..strict.clone()
        };
        assert!(run(&off, 0.045, 0.012).motion_events().is_empty());
    }
}
