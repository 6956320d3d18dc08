#![allow(clippy::unwrap_used)]
//! Site sync end to end, every part real: Debian's Mosquitto, the `facegate-sync` hub, two
//! `facegate` terminals each with its `facegate-sync` agent, and a subscriber on `#` capturing
//! every message through the broker.
//!
//! What it shows: a client created at the hub works on both terminals; a person enrolled on A
//! over the API authenticates on B; an operator's deletion on A makes B refuse them
//! (`no_match_found`); malformed, wrongly sealed and replayed messages are refused or found
//! stale, counted, and change nothing; 1000 audit rows written on A while the broker is down
//! reach the hub after it returns, each once; `kill -9` of A's agent and of the hub while
//! rows stream loses and duplicates none; nothing captured on the broker holds a template
//! (f32, f16, i8 or decimal text) or the user id in clear. Figures are printed (`--nocapture`).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use facegate_blackbox::sync::{
    Broker, SITE, SyncProc, Terminal, enroll_speaker, holds_template, hub_cli, run_session, sample,
    site_key, terminal, wait_for,
};
use facegate_blackbox::{Daemon, RemoveOnSuccess, tempdir};
use serde_json::{Value, json};

const USER: &str = "wolfgang-lady";

fn metrics(d: &Daemon) -> String {
    d.get_text("/metrics", &[]).2
}

/// Audit rows at the hub for `terminal` whose reason is `cancelled`: (count, distinct seqs).
fn hub_cancelled(hub_dir: &Path, terminal: &str) -> (usize, usize) {
    let out = hub_cli(hub_dir, &["audit", "--terminal", terminal]);
    let mut seqs = HashSet::new();
    let mut n = 0;
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["row"]["reason"] == "cancelled" {
            n += 1;
            seqs.insert(v["seq"].as_u64().unwrap());
        }
    }
    (n, seqs.len())
}

/// The status of `GET /api/auth/enrollments/{id}/` on `d`.
fn enrollment_status(d: &Daemon, auth: &str, id: &str) -> u16 {
    d.get(
        &format!("/api/auth/enrollments/{id}/"),
        Some(("Authorization", auth)),
    )
    .0
}

/// A 1:N session on `d` over later frames of the enrolled speaker; its last answer.
fn identify_speaker(d: &Daemon, auth: &str) -> Value {
    run_session(d, auth, "authentication", &json!({}), "lp_d13", 61..=117)
}

/// `n` authentication sessions opened and cancelled on `d`: `n` audit rows (`cancelled`).
fn cancelled_sessions(d: &Daemon, auth: &str, n: usize) {
    for _ in 0..n {
        let t = d.session(auth, "/api/auth/authentication/", &json!({}));
        let (s, v) = d.delete(
            &format!("/api/auth/session/{t}/"),
            Some(("Authorization", auth)),
        );
        assert!(s == 200 || s == 204, "{s} {v}");
    }
}

