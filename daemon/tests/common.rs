#![allow(clippy::unwrap_used)]
//! Shared helpers for the data-driven tests: paths to ../shared/data and the real binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// `../shared` beside the checkout (CI provides it there).
pub fn shared() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    assert!(
        p.join("data").is_dir(),
        "shared data not found at {}",
        p.display()
    );
    p
}

pub fn data(rel: &str) -> PathBuf {
    shared().join("data").join(rel)
}

pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// Runs the real `facegate` binary with a clean FACEGATE_* environment.
pub fn facegate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facegate"));
    cmd.args(args).env_remove("JOURNAL_STREAM");
    for (k, _) in std::env::vars() {
        if k.starts_with("FACEGATE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the facegate binary runs")
}

pub fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "facegate failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("facegate-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A fresh temporary folder holding files `first..=last` (`NNNN.jpg`) of a shared clip: a
/// stretch of it replayed on its own.
pub fn clip_excerpt(tag: &str, clip: &str, first: u32, last: u32) -> PathBuf {
    let dir = tempdir(tag);
    for i in first..=last {
        let name = format!("{i:04}.jpg");
        std::fs::copy(data(&format!("video/{clip}")).join(&name), dir.join(&name))
            .expect("clip frame");
    }
    dir
}

/// The fp32 pipeline with default detector, quality and limits, from the shipped models.
pub fn fp32_pipeline(
    store: &facegate_daemon::pipeline::models::ModelStore,
) -> facegate_daemon::pipeline::Pipeline {
    use facegate_daemon::pipeline::{PipelineConfig, models::Precision};
    facegate_daemon::pipeline::Pipeline::load(
        store,
        PipelineConfig {
            detector: Default::default(),
            quality: Default::default(),
            limits: Default::default(),
            precision: Precision::Fp32,
            schedule: Default::default(),
        },
    )
    .unwrap()
}
