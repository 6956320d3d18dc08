#![allow(clippy::unwrap_used)]
//! The WebSocket protocol against the real binary: an enrollment streamed as binary JPEG
//! frames and data-URL text frames until `enrollment_complete` and close 1000; ping/pong;
//! a bad token gets an `error` and close 1008.

use base64::Engine as _;
use facegate_blackbox::{Daemon, cli_json, data, tempdir, ws_next as next};
use serde_json::json;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn enrollment_over_websocket() {
    let dir = tempdir("ws");
    let a = cli_json(&dir, &["clients", "add", "door-a", "--json"]);
    let d = Daemon::start(&dir, &[]);
    let (_, v) = d.post(
        "/api/auth/client/",
        None,
        &json!({"api_key": a["api_key"], "api_secret": a["api_secret"]}),
    );
    let auth = format!("JWT {}", v["access_token"].as_str().unwrap());

    // An unknown token: an error message, then close 1008.
    let mut bad = d.ws("no-such-token");
    let m = next(&mut bad).unwrap();
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(next(&mut bad), Err(u16::from(CloseCode::Policy)));

    let (s, v) = d.post(
        "/api/auth/enrollment/",
        Some(("Authorization", &auth)),
        &json!({"user_id": "lady"}),
    );
    assert_eq!(s, 201, "{v}");
    let token = v["session_token"].as_str().unwrap().to_owned();
    let mut sock = d.ws(&token);
    let hello = next(&mut sock).unwrap();
    assert_eq!(
        (hello["type"].as_str(), hello["session_type"].as_str()),
        (Some("connection_established"), Some("enrollment"))
    );
    sock.send(Message::text(json!({"type": "ping"}).to_string()))
        .unwrap();
    assert_eq!(next(&mut sock).unwrap()["type"], "pong");

    let mut seen = std::collections::BTreeSet::new();
    let mut complete = None;
    'frames: for n in 96..=160 {
        let bytes = std::fs::read(data(&format!("video/pexels_eyes_hand/{n:04}.jpg"))).unwrap();
        // Alternate binary JPEG and the two text spellings.
        let msg = match n % 3 {
            0 => Message::binary(bytes),
            1 => Message::text(json!({"type": "frame", "image": base64::engine::general_purpose::STANDARD.encode(&bytes)}).to_string()),
            _ => Message::text(
                json!({"type": "process_frame", "frame_data": format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(&bytes))}).to_string(),
            ),
        };
        sock.send(msg).unwrap();
        loop {
            let m = next(&mut sock).unwrap();
            let t = m["type"].as_str().unwrap().to_owned();
            seen.insert(t.clone());
            match t.as_str() {
                "enrollment_complete" => {
                    complete = Some(m);
                    break 'frames;
                }
                "enrollment_progress" => break,
                "frame_processed" => {
                    for k in [
                        "frames_processed",
                        "blinks_detected",
                        "motion_events",
                        "no_obstacles",
                        "visual_data",
                    ] {
                        assert!(!m[k].is_null(), "{k} missing: {m}");
                    }
                }
                "liveness_instruction" | "frame_rejected" => {}
                other => panic!("unexpected {other}: {m}"),
            }
        }
    }
    let complete = complete.expect("the enrollment completed");
    assert!(complete["enrollment_id"].is_string(), "{complete}");
    assert_eq!(complete["liveness_verified"], true);
    // encrypted_data: AES-256-GCM under SHA-256(api_secret), the enrollment's id inside.
    assert_eq!(complete["encrypted_data"]["algorithm"], "AES-256-GCM");
    let opened = facegate_blackbox::open_payload(
        &complete["encrypted_data"],
        a["api_key"].as_str().unwrap(),
        a["api_secret"].as_str().unwrap(),
    );
    assert_eq!(opened["id"], complete["enrollment_id"], "{opened}");
    assert_eq!(opened["user_id"], "lady");
    assert!(opened["timestamp"].is_string() && opened.get("embedding").is_none());
    assert!(
        seen.contains("frame_processed") && seen.contains("enrollment_progress"),
        "{seen:?}"
    );
    assert_eq!(next(&mut sock), Err(1000));
    let (_, list) = d.get("/api/auth/enrollments/", Some(("Authorization", &auth)));
    assert_eq!(list["count"], 1);
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}
