#![allow(clippy::unwrap_used)]
//! Black-box tests of the real `facegate` binary: JSON contracts, exit codes, clear errors.

mod common;

use common::{clip_excerpt, data, facegate, stdout_json, tempdir};

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn detect_json_has_the_contract_shape() {
    let out = facegate(
        &["detect", path(&data("photos/group_t1.jpg")), "--json"],
        &[],
    );
    let v = stdout_json(&out);
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(1280), Some(886))
    );
    let faces = v["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 6);
    for f in faces {
        assert_eq!(f["bbox"].as_array().unwrap().len(), 4);
        assert_eq!(f["landmarks"].as_array().unwrap().len(), 5);
        assert!(f["score"].as_f64().unwrap() > 0.5);
        let q = &f["quality"];
        for k in ["score", "size", "sharpness", "exposure", "pose"] {
            let x = q[k]
                .as_f64()
                .unwrap_or_else(|| panic!("quality.{k} missing: {q}"));
            assert!((0.0..=1.0).contains(&x), "quality.{k} = {x}");
        }
    }
    // No face is an empty list, not an error.
    let v = stdout_json(&facegate(
        &[
            "detect",
            path(&data("photos/noface_mountain.jpg")),
            "--json",
        ],
        &[],
    ));
    assert_eq!(v["faces"].as_array().unwrap().len(), 0);
}

#[test]
fn embed_json_is_a_unit_192_vector_and_no_face_is_an_error() {
    let v = stdout_json(&facegate(
        &["embed", path(&data("photos/astronaut.png")), "--json"],
        &[],
    ));
    let e: Vec<f64> = v["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(e.len(), 192);
    let norm = e.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    assert_eq!(v["bbox"].as_array().unwrap().len(), 4);
    assert!(v["quality"]["score"].as_f64().is_some());

    let out = facegate(
        &["embed", path(&data("photos/noface_mountain.jpg")), "--json"],
        &[],
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout when failing");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no face found"));
}

