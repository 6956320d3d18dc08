//! `facegate bench stream --frames DIR`: a door's whole per-frame work over a clip, in this
//! process, frame after frame (as fast as it goes, timestamps at the clip's fps; models on
//! `--threads`, default 1 as in a door's thread):
//! detection (the whole frame, or around tracked faces between full searches), tracking, the
//! liveness models and cues, one embedding per visit, 1:N over a scratch store of N synthetic
//! enrollments plus the person (enrolled from the clip's sharpest face). Reported per schedule
//! (the configured `pipeline.redetect_ms`, and the whole frame on every frame for comparison):
//! per-frame cost (mean, p50, p95, by stage; mean up to the final decision and after it, when the
//! decided visitor is only tracked), full / ROI detections, embeddings computed, the
//! frame the face appeared, the frame its liveness evidence was complete, the frame of the
//! decision and what it was, RSS.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::json;

use super::bench::percentile;
use super::bench_door::rss_mib;
use super::bench_index::Rng;
use crate::config::Config;
use crate::door::{Door, Outcome};
use crate::pipeline::embed::EMBEDDING_DIM;
use crate::sessions::Engine;
use crate::store::Store;
use crate::store::records::NewTemplate;

const CLIENT: &str = "bench";

#[derive(Debug)]
pub struct Options {
    pub frames: PathBuf,
    pub enrollments: usize,
    pub fps: f64,
    /// Frames resized by this factor first (2: a 640x360 clip as 1280x720).
    pub scale: f32,
    pub threads: usize,
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Row {
    schedule: String,
    frames: usize,
    mean_ms: f64,
    p50_ms: f64,
    p95_ms: f64,
    /// Mean over the frames up to and including the final decision, and over those after it
    /// (the decided visitor still in view: tracked only).
    to_decision_mean_ms: Option<f64>,
    after_decision_mean_ms: Option<f64>,
    detect_ms: f64,
    eyes_ms: f64,
    mesh_ms: f64,
    mask_ms: f64,
    palm_ms: f64,
    cues_ms: f64,
    /// Everything else: tracking, decision rules, embedding, 1:N, audit.
    other_ms: f64,
    full_detections: u64,
    roi_detections: u64,
    embeddings: u64,
    face_frame: Option<usize>,
    live_frame: Option<usize>,
    decision_frame: Option<usize>,
    decision: Option<String>,
    /// Every decision of the clip: (frame, outcome).
    decisions: Vec<(usize, String)>,
    /// Frames from the liveness evidence being complete to the final decision.
    decision_after_evidence_frames: Option<i64>,
    /// From the face's first frame to the final decision, at the clip's fps.
    time_to_decision_s: Option<f64>,
    rss_mib: f64,
}

/// Engines for the schedules to compare: (name, engine).
pub type Engines = Vec<(String, Engine)>;

pub fn run(config: &Config, engines: Engines, opts: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(opts.fps > 0.0, "--fps must be positive");
    anyhow::ensure!(
        opts.scale > 0.0 && opts.scale <= 4.0,
        "--scale must be in (0, 4]"
    );
    let Some((_, first)) = engines.first() else {
        anyhow::bail!("no engine to run");
    };
    let mut frames = super::liveness::decode_frames(&first.pipeline, &opts.frames)?;
    if (opts.scale - 1.0).abs() > 1e-3 {
        for f in &mut frames {
            let (w, h) = f.dimensions();
            let (w, h) = (
                ((w as f32 * opts.scale).round() as u32).max(1),
                ((h as f32 * opts.scale).round() as u32).max(1),
            );
            *f = image::imageops::resize(f, w, h, image::imageops::FilterType::Triangle);
        }
    }
    let (width, height) = frames[0].dimensions();
    let dir = std::env::temp_dir().join(format!("facegate-bench-stream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = measure(config, &engines, &frames, opts, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let rows = result?;
    if opts.json {
        return super::print_json(&json!({
            "clip": opts.frames.display().to_string(),
            "size": [width, height],
            "fps": opts.fps,
            "threads": opts.threads,
            "enrollments": opts.enrollments + 1,
            "rows": rows,
        }));
    }
    println!(
        "{} ({}x{}, {} frames at {} fps), {} thread(s), 1:N over {} enrollments",
        opts.frames.display(),
        width,
        height,
        frames.len(),
        opts.fps,
        opts.threads,
        opts.enrollments + 1
    );
    println!(
        "{:<12} {:>7} {:>7} {:>7} {:>7} {:>7} | {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} | {:>9} {:>6} | {:>5} {:>5} {:>5} {:>7} {:>9} {:>7}",
        "schedule",
        "mean",
        "p50",
        "p95",
        "to dec",
        "after",
        "detect",
        "eyes",
        "mesh",
        "mask",
        "palm",
        "cues",
        "other",
        "full/roi",
        "embeds",
        "face",
        "live",
        "dec",
        "after",
        "decision",
        "RSS MiB"
    );
    let o = |v: Option<usize>| v.map_or("-".to_owned(), |v| v.to_string());
    let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    for r in &rows {
        println!(
            "{:<12} {:>7.2} {:>7.2} {:>7.2} {:>7} {:>7} | {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} | {:>4}/{:<4} {:>6} | {:>5} {:>5} {:>5} {:>7} {:>9} {:>7.1}",
            r.schedule,
            r.mean_ms,
            r.p50_ms,
            r.p95_ms,
            f(r.to_decision_mean_ms),
            f(r.after_decision_mean_ms),
            r.detect_ms,
            r.eyes_ms,
            r.mesh_ms,
            r.mask_ms,
            r.palm_ms,
            r.cues_ms,
            r.other_ms,
            r.full_detections,
            r.roi_detections,
            r.embeddings,
            o(r.face_frame),
            o(r.live_frame),
            o(r.decision_frame),
            r.decision_after_evidence_frames
                .map_or("-".to_owned(), |v| v.to_string()),
            r.decision.as_deref().unwrap_or("-"),
            r.rss_mib
        );
    }
    println!(
        "ms per frame; to dec / after: mean up to the final decision / after it (the visitor \
         tracked only); stage columns are means; face / live / dec: frame numbers (0-based)"
    );
    Ok(())
}

fn measure(
    config: &Config,
    engines: &Engines,
    frames: &[image::RgbImage],
    opts: &Options,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<Row>> {
    let keys = crate::store::keys::KeySources {
        credentials_directory: None,
        master_key_env: None,
    };
    let (store, _) =
        Store::open(dir, &keys, &config.store, EMBEDDING_DIM).context("opening a scratch store")?;
    // The person: the clip's best face (highest quality), as an enrollment would keep it.
    let pipeline = &engines[0].1.pipeline;
    let mut best: Option<(f32, Vec<f32>)> = None;
    for img in frames.iter().step_by(5) {
        let Ok(faces) = pipeline.detect(img) else {
            continue;
        };
        let Some(face) = crate::pipeline::largest(&faces) else {
            continue;
        };
        let a = pipeline.analyze(img, face)?;
        if best.as_ref().is_none_or(|(q, _)| a.quality.score > *q) {
            best = Some((a.quality.score, a.embedding.as_slice().to_vec()));
        }
    }
    let (_, person) = best.context("no face in the clip to enroll")?;
    let mut rng = Rng(0x5eed_5742);
    let mut batch = Vec::with_capacity(1000);
    for i in 0..opts.enrollments {
        batch.push(NewTemplate {
            user_id: format!("synthetic-{i:06}"),
            template: rng.unit(EMBEDDING_DIM),
            quality: 0.9,
            liveness_verified: true,
        });
        if batch.len() == 1000 {
            store.enroll_many(CLIENT, std::mem::take(&mut batch))?;
        }
    }
    batch.push(NewTemplate {
        user_id: "person".into(),
        template: person,
        quality: 1.0,
        liveness_verified: true,
    });
    store.enroll_many(CLIENT, batch)?;
    let mut rows = Vec::new();
    for (name, engine) in engines {
        let mut door = Door::new("bench", Vec::new(), config.door.clone(), engine);
        let mut ms = Vec::with_capacity(frames.len());
        let mut stages = [0f64; 6];
        let (mut face_frame, mut live_frame) = (None, None);
        let mut decisions_seen = Vec::new();
        for (i, img) in frames.iter().enumerate() {
            let t_ms = i as f64 * 1000.0 / opts.fps;
            let started = Instant::now();
            let (decisions, view) = door.process(engine, &store, img, t_ms)?;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
            let c = door.last_costs();
            for (s, v) in stages.iter_mut().zip([
                c.detect_ms,
                c.eyes_ms,
                c.mesh_ms,
                c.mask_ms,
                c.palm_ms,
                c.cues_ms,
            ]) {
                *s += v;
            }
            if face_frame.is_none() && !view.faces.is_empty() {
                face_frame = Some(i);
            }
            if live_frame.is_none() && view.live {
                live_frame = Some(i);
            }
            for d in &decisions {
                let what = match &d.outcome {
                    Outcome::Granted { user_id, .. } => format!("granted:{user_id}"),
                    Outcome::Denied { reason } => format!("denied:{reason}"),
                    other => other.as_str().to_owned(),
                };
                decisions_seen.push((i, what));
            }
        }
        let n = ms.len().max(1) as f64;
        let mean = ms.iter().sum::<f64>() / n;
        let stage_mean = stages.map(|s| s / n);
        let (embeddings, full, roi) = door.work();
        // The final decision: a grant or unknown (a denial may precede it).
        let decision = decisions_seen
            .iter()
            .find(|(_, d)| !d.starts_with("denied"))
            .or(decisions_seen.first())
            .cloned();
        let decision_frame = decision.as_ref().map(|(i, _)| *i);
        let mean_of = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let (to_decision, after_decision) = match decision_frame {
            Some(d) => (mean_of(&ms[..=d]), mean_of(&ms[d + 1..])),
            None => (None, None),
        };
        rows.push(Row {
            schedule: name.clone(),
            frames: ms.len(),
            mean_ms: mean,
            p50_ms: percentile(&ms, 50.0),
            p95_ms: percentile(&ms, 95.0),
            to_decision_mean_ms: to_decision,
            after_decision_mean_ms: after_decision,
            detect_ms: stage_mean[0],
            eyes_ms: stage_mean[1],
            mesh_ms: stage_mean[2],
            mask_ms: stage_mean[3],
            palm_ms: stage_mean[4],
            cues_ms: stage_mean[5],
            other_ms: mean - stage_mean.iter().sum::<f64>(),
            full_detections: full,
            roi_detections: roi,
            embeddings,
            face_frame,
            live_frame,
            decision_frame,
            decision: decision.map(|(_, d)| d),
            decisions: decisions_seen,
            decision_after_evidence_frames: decision_frame
                .zip(live_frame)
                .map(|(d, l)| d as i64 - l as i64),
            time_to_decision_s: decision_frame
                .zip(face_frame)
                .map(|(d, f)| (d - f) as f64 / opts.fps),
            rss_mib: rss_mib(),
        });
    }
    Ok(rows)
}
