//! Enrollment and authentication sessions: state machines over frames, with expiry, frame
//! budgets, the liveness rules (`pipeline::liveness::decide`) and their instructions. Each
//! frame gives a typed `FrameResult` (progress, and the ending if the session ended on it);
//! `api/frames.rs` turns it into the wire's JSON.
//!
//! Invariant: a session belongs to one client and is only visible to it; its frames are
//! processed one at a time (the session's lock) on the caller's blocking thread; a session
//! that is not active takes no frames; every completed or failed attempt writes an audit row.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pipeline::liveness::{
    Decision, Evidence, Instruction, LivenessConfig, Requirements, decide,
};
use crate::pipeline::obstacles::ObstacleThresholds;
use crate::pipeline::stream::{LiveModels, Stream};
use crate::pipeline::{Pipeline, PipelineError};
use crate::store::Store;
use crate::store::records::{AuditAction, AuditRow, new_token_id, now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Completed,
    Failed,
    Cancelled,
    Expired,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Enrollment {
        user_id: String,
        target_samples: usize,
        required_blinks: usize,
        min_quality: f32,
    },
    Authentication {
        /// `Some`: 1:1 verification; `None`: 1:N identification.
        user_id: Option<String>,
        min_frames: u64,
        max_frames: u64,
        min_confidence: f32,
        require_liveness: bool,
        /// Matches tried before `no_match_found` (the contract's `max_attempts`): a live face
        /// whose first match fails (a hand over it, a blurred frame) is looked at again.
        max_attempts: u32,
    },
}

/// Frames between two match attempts of a session (0.4 s at 10 fps, as `door.unknown_retry_s`):
/// the next look is at a face that has had time to change, not the same blurred moment.
pub const MATCH_RETRY_FRAMES: u64 = 4;

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Expired => "expired",
        }
    }
}

impl Kind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::Enrollment { .. } => "enrollment",
            Kind::Authentication {
                user_id: Some(_), ..
            } => "verification",
            Kind::Authentication { user_id: None, .. } => "identification",
        }
    }
}

/// One session.
#[derive(Debug)]
pub struct Session {
    pub token: String,
    pub client: String,
    pub kind: Kind,
    pub status: Status,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub last_activity_ms: u64,
    started: Instant,
    stream: Stream,
    frames: u64,
    /// Accepted samples: (embedding, quality).
    samples: Vec<(Vec<f32>, f32)>,
    liveness_passed: bool,
    /// The tracked face the samples come from: another person stepping in starts them over, so
    /// one person's blinks never vouch for another's template.
    track: Option<u64>,
    /// What the last processed frame cost, per stage (for `/metrics`).
    pub last_costs: Option<FrameCosts>,
    /// The audit row of an end without a decision (expired, cancelled) has been written.
    end_recorded: bool,
    /// Milliseconds spent embedding in the current frame.
    frame_embed_ms: f64,
    /// Authentication: failed matches so far, and the frame from which the next may be tried.
    match_attempts: u32,
    retry_at_frame: u64,
}

/// Per-stage cost of one frame through a session, milliseconds.
#[derive(Debug, Clone, Default)]
pub struct FrameCosts {
    pub decode_ms: f64,
    pub stages: crate::pipeline::stream::StageCosts,
    /// Alignment and quality of the main face, and its embedding when one was computed.
    pub embed_ms: f64,
    /// Everything after: matching, decision, audit.
    pub decide_ms: f64,
    pub total_ms: f64,
}

/// Shared by all sessions.
#[derive(Debug)]
pub struct Engine {
    pub pipeline: Pipeline,
    pub live: LiveModels,
    pub liveness: LivenessConfig,
    pub obstacles: ObstacleThresholds,
    pub min_quality: f32,
    pub match_threshold: f32,
    pub top_k: usize,
}

#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Handle>>>,
}

/// A session and what never changes about it: token, owner and kind are read without waiting
/// for a frame in progress (which holds the session's lock for the frame's duration).
#[derive(Debug)]
pub struct Handle {
    pub token: String,
    pub client: String,
    /// `enrollment`, `verification` or `identification`.
    pub kind: &'static str,
    session: Mutex<Session>,
}

