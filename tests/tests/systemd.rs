#![allow(clippy::unwrap_used)]
//! The daemon under systemd's protocols, without systemd: the real binary with a
//! `NOTIFY_SOCKET` the test listens on sends `READY=1` once `/health/` answers, pings
//! `WATCHDOG=1` within `WATCHDOG_USEC` while it works, stops pinging while it is frozen
//! (SIGSTOP: what systemd's watchdog then kills), resumes after SIGCONT, and says `STOPPING=1`
//! at SIGTERM. The shipped unit keeps its hardening: `systemd-analyze security --offline=true`
//! scores it at most 2.0 (the full install under a real systemd is systemd/test-package.sh).

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use facegate_blackbox::{Daemon, RemoveOnSuccess, tempdir};

/// Every datagram received within `limit` (or until `stop` matches one).
fn receive(sock: &UnixDatagram, limit: Duration, stop: &str) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = m.contains(stop);
                out.push(m);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    out
}

#[test]
fn ready_watchdog_and_stopping_reach_systemd_and_a_frozen_daemon_stops_pinging() {
    let dir = tempdir("notify");
    let _cleanup = RemoveOnSuccess(dir.clone());
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let p = path.display().to_string();
    let d = Daemon::start(&dir, &[("NOTIFY_SOCKET", &p), ("WATCHDOG_USEC", "1500000")]);
    let first = receive(&sock, Duration::from_secs(5), "READY=1");
    let ready = first.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(ready.contains("STATUS=serving"), "{ready}");
    // Pings every WATCHDOG_USEC / 3 (0.5 s) while the store and a frame worker answer.
    let pings = receive(&sock, Duration::from_secs(3), "never");
    let n = pings.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(n >= 3, "{n} pings in 3 s: {pings:?}");
    // Frozen: no ping at all (systemd would kill it after WatchdogSec).
    let pid = d.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let _ = receive(&sock, Duration::from_millis(300), "never"); // in flight before the stop
    let frozen = receive(&sock, Duration::from_secs(3), "never");
    assert!(
        frozen.iter().all(|m| !m.contains("WATCHDOG=1")),
        "{frozen:?}"
    );
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let resumed = receive(&sock, Duration::from_secs(3), "WATCHDOG=1");
    assert!(
        resumed.iter().any(|m| m.contains("WATCHDOG=1")),
        "{resumed:?}"
    );
    // A status line for `systemctl status`.
    assert!(
        pings
            .iter()
            .any(|m| m.contains("STATUS=serving") && m.contains("enrollments")),
        "{pings:?}"
    );
    let stop = std::thread::spawn(move || d.stop());
    let last = receive(&sock, Duration::from_secs(10), "STOPPING=1");
    assert!(last.iter().any(|m| m.contains("STOPPING=1")), "{last:?}");
    assert!(stop.join().unwrap().success());
}

/// `systemd-analyze security --offline=true UNIT`'s overall exposure.
fn exposure(unit: &str) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", unit])
        .output()
        .expect("systemd-analyze (Debian's systemd) is needed");
    let report = String::from_utf8_lossy(&out.stdout);
    report
        .lines()
        .find_map(|l| l.split(".service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no score in {report}"))
}

#[test]
fn the_shipped_unit_scores_at_most_2_and_is_a_notify_service_with_a_watchdog() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/facegate.service");
    let text = std::fs::read_to_string(unit).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "SyslogIdentifier=facegate",
        "DevicePolicy=closed",
        "IPAddressDeny=any",
    ] {
        assert!(text.lines().any(|l| l.starts_with(line)), "{line} missing");
    }
    let score = exposure(unit);
    assert!(score <= 2.0, "facegate.service exposure {score}");
    // The sync agent's unit: network allowed, everything else as narrow.
    let sync = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/facegate-sync.service"
    );
    let score = exposure(sync);
    assert!(score <= 2.0, "facegate-sync.service exposure {score}");
}
