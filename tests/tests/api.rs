#![allow(clippy::unwrap_used)]
//! The API over real HTTP against the real binary: health, client tokens (both seeds'
//! spellings), the three authentication schemes, expired / forged / `alg: none` tokens,
//! tenancy between two clients, malformed and oversized bodies, graceful shutdown.

use facegate_blackbox::{Daemon, b64url, b64url_decode, cli, cli_json, data, tempdir};
use serde_json::json;

/// Two clients and one enrollment each (via the CLI, before the daemon holds the store).
fn setup(
    tag: &str,
) -> (
    std::path::PathBuf,
    serde_json::Value,
    serde_json::Value,
    String,
) {
    let dir = tempdir(tag);
    let a = cli_json(&dir, &["clients", "add", "door-a", "--json"]);
    let b = cli_json(&dir, &["clients", "add", "door-b", "--json"]);
    let orl = |s: u32| data(&format!("faces/orl/s{s:02}/01.pgm"));
    let e = cli_json(
        &dir,
        &[
            "enroll",
            "--client",
            "door-a",
            "--user-id",
            "alice",
            orl(4).to_str().unwrap(),
            "--json",
        ],
    );
    cli_json(
        &dir,
        &[
            "enroll",
            "--client",
            "door-b",
            "--user-id",
            "bob",
            orl(9).to_str().unwrap(),
            "--json",
        ],
    );
    (dir, a, b, e["enrollment_id"].as_str().unwrap().to_owned())
}

fn token(d: &Daemon, client: &serde_json::Value) -> String {
    let (status, v) = d.post(
        "/api/auth/client/",
        None,
        &json!({"api_key": client["api_key"], "api_secret": client["api_secret"]}),
    );
    assert_eq!(status, 200, "{v}");
    v["jwt_token"].as_str().unwrap().to_owned()
}

