//! `facegate pad-eval`: presentation-attack detection measured ISO/IEC 30107-3 style, and how
//! fast real people are verified.
//!
//! Attack presentations: SYNTHETIC attacks (`attack.rs`) rendered from every given photo (print,
//! bent print, screen, eye-cut print with a real clip's blinking eyes) and from every given clip
//! (a screen replaying it), per attack type; an attack is accepted when the liveness verdict is
//! `live` at ANY frame of it (a session stops at the first live verdict); APCER = share accepted.
//!
//! Bona fide presentations: every clip at its own size and at downscaled copies (the frame
//! shrunk around its centre on a canvas of the same size, so the face is ~120 and ~80 px wide in
//! a frame as large as the original); with `--enlarge`, a `--face-widths` larger than the clip's
//! face enlarges the whole frame instead (a higher-resolution camera; without it such a width is
//! skipped, so the standard report is each clip at its own size and smaller). Per clip and
//! scale: sessions starting every second, each with the session frame budget, give the time to
//! a live verdict under the authentication rules (at least 3 frames, blink or head movement,
//! attack score under the threshold, face large enough to judge); windows of `--window-frames`
//! give BPCER (share of windows never live).
//! Sessions and windows with a face in fewer than 2 s of their frames are no presentation (the
//! person has left) and are counted apart. Sessions never verified that the clip's end cut to
//! fewer frames than the budget and than a window count as never verified, and are named.
//!
//! Every sequence is judged by a fresh `LivenessTrack` fed the observations (landmarks, eyes,
//! mesh) one stream pass made of the frames: the track is pure over its observations, so this is
//! what a session starting at that frame would have decided.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::attack::{self, AttackKind, Content};
use super::liveness::{decode_file, frame_files};
use crate::pipeline::context::ContextObservation;
use crate::pipeline::edge::{EdgeLine, EdgeObservation};
use crate::pipeline::eyes::EyeObservation;
use crate::pipeline::flow::FlowObservation;
use crate::pipeline::liveness::{
    self, LivenessConfig, LivenessTrack, Observed, PresentationMemory, Verdict,
};
use crate::pipeline::mesh::MeshObservation;
use crate::pipeline::stream::{LiveModels, Stream};
use crate::pipeline::{Pipeline, largest};

#[derive(Debug)]
pub struct Options {
    pub photos: Vec<PathBuf>,
    pub clips: Vec<PathBuf>,
    /// Frames per attack sequence.
    pub frames: usize,
    pub fps: f64,
    pub seeds: u64,
    /// The first seed: attacks are rendered with seeds `first_seed..first_seed + seeds`.
    pub first_seed: u64,
    /// Bona fide window length (BPCER) and step between windows, frames.
    pub window_frames: usize,
    pub window_stride: usize,
    /// A session's frame budget (time-to-live sessions).
    pub session_frames: usize,
    /// Face widths (pixels) of the downscaled copies of each clip.
    pub face_widths: Vec<f32>,
    /// Widths larger than a clip's face enlarge the whole frame (else they are skipped).
    pub enlarge: bool,
    pub json: bool,
    /// Writes every sequence's observations here (JSON lines), for tuning.
    pub dump: Option<PathBuf>,
}

/// What one stream pass saw of the largest face in one frame.
#[derive(Debug, Clone)]
struct Obs {
    track: u64,
    width: f32,
    landmarks: [[f32; 2]; 5],
    cues: Observed,
}

/// The judgement of one sequence by a fresh track.
#[derive(Debug, Clone, Default)]
struct Judged {
    /// Frames until the first live verdict (1-based), if any.
    frames_to_live: Option<usize>,
    /// The cues of life that verdict rested on (`LivenessTrack::life_cues`).
    live_by: Vec<&'static str>,
    blinked: bool,
    moved: bool,
    spoof_score: f32,
    spoof: bool,
    seen: bool,
}

/// Authentication needs at least this many frames.
const MIN_FRAMES: usize = 3;

fn judge(obs: &[Option<Obs>], cfg: &LivenessConfig, fps: f64) -> Judged {
    let mut track: Option<(u64, LivenessTrack)> = None;
    let mut presented = PresentationMemory::default();
    let mut out = Judged::default();
    for (k, o) in obs.iter().enumerate() {
        let Some(o) = o else { continue };
        let t_ms = k as f64 * 1000.0 / fps;
        let centre = liveness::centre(&o.landmarks);
        if track.as_ref().is_none_or(|(id, _)| *id != o.track) {
            // As the stream does: a face presented nearby just before carries over.
            let mut fresh = LivenessTrack::new(cfg.clone());
            presented.hand_down(&mut fresh, t_ms, centre, o.width);
            track = Some((o.track, fresh));
        }
        let Some((_, t)) = track.as_mut() else {
            continue;
        };
        t.update(t_ms, k as u64, &o.landmarks, &o.cues.cues());
        presented.note(t, t_ms, centre, o.width);
        out.seen = true;
        out.blinked |= !t.blinks().is_empty();
        out.moved |= !t.motion_events().is_empty();
        out.spoof_score = t.spoof_score();
        out.spoof = t.verdict() == Verdict::Spoof;
        if out.frames_to_live.is_none()
            && k + 1 >= MIN_FRAMES
            && t.judgeable()
            && t.verdict() == Verdict::Live
        {
            out.frames_to_live = Some(k + 1);
            out.live_by = t.life_cues();
        }
    }
    out
}