#[test]
fn a_site_of_two_terminals_and_a_hub_over_a_real_broker() {
    let root = tempdir("sync");
    let _cleanup = RemoveOnSuccess(root.clone());
    let mut broker = Broker::start(&root.join("broker"));
    let capture = broker.capture();
    let key = root.join("site.key");
    site_key(&key);
    // The hub first: its persistent session must exist before terminals publish to it.
    let hub_dir = root.join("hub");
    let mut hub = SyncProc::hub(&broker.url(), &hub_dir, SITE, &key);
    let mut a = terminal(&root, "door-a", &key, &broker.url());
    let mut b = terminal(&root, "door-b", &key, &broker.url());
    // B's agent also announces B to Home Assistant (off by default).
    b.agent.kill9();
    b.agent = SyncProc::agent_with(
        &broker.url(),
        &b.d.base,
        &b.token,
        &b.dir.join("agent.log"),
        &["--ha-discovery".into(), "homeassistant".into()],
    );

    // A client created at the hub works on both terminals, with the same key and secret.
    let c: Value =
        serde_json::from_str(&hub_cli(&hub_dir, &["clients", "add", "acme", "--json"])).unwrap();
    let login = |t: &Terminal| {
        t.d.post(
            "/api/auth/client/",
            None,
            &json!({"api_key": c["api_key"], "api_secret": c["api_secret"]}),
        )
        .0 == 200
    };
    let took = wait_for(
        Duration::from_secs(15),
        "the hub's client on both terminals",
        || login(&a) && login(&b),
    );
    println!("client created at the hub usable on both terminals after {took:?}");
    let auth_a = a.d.login(&c);
    let auth_b = b.d.login(&c);
    // Only a sync token of this terminal opens the sync API: none, a client's token, or the
    // other terminal's sync token are 401; a malformed apply body is a 422 with the reason.
    let b_token = std::fs::read_to_string(&b.token).unwrap();
    let a_token = std::fs::read_to_string(&a.token).unwrap();
    for auth in [
        None,
        Some(auth_a.clone()),
        Some(format!("Bearer {}", b_token.trim())),
    ] {
        let (s, v) = a.d.get(
            "/api/sync/changes",
            auth.as_deref().map(|v| ("Authorization", v)),
        );
        assert_eq!(s, 401, "{auth:?}: {v}");
    }
    let sync_a = format!("Bearer {}", a_token.trim());
    let (s, v) = a.d.get(
        "/api/sync/changes?limit=1",
        Some(("Authorization", &sync_a)),
    );
    assert_eq!((s, v["terminal"].as_str()), (200, Some("door-a")), "{v}");
    let (s, v) =
        a.d.post_raw("/api/sync/apply", Some(("Authorization", &sync_a)), b"[1,2");
    assert_eq!(
        (s, v["details"]["reason"].as_str()),
        (422, Some("malformed")),
        "{v}"
    );

    // Enrolled at the hub from photos: a terminal embeds them, every terminal has the person.
    let photo = facegate_blackbox::data("video/pexels_eyes_hand/0100.jpg");
    let out = hub_cli(
        &hub_dir,
        &[
            "enroll",
            "--client",
            "acme",
            "--user-id",
            "photo-person",
            "--terminal",
            "door-a",
            photo.to_str().unwrap(),
        ],
    );
    let e: Value = serde_json::from_str(&out).unwrap();
    let photo_id = e["enrollment_id"].as_str().unwrap().to_owned();
    for (t, auth) in [(&a, &auth_a), (&b, &auth_b)] {
        wait_for(
            Duration::from_secs(15),
            "the hub's enrollment on both terminals",
            || {
                let (s, v) = t.d.get(
                    &format!("/api/auth/enrollments/{photo_id}/"),
                    Some(("Authorization", auth)),
                );
                s == 200 && v["user_id"] == "photo-person"
            },
        );
    }
    let (s, v) = b.d.get(
        &format!("/api/auth/enrollments/{photo_id}/"),
        Some(("Authorization", &auth_b)),
    );
    assert_eq!(
        (s, v["liveness_verified"].as_bool()),
        (200, Some(false)),
        "photos prove no liveness: {v}"
    );
    let out = hub_cli(&hub_dir, &["revoke", &photo_id]);
    assert!(out.contains(&photo_id), "{out}");
    for (t, auth) in [(&a, &auth_a), (&b, &auth_b)] {
        wait_for(
            Duration::from_secs(15),
            "the hub's revocation on both terminals",
            || enrollment_status(&t.d, auth, &photo_id) == 404,
        );
    }

    // Enrolled on A over the API, the person authenticates on B.
    let id = enroll_speaker(&a.d, &auth_a, USER);
    let took = wait_for(Duration::from_secs(15), "A's enrollment on B", || {
        enrollment_status(&b.d, &auth_b, &id) == 200
    });
    println!("enrollment on A usable on B after {took:?}");
    let r = identify_speaker(&b.d, &auth_b);
    assert_eq!(
        (
            r["authenticated"].as_bool(),
            r["user_id"].as_str(),
            r["matched_enrollment_id"].as_str()
        ),
        (Some(true), Some(USER), Some(id.as_str())),
        "{r}"
    );

    // An operator's deletion on A: B refuses the person.
    let (s, v) = a.d.post(
        "/api/auth/token/",
        None,
        &json!({"email": "ops@example.org", "password": "correct horse battery"}),
    );
    assert_eq!(s, 200, "{v}");
    let op = format!("Bearer {}", v["access"].as_str().unwrap());
    let (s, v) = a.d.delete(
        &format!("/api/auth/enrollments/{id}/"),
        Some(("Authorization", &op)),
    );
    assert!(s == 200 || s == 204, "{s} {v}");
    let took = wait_for(Duration::from_secs(15), "the deletion on B", || {
        enrollment_status(&b.d, &auth_b, &id) == 404
    });
    println!("deletion on A effective on B after {took:?}");
    let r = identify_speaker(&b.d, &auth_b);
    assert_eq!(
        (r["authenticated"].as_bool(), r["reason"].as_str()),
        (Some(false), Some("no_match_found")),
        "{r}"
    );

    // Bad input on the broker: garbage, a wrongly sealed envelope, a replay of the (now
    // deleted) enrollment. Each is refused or stale, counted, and changes nothing.
    let m0 = metrics(&b.d);
    let hub0 = hub.metrics_text();
    broker.publish(
        &format!("facegate/v1/{SITE}/cmd/enrollments"),
        b"{\"not\": \"an envelope\"",
    );
    let other = facegate_proto::SiteKey::from_credential(&[7u8; 32]).unwrap();
    let forged = facegate_proto::seal(
        &other,
        &facegate_proto::Event {
            site: SITE.into(),
            origin: "door-x".into(),
            instance: String::new(),
            seq: 1,
            at_ms: 1,
            body: facegate_proto::Body::Deletion(facegate_proto::DeletionRecord {
                enrollment_id: "x".into(),
                client: "acme".into(),
                user_id: "someone".into(),
                version: u64::MAX,
            }),
        },
    )
    .unwrap();
    broker.publish(
        &format!("facegate/v1/{SITE}/cmd/revocations"),
        &forged.to_json(),
    );
    let replay = capture
        .messages()
        .into_iter()
        .find(|(t, _)| t == &format!("facegate/v1/{SITE}/cmd/enrollments"))
        .expect("the hub re-published A's enrollment")
        .1;
    broker.publish(&format!("facegate/v1/{SITE}/cmd/enrollments"), &replay);
    broker.publish(
        &format!("facegate/v1/{SITE}/door-a/audit"),
        b"\xff\xfe garbage",
    );
    let refused =
        |m: &str, r: &str| sample(m, &format!("facegate_sync_refused_total{{reason=\"{r}\"}}"));
    wait_for(Duration::from_secs(10), "B counts the bad messages", || {
        let m = metrics(&b.d);
        refused(&m, "malformed") > refused(&m0, "malformed")
            && refused(&m, "sealed") > refused(&m0, "sealed")
            && sample(&m, "facegate_sync_stale_total") > sample(&m0, "facegate_sync_stale_total")
    });
    wait_for(
        Duration::from_secs(10),
        "the hub counts the bad message",
        || {
            let h = hub.metrics_text();
            sample(&h, "facegate_hub_refused_total{reason=\"malformed\"}")
                > sample(&hub0, "facegate_hub_refused_total{reason=\"malformed\"}")
        },
    );
    assert_eq!(
        enrollment_status(&b.d, &auth_b, &id),
        404,
        "a replayed enrollment does not undo its deletion"
    );
    assert!(
        a.agent.alive() && hub.alive(),
        "bad messages do not stop the agent or the hub"
    );

    // Broker down: 1000 audit rows on A wait in A's feed; all reach the hub once it returns.
    broker.stop();
    let rows0 = a.d.audit_rows();
    let t = Instant::now();
    cancelled_sessions(&a.d, &auth_a, 1000);
    wait_for(Duration::from_secs(30), "A wrote 1000 audit rows", || {
        a.d.audit_rows() >= rows0 + 1000
    });
    println!(
        "1000 sessions opened and cancelled on A (broker down) in {:?}",
        t.elapsed()
    );
    let backlog = sample(&metrics(&a.d), "facegate_sync_pending_changes");
    assert!(backlog >= 1000.0, "the rows wait in A's feed: {backlog}");
    broker.restart();
    let drain = wait_for(Duration::from_secs(120), "1000 rows at the hub", || {
        hub_cancelled(&hub_dir, "door-a").0 >= 1000
    });
    println!(
        "backlog of {backlog} changes drained in {drain:?} after the broker restarted ({:.0} changes/s)",
        backlog / drain.as_secs_f64()
    );
    assert_eq!(hub_cancelled(&hub_dir, "door-a"), (1000, 1000));

    // kill -9 of A's agent and of the hub while 600 more rows stream.
    let producer = {
        let d = a.d.handle();
        let auth = auth_a.clone();
        std::thread::spawn(move || cancelled_sessions(&d, &auth, 600))
    };
    std::thread::sleep(Duration::from_millis(1500));
    a.agent.kill9();
    a.agent = SyncProc::agent(&broker.url(), &a.d.base, &a.token, &a.dir.join("agent.log"));
    std::thread::sleep(Duration::from_millis(1500));
    hub.kill9();
    hub = SyncProc::hub(&broker.url(), &hub_dir, SITE, &key);
    producer.join().unwrap();
    wait_for(Duration::from_secs(120), "1600 rows at the hub", || {
        hub_cancelled(&hub_dir, "door-a").0 >= 1600
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        hub_cancelled(&hub_dir, "door-a"),
        (1600, 1600),
        "every row once after kill -9 of the agent and the hub"
    );
    let h = hub.metrics_text();
    println!(
        "after kill -9: redeliveries recognised by the hub since its restart: {}",
        sample(&h, "facegate_hub_duplicates_total")
    );

    // A's disk is replaced: a new data directory under the same terminal name. The site's state
    // comes back to it (its new agent session asks the hub: the client works again), and its
    // new events, numbered from 1 again, are stored, not taken for redeliveries.
    drop(a);
    let a2 = terminal(&root.join("reimaged"), "door-a", &key, &broker.url());
    wait_for(
        Duration::from_secs(15),
        "the site's client on the new A",
        || {
            a2.d.post(
                "/api/auth/client/",
                None,
                &json!({"api_key": c["api_key"], "api_secret": c["api_secret"]}),
            )
            .0 == 200
        },
    );
    let auth_a2 = a2.d.login(&c);
    cancelled_sessions(&a2.d, &auth_a2, 5);
    wait_for(
        Duration::from_secs(30),
        "the new A's rows at the hub",
        || hub_cancelled(&hub_dir, "door-a").0 >= 1605,
    );
    assert_eq!(hub_cancelled(&hub_dir, "door-a").0, 1605);

    // Nothing on the broker holds a template or the user id in clear; the enrollment that
    // crossed it does hold the template once opened with the site key (the check can fail).
    let site_key = facegate_proto::SiteKey::from_credential(&std::fs::read(&key).unwrap()).unwrap();
    let msgs = capture.messages();
    let mut templates = 0;
    for (topic, payload) in &msgs {
        assert!(!holds_template(payload), "a template in clear on {topic}");
        for user in [USER, "photo-person"] {
            assert!(
                !String::from_utf8_lossy(payload).contains(user),
                "a user id in clear on {topic}"
            );
        }
        let Ok(env) = facegate_proto::Envelope::from_json(payload) else {
            continue;
        };
        if let Ok(ev) = facegate_proto::open(&site_key, SITE, &env)
            && let facegate_proto::Body::Enrollment(e) = ev.body
        {
            let raw: Vec<u8> = e.template.iter().flat_map(|v| v.to_le_bytes()).collect();
            assert!(
                holds_template(&raw),
                "the detector finds a template in clear"
            );
            assert!(
                e.user_id == USER || e.user_id == "photo-person",
                "{}",
                e.user_id
            );
            templates += 1;
        }
    }
    assert!(
        templates >= 2,
        "A's enrollment and the hub's re-publication: {templates}"
    );
    println!(
        "{} messages captured on '#', none with a template or user id in clear",
        msgs.len()
    );
    drop(b);
}

fn sh(dir: &Path, cmd: &str) {
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
}

/// A broker that wants TLS (a test CA, Debian's openssl) and passwords: an agent without the
/// CA stops at once and says why; one with a wrong password is refused by the broker, says so
/// and keeps retrying (it does not exit); a client created at the hub before the terminal's agent ever connected reaches
/// it once it connects over TLS with its password (a terminal without a broker session asks
/// the hub for the site's state).
#[test]
fn tls_and_passwords_on_a_locked_broker() {
    let root = tempdir("sync-tls");
    let _cleanup = RemoveOnSuccess(root.clone());
    let bdir = root.join("broker");
    std::fs::create_dir_all(&bdir).unwrap();
    std::fs::write(
        bdir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    sh(
        &bdir,
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=facegate-test-ca",
    );
    sh(
        &bdir,
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost",
    );
    sh(
        &bdir,
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf",
    );
    sh(
        &bdir,
        "mosquitto_passwd -c -b passwd hub hub-secret && mosquitto_passwd -b passwd door-a door-a-secret && chmod 644 passwd server.key",
    );
    let broker = Broker::start_with(
        &bdir,
        &format!(
            "allow_anonymous false\npassword_file {d}/passwd\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n",
            d = bdir.display()
        ),
    );
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let pw = |name: &str, secret: &str| {
        let f = root.join(format!("{name}.pw"));
        std::fs::write(&f, format!("{secret}\n")).unwrap();
        f.display().to_string()
    };
    let ca = bdir.join("ca.pem").display().to_string();
    let key = root.join("site.key");
    site_key(&key);
    let hub_dir = root.join("hub");
    let hub_flags = [
        "--ca".into(),
        ca.clone(),
        "--username".into(),
        "hub".into(),
        "--password-file".into(),
        pw("hub", "hub-secret"),
    ];
    let _hub = SyncProc::hub_with(&url, &hub_dir, SITE, &key, &hub_flags);
    // The terminal's own agent (started by `terminal`) has no TLS flags: a configuration
    // error, so it stops at once and says why (a wrong password, below, is retried).
    let mut a = terminal(&root, "door-a", &key, &url);
    wait_for(
        Duration::from_secs(10),
        "an agent without the CA stops and says why",
        || {
            !a.agent.alive()
                && std::fs::read_to_string(a.dir.join("agent.log"))
                    .unwrap_or_default()
                    .contains("mqtts needs --ca")
        },
    );
    let wrong = SyncProc::agent_with(
        &url,
        &a.d.base,
        &a.token,
        &root.join("wrong.log"),
        &[
            "--ca".into(),
            ca.clone(),
            "--username".into(),
            "door-a".into(),
            "--password-file".into(),
            pw("wrong", "nope"),
        ],
    );
    let mut wrong = wrong;
    wait_for(
        Duration::from_secs(10),
        "the broker refuses a wrong password",
        || {
            std::fs::read_to_string(root.join("wrong.log"))
                .unwrap_or_default()
                .contains("sync session ended")
        },
    );
    assert!(wrong.alive(), "a refused agent retries, it does not exit");
    wrong.kill9();
    // Created before A's agent ever had a session with the broker.
    let c: Value =
        serde_json::from_str(&hub_cli(&hub_dir, &["clients", "add", "acme", "--json"])).unwrap();
    a.agent = SyncProc::agent_with(
        &url,
        &a.d.base,
        &a.token,
        &a.dir.join("agent-tls.log"),
        &[
            "--ca".into(),
            ca,
            "--username".into(),
            "door-a".into(),
            "--password-file".into(),
            pw("door-a", "door-a-secret"),
        ],
    );
    wait_for(
        Duration::from_secs(15),
        "the hub's client on A over TLS",
        || {
            a.d.post(
                "/api/auth/client/",
                None,
                &json!({"api_key": c["api_key"], "api_secret": c["api_secret"]}),
            )
            .0 == 200
        },
    );
}
