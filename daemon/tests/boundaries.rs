//! The module boundaries of ARCHITECTURE.md, checked on the `use` lines of the sources:
//! dependencies point one way (api -> sessions -> {pipeline, store}; config below api), JSON
//! and HTTP live in api/ only, pipeline/ and store/ depend on nothing else of the crate.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("the source folder is readable") {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// Every `use` line (and `crate::` path) of the files under `src/<module>` (or the file
/// `src/<module>.rs`) that mentions one of `forbidden`.
fn offending(module: &str, forbidden: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let dir = src.join(module);
    let files = if dir.is_dir() {
        sources(&dir)
    } else {
        vec![src.join(format!("{module}.rs"))]
    };
    assert!(!files.is_empty(), "no sources for {module}");
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("a readable source file");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for bad in forbidden {
                if code.contains(bad) {
                    out.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    out
}

#[test]
fn dependencies_point_one_way() {
    let others = |except: &str| -> Vec<String> {
        [
            "api", "sessions", "store", "pipeline", "camera", "door", "tools", "app", "config",
            "events",
        ]
        .iter()
        .filter(|m| **m != except)
        .map(|m| format!("crate::{m}"))
        .collect()
    };
    let check = |module: &str, forbidden: Vec<String>| {
        let f: Vec<&str> = forbidden.iter().map(String::as_str).collect();
        let bad = offending(module, &f);
        assert!(
            bad.is_empty(),
            "{module} must not use {f:?}:\n{}",
            bad.join("\n")
        );
    };
    // pipeline/ and store/ depend on nothing else of the crate.
    check("pipeline", others("pipeline"));
    check("store", others("store"));
    check("camera", others("camera"));
    // door/ sits beside sessions/: above pipeline, store and camera, below api (its Host).
    check(
        "door",
        vec![
            "crate::api".into(),
            "crate::tools".into(),
            "crate::app".into(),
        ],
    );
    // sessions/ sits above pipeline and store, below api.
    check(
        "sessions",
        vec![
            "crate::api".into(),
            "crate::tools".into(),
            "crate::app".into(),
        ],
    );
    // config is read by everyone and reads nobody's types above it.
    check(
        "config",
        vec![
            "crate::api".into(),
            "crate::sessions".into(),
            "crate::tools".into(),
            "crate::app".into(),
        ],
    );
}

#[test]
fn json_and_http_live_in_api() {
    for module in ["pipeline", "store", "sessions", "camera", "door"] {
        let bad = offending(module, &["serde_json", "axum", "tokio::"]);
        assert!(bad.is_empty(), "{module}:\n{}", bad.join("\n"));
    }
}
