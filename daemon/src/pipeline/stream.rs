//! A stream of frames from one camera or session: detect, track, and per track run the
//! liveness and obstacle checks, spending the frame budget only where it can change a decision.
//!
//! Schedule per frame: detection always, of the whole frame at least every
//! `pipeline.redetect_ms` and otherwise in a window around each tracked face (the whole pass's
//! own pixels, so the same landmarks; a close-up is always searched whole); the eye model (two
//! 64x64 crops) on every tracked face (blinks last 1-3 frames at 10 fps, so a skipped frame is
//! a missed blink); the mask classifier and the palm detector on a track's first 3 frames and
//! then every `obstacle_every_frames` (obstacles change slowly; their last scores are carried
//! between runs; no palm detector when a hand cannot block: `with_palms`); hat and sunglasses
//! cues every frame (cheap arithmetic on pixels already cropped); context motion (the ring
//! around each face against the frame `context::GAP` frames before, from half-resolution
//! luminance kept for the last `GAP + 1` frames; and the straight edges beside and above it,
//! `edge.rs`, from the same), moiré (a 32 or 64 px spectrum of the face),
//! the face flow (against the face's patch `flow::GAP` frames before) and the texture change
//! (against the frame before) every frame (all in the `cues` stage of `facegate bench
//! liveness`). Embedding is the
//! caller's, once per decision (`embed::TrackEmbedding`). A track the caller has decided
//! (`settle`: a door's granted or unknown visitor still standing there) is only tracked: no
//! liveness model or cue runs on it, and it leaves its liveness place to the next face.
//!
//! Invariant: per-track state lives exactly as long as the tracker keeps the track; a dropped
//! track's state is dropped in the same frame.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use image::RgbImage;

use super::context::{self, Gray};
use super::detect::Face;
use super::edge;
use super::eyes::EyeModel;
use super::flow::{self, FacePatch};
use super::liveness::{
    self, Cues, FrameLiveness, LivenessConfig, LivenessTrack, Observed, PresentationMemory, Verdict,
};
use super::mesh::MeshModel;
use super::models::{ModelError, ModelStore};
use super::obstacles::{self, ObstacleModels, ObstacleScores};
use super::screen;
use super::track::Tracker;
use super::{Pipeline, PipelineError};

/// Faces per frame that get liveness checks (the largest unsettled ones): a door serves one
/// person at a time.
const MAX_LIVE_FACES: usize = 3;
/// Frames a track may go unseen before it is dropped (0.5 s at 10 fps).
const MAX_MISSED: u32 = 5;

/// The models liveness needs on top of the recognition pipeline.
#[derive(Debug)]
pub struct LiveModels {
    pub eyes: EyeModel,
    pub mesh: MeshModel,
    pub obstacles: ObstacleModels,
}

impl LiveModels {
    pub fn load(store: &ModelStore) -> Result<LiveModels, ModelError> {
        Ok(LiveModels {
            eyes: EyeModel::load(store)?,
            mesh: MeshModel::load(store)?,
            obstacles: ObstacleModels::load(store)?,
        })
    }
}

/// Milliseconds spent per stage in one frame.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageCosts {
    pub decode_ms: f64,
    pub detect_ms: f64,
    pub eyes_ms: f64,
    pub mesh_ms: f64,
    pub mask_ms: f64,
    pub palm_ms: f64,
    pub cues_ms: f64,
}

/// One face in one frame.
#[derive(Debug, Clone)]
pub struct FaceReport {
    pub track: u64,
    pub face: Face,
    /// This frame's cue observations (the eyes as measured, also behind dark lenses, where the
    /// liveness track was not given them).
    pub observed: Observed,
    pub liveness: FrameLiveness,
    /// The latest obstacle scores (carried over on frames the models did not run).
    pub obstacles: ObstacleScores,
    pub frames: u64,
    pub blinks: usize,
    pub motion_events: usize,
    pub spoof_score: f32,
    pub verdict: Verdict,
    /// Large enough for liveness to be judged (else: come closer).
    pub judgeable: bool,
    /// A blink alone does not do: the face must still move as a head does
    /// (`LivenessTrack::needs_movement`).
    pub needs_movement: bool,
    /// Decided by the caller (`Stream::settle`): tracked only, its liveness frozen.
    pub settled: bool,
}

impl FaceReport {
    /// The observations the liveness track was given this frame (`observed`, without the eyes
    /// behind dark lenses): what `pad-eval` feeds a fresh track.
    pub fn liveness_observed(&self) -> Observed {
        Observed {
            eyes: self.observed.eyes.filter(|_| eyes_visible(&self.obstacles)),
            ..self.observed.clone()
        }
    }
}

