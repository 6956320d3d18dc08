//! Door mode: a camera's frames, continuously, through detection, tracking and liveness; a
//! visit (one tracked face) is identified 1:N against the enrollments the door admits once it
//! has passed liveness, and gets exactly one decision: `granted` (with the person), `unknown`
//! (live, but nobody enrolled), or `denied` (no liveness, an obstacle or a poor face within the
//! visit's window). A denied person who then passes (told to blink, they do) is still decided:
//! granted or unknown, once; a visit is never denied twice. A visitor called unknown who stays
//! in view is looked at `unknown_rechecks` more times and still granted if a look matches
//! clearly (`unknown_recheck_margin` over the threshold): a face covered by a hand during the
//! first looks. A person granted is not granted again within the cool-down. A visitor decided
//! granted, or unknown with the rechecks spent, who stays in view is only tracked from then on
//! (`Stream::settle`): no liveness work, and no place taken from the next person.
//!
//! Invariant: a visit gets at most one grant and at most one unknown (before the grant),
//! preceded at most by one denial at the end of its window; only a face that passed the
//! authentication liveness rules (`pipeline::liveness::decide`) is ever embedded or matched;
//! every decision writes an audit row (sealed by the store) before anyone is told; the relay
//! runs off the camera's thread and its failures never hold up the next frame.

pub mod relay;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::camera::Camera;
use crate::config::DoorConfig;
use crate::pipeline::PipelineError;
use crate::pipeline::embed::TrackEmbedding;
use crate::pipeline::liveness::{Evidence, Instruction, Missing, Requirements, decide};
use crate::pipeline::stream::{FaceReport, Stream};
use crate::sessions::Engine;
use crate::store::Store;
use crate::store::records::{AuditAction, AuditRow, now_ms};

/// How a visit ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Granted {
        client: String,
        user_id: String,
        enrollment_id: String,
        confidence: f32,
    },
    /// Live, of good quality, and matching nobody this door admits.
    Unknown { best_confidence: f32 },
    /// `liveness_failed`, `obstacle` or `poor_quality`: the window ended first.
    Denied { reason: &'static str },
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Granted { .. } => "granted",
            Outcome::Unknown { .. } => "unknown",
            Outcome::Denied { .. } => "denied",
        }
    }
}

/// One decision of a door.
#[derive(Debug, Clone, PartialEq)]
pub struct DoorDecision {
    pub camera: String,
    /// The visit (track id, unique per camera run).
    pub visit: u64,
    pub outcome: Outcome,
    pub liveness_passed: bool,
    /// From the visit's first frame to the decision (capture clock).
    pub latency_ms: f64,
    /// Frames the visit took.
    pub frames: u64,
    pub at_ms: u64,
}

/// What a door shows of its last frame (the kiosk preview, `?overlay=1`).
#[derive(Debug, Clone, Default)]
pub struct DoorView {
    pub frame_seq: u64,
    /// Boxes of the faces in the frame, with the visit's state (`checking`, `granted`, ...).
    pub faces: Vec<([f32; 4], &'static str)>,
    /// What the person in front should do, if anything.
    pub prompt: Option<Instruction>,
    /// The main undecided face passed the liveness rules in this frame.
    pub live: bool,
    pub last_decision: Option<DoorDecision>,
}

#[derive(Debug)]
struct Visit {
    first_t_ms: f64,
    /// The final decision (granted or unknown), or a denial.
    decided: Option<&'static str>,
    /// Denied at the end of the window: the person was told why and may still pass (a late
    /// blink grants); no second denial.
    denied: bool,
    attempts: u32,
    /// When the last attempt found no match (capture clock): the next waits
    /// `unknown_retry_s`.
    failed_at_ms: Option<f64>,
    /// The visitor's embedding, reused until their face is clearly better.
    embedding: TrackEmbedding,
    /// Looks taken since the visitor was called unknown (`unknown_rechecks`).
    rechecks: u32,
}

/// The decision logic of one door (no threads: `run` drives it).
#[derive(Debug)]
pub struct Door {
    camera: String,
    /// Tenants (client names) this door admits; empty: every tenant with enrollments.
    clients: Vec<String>,
    cfg: DoorConfig,
    stream: Stream,
    visits: HashMap<u64, Visit>,
    /// (client, user) -> time of the last grant (capture clock).
    granted_at: HashMap<(String, String), f64>,
    /// What the last frame cost, per stage.
    costs: crate::pipeline::stream::StageCosts,
    /// Embeddings computed so far (one per visit unless the face got clearly better).
    embeddings: u64,
}

/// Faces per frame that a door decides (the largest undecided ones; the stream judges liveness
/// on the same faces, since a decided visitor's track is settled, save an unknown one during
/// its rechecks, which keeps a liveness slot meanwhile).
const DECIDED_FACES: usize = 3;

impl Door {
    pub fn new(camera: &str, clients: Vec<String>, cfg: DoorConfig, engine: &Engine) -> Door {
        Door {
            camera: camera.to_owned(),
            clients,
            cfg,
            stream: Stream::new(engine.liveness.clone()).with_palms(engine.obstacles.hand < 1.0),
            visits: HashMap::new(),
            granted_at: HashMap::new(),
            costs: Default::default(),
            embeddings: 0,
        }
    }

