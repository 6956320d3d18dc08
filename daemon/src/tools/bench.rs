//! `facegate bench`: per-stage latency (decode, detect, align, quality, embed, end-to-end)
//! one frame at a time (model runs on `pipeline.threads`), p50 / p99 and frames/s, per model
//! precision. Prints a table or JSON.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use crate::pipeline::models::Precision;
use crate::pipeline::{Pipeline, PipelineError, align, largest, quality};

/// The default bench input: one face in a 640x480 JPEG (provenance in daemon/fixtures/README.md).
pub const DEFAULT_IMAGE: &[u8] = include_bytes!("../../fixtures/face_640x480.jpg");

const STAGES: [&str; 5] = ["decode", "detect", "align", "quality", "embed"];
const WARMUP: usize = 3;

#[derive(Debug)]
pub struct Options {
    pub images: Option<PathBuf>,
    pub iterations: usize,
    pub json: bool,
}

#[derive(Debug)]
pub struct Run {
    pub precision: Precision,
    pub load_ms: f64,
    /// Milliseconds per frame for each stage, then end-to-end.
    pub stages: Vec<(&'static str, Vec<f64>)>,
    pub end_to_end: Vec<f64>,
}

fn load_images(dir: &Option<PathBuf>) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let Some(dir) = dir else {
        return Ok(vec![(
            "face_640x480.jpg (built in)".into(),
            DEFAULT_IMAGE.to_vec(),
        )]);
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let images = paths
        .into_iter()
        .map(|p| Ok((p.display().to_string(), super::read_image(&p)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!images.is_empty(), "{} holds no images", dir.display());
    Ok(images)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

pub fn measure(
    pipeline: &Pipeline,
    images: &[(String, Vec<u8>)],
    iterations: usize,
) -> anyhow::Result<Run> {
    let mut stages: Vec<(&'static str, Vec<f64>)> =
        STAGES.iter().map(|s| (*s, Vec::new())).collect();
    let mut end_to_end = Vec::new();
    for round in 0..WARMUP + iterations {
        for (name, bytes) in images {
            let start = Instant::now();
            let t = start;
            let img = pipeline.decode(bytes).with_context(|| name.clone())?;
            let decode = ms(t);
            let t = Instant::now();
            let faces = pipeline.detect(&img)?;
            let detect = ms(t);
            let face = largest(&faces)
                .ok_or(PipelineError::NoFace)
                .with_context(|| name.clone())?;
            let t = Instant::now();
            let (_, crop) =
                align::align(&img, &face.landmarks).ok_or(PipelineError::DegenerateLandmarks)?;
            let align_ms = ms(t);
            let t = Instant::now();
            let q = quality::assess(face, &crop, &pipeline.config().quality);
            let quality_ms = ms(t);
            let t = Instant::now();
            let e = pipeline.embedder().embed(&crop)?;
            let embed = ms(t);
            let total = ms(start);
            std::hint::black_box((q, e));
            if round >= WARMUP {
                for (slot, v) in stages
                    .iter_mut()
                    .zip([decode, detect, align_ms, quality_ms, embed])
                {
                    slot.1.push(v);
                }
                end_to_end.push(total);
            }
        }
    }
    Ok(Run {
        precision: pipeline.config().precision,
        load_ms: 0.0,
        stages,
        end_to_end,
    })
}

pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

fn run_json(r: &Run) -> serde_json::Value {
    let mean = r.end_to_end.iter().sum::<f64>() / r.end_to_end.len().max(1) as f64;
    let stages: serde_json::Map<String, serde_json::Value> = r
        .stages
        .iter()
        .map(|(name, v)| {
            (
                (*name).to_owned(),
                json!({"p50_ms": percentile(v, 50.0), "p99_ms": percentile(v, 99.0)}),
            )
        })
        .collect();
    json!({
        "end_to_end": {
            "p50_ms": percentile(&r.end_to_end, 50.0),
            "p99_ms": percentile(&r.end_to_end, 99.0),
            "fps": 1000.0 / mean,
        },
        "stages": stages,
        "precision": r.precision.as_str(),
        "threads": super::model_threads(),
        "frames": r.end_to_end.len(),
        "load_ms": r.load_ms,
    })
}

/// Runs every precision in `precisions` (the first is the configured default).
pub fn run(
    opts: &Options,
    precisions: &[Precision],
    load: impl Fn(Precision) -> anyhow::Result<Pipeline>,
) -> anyhow::Result<()> {
    anyhow::ensure!(opts.iterations > 0, "--iterations must be at least 1");
    let images = load_images(&opts.images)?;
    let mut runs = Vec::new();
    for &p in precisions {
        let t = Instant::now();
        let pipeline = load(p)?;
        let load_ms = ms(t);
        let mut run = measure(&pipeline, &images, opts.iterations)?;
        run.load_ms = load_ms;
        runs.push(run);
    }
    if opts.json {
        let mut doc = run_json(&runs[0]);
        let variants: serde_json::Map<String, serde_json::Value> = runs
            .iter()
            .map(|r| (r.precision.as_str().to_owned(), run_json(r)))
            .collect();
        doc["variants"] = serde_json::Value::Object(variants);
        return super::print_json(&doc);
    }
    println!(
        "{} image(s) x {} iterations, {} model thread(s): {}",
        images.len(),
        opts.iterations,
        super::model_threads(),
        images
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{:<10} {:<12} {:>9} {:>9}",
        "precision", "stage", "p50 ms", "p99 ms"
    );
    for r in &runs {
        for (name, v) in &r.stages {
            println!(
                "{:<10} {:<12} {:>9.2} {:>9.2}",
                r.precision.as_str(),
                name,
                percentile(v, 50.0),
                percentile(v, 99.0)
            );
        }
        let mean = r.end_to_end.iter().sum::<f64>() / r.end_to_end.len() as f64;
        println!(
            "{:<10} {:<12} {:>9.2} {:>9.2}   {:.1} frames/s, model load {:.0} ms",
            r.precision.as_str(),
            "end-to-end",
            percentile(&r.end_to_end, 50.0),
            percentile(&r.end_to_end, 99.0),
            1000.0 / mean,
            r.load_ms
        );
    }
    Ok(())
}