fn assert_envelope(v: &serde_json::Value, error: &str) {
    assert_eq!(v["error"], error, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(
        v["details"].is_object() && v["timestamp"].is_string(),
        "{v}"
    );
}

#[test]
fn tokens_schemes_tenancy_and_bad_requests() {
    let (dir, a, b, alice_id) = setup("api");
    let d = Daemon::start(&dir, &[]);

    let (status, h) = d.get("/health/", None);
    assert_eq!(status, 200);
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["services"]["store"]["enrollments"], 2);
    let (status, v) = d.get("/api/nothing/here/", None);
    assert_eq!(status, 404);
    assert_envelope(&v, "not_found");

    // Both spellings of the client login, with and without the secret; both seeds' fields.
    let (status, v) = d.post(
        "/api/core/auth/client/",
        None,
        &json!({"api_key": a["api_key"]}),
    );
    assert_eq!(status, 200, "{v}");
    for k in [
        "jwt_token",
        "access_token",
        "expires_in",
        "expires_at",
        "client_id",
        "client_name",
    ] {
        assert!(!v[k].is_null(), "{k} missing: {v}");
    }
    assert_eq!(v["token_type"], "JWT");
    assert_eq!(v["client_name"], "door-a");
    let ta = token(&d, &a);
    let tb = token(&d, &b);
    let (status, v) = d.post(
        "/api/auth/client/",
        None,
        &json!({"api_key": a["api_key"], "api_secret": b["api_secret"]}),
    );
    assert_eq!(status, 401);
    assert_envelope(&v, "unauthorized");

    // Bearer, JWT and X-API-Key all authenticate; each client sees only its own enrollments.
    let bearer = format!("Bearer {ta}");
    let jwt = format!("JWT {ta}");
    for auth in [
        ("Authorization", bearer.as_str()),
        ("Authorization", jwt.as_str()),
        ("X-API-Key", a["api_key"].as_str().unwrap()),
    ] {
        let (status, v) = d.get("/api/auth/enrollments/", Some(auth));
        assert_eq!(status, 200, "{auth:?}: {v}");
        assert_eq!(v["count"], 1);
        assert_eq!(v["results"][0]["user_id"], "alice");
        assert!(v["next"].is_null() && v["previous"].is_null());
    }
    let b_auth = format!("Bearer {tb}");
    let (_, v) = d.get("/api/auth/enrollments/", Some(("Authorization", &b_auth)));
    assert_eq!(v["count"], 1);
    assert_eq!(v["results"][0]["user_id"], "bob");
    let path = format!("/api/auth/enrollments/{alice_id}/");
    let (status, v) = d.get(&path, Some(("Authorization", &bearer)));
    assert_eq!((status, v["user_id"].as_str()), (200, Some("alice")));
    assert!(v.get("template").is_none() && v.get("embedding").is_none());
    let (status, v) = d.get(&path, Some(("Authorization", &b_auth)));
    assert_eq!(status, 404, "client B must not see A's enrollment: {v}");
    // Deleting is for operators (admin scope).
    let (status, v) = d.delete(&path, Some(("Authorization", &bearer)));
    assert_eq!(status, 403);
    assert_envelope(&v, "forbidden");

    // No credentials, a forged payload (B's name under A's signature), alg none, garbage.
    let (status, v) = d.get("/api/auth/enrollments/", None);
    assert_eq!(status, 401);
    assert_envelope(&v, "unauthorized");
    let parts: Vec<&str> = ta.split('.').collect();
    let mut claims: serde_json::Value = serde_json::from_slice(&b64url_decode(parts[1])).unwrap();
    claims["name"] = json!("door-b");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64url(claims.to_string().as_bytes()),
        parts[2]
    );
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    );
    for bad in [forged, none, "not.a.token".to_owned()] {
        let (status, v) = d.get(
            "/api/auth/enrollments/",
            Some(("Authorization", &format!("Bearer {bad}"))),
        );
        assert_eq!(status, 401, "{bad}: {v}");
        assert_envelope(&v, "unauthorized");
    }

    // Malformed bodies: syntax 400, wrong shape 422, over the limit 413; the daemon serves on.
    let (status, v) = d.post_raw("/api/auth/client/", None, b"{\"api_key\": ");
    assert_eq!(status, 400);
    assert_envelope(&v, "invalid_request");
    let (status, v) = d.post("/api/auth/client/", None, &json!({"key": "x"}));
    assert_eq!(status, 422);
    assert_envelope(&v, "validation_error");
    let (status, v) = d.post_streaming("/api/auth/client/", 20 * 1024 * 1024);
    assert_eq!(status, 413, "{v}");
    assert_envelope(&v, "payload_too_large");
    assert_eq!(d.get("/health/", None).0, 200);

    // The store is single-process: the CLI on a served data directory is a clear error.
    let out = cli(&dir, &["enrollments", "list", "--json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another process"));

    // SIGTERM: a clean exit, and the store opens again with both enrollments.
    assert!(d.stop().success());
    let v = cli_json(&dir, &["enrollments", "list", "--json"]);
    assert_eq!(v["count"], 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_expired_token_is_refused() {
    let dir = tempdir("expiry");
    let a = cli_json(&dir, &["clients", "add", "door-a", "--json"]);
    let d = Daemon::start(&dir, &[("FACEGATE_API__TOKEN_TTL_S", "4")]);
    let t = token(&d, &a);
    let auth = format!("Bearer {t}");
    assert_eq!(
        d.get("/api/auth/enrollments/", Some(("Authorization", &auth)))
            .0,
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(5100));
    let (status, v) = d.get("/api/auth/enrollments/", Some(("Authorization", &auth)));
    assert_eq!(status, 401);
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");
    drop(d);
    // Killed (SIGKILL on drop): the CLI opens the store again.
    assert!(
        cli(&dir, &["enrollments", "list", "--json"])
            .status
            .success()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rate_limits_answer_429_per_client() {
    let dir = tempdir("limits");
    let a = cli_json(&dir, &["clients", "add", "door-a", "--json"]);
    let b = cli_json(&dir, &["clients", "add", "door-b", "--json"]);
    let d = Daemon::start(&dir, &[("FACEGATE_API__ENROLLMENT_SESSIONS_PER_HOUR", "2")]);
    let (ta, tb) = (
        format!("Bearer {}", token(&d, &a)),
        format!("Bearer {}", token(&d, &b)),
    );
    for _ in 0..2 {
        let (s, v) = d.post(
            "/api/auth/enrollment/",
            Some(("Authorization", &ta)),
            &json!({"user_id": "u"}),
        );
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = d.post(
        "/api/auth/enrollment/",
        Some(("Authorization", &ta)),
        &json!({"user_id": "u"}),
    );
    assert_eq!(s, 429, "{v}");
    assert_envelope(&v, "rate_limit_exceeded");
    assert!(v["details"]["retry_after_s"].as_u64().unwrap() >= 1, "{v}");
    // Another client has its own budget.
    let (s, _) = d.post(
        "/api/auth/enrollment/",
        Some(("Authorization", &tb)),
        &json!({"user_id": "u"}),
    );
    assert_eq!(s, 201);
    drop(d);
    std::fs::remove_dir_all(dir).unwrap();
}