    /// What the last frame cost, per stage (detection, liveness models, cues).
    pub fn last_costs(&self) -> crate::pipeline::stream::StageCosts {
        self.costs
    }

    /// Embeddings computed so far, and frames searched whole / around tracked faces.
    pub fn work(&self) -> (u64, u64, u64) {
        let (full, roi) = self.stream.detections();
        (self.embeddings, full, roi)
    }

    /// One frame taken at `t_ms` (capture clock): the decisions it brought (audited), and what
    /// the frame shows.
    pub fn process(
        &mut self,
        engine: &Engine,
        store: &Store,
        img: &RgbImage,
        t_ms: f64,
    ) -> Result<(Vec<DoorDecision>, DoorView), PipelineError> {
        let report = self
            .stream
            .process(&engine.pipeline, &engine.live, img, t_ms)?;
        self.costs = report.costs;
        for (id, _) in &report.ended {
            self.visits.remove(id);
        }
        let cooldown_ms = self.cfg.cooldown_s * 1000.0;
        self.granted_at.retain(|_, t| t_ms - *t < cooldown_ms);
        let mut decisions = Vec::new();
        let mut view = DoorView::default();
        // Undecided faces taken so far (largest first); a decided visitor still in view takes
        // no place (the stream settles their track; an unknown one once its rechecks are
        // spent).
        let mut deciding = 0;
        for face in &report.faces {
            let decided = self
                .visits
                .get(&face.track)
                .and_then(|v| v.decided.filter(|_| !v.denied));
            if decided == Some("unknown") {
                if let Some(d) = self.recheck(engine, store, img, face, t_ms)? {
                    decisions.push(d);
                    view.faces.push((face.face.bbox, "granted"));
                } else {
                    view.faces.push((face.face.bbox, "unknown"));
                }
                continue;
            }
            if let Some(state) = decided {
                view.faces.push((face.face.bbox, state));
                continue;
            }
            if deciding >= DECIDED_FACES {
                view.faces.push((face.face.bbox, "waiting"));
                continue;
            }
            deciding += 1;
            let visit = self.visits.entry(face.track).or_insert(Visit {
                first_t_ms: t_ms,
                decided: None,
                denied: false,
                attempts: 0,
                failed_at_ms: None,
                embedding: TrackEmbedding::default(),
                rechecks: 0,
            });
            let aligned = engine.pipeline.aligned(img, &face.face).ok();
            let quality = aligned.as_ref().map_or(0.0, |(_, q)| q.score);
            let obstacles = face.obstacles.blocking(&engine.obstacles);
            let decision = decide(
                &Requirements::authentication(self.cfg.min_frames, engine.min_quality),
                &Evidence {
                    blinks: face.blinks,
                    motion_events: face.motion_events,
                    frames: face.frames,
                    quality,
                    obstacles: &obstacles,
                    spoof_score: face.spoof_score,
                    spoof_threshold: engine.liveness.spoof_threshold,
                    judgeable: face.judgeable,
                    needs_movement: face.needs_movement,
                },
            );
            if deciding == 1 {
                view.prompt = decision.instruction;
                view.live = decision.passed;
            }
            let elapsed = t_ms - visit.first_t_ms;
            let retry_due = visit
                .failed_at_ms
                .is_none_or(|at| t_ms - at >= self.cfg.unknown_retry_s * 1000.0);
            let outcome = if decision.passed && !retry_due {
                // A look found no match moments ago: the next waits, so that a face rubbed or
                // covered for a moment is not called unknown three frames in a row.
                None
            } else if let (true, Some((crop, _))) = (decision.passed, &aligned) {
                // One embedding per visit unless the face gets clearly better.
                let before = visit.embedding.computed();
                let embedding = visit
                    .embedding
                    .get(engine.pipeline.embedder(), face.track, quality, crop)?
                    .clone();
                self.embeddings += visit.embedding.computed() - before;
                let threshold = engine.match_threshold;
                match best_match(
                    store,
                    &self.clients,
                    engine,
                    embedding.as_slice(),
                    threshold,
                ) {
                    Ok((Some(m), _)) => Some(m),
                    Ok((None, best)) => {
                        visit.attempts += 1;
                        visit.failed_at_ms = Some(t_ms);
                        visit.embedding.forget();
                        (visit.attempts >= self.cfg.unknown_attempts).then_some(Outcome::Unknown {
                            best_confidence: best,
                        })
                    }
                    Err(e) => {
                        store.note_failure(&e);
                        tracing::error!(camera = %self.camera, error = %e, "door matching failed");
                        None
                    }
                }
            } else if elapsed >= self.cfg.window_s * 1000.0 && !visit.denied {
                let reason = match decision.missing.first() {
                    Some(Missing::Obstacle) => "obstacle",
                    Some(Missing::Quality | Missing::Closer) => "poor_quality",
                    _ => "liveness_failed",
                };
                Some(Outcome::Denied { reason })
            } else {
                None
            };
            let Some(outcome) = outcome else {
                view.faces.push((face.face.bbox, "checking"));
                continue;
            };
            let state = outcome.as_str();
            visit.decided = Some(state);
            visit.denied = matches!(outcome, Outcome::Denied { .. });
            if matches!(outcome, Outcome::Granted { .. })
                || (matches!(outcome, Outcome::Unknown { .. }) && self.cfg.unknown_rechecks == 0)
            {
                // Final: the stream only tracks this face from now on (no liveness work).
                self.stream.settle(face.track);
            }
            view.faces.push((face.face.bbox, state));
            decisions.extend(self.publish(store, face, outcome, decision.passed, elapsed, t_ms));
        }
        Ok((decisions, view))
    }

