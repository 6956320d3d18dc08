//! `facegate liveness --frames DIR`: the liveness stack over a folder of frames (sorted by
//! name, taken `1/fps` apart), reported for the main track (the face seen in most frames).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use crate::pipeline::Pipeline;
use crate::pipeline::liveness::{LivenessConfig, Verdict};
use crate::pipeline::obstacles::{ObstacleScores, ObstacleThresholds};
use crate::pipeline::stream::{FrameReport, LiveModels, StageCosts, Stream};

/// Image files of a folder, sorted by name.
pub fn frame_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the frames folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                ["jpg", "jpeg", "png", "pgm", "ppm"].contains(&e.to_ascii_lowercase().as_str())
            })
        })
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no image files in {}", dir.display());
    Ok(files)
}

/// Reads and decodes one frame file; errors name the file.
pub fn decode_file(pipeline: &Pipeline, path: &Path) -> anyhow::Result<image::RgbImage> {
    let bytes = super::read_image(path)?;
    pipeline
        .decode(&bytes)
        .with_context(|| path.display().to_string())
}

/// Every frame of a folder (sorted by name), decoded.
pub fn decode_frames(pipeline: &Pipeline, dir: &Path) -> anyhow::Result<Vec<image::RgbImage>> {
    frame_files(dir)?
        .iter()
        .map(|p| decode_file(pipeline, p))
        .collect()
}

/// The outcome for the main track of a sequence.
#[derive(Debug, Clone)]
pub struct SequenceResult {
    pub frames: usize,
    pub track_frames: u64,
    pub blinks: Vec<crate::pipeline::liveness::Event>,
    pub motion_events: Vec<crate::pipeline::liveness::Event>,
    /// Per frame: the main track's eyelid opening (None where it was not seen or measured).
    pub eyelid: Vec<Option<f32>>,
    /// Per frame: the main track's eye sharpness (Laplacian variance).
    pub eye_sharpness: Vec<Option<f32>>,
    /// Per frame: the main track's raw signals (opening, iod, mouth, plane residual and
    /// anisotropy since the first frame), for tuning.
    pub signals: Vec<Option<[f32; 5]>>,
    /// Per frame: the main track's face-flow parallax vector (`flow.rs`; x along the eyes),
    /// where it was measured.
    pub relief: Vec<Option<[f32; 2]>>,
    pub spoof_score: f32,
    pub max_parallax: f32,
    /// Sheet, room, screen, border and room-edge frames of the main track
    /// (`LivenessTrack::presentation_frames`).
    pub presentation: [u32; 5],
    /// The first frame at which the main track was judged live (face large enough, evidence,
    /// attack score under the threshold), if any.
    pub live_at: Option<u64>,
    pub verdict: Verdict,
    /// Per obstacle, the highest confidence over the track's frames.
    pub obstacles: ObstacleScores,
    /// Frames of the main track with each obstacle over its threshold: mask, hand, glasses, hat.
    pub obstacle_frames: [usize; 4],
    pub costs: Vec<StageCosts>,
    /// Frames searched whole, and frames where the tracked faces were re-detected around
    /// their last boxes (`Stream::detections`).
    pub detections: (u64, u64),
}