impl Handle {
    /// The session; waits for a frame in progress (call it off the async runtime).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Session> {
        lock(&self.session)
    }

    /// The status, unless a frame holds the session right now.
    pub fn try_status(&self) -> Option<Status> {
        self.try_lock().map(|mut s| s.current_status())
    }

    /// The session, unless a frame holds it.
    fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, Session>> {
        match self.session.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

impl Sessions {
    /// Creates a session for `client` on `engine`'s rules, expiring after `ttl`.
    pub fn create(&self, client: &str, kind: Kind, engine: &Engine, ttl: Duration) -> Arc<Handle> {
        let hand_blocks = engine.obstacles.hand < 1.0;
        self.sweep();
        let now = now_ms();
        let token = new_token_id();
        let h = Arc::new(Handle {
            token: token.clone(),
            client: client.to_owned(),
            kind: kind.type_name(),
            session: Mutex::new(Session {
                token: token.clone(),
                client: client.to_owned(),
                kind,
                status: Status::Active,
                created_ms: now,
                expires_ms: now + ttl.as_millis() as u64,
                last_activity_ms: now,
                started: Instant::now(),
                stream: Stream::new(engine.liveness.clone()).with_palms(hand_blocks),
                frames: 0,
                samples: Vec::new(),
                liveness_passed: false,
                track: None,
                last_costs: None,
                end_recorded: false,
                frame_embed_ms: 0.0,
                match_attempts: 0,
                retry_at_frame: 0,
            }),
        });
        lock(&self.map).insert(token, h.clone());
        h
    }

    /// The session `token` of `client` (another client's is as absent as a missing one).
    pub fn get(&self, client: &str, token: &str) -> Option<Arc<Handle>> {
        lock(&self.map)
            .get(token)
            .filter(|h| h.client == client)
            .cloned()
    }

    /// The session behind a token, whoever's it is (the WebSocket URL carries only the token,
    /// which the owning client was given).
    pub fn by_token(&self, token: &str) -> Option<Arc<Handle>> {
        lock(&self.map).get(token).cloned()
    }

    /// Drops sessions that ended or expired more than a minute ago and whose end is audited
    /// (one processing a frame is alive and not waited for).
    pub fn sweep(&self) {
        let now = now_ms();
        lock(&self.map).retain(|_, h| h.try_lock().is_none_or(|mut s| !s.forgettable(now)));
    }

    /// Writes the audit rows of sessions that expired or were cancelled since the last call
    /// (blocking: store writes); the number written.
    pub fn record_ends(&self, store: &Store) -> usize {
        let handles: Vec<Arc<Handle>> = lock(&self.map).values().cloned().collect();
        handles
            .iter()
            .filter(|h| h.try_lock().is_some_and(|mut s| s.record_end(store)))
            .count()
    }

    pub fn active(&self) -> usize {
        self.active_for(None)
    }

    /// Sessions in progress, of one client or of all (one processing a frame is in progress).
    pub fn active_for(&self, client: Option<&str>) -> usize {
        lock(&self.map)
            .values()
            .filter(|h| client.is_none_or(|c| h.client == c))
            .filter(|h| {
                h.try_lock().is_none_or(|mut s| {
                    s.expire_if_due();
                    s.status == Status::Active
                })
            })
            .count()
    }
}

/// Why a frame could not be used at all (the caller maps these to HTTP errors).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the session is {0:?}")]
    NotActive(Status),
    #[error(transparent)]
    Image(PipelineError),
    #[error("{0}")]
    Internal(String),
}

/// A session's status and progress, as `GET .../status/` shows it.
#[derive(Debug, Clone)]
pub struct StatusView {
    pub token: String,
    pub status: Status,
    pub session_type: &'static str,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub last_activity_ms: u64,
    pub completed_samples: u64,
    pub target_samples: u64,
    pub frames_processed: u64,
    pub liveness_passed: bool,
}