/// One stream pass over `frames`: the largest face's observations per frame.
fn observe(
    pipeline: &Pipeline,
    models: &LiveModels,
    cfg: &LivenessConfig,
    frames: impl Iterator<Item = anyhow::Result<RgbImage>>,
    fps: f64,
) -> anyhow::Result<Vec<Option<Obs>>> {
    let mut stream = Stream::new(cfg.clone());
    let mut out = Vec::new();
    for (i, img) in frames.enumerate() {
        let r = stream.process(pipeline, models, &img?, i as f64 * 1000.0 / fps)?;
        out.push(r.faces.first().map(|f| Obs {
            track: f.track,
            width: f.face.bbox[2] - f.face.bbox[0],
            landmarks: f.face.landmarks,
            cues: f.liveness_observed(),
        }));
    }
    Ok(out)
}

/// One sequence's observations as written by `--dump` (one JSON line) and read back by
/// `--from-dump`: per frame `null` (no face) or a [`DumpFrame`].
#[derive(Debug, Serialize, Deserialize)]
struct DumpLine {
    /// `bona_fide` or the attack's name.
    set: String,
    /// `clip@scale` for bona fide sequences, a description for attacks.
    name: String,
    frames: Vec<Option<DumpFrame>>,
}

/// One frame of a dumped sequence: `lm` the 5 landmarks flattened, `eyes` [left, right
/// opening, sharpness], `mesh` the rigid points flattened, `mouth` the mouth opening, `lids`
/// the mesh's eyelid openings, `ctx` [still, with_face, far still, far with_face] context votes
/// (the far pair absent before 2026-12-05's sixth session: read as all the blocks, which
/// judges those dumps as they were judged when written). Every number is written as the
/// shortest decimal that reads back to the same f32, so a re-judgement is exact.
#[derive(Debug, Serialize, Deserialize)]
struct DumpFrame {
    track: u64,
    width: f32,
    lm: Vec<f32>,
    eyes: Option<[f32; 3]>,
    mesh: Option<Vec<f32>>,
    mouth: Option<f32>,
    lids: Option<[f32; 2]>,
    moire: Option<f32>,
    ctx: Option<Vec<u32>>,
    /// The face flow's [residual, points, parallax x, parallax y] (absent from older dumps),
    /// then the mouth's and the face's offsets from the fit (absent before 2026-12-04's
    /// mouth flow; a negative mouth offset: not measured). Numbers after those are ignored (a
    /// build measured on 2026-12-04 added the plane-plus-relief fit's residual).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flow: Option<Vec<f32>>,
    /// The texture change from the frame before (absent before 2026-12-05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change: Option<f32>,
    /// The face flow's relief parallax with a print's bend fitted too; absent where that fit
    /// was singular, and in dumps from before 2026-12-05's second session, where the relief
    /// rule then sees no relief: judge those with `liveness.relief_unbent` 0, as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unbent: Option<[f32; 2]>,
    /// The edges beside and above the face (`edge.rs`): [strength, shift, blocks beyond that
    /// stayed, blocks beyond that moved, distance] for the left, the right and the upper side,
    /// a negative strength where a side had no line and a negative shift where the earlier
    /// frame had none near it (absent before 2026-12-05's third session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    edge: Option<[f32; 15]>,
}

impl DumpFrame {
    fn of(obs: &Obs) -> DumpFrame {
        let o = &obs.cues;
        DumpFrame {
            track: obs.track,
            width: obs.width,
            lm: obs.landmarks.iter().flatten().copied().collect(),
            eyes: o.eyes.map(|e| [e.opening[0], e.opening[1], e.sharpness]),
            mesh: o
                .mesh
                .as_ref()
                .map(|m| m.rigid.iter().flatten().copied().collect()),
            mouth: o.mesh.as_ref().map(|m| m.mouth_open),
            lids: o.mesh.as_ref().map(|m| m.eyelids),
            moire: o.moire,
            ctx: o
                .context
                .map(|c| vec![c.still, c.with_face, c.far_still, c.far_with_face]),
            flow: o.flow.map(|f| {
                vec![
                    f.residual,
                    f.points as f32,
                    f.e[0],
                    f.e[1],
                    f.mouth.unwrap_or(-1.0),
                    f.face,
                ]
            }),
            change: o.change,
            unbent: o.flow.and_then(|f| f.unbent),
            edge: o.edge.map(|e| {
                let mut v = [-1.0; 15];
                for (i, side) in e.sides.iter().enumerate() {
                    if let Some(l) = side {
                        v[5 * i] = l.strength;
                        v[5 * i + 1] = l.shift.unwrap_or(-1.0);
                        v[5 * i + 2] = l.beyond[0] as f32;
                        v[5 * i + 3] = l.beyond[1] as f32;
                        v[5 * i + 4] = l.distance;
                    }
                }
                v
            }),
        }
    }

