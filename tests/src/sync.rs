//! Sync harness: a real Mosquitto broker, the real `facegate-sync` hub and agents, and a
//! capture of every message through the broker (`mosquitto_sub -t '#'`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Daemon;

/// The site of the test terminals.
pub const SITE: &str = "hq";

/// A terminal of the test site: its daemon, its agent, its sync token file.
#[derive(Debug)]
pub struct Terminal {
    pub d: Daemon,
    pub agent: SyncProc,
    pub token: PathBuf,
    pub dir: PathBuf,
}

/// Writes a fresh site key (`facegate-sync site-key`) to `path`.
pub fn site_key(path: &Path) {
    let out = std::process::Command::new(sync_binary())
        .arg("site-key")
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(path, out.stdout).unwrap();
}

/// A `facegate` terminal of site `SITE` named `name` (an operator `ops@example.org` with the
/// password `correct horse battery`) with its `facegate-sync` agent.
pub fn terminal(root: &Path, name: &str, key: &Path, broker: &str) -> Terminal {
    let dir = root.join(name);
    let out = crate::cli_stdin(
        &dir,
        &["operators", "set", "ops@example.org", "--name", "Ops"],
        "correct horse battery\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = crate::cli(&dir, &["sync-token"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = root.join(format!("{name}.token"));
    std::fs::write(&token, &out.stdout).unwrap();
    let key = key.display().to_string();
    let d = Daemon::start(
        &dir,
        &[
            ("FACEGATE_SYNC__SITE", SITE),
            ("FACEGATE_SYNC__TERMINAL", name),
            ("FACEGATE_SYNC__SITE_KEY_FILE", &key),
            ("FACEGATE_SYNC__METRICS_INTERVAL_S", "2"),
            ("FACEGATE_API__AUTHENTICATION_SESSIONS_PER_HOUR", "1000000"),
            ("FACEGATE_API__ENROLLMENT_SESSIONS_PER_HOUR", "1000000"),
        ],
    );
    let agent = SyncProc::agent(broker, &d.base, &token, &dir.join("agent.log"));
    Terminal {
        d,
        agent,
        token,
        dir,
    }
}

/// `target/<profile>/facegate-sync`, beside `facegate`.
pub fn sync_binary() -> PathBuf {
    let b = crate::binary().with_file_name("facegate-sync");
    assert!(b.exists(), "no facegate-sync beside {}", b.display());
    b
}

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Mosquitto broker on a loopback port, persistent (its queue survives a restart), no limit
/// on the messages queued for an offline persistent session. Killed on drop.
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        Broker::start_with(dir, "allow_anonymous true\n")
    }

    /// A broker whose listener has these extra settings (TLS files, password file).
    pub fn start_with(dir: &Path, settings: &str) -> Broker {
        let mut b = Broker {
            child: None,
            port: free_port(),
            dir: dir.to_owned(),
        };
        std::fs::create_dir_all(dir).unwrap();
        // Mosquitto started as root runs as the `mosquitto` user: it must be able to write
        // its persistence file here.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        std::fs::write(
            dir.join("mosquitto.conf"),
            format!(
                "listener {} 127.0.0.1\n{settings}persistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 0\nmax_inflight_messages 100\n",
                b.port,
                dir.display()
            ),
        )
        .unwrap();
        b.restart();
        b
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again, on the same port and persistence file).
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package `mosquitto`; .ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the broker cleanly (SIGTERM: it saves its persistent queue).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// Publishes one message with `mosquitto_pub` (QoS 1).
    pub fn publish(&self, topic: &str, payload: &[u8]) {
        let f = self.dir.join("pub.bin");
        std::fs::write(&f, payload).unwrap();
        let st = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-q",
                "1",
                "-t",
                topic,
                "-f",
            ])
            .arg(&f)
            .status()
            .expect("mosquitto_pub (Debian package `mosquitto-clients`)");
        assert!(st.success());
    }

    /// Every message on `#` from now on, written as `topic<TAB>hex payload` lines to a file.
    pub fn capture(&self) -> Capture {
        let path = self.dir.join("capture.txt");
        let out = std::fs::File::create(&path).unwrap();
        let child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-q",
                "1",
                "-t",
                "#",
                "-F",
                "%t\t%x",
            ])
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub");
        std::thread::sleep(Duration::from_millis(300));
        Capture { child, path }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug)]
pub struct Capture {
    child: Child,
    path: PathBuf,
}

impl Capture {
    /// The messages captured so far: (topic, payload).
    pub fn messages(&self) -> Vec<(String, Vec<u8>)> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (t, h) = l.split_once('\t')?;
                Some((t.to_owned(), hex::decode(h).ok()?))
            })
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `facegate-sync` process (hub or agent), its stderr in a file; SIGKILLed on drop.
#[derive(Debug)]
pub struct SyncProc {
    child: Option<Child>,
    pub log: PathBuf,
    /// For the hub: its metrics address.
    pub metrics: Option<String>,
}

