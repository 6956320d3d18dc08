//! The relay hook of a door: on a grant, a configured command and/or a GPIO line (Linux GPIO
//! character device, through `gpiocdev`) held active for a pulse. Each fire runs on its own
//! short-lived thread; one fire at a time per door (a grant while the door is still being
//! opened is counted as `busy`, not queued); failures are logged and counted.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::DoorConfig;

#[derive(Debug, Default)]
pub struct RelayCounters {
    pub fired: AtomicU64,
    pub failures: AtomicU64,
    pub busy: AtomicU64,
}

#[derive(Debug, Clone)]
struct Gpio {
    chip: PathBuf,
    line: u32,
}

#[derive(Debug)]
pub struct Relay {
    command: Vec<String>,
    timeout: Duration,
    gpio: Option<Gpio>,
    pulse: Duration,
    running: Arc<AtomicBool>,
    pub counters: Arc<RelayCounters>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("door.relay_gpio `{0}`: expected /dev/gpiochipN:LINE")]
pub struct GpioSpecError(String);

fn parse_gpio(spec: &str) -> Result<Option<Gpio>, GpioSpecError> {
    if spec.is_empty() {
        return Ok(None);
    }
    let (chip, line) = spec
        .rsplit_once(':')
        .ok_or_else(|| GpioSpecError(spec.into()))?;
    let line = line.parse().map_err(|_| GpioSpecError(spec.into()))?;
    if !chip.starts_with('/') {
        return Err(GpioSpecError(spec.into()));
    }
    Ok(Some(Gpio {
        chip: chip.into(),
        line,
    }))
}

impl Relay {
    pub fn new(cfg: &DoorConfig) -> Result<Relay, GpioSpecError> {
        Ok(Relay {
            command: cfg.relay_command.clone(),
            timeout: Duration::from_secs_f64(cfg.relay_timeout_s.clamp(0.1, 600.0)),
            gpio: parse_gpio(&cfg.relay_gpio)?,
            pulse: Duration::from_millis(cfg.relay_pulse_ms.min(60_000)),
            running: Arc::new(AtomicBool::new(false)),
            counters: Arc::new(RelayCounters::default()),
        })
    }

    pub fn is_configured(&self) -> bool {
        !self.command.is_empty() || self.gpio.is_some()
    }

    /// Opens the door for `user_id` (returns at once).
    pub fn fire(&self, camera: &str, client: &str, user_id: &str) {
        if !self.is_configured() {
            return;
        }
        if self.running.swap(true, Ordering::SeqCst) {
            self.counters.busy.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                camera,
                "relay still busy with the previous grant: not fired again"
            );
            return;
        }
        let sub = |a: &String| {
            a.replace("{user_id}", user_id)
                .replace("{camera}", camera)
                .replace("{client}", client)
        };
        let argv: Vec<String> = self.command.iter().map(sub).collect();
        let env = [
            ("FACEGATE_USER_ID", user_id.to_owned()),
            ("FACEGATE_CAMERA", camera.to_owned()),
            ("FACEGATE_CLIENT", client.to_owned()),
        ];
        let (gpio, pulse, timeout) = (self.gpio.clone(), self.pulse, self.timeout);
        let running = self.running.clone();
        let counters = self.counters.clone();
        let camera = camera.to_owned();
        let spawned = std::thread::Builder::new()
            .name(format!("relay-{camera}"))
            .spawn(move || {
                counters.fired.fetch_add(1, Ordering::Relaxed);
                let mut ok = true;
                if let Some(g) = &gpio
                    && let Err(e) = pulse_gpio(g, pulse)
                {
                    ok = false;
                    tracing::error!(camera = %camera, chip = %g.chip.display(), line = g.line, error = %e, "relay GPIO failed");
                }
                if !argv.is_empty()
                    && let Err(e) = run_command(&argv, &env, timeout)
                {
                    ok = false;
                    tracing::error!(camera = %camera, command = %argv[0], error = %e, "relay command failed");
                }
                if !ok {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                }
                running.store(false, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            self.running.store(false, Ordering::SeqCst);
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "no thread for the relay");
        }
    }

    /// Waits (tests, shutdown) until no fire is in progress, up to `limit`.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.running.load(Ordering::SeqCst) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

fn run_command(argv: &[String], env: &[(&str, String)], timeout: Duration) -> Result<(), String> {
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => return Err(format!("exited with {status}")),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {timeout:?}: killed"));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn pulse_gpio(g: &Gpio, pulse: Duration) -> Result<(), gpiocdev::Error> {
    use gpiocdev::line::Value;
    let req = gpiocdev::Request::builder()
        .on_chip(&g.chip)
        .with_consumer("facegate-relay")
        .with_line(g.line)
        .as_output(Value::Active)
        .request()?;
    std::thread::sleep(pulse);
    req.set_lone_value(Value::Inactive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(command: &[&str], gpio: &str, timeout_s: f64) -> DoorConfig {
        DoorConfig {
            window_s: 5.0,
            cooldown_s: 10.0,
            min_frames: 3,
            unknown_attempts: 3,
            unknown_retry_s: 0.4,
            unknown_rechecks: 5,
            unknown_recheck_s: 0.5,
            unknown_recheck_margin: 0.1,
            relay_command: command.iter().map(|s| s.to_string()).collect(),
            relay_timeout_s: timeout_s,
            relay_gpio: gpio.into(),
            relay_pulse_ms: 10,
            idle_fps: 5.0,
        }
    }

    #[test]
    fn the_command_gets_the_person_and_failures_are_counted_not_raised() {
        let out = std::env::temp_dir().join(format!("facegate-relay-{}", std::process::id()));
        let script = format!(
            "echo \"$1 $FACEGATE_CAMERA $FACEGATE_CLIENT\" > {}",
            out.display()
        );
        let r = Relay::new(&cfg(&["sh", "-c", &script, "relay", "{user_id}"], "", 5.0)).unwrap();
        r.fire("front", "acme", "alice");
        assert!(r.wait_idle(Duration::from_secs(5)));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "alice front acme"
        );
        assert_eq!(r.counters.failures.load(Ordering::Relaxed), 0);
        std::fs::remove_file(&out).unwrap();
        // A command that fails, one that hangs (killed at the timeout), one that is missing.
        for (argv, timeout) in [
            (vec!["false"], 5.0),
            (vec!["sleep", "30"], 0.2),
            (vec!["/nonexistent/open-door"], 5.0),
        ] {
            let r = Relay::new(&cfg(&argv, "", timeout)).unwrap();
            let t = Instant::now();
            r.fire("front", "acme", "alice");
            assert!(
                t.elapsed() < Duration::from_millis(100),
                "fire never blocks"
            );
            assert!(r.wait_idle(Duration::from_secs(5)));
            assert_eq!(r.counters.failures.load(Ordering::Relaxed), 1, "{argv:?}");
        }
        // No GPIO chip on this machine: a clear failure, counted.
        let r = Relay::new(&cfg(&[], "/dev/gpiochip-none:17", 5.0)).unwrap();
        r.fire("front", "acme", "alice");
        assert!(r.wait_idle(Duration::from_secs(5)));
        assert_eq!(r.counters.failures.load(Ordering::Relaxed), 1);
        assert!(Relay::new(&cfg(&[], "gpiochip0", 5.0)).is_err());
        assert!(Relay::new(&cfg(&[], "/dev/gpiochip0:x", 5.0)).is_err());
    }
}
