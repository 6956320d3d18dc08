//! `facegate bench door`: recorded clips replayed at a camera's rate into door mode, in this
//! process, one camera and then all cameras at once: time from the clip's first frame to the
//! decision, processing time per frame, CPU per frame, frames dropped (the door is slower than
//! the camera), RSS.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;
use serde_json::json;

use crate::camera::{Camera, CameraSpec, SourceSpec};
use crate::config::{Config, DoorConfig};
use crate::door::{DoorDecision, DoorHandle, DoorView, Host};
use crate::pipeline::liveness::Instruction;
use crate::sessions::Engine;
use crate::store::Store;

#[derive(Debug)]
pub struct Options {
    pub clips: Vec<PathBuf>,
    pub enroll: Vec<PathBuf>,
    pub fps: f64,
    /// Each recorded frame is shown this many times (10 fps clips as a 30 fps camera: 3).
    pub repeat: usize,
    pub json: bool,
}

#[derive(Debug, Default)]
struct Seen {
    decisions: Vec<(Instant, DoorDecision)>,
    /// Per camera: wall ms of every processed frame.
    frame_ms: std::collections::HashMap<String, Vec<f64>>,
}

struct BenchHost {
    engine: Engine,
    store: Store,
    seen: Mutex<Seen>,
    stop: AtomicBool,
}

impl std::fmt::Debug for BenchHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchHost").finish_non_exhaustive()
    }
}