impl SyncProc {
    fn spawn(args: &[String], log: &Path, wait_line: bool) -> SyncProc {
        let mut child = Command::new(sync_binary())
            .args(args)
            .env_remove("JOURNAL_STREAM")
            .env("FACEGATE_LOG", "info,facegate_sync=debug")
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let mut metrics = None;
        if wait_line {
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            metrics = line
                .trim()
                .strip_prefix("hub metrics on ")
                .map(|u| u.trim_end_matches("/metrics").to_owned());
            assert!(
                metrics.is_some(),
                "hub did not start: {line:?} {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        SyncProc {
            child: Some(child),
            log: log.to_owned(),
            metrics,
        }
    }

    /// `facegate-sync hub` on `data_dir` for `site`.
    pub fn hub(broker: &str, data_dir: &Path, site: &str, key_file: &Path) -> SyncProc {
        SyncProc::hub_with(broker, data_dir, site, key_file, &[])
    }

    /// `hub` with more flags (`--ca`, `--username`, ...).
    pub fn hub_with(
        broker: &str,
        data_dir: &Path,
        site: &str,
        key_file: &Path,
        extra: &[String],
    ) -> SyncProc {
        let mut args: Vec<String> = vec![
            "hub".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--broker".into(),
            broker.into(),
            "--site".into(),
            site.into(),
            "--site-key-file".into(),
            key_file.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend_from_slice(extra);
        std::fs::create_dir_all(data_dir).unwrap();
        SyncProc::spawn(&args, &data_dir.join("hub.log"), true)
    }

    /// `facegate-sync run` for the daemon at `daemon` with its token file.
    pub fn agent(broker: &str, daemon: &str, token_file: &Path, log: &Path) -> SyncProc {
        SyncProc::agent_with(broker, daemon, token_file, log, &[])
    }

    /// `agent` with more flags (`--ca`, `--username`, ...).
    pub fn agent_with(
        broker: &str,
        daemon: &str,
        token_file: &Path,
        log: &Path,
        extra: &[String],
    ) -> SyncProc {
        let mut args: Vec<String> = vec![
            "run".into(),
            "--broker".into(),
            broker.into(),
            "--daemon".into(),
            daemon.into(),
            "--token-file".into(),
            token_file.display().to_string(),
        ];
        args.extend_from_slice(extra);
        SyncProc::spawn(&args, log, false)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Prometheus text of the hub.
    pub fn metrics_text(&self) -> String {
        let url = format!("{}/metrics", self.metrics.as_ref().unwrap());
        ureq::get(&url)
            .call()
            .map(|r| r.into_body().read_to_string().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for SyncProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A value of a Prometheus sample (`name{labels}` exactly as written), 0 if absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Runs a `facegate-sync hub ... COMMAND` against the running hub; its stdout.
pub fn hub_cli(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(sync_binary())
        .arg("hub")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "facegate-sync hub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether `bytes` hold a face template in clear: 192 consecutive f32 or f16 values (any
/// alignment) of unit length, an i8 run quantized from one, or a JSON list of many decimals.
pub fn holds_template(bytes: &[u8]) -> bool {
    const D: usize = 192;
    let unit = |sq: f64| (0.8..1.2).contains(&sq);
    for off in 0..4 {
        let f: Vec<f32> = bytes[off.min(bytes.len())..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if f.windows(D).any(|w| {
            w.iter().all(|v| v.is_finite() && v.abs() <= 1.0)
                && unit(w.iter().map(|v| f64::from(*v) * f64::from(*v)).sum())
        }) {
            return true;
        }
    }
    for off in 0..2 {
        let h: Vec<f64> = bytes[off.min(bytes.len())..]
            .chunks_exact(2)
            .map(|c| f16_to_f64(u16::from_le_bytes([c[0], c[1]])))
            .collect();
        if h.windows(D).any(|w| {
            w.iter().all(|v| v.is_finite() && v.abs() <= 1.0) && unit(w.iter().map(|v| v * v).sum())
        }) {
            return true;
        }
    }
    let i8s: Vec<f64> = bytes.iter().map(|b| f64::from(*b as i8) / 127.0).collect();
    if i8s.windows(D).any(|w| unit(w.iter().map(|v| v * v).sum())) {
        return true;
    }
    // JSON or text: 32 decimals in a row separated by commas.
    let text = String::from_utf8_lossy(bytes);
    let mut run = 0;
    for tok in text.split(',') {
        let t = tok.trim_matches(|c: char| c == '[' || c == ']' || c.is_whitespace());
        if t.contains('.') && t.parse::<f64>().is_ok() {
            run += 1;
            if run >= 32 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = (h >> 10) & 0x1f;
    let frac = f64::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 => f64::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(i32::from(e) - 15),
    }
}

/// A frame of a shared clip as a data URL.
pub fn frame_data(clip: &str, n: usize) -> String {
    use base64::Engine as _;
    let bytes = std::fs::read(crate::data(&format!("video/{clip}/{n:04}.jpg"))).unwrap();
    format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Sends frames of `clip` to a REST session until it ends; the last answer.
pub fn run_session(
    d: &crate::Daemon,
    auth: &str,
    kind: &str,
    body: &serde_json::Value,
    clip: &str,
    frames: std::ops::RangeInclusive<usize>,
) -> serde_json::Value {
    let token = d.session(auth, &format!("/api/auth/{kind}/"), body);
    let mut last = serde_json::Value::Null;
    for n in frames {
        let (s, v) = d.post(
            &format!("/api/auth/{kind}/process-frame/"),
            Some(("Authorization", auth)),
            &serde_json::json!({"session_token": token, "frame_data": frame_data(clip, n)}),
        );
        assert_eq!(s, 200, "{v}");
        let done = v["session_status"] != "in_progress";
        last = v;
        if done {
            break;
        }
    }
    last
}

/// Enrolls `user_id` from a woman who talks (lp_d13, files 0001-0060: blinks at 0015, 0027,
/// 0035; her lips' movement makes her live by default); the enrollment id.
pub fn enroll_speaker(d: &crate::Daemon, auth: &str, user_id: &str) -> String {
    let v = run_session(
        d,
        auth,
        "enrollment",
        &serde_json::json!({"user_id": user_id, "metadata": {"target_samples": 5, "required_blinks": 1}}),
        "lp_d13",
        1..=60,
    );
    assert_eq!(v["session_status"], "completed", "{v}");
    v["enrollment_id"].as_str().unwrap().to_owned()
}

/// Waits up to `timeout` for `f` to hold; the time it took.
pub fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}
