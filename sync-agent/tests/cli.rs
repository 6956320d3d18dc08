#![allow(clippy::unwrap_used)]
//! The binary's command line: a site key is 64 hex characters, different every time; a hub
//! command without a running hub, or an agent without a broker or token, fails with a message
//! naming what is missing and prints nothing on stdout. (The sync itself is tested end to end,
//! with a real broker, daemons and hub, in tests/tests/sync.rs.)

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_facegate-sync"))
}

#[test]
fn site_keys_are_fresh_hex() {
    let a = bin().arg("site-key").output().unwrap();
    let b = bin().arg("site-key").output().unwrap();
    assert!(a.status.success());
    let (a, b) = (
        String::from_utf8(a.stdout).unwrap(),
        String::from_utf8(b.stdout).unwrap(),
    );
    assert_eq!(a.trim().len(), 64);
    assert!(a.trim().chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}

#[test]
fn missing_pieces_are_named() {
    let dir = std::env::temp_dir().join(format!("facegate-sync-cli-{}", std::process::id()));
    let out = bin()
        .args(["hub", "--data-dir"])
        .arg(&dir)
        .arg("terminals")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is the hub running?"), "{err}");

    let out = bin()
        .args(["hub", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--site"));

    let out = bin()
        .args(["run", "--token-file", "/nonexistent/token"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sync token"));
}