/// What one frame showed of the face a session follows.
#[derive(Debug, Clone)]
pub struct FaceSummary {
    pub bbox: [f32; 4],
    pub quality: f32,
    /// Eyelid opening over the person's open-eye level (the contract's `ear` indicator).
    pub eyelid_ratio: Option<f32>,
    pub blinks: usize,
    pub motion_events: usize,
    /// 1 - the presentation-attack score.
    pub liveness_score: f32,
    pub obstacles: Vec<&'static str>,
    pub obstacle_confidence: f32,
}

/// Where a session stands after a frame: every reply carries all of it.
#[derive(Debug, Clone)]
pub struct Progress {
    pub frames_processed: u64,
    pub completed_samples: usize,
    /// Enrollment: samples to collect; authentication: frames required.
    pub target_samples: usize,
    pub quality_threshold: f32,
    pub blinks_required: usize,
    pub motion_required: usize,
    /// The face of this frame, if one was seen.
    pub face: Option<FaceSummary>,
    pub liveness_passed: bool,
    /// What the person should do next, if anything.
    pub instruction: Option<Instruction>,
    pub message: &'static str,
    /// Why this frame could not count: `no_face`, `multiple_faces` or `obstacle`.
    pub rejection: Option<&'static str>,
}

/// How a session ended on this frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Enrolled {
        enrollment_id: String,
        user_id: String,
    },
    Authenticated {
        user_id: String,
        enrollment_id: String,
        confidence: f32,
    },
    /// `reason`: `no_match_found`, `liveness_failed`, `obstacle`, `poor_quality`,
    /// `multiple_faces`, `max_frames_exceeded`, `store_error`, `internal_error`.
    Failed { reason: &'static str },
}

/// The result of one frame: progress, and the ending if the session ended on it.
#[derive(Debug, Clone)]
pub struct FrameResult {
    pub progress: Progress,
    pub ending: Option<Ending>,
    pub processing_ms: f64,
}

impl FrameResult {
    pub fn done(&self) -> bool {
        self.ending.is_some()
    }

    pub fn success(&self) -> bool {
        matches!(
            self.ending,
            Some(Ending::Enrolled { .. } | Ending::Authenticated { .. })
        )
    }
}

impl Session {
    pub fn status_view(&mut self) -> StatusView {
        self.expire_if_due();
        let (completed, target) = match &self.kind {
            Kind::Enrollment { target_samples, .. } => {
                (self.samples.len() as u64, *target_samples as u64)
            }
            Kind::Authentication { min_frames, .. } => (self.frames, *min_frames),
        };
        StatusView {
            token: self.token.clone(),
            status: self.status,
            session_type: self.kind.type_name(),
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            last_activity_ms: self.last_activity_ms,
            completed_samples: completed,
            target_samples: target,
            frames_processed: self.frames,
            liveness_passed: self.liveness_passed,
        }
    }

    /// Writes the audit row of a session that ended without a decision (expired or
    /// cancelled), once; decisions write their own. Returns whether it wrote one.
    pub fn record_end(&mut self, store: &Store) -> bool {
        self.expire_if_due();
        let reason = match self.status {
            Status::Expired => "session_expired",
            Status::Cancelled => "cancelled",
            _ => return false,
        };
        if self.end_recorded {
            return false;
        }
        self.end_recorded = true;
        let (action, user_id) = match &self.kind {
            Kind::Enrollment { user_id, .. } => (AuditAction::Enroll, Some(user_id.clone())),
            Kind::Authentication { user_id, .. } => (AuditAction::Authenticate, user_id.clone()),
        };
        self.audit(store, action, user_id.as_deref(), false, reason, None, 0.0);
        true
    }

    /// Whether this session may be forgotten: ended (and its end audited) more than a minute
    /// ago.
    fn forgettable(&mut self, now: u64) -> bool {
        self.expire_if_due();
        let undecided_end = matches!(self.status, Status::Expired | Status::Cancelled);
        (!undecided_end || self.end_recorded)
            && now >= self.expires_ms.max(self.last_activity_ms) + 60_000
    }