    /// The observation again (the eyes' texture and darkness, sunglasses cues the track does
    /// not read, are not dumped).
    fn obs(self) -> anyhow::Result<Obs> {
        let landmarks: [[f32; 2]; 5] = pairs(&self.lm)
            .try_into()
            .map_err(|_| anyhow::anyhow!("`lm` needs 10 numbers, has {}", self.lm.len()))?;
        let mesh = match (self.mesh, self.mouth, self.lids) {
            (Some(rigid), Some(mouth_open), Some(eyelids)) => Some(MeshObservation {
                rigid: pairs(&rigid),
                mouth_open,
                eyelids,
            }),
            _ => None,
        };
        Ok(Obs {
            track: self.track,
            width: self.width,
            landmarks,
            cues: Observed {
                eyes: self.eyes.map(|[l, r, sharpness]| EyeObservation {
                    opening: [l, r],
                    texture: 0.0,
                    darkness: 0.0,
                    sharpness,
                }),
                mesh,
                context: match self.ctx.as_deref() {
                    None => None,
                    Some(&[still, with_face]) => Some(ContextObservation {
                        still,
                        with_face,
                        far_still: still,
                        far_with_face: with_face,
                    }),
                    Some(&[still, with_face, far_still, far_with_face]) => {
                        Some(ContextObservation {
                            still,
                            with_face,
                            far_still,
                            far_with_face,
                        })
                    }
                    Some(c) => anyhow::bail!("`ctx` needs 2 or 4 numbers, has {}", c.len()),
                },
                edge: self.edge.map(|v| EdgeObservation {
                    sides: std::array::from_fn(|i| {
                        (v[5 * i] >= 0.0).then(|| EdgeLine {
                            strength: v[5 * i],
                            shift: Some(v[5 * i + 1]).filter(|s| *s >= 0.0),
                            beyond: [v[5 * i + 2] as u32, v[5 * i + 3] as u32],
                            distance: v[5 * i + 4],
                        })
                    }),
                }),
                moire: self.moire,
                change: self.change,
                flow: match self.flow.as_deref() {
                    None => None,
                    Some([residual, points, ex, ey, rest @ ..]) => Some(FlowObservation {
                        residual: *residual,
                        points: *points as u32,
                        e: [*ex, *ey],
                        unbent: self.unbent,
                        mouth: rest.first().copied().filter(|m| *m >= 0.0),
                        face: rest.get(1).copied().unwrap_or(0.0),
                    }),
                    Some(f) => anyhow::bail!("`flow` needs at least 4 numbers, has {}", f.len()),
                },
            },
        })
    }
}

fn pairs(v: &[f32]) -> Vec<[f32; 2]> {
    v.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
}

fn dump_line(set: &str, name: &str, obs: &[Option<Obs>]) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&DumpLine {
        set: set.to_owned(),
        name: name.to_owned(),
        frames: obs.iter().map(|o| o.as_ref().map(DumpFrame::of)).collect(),
    })?)
}

/// The frame rescaled by `s`: shrunk around its centre on a grey canvas of the same size (a
/// person farther from the same camera), or enlarged as a whole (a camera of `s` times the
/// resolution at the same distance; softer than a sharp sensor, as it is interpolated).
fn rescale(img: &RgbImage, s: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (sw, sh) = (
        ((w as f32 * s).round() as u32).max(1),
        ((h as f32 * s).round() as u32).max(1),
    );
    if s > 1.0 {
        return image::imageops::resize(img, sw, sh, image::imageops::FilterType::CatmullRom);
    }
    let small = image::imageops::resize(img, sw, sh, image::imageops::FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(w, h, image::Rgb([118, 118, 118]));
    image::imageops::overlay(
        &mut canvas,
        &small,
        i64::from((w - sw) / 2),
        i64::from((h - sh) / 2),
    );
    canvas
}

fn photo_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(frame_files(p)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Runs `jobs` on every core, keeping the results in order.
fn parallel<J: Sync, R: Send>(
    jobs: &[J],
    f: impl Fn(&J) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<anyhow::Result<R>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let r = f(job);
                    if let Ok(mut all) = results.lock() {
                        all[i] = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a worker panicked"))?
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("a job did not run"))))
        .collect()
}

/// A bona fide clip at one scale.
#[derive(Debug)]
struct ClipResult {
    name: String,
    /// `native` or the target face width.
    scale: String,
    face_px: f32,
    /// Seconds to a live verdict per session (None: not within the session).
    sessions: Vec<Option<f64>>,
    windows: usize,
    windows_live: usize,
    rejected_windows: Vec<String>,
    /// Sessions and windows left out: a face in fewer than 2 s of their frames (no one was
    /// presenting: face_noface's person leaves after 2.4 s).
    absent_sessions: usize,
    absent_windows: usize,
    /// Of the sessions never verified, those whose frames the clip's end cut to fewer than the
    /// budget and than a BPCER window (5 s): they count as never verified (leaving them out
    /// would leave only the successes of a clip shorter than a window, the GRID speakers' 3 s),
    /// and are named apart, as how long they would have taken is not known.
    cut_sessions: usize,
}

