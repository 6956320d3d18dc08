#![allow(clippy::unwrap_used)]
//! Enrollment and authentication sessions over REST with real frames from ../shared/data:
//! enroll from the pexels clip (blinks and head movement present), then 1:1 and 1:N with other
//! frames of the same person succeed, another person gets `no_match_found`, a still photo sent
//! again and again fails liveness, a corrupt frame is a 400 and the session goes on; status and
//! cancel; another client cannot see the session.

use base64::Engine as _;
use facegate_blackbox::{Daemon, cli_json, data, tempdir};
use serde_json::{Value, json};

fn frame(clip: &str, n: usize) -> String {
    let bytes = std::fs::read(data(&format!("video/{clip}/{n:04}.jpg"))).unwrap();
    format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn login(d: &Daemon, c: &Value) -> String {
    let (s, v) = d.post(
        "/api/auth/client/",
        None,
        &json!({"api_key": c["api_key"], "api_secret": c["api_secret"]}),
    );
    assert_eq!(s, 200, "{v}");
    format!("Bearer {}", v["jwt_token"].as_str().unwrap())
}

/// Sends frames until the session ends; returns the last response and the frames sent.
fn run(
    d: &Daemon,
    auth: &str,
    path: &str,
    token: &str,
    frames: impl Iterator<Item = String>,
) -> (Value, usize) {
    let mut last = Value::Null;
    let mut sent = 0;
    for f in frames {
        let (s, v) = d.post(
            path,
            Some(("Authorization", auth)),
            &json!({"session_token": token, "frame_data": f}),
        );
        assert_eq!(s, 200, "{v}");
        sent += 1;
        let done = v["session_status"] != "in_progress";
        last = v;
        if done {
            break;
        }
    }
    (last, sent)
}

#[test]
fn enroll_then_authenticate_over_rest() {
    let dir = tempdir("sessions");
    let a = cli_json(&dir, &["clients", "add", "door-a", "--json"]);
    let b = cli_json(&dir, &["clients", "add", "door-b", "--json"]);
    let d = Daemon::start(&dir, &[]);
    let auth = login(&d, &a);
    let auth_b = login(&d, &b);

    // Enrollment: the pexels clip from file 0096 (hand gone, eyes open; blinks at 0104, 0121).
    let (s, v) = d.post(
        "/api/auth/enrollment/",
        Some(("Authorization", &auth)),
        &json!({"user_id": "wolfgang-lady", "metadata": {"target_samples": 5, "required_blinks": 1}}),
    );
    assert_eq!(s, 201, "{v}");
    let token = v["session_token"].as_str().unwrap().to_owned();
    assert!(
        v["websocket_url"].as_str().unwrap().starts_with("ws://"),
        "{v}"
    );
    // Another client cannot see it.
    let (s, _) = d.get(
        &format!("/api/auth/session/{token}/status/"),
        Some(("Authorization", &auth_b)),
    );
    assert_eq!(s, 404);
    // A corrupt frame is refused; the session goes on.
    let (s, v) = d.post(
        "/api/auth/enrollment/process-frame/",
        Some(("Authorization", &auth)),
        &json!({"session_token": token, "frame_data": "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ=="}),
    );
    assert_eq!(s, 400, "{v}");
    let (done, sent) = run(
        &d,
        &auth,
        "/api/auth/enrollment/process-frame/",
        &token,
        (96..=160).map(|n| frame("pexels_eyes_hand", n)),
    );
    assert_eq!(
        done["session_status"], "completed",
        "after {sent} frames: {done}"
    );
    assert_eq!(done["liveness_verified"], true);
    assert!(
        done["liveness_data"]["blinks_detected"].as_u64().unwrap() >= 1,
        "{done}"
    );
    assert!(
        done["liveness_data"]["motion_events"].as_u64().unwrap() >= 1,
        "{done}"
    );
    let enrollment_id = done["enrollment_id"].as_str().unwrap().to_owned();
    let (_, st) = d.get(
        &format!("/api/auth/session/{token}/status/"),
        Some(("Authorization", &auth)),
    );
    assert_eq!(st["status"], "completed", "{st}");

    // 1:1 and 1:N with later frames of the same person.
    for body in [json!({"user_id": "wolfgang-lady"}), json!({})] {
        let (s, v) = d.post(
            "/api/auth/authentication/",
            Some(("Authorization", &auth)),
            &body,
        );
        assert_eq!(s, 201, "{v}");
        let t = v["session_token"].as_str().unwrap().to_owned();
        let (r, sent) = run(
            &d,
            &auth,
            "/api/auth/authentication/process-frame/",
            &t,
            (161..=183).map(|n| frame("pexels_eyes_hand", n)),
        );
        assert_eq!(r["authenticated"], true, "{body} after {sent} frames: {r}");
        assert_eq!(r["user_id"], "wolfgang-lady");
        assert_eq!(r["matched_enrollment_id"], enrollment_id.as_str());
        assert!(r["confidence"].as_f64().unwrap() >= 0.5, "{r}");
    }

    // Another person (single_face: blinks at 0008-0010) is live but matches nobody.
    let (_, v) = d.post(
        "/api/auth/authentication/",
        Some(("Authorization", &auth)),
        &json!({}),
    );
    let t = v["session_token"].as_str().unwrap().to_owned();
    let (r, _) = run(
        &d,
        &auth,
        "/api/auth/authentication/process-frame/",
        &t,
        (1..=24).map(|n| frame("single_face", n)),
    );
    assert_eq!(
        (r["authenticated"].as_bool(), r["reason"].as_str()),
        (Some(false), Some("no_match_found")),
        "{r}"
    );

    // The same still photo of the enrolled person, sent 20 times: never live.
    let (_, v) = d.post(
        "/api/auth/authentication/",
        Some(("Authorization", &auth)),
        &json!({"metadata": {"max_frames": 20}}),
    );
    let t = v["session_token"].as_str().unwrap().to_owned();
    let still = frame("pexels_eyes_hand", 150);
    let (r, sent) = run(
        &d,
        &auth,
        "/api/auth/authentication/process-frame/",
        &t,
        std::iter::repeat_n(still, 25),
    );
    assert_eq!(sent, 20, "{r}");
    assert_eq!(
        (r["authenticated"].as_bool(), r["reason"].as_str()),
        (Some(false), Some("liveness_failed")),
        "{r}"
    );

    // Client B cannot match A's enrollment with the same live frames.
    let (_, v) = d.post(
        "/api/auth/authentication/",
        Some(("Authorization", &auth_b)),
        &json!({}),
    );
    let t = v["session_token"].as_str().unwrap().to_owned();
    let (r, _) = run(
        &d,
        &auth_b,
        "/api/auth/authentication/process-frame/",
        &t,
        (161..=183).map(|n| frame("pexels_eyes_hand", n)),
    );
    assert_eq!(r["reason"], "no_match_found", "{r}");

    // Cancel: the session takes no more frames.
    let (_, v) = d.post(
        "/api/auth/authentication/",
        Some(("Authorization", &auth)),
        &json!({}),
    );
    let t = v["session_token"].as_str().unwrap().to_owned();
    let (s, v) = d.delete(
        &format!("/api/auth/session/{t}/"),
        Some(("Authorization", &auth)),
    );
    assert_eq!((s, v["success"].as_bool()), (200, Some(true)), "{v}");
    let (s, v) = d.post(
        "/api/auth/authentication/process-frame/",
        Some(("Authorization", &auth)),
        &json!({"session_token": t, "frame_data": frame("pexels_eyes_hand", 161)}),
    );
    assert_eq!(s, 409, "{v}");
    assert!(d.stop().success());
    std::fs::remove_dir_all(dir).unwrap();
}
