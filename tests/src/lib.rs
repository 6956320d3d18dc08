//! Black-box harness: runs the real `facegate` binary (built by `cargo test --workspace` for the
//! daemon's own tests) on a random port with a temporary data directory, and talks to it over
//! real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/facegate`: beside a test's own executable (`target/<profile>/deps/`) or
/// a bench binary's (`target/<profile>/`).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().expect("target/<profile>/...");
    let bin = [dir.join("facegate"), dir.join("../facegate")]
        .into_iter()
        .find(|p| p.exists());
    bin.unwrap_or_else(|| {
        panic!(
            "no facegate binary beside {}: run the workspace tests (`cargo test --release --workspace`) or build it",
            exe.display()
        )
    })
}

pub mod sync;

pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("facegate-bb-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Removes a test's temporary directory when the test ends well; a failing test leaves it for
/// inspection. Bound right after the directory is made, it is dropped after everything the
/// test binds later (the daemons, brokers and browsers writing in it).
#[derive(Debug)]
pub struct RemoveOnSuccess(pub PathBuf);

impl Drop for RemoveOnSuccess {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `../shared/data/<rel>` beside the checkout.
pub fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(rel)
}

fn command(data_dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env_remove("JOURNAL_STREAM");
    for (k, _) in std::env::vars() {
        if k.starts_with("FACEGATE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a one-shot `facegate` command on `data_dir` (the daemon must not be running on it).
pub fn cli(data_dir: &Path, args: &[&str]) -> Output {
    command(data_dir, &[]).args(args).output().unwrap()
}

/// Runs a one-shot `facegate` command with `input` on its standard input.
pub fn cli_stdin(data_dir: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = command(data_dir, &[])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// SHA-256 of text: the key of a client's `encrypted_data`.
pub fn sha256(text: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).into()
}

/// Opens `encrypted_data {encrypted_payload, algorithm}` as a client written against the
/// contract would: AES-256-GCM (nonce || ciphertext || tag, key SHA-256(api_secret)) or
/// AES-256-CBC (IV || ciphertext, PKCS7, key SHA-256(api_key)).
pub fn open_payload(
    encrypted: &serde_json::Value,
    api_key: &str,
    api_secret: &str,
) -> serde_json::Value {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encrypted["encrypted_payload"].as_str().unwrap())
        .unwrap();
    let plain = match encrypted["algorithm"].as_str().unwrap() {
        "AES-256-GCM" => {
            use aes_gcm::aead::{Aead, KeyInit};
            let cipher = aes_gcm::Aes256Gcm::new_from_slice(&sha256(api_secret)).unwrap();
            let (nonce, ct) = raw.split_at(12);
            let nonce: [u8; 12] = nonce.try_into().unwrap();
            cipher
                .decrypt(&aes_gcm::Nonce::from(nonce), ct)
                .expect("GCM payload opens with SHA-256(api_secret)")
        }
        "AES-256-CBC" => {
            use cbc::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
            let (iv, ct) = raw.split_at(16);
            cbc::Decryptor::<aes::Aes256>::new_from_slices(&sha256(api_key), iv)
                .unwrap()
                .decrypt_padded_vec::<Pkcs7>(ct)
                .expect("CBC payload opens with SHA-256(api_key)")
        }
        other => panic!("unknown algorithm {other}"),
    };
    serde_json::from_slice(&plain).unwrap()
}

pub fn cli_json(data_dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = cli(data_dir, args);
    assert!(
        out.status.success(),
        "facegate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A running `facegate run`; killed (SIGKILL) on drop unless `stop` ended it.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
}

impl Daemon {
    /// Another handle on the same running daemon for another thread (it does not own, stop
    /// or kill the process).
    pub fn handle(&self) -> Daemon {
        Daemon {
            child: None,
            base: self.base.clone(),
            data_dir: self.data_dir.clone(),
        }
    }

    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_with(data_dir, env, &[])
    }

    /// `start` with more arguments (e.g. `--config FILE`).
    pub fn start_with(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Daemon {
        Daemon::start_run(data_dir, env, args, &[])
    }

    /// `start` with global arguments and arguments of `run` (e.g. `--camera SPEC --door`).
    pub fn start_run(
        data_dir: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        run_args: &[&str],
    ) -> Daemon {
        let mut child = command(data_dir, env)
            .args(args)
            .args(["run", "--listen", "127.0.0.1:0"])
            .args(run_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        let d = Daemon {
            child: Some(child),
            base,
            data_dir: data_dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if d.get("/health/", None).0 == 200 {
                return d;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("/health/ did not answer within 30 s");
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into()
    }

    fn read(resp: ureq::http::Response<ureq::Body>) -> (u16, serde_json::Value) {
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let text = body.read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// GET with optional `(header, value)`.
    pub fn get(&self, path: &str, auth: Option<(&str, &str)>) -> (u16, serde_json::Value) {
        let mut req = Self::agent().get(format!("{}{path}", self.base));
        if let Some((h, v)) = auth {
            req = req.header(h, v);
        }
        Self::read(req.call().unwrap())
    }

    /// GET of a binary body: the status, the content type and the bytes.
    pub fn get_bytes(&self, path: &str, auth: Option<(&str, &str)>) -> (u16, String, Vec<u8>) {
        let mut req = Self::agent().get(format!("{}{path}", self.base));
        if let Some((h, v)) = auth {
            req = req.header(h, v);
        }
        let resp = req.call().unwrap();
        let status = resp.status().as_u16();
        let ct = content_type(&resp);
        let bytes = resp.into_body().read_to_vec().unwrap_or_default();
        (status, ct, bytes)
    }

    /// The first bytes of a streaming body (an MJPEG preview): up to `limit` bytes, or what
    /// arrived within `timeout`.
    pub fn get_prefix(
        &self,
        path: &str,
        limit: usize,
        timeout: Duration,
    ) -> (u16, String, Vec<u8>) {
        use std::io::Read as _;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        let resp = agent.get(format!("{}{path}", self.base)).call().unwrap();
        let status = resp.status().as_u16();
        let ct = content_type(&resp);
        let mut out = Vec::new();
        let mut reader = resp.into_body().into_reader();
        let mut buf = [0u8; 16384];
        while out.len() < limit {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        (status, ct, out)
    }

    /// GET with headers; the status, the response headers (lower-case names) and the body.
    pub fn get_text(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>, String) {
        let mut req = Self::agent().get(format!("{}{path}", self.base));
        for (h, v) in headers {
            req = req.header(*h, *v);
        }
        let resp = req.call().unwrap();
        let status = resp.status().as_u16();
        let hs = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let text = resp.into_body().read_to_string().unwrap_or_default();
        (status, hs, text)
    }

    pub fn delete(&self, path: &str, auth: Option<(&str, &str)>) -> (u16, serde_json::Value) {
        let mut req = Self::agent().delete(format!("{}{path}", self.base));
        if let Some((h, v)) = auth {
            req = req.header(h, v);
        }
        Self::read(req.call().unwrap())
    }

    /// POST a raw body as JSON.
    pub fn post_raw(
        &self,
        path: &str,
        auth: Option<(&str, &str)>,
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let mut req = Self::agent()
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some((h, v)) = auth {
            req = req.header(h, v);
        }
        Self::read(req.send(body).unwrap())
    }

    pub fn post(
        &self,
        path: &str,
        auth: Option<(&str, &str)>,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.post_raw(path, auth, body.to_string().as_bytes())
    }

    /// POST over a raw socket, as a client that keeps sending after an early answer would:
    /// the body is written in 64 KiB pieces until the server stops reading, then the response
    /// is read. Returns the status and the JSON body.
    pub fn post_streaming(&self, path: &str, body_len: usize) -> (u16, serde_json::Value) {
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let piece = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < body_len {
            let n = piece.len().min(body_len - sent);
            if s.write_all(&piece[..n]).is_err() {
                break;
            }
            sent += n;
        }
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_owned())),
        )
    }

    /// Client login with the key and secret of `facegate clients add --json`; the
    /// `Authorization` value (`Bearer <jwt>`).
    pub fn login(&self, client: &serde_json::Value) -> String {
        let (s, v) = self.post(
            "/api/auth/client/",
            None,
            &serde_json::json!({"api_key": client["api_key"], "api_secret": client["api_secret"]}),
        );
        assert_eq!(s, 200, "{v}");
        format!("Bearer {}", v["jwt_token"].as_str().unwrap())
    }

    /// Creates a session (`POST path` with `body`, expecting 201); its `session_token`.
    pub fn session(&self, auth: &str, path: &str, body: &serde_json::Value) -> String {
        let (s, v) = self.post(path, Some(("Authorization", auth)), body);
        assert_eq!(s, 201, "{v}");
        v["session_token"].as_str().unwrap().to_owned()
    }

    /// A WebSocket on the session `token`.
    pub fn ws(&self, token: &str) -> Ws {
        let url = format!(
            "{}/ws/auth/process-image/{token}/",
            self.base.replace("http://", "ws://")
        );
        tungstenite::connect(url).unwrap().0
    }

    /// `/ws/events` with an `Authorization` header, or (`header = None`) the `?token=` query.
    pub fn events(&self, header: Option<&str>, query_token: Option<&str>) -> Ws {
        use tungstenite::client::IntoClientRequest;
        let mut url = format!("{}/ws/events", self.base.replace("http://", "ws://"));
        if let Some(t) = query_token {
            url.push_str(&format!("?token={t}"));
        }
        let mut req = url.into_client_request().unwrap();
        if let Some(h) = header {
            req.headers_mut()
                .insert("Authorization", h.parse().unwrap());
        }
        tungstenite::connect(req).unwrap().0
    }

    /// Audit rows on disk, as `/metrics` reports them.
    pub fn audit_rows(&self) -> u64 {
        let (_, _, text) = self.get_text("/metrics", &[]);
        text.lines()
            .find_map(|l| l.strip_prefix("facegate_audit_rows "))
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits up to `timeout` for the daemon to exit by itself; its exit status.
    pub fn wait_exit(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// SIGTERM, then the exit status (graceful shutdown).
    pub fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn content_type(resp: &ureq::http::Response<ureq::Body>) -> String {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// A client WebSocket to the daemon.
pub type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

/// The next JSON text message; `Err(close code)` when the server closed (1006: dropped).
pub fn ws_next(sock: &mut Ws) -> Result<serde_json::Value, u16> {
    use tungstenite::Message;
    loop {
        match sock.read() {
            Ok(Message::Text(t)) => return Ok(serde_json::from_str(t.as_str()).unwrap()),
            Ok(Message::Close(c)) => return Err(c.map_or(1005, |c| u16::from(c.code))),
            Ok(_) => continue,
            Err(_) => return Err(1006),
        }
    }
}

/// Whether a socket error is only a read timeout (nothing arrived yet), not a failure.
pub fn read_timed_out(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(
        io.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ))
}

/// base64url without padding (for hand-made tokens in tests).
pub fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub fn b64url_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(val(*c)) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
