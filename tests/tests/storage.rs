#![allow(clippy::unwrap_used)]
//! Disk full under a running daemon (a small tmpfs as its data directory; needs root to mount
//! it, as CI and the terminals' test rigs have): requests that must write are answered 503
//! with a clear message and the envelope, nothing acknowledged is lost, what needs no write
//! goes on, `/health/` says the store failed; once space is freed the daemon stops itself to
//! be restarted, and then every acknowledged write is there and writes work again.

use std::path::Path;
use std::process::Command;

use facegate_blackbox::{Daemon, cli, cli_json, data, tempdir};
use serde_json::json;

fn mount_tmpfs(dir: &Path, size: &str) {
    let out = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "this test mounts a small tmpfs to fill it (needs root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn avail_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn disk_full_refuses_writes_clearly_and_loses_nothing_acknowledged() {
    let dir = tempdir("diskfull");
    mount_tmpfs(&dir, "24m");
    let result = std::panic::catch_unwind(|| run(&dir));
    let _ = Command::new("umount").arg(&dir).status();
    std::fs::remove_dir_all(&dir).unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn run(dir: &Path) {
    let a = cli_json(dir, &["clients", "add", "door-a", "--json"]);
    let out = cli(
        dir,
        &[
            "enroll",
            "--user-id",
            "alice",
            "--client",
            "door-a",
            data("photos/astronaut.png").to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    let d = Daemon::start(dir, &[]);
    let rows_before = d.audit_rows();
    // Fill the disk but 4 KiB.
    let filler = dir.join("filler");
    let free = avail_bytes(dir);
    let st = Command::new("fallocate")
        .args(["-l", &(free - 4096).to_string()])
        .arg(&filler)
        .status()
        .unwrap();
    assert!(st.success());
    // Key-only logins each append an audit row (transaction + fsync): sled fills the space
    // it had reserved, then the disk refuses.
    let body = json!({"api_key": a["api_key"]});
    let login = |d: &Daemon| d.post("/api/auth/client/", None, &body);
    let mut acked = 0u64;
    let refused = loop {
        let (s, v) = login(&d);
        if s == 200 {
            acked += 1;
            assert!(acked < 50_000, "the disk never filled");
            continue;
        }
        break (s, v);
    };
    let (s, v) = refused;
    assert_eq!(
        (s, v["error"].as_str()),
        (503, Some("service_unavailable")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("storage full"),
        "{v}"
    );
    assert_eq!(v["details"]["storage"], "storage full");
    // Health says so; reads that need no write go on (X-API-Key, the enrollments list).
    let (s, h) = d.get("/health/", None);
    assert_eq!((s, h["status"].as_str()), (503, Some("unhealthy")), "{h}");
    assert_eq!(h["services"]["store"]["error"], "storage full");
    let key = a["api_key"].as_str().unwrap();
    let (s, list) = d.get("/api/auth/enrollments/", Some(("X-API-Key", key)));
    assert_eq!((s, list["count"].as_u64()), (200, Some(1)), "{list}");
    // Space comes back: sled keeps refusing until the database is reopened (its I/O error
    // is sticky), so the daemon stops itself within a sweep (5 s) and exits non-zero, for
    // systemd (`Restart=on-failure`) to start it again, as the test does.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(login(&d).0, 503);
    let status = d
        .wait_exit(std::time::Duration::from_secs(30))
        .expect("the daemon stops itself once space is back");
    assert!(!status.success(), "{status:?}");
    let d = Daemon::start(dir, &[]);
    assert_eq!(d.get("/health/", None).0, 200);
    // Every acknowledged write is on disk: one audit row per 200, none for the refused.
    assert_eq!(d.audit_rows(), rows_before + acked, "acked {acked}");
    assert_eq!(login(&d).0, 200);
    let (_, list) = d.get("/api/auth/enrollments/", Some(("X-API-Key", key)));
    assert_eq!(list["results"][0]["user_id"], "alice");
    assert!(d.stop().success());
}