/// Eyes behind dark lenses are not measured: no blink evidence. (A hand is not excluded: it is
/// usually at the mouth or chin, and the eyes above it blink as usual; the hand blocks the
/// decision as an obstacle anyway.)
fn eyes_visible(obstacles: &ObstacleScores) -> bool {
    obstacles.sunglasses <= 0.5
}

#[derive(Debug, Clone)]
pub struct FrameReport {
    pub frame: u64,
    /// Every detected face, largest first; only the first `MAX_LIVE_FACES` unsettled ones have
    /// liveness.
    pub faces: Vec<FaceReport>,
    /// Tracks that ended in this frame (unseen too long), with their final state.
    pub ended: Vec<(u64, LivenessTrack)>,
    pub costs: StageCosts,
}

#[derive(Debug)]
struct TrackState {
    live: LivenessTrack,
    seen: u32,
    obstacles: ObstacleScores,
    /// The face's landmarks in recent frames (frame index, landmarks), newest last.
    recent: VecDeque<(u64, [[f32; 2]; 5])>,
    /// The face's luminance in the last `flow::GAP + 1` frames with liveness checks.
    patches: VecDeque<(u64, FacePatch)>,
    /// Decided by the caller: no more liveness work (`Stream::settle`).
    settled: bool,
}

#[derive(Debug)]
pub struct Stream {
    cfg: LivenessConfig,
    tracker: Tracker,
    tracks: HashMap<u64, TrackState>,
    frame: u64,
    /// Luminance of the last `context::GAP + 1` frames that had a face with liveness checks
    /// (frame index, image), newest last.
    grays: VecDeque<(u64, Gray)>,
    /// When the whole frame was last searched for faces (stream ms).
    last_full_ms: Option<f64>,
    full_frames: u64,
    roi_frames: u64,
    /// Searches for a settled face (`Detector::follow`), counted by face.
    followed: u64,
    /// Whether the palm detector runs (off when a hand cannot block anything).
    palms: bool,
    /// The last face presented on a sheet or a screen (a new track near it inherits that).
    presented: PresentationMemory,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl Stream {
    pub fn new(cfg: LivenessConfig) -> Stream {
        Stream {
            cfg,
            tracker: Tracker::new(MAX_MISSED),
            tracks: HashMap::new(),
            frame: 0,
            grays: VecDeque::new(),
            last_full_ms: None,
            full_frames: 0,
            roi_frames: 0,
            followed: 0,
            palms: true,
            presented: PresentationMemory::default(),
        }
    }

    /// Runs the palm detector (a 256x256 pass over the whole frame, the costliest model of
    /// the stack) only if `on`: callers turn it off when a hand over the face cannot block a
    /// decision (`obstacles.hand` >= 1), and the hand's score then stays 0.
    pub fn with_palms(mut self, on: bool) -> Stream {
        self.palms = on;
        self
    }

    /// Faces in this frame: the whole frame when due (no track, `redetect_ms` elapsed, more
    /// tracks than get liveness, a track missed, or a tracked face not found again in its
    /// window), else each tracked face in a window around its last box
    /// (`Detector::detect_around`; a settled face at a coarser scale, `Detector::follow`).
    fn detect(
        &mut self,
        pipeline: &Pipeline,
        img: &RgbImage,
        t_ms: f64,
    ) -> Result<Vec<super::detect::Face>, PipelineError> {
        let every = pipeline.config().schedule.redetect_ms;
        // Each tracked face's last box, and whether it is only followed (settled).
        let tracked: Vec<([f32; 4], bool)> = self
            .tracker
            .tracks()
            .filter(|(_, _, missed)| *missed == 0)
            .map(|(id, b, _)| (b, self.tracks.get(&id).is_some_and(|t| t.settled)))
            .collect();
        let due = every <= 0.0
            || tracked.is_empty()
            || tracked.len() != self.tracker.len()
            || tracked.len() > MAX_LIVE_FACES
            || self
                .last_full_ms
                .is_none_or(|t| t_ms - t >= every || t_ms < t);
        if !due {
            let mut found = Vec::with_capacity(tracked.len());
            for &(bbox, settled) in &tracked {
                let around = if settled {
                    let faces = pipeline.detector().follow(img, bbox)?;
                    self.followed += u64::from(faces.is_some());
                    faces
                } else {
                    pipeline.detector().detect_around(img, bbox)?
                };
                match around {
                    None => {
                        found.clear();
                        break;
                    }
                    // The face overlapping the track's last box most (the window may hold the
                    // edge of another); none overlapping: lost, the whole frame is searched.
                    Some(faces) => {
                        if let Some(f) = faces
                            .into_iter()
                            .map(|f| (super::detect::iou(&f.bbox, &bbox), f))
                            .filter(|(overlap, _)| *overlap > 0.1)
                            .max_by(|a, b| a.0.total_cmp(&b.0))
                        {
                            found.push(f.1);
                        }
                    }
                }
            }
            if found.len() == tracked.len() {
                self.roi_frames += 1;
                return Ok(super::detect::nms(
                    found,
                    pipeline.detector().config().nms_iou,
                ));
            }
        }
        tracing::trace!(
            frame = self.frame,
            tracked = tracked.len(),
            tracks = self.tracker.len(),
            due,
            "whole frame searched"
        );
        self.last_full_ms = Some(t_ms);
        self.full_frames += 1;
        pipeline.detect(img)
    }

    /// Frames searched whole and frames searched around tracked faces so far.
    pub fn detections(&self) -> (u64, u64) {
        (self.full_frames, self.roi_frames)
    }

    /// Searches for settled faces (`Detector::follow`) so far, one per face and frame.
    pub fn followed(&self) -> u64 {
        self.followed
    }

    /// The caller has decided track `id` (a door's granted or unknown visitor): from the next
    /// frame on it is only tracked (so it stays the same visit), its liveness state frozen; no
    /// liveness model or cue runs on it and it no longer takes one of the `MAX_LIVE_FACES`
    /// places. Settling is for the track's lifetime. False if no such track.
    pub fn settle(&mut self, id: u64) -> bool {
        self.tracks
            .get_mut(&id)
            .map(|t| {
                t.settled = true;
                t.patches.clear();
            })
            .is_some()
    }

    /// The liveness state of a live track.
    pub fn track(&self, id: u64) -> Option<&LivenessTrack> {
        self.tracks.get(&id).map(|t| &t.live)
    }

    /// Processes one decoded frame taken at `t_ms`.
    pub fn process(
        &mut self,
        pipeline: &Pipeline,
        models: &LiveModels,
        img: &RgbImage,
        t_ms: f64,
    ) -> Result<FrameReport, PipelineError> {
        let mut costs = StageCosts::default();
        let started = Instant::now();
        let mut faces = self.detect(pipeline, img, t_ms)?;
        faces.sort_by(|a, b| b.area().total_cmp(&a.area()));
        costs.detect_ms = ms(started);
        let (assignments, dropped) = self.tracker.update(&faces);
        let ended = dropped
            .into_iter()
            .filter_map(|id| self.tracks.remove(&id).map(|t| (id, t.live)))
            .collect();
        let frame = self.frame;
        self.frame += 1;
        let t = Instant::now();
        // Context motion reads a frame's luminance only around a face that has liveness
        // checks, now or `GAP` frames later (its track's landmarks of this frame): so only
        // frames with an unsettled face need it (none while the door is idle or has decided).
        let unsettled = assignments
            .iter()
            .any(|a| self.tracks.get(&a.track).is_none_or(|t| !t.settled));
        if unsettled {
            let oldest = (self.grays.len() > context::GAP)
                .then(|| self.grays.pop_front().map(|(_, g)| g))
                .flatten();
            self.grays.push_back((frame, Gray::from_rgb(img, oldest)));
        }
        let gray_of = |f: Option<u64>| {
            self.grays
                .iter()
                .find(|(g, _)| Some(*g) == f)
                .map(|(_, g)| g)
        };
        let then = frame.checked_sub(context::GAP as u64);
        let (gray_then, gray_now) = (gray_of(then), gray_of(Some(frame)));
        costs.cues_ms += ms(t);
        let every = self.cfg.obstacle_every_frames.max(1);
        let needs_obstacles = |seen: u32| seen < 3 || seen.is_multiple_of(every);
        // The palm detector sees the whole frame once, for every face that needs it.
        let palm_due = self.palms
            && assignments
                .iter()
                .map(|a| self.tracks.get(&a.track))
                .filter(|t| t.is_none_or(|t| !t.settled))
                .take(MAX_LIVE_FACES)
                .any(|t| t.is_none_or(|t| needs_obstacles(t.seen)));
        let palms = if palm_due {
            let t = Instant::now();
            let p = models.obstacles.palms(img)?;
            costs.palm_ms = ms(t);
            Some(p)
        } else {
            None
        };
        let mut reports = Vec::with_capacity(faces.len());
        let mut live_faces = 0;
        for a in &assignments {
            let face = &faces[a.face];
            let new_track = !self.tracks.contains_key(&a.track);
            let state = self.tracks.entry(a.track).or_insert_with(|| TrackState {
                live: LivenessTrack::new(self.cfg.clone()),
                seen: 0,
                obstacles: ObstacleScores::default(),
                recent: VecDeque::new(),
                patches: VecDeque::new(),
                settled: false,
            });
            let (centre, width) = (
                liveness::centre(&face.landmarks),
                face.bbox[2] - face.bbox[0],
            );
            if new_track {
                self.presented
                    .hand_down(&mut state.live, t_ms, centre, width);
            }
            state.recent.push_back((frame, face.landmarks));
            if state.recent.len() > context::GAP + 1 {
                state.recent.pop_front();
            }
            let mut observed = Observed::default();
            let mut liveness = FrameLiveness::default();
            if !state.settled && live_faces < MAX_LIVE_FACES {
                live_faces += 1;
                let t = Instant::now();
                let eyes = models.eyes.observe(img, face).ok();
                costs.eyes_ms += ms(t);
                let t = Instant::now();
                let mesh = models.mesh.observe(img, face).ok();
                costs.mesh_ms += ms(t);
                if needs_obstacles(state.seen) {
                    let t = Instant::now();
                    state.obstacles.mask = models.obstacles.mask(img, face)?;
                    costs.mask_ms += ms(t);
                    if let Some(p) = &palms {
                        state.obstacles.hand = obstacles::hand_over_face(face, p);
                    }
                }
                let t = Instant::now();
                state.obstacles.sunglasses = eyes.as_ref().map_or(0.0, obstacles::sunglasses);
                state.obstacles.hat = obstacles::hat(img, face);
                let (mut context_obs, mut edge_obs) = (None, None);
                let (mut flow_obs, mut change) = (None, None);
                let landmarks_then = state
                    .recent
                    .iter()
                    .find(|(f, _)| Some(*f) == then)
                    .map(|(_, l)| l);
                // The face plane's motion back to `GAP` frames before (the same frame as the
                // context's and the edges' `then`).
                let mut plane = None;
                let previous = state.patches.back().map(|(_, p)| p);
                if let Some(patch) = FacePatch::from_rgb(img, &face.landmarks, previous) {
                    let back = frame.checked_sub(flow::GAP as u64);
                    if let Some((obs, h)) = state
                        .patches
                        .iter()
                        .find(|(f, _)| Some(*f) == back)
                        .and_then(|(_, p)| flow::observe(p, &patch))
                    {
                        flow_obs = Some(obs);
                        plane = h;
                    }
                    change = state
                        .patches
                        .back()
                        .filter(|(f, _)| Some(*f) == frame.checked_sub(1))
                        .and_then(|(_, p)| flow::texture_change(p, &patch));
                    state.patches.push_back((frame, patch));
                    if state.patches.len() > flow::GAP + 1 {
                        state.patches.pop_front();
                    }
                }
                if let (Some(prev), Some(now), Some(l)) = (gray_then, gray_now, landmarks_then) {
                    context_obs =
                        context::observe(prev, now, l, &face.landmarks, face.bbox, plane.as_ref());
                }
                if let (Some(prev), Some(now)) = (gray_then, gray_now)
                    && self.cfg.edge_strength > 0.0
                {
                    edge_obs = edge::observe(prev, now, face.bbox);
                }
                let moire = screen::moire(img, face);
                costs.cues_ms += ms(t);
                observed = Observed {
                    eyes,
                    mesh,
                    context: context_obs,
                    edge: edge_obs,
                    moire,
                    flow: flow_obs,
                    change,
                };
                let cues = Cues {
                    eyes: observed
                        .eyes
                        .as_ref()
                        .filter(|_| eyes_visible(&state.obstacles)),
                    ..observed.cues()
                };
                liveness = state.live.update(t_ms, frame, &face.landmarks, &cues);
                state.seen += 1;
                self.presented.note(&state.live, t_ms, centre, width);
            }
            reports.push(FaceReport {
                track: a.track,
                face: face.clone(),
                observed,
                liveness,
                obstacles: state.obstacles,
                frames: state.live.frames(),
                blinks: state.live.blinks().len(),
                motion_events: state.live.motion_events().len(),
                spoof_score: state.live.spoof_score(),
                verdict: state.live.verdict(),
                judgeable: state.live.judgeable(),
                needs_movement: state.live.needs_movement(),
                settled: state.settled,
            });
        }
        Ok(FrameReport {
            frame,
            faces: reports,
            ended,
            costs,
        })
    }
}