impl Host for BenchHost {
    fn engine(&self) -> &Engine {
        &self.engine
    }
    fn store(&self) -> &Store {
        &self.store
    }
    fn decided(&self, d: &DoorDecision) {
        let mut s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        s.decisions.push((Instant::now(), d.clone()));
    }
    fn prompt(&self, _camera: &str, _prompt: Option<Instruction>) {}
    fn frame_done(&self, camera: &str, ms: f64) {
        let mut s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        s.frame_ms.entry(camera.to_owned()).or_default().push(ms);
    }
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// CPU seconds (user + system) of this process so far.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based) of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[derive(Debug)]
struct Row {
    scenario: String,
    camera: String,
    frames: u64,
    processed: u64,
    dropped: u64,
    /// Left on purpose while nobody was in view (`door.idle_fps`).
    idle: u64,
    /// Left on purpose because they came faster than `liveness.analysis_fps`.
    paced: u64,
    mean_ms: f64,
    p95_ms: f64,
    cpu_ms_per_frame: f64,
    /// The process's CPU time over the scenario.
    cpu_s: f64,
    decision: String,
    /// From the camera's first frame to the decision (wall clock).
    to_decision_ms: Option<f64>,
    rss_mib: f64,
}

fn run_scenario(
    host: &Arc<BenchHost>,
    door_cfg: &DoorConfig,
    clips: &[PathBuf],
    fps: f64,
    max_pixels: u64,
    scenario: &str,
) -> anyhow::Result<Vec<Row>> {
    {
        let mut s = host.seen.lock().unwrap_or_else(|p| p.into_inner());
        *s = Seen::default();
    }
    let cpu0 = cpu_seconds();
    let mut doors = Vec::new();
    for (i, clip) in clips.iter().enumerate() {
        let spec = CameraSpec {
            id: format!("cam{i}"),
            source: SourceSpec::Replay {
                path: clip.clone(),
                fps,
                once: true,
                delay_s: 0.0,
            },
        };
        let camera = Camera::start(spec, max_pixels);
        let handle = Arc::new(DoorHandle {
            camera,
            view: Mutex::new(DoorView::default()),
            clients: Vec::new(),
            relay: crate::door::relay::Relay::new(&DoorConfig {
                relay_command: Vec::new(),
                relay_gpio: String::new(),
                ..door_cfg.clone()
            })?,
            last_frame_ms: std::sync::atomic::AtomicU64::new(0),
        });
        let h: Arc<dyn Host> = host.clone();
        let thread = crate::door::spawn(handle.clone(), door_cfg.clone(), h)?;
        doors.push((handle, thread));
    }
    let started = Instant::now();
    let (handles, threads): (Vec<_>, Vec<_>) = doors.into_iter().unzip();
    for t in threads {
        let _ = t.join();
    }
    let cpu = cpu_seconds() - cpu0;
    let rss = rss_mib();
    let seen = host.seen.lock().unwrap_or_else(|p| p.into_inner());
    let total_processed: u64 = handles
        .iter()
        .map(|h| h.camera.counters.processed.load(Ordering::Relaxed))
        .sum();
    let mut rows = Vec::new();
    for h in &handles {
        let c = &h.camera.counters;
        let id = &h.camera.id;
        let mut ms = seen.frame_ms.get(id).cloned().unwrap_or_default();
        ms.sort_by(f64::total_cmp);
        let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
        let p95 = ms
            .get(((ms.len() as f64 * 0.95) as usize).min(ms.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN);
        let mine: Vec<&(Instant, DoorDecision)> = seen
            .decisions
            .iter()
            .filter(|(_, d)| &d.camera == id)
            .collect();
        let first = mine.first().copied();
        let decision = if mine.is_empty() {
            "none".to_owned()
        } else {
            mine.iter()
                .map(|(at, d)| {
                    let what = match &d.outcome {
                        crate::door::Outcome::Granted { user_id, .. } => {
                            format!("granted {user_id}")
                        }
                        crate::door::Outcome::Unknown { .. } => "unknown".to_owned(),
                        crate::door::Outcome::Denied { reason } => format!("denied {reason}"),
                    };
                    format!("{what} @{:.1}s", at.duration_since(started).as_secs_f64())
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        rows.push(Row {
            scenario: scenario.to_owned(),
            camera: format!("{id} {}", clips_name(&h.camera.spec)),
            frames: c.captured.load(Ordering::Relaxed),
            processed: c.processed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            idle: c.idle_skipped.load(Ordering::Relaxed),
            paced: c.paced_skipped.load(Ordering::Relaxed),
            mean_ms: mean,
            p95_ms: p95,
            cpu_ms_per_frame: cpu * 1000.0 / total_processed.max(1) as f64,
            cpu_s: cpu,
            decision,
            to_decision_ms: first.map(|(at, _)| at.duration_since(started).as_secs_f64() * 1000.0),
            rss_mib: rss,
        });
    }
    Ok(rows)
}

fn clips_name(spec: &SourceSpec) -> String {
    match spec {
        SourceSpec::Replay { path, .. } => path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        other => other.describe(),
    }
}

pub fn run(config: &Config, engine: Engine, opts: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(!opts.clips.is_empty(), "give at least one --clip DIR");
    let dir = std::env::temp_dir().join(format!("facegate-bench-door-{}", std::process::id()));
    // A fresh key file in the scratch directory.
    let keys = crate::store::keys::KeySources {
        credentials_directory: None,
        master_key_env: None,
    };
    let (store, _) = Store::open(
        &dir,
        &keys,
        &config.store,
        crate::pipeline::embed::EMBEDDING_DIM,
    )
    .context("opening a scratch store")?;
    if !opts.enroll.is_empty() {
        let mut sum = vec![0f32; crate::pipeline::embed::EMBEDDING_DIM];
        for p in &opts.enroll {
            let bytes = std::fs::read(p).with_context(|| p.display().to_string())?;
            let (_, a) = engine
                .pipeline
                .analyze_largest(&bytes)
                .with_context(|| format!("no face in {}", p.display()))?;
            for (s, x) in sum.iter_mut().zip(a.embedding.as_slice()) {
                *s += x;
            }
        }
        let n = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        sum.iter_mut().for_each(|x| *x /= n);
        store.enroll("bench", "person", &sum, 1.0, false)?;
    }
    let host = Arc::new(BenchHost {
        engine,
        store,
        seen: Mutex::new(Seen::default()),
        stop: AtomicBool::new(false),
    });
    let max_pixels = config.limits.max_image_pixels;
    // Clips with every frame repeated (symlinks in the scratch directory).
    let clips: Vec<PathBuf> = if opts.repeat > 1 {
        let mut out = Vec::new();
        for (i, clip) in opts.clips.iter().enumerate() {
            let name = clip
                .file_name()
                .map_or_else(|| format!("clip{i}"), |n| n.to_string_lossy().into_owned());
            let d = dir.join(format!("x{}-{name}", opts.repeat));
            std::fs::create_dir_all(&d)?;
            let mut files: Vec<PathBuf> = std::fs::read_dir(clip)
                .with_context(|| clip.display().to_string())?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
                .collect();
            files.sort();
            let mut n = 0;
            for f in &files {
                let ext = f
                    .extension()
                    .map_or("jpg".into(), |e| e.to_string_lossy().into_owned());
                let abs = std::fs::canonicalize(f)?;
                for _ in 0..opts.repeat {
                    n += 1;
                    std::os::unix::fs::symlink(&abs, d.join(format!("{n:06}.{ext}")))?;
                }
            }
            out.push(d);
        }
        out
    } else {
        opts.clips.clone()
    };
    let mut rows = Vec::new();
    for clip in &clips {
        rows.extend(run_scenario(
            &host,
            &config.door,
            std::slice::from_ref(clip),
            opts.fps,
            max_pixels,
            "one camera",
        )?);
    }
    if opts.clips.len() > 1 {
        rows.extend(run_scenario(
            &host,
            &config.door,
            &clips,
            opts.fps,
            max_pixels,
            "all at once",
        )?);
    }
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = std::io::stdout().lock();
    if opts.json {
        let list: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "scenario": r.scenario, "camera": r.camera, "frames": r.frames,
                    "processed": r.processed, "dropped": r.dropped, "idle_skipped": r.idle,
                    "paced_skipped": r.paced,
                    "mean_ms": r.mean_ms, "p95_ms": r.p95_ms,
                    "cpu_ms_per_frame": r.cpu_ms_per_frame, "cpu_s": r.cpu_s,
                    "decision": r.decision, "to_decision_ms": r.to_decision_ms, "rss_mib": r.rss_mib,
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(
                &json!({"fps": opts.fps, "repeat": opts.repeat, "rows": list})
            )?
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "door mode over replayed clips at {} fps, each frame shown {}x (cores: {})",
        opts.fps,
        opts.repeat.max(1),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    )?;
    writeln!(
        out,
        "{:<12} {:<28} {:>6} {:>9} {:>7} {:>5} {:>5} {:>8} {:>7} {:>9} {:>6} {:>10} {:>7}  decision",
        "scenario",
        "camera",
        "frames",
        "processed",
        "dropped",
        "idle",
        "paced",
        "mean ms",
        "p95 ms",
        "cpu ms/f",
        "cpu s",
        "to decide",
        "RSS MiB"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<12} {:<28} {:>6} {:>9} {:>7} {:>5} {:>5} {:>8.1} {:>7.1} {:>9.1} {:>6.1} {:>10} {:>7.0}  {}",
            r.scenario,
            r.camera,
            r.frames,
            r.processed,
            r.dropped,
            r.idle,
            r.paced,
            r.mean_ms,
            r.p95_ms,
            r.cpu_ms_per_frame,
            r.cpu_s,
            r.to_decision_ms
                .map_or("-".to_owned(), |m| format!("{m:.0} ms")),
            r.rss_mib,
            r.decision
        )?;
    }
    Ok(())
}
