#![allow(clippy::unwrap_used)]
//! Liveness, synthetic presentation attacks and obstacles over the real clips and photos in
//! ../shared/data, through the real binary (`facegate liveness`, `facegate pad-eval`) and the
//! library (obstacle scores per face).

mod common;

use common::{clip_excerpt, data, facegate, stdout_json, tempdir};
use facegate_daemon::pipeline::Pipeline;
use facegate_daemon::pipeline::models::ModelStore;
use facegate_daemon::pipeline::obstacles::{self, ObstacleScores};
use facegate_daemon::pipeline::stream::LiveModels;

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// The frames (0-based) where `facegate liveness --json` found blinks starting.
fn blink_frames(v: &serde_json::Value) -> Vec<u64> {
    v["blinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["frame"].as_u64().unwrap())
        .collect()
}

/// Every labelled blink (0-based closing frame) found within a frame, and at most `max_extra`
/// blinks found that no label explains.
fn assert_labelled_blinks(clip: &str, found: &[u64], labelled: &[u64], max_extra: usize) {
    let near = |a: u64, b: u64| a.abs_diff(b) <= 1;
    for &l in labelled {
        assert!(
            found.iter().any(|&f| near(f, l)),
            "{clip}: blink at frame {l} missed: {found:?}"
        );
    }
    let extra = found
        .iter()
        .filter(|&&f| !labelled.iter().any(|&l| near(f, l)))
        .count();
    assert!(extra <= max_extra, "{clip}: false blinks: {found:?}");
}

/// Blink ground truth, labelled by eye from the frames (0-based frame of the closing).
/// pexels_eyes_hand: blinks in files 0065, 0085, 0104, 0121, 0162; files 0178-0183 are a
/// squint while laughing (not labelled a blink); files 0007-0041 are a 3.5 s closure (crying,
/// not a blink); from 0184 the eyes close and stay closed.
#[test]
fn every_labelled_blink_is_found_and_false_blinks_are_few() {
    let v = stdout_json(&facegate(
        &[
            "liveness",
            "--frames",
            path(&data("video/pexels_eyes_hand")),
            "--json",
        ],
        // The contract's hand threshold (advisory by default: see default.toml).
        &[("FACEGATE_OBSTACLES__HAND", "0.3")],
    ));
    let found = blink_frames(&v);
    assert_labelled_blinks("pexels", &found, &[64, 84, 103, 120, 161], 1);
    assert!(
        !found.iter().any(|f| (6..41).contains(f)),
        "the long closure is not a blink: {found:?}"
    );
    assert_eq!(v["verdict"], "live");
    assert!(v["motion_events"].as_array().unwrap().len() >= 2, "{v}");
    assert_eq!(v["frames"], 196);
    assert_eq!(v["eyelid"].as_array().unwrap().len(), 196);
    // The hand over the mouth (files ~0040-0095) is seen; no mask, no sunglasses.
    assert!(v["obstacles"]["hand"].as_f64().unwrap() > 0.5, "{v}");
    assert!(v["obstacle_frames"]["hand"].as_u64().unwrap() >= 10, "{v}");
    assert!(v["obstacles"]["sunglasses"].as_f64().unwrap() < 0.5, "{v}");

    // lp_d9 (a close-up, glasses): the README's eleven labelled blinks (0.3-0.5 s, 1.2-1.4,
    // 4.7, 9.7-10.3, 12.1, 12.8, 14.1, 15.0, 16.2, 17.4-17.7, 18.5-18.7 s) are all found, the
    // first one too, 0.3 s into the clip: the open-eye baseline needs 3 frames
    // (`blink_min_baseline_frames`; with 5 it was lost and the clip was live at 1.5 s, where
    // a blink alone suffices).
    let v = stdout_json(&facegate(
        &["liveness", "--frames", path(&data("video/lp_d9")), "--json"],
        &[("FACEGATE_LIVENESS__BLINK_SUFFICES", "true")],
    ));
    let found = blink_frames(&v);
    assert_labelled_blinks(
        "lp_d9",
        &found,
        &[3, 12, 47, 97, 121, 128, 141, 150, 162, 174, 185],
        2,
    );
    assert!(
        v["live_at"]["t"].as_f64().unwrap() <= 0.7,
        "{}",
        v["live_at"]
    );

    for clip in ["video/single_face", "video/face_noface"] {
        let v = stdout_json(&facegate(
            &["liveness", "--frames", path(&data(clip)), "--json"],
            &[],
        ));
        let blinks = blink_frames(&v);
        // One blink, closing over files 0008-0010.
        assert_eq!(blinks.len(), 1, "{clip}: {v}");
        assert!((7..=9).contains(&blinks[0]), "{clip}: {blinks:?}");
        assert_eq!(v["verdict"], "live", "{clip}");
    }
}

/// headtrackr_cap4 from 5 s on: a webcam user (a blurry face 67 px wide) who turns his head
/// and does not blink. His eyelids show no blink and CenterFace's landmarks on so blurry a
/// face are not evidence (ARCHITECTURE.md); the relief of his face's own texture motion is:
/// `live` within the 5 s, by two movements (`liveness.head_evidence`). With `relief_parallax =
/// 0` (off) the same frames are not. From 6 s on his first turn's relief, with a print's bend
/// fitted, is 0.0147: over `relief_unbent` (0.012) it is his first movement and a turn back his
/// second (live); at the limit's earlier 0.015 it was not, his one movement left unconfirmed
/// (`unknown`, score 0.5: he would be asked to turn his head again), enough with
/// `head_evidence = 1`.
#[test]
fn a_head_that_turns_without_blinking_is_live_by_its_relief() {
    let dir = clip_excerpt("relief", "headtrackr_cap4", 51, 100);
    let run = |dir: &std::path::Path, env: &[(&str, &str)]| {
        stdout_json(&facegate(
            &["liveness", "--frames", path(dir), "--json"],
            env,
        ))
    };
    let v = run(&dir, &[]);
    assert_eq!(v["verdict"], "live", "{v}");
    assert_eq!(v["blinks"].as_array().unwrap().len(), 0, "{v}");
    assert!(!v["motion_events"].as_array().unwrap().is_empty(), "{v}");
    let off = run(&dir, &[("FACEGATE_LIVENESS__RELIEF_PARALLAX", "0")]);
    assert_ne!(off["verdict"], "live", "{off}");
    std::fs::remove_dir_all(dir).unwrap();

    let six = clip_excerpt("relief-six", "headtrackr_cap4", 61, 110);
    let v = run(&six, &[]);
    assert_eq!(v["verdict"], "live", "{v}");
    assert_eq!(v["blinks"].as_array().unwrap().len(), 0, "{v}");
    let stricter = [("FACEGATE_LIVENESS__RELIEF_UNBENT", "0.015")];
    let once = run(&six, &stricter);
    assert_eq!(once["verdict"], "unknown", "{once}");
    assert_eq!(once["spoof_score"], 0.5, "{once}");
    let lenient = run(
        &six,
        &[stricter[0], ("FACEGATE_LIVENESS__HEAD_EVIDENCE", "1")],
    );
    assert_eq!(lenient["verdict"], "live", "{lenient}");
    assert_eq!(lenient["blinks"].as_array().unwrap().len(), 0, "{lenient}");
    std::fs::remove_dir_all(six).unwrap();
}

/// Renders 50 frames of a SYNTHETIC attack of `kind` into `dir` with `facegate attack`, from
/// `source` in ../shared/data given as `--photo` or `--clip` (`from`).
fn render_attack(dir: &std::path::Path, from: &str, source: &str, kind: &str, seed: u32) {
    let seed = seed.to_string();
    let render = facegate(
        &[
            "attack",
            from,
            path(&data(source)),
            "--kind",
            kind,
            "--seed",
            &seed,
            "--frames",
            "50",
            "--out",
            path(dir),
        ],
        &[],
    );
    assert!(render.status.success(), "{render:?}");
}

/// `facegate liveness --json` over the frames in `dir`, with `env` set.
fn judge_frames(dir: &std::path::Path, env: &[(&str, &str)]) -> serde_json::Value {
    stdout_json(&facegate(
        &["liveness", "--frames", path(dir), "--json"],
        env,
    ))
}

/// A print of a laughing face (hand_on_forehead.png: narrowed eyes, open level ~0.2) held up
/// and swayed: the eye model's reading of one printed eye dips for half a second (frames
/// 40-44 of this SYNTHETIC sequence) while the other stays open. In a squint a closure counts
/// only when both eyes closed, so the print is not live even where a blink alone suffices;
/// without that rule the dip was its "blink" and it was live at frame 45. (The sheet around
/// the face moves with it, out beyond a head's reach, in 30 of the 50 frames, which makes it
/// an attack anyway since 2026-12-05's sixth session; the control turns that cue off to see
/// the squint rule.)
#[test]
fn a_printed_laughing_face_does_not_blink_by_one_eye() {
    let dir = tempdir("squint-print");
    render_attack(&dir, "--photo", "photos/hand_on_forehead.png", "print", 1);
    let run = |env: &[(&str, &str)]| {
        let mut env = env.to_vec();
        env.push(("FACEGATE_LIVENESS__BLINK_SUFFICES", "true"));
        stdout_json(&facegate(
            &["liveness", "--frames", path(&dir), "--json"],
            &env,
        ))
    };
    let v = run(&[]);
    assert_eq!(blink_frames(&v), Vec::<u64>::new(), "{v}");
    assert_ne!(v["verdict"], "live", "{v}");
    assert!(
        v["presentation"]["sheet_frames"].as_u64().unwrap() >= 3,
        "{v}"
    );
    let off = run(&[
        ("FACEGATE_LIVENESS__BLINK_SQUINT_BASELINE", "0"),
        ("FACEGATE_LIVENESS__SHEET_FRAMES", "1000"),
    ]);
    assert_eq!(blink_frames(&off), vec![40], "{off}");
    assert_eq!(off["verdict"], "live", "{off}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// carphone replayed on a screen held almost still (SYNTHETIC, seed 9: a 142 px face, sway
/// 8° / 8° / 2°): the screen's moiré stays under the screen cue's peak for the first 2 s and it
/// hardly moves against the room, while the replayed man talks and turns. His movements come
/// through a texture that the moving fringes change from frame to frame, so they are not a
/// head's: never live. Without that rule (`movement_max_change = 0`) he was live at 1.5 s, by
/// his blink at 1.4 s with a weak relief; since a weak relief needs a clear blink
/// (`relief_with_blink_depth`), his, shallow on the screen, no longer does that either: both
/// rules off, he is live at 1.5 s.
#[test]
fn a_replay_on_a_screen_held_still_is_not_live_by_the_replayed_face() {
    let dir = tempdir("still-replay");
    render_attack(&dir, "--clip", "video/carphone", "replay-screen", 9);
    let run = |env: &[(&str, &str)]| judge_frames(&dir, env);
    let v = run(&[]);
    assert!(v["live_at"].is_null(), "{v}");
    assert_ne!(v["verdict"], "live", "{v}");
    let no_texture = ("FACEGATE_LIVENESS__MOVEMENT_MAX_CHANGE", "0");
    let one_off = run(&[no_texture]);
    assert!(one_off["live_at"].is_null(), "{one_off}");
    let off = run(&[
        no_texture,
        ("FACEGATE_LIVENESS__RELIEF_WITH_BLINK_DEPTH", "0"),
    ]);
    assert_eq!(off["live_at"]["frame"], 15, "{off}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// lp_d13 (a close-up of a man talking) replayed on a phone held up and swayed (SYNTHETIC, seed
/// 34: a 121 px face, the renderer's weakest pixel grid, 10 % deep, whose moiré stays within
/// real faces' range): no screen cue fires, and the replayed man's talking is a real mouth's,
/// so without the sheet-edge cue (`edge_strength = 0`) he is live at 2.4 s. The phone's bezel
/// beside his face moves against the room behind it from frame to frame: never live, and the
/// border frames are counted.
#[test]
fn a_replay_whose_pixel_grid_does_not_show_is_caught_by_its_moving_bezel() {
    let dir = tempdir("bezel-replay");
    render_attack(&dir, "--clip", "video/lp_d13", "replay-screen", 34);
    let run = |env: &[(&str, &str)]| judge_frames(&dir, env);
    let v = run(&[]);
    assert!(v["live_at"].is_null(), "{v}");
    assert_ne!(v["verdict"], "live", "{v}");
    assert!(
        v["presentation"]["border_frames"].as_u64().unwrap() >= 3,
        "{v}"
    );
    assert_eq!(v["presentation"]["screen_frames"], 0, "{v}");
    let off = run(&[("FACEGATE_LIVENESS__EDGE_STRENGTH", "0")]);
    assert_eq!(off["verdict"], "live", "{off}");
    assert_eq!(off["live_at"]["frame"], 24, "{off}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// lp_d13 replayed on a phone whose bezel moves, then pauses (SYNTHETIC, seeds 36 and 37, as
/// `facegate attack` renders them). Seed 37: the bezel moves against the room in the first
/// second, enough to call it a screen; then the hand holds still and frames where the bezel
/// stayed outnumber those, so counting alone let the replayed man go live at frame 21 (before
/// 2026-12-05: a track once presented now stays so). Seed 36: three border frames in the
/// first 0.8 s against one where it stayed; with the room-edge frames weighed as the context's
/// room frames are (`edge_over_room = 3`) that was not enough, and he was live at frame 8.
#[test]
fn a_replay_stays_an_attack_when_its_bezel_stops_moving() {
    for (seed, ablation) in [
        (37, None),
        (36, Some(("FACEGATE_LIVENESS__EDGE_OVER_ROOM", "3"))),
    ] {
        let dir = tempdir(&format!("paused-bezel-{seed}"));
        render_attack(&dir, "--clip", "video/lp_d13", "replay-screen", seed);
        let v = judge_frames(&dir, &[]);
        assert!(v["live_at"].is_null(), "seed {seed}: {v}");
        assert_ne!(v["verdict"], "live", "seed {seed}: {v}");
        if let Some(env) = ablation {
            let off = judge_frames(&dir, &[env]);
            assert_eq!(off["live_at"]["frame"], 8, "seed {seed}: {off}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A print of ORL s03 with the eyes cut out and carphone's real eyes behind the holes
/// (SYNTHETIC, seed 22): his blinks are found, and at the end the sheet's sway reaches a weak
/// relief (over `relief_with_blink`, 0.015). A blink with a weak relief is evidence of life only
/// when the blink is a clear one (`relief_with_blink_depth`); seen through the holes these
/// blinks are shallow, so the print is never live. With any blink enough
/// (`relief_with_blink_depth = 0`) it was live at frame 45, as it was in the fresh draw of seeds
/// 21-25.
#[test]
fn an_eye_cut_prints_shallow_blinks_do_not_make_its_weak_relief_a_heads() {
    let dir = tempdir("eye-cut-weak-relief");
    let render = facegate(
        &[
            "attack",
            "--photo",
            path(&data("faces/orl/s03/01.pgm")),
            "--clip",
            path(&data("video/carphone")),
            "--kind",
            "eye-cut-print",
            "--seed",
            "22",
            "--frames",
            "50",
            "--out",
            path(&dir),
        ],
        &[],
    );
    assert!(render.status.success(), "{render:?}");
    let run = |env: &[(&str, &str)]| judge_frames(&dir, env);
    let v = run(&[]);
    assert!(!blink_frames(&v).is_empty(), "{v}");
    assert!(v["live_at"].is_null(), "{v}");
    assert_ne!(v["verdict"], "live", "{v}");
    let any = run(&[("FACEGATE_LIVENESS__RELIEF_WITH_BLINK_DEPTH", "0")]);
    assert_eq!(any["verdict"], "live", "{any}");
    assert!(!any["live_at"].is_null(), "{any}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Seeds past the last one pad-eval can number are refused with the flags named (the range of
/// seeds would wrap round and render no attack at all, reporting an APCER of nothing).
#[test]
fn pad_eval_refuses_seeds_past_the_last() {
    let out = facegate(
        &[
            "pad-eval",
            "--photos",
            path(&data("photos/single_face.jpg")),
            "--first-seed",
            &u64::MAX.to_string(),
            "--seeds",
            "2",
        ],
        &[],
    );
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--first-seed plus --seeds"), "{err}");
    let zero = facegate(&["pad-eval", "--photos", "x.jpg", "--first-seed", "0"], &[]);
    assert!(!zero.status.success(), "{zero:?}");
    let err = String::from_utf8_lossy(&zero.stderr);
    assert!(err.contains("--first-seed"), "{err}");
}

/// Every real person in ../shared/data/video, at its own size and with the face shrunk to ~80 px
/// wide, is verified live in every session that has 5 s of frames (sessions start every second),
/// headtrackr's, who turns and nods and never blinks, and grid_lbbc2a's, who does not blink in its
/// 3 s (labelled) but talks. SYNTHETIC photo attacks (print, bent print, screen) from two shared
/// photos are never accepted, at any frame, nor are the eye-cut prints (real eyes blinking behind a
/// photo): a blink alone does not make a face live by default. Replayed clips on a moving screen
/// (real blinks, speech, head turns) are caught by the screen's moiré and its fringes changing the
/// face's texture: none of the 17 accepted, and no real face's texture changes as much. Sessions
/// after face_noface's person has left are counted apart. Re-judged from the dump: where a blink
/// suffices the eye-cut prints are accepted; without the lips' movement the GRID speakers, who hold
/// their heads still, are not verified; without a blink and a weak relief counting together, pexels
/// is not in every session; without the texture change, lp_d13's replay (whose grid barely aliases)
/// is accepted. Every real session is verified with the relief required to be more than a bent
/// print's (`relief_unbent`).
#[test]
fn real_people_are_verified_at_door_sizes_and_photo_attacks_are_not() {
    let clips: Vec<String> = std::fs::read_dir(data("video"))
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_owned())
        .collect();
    assert!(clips.len() >= 17, "{clips:?}");
    let (photo_a, photo_b) = (data("photos/single_face.jpg"), data("photos/astronaut.png"));
    let dir = tempdir("pad-dump");
    let dump = dir.join("observations.jsonl");
    let mut args = vec![
        "pad-eval",
        "--photos",
        path(&photo_a),
        path(&photo_b),
        "--face-widths",
        "80",
        "--json",
        "--dump",
        path(&dump),
        "--clips",
    ];
    args.extend(clips.iter().map(String::as_str));
    let v = stdout_json(&facegate(&args, &[]));
    let per_clip = v["bona_fide"]["per_clip"].as_array().unwrap();
    // Every session of every real person with 5 s of frames is verified: pexels' smiling,
    // glancing face from 12 and 13 s on only by her blink with a weak relief. (headtrackr's
    // session from 17 s has 2.2 s of frames, in which he holds still.) His session from 8 s,
    // a nod and a small turn with no blink, needs both movements (`liveness.head_evidence`);
    // with `relief_unbent` at 0.015 the bend fit took the nod and it was never verified.
    for c in per_clip {
        let name = c["clip"].as_str().unwrap();
        let never = c["time_to_live_s"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t.is_null())
            .count() as u64;
        let cut = c["cut_sessions"].as_u64().unwrap();
        assert!(
            never == cut,
            "{name} at {}: a session with 5 s of frames not verified: {c}",
            c["scale"]
        );
        assert!(c["sessions"].as_u64().unwrap() >= 1, "{c}");
    }
    // face_noface's person leaves after 2.4 s (a cartoon follows): the sessions starting after
    // that have no one to verify, and are counted apart instead of as never verified.
    let noface = per_clip
        .iter()
        .find(|c| c["clip"] == "face_noface" && c["scale"] == "native")
        .unwrap();
    assert_eq!(noface["never_share"], 0.0, "{noface}");
    assert!(noface["absent_sessions"].as_u64().unwrap() >= 2, "{noface}");
    assert_eq!(
        noface["sessions"].as_u64().unwrap() + noface["absent_sessions"].as_u64().unwrap(),
        5,
        "one session per second with 2 s left, of a 6.4 s clip: {noface}"
    );
    let scales = |s: &str| per_clip.iter().filter(|c| c["scale"] == s).count();
    assert_eq!(scales("native"), clips.len(), "{v}");
    // Copies are downscaled only (no --enlarge): the two clips whose faces are under 80 px
    // (headtrackr_cap4 67, carphone 54) are judged at their own size alone.
    assert_eq!(scales("80px"), clips.len() - 2, "{v}");
    for small in ["headtrackr_cap4", "carphone"] {
        assert!(
            per_clip
                .iter()
                .all(|c| c["clip"] != small || c["scale"] == "native"),
            "{small} enlarged without --enlarge: {v}"
        );
    }
    for kind in ["print", "bent_print", "screen", "eye_cut_print"] {
        let k = &v["synthetic_attacks"][kind];
        assert_eq!(k["sequences"], 2, "{v}");
        assert_eq!(k["accepted"], 0, "synthetic {kind} accepted: {v}");
        assert_eq!(
            k["no_face"], 0,
            "the attack must show a detectable face: {v}"
        );
    }
    // A plain print held by hand moves like a plane, a screen shows its pixel grid: scored as
    // attacks, not just unknown.
    for kind in ["print", "screen", "replay_screen"] {
        assert!(
            v["synthetic_attacks"][kind]["mean_spoof_score"]
                .as_f64()
                .unwrap()
                > 0.5,
            "{kind}: {v}"
        );
    }
    let replay = &v["synthetic_attacks"]["replay_screen"];
    assert_eq!(replay["sequences"], 17, "{v}");
    assert_eq!(replay["accepted"], 0, "replayed clips accepted: {v}");
    for kind in ["eye_cut_print", "replay_screen"] {
        let k = &v["synthetic_attacks"][kind];
        let n = k["sequences"].as_u64().unwrap();
        assert!(n >= 2, "{v}");
        // A replayed 192x144 or 320x240 clip on a phone screen may show no detectable face.
        assert!(
            k["no_face"].as_u64().unwrap() * 5 <= n,
            "{kind} must show a detectable face: {v}"
        );
    }
    eprintln!(
        "bona fide: {}; APCER eye_cut_print {}, replay_screen {}",
        v["bona_fide"]["time_to_live"],
        v["synthetic_attacks"]["eye_cut_print"]["apcer"],
        v["synthetic_attacks"]["replay_screen"]["apcer"]
    );

    // The observations dumped for tuning judge to the same report again, without the models.
    let again = stdout_json(&facegate(
        &["pad-eval", "--from-dump", path(&dump), "--json"],
        &[],
    ));
    assert_eq!(
        again, v,
        "--from-dump must reproduce the run that wrote the dump"
    );
    let rejudge = |env: &[(&str, &str)]| {
        stdout_json(&facegate(
            &["pad-eval", "--from-dump", path(&dump), "--json"],
            env,
        ))
    };
    let accepted = |report: &serde_json::Value, kind: &str| {
        report["synthetic_attacks"][kind]["accepted"]
            .as_u64()
            .unwrap()
    };
    // Where a blink alone makes a face live, and a sheet moving with the face out beyond a
    // head's reach is not counted (since 2026-12-05's sixth session the context catches both
    // eye-cut prints here), the eye-cut prints are accepted by their real eyes' blinks.
    let lenient = rejudge(&[
        ("FACEGATE_LIVENESS__BLINK_SUFFICES", "true"),
        ("FACEGATE_LIVENESS__SHEET_FRAMES", "1000"),
    ]);
    assert!(accepted(&lenient, "eye_cut_print") > 0, "{lenient}");
    // Without the lips' movement against the face, the still GRID speakers are not verified
    // (the face mesh's lip opening does not see them speak); those who turn their head are.
    let no_lips = rejudge(&[("FACEGATE_LIVENESS__LIP_FLOW", "0")]);
    let never = |report: &serde_json::Value, clip: &str| {
        report["bona_fide"]["per_clip"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["clip"] == clip)
            .map(|c| c["never_share"].as_f64().unwrap())
            .fold(0.0, f64::max)
    };
    for speaker in ["grid_bbaf2n", "grid_pwij3p", "grid_sbwe5n", "grid_lbbc2a"] {
        assert_eq!(never(&no_lips, speaker), 1.0, "{speaker}: {no_lips}");
        assert_eq!(never(&v, speaker), 0.0, "{speaker}: {v}");
    }
    for mover in ["headtrackr_cap4", "lp_d11", "lp_d6", "lp_d18", "carphone"] {
        assert!(
            never(&no_lips, mover) - never(&v, mover) < 0.1,
            "{mover}: {no_lips}"
        );
    }
    // Without a blink and a weak relief counting together, pexels' sessions from 12 and 13 s
    // are never verified (a blink alone is no evidence, her relief stays under 0.02).
    let no_weak = rejudge(&[("FACEGATE_LIVENESS__RELIEF_WITH_BLINK", "0")]);
    assert!(
        never(&no_weak, "pexels_eyes_hand") > 0.0,
        "{}",
        no_weak["bona_fide"]["per_clip"]
    );
    // With the bend test at its earlier limit (`relief_unbent` 0.015) the bend fit takes one of
    // headtrackr's turns or nods and a session of his with 5 s of frames is never verified.
    let stricter_bend = rejudge(&[("FACEGATE_LIVENESS__RELIEF_UNBENT", "0.015")]);
    assert!(
        never(&stricter_bend, "headtrackr_cap4") > never(&v, "headtrackr_cap4"),
        "{}",
        stricter_bend["bona_fide"]["per_clip"]
    );
    // Without the texture change and the sustained moiré, the replay of lp_d13 (a talking,
    // blinking woman on a screen whose grid barely aliases into a moiré peak) is accepted. The
    // texture change serves twice: as a screen cue (`screen_change`) and as what a head's
    // movements must come through (`movement_max_change`); the moiré peaks stay raised over
    // frames (`moire_sustained`). Any one of the three alone stops that replay. (So does the
    // phone's bezel moving against the room, `edge_strength`: off in these ablations.)
    let no_edges = ("FACEGATE_LIVENESS__EDGE_STRENGTH", "0");
    let no_change = rejudge(&[
        ("FACEGATE_LIVENESS__SCREEN_CHANGE", "0"),
        ("FACEGATE_LIVENESS__MOVEMENT_MAX_CHANGE", "0"),
        ("FACEGATE_LIVENESS__MOIRE_SUSTAINED", "0"),
        no_edges,
    ]);
    assert!(
        accepted(&no_change, "replay_screen") > 0,
        "{}",
        no_change["synthetic_attacks"]
    );
    let three = ["SCREEN_CHANGE", "MOVEMENT_MAX_CHANGE", "MOIRE_SUSTAINED"];
    for only in three {
        let keys: Vec<String> = three
            .iter()
            .filter(|k| **k != only)
            .map(|k| format!("FACEGATE_LIVENESS__{k}"))
            .collect();
        let half = rejudge(&[(keys[0].as_str(), "0"), (keys[1].as_str(), "0"), no_edges]);
        assert_eq!(
            accepted(&half, "replay_screen"),
            0,
            "{only} alone: {}",
            half["synthetic_attacks"]
        );
    }
    // The face flow compares every frame with the one 0.3 s before: at their own size (eye
    // distances 24-110 px, pexels' hovering at 96) every real clip has it on nearly every pair
    // whose two frames show the face (pexels had it on 79 % while each frame chose its own
    // averaging factor).
    let text = std::fs::read_to_string(&dump).unwrap();
    for line in text.lines() {
        let seq: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = seq["name"].as_str().unwrap();
        if seq["set"] != "bona_fide" || !name.ends_with("@native") {
            continue;
        }
        let frames = seq["frames"].as_array().unwrap();
        let gap = 3;
        let (mut pairs, mut observed, mut unbent) = (0, 0, 0);
        for i in gap..frames.len() {
            if frames[i].is_null() || frames[i - gap].is_null() {
                continue;
            }
            pairs += 1;
            observed += usize::from(!frames[i]["flow"].is_null());
            unbent += usize::from(!frames[i]["unbent"].is_null());
        }
        assert!(
            observed * 100 >= pairs * 95,
            "{name}: face flow on {observed} of {pairs} frame pairs"
        );
        // The relief with a print's bend fitted too, which the relief rule also needs, is
        // there wherever the relief is.
        assert_eq!(
            unbent, observed,
            "{name}: bend fit on {unbent} of {observed}"
        );
    }
    // No real face's texture changes from one frame to the next as a screen's moving fringes
    // change it: the median of 3 frames' texture changes stays under the default
    // `liveness.screen_change` (0.07) at both sizes, over every clip's whole length. And it is
    // measured: on at least 9 in 10 frames with a face (not on a track's first).
    for line in text.lines() {
        let seq: serde_json::Value = serde_json::from_str(line).unwrap();
        if seq["set"] != "bona_fide" {
            continue;
        }
        let frames = seq["frames"].as_array().unwrap();
        let changes: Vec<f64> = frames.iter().filter_map(|f| f["change"].as_f64()).collect();
        let faces = frames.iter().filter(|f| !f.is_null()).count();
        assert!(
            changes.len() * 10 >= faces * 9,
            "{}: texture change on {} of {faces} frames",
            seq["name"],
            changes.len()
        );
        let worst = changes
            .windows(3)
            .map(|w| {
                let mut w = w.to_vec();
                w.sort_by(f64::total_cmp);
                w[1]
            })
            .fold(0.0, f64::max);
        assert!(worst < 0.07, "{}: texture change {worst}", seq["name"]);
    }
    // A damaged dump is refused with its line named, not half-judged.
    let broken = dir.join("broken.jsonl");
    std::fs::write(&broken, text.replacen("\"lm\":[", "\"lm\":[\"x\",", 1)).unwrap();
    let out = facegate(&["pad-eval", "--from-dump", path(&broken)], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.jsonl, line "), "{err}");
    std::fs::remove_dir_all(dir).unwrap();

    // The speaker who never blinks is live by his lips; without them he is `unknown` (asked
    // to turn his head), not `spoof`.
    let lbbc2a = |env: &[(&str, &str)]| {
        stdout_json(&facegate(
            &[
                "liveness",
                "--frames",
                path(&data("video/grid_lbbc2a")),
                "--json",
            ],
            env,
        ))
    };
    let talking = lbbc2a(&[]);
    assert_eq!(talking["verdict"], "live", "{talking}");
    assert_eq!(talking["blinks"].as_array().unwrap().len(), 0, "{talking}");
    let unseen = lbbc2a(&[("FACEGATE_LIVENESS__LIP_FLOW", "0")]);
    assert_eq!(unseen["verdict"], "unknown", "{unseen}");
}

/// Close-up real faces are not blocked by phantom obstacles under the default thresholds (the
/// palm detector sees hands in chins and ears: the hand is advisory by default).
#[test]
fn close_up_real_faces_have_no_blocking_obstacles_by_default() {
    for clip in ["video/lp_d9", "video/lp_d6"] {
        let v = stdout_json(&facegate(
            &["liveness", "--frames", path(&data(clip)), "--json"],
            &[],
        ));
        let blocked: u64 = ["mask", "hand", "sunglasses", "hat"]
            .iter()
            .map(|k| v["obstacle_frames"][k].as_u64().unwrap())
            .sum();
        assert_eq!(blocked, 0, "{clip}: {}", v["obstacle_frames"]);
        assert_eq!(v["verdict"], "live", "{clip}");
    }
}

/// The stream scheduler: between whole-frame searches (every `pipeline.redetect_ms`, 500 ms by
/// default), each tracked face is re-detected on a window of the detector's input around its
/// last box (same pixels, same scale). Over real clips in ../shared/data (360x288 GRID speakers,
/// a 320x240 webcam with head turns, a 192x144 car clip), it must
/// decide liveness as searching the whole frame on every frame does: the same blinks (within
/// two frames), motion evidence, verdict, and a live verdict at about the same time. And it
/// must really track where the face is small enough for a window to pay (most frames searched
/// around the face), or this compares nothing.
#[test]
fn tracking_between_whole_frame_searches_makes_the_same_liveness_decisions() {
    use facegate_daemon::pipeline::{PipelineConfig, ScheduleConfig};
    use facegate_daemon::tools::liveness::{decode_frames, run_sequence};
    let store = ModelStore::open_first(&[common::models_dir()]).unwrap();
    let (tracking, live) = models();
    assert_eq!(tracking.config().schedule.redetect_ms, 500.0);
    let whole = Pipeline::load(
        &store,
        PipelineConfig {
            schedule: ScheduleConfig {
                threads: 1,
                redetect_ms: 0.0,
            },
            ..tracking.config().clone()
        },
    )
    .unwrap();
    let cfg = facegate_daemon::pipeline::liveness::LivenessConfig::default();
    let thresholds = obstacles::ObstacleThresholds::default();
    // Labelled blinks (frames at 10 fps, ../shared/data/README.md); none in the last two.
    // `tracks`: the face is small enough in the frame for a window around it to cost at most
    // half of the whole frame (carphone's 192x144 frame is cheap whole: it is searched whole,
    // like close-ups such as pexels_eyes_hand, whose blinks the test above checks).
    let clips: [(&str, &[u64], bool); 4] = [
        ("grid_bbaf2n", &[17, 20], true),
        ("grid_pwij3p", &[14, 19], true),
        ("headtrackr_cap4", &[], true),
        ("carphone", &[], false),
    ];
    let mut failures = Vec::new();
    for (clip, labelled, tracks) in clips {
        let frames = decode_frames(tracking, &data(&format!("video/{clip}"))).unwrap();
        let run = |p: &Pipeline| {
            run_sequence(
                p,
                live,
                &cfg,
                &thresholds,
                frames.iter().cloned().map(Ok),
                10.0,
            )
            .unwrap()
        };
        let (a, b) = (run(tracking), run(&whole));
        let (full, roi) = a.detections;
        if tracks && roi * 3 < (full + roi) * 2 {
            failures.push(format!(
                "{clip}: only {roi} of {} frames tracked",
                full + roi
            ));
        }
        assert_eq!(b.detections.1, 0, "{clip}");
        let frames_of = |r: &facegate_daemon::tools::liveness::SequenceResult| {
            r.blinks.iter().map(|e| e.frame).collect::<Vec<_>>()
        };
        let (ba, bb) = (frames_of(&a), frames_of(&b));
        let near = |x: u64, set: &[u64], d: u64| set.iter().any(|y| x.abs_diff(*y) <= d);
        eprintln!(
            "{clip}: {roi}/{} frames tracked, blinks {ba:?} (whole frame {bb:?}), motion {} ({}), live at {:?} ({:?})",
            full + roi,
            a.motion_events.len(),
            b.motion_events.len(),
            a.live_at,
            b.live_at
        );
        // No blink that the whole-frame search does not see...
        // (within 2 frames: a slow closure may cross the threshold a frame or two apart).
        if ba.iter().any(|x| !near(*x, &bb, 2)) {
            failures.push(format!("{clip}: blinks {ba:?} vs {bb:?}"));
        }
        // ... and none of the labelled blinks it sees is lost; of the others (its false
        // blinks, e.g. pexels 57 while a hand moves over the mouth) at most one.
        let missed: Vec<u64> = bb.iter().copied().filter(|y| !near(*y, &ba, 2)).collect();
        if missed.iter().any(|m| near(*m, labelled, 2)) || missed.len() > 1 {
            failures.push(format!(
                "{clip}: blinks {ba:?} vs {bb:?} (labelled {labelled:?})"
            ));
        }
        if a.verdict != b.verdict {
            failures.push(format!(
                "{clip}: verdict {:?} vs {:?}",
                a.verdict, b.verdict
            ));
        }
        if a.motion_events.is_empty() != b.motion_events.is_empty() {
            failures.push(format!(
                "{clip}: motion {:?} vs {:?}",
                a.motion_events, b.motion_events
            ));
        }
        // Live within 1 s of each other (a lost false blink may delay it to the next real one).
        let live_apart = match (a.live_at, b.live_at) {
            (Some(x), Some(y)) => x.abs_diff(y) > 10,
            (x, y) => x != y,
        };
        if live_apart {
            failures.push(format!(
                "{clip}: live at {:?} vs {:?}",
                a.live_at, b.live_at
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A door settles the track of a visitor it has decided: from then on the stream only tracks
/// that face (same track, no liveness model or cue, its state frozen) and gives its liveness
/// place to the next face. Four real GRID speakers tiled 2x2 in one 720x576 frame: three get
/// liveness (the place limit); once the largest is settled, the fourth gets it.
#[test]
fn a_settled_track_is_only_tracked_and_frees_its_liveness_place() {
    use facegate_daemon::pipeline::liveness::LivenessConfig;
    use facegate_daemon::pipeline::stream::Stream;
    use facegate_daemon::tools::liveness::decode_frames;
    let (pipeline, live) = models();
    let clips = ["grid_bbaf2n", "grid_brbk7n", "grid_lbax4n", "grid_sbwe5n"]
        .map(|c| decode_frames(pipeline, &data(&format!("video/{c}"))).unwrap());
    let (w, h) = clips[0][0].dimensions();
    let n = clips.iter().map(Vec::len).min().unwrap();
    let mut stream = Stream::new(LivenessConfig::default());
    let mut settled = None;
    let mut track_frames = 0;
    for i in 0..n {
        let mut frame = image::RgbImage::new(2 * w, 2 * h);
        for (k, c) in clips.iter().enumerate() {
            let (x, y) = ((k as u32 % 2) * w, (k as u32 / 2) * h);
            image::imageops::replace(&mut frame, &c[i], x.into(), y.into());
        }
        let r = stream
            .process(pipeline, live, &frame, i as f64 * 100.0)
            .unwrap();
        assert_eq!(r.faces.len(), 4, "frame {i}: {} faces", r.faces.len());
        let judged = r.faces.iter().filter(|f| f.observed.eyes.is_some()).count();
        match settled {
            None => {
                assert_eq!(judged, 3, "frame {i}: three places");
                assert!(r.faces.iter().all(|f| !f.settled));
                if i == 10 {
                    let id = r.faces[0].track;
                    track_frames = r.faces[0].frames;
                    assert!(stream.settle(id));
                    settled = Some(id);
                }
            }
            Some(id) => {
                let f = r.faces.iter().find(|f| f.track == id);
                let f = f.unwrap_or_else(|| panic!("frame {i}: the settled face is still tracked"));
                let o = &f.observed;
                assert!(f.settled && o.eyes.is_none() && o.mesh.is_none() && o.moire.is_none());
                assert_eq!(f.frames, track_frames, "frame {i}: its liveness is frozen");
                // The other three (the fourth face included) are judged.
                assert_eq!(judged, 3, "frame {i}");
                assert!(
                    r.faces
                        .iter()
                        .filter(|f| f.track != id)
                        .all(|f| f.observed.eyes.is_some())
                );
            }
        }
    }
    assert!(settled.is_some() && n >= 25, "{n} frames");
    assert!(!stream.settle(u64::MAX), "no such track");
}

/// A settled close-up is followed on a coarser input (`Detector::follow`: lp_d9's ~250 px face
/// at 36 px: the frame at 74x74, under a quarter of the whole-frame pass's scale): it keeps
/// its track on every frame, and its box stays where the whole-frame pass finds the face.
#[test]
fn a_settled_close_up_is_followed_coarsely_and_keeps_its_track() {
    use facegate_daemon::pipeline::detect::iou;
    use facegate_daemon::pipeline::liveness::LivenessConfig;
    use facegate_daemon::pipeline::stream::Stream;
    use facegate_daemon::tools::liveness::decode_frames;
    let (pipeline, live) = models();
    let frames = decode_frames(pipeline, &data("video/lp_d9")).unwrap();
    let frames = &frames[..60];
    let mut stream = Stream::new(LivenessConfig::default()).with_palms(false);
    let mut settled = None;
    let mut worst = 1f32;
    for (i, frame) in frames.iter().enumerate() {
        let r = stream
            .process(pipeline, live, frame, i as f64 * 100.0)
            .unwrap();
        assert_eq!(r.faces.len(), 1, "frame {i}");
        let face = &r.faces[0];
        match settled {
            None if i == 20 => {
                assert!(stream.settle(face.track));
                settled = Some(face.track);
            }
            None => {}
            Some(id) => {
                assert_eq!(
                    face.track, id,
                    "frame {i}: the followed face kept its track"
                );
                assert!(face.settled, "frame {i}");
                let whole = pipeline.detect(frame).unwrap();
                let overlap = iou(&face.face.bbox, &whole[0].bbox);
                worst = worst.min(overlap);
            }
        }
    }
    // 39 frames after settling; the whole frame is still searched every 500 ms (new faces).
    let followed = stream.followed();
    eprintln!(
        "followed {followed} of 39 frames, worst overlap with the whole-frame box {worst:.2}"
    );
    assert!((25..=39).contains(&followed), "followed {followed}");
    assert!(worst >= 0.6, "the followed box drifted: overlap {worst:.2}");
}

/// The fp32 pipeline and the liveness models, loaded once per test binary.
fn models() -> &'static (Pipeline, LiveModels) {
    static M: std::sync::OnceLock<(Pipeline, LiveModels)> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let store = ModelStore::open_first(&[common::models_dir()]).unwrap();
        let pipeline = common::fp32_pipeline(&store);
        (pipeline, LiveModels::load(&store).unwrap())
    })
}

fn scores_per_face(image: &str) -> Vec<ObstacleScores> {
    let (pipeline, live) = models();
    let img = pipeline
        .decode(&std::fs::read(data(image)).unwrap())
        .unwrap();
    let mut faces = pipeline.detect(&img).unwrap();
    faces.sort_by(|a, b| a.bbox[0].total_cmp(&b.bbox[0]));
    let palms = live.obstacles.palms(&img).unwrap();
    faces
        .iter()
        .map(|f| {
            let eyes = live.eyes.observe(&img, f).unwrap();
            ObstacleScores {
                mask: live.obstacles.mask(&img, f).unwrap(),
                hand: obstacles::hand_over_face(f, &palms),
                sunglasses: obstacles::sunglasses(&eyes),
                hat: obstacles::hat(&img, f),
            }
        })
        .collect()
}

/// Obstacles on every face of the shared photos against labels (by eye): the hand on the
/// forehead, the one pair of sunglasses (multi_face.jpg, the leftmost face); nobody
/// wears a mask or a hat. Prints the confusion counts.
#[test]
fn obstacle_scores_on_the_shared_photos() {
    let photos = [
        "photos/astronaut.png",
        "photos/group_sample1.jpg",
        "photos/group_sample2.jpg",
        "photos/group_sample3.jpg",
        "photos/group_sample4.jpg",
        "photos/group_sample5.jpg",
        "photos/group_sample6.jpg",
        "photos/group_t1.jpg",
        "photos/multi_face.jpg",
        "photos/single_face.jpg",
        "photos/hand_on_forehead.png",
    ];
    // The contract's thresholds (the hand is advisory by default: see default.toml).
    let t = facegate_daemon::pipeline::obstacles::ObstacleThresholds {
        hand: 0.3,
        ..Default::default()
    };
    // [tp, fp, fn, tn] per obstacle: mask, hand, glasses, hat.
    let mut confusion = [[0usize; 4]; 4];
    let mut wrong = Vec::new();
    for photo in photos {
        for (i, s) in scores_per_face(photo).iter().enumerate() {
            let truth = [
                false,
                photo.ends_with("hand_on_forehead.png"),
                photo.ends_with("multi_face.jpg") && i == 0,
                false,
            ];
            let said = s.blocking(&t);
            for (k, name) in ["mask", "hand", "glasses", "hat"].iter().enumerate() {
                let flagged = said.contains(name);
                let cell = match (truth[k], flagged) {
                    (true, true) => 0,
                    (false, true) => 1,
                    (true, false) => 2,
                    (false, false) => 3,
                };
                confusion[k][cell] += 1;
                if truth[k] != flagged {
                    wrong.push(format!("{photo} face {i}: {name} {s:?}"));
                }
            }
        }
    }
    eprintln!("obstacle   TP  FP  FN   TN   (faces of the shared photos)");
    for (k, name) in ["mask", "hand", "glasses", "hat"].iter().enumerate() {
        let c = confusion[k];
        eprintln!("{name:<9} {:>3} {:>3} {:>3} {:>4}", c[0], c[1], c[2], c[3]);
    }
    for w in &wrong {
        eprintln!("  wrong: {w}");
    }
    // The hand on the forehead and the sunglasses are found.
    assert_eq!(confusion[1][2], 0, "hand missed: {wrong:?}");
    assert_eq!(confusion[2][0], 1, "sunglasses missed: {wrong:?}");
    // False alarms stay rare: at most one face per obstacle over the 33 faces.
    for (k, name) in ["mask", "hand", "glasses", "hat"].iter().enumerate() {
        assert!(confusion[k][1] <= 1, "{name} false alarms: {wrong:?}");
    }
}

/// Occluders drawn on every face of the shared photos from its landmarks — SYNTHETIC masks,
/// sunglasses, clear glasses (thin dark rims) and hats — against the obstacle scores. Prints
/// the detection rate per occluder; asserts the floors measured when it was written.
#[test]
fn synthetic_occluders_on_the_shared_faces() {
    use image::{Rgb, RgbImage};
    let (pipeline, live) = models();
    let t = facegate_daemon::pipeline::obstacles::ObstacleThresholds::default();
    // Paints pixels whose face-frame coordinates (x along the eyes, y down, in eye distances
    // from the eye midpoint) satisfy `inside`.
    fn paint(
        img: &mut RgbImage,
        lm: &[[f32; 2]; 5],
        colour: [u8; 3],
        inside: impl Fn(f32, f32) -> bool,
    ) {
        let (l, r) = (lm[0], lm[1]);
        let iod = (r[0] - l[0]).hypot(r[1] - l[1]);
        let (c, s) = ((r[0] - l[0]) / iod, (r[1] - l[1]) / iod);
        let mid = [(l[0] + r[0]) / 2.0, (l[1] + r[1]) / 2.0];
        let (w, h) = img.dimensions();
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = (x as f32 - mid[0], y as f32 - mid[1]);
                let (u, v) = ((c * dx + s * dy) / iod, (-s * dx + c * dy) / iod);
                if u.abs() < 2.0 && v.abs() < 2.5 && inside(u, v) {
                    img.put_pixel(x, y, Rgb(colour));
                }
            }
        }
    }
    type Occluder = (
        &'static str,
        &'static str,
        fn(&mut RgbImage, &[[f32; 2]; 5]),
    );
    let occluders: [Occluder; 4] = [
        ("mask", "mask", |img, lm| {
            paint(img, lm, [168, 198, 222], |u, v| {
                (0.45..1.75).contains(&v) && u.abs() < 0.95 - 0.2 * (v - 0.45).max(0.0)
            })
        }),
        ("sunglasses", "glasses", |img, lm| {
            paint(img, lm, [22, 22, 28], |u, v| {
                ((u - 0.5) / 0.42).powi(2) + (v / 0.3).powi(2) <= 1.0
                    || ((u + 0.5) / 0.42).powi(2) + (v / 0.3).powi(2) <= 1.0
                    || (u.abs() < 0.1 && (v + 0.1).abs() < 0.03)
            })
        }),
        ("clear glasses", "glasses", |img, lm| {
            paint(img, lm, [30, 30, 30], |u, v| {
                let ring = |cu: f32| {
                    let d = ((u - cu) / 0.42).powi(2) + (v / 0.3).powi(2);
                    (0.85..=1.0).contains(&d)
                };
                ring(0.5) || ring(-0.5) || (u.abs() < 0.1 && (v + 0.1).abs() < 0.03)
            })
        }),
        ("hat", "hat", |img, lm| {
            paint(img, lm, [70, 45, 95], |u, v| v < -0.45 && u.abs() < 1.3)
        }),
    ];
    let photos: Vec<std::path::PathBuf> = std::fs::read_dir(data("photos"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut rates = Vec::new();
    for (name, obstacle, draw) in occluders {
        let (mut faces_seen, mut flagged) = (0usize, 0usize);
        let mut other_flags: std::collections::BTreeMap<&str, usize> = Default::default();
        for photo in &photos {
            let img = pipeline.decode(&std::fs::read(photo).unwrap()).unwrap();
            for f in pipeline.detect(&img).unwrap() {
                let mut occluded = img.clone();
                draw(&mut occluded, &f.landmarks);
                // Re-detect on the occluded image; match the face by overlap.
                let faces = pipeline.detect(&occluded).unwrap();
                let Some(g) = faces
                    .iter()
                    .max_by(|a, b| {
                        facegate_daemon::pipeline::detect::iou(&a.bbox, &f.bbox)
                            .total_cmp(&facegate_daemon::pipeline::detect::iou(&b.bbox, &f.bbox))
                    })
                    .filter(|g| facegate_daemon::pipeline::detect::iou(&g.bbox, &f.bbox) > 0.3)
                else {
                    continue;
                };
                faces_seen += 1;
                let eyes = live.eyes.observe(&occluded, g).unwrap();
                let s = ObstacleScores {
                    mask: live.obstacles.mask(&occluded, g).unwrap(),
                    hand: 0.0,
                    sunglasses: obstacles::sunglasses(&eyes),
                    hat: obstacles::hat(&occluded, g),
                };
                let said = s.blocking(&t);
                flagged += usize::from(said.contains(&obstacle));
                for o in said.iter().filter(|o| **o != obstacle) {
                    *other_flags.entry(o).or_default() += 1;
                }
            }
        }
        eprintln!(
            "synthetic {name:<14} faces {faces_seen:>3}  flagged as {obstacle:<8} {flagged:>3} ({:>5.1}%)  also flagged {other_flags:?}",
            100.0 * flagged as f64 / faces_seen.max(1) as f64
        );
        rates.push((name, faces_seen, flagged as f64 / faces_seen.max(1) as f64));
    }
    let rate = |n: &str| rates.iter().find(|r| r.0 == n).unwrap().2;
    assert!(
        rates.iter().all(|r| r.1 >= 25),
        "faces lost under occluders: {rates:?}"
    );
    // A flat blue polygon is a poor mask; real masks scored 0.91-0.99 (../shared/models).
    assert!(rate("mask") >= 0.65, "{rates:?}");
    assert!(rate("sunglasses") >= 0.8, "{rates:?}");
    assert!(
        rate("clear glasses") <= 0.1,
        "clear glasses must not block: {rates:?}"
    );
    assert!(rate("hat") >= 0.6, "{rates:?}");
}