#[test]
fn corrupt_and_empty_images_fail_with_a_clear_message() {
    let dir = tempdir("badimg");
    let empty = dir.join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let truncated = dir.join("truncated.png");
    let png = std::fs::read(data("photos/astronaut.png")).unwrap();
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    let text = dir.join("text.jpg");
    std::fs::write(&text, b"definitely not a jpeg").unwrap();
    for (file, needle) in [
        (&empty, "empty"),
        (&truncated, "corrupt"),
        (&text, "unrecognised image format"),
    ] {
        let out = facegate(&["detect", path(file), "--json"], &[]);
        assert_eq!(out.status.code(), Some(1), "{}", file.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{}: {err}", file.display());
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = facegate(&["detect", "/nonexistent/x.jpg"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read image /nonexistent/x.jpg"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Copies the shipped models so a test can damage its copy.
fn models_copy(tag: &str) -> std::path::PathBuf {
    let dir = tempdir(tag);
    for entry in std::fs::read_dir(common::models_dir()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

#[test]
fn an_altered_or_missing_model_fails_fast_naming_it() {
    let dir = models_copy("models-altered");
    let target = dir.join("mobilefacenet_opt.onnx");
    let mut bytes = std::fs::read(&target).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&target, &bytes).unwrap();
    let astronaut = data("photos/astronaut.png");
    let out = facegate(
        &["detect", path(&astronaut)],
        &[("FACEGATE_MODELS__DIR", path(&dir))],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model `mobilefacenet`") && err.contains("does not match the manifest"),
        "{err}"
    );

    std::fs::remove_file(&target).unwrap();
    let out = facegate(
        &["detect", path(&astronaut)],
        &[("FACEGATE_MODELS__DIR", path(&dir))],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model `mobilefacenet` is missing"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();

    let out = facegate(
        &["detect", path(&astronaut)],
        &[("FACEGATE_MODELS__DIR", "/nonexistent")],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model manifest found"));
}

#[test]
fn bad_configuration_is_an_error_naming_the_key() {
    let dir = tempdir("config");
    let file = dir.join("facegate.toml");
    std::fs::write(&file, "[detector]\nscore_treshold = 0.4\n").unwrap();
    let astronaut = data("photos/astronaut.png");
    let out = facegate(&["--config", path(&file), "detect", path(&astronaut)], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("detector") && err.contains("score_treshold"),
        "{err}"
    );

    let out = facegate(
        &["detect", path(&astronaut)],
        &[("FACEGATE_DETECTOR__KIND", "yolo")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("detector.kind") && err.contains("yolo"),
        "{err}"
    );

    let out = facegate(
        &["detect", path(&astronaut)],
        &[("FACEGATE_DOOR__UNKNOWN_RETRY_S", "-1")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("door.unknown_retry_s"), "{err}");

    // A valid override is applied: BlazeFace finds the astronaut too.
    let v = stdout_json(&facegate(
        &["detect", path(&astronaut), "--json"],
        &[("FACEGATE_DETECTOR__KIND", "blazeface")],
    ));
    assert_eq!(v["faces"].as_array().unwrap().len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn eval_on_orl_meets_the_accuracy_bar_in_both_precisions() {
    let orl = data("faces/orl");
    for precision in ["fp32", "int8"] {
        let v = stdout_json(&facegate(
            &[
                "eval",
                "--dataset",
                path(&orl),
                "--precision",
                precision,
                "--json",
                "-q",
            ],
            &[],
        ));
        eprintln!("ORL {precision}: {v}");
        assert_eq!(v["identities"], 20);
        assert_eq!(v["images"], 200);
        assert_eq!(v["failed_to_detect"], 0, "{precision}");
        assert_eq!(v["genuine_pairs"], 900);
        assert_eq!(v["impostor_pairs"], 19000);
        assert!(
            v["eer"].as_f64().unwrap() <= 0.01,
            "{precision} EER {}",
            v["eer"]
        );
        assert!(
            v["rank1"].as_f64().unwrap() >= 0.99,
            "{precision} rank-1 {}",
            v["rank1"]
        );
        assert!(
            v["tar_at_far"]["1e-3"].as_f64().unwrap() >= 0.95,
            "{precision}: {}",
            v["tar_at_far"]
        );
        assert!(v["threshold_at_far_1e-3"].as_f64().is_some());
    }
}

#[test]
fn bench_json_reports_every_stage_for_both_precisions() {
    // The model thread pool follows `pipeline.threads` (default: the cores available).
    let v = stdout_json(&facegate(
        &["bench", "--iterations", "2", "--json", "-q"],
        &[("FACEGATE_PIPELINE__THREADS", "1")],
    ));
    assert_eq!(v["precision"], "fp32");
    assert_eq!(v["threads"], 1);
    for variant in ["fp32", "int8"] {
        let r = &v["variants"][variant];
        assert!(
            r["end_to_end"]["p50_ms"].as_f64().unwrap() > 0.0,
            "{variant}: {r}"
        );
        assert!(r["end_to_end"]["fps"].as_f64().unwrap() > 0.0);
        for stage in ["decode", "detect", "align", "quality", "embed"] {
            assert!(
                r["stages"][stage]["p99_ms"].as_f64().unwrap()
                    >= r["stages"][stage]["p50_ms"].as_f64().unwrap()
            );
        }
    }
}

#[test]
fn bench_index_json_reports_every_quantization() {
    let v = stdout_json(&facegate(
        &[
            "bench",
            "index",
            "--n",
            "3000",
            "--queries",
            "100",
            "--json",
            "-q",
        ],
        &[],
    ));
    assert_eq!(v["n"], 3000);
    assert_eq!(v["dim"], 192);
    for q in ["f32", "f16", "i8"] {
        let r = &v["variants"][q];
        let recall = r["recall_at_1"].as_f64().unwrap();
        assert!(recall >= 0.98, "{q}: recall@1 {recall} at 3000 templates");
        assert!(r["search_p99_ms"].as_f64().unwrap() >= r["search_p50_ms"].as_f64().unwrap());
        assert!(r["insert_per_s"].as_f64().unwrap() > 0.0);
        assert!(r["rss_mb"].as_f64().unwrap() > 0.0);
    }
    // The recommendation follows its rule (recall >= 0.99, p99 <= 1 ms, smallest snapshot);
    // on a loaded machine no variant may qualify, and then it is null (timing is not asserted).
    match v["default"].as_str() {
        Some(d) => {
            let r = &v["variants"][d];
            assert!(r["recall_at_1"].as_f64().unwrap() >= 0.99, "{v}");
            assert!(r["search_p99_ms"].as_f64().unwrap() <= 1.0, "{v}");
        }
        None => assert!(v["default"].is_null(), "{v}"),
    }
}

#[test]
fn clients_add_prints_credentials_once_and_enroll_identify_work_on_the_data_dir() {
    let dir = tempdir("cli-store");
    let d = path(&dir).to_owned();
    let v = stdout_json(&facegate(
        &["--data-dir", &d, "clients", "add", "front-door", "--json"],
        &[],
    ));
    for k in ["client_id", "api_key", "api_secret"] {
        assert!(v[k].as_str().is_some_and(|s| s.len() > 16), "{k}: {v}");
    }
    let out = facegate(
        &["--data-dir", &d, "clients", "add", "front-door", "--json"],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let orl = |s: u32, n: u32| data(&format!("faces/orl/s{s:02}/{n:02}.pgm"));
    let (a1, a2, b1) = (orl(4, 1), orl(4, 2), orl(9, 1));
    let v = stdout_json(&facegate(
        &[
            "--data-dir",
            &d,
            "enroll",
            "--user-id",
            "alice",
            path(&a1),
            path(&a2),
            "--json",
        ],
        &[],
    ));
    assert_eq!(v["images_used"], 2);
    let id = v["enrollment_id"].as_str().unwrap().to_owned();
    stdout_json(&facegate(
        &[
            "--data-dir",
            &d,
            "enroll",
            "--user-id",
            "bob",
            path(&b1),
            "--json",
        ],
        &[],
    ));
    let v = stdout_json(&facegate(
        &["--data-dir", &d, "identify", path(&orl(4, 7)), "--json"],
        &[],
    ));
    assert_eq!(v["match"]["user_id"], "alice", "{v}");
    assert_eq!(v["match"]["enrollment_id"], id.as_str());
    let v = stdout_json(&facegate(
        &["--data-dir", &d, "identify", path(&orl(15, 1)), "--json"],
        &[],
    ));
    assert!(v["match"].is_null(), "a stranger matched: {v}");
    assert_eq!(v["candidates"].as_array().unwrap().len(), 2);
    // Key rotation from the command line: everything re-sealed, alice still matches.
    let key_before = std::fs::read(dir.join("master.key")).unwrap();
    let v = stdout_json(&facegate(
        &["--data-dir", &d, "keys", "rotate", "--json"],
        &[],
    ));
    assert_eq!(v["resealed"]["enrollments"], 2, "{v}");
    assert_eq!(v["resealed"]["clients"], 1, "{v}");
    assert!(v["resealed"]["audit"].as_u64().unwrap() >= 4, "{v}");
    assert_ne!(std::fs::read(dir.join("master.key")).unwrap(), key_before);
    let v = stdout_json(&facegate(
        &["--data-dir", &d, "identify", path(&orl(4, 7)), "--json"],
        &[],
    ));
    assert_eq!(v["match"]["user_id"], "alice", "{v}");
    let out = facegate(&["--data-dir", &d, "enrollments", "delete", &id], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = stdout_json(&facegate(
        &["--data-dir", &d, "enrollments", "list", "--json"],
        &[],
    ));
    assert_eq!(v["count"], 1);
    let v = stdout_json(&facegate(
        &["--data-dir", &d, "identify", path(&orl(4, 7)), "--json"],
        &[],
    ));
    assert!(
        v["match"].is_null(),
        "deleted enrollment still matched: {v}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A door's first looks at a face rubbed with a hand and the eyes shut (pexels_eyes_hand,
/// frames 40-56: on copies upscaled 2x with PIL's bilinear filter her similarity to her best
/// face, frame 116, is 0.37-0.48 there and 0.64-0.85 from frame 59 on). At 1280x720 (the clip
/// upscaled 2x), from file 0040, the relief of her moving face and hand makes her live at file
/// 0047, in the rubbing. The shipped three looks 0.4 s apart (0047, 0051, 0055) all fall in the
/// rubbing, 1.7 s long: she is `unknown` at 0055; the door keeps looking while she stays
/// (`unknown_rechecks`, 0.5 s apart, a match needing 0.6) and grants her at 0060, once her
/// hand is gone. Without the rechecks she stays `unknown` (the case they are for); with five
/// first looks (`unknown_attempts = 5`) she is granted at 0059 without an `unknown`, and with
/// them in a row (`unknown_retry_s = 0`) she is `unknown` at 0051. (From file 0042 on she is
/// live at her blink at 0065, face clear, and granted there; ARCHITECTURE.md, "Looks spent on
/// a covered face".)
#[test]
fn a_door_looks_again_before_and_after_calling_a_briefly_covered_face_unknown() {
    // From file 0040 to the end: the bench enrolls her from its best face (file 0116,
    // uncovered).
    let dir = clip_excerpt("door-looks", "pexels_eyes_hand", 40, 196);
    let run = |env: &[(&str, &str)]| {
        let mut env = env.to_vec();
        env.push(("FACEGATE_PIPELINE__THREADS", "1"));
        let v = stdout_json(&facegate(
            &[
                "bench",
                "stream",
                "--frames",
                path(&dir),
                "--scale",
                "2",
                "--enrollments",
                "100",
                "--json",
                "-q",
            ],
            &env,
        ));
        // The configured schedule's row (the whole-frame one decides the same): each
        // decision's frame and outcome.
        let row = v["rows"][0].clone();
        let decisions: Vec<(u64, String)> = row["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d[0].as_u64().unwrap(), d[1].as_str().unwrap().to_owned()))
            .collect();
        (decisions, row)
    };
    let outcomes = |d: &[(u64, String)]| d.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>();
    let (shipped, row) = run(&[]);
    assert_eq!(outcomes(&shipped), ["unknown", "granted:person"], "{row}");
    let (unknown_at, granted_at) = (shipped[0].0, shipped[1].0);
    assert!(
        (3..=10).contains(&(granted_at - unknown_at)),
        "granted at the first or second recheck with her face clear: {row}"
    );
    assert!(row["embeddings"].as_u64().unwrap() <= 6, "{row}");
    let (final_unknown, row) = run(&[("FACEGATE_DOOR__UNKNOWN_RECHECKS", "0")]);
    assert_eq!(
        outcomes(&final_unknown),
        ["unknown"],
        "the case the rechecks are for no longer arises: {row}"
    );
    assert_eq!(final_unknown[0].0, unknown_at, "{row}");
    let (five, row) = run(&[("FACEGATE_DOOR__UNKNOWN_ATTEMPTS", "5")]);
    assert_eq!(outcomes(&five), ["granted:person"], "{row}");
    let (in_a_row, row) = run(&[
        ("FACEGATE_DOOR__UNKNOWN_ATTEMPTS", "5"),
        ("FACEGATE_DOOR__UNKNOWN_RETRY_S", "0"),
        ("FACEGATE_DOOR__UNKNOWN_RECHECKS", "0"),
    ]);
    assert_eq!(outcomes(&in_a_row), ["unknown"], "{row}");
    std::fs::remove_dir_all(dir).unwrap();
}