/// Runs a sequence of decoded frames through a fresh stream.
pub fn run_sequence(
    pipeline: &Pipeline,
    models: &LiveModels,
    cfg: &LivenessConfig,
    thresholds: &ObstacleThresholds,
    frames: impl Iterator<Item = anyhow::Result<image::RgbImage>>,
    fps: f64,
) -> anyhow::Result<SequenceResult> {
    let mut stream = Stream::new(cfg.clone());
    let mut reports: Vec<FrameReport> = Vec::new();
    let mut costs = Vec::new();
    let mut ended = std::collections::HashMap::new();
    for (i, img) in frames.enumerate() {
        let img = img?;
        let mut r = stream.process(pipeline, models, &img, i as f64 * 1000.0 / fps)?;
        costs.push(r.costs);
        ended.extend(r.ended.drain(..));
        reports.push(r);
    }
    // The main track: seen in the most frames.
    let mut counts: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for r in &reports {
        for f in r.faces.iter().take(1) {
            *counts.entry(f.track).or_default() += 1;
        }
    }
    let main = counts
        .iter()
        .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
        .map(|(id, _)| *id);
    let mut obstacles = ObstacleScores::default();
    let mut obstacle_frames = [0usize; 4];
    let mut eyelid = Vec::with_capacity(reports.len());
    let mut eye_sharpness = Vec::with_capacity(reports.len());
    let mut signals = Vec::with_capacity(reports.len());
    let mut relief = Vec::with_capacity(reports.len());
    for r in &reports {
        let f = r.faces.iter().find(|f| Some(f.track) == main);
        relief.push(f.and_then(|f| f.observed.flow.map(|o| o.e)));
        eyelid.push(f.and_then(|f| f.liveness.eyelid));
        eye_sharpness.push(f.and_then(|f| f.observed.eyes.map(|e| e.sharpness)));
        signals.push(f.map(|f| {
            let [l, r] = [f.face.landmarks[0], f.face.landmarks[1]];
            let plane = f.liveness.plane;
            [
                f.observed.eyes.map_or(f32::NAN, |e| e.mean_opening()),
                (r[0] - l[0]).hypot(r[1] - l[1]),
                f.liveness.mouth_open.unwrap_or(f32::NAN),
                plane.map_or(f32::NAN, |p| p.residual),
                plane.map_or(f32::NAN, |p| p.anisotropy),
            ]
        }));
        if let Some(f) = f {
            let o = f.obstacles;
            obstacles.mask = obstacles.mask.max(o.mask);
            obstacles.hand = obstacles.hand.max(o.hand);
            obstacles.sunglasses = obstacles.sunglasses.max(o.sunglasses);
            obstacles.hat = obstacles.hat.max(o.hat);
            for name in o.blocking(thresholds) {
                let i = ["mask", "hand", "glasses", "hat"]
                    .iter()
                    .position(|n| *n == name)
                    .unwrap_or(0);
                obstacle_frames[i] += 1;
            }
        }
    }
    let track = main.and_then(|id| stream.track(id).or_else(|| ended.get(&id)));
    Ok(SequenceResult {
        frames: reports.len(),
        track_frames: track.map_or(0, |t| t.frames()),
        blinks: track.map(|t| t.blinks().to_vec()).unwrap_or_default(),
        motion_events: track
            .map(|t| t.motion_events().to_vec())
            .unwrap_or_default(),
        eyelid,
        eye_sharpness,
        signals,
        relief,
        spoof_score: track.map_or(0.5, |t| t.spoof_score()),
        max_parallax: track.map_or(0.0, |t| t.max_parallax()),
        presentation: track.map_or([0; 5], |t| t.presentation_frames()),
        live_at: reports.iter().find_map(|r| {
            r.faces
                .iter()
                .find(|f| Some(f.track) == main && f.judgeable && f.verdict == Verdict::Live)
                .map(|_| r.frame)
        }),
        verdict: track.map_or(Verdict::Unknown, |t| t.verdict()),
        obstacles,
        obstacle_frames,
        costs,
        detections: stream.detections(),
    })
}

pub fn run(
    pipeline: &Pipeline,
    models: &LiveModels,
    cfg: &LivenessConfig,
    thresholds: &ObstacleThresholds,
    dir: &Path,
    fps: f64,
    json: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(fps > 0.0 && fps.is_finite(), "--fps must be positive");
    let files = frame_files(dir)?;
    let frames = files.iter().map(|p| decode_file(pipeline, p));
    let r = run_sequence(pipeline, models, cfg, thresholds, frames, fps)?;
    let name = |frame: u64| {
        files
            .get(frame as usize)
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
    };
    let events = |ev: &[crate::pipeline::liveness::Event]| {
        ev.iter()
            .map(|e| json!({"t": e.t, "frame": e.frame, "file": name(e.frame)}))
            .collect::<Vec<_>>()
    };
    if json {
        return super::print_json(&json!({
            "frames": r.frames,
            "fps": fps,
            "blinks": events(&r.blinks),
            "motion_events": events(&r.motion_events),
            "eyelid": r.eyelid,
            "spoof_score": r.spoof_score,
            "max_parallax": r.max_parallax,
            "presentation": {
                "sheet_frames": r.presentation[0],
                "room_frames": r.presentation[1],
                "screen_frames": r.presentation[2],
                "border_frames": r.presentation[3],
                "room_edge_frames": r.presentation[4],
            },
            "verdict": r.verdict,
            "live_at": r.live_at.map(|f| json!({"t": f as f64 / fps, "frame": f, "file": name(f)})),
            "obstacles": {
                "mask": r.obstacles.mask,
                "hand": r.obstacles.hand,
                "sunglasses": r.obstacles.sunglasses,
                "hat": r.obstacles.hat,
            },
            "obstacle_frames": {
                "mask": r.obstacle_frames[0],
                "hand": r.obstacle_frames[1],
                "sunglasses": r.obstacle_frames[2],
                "hat": r.obstacle_frames[3],
            },
            "track_frames": r.track_frames,
            "signals": r.signals.iter().map(|s| s.map(|v| v.map(|x| if x.is_finite() { json!(x) } else { json!(null) }))).collect::<Vec<_>>(),
            "relief": r.relief,
        }));
    }
    println!(
        "{} frames at {fps} fps, main face in {}",
        r.frames, r.track_frames
    );
    for (i, o) in r.eyelid.iter().enumerate() {
        let mark = |ev: &[crate::pipeline::liveness::Event]| ev.iter().any(|e| e.frame == i as u64);
        println!(
            "{:>5} {:<14} eyelid {:>6} eye sharpness {:>7}{}{}",
            i,
            name(i as u64).unwrap_or_default(),
            o.map_or("-".to_owned(), |v| format!("{v:.3}")),
            r.eye_sharpness[i].map_or("-".to_owned(), |v| format!("{v:.0}")),
            if mark(&r.blinks) { " BLINK" } else { "" },
            if mark(&r.motion_events) {
                " MOTION"
            } else {
                ""
            },
        );
    }
    println!(
        "blinks {}, motion events {}, max parallax {:.3}, spoof score {:.2}, verdict {:?}",
        r.blinks.len(),
        r.motion_events.len(),
        r.max_parallax,
        r.spoof_score,
        r.verdict
    );
    if let Some(f) = r.live_at {
        println!("first judged live at frame {f} ({:.1} s)", f as f64 / fps);
    }
    println!(
        "surroundings: {} frames moved with the face (a held sheet), {} stayed (a room); {} \
         frames with a screen's pixel grid; {} frames with an edge that moved against the room \
         (a sheet's border), {} with one that stayed",
        r.presentation[0],
        r.presentation[1],
        r.presentation[2],
        r.presentation[3],
        r.presentation[4]
    );
    println!(
        "obstacles (max): mask {:.2}, hand {:.2}, sunglasses {:.2}, hat {:.2}",
        r.obstacles.mask, r.obstacles.hand, r.obstacles.sunglasses, r.obstacles.hat
    );
    Ok(())
}

