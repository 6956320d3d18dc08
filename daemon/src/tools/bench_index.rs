//! `facegate bench index`: the vector index at scale, per quantization: insert rate, search
//! p50/p99, recall@1 against exact f32 brute force, memory, sealed snapshot save/load.
//!
//! Data: `n` synthetic unit templates (Gaussian, 192-d) for `n` people; each query is an
//! enrolled template plus noise at cosine ~0.85 to it (the ORL genuine mean), so recall@1 asks
//! whether the index returns the exact nearest template, as 1:N matching needs.

use std::time::Instant;

use serde_json::json;

use super::bench::percentile;
use crate::store::crypto::{Keyring, SecretKey};
use crate::store::index::{Quantization, VectorIndex};
use crate::store::records::Enrollment;

#[derive(Debug)]
pub struct Options {
    pub n: usize,
    pub dim: usize,
    pub queries: usize,
    pub search_expansion: usize,
    pub json: bool,
}

pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
    pub(crate) fn unit(&mut self, dim: usize) -> Vec<f32> {
        normalize((0..dim).map(|_| self.normal()).collect())
    }
}

fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

pub(crate) fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

/// The process's peak RSS so far.
pub(crate) fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

pub(crate) fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.n > 0 && opts.dim > 0 && opts.queries > 0,
        "--n, --dim and --queries must be positive"
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let enrollments: Vec<Enrollment> = (0..opts.n)
        .map(|i| Enrollment {
            id: format!("{i:08x}"),
            label: i as u64 + 1,
            client: "bench".into(),
            user_id: format!("user-{i}"),
            template: rng.unit(opts.dim),
            quality: 1.0,
            liveness_verified: true,
            created_ms: 0,
            updated_ms: 0,
            version: 1,
        })
        .collect();
    // Probes: enrolled template + noise, cosine ~0.85.
    let probes: Vec<(usize, Vec<f32>)> = (0..opts.queries)
        .map(|_| {
            let i = (rng.next() % opts.n as u64) as usize;
            let noise = rng.unit(opts.dim);
            let q = enrollments[i]
                .template
                .iter()
                .zip(&noise)
                .map(|(t, e)| 0.85 * t + 0.527 * e)
                .collect();
            (i, normalize(q))
        })
        .collect();
    // Exact top-1 by f32 brute force.
    let truth: Vec<u64> = probes
        .iter()
        .map(|(_, q)| {
            enrollments
                .iter()
                .map(|e| {
                    (
                        e.label,
                        e.template.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(),
                    )
                })
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(l, _)| l)
        })
        .collect();
    let key = Keyring::new(SecretKey::generate()?, None);
    let mut variants = serde_json::Map::new();
    let mut rows = Vec::new();
    for q in [Quantization::F32, Quantization::F16, Quantization::I8] {
        let rss_before = rss_mb();
        let t = Instant::now();
        let index = VectorIndex::rebuild(opts.dim, q, opts.search_expansion, enrollments.iter())?;
        let build_ms = ms(t);
        let rss_after = rss_mb();
        let mut lat = Vec::with_capacity(probes.len());
        let mut hits = 0usize;
        for ((_, probe), want) in probes.iter().zip(&truth) {
            let t = Instant::now();
            let r = index.search("bench", probe, 1)?;
            lat.push(ms(t));
            if r.first().is_some_and(|h| h.label == *want) {
                hits += 1;
            }
        }
        let t = Instant::now();
        let sealed = index.to_sealed_snapshot(1, &key)?;
        let save_ms = ms(t);
        let t = Instant::now();
        let restored = VectorIndex::from_sealed_snapshot(&sealed, &key, 1, opts.search_expansion)?;
        let load_ms = ms(t);
        anyhow::ensure!(
            restored.len() == index.len(),
            "snapshot round trip lost entries"
        );
        drop(restored);
        let name = format!("{q:?}").to_lowercase();
        let v = json!({
            "search_p50_ms": percentile(&lat, 50.0),
            "search_p99_ms": percentile(&lat, 99.0),
            "recall_at_1": hits as f64 / probes.len() as f64,
            "insert_per_s": opts.n as f64 / (build_ms / 1000.0),
            "rss_mb": rss_after,
            "index_rss_mb": rss_after - rss_before,
            "snapshot_mb": sealed.len() as f64 / (1 << 20) as f64,
            "snapshot_save_seal_ms": save_ms,
            "snapshot_open_load_ms": load_ms,
            "rebuild_ms": build_ms,
        });
        rows.push((name.clone(), v.clone()));
        variants.insert(name, v);
        drop(index);
    }
    // Default: the smallest snapshot that keeps recall@1 >= 0.99 and p99 <= 1 ms.
    let default = rows
        .iter()
        .filter(|(_, v)| {
            v["recall_at_1"].as_f64().unwrap_or(0.0) >= 0.99
                && v["search_p99_ms"].as_f64().unwrap_or(f64::MAX) <= 1.0
        })
        .min_by(|a, b| {
            a.1["snapshot_mb"]
                .as_f64()
                .unwrap_or(f64::MAX)
                .total_cmp(&b.1["snapshot_mb"].as_f64().unwrap_or(f64::MAX))
        })
        .map(|(n, _)| n.clone());
    if opts.json {
        return super::print_json(&json!({
            "n": opts.n, "dim": opts.dim, "queries": opts.queries, "search_expansion": opts.search_expansion,
            "variants": variants, "default": default,
        }));
    }
    println!(
        "{} templates x {} dims, {} probes (cosine ~0.85 to an enrolled template), one thread",
        opts.n, opts.dim, opts.queries
    );
    println!(
        "{:<5} {:>10} {:>10} {:>9} {:>10} {:>8} {:>9} {:>11} {:>11} {:>10}",
        "",
        "p50 ms",
        "p99 ms",
        "recall@1",
        "insert/s",
        "RSS MB",
        "snap MB",
        "save+seal",
        "open+load",
        "rebuild"
    );
    for (name, v) in &rows {
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<5} {:>10.3} {:>10.3} {:>9.4} {:>10.0} {:>8.0} {:>9.1} {:>9.0}ms {:>9.0}ms {:>8.0}ms",
            name,
            f("search_p50_ms"),
            f("search_p99_ms"),
            f("recall_at_1"),
            f("insert_per_s"),
            f("rss_mb"),
            f("snapshot_mb"),
            f("snapshot_save_seal_ms"),
            f("snapshot_open_load_ms"),
            f("rebuild_ms"),
        );
    }
    println!(
        "default by recall >= 0.99 and p99 <= 1 ms, smallest snapshot: {}",
        default.as_deref().unwrap_or("none qualifies")
    );
    Ok(())
}