    /// The decision for `face`'s visit, audited; `None` for a grant of a person granted
    /// within the cool-down (the same person, still at the door: a re-found track).
    fn publish(
        &mut self,
        store: &Store,
        face: &FaceReport,
        outcome: Outcome,
        liveness_passed: bool,
        latency_ms: f64,
        t_ms: f64,
    ) -> Option<DoorDecision> {
        if let Outcome::Granted {
            client, user_id, ..
        } = &outcome
        {
            let key = (client.clone(), user_id.clone());
            if self.granted_at.contains_key(&key) {
                tracing::debug!(camera = %self.camera, visit = face.track, "granted within the cool-down: not repeated");
                return None;
            }
            self.granted_at.insert(key, t_ms);
        }
        let d = DoorDecision {
            camera: self.camera.clone(),
            visit: face.track,
            liveness_passed,
            outcome,
            latency_ms,
            frames: face.frames,
            at_ms: now_ms(),
        };
        audit(store, &self.clients, &d);
        Some(d)
    }

    /// A visitor called unknown and still in view: every `unknown_recheck_s` another look, up
    /// to `unknown_rechecks`, granted only at `unknown_recheck_margin` over the threshold (the
    /// extra looks must not raise a stranger's chance of a false accept). The track stays under
    /// liveness (not settled) until then: a settled face's landmarks are too coarse to align.
    fn recheck(
        &mut self,
        engine: &Engine,
        store: &Store,
        img: &RgbImage,
        face: &FaceReport,
        t_ms: f64,
    ) -> Result<Option<DoorDecision>, PipelineError> {
        let Some(visit) = self.visits.get_mut(&face.track) else {
            return Ok(None);
        };
        if visit.rechecks < self.cfg.unknown_rechecks
            && face.spoof_score >= engine.liveness.spoof_threshold
        {
            // Scored an attack since (a sheet or a screen seen around it): no more looks.
            visit.rechecks = self.cfg.unknown_rechecks;
            self.stream.settle(face.track);
        }
        if visit.rechecks >= self.cfg.unknown_rechecks
            || visit
                .failed_at_ms
                .is_some_and(|at| t_ms - at < self.cfg.unknown_recheck_s * 1000.0)
        {
            return Ok(None);
        }
        let Ok((crop, quality)) = engine.pipeline.aligned(img, &face.face) else {
            return Ok(None);
        };
        let before = visit.embedding.computed();
        let embedding = visit
            .embedding
            .get(engine.pipeline.embedder(), face.track, quality.score, &crop)?
            .clone();
        self.embeddings += visit.embedding.computed() - before;
        let threshold = engine.match_threshold + self.cfg.unknown_recheck_margin;
        let outcome = match best_match(
            store,
            &self.clients,
            engine,
            embedding.as_slice(),
            threshold,
        ) {
            Ok((Some(m), _)) => m,
            Ok((None, _)) => {
                visit.rechecks += 1;
                visit.failed_at_ms = Some(t_ms);
                visit.embedding.forget();
                if visit.rechecks >= self.cfg.unknown_rechecks {
                    self.stream.settle(face.track);
                }
                return Ok(None);
            }
            Err(e) => {
                store.note_failure(&e);
                tracing::error!(camera = %self.camera, error = %e, "door matching failed");
                return Ok(None);
            }
        };
        visit.decided = Some("granted");
        let elapsed = t_ms - visit.first_t_ms;
        self.stream.settle(face.track);
        Ok(self.publish(store, face, outcome, true, elapsed, t_ms))
    }
}

/// The tenants a door admits: those configured, or (none configured) every tenant with
/// enrollments.
fn admitted<'a>(store: &Store, clients: &'a [String]) -> std::borrow::Cow<'a, [String]> {
    if clients.is_empty() {
        std::borrow::Cow::Owned(store.tenants())
    } else {
        std::borrow::Cow::Borrowed(clients)
    }
}

