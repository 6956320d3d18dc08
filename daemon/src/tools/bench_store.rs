//! `facegate bench store`: the real store at scale — bulk import, disk size, startup from the
//! sealed snapshot and by rebuild (each in a fresh process, as the daemon starts), 1:N identify
//! through the store (index + record confirmation), audit append latency. Synthetic templates:
//! random unit vectors, queried with noise.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use super::bench_index::{Rng, ms, peak_rss_mb, rss_mb};
use crate::store::keys::KeySources;
use crate::store::records::{AuditAction, AuditRow, NewTemplate, now_ms};
use crate::store::{IndexOrigin, SNAPSHOT_FILE, Store, StoreConfig};

const SEED: u64 = 0x5eed_fa11;
const CLIENT: &str = "bench";

#[derive(Debug)]
pub struct Options {
    pub n: usize,
    pub dim: usize,
    pub batch: usize,
    pub queries: usize,
    pub store: StoreConfig,
    pub json: bool,
}

fn templates(n: usize, dim: usize) -> impl Iterator<Item = Vec<f32>> {
    let mut rng = Rng(SEED);
    (0..n).map(move |_| rng.unit(dim))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn disk_mb(dir: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| match e.metadata() {
                        Ok(m) if m.is_dir() => walk(&e.path()),
                        Ok(m) => m.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(dir) as f64 / 1e6
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("facegate-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = measure(opts, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    if opts.json {
        return super::print_json(&report);
    }
    let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
    let o = |phase: &str, k: &str| report[phase][k].as_f64().unwrap_or(f64::NAN);
    println!(
        "store: {} templates x {} ({:?}), {} per transaction",
        opts.n, opts.dim, opts.store.quantization, opts.batch
    );
    println!("{:<34} {:>12}", "metric", "value");
    let rows = [
        ("bulk import (enrollments/s)", f("import_per_s")),
        ("disk: records + snapshot (MB)", f("disk_mb")),
        ("snapshot size (MB)", f("snapshot_mb")),
        ("start from snapshot (ms)", o("open_snapshot", "open_ms")),
        ("  RSS after start (MB)", o("open_snapshot", "rss_mb")),
        ("start by rebuild (ms)", o("open_rebuild", "open_ms")),
        ("  RSS after start (MB)", o("open_rebuild", "rss_mb")),
        (
            "  peak RSS, start + identify (MB)",
            o("open_rebuild", "peak_rss_mb"),
        ),
        ("identify p50 (ms)", o("open_snapshot", "identify_p50_ms")),
        ("identify p99 (ms)", o("open_snapshot", "identify_p99_ms")),
        (
            "identify top-1 correct",
            o("open_snapshot", "identify_correct"),
        ),
        (
            "  RSS after the identifications (MB)",
            o("open_snapshot", "rss_after_identify_mb"),
        ),
        ("peak RSS of the bulk import (MB)", f("import_peak_rss_mb")),
        ("audit append p50 (ms, fsync)", f("audit_p50_ms")),
        ("audit append p99 (ms, fsync)", f("audit_p99_ms")),
    ];
    for (name, v) in rows {
        println!("{name:<34} {v:>12.2}");
    }
    Ok(())
}

fn measure(opts: &Options, dir: &Path) -> anyhow::Result<serde_json::Value> {
    let (store, _) = Store::open(dir, &KeySources::default(), &opts.store, opts.dim)?;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(opts.batch);
    for (i, t) in templates(opts.n, opts.dim).enumerate() {
        batch.push(NewTemplate {
            user_id: format!("user-{i:07}"),
            template: t,
            quality: 0.9,
            liveness_verified: true,
        });
        if batch.len() == opts.batch {
            store.enroll_many(CLIENT, std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        store.enroll_many(CLIENT, batch)?;
    }
    let import_s = started.elapsed().as_secs_f64();
    store.save_snapshot()?;
    let mut audit = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        store.records().audit(&AuditRow {
            at_ms: now_ms(),
            action: AuditAction::Authenticate,
            client: CLIENT.into(),
            user_id: Some(format!("user-{i:07}")),
            session_id: None,
            success: true,
            reason: "match_found".into(),
            confidence: Some(0.8),
            processing_ms: 40.0,
        })?;
        audit.push(ms(t));
    }
    audit.sort_by(f64::total_cmp);
    // The snapshot must reflect the epoch: audit rows do not move it, so it stays current.
    drop(store);
    let snapshot_mb = std::fs::metadata(dir.join(SNAPSHOT_FILE))?.len() as f64 / 1e6;
    let disk = disk_mb(dir);
    let open_snapshot = open_in_child(opts, dir)?;
    std::fs::remove_file(dir.join(SNAPSHOT_FILE))?;
    let open_rebuild = open_in_child(opts, dir)?;
    Ok(json!({
        "n": opts.n,
        "dim": opts.dim,
        "quantization": opts.store.quantization,
        "import_per_s": opts.n as f64 / import_s,
        "import_peak_rss_mb": peak_rss_mb(),
        "disk_mb": disk,
        "snapshot_mb": snapshot_mb,
        "audit_p50_ms": percentile(&audit, 0.5),
        "audit_p99_ms": percentile(&audit, 0.99),
        "open_snapshot": open_snapshot,
        "open_rebuild": open_rebuild,
    }))
}

/// Starts the store in a fresh `facegate` process, as the daemon would, and reads its report.
fn open_in_child(opts: &Options, dir: &Path) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe().context("cannot find the facegate binary")?;
    let out = std::process::Command::new(exe)
        .args(["bench", "store", "--json", "--queries"])
        .arg(opts.queries.to_string())
        .arg("--dim")
        .arg(opts.dim.to_string())
        .arg("--open-only")
        .arg(dir)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "the start measurement failed");
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The child side: open, then identify noisy copies of enrolled templates.
pub fn open_only(opts: &Options, dir: &Path) -> anyhow::Result<()> {
    let (store, report) = Store::open(dir, &KeySources::default(), &opts.store, opts.dim)?;
    let rss = rss_mb();
    let n = report.enrollments;
    let step = (n / opts.queries.max(1)).max(1);
    let mut rng = Rng(SEED ^ 0xabcd);
    let (mut times, mut correct, mut asked) = (Vec::new(), 0usize, 0usize);
    for (i, t) in templates(n, opts.dim).enumerate().step_by(step) {
        let noisy: Vec<f32> = t
            .iter()
            .zip(rng.unit(opts.dim))
            .map(|(a, b)| a + 0.05 * b)
            .collect();
        let started = Instant::now();
        let (best, _) = store.identify(CLIENT, &noisy, 5, 0.5)?;
        times.push(ms(started));
        asked += 1;
        correct += usize::from(best.is_some_and(|m| m.user_id == format!("user-{i:07}")));
    }
    times.sort_by(f64::total_cmp);
    super::print_json(&json!({
        "open_ms": report.open_ms,
        "origin": match report.index { IndexOrigin::Snapshot => "snapshot".to_owned(), IndexOrigin::Rebuilt { reason } => format!("rebuilt: {reason}") },
        "enrollments": n,
        "rss_mb": rss,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_identify_mb": rss_mb(),
        "identify_p50_ms": percentile(&times, 0.5),
        "identify_p99_ms": percentile(&times, 0.99),
        "identify_correct": correct as f64 / asked.max(1) as f64,
    }))
}
