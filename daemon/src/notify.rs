//! The systemd notification protocol (`sd_notify`), without libsystemd: datagrams to
//! `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace): `READY=1`, `STATUS=...`,
//! `STOPPING=1`, `WATCHDOG=1`; and the watchdog interval from `$WATCHDOG_USEC`.
//!
//! Invariant: a no-op outside systemd (no socket: nothing is sent, nothing fails); never sends
//! anything but the state lines given, and never a secret.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where systemd listens, if it does.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<String>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` (absent outside `Type=notify` units).
    pub fn from_env() -> Notifier {
        Notifier {
            socket: std::env::var("NOTIFY_SOCKET")
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines); errors are logged, not raised.
    pub fn send(&self, state: &str) {
        let Some(path) = &self.socket else { return };
        if let Err(e) = send_to(path, state) {
            tracing::warn!(error = %e, "systemd notification failed");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: draining requests, saving the index snapshot");
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn send_to(path: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

/// The watchdog interval systemd expects pings within (`WatchdogSec=`), when it is for us.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok()
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("facegate-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: Some(path.display().to_string()),
        };
        n.ready("serving on 127.0.0.1:8080\n2 cameras");
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "READY=1\nSTATUS=serving on 127.0.0.1:8080 2 cameras"
        );
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("facegate-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abs = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier {
            socket: Some(format!("@{name}")),
        }
        .watchdog();
        let len = abs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        // Outside systemd: nothing to do, nothing fails.
        Notifier { socket: None }.stopping();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
