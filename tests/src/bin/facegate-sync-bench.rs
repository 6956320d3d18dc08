//! Sync figures on this machine, every part real (Mosquitto, the hub, two terminals with their
//! agents): propagation latency of enrollments from terminal A to terminal B (the enrollment
//! completed on A over the API -> visible on B's API), the drain rate of a backlog built while
//! the broker was down, and the agents' and hub's peak RSS. Prints a table.
//!
//! `cargo run --release -p facegate-blackbox --bin facegate-sync-bench -- [--enrollments 50]
//! [--backlog 5000]` (needs the release binaries: `cargo build --release --workspace`).
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use facegate_blackbox::sync::{
    Broker, SITE, SyncProc, enroll_speaker, hub_cli, site_key, terminal, wait_for,
};
use facegate_blackbox::tempdir;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let n = arg("--enrollments", 50);
    let backlog = arg("--backlog", 5000);
    let root = tempdir("sync-bench");
    let mut broker = Broker::start(&root.join("broker"));
    let key = root.join("site.key");
    site_key(&key);
    let hub_dir = root.join("hub");
    let hub = SyncProc::hub(&broker.url(), &hub_dir, SITE, &key);
    let a = terminal(&root, "door-a", &key, &broker.url());
    let b = terminal(&root, "door-b", &key, &broker.url());
    let c: serde_json::Value =
        serde_json::from_str(&hub_cli(&hub_dir, &["clients", "add", "acme", "--json"])).unwrap();
    wait_for(
        Duration::from_secs(15),
        "the client on both terminals",
        || {
            [&a, &b].iter().all(|t| {
                t.d.post(
                    "/api/auth/client/",
                    None,
                    &serde_json::json!({"api_key": c["api_key"], "api_secret": c["api_secret"]}),
                )
                .0 == 200
            })
        },
    );
    let (auth_a, auth_b) = (a.d.login(&c), b.d.login(&c));
    let mut lat = Vec::new();
    for i in 0..n {
        let id = enroll_speaker(&a.d, &auth_a, &format!("person-{i}"));
        let t = Instant::now();
        while b
            .d
            .get(
                &format!("/api/auth/enrollments/{id}/"),
                Some(("Authorization", &auth_b)),
            )
            .0
            != 200
        {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "enrollment {i} never reached B"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);

    broker.stop();
    let t = Instant::now();
    for _ in 0..backlog {
        let s =
            a.d.session(&auth_a, "/api/auth/authentication/", &serde_json::json!({}));
        a.d.delete(
            &format!("/api/auth/session/{s}/"),
            Some(("Authorization", &auth_a)),
        );
    }
    let produce = t.elapsed();
    let pending = || {
        let text = a.d.get_text("/metrics", &[]).2;
        text.lines()
            .find_map(|l| l.strip_prefix("facegate_sync_pending_changes "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    wait_for(Duration::from_secs(30), "rows audited", || {
        pending() >= backlog as f64
    });
    let queued = pending();
    broker.restart();
    let drain = wait_for(Duration::from_secs(600), "backlog drained", || {
        pending() == 0.0
    });
    let hub_t = Instant::now();
    let target = backlog;
    wait_for(Duration::from_secs(600), "all rows at the hub", || {
        hub_cli(&hub_dir, &["audit", "--terminal", "door-a"])
            .lines()
            .filter(|l| l.contains("\"reason\":\"cancelled\""))
            .count()
            >= target
    });
    let hub_extra = hub_t.elapsed();

    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| propagation A -> B, {n} enrollments: p50 / p99 / max | {:.0} / {:.0} / {:.0} ms |",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat[lat.len() - 1]
    );
    println!(
        "| backlog built with the broker down | {queued} changes ({backlog} sessions in {:.1} s) |",
        produce.as_secs_f64()
    );
    println!(
        "| backlog drained (acknowledged by the broker) after it returned | {:.2} s ({:.0} changes/s) |",
        drain.as_secs_f64(),
        queued / drain.as_secs_f64()
    );
    println!(
        "| ... and all stored at the hub | +{:.2} s |",
        hub_extra.as_secs_f64()
    );
    println!(
        "| peak RSS: agent A / agent B / hub | {:.1} / {:.1} / {:.1} MiB |",
        peak_rss_mib(a.agent.pid()),
        peak_rss_mib(b.agent.pid()),
        peak_rss_mib(hub.pid())
    );
}