/// The best match over the admitted clients (`Some` at or above the threshold), and the best
/// similarity seen.
fn best_match(
    store: &Store,
    clients: &[String],
    engine: &Engine,
    query: &[f32],
    threshold: f32,
) -> Result<(Option<Outcome>, f32), crate::store::StoreError> {
    let clients = admitted(store, clients);
    let mut best: Option<(String, crate::store::Match)> = None;
    let mut best_any = 0f32;
    for c in clients.iter() {
        let (m, hits) = store.identify(c, query, engine.top_k, threshold)?;
        if let Some(h) = hits.first() {
            best_any = best_any.max(h.similarity);
        }
        if let Some(m) = m
            && best
                .as_ref()
                .is_none_or(|(_, b)| m.similarity > b.similarity)
        {
            best_any = best_any.max(m.similarity);
            best = Some((c.clone(), m));
        }
    }
    Ok((
        best.map(|(client, m)| Outcome::Granted {
            client,
            user_id: m.user_id,
            enrollment_id: m.enrollment_id,
            confidence: m.similarity,
        }),
        best_any,
    ))
}

/// One audit row per decision: a grant under the person's client; a denial or an unknown
/// person under every client the door admits (each tenant sees the attempts at its doors).
fn audit(store: &Store, clients: &[String], d: &DoorDecision) {
    let session = format!("camera:{}", d.camera);
    let rows: Vec<AuditRow> = match &d.outcome {
        Outcome::Granted {
            client,
            user_id,
            confidence,
            ..
        } => vec![AuditRow {
            at_ms: d.at_ms,
            action: AuditAction::Authenticate,
            client: client.clone(),
            user_id: Some(user_id.clone()),
            session_id: Some(session),
            success: true,
            reason: "match_found".into(),
            confidence: Some(*confidence),
            processing_ms: d.latency_ms,
        }],
        other => {
            let reason = match other {
                Outcome::Denied { reason } => *reason,
                _ => "no_match_found",
            };
            admitted(store, clients)
                .iter()
                .map(|c| AuditRow {
                    at_ms: d.at_ms,
                    action: AuditAction::Authenticate,
                    client: c.clone(),
                    user_id: None,
                    session_id: Some(session.clone()),
                    success: false,
                    reason: reason.into(),
                    confidence: None,
                    processing_ms: d.latency_ms,
                })
                .collect()
        }
    };
    for row in rows {
        if let Err(e) = store.records().audit(&row) {
            store.note_failure(&e);
            tracing::error!(error = %e, "a door audit row could not be written");
        }
    }
}

/// What a door's thread needs from the daemon.
pub trait Host: Send + Sync + 'static {
    fn engine(&self) -> &Engine;
    fn store(&self) -> &Store;
    /// A decision was made (and audited): tell listeners, count it.
    fn decided(&self, d: &DoorDecision);
    /// The prompt for the person in front changed.
    fn prompt(&self, camera: &str, prompt: Option<Instruction>);
    /// A frame was processed in `ms`.
    fn frame_done(&self, camera: &str, ms: f64);
    fn stopping(&self) -> bool;
}

