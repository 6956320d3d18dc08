#![allow(clippy::unwrap_used)]
//! The WebSocket protocol against the real binary, driven by the reference's own client logic:
//! - the seed `003_*` "Enrollment Flow" / "Authentication Flow" clients are lockstep: send one
//!   `process_frame`, read ONE message, stop at `enrollment_complete` / `authentication_result`;
//! - the `002_*` guide's client sends `{type:"frame", image}` (and here binary JPEG) on its own
//!   clock and reads whatever comes, until `enrollment_complete` / `authentication_complete`.
//!
//! Both enroll a person from real frames and then authenticate them; exactly one reply per
//! frame is asserted; the socket stays open after the completion until the client closes it.
//! Door timing (10 fps): enrollment within 5 s of frames, 1:1 / 1:N of the enrolled person
//! within 2 s, another person `no_match_found` (not `liveness_failed`) within 3 s.
//! Also: ping/pong, a bad token gets an `error` and close 1008, a frame after the completion
//! gets one `error` reply.

use std::time::{Duration, Instant};

use base64::Engine as _;
use facegate_blackbox::{Daemon, Ws, cli_json, data, tempdir, ws_next as next};
use serde_json::{Value, json};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

fn jpeg(clip: &str, n: usize) -> Vec<u8> {
    std::fs::read(data(&format!("video/{clip}/{n:04}.jpg"))).unwrap()
}

fn data_url(bytes: &[u8]) -> String {
    format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The seed 003 lockstep client: one `process_frame`, one `recv()`, until `stop_at`. Returns
/// the final message, the frames sent, and every message type received.
fn lockstep(
    sock: &mut Ws,
    frames: impl Iterator<Item = Vec<u8>>,
    stop_at: &str,
) -> (Value, usize, Vec<String>) {
    let mut types = Vec::new();
    let mut sent = 0;
    for f in frames {
        sock.send(Message::text(
            json!({"type": "process_frame", "frame_data": data_url(&f)}).to_string(),
        ))
        .unwrap();
        sent += 1;
        let data = next(sock).unwrap_or_else(|c| panic!("closed {c} after {sent} frames"));
        let t = data["type"].as_str().unwrap().to_owned();
        // Every reply carries the whole progress payload.
        for k in [
            "frames_processed",
            "liveness_data",
            "visual_data",
            "message",
        ] {
            assert!(data.get(k).is_some(), "{k} missing in {t}: {data}");
        }
        assert_eq!(
            data["frames_processed"], sent,
            "one reply per frame: {data}"
        );
        types.push(t.clone());
        if t == stop_at {
            return (data, sent, types);
        }
        assert_ne!(t, "error", "{data}");
    }
    panic!("no {stop_at} after {sent} frames: {types:?}");
}

/// The 002 guide's client: frames on its own 10 fps clock, messages read as they come, until
/// `stop_at`. Returns the final message, the frames sent, and the replies per frame.
fn event_driven(
    sock: &mut Ws,
    frames: impl Iterator<Item = Vec<u8>>,
    stop_at: &str,
) -> (Value, usize, Vec<Value>) {
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = sock.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    }
    let mut replies = Vec::new();
    let mut sent = 0;
    let mut done = None;
    let read_until = |sock: &mut Ws, until: Instant, replies: &mut Vec<Value>| {
        while Instant::now() < until {
            match sock.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    replies.push(v.clone());
                    if v["type"] == stop_at {
                        return Some(v);
                    }
                }
                Ok(_) => {}
                Err(e) if facegate_blackbox::read_timed_out(&e) => {}
                Err(e) => panic!("socket failed: {e}"),
            }
        }
        None
    };
    for (i, f) in frames.enumerate() {
        let msg = if i % 2 == 0 {
            Message::binary(f)
        } else {
            Message::text(
                json!({"type": "frame", "image": base64::engine::general_purpose::STANDARD.encode(&f)}).to_string(),
            )
        };
        sock.send(msg).unwrap();
        sent += 1;
        if let Some(v) = read_until(
            sock,
            Instant::now() + Duration::from_millis(100),
            &mut replies,
        ) {
            done = Some(v);
            break;
        }
    }
    // Replies to frames still in flight.
    let done = done
        .or_else(|| read_until(sock, Instant::now() + Duration::from_secs(5), &mut replies))
        .unwrap_or_else(|| {
            panic!(
                "no {stop_at} after {sent} frames; last reply: {}",
                replies.last().unwrap_or(&Value::Null)
            )
        });
    read_until(
        sock,
        Instant::now() + Duration::from_millis(300),
        &mut replies,
    );
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = sock.get_ref() {
        s.set_read_timeout(None).unwrap();
    }
    (done, sent, replies)
}

