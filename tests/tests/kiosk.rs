#![allow(clippy::unwrap_used)]
//! The kiosk page in a real browser: headless Chromium (Debian's `chromium`), driven over the
//! DevTools protocol, opens `/` on a daemon whose door camera replays an enrolled person; an
//! operator signs in through the page's form; the test asserts that the banner shows the grant
//! with her user id, that the prompt line and the live preview work, and that the operator view
//! lists her enrollment. Screenshots go to `target/kiosk-*.png`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use facegate_blackbox::{Daemon, RemoveOnSuccess, cli, cli_json, cli_stdin, data, tempdir};
use serde_json::{Value, json};

/// A headless Chromium and its DevTools page socket.
struct Browser {
    child: Child,
    page: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch(profile: &Path) -> Browser {
        let exe = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("Debian's chromium is needed (.ci/run installs it)");
        let child = Command::new(exe)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            // Its scratch directories (org.chromium.Chromium.*) go into the profile too, which
            // the test removes, not into /tmp, where every run left some.
            .env("TMPDIR", profile)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Chromium writes its DevTools port into the profile once it listens.
        let port_file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Ok(t) = std::fs::read_to_string(&port_file)
                && let Some(p) = t.lines().next().and_then(|l| l.parse::<u16>().ok())
            {
                break p;
            }
            assert!(Instant::now() < deadline, "chromium did not start");
            std::thread::sleep(Duration::from_millis(100));
        };
        let list: Value = loop {
            let r = ureq::get(format!("http://127.0.0.1:{port}/json/list"))
                .call()
                .ok()
                .and_then(|resp| resp.into_body().read_to_string().ok());
            if let Some(body) = r
                && let Ok(v) = serde_json::from_str::<Value>(&body)
                && v.as_array()
                    .is_some_and(|a| a.iter().any(|t| t["type"] == "page"))
            {
                break v;
            }
            assert!(Instant::now() < deadline, "no DevTools page target");
            std::thread::sleep(Duration::from_millis(100));
        };
        let url = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .unwrap()["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .to_owned();
        let (page, _) = tungstenite::connect(url).unwrap();
        Browser {
            child,
            page,
            next_id: 1,
        }
    }

    /// One DevTools command; its `result`.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.page
            .send(tungstenite::Message::text(
                json!({"id": id, "method": method, "params": params}).to_string(),
            ))
            .unwrap();
        loop {
            let m = self.page.read().unwrap();
            if let tungstenite::Message::Text(t) = m {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    /// Evaluates `js` in the page; its value.
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{js}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `js` evaluates to a truthy value; that value.
    fn wait_for(&mut self, js: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.eval(js);
            if !(v.is_null() || v == false || v == "") {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {js}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&mut self, path: &Path) {
        use base64::Engine as _;
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/release/deps/kiosk-HASH -> target/
    exe.ancestors().nth(3).unwrap().to_owned()
}

#[test]
fn the_kiosk_page_shows_the_grant_of_the_person_at_the_door() {
    let dir = tempdir("kiosk");
    let _cleanup = RemoveOnSuccess(dir.clone());
    cli_json(&dir, &["clients", "add", "door-a", "--json"]);
    // The woman at the door talks (lp_d13): by default her lips' movement, not a blink alone,
    // makes her live. Enrolled from three later frames of her clip.
    let photo = |n: usize| data(&format!("video/lp_d13/{n:04}.jpg"));
    let imgs: Vec<String> = [80, 90, 100]
        .map(|n| photo(n).display().to_string())
        .to_vec();
    let mut args = vec!["enroll", "--client", "door-a", "--user-id", "lady"];
    args.extend(imgs.iter().map(String::as_str));
    assert!(cli(&dir, &args).status.success());
    let out = cli_stdin(
        &dir,
        &["operators", "set", "ops@example.org", "--name", "Ops"],
        "correct horse battery\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clip = tempdir("kiosk-clip");
    let _clip_cleanup = RemoveOnSuccess(clip.clone());
    for n in 1..=61 {
        let f = format!("{n:04}.jpg");
        std::fs::copy(photo(n), clip.join(&f)).unwrap();
    }
    // The replay starts 8 s after the daemon (time for the browser to start and sign in) and
    // loops: she stays at the door until she is granted (on a loaded machine the door may
    // first deny her, then grant her at a later look: the banner then changes to the grant).
    let d = Daemon::start_run(
        &dir,
        &[],
        &[],
        &[
            "--camera",
            &format!("front=replay:{}@10,delay=8", clip.display()),
            "--door",
        ],
    );
    let started = Instant::now();
    let profile = tempdir("kiosk-chromium");
    let _profile_cleanup = RemoveOnSuccess(profile.clone());
    let mut b = Browser::launch(&profile);
    b.call("Page.enable", json!({}));
    b.call("Page.navigate", json!({"url": format!("{}/", d.base)}));
    b.wait_for(
        "document.readyState === 'complete' && !document.getElementById('login').hidden",
        Duration::from_secs(20),
    );
    // A wrong password is refused with a message on the page.
    b.eval(
        "document.getElementById('email').value = 'ops@example.org';
         document.getElementById('password').value = 'wrong password!!';
         document.getElementById('login-form').requestSubmit(); true",
    );
    let err = b.wait_for(
        "document.getElementById('login-error').textContent",
        Duration::from_secs(10),
    );
    assert!(err.as_str().unwrap().contains("invalid"), "{err}");
    b.eval(
        "document.getElementById('password').value = 'correct horse battery';
         document.getElementById('login-form').requestSubmit(); true",
    );
    b.wait_for(
        "document.body.dataset.events === 'open'",
        Duration::from_secs(15),
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "signed in after the replay began: {:?}",
        started.elapsed()
    );
    // The preview streams the camera (the MJPEG image gets a size once frames arrive).
    b.wait_for(
        "document.getElementById('preview').naturalWidth > 0",
        Duration::from_secs(20),
    );
    let banner = b.wait_for(
        "(() => { const b = document.getElementById('banner');
                  return !b.hidden && b.dataset.decision === 'granted' ? {decision: b.dataset.decision, user: b.dataset.user, text: b.textContent} : null })()",
        Duration::from_secs(40),
    );
    assert_eq!(
        (banner["decision"].as_str(), banner["user"].as_str()),
        (Some("granted"), Some("lady")),
        "{banner}"
    );
    assert!(banner["text"].as_str().unwrap().contains("Welcome, lady"));
    let target = target_dir();
    b.screenshot(&target.join("kiosk-granted.png"));
    eprintln!("screenshots: {}/kiosk-*.png", target.display());
    // The operator view lists her enrollment.
    b.eval("document.getElementById('operator-toggle').click(); true");
    let rows = b.wait_for(
        "(() => { const t = document.getElementById('enrollments').innerText; return t.includes('lady') ? t : null })()",
        Duration::from_secs(10),
    );
    assert!(rows.as_str().unwrap().contains("door-a"), "{rows}");
    let client = b.eval("document.getElementById('enroll-client').value");
    assert_eq!(client, "door-a");
    b.screenshot(&target.join("kiosk-operator.png"));
    drop(b);
    assert!(d.stop().success());
}