/// A running door: its camera and what it last saw.
#[derive(Debug)]
pub struct DoorHandle {
    pub camera: Arc<Camera>,
    pub view: Mutex<DoorView>,
    /// Tenants (client names) this door admits (empty: all).
    pub clients: Vec<String>,
    pub relay: relay::Relay,
    /// When the door last finished a frame (ms since the epoch; 0: never): the watchdog's
    /// evidence that the door is not stuck.
    pub last_frame_ms: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DoorHandle {
    pub fn view(&self) -> DoorView {
        lock(&self.view).clone()
    }
}

/// Drives a door on its own thread until the host stops or the recording ends.
pub fn spawn(
    handle: Arc<DoorHandle>,
    cfg: DoorConfig,
    host: Arc<dyn Host>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("door-{}", handle.camera.id))
        .spawn(move || crate::pipeline::models::on_this_thread(|| run(&handle, cfg, host.as_ref())))
}

fn run(handle: &DoorHandle, cfg: DoorConfig, host: &dyn Host) {
    use std::sync::atomic::Ordering;
    let cam = &handle.camera;
    // Nobody in view: at most `idle_fps` frames a second (the rest left in the camera's slot).
    let idle_gap = (cfg.idle_fps > 0.0).then(|| Duration::from_secs_f64(1.0 / cfg.idle_fps));
    let mut pacing = false;
    // Someone in view: at most `liveness.analysis_fps` frames a second, by capture time.
    let mut pacer = crate::camera::Pacer::new(host.engine().liveness.analysis_fps);
    let mut door = Door::new(&cam.id, handle.clients.clone(), cfg, host.engine());
    let mut last_seq = 0u64;
    let mut clock: Option<Instant> = None;
    let mut last_prompt: Option<Instruction> = None;
    tracing::info!(camera = %cam.id, "door mode on");
    while !host.stopping() {
        let Some(frame) = cam.next_after(last_seq, Duration::from_millis(500)) else {
            if matches!(
                cam.state(),
                crate::camera::CameraState::Ended | crate::camera::CameraState::Stopped
            ) {
                break;
            }
            continue;
        };
        if last_seq > 0 && frame.seq > last_seq + 1 {
            let left = if pacing {
                &cam.counters.idle_skipped
            } else {
                &cam.counters.dropped
            };
            left.fetch_add(frame.seq - last_seq - 1, Ordering::Relaxed);
        }
        last_seq = frame.seq;
        if !pacer.take(frame.captured) {
            cam.counters.paced_skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let origin = *clock.get_or_insert(frame.captured);
        let t_ms = frame
            .captured
            .saturating_duration_since(origin)
            .as_secs_f64()
            * 1000.0;
        let started = Instant::now();
        let result = door.process(host.engine(), host.store(), &frame.image, t_ms);
        cam.counters.processed.fetch_add(1, Ordering::Relaxed);
        handle.last_frame_ms.store(now_ms(), Ordering::Relaxed);
        host.frame_done(&cam.id, started.elapsed().as_secs_f64() * 1000.0);
        let nobody = matches!(&result, Ok((_, view)) if view.faces.is_empty());
        pacing = idle_gap.is_some() && nobody;
        if nobody {
            pacer.reset();
        }
        match result {
            Ok((decisions, mut view)) => {
                view.frame_seq = frame.seq;
                if view.prompt != last_prompt {
                    last_prompt = view.prompt;
                    host.prompt(&cam.id, view.prompt);
                }
                {
                    let mut v = lock(&handle.view);
                    view.last_decision = decisions.last().cloned().or(v.last_decision.take());
                    *v = view;
                }
                for d in &decisions {
                    tracing::info!(camera = %d.camera, visit = d.visit, decision = d.outcome.as_str(),
                        latency_ms = d.latency_ms as u64, "door decision");
                    if let Outcome::Granted {
                        client, user_id, ..
                    } = &d.outcome
                    {
                        handle.relay.fire(&cam.id, client, user_id);
                    }
                    host.decided(d);
                }
            }
            Err(e) => tracing::warn!(camera = %cam.id, error = %e, "door frame failed"),
        }
        if let Some(gap) = idle_gap.filter(|_| pacing) {
            std::thread::sleep(gap.saturating_sub(started.elapsed()));
        }
    }
    tracing::info!(camera = %cam.id, "door mode off");
}
