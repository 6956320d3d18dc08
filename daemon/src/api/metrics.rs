//! In-process counters and latency histograms, served as Prometheus text at `/metrics` and
//! summarised by `/api/analytics/system-metrics/`.
//!
//! Invariant: labels are fixed vocabularies (session kinds, outcomes, stages, routes, status
//! codes): never a token, user id, client secret or anything a caller can make unbounded.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::sessions::FrameCosts;

/// Upper bounds (seconds) of the latency buckets.
const BUCKETS_S: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS_S.len()],
    sum_s: f64,
    n: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS_S.iter().position(|&b| seconds <= b) {
            self.counts[i] += 1;
        }
        self.sum_s += seconds;
        self.n += 1;
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// (session kind, outcome) -> frames.
    frames: BTreeMap<(&'static str, &'static str), u64>,
    /// (session kind, result) -> ended sessions.
    decisions: BTreeMap<(&'static str, String), u64>,
    sessions_created: BTreeMap<&'static str, u64>,
    stages: BTreeMap<&'static str, Histogram>,
    /// (route, status) -> requests.
    requests: BTreeMap<(String, u16), u64>,
    request_latency: Histogram,
    /// Requests per second over the last minute: (unix second, count).
    recent: VecDeque<(u64, u64)>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// Decision results are a fixed vocabulary; anything else is counted as `other`.
const RESULTS: [&str; 12] = [
    "completed",
    "authenticated",
    "no_match_found",
    "liveness_failed",
    "poor_quality",
    "no_face",
    "obstacle",
    "multiple_faces",
    "session_expired",
    "max_frames_exceeded",
    "cancelled",
    "failed",
];

fn now_s() -> u64 {
    crate::store::records::now_ms() / 1000
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn frame(&self, kind: &'static str, outcome: &'static str, costs: Option<&FrameCosts>) {
        let mut m = self.lock();
        *m.frames.entry((kind, outcome)).or_default() += 1;
        if let Some(c) = costs {
            let st = &c.stages;
            for (stage, ms) in [
                ("decode", c.decode_ms),
                ("detect", st.detect_ms),
                ("eyes", st.eyes_ms),
                ("mesh", st.mesh_ms),
                ("mask", st.mask_ms),
                ("palm", st.palm_ms),
                ("liveness_cues", st.cues_ms),
                ("embed", c.embed_ms),
                ("decide", c.decide_ms),
                ("total", c.total_ms),
            ] {
                // Stages a frame skipped (mask / palm run on a schedule) are not observed.
                if ms > 0.0 || stage == "total" {
                    m.stages.entry(stage).or_default().observe(ms / 1000.0);
                }
            }
        }
    }

    pub fn decision(&self, kind: &'static str, result: &str) {
        let result = RESULTS
            .iter()
            .find(|r| **r == result)
            .map_or("other", |r| *r)
            .to_owned();
        *self.lock().decisions.entry((kind, result)).or_default() += 1;
    }

    /// One door-mode frame (detection, tracking, liveness, and matching when due).
    pub fn door_frame(&self, ms: f64) {
        self.lock()
            .stages
            .entry("door_frame")
            .or_default()
            .observe(ms / 1000.0);
    }

    pub fn session_created(&self, kind: &'static str) {
        *self.lock().sessions_created.entry(kind).or_default() += 1;
    }

    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        let mut m = self.lock();
        *m.requests.entry((route.to_owned(), status)).or_default() += 1;
        m.request_latency.observe(seconds);
        let now = now_s();
        match m.recent.back_mut() {
            Some((s, n)) if *s == now => *n += 1,
            _ => m.recent.push_back((now, 1)),
        }
        while m.recent.front().is_some_and(|(s, _)| *s + 60 <= now) {
            m.recent.pop_front();
        }
    }

    /// Requests answered in the last 60 seconds.
    pub fn requests_per_minute(&self) -> u64 {
        let now = now_s();
        self.lock()
            .recent
            .iter()
            .filter(|(s, _)| *s + 60 > now)
            .map(|(_, n)| n)
            .sum()
    }

    /// Mean whole-frame processing time so far, milliseconds.
    pub fn mean_frame_ms(&self) -> Option<f64> {
        let m = self.lock();
        let h = m.stages.get("total")?;
        (h.n > 0).then(|| h.sum_s * 1000.0 / h.n as f64)
    }

    /// The Prometheus text exposition (format 0.0.4); `gauges` are sampled by the caller.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let m = self.lock();
        let mut t = String::new();
        family(
            &mut t,
            "facegate_frames_total",
            "counter",
            "Frames received by sessions, by session kind and outcome.",
        );
        for ((kind, outcome), n) in &m.frames {
            let _ = writeln!(
                t,
                "facegate_frames_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        family(
            &mut t,
            "facegate_decisions_total",
            "counter",
            "Ended sessions by kind and result.",
        );
        for ((kind, result), n) in &m.decisions {
            let _ = writeln!(
                t,
                "facegate_decisions_total{{kind=\"{kind}\",result=\"{result}\"}} {n}"
            );
        }
        family(
            &mut t,
            "facegate_sessions_created_total",
            "counter",
            "Sessions created, by kind.",
        );
        for (kind, n) in &m.sessions_created {
            let _ = writeln!(t, "facegate_sessions_created_total{{kind=\"{kind}\"}} {n}");
        }
        family(
            &mut t,
            "facegate_stage_seconds",
            "histogram",
            "Time per pipeline stage of one frame.",
        );
        for (stage, h) in &m.stages {
            histogram(
                &mut t,
                "facegate_stage_seconds",
                &format!("stage=\"{stage}\""),
                h,
            );
        }
        family(
            &mut t,
            "facegate_http_requests_total",
            "counter",
            "HTTP requests by route and status.",
        );
        for ((route, status), n) in &m.requests {
            let _ = writeln!(
                t,
                "facegate_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        family(
            &mut t,
            "facegate_http_request_seconds",
            "histogram",
            "HTTP request latency.",
        );
        histogram(
            &mut t,
            "facegate_http_request_seconds",
            "",
            &m.request_latency,
        );
        for (name, help, value) in gauges {
            family(&mut t, name, "gauge", help);
            let _ = writeln!(t, "{name} {value}");
        }
        t
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (bound, n) in BUCKETS_S.iter().zip(h.counts) {
        cumulative += n;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.n);
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum_s);
    let _ = writeln!(out, "{name}_count{braces} {}", h.n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_results_a_fixed_vocabulary() {
        let m = Metrics::default();
        let costs = FrameCosts {
            decode_ms: 2.0,
            total_ms: 60.0,
            ..FrameCosts::default()
        };
        m.frame("authentication", "processed", Some(&costs));
        m.frame("authentication", "processed", Some(&costs));
        m.decision("authentication", "no_match_found");
        m.decision("authentication", "user-chosen-text");
        let text = m.render(&[("facegate_index_size", "Vectors.", 3.0)]);
        assert!(text.contains("facegate_stage_seconds_bucket{stage=\"decode\",le=\"0.0025\"} 2"));
        assert!(text.contains("facegate_stage_seconds_bucket{stage=\"total\",le=\"0.05\"} 0"));
        assert!(text.contains("facegate_stage_seconds_bucket{stage=\"total\",le=\"0.1\"} 2"));
        assert!(text.contains("facegate_stage_seconds_count{stage=\"total\"} 2"));
        assert!(
            !text.contains("stage=\"mask\""),
            "skipped stages are not observed"
        );
        assert!(text.contains("result=\"other\"} 1"));
        assert!(!text.contains("user-chosen-text"));
        assert!(text.contains("facegate_index_size 3"));
    }
}
