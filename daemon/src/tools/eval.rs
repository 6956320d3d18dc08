//! `facegate eval --dataset DIR`: one folder per identity; every image is embedded (largest
//! face), every genuine and impostor pair is scored, and leave-one-out rank-1 is measured.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use super::metrics;
use crate::pipeline::embed::Embedding;
use crate::pipeline::{Pipeline, PipelineError};

const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "pgm", "ppm"];

#[derive(Debug)]
pub struct Report {
    pub identities: usize,
    pub images: usize,
    pub failed_to_detect: usize,
    pub genuine_pairs: usize,
    pub impostor_pairs: usize,
    pub eer: f32,
    pub tar_at_far_1e2: f32,
    pub tar_at_far_1e3: f32,
    pub threshold_at_far_1e3: f32,
    pub rank1: f32,
    pub genuine_mean: f32,
    pub impostor_max: f32,
    pub seconds: f32,
}

impl Report {
    pub fn to_json(&self, precision: &str) -> serde_json::Value {
        json!({
            "identities": self.identities,
            "images": self.images,
            "failed_to_detect": self.failed_to_detect,
            "genuine_pairs": self.genuine_pairs,
            "impostor_pairs": self.impostor_pairs,
            "eer": self.eer,
            "tar_at_far": {"1e-2": self.tar_at_far_1e2, "1e-3": self.tar_at_far_1e3},
            "threshold_at_far_1e-3": self.threshold_at_far_1e3,
            "rank1": self.rank1,
            "genuine_mean": self.genuine_mean,
            "impostor_max": self.impostor_max,
            "precision": precision,
            "seconds": self.seconds,
        })
    }
}

/// The dataset's images, grouped by identity folder (sorted, so results are reproducible).
pub fn list_dataset(dir: &Path) -> anyhow::Result<Vec<(String, Vec<PathBuf>)>> {
    let mut identities = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read dataset {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        let mut images: Vec<PathBuf> = std::fs::read_dir(&path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        images.sort();
        if !images.is_empty() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            identities.push((name, images));
        }
    }
    identities.sort();
    anyhow::ensure!(
        !identities.is_empty(),
        "{} holds no identity folders with images",
        dir.display()
    );
    Ok(identities)
}

pub fn evaluate(pipeline: &Pipeline, dir: &Path) -> anyhow::Result<Report> {
    let started = Instant::now();
    let identities = list_dataset(dir)?;
    let mut ids = Vec::new();
    let mut embeddings: Vec<Embedding> = Vec::new();
    let mut images = 0;
    let mut failed = 0;
    for (id, (name, paths)) in identities.iter().enumerate() {
        for path in paths {
            images += 1;
            let bytes = super::read_image(path)?;
            match pipeline.analyze_largest(&bytes) {
                Ok((_, a)) => {
                    ids.push(id);
                    embeddings.push(a.embedding);
                }
                Err(PipelineError::NoFace) => {
                    failed += 1;
                    tracing::warn!(identity = %name, image = %path.display(), "no face detected");
                }
                Err(e @ (PipelineError::Decode(_) | PipelineError::DegenerateLandmarks)) => {
                    failed += 1;
                    tracing::warn!(identity = %name, image = %path.display(), error = %e, "image failed");
                }
                Err(e) => return Err(e).with_context(|| path.display().to_string()),
            }
        }
    }
    let n = embeddings.len();
    let mut sim = vec![0f32; n * n];
    for i in 0..n {
        for j in i..n {
            let s = embeddings[i].cosine(&embeddings[j]);
            sim[i * n + j] = s;
            sim[j * n + i] = s;
        }
    }
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for i in 0..n {
        for j in i + 1..n {
            if ids[i] == ids[j] {
                genuine.push(sim[i * n + j])
            } else {
                impostor.push(sim[i * n + j])
            }
        }
    }
    let t3 = metrics::threshold_at_far(&impostor, 1e-3);
    let t2 = metrics::threshold_at_far(&impostor, 1e-2);
    Ok(Report {
        identities: identities.len(),
        images,
        failed_to_detect: failed,
        genuine_pairs: genuine.len(),
        impostor_pairs: impostor.len(),
        eer: metrics::eer(&genuine, &impostor),
        tar_at_far_1e2: metrics::tar_above(&genuine, t2),
        tar_at_far_1e3: metrics::tar_above(&genuine, t3),
        threshold_at_far_1e3: t3,
        rank1: metrics::rank1(&ids, |i, j| sim[i * n + j]),
        genuine_mean: genuine.iter().sum::<f32>() / genuine.len().max(1) as f32,
        impostor_max: impostor.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        seconds: started.elapsed().as_secs_f32(),
    })
}

pub fn run(pipeline: &Pipeline, dir: &Path, json: bool) -> anyhow::Result<()> {
    let precision = pipeline.config().precision.as_str();
    let r = evaluate(pipeline, dir)?;
    if json {
        return super::print_json(&r.to_json(precision));
    }
    println!(
        "dataset {} ({precision}, detector {})",
        dir.display(),
        pipeline.detector().name()
    );
    let rows: [(&str, String); 12] = [
        ("identities", r.identities.to_string()),
        ("images", r.images.to_string()),
        ("failed to detect", r.failed_to_detect.to_string()),
        ("genuine pairs", r.genuine_pairs.to_string()),
        ("impostor pairs", r.impostor_pairs.to_string()),
        ("EER", format!("{:.2} %", r.eer * 100.0)),
        (
            "TAR @ FAR 1e-2",
            format!("{:.2} %", r.tar_at_far_1e2 * 100.0),
        ),
        (
            "TAR @ FAR 1e-3",
            format!("{:.2} %", r.tar_at_far_1e3 * 100.0),
        ),
        (
            "threshold @ FAR 1e-3",
            format!("{:.4}", r.threshold_at_far_1e3),
        ),
        (
            "rank-1 (leave-one-out)",
            format!("{:.2} %", r.rank1 * 100.0),
        ),
        (
            "genuine mean / impostor max",
            format!("{:.3} / {:.3}", r.genuine_mean, r.impostor_max),
        ),
        ("time", format!("{:.1} s", r.seconds)),
    ];
    for (k, v) in rows {
        println!("  {k:<28} {v:>14}");
    }
    Ok(())
}
