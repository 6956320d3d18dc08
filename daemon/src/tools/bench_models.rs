//! `facegate bench models`: each shipped model alone in tract, at the input shape the pipeline
//! gives it, on the configured threads: p50 / p99 per run. `models/tools/runtimes.py` runs it
//! next to onnxruntime on the same files and inputs.

use std::time::Instant;

use serde_json::json;
use tract_onnx::prelude::*;

use crate::pipeline::models::{self, ModelStore, Role};

#[derive(Debug)]
pub struct Options {
    pub iterations: usize,
    /// Only the model of this manifest name.
    pub model: Option<String>,
    pub threads: usize,
    pub json: bool,
}

/// The input shape the pipeline runs each role at (CenterFace: a 640x480 frame at
/// `detector.max_side` 320, and two of the crops around a tracked face).
fn shapes(role: Role) -> Vec<Vec<usize>> {
    match role {
        Role::Centerface => vec![
            vec![1, 3, 256, 320],
            vec![1, 3, 192, 192],
            vec![1, 3, 128, 128],
        ],
        Role::Blazeface => vec![vec![1, 192, 192, 3]],
        Role::Embedder => vec![vec![1, 112, 112, 3]],
        Role::Eyes => vec![vec![1, 64, 64, 3]],
        Role::Mask => vec![vec![1, 224, 224, 3]],
        Role::Palm => vec![vec![1, 256, 256, 3]],
        Role::Mesh => vec![vec![1, 192, 192, 3]],
    }
}

pub fn run(store: &ModelStore, opts: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(opts.iterations > 0, "--iterations must be at least 1");
    let mut rows = Vec::new();
    let entries: Vec<_> = store
        .entries()
        .iter()
        .filter(|e| opts.model.as_deref().is_none_or(|m| m == e.name))
        .collect();
    if let Some(m) = &opts.model {
        anyhow::ensure!(!entries.is_empty(), "no model named {m} in the manifest");
    }
    for entry in entries {
        for shape in shapes(entry.role) {
            let plan = models::plan(store.parse(entry)?, &entry.name, &shape)?;
            // Values in the range the pipeline feeds (0..255 or -1..1 both fit in -1..255).
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|i| ((i * 7919) % 256) as f32 / 2.0).collect();
            let input = Tensor::from_shape(&shape, &data)?;
            let mut times = Vec::with_capacity(opts.iterations);
            for i in 0..opts.iterations + 3 {
                let t = Instant::now();
                std::hint::black_box(models::run(&plan, input.clone())?);
                if i >= 3 {
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            rows.push((entry.name.clone(), entry.file.clone(), shape, times));
        }
    }
    let pct = super::bench::percentile;
    if opts.json {
        let doc: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, file, shape, t)| {
                json!({
                    "model": name,
                    "file": file,
                    "shape": shape,
                    "p50_ms": pct(t, 50.0),
                    "p99_ms": pct(t, 99.0),
                    "mean_ms": t.iter().sum::<f64>() / t.len() as f64,
                })
            })
            .collect();
        return super::print_json(&json!({
            "threads": opts.threads,
            "iterations": opts.iterations,
            "models": doc,
        }));
    }
    println!(
        "tract, {} thread(s), {} runs each after 3 warm-up runs",
        opts.threads, opts.iterations
    );
    println!(
        "{:<22} {:<18} {:>9} {:>9}",
        "model", "input", "p50 ms", "p99 ms"
    );
    for (name, _, shape, t) in &rows {
        let dims = shape
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("x");
        println!(
            "{:<22} {:<18} {:>9.2} {:>9.2}",
            name,
            dims,
            pct(t, 50.0),
            pct(t, 99.0)
        );
    }
    Ok(())
}
