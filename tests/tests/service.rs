#![allow(clippy::unwrap_used)]
//! The service around the sessions, against the real binary: request ids, the OpenAPI
//! document and Swagger UI, the optional Unix socket, and WebSocket frames that are too big
//! or corrupt (the session and the daemon go on).

use std::io::{Read, Write};

use facegate_blackbox::{Daemon, cli_json, tempdir, ws_next as next};
use serde_json::{Value, json};
use tungstenite::Message;

#[test]
fn request_ids_openapi_and_swagger_ui() {
    let dir = tempdir("service");
    let d = Daemon::start(&dir, &[]);
    let (s, headers, _) = d.get_text("/health/", &[("X-Request-Id", "door-7f3a")]);
    let id = |hs: &[(String, String)]| {
        hs.iter()
            .find(|(k, _)| k == "x-request-id")
            .map(|(_, v)| v.clone())
    };
    assert_eq!((s, id(&headers).as_deref()), (200, Some("door-7f3a")));
    let (_, headers, _) = d.get_text("/no/such/route", &[]);
    let fresh = id(&headers).expect("a generated request id");
    assert!(fresh.len() >= 16, "{fresh}");
    // An unprintable or huge id is replaced, not echoed.
    let long = "x".repeat(300);
    let (_, headers, _) = d.get_text("/health/", &[("X-Request-Id", &long)]);
    assert_ne!(id(&headers).as_deref(), Some(long.as_str()));

    // A plain GET on a WebSocket endpoint: the envelope's 400, not a bare text answer.
    let (s, v) = d.get("/ws/auth/process-image/some-token/", None);
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );

    // OpenAPI 3 generated from the handlers: every route of the contract is described.
    let (s, v) = d.get("/api/schema/", None);
    assert_eq!(s, 200, "{v}");
    assert!(
        v["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        v["openapi"]
    );
    let paths = v["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/auth/client/", "post"),
        ("/api/auth/token/", "post"),
        ("/api/auth/token/refresh/", "post"),
        ("/api/auth/enrollment/", "post"),
        ("/api/auth/enrollment/process-frame/", "post"),
        ("/api/auth/authentication/", "post"),
        ("/api/auth/authentication/process-frame/", "post"),
        ("/api/auth/session/{token}/status/", "get"),
        ("/api/auth/session/{token}/", "delete"),
        ("/api/auth/enrollments/", "get"),
        ("/api/auth/enrollments/{id}/", "get"),
        ("/api/auth/enrollments/{id}/", "delete"),
        ("/api/analytics/authentication-metrics/", "get"),
        ("/api/analytics/system-metrics/", "get"),
        ("/ws/auth/process-image/{token}/", "get"),
        ("/ws/events", "get"),
        ("/api/admin/clients/", "get"),
        ("/api/admin/clients/", "post"),
        ("/api/admin/keys/rotate/", "post"),
        ("/health/", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not in the OpenAPI document"
        );
    }
    let schemas = &v["components"]["schemas"];
    for name in [
        "CreateEnrollment",
        "ProcessFrame",
        "ClientLogin",
        "OperatorLogin",
        "ErrorBody",
    ] {
        assert!(schemas.get(name).is_some(), "schema {name} missing");
    }
    assert_eq!(
        v["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // Swagger UI: the page and its script are served from the binary.
    let (s, _, html) = d.get_text("/api/schema/swagger-ui/", &[]);
    assert_eq!(s, 200);
    assert!(html.contains("swagger-ui"), "{html}");
    let (s, _, js) = d.get_text("/api/schema/swagger-ui/swagger-ui-bundle.js", &[]);
    assert!(s == 200 && js.len() > 100_000, "{s} {}", js.len());
    let (s, _, init) = d.get_text("/api/schema/swagger-ui/swagger-initializer.js", &[]);
    assert!(s == 200 && init.contains("/api/schema/"), "{init}");
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

/// One HTTP/1.1 request over a Unix socket; the status and the body.
fn unix_get(path: &std::path::Path, uri: &str) -> (u16, String) {
    unix_request(path, "GET", uri)
}

fn unix_request(path: &std::path::Path, method: &str, uri: &str) -> (u16, String) {
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    write!(
        s,
        "{method} {uri} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        raw.split("\r\n\r\n").nth(1).unwrap_or("").to_owned(),
    )
}

#[test]
fn the_unix_socket_serves_the_same_api() {
    let dir = tempdir("unix");
    let sock = dir.join("api.sock");
    let config = dir.join("unix.toml");
    std::fs::write(
        &config,
        format!("[api]\nunix_socket = \"{}\"\n", sock.display()),
    )
    .unwrap();
    // A stale socket file left by a killed daemon does not stop the start.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let d = Daemon::start_with(&dir, &[], &["--config", config.to_str().unwrap()]);
    let (s, body) = unix_get(&sock, "/health/");
    assert_eq!(s, 200, "{body}");
    let mode = std::fs::metadata(&sock).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(mode.mode() & 0o777, 0o660);
    let (s, body) = unix_get(&sock, "/api/auth/enrollments/");
    assert_eq!(s, 401, "the socket is no way around authentication: {body}");
    // The socket (and only it) hands out sync tokens; `facegate sync-token` on a running
    // terminal asks it. The token opens the sync API (503 here: sync is off), no other route.
    let (s, body) = unix_request(&sock, "POST", "/api/sync/token");
    assert_eq!(s, 200, "{body}");
    let (s, _) = d.post("/api/sync/token", None, &serde_json::json!({}));
    assert!(s == 404 || s == 405, "not over TCP: {s}");
    let out = facegate_blackbox::cli(&dir, &["--config", config.to_str().unwrap(), "sync-token"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let bearer = format!("Bearer {token}");
    let (s, v) = d.get("/api/sync/changes", Some(("Authorization", &bearer)));
    assert_eq!(
        s, 503,
        "a valid sync token; sync is off on this terminal: {v}"
    );
    let (s, _) = d.get("/api/auth/enrollments/", Some(("Authorization", &bearer)));
    assert_eq!(s, 401, "a sync token is no API token");
    // Another daemon cannot take a socket in use.
    let other = std::process::Command::new(facegate_blackbox::binary())
        .args(["--data-dir", dir.join("other").to_str().unwrap()])
        .args([
            "--config",
            config.to_str().unwrap(),
            "run",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("served by another process"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert!(d.stop().success());
    assert!(!sock.exists(), "the socket file is removed at shutdown");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn oversized_and_corrupt_websocket_frames() {
    let dir = tempdir("wsbad");
    let a = cli_json(&dir, &["clients", "add", "door-a", "--json"]);
    let d = Daemon::start(&dir, &[]);
    let auth = d.login(&a);
    let token = d.session(&auth, "/api/auth/authentication/", &json!({}));
    let mut sock = d.ws(&token);
    assert_eq!(next(&mut sock).unwrap()["type"], "connection_established");
    // Corrupt JPEG bytes and a text frame that is not base64: an `error` each, session goes on.
    sock.send(Message::binary(b"\xff\xd8\xff\xe0 not a jpeg".to_vec()))
        .unwrap();
    let m = next(&mut sock).unwrap();
    assert_eq!(
        (m["type"].as_str(), m["code"].as_u64()),
        (Some("error"), Some(400)),
        "{m}"
    );
    sock.send(Message::text(
        json!({"type": "frame", "image": "***"}).to_string(),
    ))
    .unwrap();
    assert_eq!(next(&mut sock).unwrap()["error"], "invalid_request");
    sock.send(Message::text(json!({"type": "ping"}).to_string()))
        .unwrap();
    assert_eq!(next(&mut sock).unwrap()["type"], "pong");
    // 20 MB in one message: beyond the message limit, the socket is closed (1009 "too big"),
    // nothing is buffered past the limit, and the daemon serves on.
    let _ = sock.send(Message::binary(vec![0u8; 20 * 1024 * 1024]));
    let closed = next(&mut sock);
    assert!(matches!(closed, Err(1009 | 1006)), "{closed:?}");
    let (s, _) = d.get("/health/", None);
    assert_eq!(s, 200);
    let (s, st) = d.get(
        &format!("/api/auth/session/{token}/status/"),
        Some(("Authorization", &auth)),
    );
    assert_eq!((s, st["status"].as_str()), (200, Some("active")), "{st}");
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn frames_beyond_the_workers_are_shed_with_429_not_queued() {
    let dir = tempdir("shed");
    let config = dir.join("shed.toml");
    std::fs::write(
        &config,
        "[api]\nframe_workers = 1\nframe_queue = 0\nframes_per_minute = 100000\n",
    )
    .unwrap();
    let a = cli_json(&dir, &["clients", "add", "door-a", "--json"]);
    let d = Daemon::start_with(&dir, &[], &["--config", config.to_str().unwrap()]);
    let auth = d.login(&a);
    let jpeg = std::fs::read(facegate_blackbox::data("video/pexels_eyes_hand/0100.jpg")).unwrap();
    let frame = {
        use base64::Engine as _;
        format!(
            "data:image/jpeg;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(jpeg)
        )
    };
    let tokens: Vec<String> = (0..6)
        .map(|_| {
            d.session(
                &auth,
                "/api/auth/authentication/",
                &json!({"metadata": {"max_frames": 100}}),
            )
        })
        .collect();
    // Six sessions send a frame at the same instant to one worker with no queue: whoever
    // finds it busy is refused at once; a few rounds so the race cannot hide it.
    let (mut ok, mut shed) = (0, 0);
    for _ in 0..5 {
        let barrier = std::sync::Barrier::new(tokens.len());
        let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
            let handles: Vec<_> = tokens
                .iter()
                .map(|t| {
                    let (d, auth, frame, barrier) = (&d, &auth, &frame, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        d.post(
                            "/api/auth/authentication/process-frame/",
                            Some(("Authorization", auth)),
                            &json!({"session_token": t, "frame_data": frame}),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (s, v) in answers {
            match s {
                200 => ok += 1,
                429 => {
                    assert_eq!(v["error"], "rate_limit_exceeded", "{v}");
                    assert!(v["message"].as_str().unwrap().contains("busy"), "{v}");
                    shed += 1;
                }
                other => panic!("{other}: {v}"),
            }
        }
        if shed > 0 && ok > 0 {
            break;
        }
    }
    assert!(ok > 0 && shed > 0, "ok {ok}, shed {shed}");
    let (_, _, text) = d.get_text("/metrics", &[]);
    assert!(
        text.contains(&format!(
            "facegate_frames_total{{kind=\"identification\",outcome=\"busy\"}} {shed}"
        )),
        "{text}"
    );
    assert_eq!(d.get("/health/", None).0, 200);
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn failed_logins_are_limited_per_minute() {
    let dir = tempdir("logins");
    let config = dir.join("logins.toml");
    std::fs::write(&config, "[api]\nfailed_logins_per_minute = 3\n").unwrap();
    let a = cli_json(&dir, &["clients", "add", "door-a", "--json"]);
    let out = facegate_blackbox::cli_stdin(
        &dir,
        &["operators", "set", "admin@example.org"],
        "a long operator password\n",
    );
    assert!(out.status.success());
    let d = Daemon::start_with(&dir, &[], &["--config", config.to_str().unwrap()]);
    let login = |password: &str| {
        d.post(
            "/api/auth/token/",
            None,
            &json!({"email": "admin@example.org", "password": password}),
        )
    };
    for _ in 0..3 {
        assert_eq!(login("guess guess guess").0, 401);
    }
    // The minute's failures are used up: even the right password waits (429, Retry-After).
    let (s, v) = login("a long operator password");
    assert_eq!(
        (s, v["error"].as_str()),
        (429, Some("rate_limit_exceeded")),
        "{v}"
    );
    assert!(v["details"]["retry_after_s"].as_u64().unwrap() >= 1, "{v}");
    // Client logins are a separate budget.
    let auth = d.login(&a);
    assert!(auth.starts_with("Bearer "));
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn shutdown_closes_open_websockets_with_1001() {
    let dir = tempdir("shutdown");
    let a = cli_json(&dir, &["clients", "add", "door-a", "--json"]);
    let d = Daemon::start(&dir, &[]);
    let auth = d.login(&a);
    let token = d.session(&auth, "/api/auth/authentication/", &json!({}));
    let mut sock = d.ws(&token);
    assert_eq!(next(&mut sock).unwrap()["type"], "connection_established");
    // SIGTERM with a kiosk still connected: the socket is told "going away" and the daemon
    // exits (it does not wait for the kiosk to hang up).
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let code = loop {
            match next(&mut sock) {
                Ok(_) => continue,
                Err(code) => break code,
            }
        };
        tx.send(code).unwrap();
    });
    let started = std::time::Instant::now();
    assert!(d.stop().success());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let code = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(code, 1001, "close code");
    reader.join().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_session_left_to_expire_is_an_audited_attempt() {
    let dir = tempdir("expiry");
    let a = cli_json(&dir, &["clients", "add", "door-a", "--json"]);
    let d = Daemon::start(&dir, &[]);
    let auth = d.login(&a);
    d.session(
        &auth,
        "/api/auth/authentication/",
        &json!({"user_id": "visitor", "metadata": {"timeout_seconds": 5}}),
    );
    // Nobody sends a frame: within the expiry plus one sweep (5 s) the attempt is audited.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let m = loop {
        let (_, m) = d.get(
            "/api/analytics/authentication-metrics/",
            Some(("Authorization", &auth)),
        );
        if m["total_attempts"] == 1 || std::time::Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(m["failure_reasons"], json!({"session_expired": 1}), "{m}");
    let (_, sys) = d.get(
        "/api/analytics/system-metrics/",
        Some(("Authorization", &auth)),
    );
    assert_eq!(sys["active_sessions"], 0, "{sys}");
    assert!(d.stop().success());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn operators_manage_clients_and_rotate_keys_while_serving() {
    let dir = tempdir("admin");
    let a = cli_json(&dir, &["clients", "add", "door-a", "--json"]);
    let out = facegate_blackbox::cli(
        &dir,
        &[
            "enroll",
            "--user-id",
            "alice",
            "--client",
            "door-a",
            facegate_blackbox::data("photos/astronaut.png")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(out.status.success());
    let out = facegate_blackbox::cli_stdin(
        &dir,
        &["operators", "set", "admin@example.org"],
        "a long operator password\n",
    );
    assert!(out.status.success());
    let d = Daemon::start(&dir, &[]);
    let auth_a = d.login(&a);
    let (_, v) = d.post(
        "/api/auth/token/",
        None,
        &json!({"username": "admin@example.org", "password": "a long operator password"}),
    );
    let op = format!("Bearer {}", v["access"].as_str().unwrap());
    let rows_before = d.audit_rows();
    // A client token manages nothing.
    assert_eq!(
        d.get("/api/admin/clients/", Some(("Authorization", &auth_a)))
            .0,
        403
    );
    let (s, _) = d.post(
        "/api/admin/clients/",
        Some(("Authorization", &auth_a)),
        &json!({"name": "mine"}),
    );
    assert_eq!(s, 403);
    assert_eq!(
        d.post(
            "/api/admin/keys/rotate/",
            Some(("Authorization", &auth_a)),
            &json!({})
        )
        .0,
        403
    );
    // The operator adds a client while the daemon runs (the CLI needs it stopped).
    let (s, kiosk) = d.post(
        "/api/admin/clients/",
        Some(("Authorization", &op)),
        &json!({"name": "kiosk-2", "payload_encryption": "AES-256-CBC"}),
    );
    assert_eq!(s, 201, "{kiosk}");
    assert_eq!(kiosk["payload_encryption"], "AES-256-CBC");
    for (body, code) in [
        (json!({"name": "kiosk-2"}), 409),
        (json!({"name": "no spaces please"}), 422),
        (
            json!({"name": "kiosk-3", "payload_encryption": "ROT13"}),
            422,
        ),
    ] {
        let (s, v) = d.post("/api/admin/clients/", Some(("Authorization", &op)), &body);
        assert_eq!(s, code, "{body}: {v}");
    }
    let auth_k = d.login(&kiosk);
    let (_, list) = d.get("/api/auth/enrollments/", Some(("Authorization", &auth_k)));
    assert_eq!(list["count"], 0);
    let (s, clients) = d.get("/api/admin/clients/", Some(("Authorization", &op)));
    assert_eq!((s, clients["count"].as_u64()), (200, Some(2)), "{clients}");
    let text = clients.to_string();
    assert!(!text.contains("secret") && !text.contains(kiosk["api_key"].as_str().unwrap()));

    // Key rotation while serving: every value re-sealed; tokens, logins, enrollments go on.
    let (s, r) = d.post(
        "/api/admin/keys/rotate/",
        Some(("Authorization", &op)),
        &json!({}),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r["master_key"], "replaced",
        "the key file's master key: {r}"
    );
    assert!(r["resealed"]["enrollments"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["resealed"]["clients"].as_u64().unwrap() >= 2, "{r}");
    // Audited: the client created, its login, the rotation (refusals write nothing).
    assert_eq!(d.audit_rows(), rows_before + 3);
    let (s, list) = d.get("/api/auth/enrollments/", Some(("Authorization", &auth_a)));
    assert_eq!((s, list["count"].as_u64()), (200, Some(1)), "{list}");
    d.login(&kiosk);
    assert!(d.stop().success());
    // And after a restart on the new keys.
    let d = Daemon::start(&dir, &[]);
    let auth_a = d.login(&a);
    let (_, list) = d.get("/api/auth/enrollments/", Some(("Authorization", &auth_a)));
    assert_eq!(list["results"][0]["user_id"], "alice");
    d.login(&kiosk);
    assert!(d.stop().success());
    std::fs::remove_dir_all(dir).unwrap();
}