    pub fn cancel(&mut self) -> bool {
        if self.status == Status::Active {
            self.status = Status::Cancelled;
            true
        } else {
            false
        }
    }

    /// The status now (an active session past its expiry becomes expired).
    pub fn current_status(&mut self) -> Status {
        self.expire_if_due();
        self.status
    }

    fn expire_if_due(&mut self) {
        if self.status == Status::Active && now_ms() > self.expires_ms {
            self.status = Status::Expired;
        }
    }

    /// Processes one encoded frame: where the session stands after it, and how it ended if it
    /// did.
    pub fn process(
        &mut self,
        engine: &Engine,
        store: &Store,
        bytes: &[u8],
    ) -> Result<FrameResult, FrameError> {
        self.expire_if_due();
        if self.status != Status::Active {
            return Err(FrameError::NotActive(self.status));
        }
        let started = Instant::now();
        self.last_activity_ms = now_ms();
        self.last_costs = None;
        let img = engine.pipeline.decode(bytes).map_err(FrameError::Image)?;
        self.process_image(engine, store, &img, started)
    }

    /// Processes one decoded frame (a camera's), `started` when its decoding began.
    pub fn process_image(
        &mut self,
        engine: &Engine,
        store: &Store,
        img: &image::RgbImage,
        started: Instant,
    ) -> Result<FrameResult, FrameError> {
        self.expire_if_due();
        if self.status != Status::Active {
            return Err(FrameError::NotActive(self.status));
        }
        self.last_activity_ms = now_ms();
        let mut costs = FrameCosts {
            decode_ms: started.elapsed().as_secs_f64() * 1000.0,
            ..FrameCosts::default()
        };
        self.frames += 1;
        let t_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let report = self
            .stream
            .process(&engine.pipeline, &engine.live, img, t_ms)
            .map_err(|e| FrameError::Internal(e.to_string()))?;
        costs.stages = report.costs;
        let view = match report.faces.first() {
            None => None,
            Some(main) => {
                let multiple = report
                    .faces
                    .get(1)
                    .is_some_and(|second| second.face.area() > 0.6 * main.face.area());
                let embedding_started = Instant::now();
                // Aligned and scored on every frame; embedded only when a sample or a match
                // needs it.
                let (crop, quality) = engine
                    .pipeline
                    .aligned(img, &main.face)
                    .map_err(|e| FrameError::Internal(e.to_string()))?;
                costs.embed_ms = embedding_started.elapsed().as_secs_f64() * 1000.0;
                if self.track != Some(main.track) {
                    self.track = Some(main.track);
                    self.samples.clear();
                }
                let obstacles = main.obstacles.blocking(&engine.obstacles);
                Some(FrameView {
                    summary: FaceSummary {
                        bbox: main.face.bbox,
                        quality: quality.score,
                        eyelid_ratio: main.liveness.eyelid_ratio,
                        blinks: main.blinks,
                        motion_events: main.motion_events,
                        liveness_score: 1.0 - main.spoof_score,
                        obstacles,
                        obstacle_confidence: main.obstacles.max(),
                    },
                    spoof_score: main.spoof_score,
                    judgeable: main.judgeable,
                    needs_movement: main.needs_movement,
                    multiple,
                    crop,
                })
            }
        };
        let decided = Instant::now();
        self.frame_embed_ms = 0.0;
        let (progress, ending) = self.frame_result(engine, store, view, started);
        costs.embed_ms += self.frame_embed_ms;
        costs.decide_ms = decided.elapsed().as_secs_f64() * 1000.0 - self.frame_embed_ms;
        costs.total_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.last_costs = Some(costs);
        Ok(FrameResult {
            progress,
            ending,
            processing_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    fn frame_result(
        &mut self,
        engine: &Engine,
        store: &Store,
        view: Option<FrameView>,
        started: Instant,
    ) -> (Progress, Option<Ending>) {
        match self.kind.clone() {
            Kind::Enrollment {
                user_id,
                target_samples,
                required_blinks,
                min_quality,
            } => self.enrollment_frame(
                engine,
                store,
                view,
                started,
                &user_id,
                target_samples,
                required_blinks,
                min_quality,
            ),
            Kind::Authentication {
                user_id,
                min_frames,
                max_frames,
                min_confidence,
                require_liveness,
                max_attempts,
            } => self.authentication_frame(
                engine,
                store,
                view,
                started,
                user_id.as_deref(),
                (min_frames, max_frames),
                min_confidence,
                require_liveness,
                max_attempts,
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn enrollment_frame(
        &mut self,
        engine: &Engine,
        store: &Store,
        view: Option<FrameView>,
        started: Instant,
        user_id: &str,
        target: usize,
        required_blinks: usize,
        min_quality: f32,
    ) -> (Progress, Option<Ending>) {
        let Some(v) = view else {
            let p = self.progress(None, None, NO_FACE, Some("no_face"));
            return (p, None);
        };
        let f = &v.summary;
        let usable = f.obstacles.is_empty() && !v.multiple && f.quality >= min_quality;
        if usable && self.samples.len() < target {
            // Every sample is its own frame's embedding (their mean is the template).
            let t = Instant::now();
            match engine.pipeline.embedder().embed(&v.crop) {
                Ok(e) => self.samples.push((e.as_slice().to_vec(), f.quality)),
                Err(e) => tracing::error!(error = %e, "embedding an enrollment sample failed"),
            }
            self.frame_embed_ms += t.elapsed().as_secs_f64() * 1000.0;
        }
        let decision = decide(
            &Requirements::enrollment(required_blinks, target as u64, min_quality),
            &Evidence {
                blinks: f.blinks,
                motion_events: f.motion_events,
                frames: self.samples.len() as u64,
                quality: f.quality,
                obstacles: &f.obstacles,
                spoof_score: v.spoof_score,
                spoof_threshold: engine.liveness.spoof_threshold,
                judgeable: v.judgeable,
                needs_movement: v.needs_movement,
            },
        );
        self.liveness_passed =
            f.blinks >= required_blinks && f.motion_events >= 1 && !v.needs_movement;
        let rejection = v.rejection();
        if !decision.passed || v.multiple {
            let message = if v.multiple {
                MULTIPLE
            } else {
                decision
                    .instruction
                    .map_or("Keep looking at the camera", |i| i.message)
            };
            return (
                self.progress(Some(&v), Some(&decision), message, rejection),
                None,
            );
        }
        // Complete: the quality-weighted mean of the samples, L2-normalised.
        let dim = self.samples[0].0.len();
        let mut template = vec![0f32; dim];
        let mut wsum = 0f32;
        for (e, q) in &self.samples {
            let w = q.max(0.05);
            wsum += *q;
            for (t, x) in template.iter_mut().zip(e) {
                *t += w * x;
            }
        }
        let norm = template
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt()
            .max(1e-12);
        template.iter_mut().for_each(|x| *x /= norm);
        let quality = wsum / self.samples.len() as f32;
        let result = store
            .enroll(&self.client, user_id, &template, quality, true)
            .and_then(|e| {
                store.save_snapshot()?;
                Ok(e)
            });
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(e) => {
                self.status = Status::Completed;
                self.audit(
                    store,
                    AuditAction::Enroll,
                    Some(user_id),
                    true,
                    "enrolled",
                    None,
                    ms,
                );
                let p = self.progress(Some(&v), Some(&decision), "Enrollment completed", None);
                let ending = Ending::Enrolled {
                    enrollment_id: e.id,
                    user_id: e.user_id,
                };
                (p, Some(ending))
            }
            Err(err) => {
                store.note_failure(&err);
                tracing::error!(error = %err, "storing an enrollment failed");
                self.status = Status::Failed;
                self.audit(
                    store,
                    AuditAction::Enroll,
                    Some(user_id),
                    false,
                    "store_error",
                    None,
                    ms,
                );
                let p = self.progress(
                    Some(&v),
                    Some(&decision),
                    "The enrollment could not be stored",
                    None,
                );
                (
                    p,
                    Some(Ending::Failed {
                        reason: "store_error",
                    }),
                )
            }
        }
    }

    fn progress(
        &self,
        v: Option<&FrameView>,
        d: Option<&Decision>,
        message: &'static str,
        rejection: Option<&'static str>,
    ) -> Progress {
        let (target, quality_threshold, blinks_required, motion_required) = match &self.kind {
            Kind::Enrollment {
                target_samples,
                required_blinks,
                min_quality,
                ..
            } => (*target_samples, *min_quality, *required_blinks, 1),
            Kind::Authentication { min_frames, .. } => (*min_frames as usize, 0.0, 1, 0),
        };
        Progress {
            frames_processed: self.frames,
            completed_samples: self.samples.len(),
            target_samples: target,
            quality_threshold,
            blinks_required,
            motion_required,
            face: v.map(|v| v.summary.clone()),
            liveness_passed: self.liveness_passed,
            instruction: d.and_then(|d| d.instruction),
            message,
            rejection,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn authentication_frame(
        &mut self,
        engine: &Engine,
        store: &Store,
        view: Option<FrameView>,
        started: Instant,
        user_id: Option<&str>,
        (min_frames, max_frames): (u64, u64),
        min_confidence: f32,
        require_liveness: bool,
        max_attempts: u32,
    ) -> (Progress, Option<Ending>) {
        let ms = || started.elapsed().as_secs_f64() * 1000.0;
        let over_budget = self.frames >= max_frames;
        let fail = |s: &mut Session,
                    reason: &'static str,
                    message: &'static str,
                    confidence: f32,
                    v: Option<&FrameView>,
                    d: Option<&Decision>| {
            s.status = Status::Failed;
            s.audit(
                store,
                AuditAction::Authenticate,
                user_id,
                false,
                reason,
                Some(confidence),
                ms(),
            );
            let p = s.progress(v, d, message, None);
            (p, Some(Ending::Failed { reason }))
        };
        let Some(v) = view else {
            if over_budget {
                return fail(
                    self,
                    "max_frames_exceeded",
                    "No face was seen in the frame budget",
                    0.0,
                    None,
                    None,
                );
            }
            return (self.progress(None, None, NO_FACE, Some("no_face")), None);
        };
        if v.multiple {
            if over_budget {
                return fail(
                    self,
                    "multiple_faces",
                    "More than one face in front of the camera",
                    0.0,
                    Some(&v),
                    None,
                );
            }
            return (
                self.progress(Some(&v), None, MULTIPLE, Some("multiple_faces")),
                None,
            );
        }
        let f = &v.summary;
        let decision = decide(
            &Requirements::authentication(min_frames, engine.min_quality),
            &Evidence {
                blinks: if require_liveness { f.blinks } else { 1 },
                motion_events: f.motion_events,
                frames: self.frames,
                quality: f.quality,
                obstacles: &f.obstacles,
                spoof_score: if require_liveness { v.spoof_score } else { 0.0 },
                spoof_threshold: engine.liveness.spoof_threshold,
                judgeable: v.judgeable || !require_liveness,
                needs_movement: v.needs_movement && require_liveness,
            },
        );
        self.liveness_passed = !require_liveness
            || ((f.blinks > 0 || f.motion_events > 0)
                && v.spoof_score < engine.liveness.spoof_threshold);
        if !decision.passed {
            if over_budget {
                use crate::pipeline::liveness::Missing;
                let reason = match decision.missing.first() {
                    Some(Missing::Obstacle) => "obstacle",
                    Some(Missing::Quality | Missing::Closer) => "poor_quality",
                    Some(Missing::Blink | Missing::Motion | Missing::Liveness) => "liveness_failed",
                    _ => "max_frames_exceeded",
                };
                return fail(
                    self,
                    reason,
                    "The frame budget ended before the checks passed",
                    0.0,
                    Some(&v),
                    Some(&decision),
                );
            }
            let message = decision
                .instruction
                .map_or("Keep looking at the camera", |i| i.message);
            let p = self.progress(Some(&v), Some(&decision), message, v.rejection());
            return (p, None);
        }
        // A match failed a moment ago: the next look waits for the face to change. If the
        // frame budget ends meanwhile, the failed look stands.
        let waiting = self.frames < self.retry_at_frame;
        if waiting && !over_budget {
            let p = self.progress(Some(&v), Some(&decision), NOT_RECOGNISED, None);
            return (p, None);
        }
        let matched = if waiting {
            Ok(None)
        } else {
            let t = Instant::now();
            // One embedding per look: a match decides the session, and so does the last of
            // `max_attempts` failed ones (or a failed one at the end of the frame budget).
            let embedded = engine
                .pipeline
                .embedder()
                .embed(&v.crop)
                .map(|e| e.as_slice().to_vec());
            self.frame_embed_ms += t.elapsed().as_secs_f64() * 1000.0;
            let embedding = match embedded {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "embedding the face failed");
                    let p = self.progress(
                        Some(&v),
                        Some(&decision),
                        "Keep looking at the camera",
                        None,
                    );
                    return (p, None);
                }
            };
            match user_id {
                Some(u) => store
                    .verify(&self.client, u, &embedding)
                    .map(|m| m.filter(|m| m.similarity >= min_confidence)),
                None => store
                    .identify(&self.client, &embedding, engine.top_k, min_confidence)
                    .map(|(best, _)| best),
            }
        };
        match matched {
            Ok(Some(m)) => {
                self.status = Status::Completed;
                self.audit(
                    store,
                    AuditAction::Authenticate,
                    Some(&m.user_id),
                    true,
                    "match_found",
                    Some(m.similarity),
                    ms(),
                );
                let p = self.progress(Some(&v), Some(&decision), "Authenticated", None);
                let ending = Ending::Authenticated {
                    user_id: m.user_id,
                    enrollment_id: m.enrollment_id,
                    confidence: m.similarity,
                };
                (p, Some(ending))
            }
            Ok(None) if self.match_attempts + 1 < max_attempts && !over_budget => {
                self.match_attempts += 1;
                self.retry_at_frame = self.frames + MATCH_RETRY_FRAMES;
                let p = self.progress(Some(&v), Some(&decision), NOT_RECOGNISED, None);
                (p, None)
            }
            Ok(None) => fail(
                self,
                "no_match_found",
                "No enrolled person matches this face",
                0.0,
                Some(&v),
                Some(&decision),
            ),
            Err(e) => {
                tracing::error!(error = %e, "matching failed");
                fail(
                    self,
                    "internal_error",
                    "The terminal could not match the face",
                    0.0,
                    Some(&v),
                    None,
                )
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn audit(
        &self,
        store: &Store,
        action: AuditAction,
        user_id: Option<&str>,
        success: bool,
        reason: &str,
        confidence: Option<f32>,
        processing_ms: f64,
    ) {
        let row = AuditRow {
            at_ms: now_ms(),
            action,
            client: self.client.clone(),
            user_id: user_id.map(str::to_owned),
            session_id: Some(self.token.clone()),
            success,
            reason: reason.to_owned(),
            confidence,
            processing_ms,
        };
        if let Err(e) = store.records().audit(&row) {
            store.note_failure(&e);
            tracing::error!(error = %e, "an audit row could not be written");
        }
    }
}

const NO_FACE: &str = "No face detected: please face the camera";
const MULTIPLE: &str = "One person at a time, please";
const NOT_RECOGNISED: &str = "Not recognised yet: keep looking at the camera";

/// What one frame showed of the main face, with what only the session needs.
#[derive(Debug, Clone)]
struct FrameView {
    summary: FaceSummary,
    spoof_score: f32,
    /// The face is large and sharp enough for its liveness to be judged.
    judgeable: bool,
    /// A blink alone does not do: the face must still move as a head does.
    needs_movement: bool,
    multiple: bool,
    /// The aligned 112x112 crop, embedded only when needed.
    crop: image::RgbImage,
}

impl FrameView {
    fn rejection(&self) -> Option<&'static str> {
        if self.multiple {
            Some("multiple_faces")
        } else if !self.summary.obstacles.is_empty() {
            Some("obstacle")
        } else {
            None
        }
    }
}