/// `facegate bench liveness`: per-stage cost per frame over a clip (decode excluded).
pub fn bench(
    pipeline: &Pipeline,
    models: &LiveModels,
    cfg: &LivenessConfig,
    thresholds: &ObstacleThresholds,
    dir: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let frames = decode_frames(pipeline, dir)?;
    // One warm-up pass so every plan is built, then the measured pass.
    run_sequence(
        pipeline,
        models,
        cfg,
        thresholds,
        frames.iter().take(3).cloned().map(Ok),
        10.0,
    )?;
    let r = run_sequence(
        pipeline,
        models,
        cfg,
        thresholds,
        frames.iter().cloned().map(Ok),
        10.0,
    )?;
    type Stage = (&'static str, fn(&StageCosts) -> f64);
    let stages: [Stage; 7] = [
        ("detect", |c| c.detect_ms),
        ("eyes", |c| c.eyes_ms),
        ("mesh", |c| c.mesh_ms),
        ("mask", |c| c.mask_ms),
        ("palm", |c| c.palm_ms),
        ("cues", |c| c.cues_ms),
        ("total", |c| {
            c.detect_ms + c.eyes_ms + c.mesh_ms + c.mask_ms + c.palm_ms + c.cues_ms
        }),
    ];
    let table: Vec<(String, f64, f64, f64, usize)> = stages
        .iter()
        .map(|(name, f)| {
            let all: Vec<f64> = r.costs.iter().map(f).collect();
            let ran: Vec<f64> = all.iter().copied().filter(|v| *v > 0.0).collect();
            let mean = all.iter().sum::<f64>() / all.len().max(1) as f64;
            (
                (*name).to_owned(),
                super::bench::percentile(&ran, 50.0),
                super::bench::percentile(&ran, 99.0),
                mean,
                ran.len(),
            )
        })
        .collect();
    if json {
        let stages: serde_json::Map<String, serde_json::Value> = table
            .iter()
            .map(|(n, p50, p99, mean, runs)| {
                (n.clone(), json!({"p50_ms": p50, "p99_ms": p99, "mean_per_frame_ms": mean, "frames_run": runs}))
            })
            .collect();
        return super::print_json(&json!({"frames": r.frames, "stages": stages}));
    }
    println!(
        "liveness stack over {} frames of {} ({} model thread(s))",
        r.frames,
        dir.display(),
        super::model_threads()
    );
    println!(
        "{:<8} {:>10} {:>10} {:>16} {:>11}",
        "stage", "p50 ms", "p99 ms", "mean/frame ms", "frames run"
    );
    for (n, p50, p99, mean, runs) in &table {
        println!("{n:<8} {p50:>10.2} {p99:>10.2} {mean:>16.2} {runs:>11}");
    }
    Ok(())
}