#[derive(Debug, Default, Clone)]
struct Tally {
    sequences: usize,
    accepted: usize,
    with_blink: usize,
    with_motion: usize,
    spoof_verdicts: usize,
    score_sum: f64,
    no_face: usize,
}

impl Tally {
    fn rate(&self) -> f64 {
        self.accepted as f64 / self.sequences.max(1) as f64
    }
}

fn median_width(obs: &[Option<Obs>]) -> f32 {
    let mut w: Vec<f32> = obs.iter().flatten().map(|o| o.width).collect();
    w.sort_by(f32::total_cmp);
    w.get(w.len() / 2).copied().unwrap_or(0.0)
}

/// Whether someone presents a face in a stretch of frames: a face in at least `min` of them
/// (2 s: the median time to a live verdict asked for). Sessions and windows where no one does
/// are not bona fide presentations and are counted apart.
fn presenting(obs: &[Option<Obs>], min: usize) -> bool {
    obs.iter().flatten().count() >= min.min(obs.len())
}

fn evaluate_clip(
    name: &str,
    scale: String,
    obs: &[Option<Obs>],
    cfg: &LivenessConfig,
    opts: &Options,
) -> ClipResult {
    let fps_frames = opts.fps.round().max(1.0) as usize;
    // Sessions every second, each with the session budget; a start needs 2 s of frames left.
    let min_left = (2 * fps_frames).min(obs.len());
    let mut sessions = Vec::new();
    let (mut absent_sessions, mut absent_windows, mut cut_sessions) = (0, 0, 0);
    let mut start = 0;
    while start + min_left <= obs.len() {
        let end = (start + opts.session_frames).min(obs.len());
        if presenting(&obs[start..end], 2 * fps_frames) {
            let j = judge(&obs[start..end], cfg, opts.fps);
            let live = j.frames_to_live.map(|n| n as f64 / opts.fps);
            if live.is_none() && end - start < opts.session_frames.min(opts.window_frames) {
                cut_sessions += 1;
            }
            sessions.push(live);
        } else {
            absent_sessions += 1;
        }
        start += fps_frames;
    }
    let window = opts.window_frames.min(obs.len());
    let (mut windows, mut windows_live, mut rejected) = (0, 0, Vec::new());
    let mut start = 0;
    while window > 0 && start + window <= obs.len() {
        if !presenting(&obs[start..start + window], 2 * fps_frames) {
            absent_windows += 1;
            start += opts.window_stride.max(1);
            continue;
        }
        windows += 1;
        if judge(&obs[start..start + window], cfg, opts.fps)
            .frames_to_live
            .is_some()
        {
            windows_live += 1;
        } else {
            rejected.push(format!("{name}@{scale} frames {start}..{}", start + window));
        }
        start += opts.window_stride.max(1);
    }
    ClipResult {
        name: name.to_owned(),
        scale,
        face_px: median_width(obs),
        sessions,
        windows,
        windows_live,
        rejected_windows: rejected,
        absent_sessions,
        absent_windows,
        cut_sessions,
    }
}

/// Median and 95th percentile (nearest rank; sessions never verified count as infinite), and
/// the share never verified.
fn ttl_stats(sessions: &[Option<f64>]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = sessions
        .iter()
        .map(|s| s.unwrap_or(f64::INFINITY))
        .collect();
    v.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    };
    let never = sessions.iter().filter(|s| s.is_none()).count() as f64 / v.len().max(1) as f64;
    (pick(0.5), pick(0.95), never)
}

fn secs(v: f64) -> serde_json::Value {
    if v.is_finite() { json!(v) } else { json!(null) }
}

fn fmt_s(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "never".to_owned()
    }
}

/// A clip's first frames, decoded, and the eye landmarks and first face box seen in them.
#[derive(Debug)]
struct ClipSource {
    frames: Vec<RgbImage>,
    eyes: Vec<Option<[[f32; 2]; 2]>>,
    face: Option<[f32; 4]>,
}

enum AttackJob<'a> {
    Photo {
        path: &'a Path,
        img: &'a RgbImage,
        face: crate::pipeline::detect::Face,
        kind: AttackKind,
        seed: u64,
        clip: usize,
    },
    Replay {
        clip: usize,
        seed: u64,
    },
}