#[test]
fn reference_clients_enroll_and_authenticate_over_websocket() {
    let dir = tempdir("ws");
    let a = cli_json(&dir, &["clients", "add", "door-a", "--json"]);
    let d = Daemon::start(&dir, &[]);
    let auth = d.login(&a);

    // An unknown token: an error message, then close 1008.
    let mut bad = d.ws("no-such-token");
    let m = next(&mut bad).unwrap();
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(next(&mut bad), Err(u16::from(CloseCode::Policy)));

    // --- seed 003: lockstep enrollment of a talking woman (lp_d13: blinks at 0015, 0027,
    // 0035; her lips move as she speaks, which is what makes her live by default).
    let token = d.session(&auth, "/api/auth/enrollment/", &json!({"user_id": "d13"}));
    let mut sock = d.ws(&token);
    let hello = next(&mut sock).unwrap();
    assert_eq!(
        (hello["type"].as_str(), hello["session_type"].as_str()),
        (Some("connection_established"), Some("enrollment"))
    );
    sock.send(Message::text(json!({"type": "ping"}).to_string()))
        .unwrap();
    assert_eq!(next(&mut sock).unwrap()["type"], "pong");
    let (complete, sent, types) = lockstep(
        &mut sock,
        (1..=60).map(|n| jpeg("lp_d13", n)),
        "enrollment_complete",
    );
    eprintln!("003 enrollment: {sent} frames, {types:?}");
    assert!(sent <= 50, "enrollment within 5 s of frames: {sent}");
    assert!(complete["enrollment_id"].is_string(), "{complete}");
    assert_eq!(complete["liveness_verified"], true);
    assert!(
        types.iter().all(|t| [
            "enrollment_progress",
            "frame_rejected",
            "liveness_instruction",
            "enrollment_complete"
        ]
        .contains(&t.as_str())),
        "003 names only: {types:?}"
    );
    assert!(
        types.contains(&"enrollment_progress".to_owned()),
        "{types:?}"
    );
    // encrypted_data: AES-256-GCM under SHA-256(api_secret), the enrollment's id inside.
    assert_eq!(complete["encrypted_data"]["algorithm"], "AES-256-GCM");
    let opened = facegate_blackbox::open_payload(
        &complete["encrypted_data"],
        a["api_key"].as_str().unwrap(),
        a["api_secret"].as_str().unwrap(),
    );
    assert_eq!(opened["id"], complete["enrollment_id"], "{opened}");
    assert_eq!(opened["user_id"], "d13");
    assert!(opened["timestamp"].is_string() && opened.get("embedding").is_none());
    // The socket stays open after the completion: a late frame gets one error reply.
    sock.send(Message::binary(jpeg("lp_d13", 61))).unwrap();
    assert_eq!(next(&mut sock).unwrap()["type"], "error");
    // The client closes (1000); the server answers its close handshake.
    sock.close(Some(tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .unwrap();
    assert_eq!(next(&mut sock), Err(1000));

    // --- seed 003: lockstep 1:1 authentication of the same person on later frames.
    let token = d.session(
        &auth,
        "/api/auth/authentication/",
        &json!({"user_id": "d13"}),
    );
    let mut sock = d.ws(&token);
    assert_eq!(next(&mut sock).unwrap()["type"], "connection_established");
    let (result, sent, types) = lockstep(
        &mut sock,
        (61..=117).map(|n| jpeg("lp_d13", n)),
        "authentication_result",
    );
    eprintln!("003 verification: {sent} frames, {types:?}");
    assert_eq!(result["authenticated"], true, "{result}");
    assert_eq!(result["user_id"], "d13");
    assert!(result["confidence"].as_f64().unwrap() >= 0.5, "{result}");
    assert_eq!(result["encrypted_data"]["algorithm"], "AES-256-GCM");
    assert!(sent <= 20, "1:1 within 2 s of frames: {sent}");
    drop(sock);

    // --- 002 guide: event-driven enrollment of a cooperating person (lp_d9), then 1:N.
    let token = d.session(
        &auth,
        "/api/auth/enrollment/",
        &json!({"user_id": "d9", "session_type": "webcam", "metadata": {"target_samples": 3}}),
    );
    let mut sock = d.ws(&token);
    assert_eq!(next(&mut sock).unwrap()["type"], "connection_established");
    let (complete, sent, replies) = event_driven(
        &mut sock,
        (40..=100).map(|n| jpeg("lp_d9", n)),
        "enrollment_complete",
    );
    let types: Vec<&str> = replies.iter().filter_map(|r| r["type"].as_str()).collect();
    eprintln!("002 enrollment: {sent} frames, {types:?}");
    assert!(complete["enrollment_id"].is_string(), "{complete}");
    let at = replies
        .iter()
        .position(|r| r["type"] == "enrollment_complete")
        .unwrap();
    assert!(at < 50, "enrollment within 5 s of frames: {}", at + 1);
    // One reply per frame: every frame sent got exactly one message; after the completion
    // only errors (frames that were in flight).
    assert_eq!(replies.len(), sent, "{types:?}");
    let at = replies
        .iter()
        .position(|r| r["type"] == "enrollment_complete")
        .unwrap();
    assert!(
        replies[at + 1..].iter().all(|r| r["type"] == "error"),
        "{types:?}"
    );
    for (i, r) in replies[..=at].iter().enumerate() {
        assert_eq!(r["frames_processed"], i + 1, "{r}");
        assert!(
            [
                "frame_processed",
                "frame_rejected",
                "liveness_instruction",
                "enrollment_complete"
            ]
            .contains(&r["type"].as_str().unwrap()),
            "002 names only: {types:?}"
        );
    }
    drop(sock);

    let token = d.session(&auth, "/api/auth/authentication/", &json!({}));
    let mut sock = d.ws(&token);
    assert_eq!(next(&mut sock).unwrap()["type"], "connection_established");
    let (result, sent, replies) = event_driven(
        &mut sock,
        (112..=170).map(|n| jpeg("lp_d9", n)),
        "authentication_complete",
    );
    eprintln!(
        "002 identification: {sent} frames, {} replies",
        replies.len()
    );
    assert_eq!(result["authenticated"], true, "{result}");
    assert_eq!(result["user_id"], "d9");
    assert_eq!(replies.len(), sent);
    assert!(
        result["frames_processed"].as_u64().unwrap() <= 20,
        "1:N within 2 s of frames: {result}"
    );
    // The server closes 10 s after the completion if the client does not.
    let started = Instant::now();
    assert_eq!(next(&mut sock), Err(1000));
    let waited = started.elapsed();
    assert!(
        waited > Duration::from_secs(8) && waited < Duration::from_secs(15),
        "{waited:?}"
    );

    drop(sock);

    // --- Another person (a GRID speaker, 360x288): no_match_found within 3 s, not
    // liveness_failed.
    let token = d.session(&auth, "/api/auth/authentication/", &json!({}));
    let mut sock = d.ws(&token);
    assert_eq!(next(&mut sock).unwrap()["type"], "connection_established");
    let (result, sent, _) = lockstep(
        &mut sock,
        (1..=30).map(|n| jpeg("grid_bbaf2n", n)),
        "authentication_result",
    );
    assert_eq!(
        (result["authenticated"].as_bool(), result["reason"].as_str()),
        (Some(false), Some("no_match_found")),
        "after {sent} frames: {result}"
    );

    let (_, list) = d.get("/api/auth/enrollments/", Some(("Authorization", &auth)));
    assert_eq!(list["count"], 2);
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}
