//! Load run (a bench, not a test): N concurrent WebSocket identification sessions, each
//! streaming real JPEG frames (../shared/data/video/pexels_eyes_hand) at a fixed rate, against
//! the real `facegate` binary. Prints, per N: frames offered and answered per second, how many
//! were shed (the daemon's `error` 429 when every frame worker is busy), latency from send to
//! answer (p50 / p99), and the daemon's peak RSS.
//!
//! `cargo run --release -p facegate-blackbox --bin facegate-load -- [--sessions 1,2,4,8,16]
//!  [--fps 5] [--seconds 20] [--json]`
//!
//! A session that ends (a decision) is replaced by a new one, as at a door.
//!
//! The daemon runs with the allocator settings of its systemd unit (`Environment=MALLOC_*`
//! lines of systemd/facegate.service), as installed; a `MALLOC_*` variable set by the caller
//! wins, so other settings can be measured against them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use facegate_blackbox::{Daemon, cli_json, data, tempdir};
use serde_json::{Value, json};
use tungstenite::Message;

type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

#[derive(Debug, Default, Clone)]
struct Tally {
    sent: u64,
    answered: u64,
    shed: u64,
    errors: u64,
    sessions: u64,
    latencies_ms: Vec<f64>,
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The `Environment=MALLOC_*=...` settings of the shipped unit.
fn unit_malloc_env() -> Vec<(String, String)> {
    let unit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../systemd/facegate.service");
    let text = std::fs::read_to_string(&unit)
        .unwrap_or_else(|e| panic!("reading {}: {e}", unit.display()));
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| k.starts_with("MALLOC_"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn open_session(d: &Daemon, auth: &str) -> Ws {
    let (s, v) = d.post(
        "/api/auth/authentication/",
        Some(("Authorization", auth)),
        &json!({"metadata": {"max_frames": 1000, "timeout_seconds": 3600}}),
    );
    assert_eq!(s, 201, "{v}");
    let url = v["websocket_url"].as_str().unwrap().to_owned();
    let (mut ws, _) = tungstenite::connect(url).unwrap();
    let hello = ws.read().unwrap();
    assert!(hello.to_string().contains("connection_established"));
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    }
    ws
}

/// One session slot: sends a frame every `1/fps` s whatever the answers, reads answers in
/// between, reopens a session when one ends.
fn stream(
    d: &Daemon,
    auth: &str,
    frames: &[Vec<u8>],
    fps: f64,
    until: Instant,
    offset: usize,
    phase: f64,
) -> Tally {
    let mut t = Tally::default();
    let mut ws = open_session(d, auth);
    t.sessions += 1;
    let period = Duration::from_secs_f64(1.0 / fps);
    // Sessions are not in step (cameras and kiosks are not synchronised): slot k of n starts
    // k/n of a period late.
    let mut next_send = Instant::now() + period.mul_f64(phase);
    let mut in_flight: VecDeque<Instant> = VecDeque::new();
    let mut i = offset;
    loop {
        let now = Instant::now();
        if now >= until && in_flight.is_empty() {
            break;
        }
        if now >= until + Duration::from_secs(10) {
            break; // answers that never come are counted as lost (sent - answered - shed)
        }
        if now >= next_send && now < until {
            let f = frames[i % frames.len()].clone();
            i += 1;
            if ws.send(Message::binary(f)).is_err() {
                ws = open_session(d, auth);
                t.sessions += 1;
                in_flight.clear();
                continue;
            }
            t.sent += 1;
            in_flight.push_back(Instant::now());
            next_send += period;
        }
        match ws.read() {
            Ok(Message::Text(text)) => {
                let m: Value = serde_json::from_str(text.as_str()).unwrap();
                // Every frame gets exactly one reply (connection_established and pong aside).
                if matches!(
                    m["type"].as_str(),
                    Some("connection_established" | "pong") | None
                ) {
                    continue;
                }
                let Some(sent_at) = in_flight.pop_front() else {
                    continue;
                };
                match (m["type"].as_str(), m["code"].as_u64()) {
                    (Some("error"), Some(429)) => t.shed += 1,
                    (Some("error"), _) => t.errors += 1,
                    _ => {
                        t.answered += 1;
                        t.latencies_ms
                            .push(sent_at.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                // The session decided: the server keeps the socket open for us to close; a door
                // client closes it and starts the next session (frames in flight are dropped).
                if m["type"] == "authentication_complete" {
                    let _ = ws.close(None);
                    in_flight.clear();
                    if Instant::now() >= until {
                        break;
                    }
                    ws = open_session(d, auth);
                    t.sessions += 1;
                }
            }
            Ok(Message::Close(_))
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                // The session decided (or was closed): frames still in flight are dropped.
                in_flight.clear();
                if Instant::now() < until {
                    ws = open_session(d, auth);
                    t.sessions += 1;
                } else {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) if facegate_blackbox::read_timed_out(&e) => {}
            Err(e) => {
                eprintln!("socket error: {e}");
                in_flight.clear();
                if Instant::now() >= until {
                    break;
                }
                ws = open_session(d, auth);
                t.sessions += 1;
            }
        }
    }
    t
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let levels: Vec<usize> = arg("--sessions")
        .unwrap_or_else(|| "1,2,4,8,16".into())
        .split(',')
        .map(|n| n.trim().parse().expect("--sessions 1,2,4"))
        .collect();
    let fps: f64 = arg("--fps").map_or(5.0, |f| f.parse().unwrap());
    let seconds: u64 = arg("--seconds").map_or(20, |s| s.parse().unwrap());
    let json_out = std::env::args().any(|a| a == "--json");
    let dir = data("video/pexels_eyes_hand");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    names.sort();
    let frames: Vec<Vec<u8>> = names.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let unit_env = unit_malloc_env();
    let env: Vec<(&str, &str)> = unit_env
        .iter()
        .filter(|(k, _)| std::env::var_os(k).is_none())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if !json_out {
        println!("daemon environment from its unit: {env:?}");
    }
    let mut rows = Vec::new();
    for &n in &levels {
        let work = tempdir(&format!("load{n}"));
        let config = work.join("load.toml");
        std::fs::write(
            &config,
            "[api]\nframes_per_minute = 1000000\nauthentication_sessions_per_hour = 1000000\n",
        )
        .unwrap();
        let c = cli_json(&work, &["clients", "add", "load", "--json"]);
        let d = Daemon::start_with(&work, &env, &["--config", config.to_str().unwrap()]);
        let (_, v) = d.post(
            "/api/auth/client/",
            None,
            &json!({"api_key": c["api_key"], "api_secret": c["api_secret"]}),
        );
        let auth = format!("Bearer {}", v["jwt_token"].as_str().unwrap());
        let rss_start = rss_kib(d.pid());
        let until = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let (tallies, peak) = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|k| {
                    let (d, auth, frames) = (&d, &auth, &frames);
                    s.spawn(move || {
                        stream(d, auth, frames, fps, until, k * 37, k as f64 / n as f64)
                    })
                })
                .collect();
            let mut peak = rss_start;
            while handles.iter().any(|h| !h.is_finished()) {
                peak = peak.max(rss_kib(d.pid()));
                std::thread::sleep(Duration::from_millis(200));
            }
            (
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>(),
                peak,
            )
        });
        let wall = started.elapsed().as_secs_f64().max(seconds as f64);
        let mut all = Tally::default();
        for t in tallies {
            all.sent += t.sent;
            all.answered += t.answered;
            all.shed += t.shed;
            all.errors += t.errors;
            all.sessions += t.sessions;
            all.latencies_ms.extend(t.latencies_ms);
        }
        let rss_end = rss_kib(d.pid());
        let (p50, p99) = (
            pct(&mut all.latencies_ms, 0.5),
            pct(&mut all.latencies_ms, 0.99),
        );
        let row = json!({
            "sessions": n,
            "offered_fps": all.sent as f64 / seconds as f64,
            "processed_fps": all.answered as f64 / wall,
            "frames_sent": all.sent,
            "answered": all.answered,
            "shed_429": all.shed,
            "shed_pct": 100.0 * all.shed as f64 / all.sent.max(1) as f64,
            "other_errors": all.errors,
            "unanswered": all.sent.saturating_sub(all.answered + all.shed + all.errors),
            "sessions_opened": all.sessions,
            "p50_ms": p50,
            "p99_ms": p99,
            "rss_start_mib": rss_start as f64 / 1024.0,
            "rss_peak_mib": peak as f64 / 1024.0,
            "rss_end_mib": rss_end as f64 / 1024.0,
        });
        eprintln!("{row}");
        rows.push(row);
        drop(d);
        let _ = std::fs::remove_dir_all(work);
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap());
        return;
    }
    println!(
        "{fps} fps per session, {seconds} s per level, frames: pexels_eyes_hand (binary JPEG over WebSocket)"
    );
    println!(
        "shed: refused with 429 (workers and queue full); unansw: in flight when a session decided and closed"
    );
    println!(
        "{:>8} {:>9} {:>10} {:>7} {:>7} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "sessions",
        "offered/s",
        "answered/s",
        "shed %",
        "unansw",
        "p50 ms",
        "p99 ms",
        "RSS0 MiB",
        "peak MiB",
        "sessions+"
    );
    for r in &rows {
        println!(
            "{:>8} {:>9.1} {:>10.1} {:>7.1} {:>7} {:>8.1} {:>8.1} {:>9.0} {:>9.0} {:>9}",
            r["sessions"],
            r["offered_fps"].as_f64().unwrap(),
            r["processed_fps"].as_f64().unwrap(),
            r["shed_pct"].as_f64().unwrap(),
            r["unanswered"],
            r["p50_ms"].as_f64().unwrap_or(f64::NAN),
            r["p99_ms"].as_f64().unwrap_or(f64::NAN),
            r["rss_start_mib"].as_f64().unwrap(),
            r["rss_peak_mib"].as_f64().unwrap(),
            r["sessions_opened"],
        );
    }
}