pub fn run(
    pipeline: &Pipeline,
    models: &LiveModels,
    cfg: &LivenessConfig,
    opts: &Options,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.fps > 0.0 && opts.fps.is_finite(),
        "--fps must be positive"
    );
    anyhow::ensure!(
        opts.first_seed.checked_add(opts.seeds).is_some(),
        "--first-seed plus --seeds must stay under 2^64"
    );
    // Bona fide: one stream pass per clip at its own size, then per downscaled copy.
    let native: Vec<(String, Vec<Option<Obs>>)> = parallel(&opts.clips, |clip| {
        let files = frame_files(clip)?;
        let obs = observe(
            pipeline,
            models,
            cfg,
            files.iter().map(|p| decode_file(pipeline, p)),
            opts.fps,
        )?;
        let name = clip.file_name().map_or_else(
            || clip.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok((name, obs))
    })?;
    let mut scaled_jobs = Vec::new();
    for (i, (_, obs)) in native.iter().enumerate() {
        let w = median_width(obs);
        for &target in &opts.face_widths {
            // Copies differ from the clip by at least 5 %; enlarging, when asked, stops at 4x.
            let s = target / w;
            if w > 0.0 && (s < 0.95 || (opts.enlarge && (1.05..=4.0).contains(&s))) {
                scaled_jobs.push((i, target, s));
            }
        }
    }
    let scaled: Vec<Vec<Option<Obs>>> = parallel(&scaled_jobs, |&(i, _, s)| {
        let files = frame_files(&opts.clips[i])?;
        observe(
            pipeline,
            models,
            cfg,
            files
                .iter()
                .map(|p| decode_file(pipeline, p).map(|img| rescale(&img, s))),
            opts.fps,
        )
    })?;
    let mut clips: Vec<ClipResult> = native
        .iter()
        .map(|(name, obs)| evaluate_clip(name, "native".to_owned(), obs, cfg, opts))
        .collect();
    for ((i, target, _), obs) in scaled_jobs.iter().zip(&scaled) {
        clips.push(evaluate_clip(
            &native[*i].0,
            format!("{target:.0}px"),
            obs,
            cfg,
            opts,
        ));
    }
    clips.sort_by(|a, b| (&a.name, &a.scale).cmp(&(&b.name, &b.scale)));
    let dumped: Mutex<Vec<String>> = Mutex::new(Vec::new());
    if opts.dump.is_some()
        && let Ok(mut lines) = dumped.lock()
    {
        for (name, obs) in &native {
            lines.push(dump_line("bona_fide", &format!("{name}@native"), obs)?);
        }
        for ((i, target, _), obs) in scaled_jobs.iter().zip(&scaled) {
            lines.push(dump_line(
                "bona_fide",
                &format!("{}@{target:.0}px", native[*i].0),
                obs,
            )?);
        }
    }

    // Attack material: the clips' first frames with their eyes, the photos with their faces.
    let sources: Vec<ClipSource> = opts
        .clips
        .iter()
        .zip(&native)
        .map(|(clip, (_, obs))| {
            let files = frame_files(clip)?;
            let frames = files
                .iter()
                .take(opts.frames)
                .map(|p| decode_file(pipeline, p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let eyes = obs
                .iter()
                .take(frames.len())
                .map(|o| o.as_ref().map(|o| [o.landmarks[0], o.landmarks[1]]))
                .collect();
            let face = obs.iter().flatten().next().map(|o| {
                let [le, re] = [o.landmarks[0], o.landmarks[1]];
                let c = [(le[0] + re[0]) / 2.0, (le[1] + re[1]) / 2.0];
                let h = o.width / 2.0;
                [c[0] - h, c[1] - h * 0.8, c[0] + h, c[1] + h * 1.4]
            });
            Ok(ClipSource { frames, eyes, face })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut photos = Vec::new();
    for path in photo_files(&opts.photos)? {
        let img = decode_file(pipeline, &path)?;
        let faces = pipeline.detect(&img)?;
        match largest(&faces).cloned() {
            Some(face) => photos.push((path, img, face)),
            None => {
                tracing::warn!(photo = %path.display(), "no face in the photo: no attack made from it");
            }
        }
    }
    let mut jobs = Vec::new();
    for (pi, (path, img, face)) in photos.iter().enumerate() {
        for kind in AttackKind::ALL {
            if kind == AttackKind::ReplayScreen || (kind.needs_clip() && sources.is_empty()) {
                continue;
            }
            for seed in opts.first_seed..opts.first_seed + opts.seeds {
                jobs.push(AttackJob::Photo {
                    path,
                    img,
                    face: face.clone(),
                    kind,
                    seed,
                    clip: (pi + seed as usize - 1) % sources.len().max(1),
                });
            }
        }
    }
    for clip in 0..sources.len() {
        for seed in opts.first_seed..opts.first_seed + opts.seeds {
            jobs.push(AttackJob::Replay { clip, seed });
        }
    }
    let judged = parallel(&jobs, |job| {
        let (kind, frames, what) = match job {
            AttackJob::Photo {
                path,
                img,
                face,
                kind,
                seed,
                clip,
            } => {
                let content = if *kind == AttackKind::EyeCutPrint {
                    let src = &sources[*clip];
                    Content::EyeCut {
                        photo: img,
                        photo_eyes: [face.landmarks[0], face.landmarks[1]],
                        clip: &src.frames,
                        clip_eyes: &src.eyes,
                    }
                } else {
                    Content::Photo(img)
                };
                let frames = attack::render(
                    content,
                    face.bbox,
                    *kind,
                    opts.frames,
                    opts.fps as f32,
                    *seed,
                );
                let what = match kind {
                    AttackKind::EyeCutPrint => format!(
                        "{} {} with the eyes of {} seed {seed}",
                        kind.name(),
                        path.display(),
                        native[*clip].0
                    ),
                    _ => format!("{} {} seed {seed}", kind.name(), path.display()),
                };
                (*kind, frames, what)
            }
            AttackJob::Replay { clip, seed } => {
                let src = &sources[*clip];
                let Some(face) = src.face else {
                    return Ok(None);
                };
                let frames = attack::render(
                    Content::Clip(&src.frames),
                    face,
                    AttackKind::ReplayScreen,
                    opts.frames,
                    opts.fps as f32,
                    *seed,
                );
                let what = format!("replay_screen of {} seed {seed}", native[*clip].0);
                (AttackKind::ReplayScreen, frames, what)
            }
        };
        let obs = observe(pipeline, models, cfg, frames.into_iter().map(Ok), opts.fps)?;
        let line = match opts.dump {
            Some(_) => Some(dump_line(kind.name(), &what, &obs)?),
            None => None,
        };
        Ok(Some((kind, judge(&obs, cfg, opts.fps), what, line)))
    })?;
    // In job order, as judged: the dump (and a re-judgement of it) lists the attacks in the
    // order this report does, whichever worker finished first.
    let mut judged_attacks = Vec::new();
    for (kind, j, what, line) in judged.into_iter().flatten() {
        if let (Some(line), Ok(mut lines)) = (line, dumped.lock()) {
            lines.push(line);
        }
        judged_attacks.push((kind, j, what));
    }
    let (attacks, accepted_attacks) = tally(judged_attacks.into_iter());
    if let Some(path) = &opts.dump {
        let lines = dumped
            .into_inner()
            .map_err(|_| anyhow::anyhow!("a worker panicked"))?;
        std::fs::write(path, lines.join("\n") + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    report(opts, &clips, &attacks, &accepted_attacks)
}

/// Per attack type: sequences, accepted ones (any frame live) and their cues; and a line for
/// each accepted attack.
fn tally(
    judged: impl Iterator<Item = (AttackKind, Judged, String)>,
) -> (Vec<(AttackKind, Tally)>, Vec<String>) {
    let mut attacks: Vec<(AttackKind, Tally)> = AttackKind::ALL
        .iter()
        .map(|k| (*k, Tally::default()))
        .collect();
    let mut accepted_attacks = Vec::new();
    for (kind, j, what) in judged {
        let Some((_, tally)) = attacks.iter_mut().find(|(k, _)| *k == kind) else {
            continue;
        };
        tally.sequences += 1;
        tally.score_sum += f64::from(j.spoof_score);
        tally.with_blink += usize::from(j.blinked);
        tally.with_motion += usize::from(j.moved);
        tally.spoof_verdicts += usize::from(j.spoof);
        tally.no_face += usize::from(!j.seen);
        if let Some(n) = j.frames_to_live {
            tally.accepted += 1;
            // Empty only where `spoof_threshold` is over 0.5 (a score of 0.5, no cue of life).
            let by = match j.live_by.join(", ") {
                by if by.is_empty() => "only the attack score".to_owned(),
                by => by,
            };
            accepted_attacks.push(format!("{what} (live at frame {n}: {by})"));
        }
    }
    (attacks, accepted_attacks)
}

/// `--from-dump`: judges the observations of an earlier `--dump` again under `cfg` (no
/// rendering, no models: seconds instead of a quarter of an hour), with the same sessions,
/// windows and report as the run that wrote them. What a change of the liveness rules or their
/// settings does to every sequence, before paying for a full run.
pub fn rejudge(cfg: &LivenessConfig, opts: &Options, dump: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(dump).with_context(|| format!("cannot read {}", dump.display()))?;
    let mut clips = Vec::new();
    let mut judged = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = || format!("{}, line {}", dump.display(), n + 1);
        let seq: DumpLine = serde_json::from_str(line).with_context(at)?;
        let obs = seq
            .frames
            .into_iter()
            .map(|f| f.map(DumpFrame::obs).transpose())
            .collect::<anyhow::Result<Vec<_>>>()
            .with_context(at)?;
        if seq.set == "bona_fide" {
            let (clip, scale) = seq.name.rsplit_once('@').unwrap_or((&seq.name, "native"));
            clips.push(evaluate_clip(clip, scale.to_owned(), &obs, cfg, opts));
        } else {
            let kind = AttackKind::ALL
                .into_iter()
                .find(|k| k.name() == seq.set)
                .ok_or_else(|| anyhow::anyhow!("{}: unknown set `{}`", at(), seq.set))?;
            judged.push((kind, judge(&obs, cfg, opts.fps), seq.name));
        }
    }
    clips.sort_by(|a, b| (&a.name, &a.scale).cmp(&(&b.name, &b.scale)));
    let (attacks, accepted_attacks) = tally(judged.into_iter());
    report(opts, &clips, &attacks, &accepted_attacks)
}

fn report(
    opts: &Options,
    clips: &[ClipResult],
    attacks: &[(AttackKind, Tally)],
    accepted_attacks: &[String],
) -> anyhow::Result<()> {
    let total = attacks.iter().fold(Tally::default(), |mut a, (_, t)| {
        a.sequences += t.sequences;
        a.accepted += t.accepted;
        a
    });
    let all_sessions: Vec<Option<f64>> = clips.iter().flat_map(|c| c.sessions.clone()).collect();
    let (median, p95, never) = ttl_stats(&all_sessions);
    let windows: usize = clips.iter().map(|c| c.windows).sum();
    let windows_live: usize = clips.iter().map(|c| c.windows_live).sum();
    let bpcer = 1.0 - windows_live as f64 / windows.max(1) as f64;
    let rejected: Vec<&String> = clips.iter().flat_map(|c| &c.rejected_windows).collect();
    let absent_sessions: usize = clips.iter().map(|c| c.absent_sessions).sum();
    let absent_windows: usize = clips.iter().map(|c| c.absent_windows).sum();
    let cut_sessions: usize = clips.iter().map(|c| c.cut_sessions).sum();
    if opts.json {
        let per_kind: serde_json::Map<String, serde_json::Value> = attacks
            .iter()
            .map(|(k, t)| {
                (
                    k.name().to_owned(),
                    json!({
                        "sequences": t.sequences,
                        "accepted": t.accepted,
                        "apcer": t.rate(),
                        "with_blink": t.with_blink,
                        "with_motion": t.with_motion,
                        "spoof_verdicts": t.spoof_verdicts,
                        "mean_spoof_score": t.score_sum / t.sequences.max(1) as f64,
                        "no_face": t.no_face,
                    }),
                )
            })
            .collect();
        let per_clip: Vec<serde_json::Value> = clips
            .iter()
            .map(|c| {
                let (m, p, n) = ttl_stats(&c.sessions);
                json!({
                    "clip": c.name,
                    "scale": c.scale,
                    "face_px": c.face_px,
                    "sessions": c.sessions.len(),
                    "time_to_live_s": c.sessions,
                    "median_s": secs(m),
                    "p95_s": secs(p),
                    "never_share": n,
                    "windows": c.windows,
                    "windows_live": c.windows_live,
                    "bpcer": 1.0 - c.windows_live as f64 / c.windows.max(1) as f64,
                    "absent_sessions": c.absent_sessions,
                    "absent_windows": c.absent_windows,
                    "cut_sessions": c.cut_sessions,
                })
            })
            .collect();
        return super::print_json(&json!({
            "synthetic_attacks": per_kind,
            "apcer_all": total.rate(),
            "accepted_attacks": accepted_attacks,
            "bona_fide": {
                "sessions": all_sessions.len(),
                "time_to_live": {"median_s": secs(median), "p95_s": secs(p95), "never_share": never},
                "windows": windows,
                "accepted": windows_live,
                "bpcer": bpcer,
                "rejected": rejected,
                "absent_sessions": absent_sessions,
                "absent_windows": absent_windows,
                "cut_sessions": cut_sessions,
                "per_clip": per_clip,
            },
            "frames_per_attack": opts.frames,
            "window_frames": opts.window_frames,
            "session_frames": opts.session_frames,
            "fps": opts.fps,
        }));
    }
    println!(
        "PAD evaluation at {} fps: attacks of {} frames are SYNTHETIC (facegate attack); bona fide \
         sessions start every second with a {}-frame budget; BPCER over {}-frame windows",
        opts.fps, opts.frames, opts.session_frames, opts.window_frames
    );
    println!(
        "{:<18} {:>7} {:>6} {:>8} {:>8} {:>6} {:>8} {:>8}",
        "bona fide clip", "scale", "face", "sessions", "median s", "p95 s", "never", "BPCER"
    );
    for c in clips {
        let (m, p, n) = ttl_stats(&c.sessions);
        println!(
            "{:<18} {:>7} {:>6.0} {:>8} {:>8} {:>6} {:>7.0}% {:>7.1}%",
            c.name,
            c.scale,
            c.face_px,
            c.sessions.len(),
            fmt_s(m),
            fmt_s(p),
            100.0 * n,
            100.0 * (1.0 - c.windows_live as f64 / c.windows.max(1) as f64)
        );
    }
    println!(
        "{:<18} {:>7} {:>6} {:>8} {:>8} {:>6} {:>7.0}% {:>7.1}%   ({} of {} windows live)",
        "all",
        "",
        "",
        all_sessions.len(),
        fmt_s(median),
        fmt_s(p95),
        100.0 * never,
        100.0 * bpcer,
        windows_live,
        windows
    );
    if absent_sessions + absent_windows > 0 {
        println!(
            "  left out, a face in under 2 s of their frames: {absent_sessions} sessions, \
             {absent_windows} windows"
        );
    }
    for c in clips.iter().filter(|c| c.cut_sessions > 0) {
        println!(
            "  never verified in the under {} s of frames the clip's end left: {}@{} {} session{}",
            opts.session_frames.min(opts.window_frames) as f64 / opts.fps,
            c.name,
            c.scale,
            c.cut_sessions,
            if c.cut_sessions == 1 { "" } else { "s" }
        );
    }
    println!();
    println!(
        "{:<26} {:>9} {:>9} {:>7} {:>7} {:>7} {:>10}",
        "presentation", "sequences", "accepted", "APCER", "blink", "motion", "mean score"
    );
    for (k, t) in attacks {
        println!(
            "{:<26} {:>9} {:>9} {:>6.1}% {:>7} {:>7} {:>10.2}",
            format!("synthetic {}", k.name()),
            t.sequences,
            t.accepted,
            100.0 * t.rate(),
            t.with_blink,
            t.with_motion,
            t.score_sum / t.sequences.max(1) as f64
        );
    }
    println!(
        "{:<26} {:>9} {:>9} {:>6.1}%",
        "all synthetic attacks",
        total.sequences,
        total.accepted,
        100.0 * total.rate()
    );
    for a in accepted_attacks {
        println!("  accepted attack: {a}");
    }
    for w in rejected {
        println!("  bona fide window never live: {w}");
    }
    Ok(())
}

/// Writes one synthetic attack sequence as PNG frames (0001.png, ...). `clip`: the real frames
/// an eye-cut print's eyes or a replay come from.
#[allow(clippy::too_many_arguments)]
pub fn write_attack(
    pipeline: &Pipeline,
    photo: Option<&Path>,
    clip: Option<&Path>,
    kind: AttackKind,
    out: &Path,
    frames: usize,
    fps: f64,
    seed: u64,
) -> anyhow::Result<()> {
    let clip_frames = match clip {
        Some(dir) => frame_files(dir)?
            .iter()
            .take(frames)
            .map(|p| decode_file(pipeline, p))
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    anyhow::ensure!(
        !kind.needs_clip() || !clip_frames.is_empty(),
        "a SYNTHETIC {} needs --clip DIR (real frames)",
        kind.name()
    );
    let largest_face =
        |img: &RgbImage, what: &str| -> anyhow::Result<crate::pipeline::detect::Face> {
            let faces = pipeline.detect(img)?;
            largest(&faces)
                .cloned()
                .with_context(|| format!("no face in {what}"))
        };
    let clip_eyes: Vec<Option<[[f32; 2]; 2]>> = if kind == AttackKind::EyeCutPrint {
        clip_frames
            .iter()
            .map(|f| {
                let faces = pipeline.detect(f).ok()?;
                largest(&faces).map(|f| [f.landmarks[0], f.landmarks[1]])
            })
            .collect()
    } else {
        Vec::new()
    };
    let photo_img = match photo {
        Some(p) => Some(decode_file(pipeline, p)?),
        None => None,
    };
    let rendered = if kind == AttackKind::ReplayScreen {
        let face = largest_face(&clip_frames[0], "the clip's first frame")?;
        attack::render(
            Content::Clip(&clip_frames),
            face.bbox,
            kind,
            frames,
            fps as f32,
            seed,
        )
    } else {
        let img = photo_img
            .as_ref()
            .context("this attack needs --photo IMAGE")?;
        let face = largest_face(img, "the photo")?;
        let content = if kind == AttackKind::EyeCutPrint {
            Content::EyeCut {
                photo: img,
                photo_eyes: [face.landmarks[0], face.landmarks[1]],
                clip: &clip_frames,
                clip_eyes: &clip_eyes,
            }
        } else {
            Content::Photo(img)
        };
        attack::render(content, face.bbox, kind, frames, fps as f32, seed)
    };
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    for (i, f) in rendered.iter().enumerate() {
        let path = out.join(format!("{:04}.png", i + 1));
        f.save(&path).with_context(|| path.display().to_string())?;
    }
    println!(
        "{frames} frames of a SYNTHETIC {} attack in {}",
        kind.name(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One dumped frame with the given `ctx` JSON, read back.
    fn read(ctx: &str) -> anyhow::Result<Obs> {
        let line = format!(
            r#"{{"track":1,"width":80,"lm":[0,0,1,0,0.5,0.5,0,1,1,1],"eyes":null,
            "mesh":null,"mouth":null,"lids":null,"moire":null,"ctx":{ctx}}}"#
        );
        serde_json::from_str::<DumpFrame>(&line)?.obs()
    }

    #[test]
    fn context_votes_read_back_from_old_and_new_dumps_and_a_wrong_count_is_refused() {
        let ctx = |json: &str| read(json).unwrap().cues.context;
        let new = ctx("[3,40,1,12]").unwrap();
        assert_eq!(
            (new.still, new.with_face, new.far_still, new.far_with_face),
            (3, 40, 1, 12)
        );
        // Written before the far pair: every block counts as far, which judges the frame as
        // the rule of its time did.
        let old = ctx("[3,40]").unwrap();
        assert_eq!((old.far_still, old.far_with_face), (3, 40));
        assert!(ctx("null").is_none());
        let err = read("[3,40,1]").unwrap_err().to_string();
        assert!(err.contains("`ctx` needs 2 or 4 numbers, has 3"), "{err}");
    }
}
