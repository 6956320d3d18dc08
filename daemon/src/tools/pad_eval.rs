//! `facegate pad-eval`: presentation-attack detection measured ISO/IEC 30107-3 style.
//! Attack presentations: SYNTHETIC attacks (`attack.rs`) rendered from every given photo, per
//! attack type; APCER = share of attack sequences the liveness verdict accepts as live.
//! Bona fide presentations: windows of the given real clips; BPCER = share of windows not
//! accepted as live. Each sequence is a fresh stream, judged on its own frames only.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use super::attack::{self, AttackKind};
use super::liveness::{decode_file, decode_frames, frame_files, run_sequence};
use crate::pipeline::liveness::{LivenessConfig, Verdict};
use crate::pipeline::obstacles::ObstacleThresholds;
use crate::pipeline::stream::LiveModels;
use crate::pipeline::{Pipeline, largest};

#[derive(Debug)]
pub struct Options {
    pub photos: Vec<PathBuf>,
    pub clips: Vec<PathBuf>,
    pub frames: usize,
    pub fps: f64,
    pub seeds: u64,
    pub window_stride: usize,
    pub json: bool,
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

pub fn run(
    pipeline: &Pipeline,
    models: &LiveModels,
    cfg: &LivenessConfig,
    thresholds: &ObstacleThresholds,
    opts: &Options,
) -> anyhow::Result<()> {
    let mut attacks: Vec<(AttackKind, Tally)> = AttackKind::ALL
        .iter()
        .map(|k| (*k, Tally::default()))
        .collect();
    let mut accepted_attacks = Vec::new();
    for path in photo_files(&opts.photos)? {
        let img = decode_file(pipeline, &path)?;
        let faces = pipeline.detect(&img)?;
        let Some(face) = largest(&faces) else {
            tracing::warn!(photo = %path.display(), "no face in the photo: no attack made from it");
            continue;
        };
        for (kind, tally) in attacks.iter_mut() {
            for seed in 0..opts.seeds {
                let frames = attack::generate(
                    &img,
                    face.bbox,
                    *kind,
                    opts.frames,
                    opts.fps as f32,
                    seed + 1,
                );
                let r = run_sequence(
                    pipeline,
                    models,
                    cfg,
                    thresholds,
                    frames.into_iter().map(Ok),
                    opts.fps,
                )?;
                tally.sequences += 1;
                tally.score_sum += f64::from(r.spoof_score);
                tally.with_blink += usize::from(!r.blinks.is_empty());
                tally.with_motion += usize::from(!r.motion_events.is_empty());
                tally.spoof_verdicts += usize::from(r.verdict == Verdict::Spoof);
                tally.no_face += usize::from(r.track_frames == 0);
                if r.verdict == Verdict::Live {
                    tally.accepted += 1;
                    accepted_attacks.push(format!(
                        "{} {} seed {}",
                        kind.name(),
                        path.display(),
                        seed + 1
                    ));
                }
            }
        }
    }
    let mut bona = Tally::default();
    let mut rejected_windows = Vec::new();
    for clip in &opts.clips {
        let decoded = decode_frames(pipeline, clip)?;
        let window = opts.frames.min(decoded.len());
        let mut start = 0;
        while start + window <= decoded.len() {
            let r = run_sequence(
                pipeline,
                models,
                cfg,
                thresholds,
                decoded[start..start + window].iter().cloned().map(Ok),
                opts.fps,
            )?;
            bona.sequences += 1;
            bona.score_sum += f64::from(r.spoof_score);
            bona.with_blink += usize::from(!r.blinks.is_empty());
            bona.with_motion += usize::from(!r.motion_events.is_empty());
            bona.spoof_verdicts += usize::from(r.verdict == Verdict::Spoof);
            bona.no_face += usize::from(r.track_frames == 0);
            if r.verdict == Verdict::Live {
                bona.accepted += 1;
            } else {
                rejected_windows.push(format!(
                    "{} frames {}..{}: {:?}",
                    clip.display(),
                    start,
                    start + window,
                    r.verdict
                ));
            }
            start += opts.window_stride.max(1);
        }
    }
    let total_attacks: Tally = attacks.iter().fold(Tally::default(), |mut a, (_, t)| {
        a.sequences += t.sequences;
        a.accepted += t.accepted;
        a
    });
    let bpcer = 1.0 - bona.rate();
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
        return super::print_json(&json!({
            "synthetic_attacks": per_kind,
            "apcer_all": total_attacks.rate(),
            "accepted_attacks": accepted_attacks,
            "bona_fide": {
                "windows": bona.sequences,
                "accepted": bona.accepted,
                "bpcer": bpcer,
                "with_blink": bona.with_blink,
                "with_motion": bona.with_motion,
                "mean_spoof_score": bona.score_sum / bona.sequences.max(1) as f64,
                "rejected": rejected_windows,
            },
            "frames_per_sequence": opts.frames,
            "fps": opts.fps,
        }));
    }
    println!(
        "PAD evaluation: {} frames per sequence at {} fps; attacks are SYNTHETIC (facegate attack)",
        opts.frames, opts.fps
    );
    println!(
        "{:<22} {:>9} {:>9} {:>8} {:>7} {:>7} {:>10}",
        "presentation", "sequences", "accepted", "rate", "blink", "motion", "mean score"
    );
    for (k, t) in &attacks {
        println!(
            "{:<22} {:>9} {:>9} {:>7.1}% {:>7} {:>7} {:>10.2}",
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
        "{:<22} {:>9} {:>9} {:>7.1}%   (APCER, all synthetic attacks)",
        "all attacks",
        total_attacks.sequences,
        total_attacks.accepted,
        100.0 * total_attacks.rate()
    );
    println!(
        "{:<22} {:>9} {:>9} {:>7.1}% {:>7} {:>7} {:>10.2}   (BPCER = {:.1}%)",
        "bona fide windows",
        bona.sequences,
        bona.accepted,
        100.0 * bona.rate(),
        bona.with_blink,
        bona.with_motion,
        bona.score_sum / bona.sequences.max(1) as f64,
        100.0 * bpcer
    );
    for a in &accepted_attacks {
        println!("  accepted attack: {a}");
    }
    for w in &rejected_windows {
        println!("  rejected bona fide: {w}");
    }
    Ok(())
}

/// Writes one synthetic attack sequence as PNG frames (0001.png, ...).
pub fn write_attack(
    pipeline: &Pipeline,
    photo: &Path,
    kind: AttackKind,
    out: &Path,
    frames: usize,
    fps: f64,
    seed: u64,
) -> anyhow::Result<()> {
    let bytes = super::read_image(photo)?;
    let img = pipeline.decode(&bytes)?;
    let faces = pipeline.detect(&img)?;
    let face = largest(&faces).with_context(|| format!("no face in {}", photo.display()))?;
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    for (i, f) in attack::generate(&img, face.bbox, kind, frames, fps as f32, seed)
        .iter()
        .enumerate()
    {
        let path = out.join(format!("{:04}.png", i + 1));
        f.save(&path).with_context(|| path.display().to_string())?;
    }
    println!(
        "{frames} frames of a SYNTHETIC {} attack from {} in {}",
        kind.name(),
        photo.display(),
        out.display()
    );
    Ok(())
}
