//! One serde `Config`, layered: embedded `config/default.toml`, then `--config FILE`, then
//! `FACEGATE_*` environment variables, then command-line flags.
//!
//! Invariant: every key is known (`deny_unknown_fields`); a bad key or value is an error that
//! names it, never a silently ignored setting.

use crate::pipeline::liveness::LivenessConfig;
use crate::pipeline::obstacles::ObstacleThresholds;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::pipeline::ScheduleConfig;
use crate::pipeline::decode::DecodeLimits;
use crate::pipeline::detect::DetectorConfig;
use crate::pipeline::models::Precision;
use crate::pipeline::quality::QualityConfig;
use crate::store::StoreConfig;

/// The embedded defaults: the daemon runs with no config file at all.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Environment variables with the `FACEGATE_` prefix that are not configuration keys.
const RESERVED_ENV: &[&str] = &["FACEGATE_MASTER_KEY", "FACEGATE_LOG"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub models: ModelsConfig,
    pub pipeline: ScheduleConfig,
    pub detector: DetectorConfig,
    pub quality: QualityConfig,
    pub limits: DecodeLimits,
    pub store: StoreConfig,
    pub matching: MatchingConfig,
    pub liveness: LivenessConfig,
    pub obstacles: ObstacleThresholds,
    pub api: ApiConfig,
    pub door: DoorConfig,
    pub sync: SyncConfig,
    /// Cameras the daemon reads itself (`[[cameras]]`); `facegate run --camera` replaces them.
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
}

/// One camera (`[[cameras]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// `v4l:/dev/videoN[:WxH][@FPS]`, `replay:DIR[@FPS][,once]` or `replay:FILE.mjpeg[@FPS][,once]`,
    /// optionally prefixed `NAME=`.
    pub source: String,
    /// Overrides the name (default: the `NAME=` prefix, else `cam0`, `cam1`, ...).
    #[serde(default)]
    pub id: Option<String>,
    /// Door mode: detect, track, check liveness and identify continuously; one decision per visit.
    #[serde(default)]
    pub door: bool,
    /// Clients (ids or names) whose enrollments this door admits; empty: every client's.
    #[serde(default)]
    pub clients: Vec<String>,
}

/// Door mode (`[door]`): how visits are decided and what a grant triggers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorConfig {
    /// Seconds a visit may take to pass liveness before it is denied (once).
    pub window_s: f64,
    /// Seconds after a grant during which the same person is not granted again.
    pub cooldown_s: f64,
    /// Frames a track needs before it can be decided.
    pub min_frames: u64,
    /// Live frames without a match before the person is called unknown.
    pub unknown_attempts: u32,
    /// Seconds after a live frame without a match before the next attempt: the attempts look
    /// at the face over most of a second, not three frames in a row.
    pub unknown_retry_s: f64,
    /// Looks at a visitor called unknown while they stay in view (0: unknown is final),
    /// `unknown_recheck_s` apart; a look grants only at `unknown_recheck_margin` over
    /// `matching.threshold`.
    pub unknown_rechecks: u32,
    pub unknown_recheck_s: f64,
    pub unknown_recheck_margin: f32,
    /// Command run on every grant (argv; `{user_id}`, `{camera}`, `{client}` substituted; also
    /// in FACEGATE_USER_ID / FACEGATE_CAMERA / FACEGATE_CLIENT). Empty: none.
    pub relay_command: Vec<String>,
    /// Seconds after which a relay command still running is killed (and counted as failed).
    pub relay_timeout_s: f64,
    /// GPIO line pulsed on every grant: `/dev/gpiochipN:LINE`. Empty: none.
    pub relay_gpio: String,
    /// How long the GPIO line is held active.
    pub relay_pulse_ms: u64,
    /// While no face is in view, frames a door processes a second at most (0: every frame).
    pub idle_fps: f64,
}

/// Site-wide sync (`[sync]`): what the local sync API (`/api/sync/...`) seals and opens for
/// `facegate-sync`. The daemon itself makes no outbound connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// The site this terminal belongs to (one MQTT topic level); empty: sync is off.
    pub site: String,
    /// This terminal's name within the site (one topic level).
    pub terminal: String,
    /// The site key (64 hex characters): the systemd credential `facegate-site-key` if given,
    /// else this file (mode 0600 or 0400).
    pub site_key_file: PathBuf,
    /// Lifetime of the tokens `facegate sync-token` prints (days).
    pub token_days: u64,
    /// Longest wait of a `GET /api/sync/changes` long-poll (ms).
    pub max_wait_ms: u64,
    /// Seconds between the metrics snapshots the feed carries to the hub (0: none).
    pub metrics_interval_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchingConfig {
    pub threshold: f32,
    pub top_k: usize,
    /// Face quality a frame needs to be enrolled or matched.
    pub min_quality: f32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    pub dir: PathBuf,
    pub precision: Precision,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// What the command line contributes on top of files and environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Loads defaults -> file -> process environment -> CLI overrides.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::load_from(overrides, std::env::vars())
    }

    /// Same as [`Config::load`] with an explicit environment (tests).
    pub fn load_from(
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = parse_table(DEFAULT_TOML, Path::new("<embedded default.toml>"))?;
        if let Some(path) = &overrides.file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            merge(&mut table, parse_table(&text, path)?);
        }
        let env: BTreeMap<String, String> = env.into_iter().collect();
        for (var, value) in &env {
            let Some(rest) = var.strip_prefix("FACEGATE_") else {
                continue;
            };
            if RESERVED_ENV.contains(&var.as_str()) || rest.is_empty() {
                continue;
            }
            let keys: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            set_path(&mut table, &keys, env_value(value)).map_err(|message| ConfigError::Env {
                var: var.clone(),
                message,
            })?;
        }
        if let Some(dir) = &overrides.data_dir {
            table.insert(
                "data_dir".into(),
                toml::Value::String(dir.display().to_string()),
            );
        }
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let path = e.path().to_string();
                ConfigError::Invalid(format!("{path}: {}", e.into_inner().message()))
            })?;
        config.validate()?;
        if config.data_dir.as_os_str().is_empty() {
            config.data_dir = default_data_dir(&env);
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.detector;
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if !(0.0..=1.0).contains(&d.score_threshold) {
            return bad("detector.score_threshold", "must be within [0, 1]");
        }
        if !(0.0..=1.0).contains(&d.nms_iou) {
            return bad("detector.nms_iou", "must be within [0, 1]");
        }
        if d.max_side < 64 {
            return bad("detector.max_side", "must be at least 64");
        }
        if !(-1.0..=1.0).contains(&self.matching.threshold) {
            return bad(
                "matching.threshold",
                "must be a cosine similarity within [-1, 1]",
            );
        }
        if self.matching.top_k == 0 {
            return bad("matching.top_k", "must be at least 1");
        }
        if !(1..=65536).contains(&self.store.cache_mib) {
            return bad("store.cache_mib", "must be within [1, 65536] MiB");
        }
        let q = &self.quality;
        if q.good_face_px <= q.min_face_px {
            return bad(
                "quality.good_face_px",
                "must be larger than quality.min_face_px",
            );
        }
        if q.sharpness_scale <= 0.0 {
            return bad("quality.sharpness_scale", "must be positive");
        }
        let dc = &self.door;
        if !(dc.window_s > 0.0 && dc.window_s <= 600.0) {
            return bad("door.window_s", "must be within (0, 600]");
        }
        if !(0.0..=86400.0).contains(&dc.cooldown_s) {
            return bad("door.cooldown_s", "must be within [0, 86400]");
        }
        if dc.unknown_attempts == 0 {
            return bad("door.unknown_attempts", "must be at least 1");
        }
        if !(0.0..=60.0).contains(&dc.unknown_retry_s) {
            return bad("door.unknown_retry_s", "must be within [0, 60]");
        }
        if dc.unknown_rechecks > 100 {
            return bad(
                "door.unknown_rechecks",
                "must be at most 100 (0: unknown is final)",
            );
        }
        if !(0.0..=60.0).contains(&dc.unknown_recheck_s) {
            return bad("door.unknown_recheck_s", "must be within [0, 60]");
        }
        if !(0.0..=1.0).contains(&dc.unknown_recheck_margin) {
            return bad("door.unknown_recheck_margin", "must be within [0, 1]");
        }
        if !(0.0..=240.0).contains(&dc.idle_fps) {
            return bad("door.idle_fps", "must be within [0, 240] (0: every frame)");
        }
        let lc = &self.liveness;
        if lc.blink_min_baseline_frames < 2
            || lc.blink_min_baseline_frames > lc.blink_baseline_frames
        {
            return bad(
                "liveness.blink_min_baseline_frames",
                "must be at least 2 and at most liveness.blink_baseline_frames",
            );
        }
        // A negative or NaN limit would make every frame pair, or none, a head's relief (or
        // every eye, or none, squinting).
        for (key, limit) in [
            ("liveness.relief_parallax", lc.relief_parallax),
            ("liveness.relief_unbent", lc.relief_unbent),
            ("liveness.movement_max_change", lc.movement_max_change),
            ("liveness.lip_flow", lc.lip_flow),
            ("liveness.blink_squint_baseline", lc.blink_squint_baseline),
            (
                "liveness.relief_with_blink_depth",
                lc.relief_with_blink_depth,
            ),
        ] {
            if !(0.0..=1.0).contains(&limit) {
                return bad(key, "must be within [0, 1] (0: off)");
            }
        }
        if !(0.0..=255.0).contains(&lc.edge_strength) {
            return bad("liveness.edge_strength", "must be within [0, 255] (0: off)");
        }
        if !(lc.edge_moved > 0.0 && lc.edge_moved <= 100.0) {
            return bad("liveness.edge_moved", "must be within (0, 100] pixels");
        }
        if lc.edge_frames == 0 {
            return bad("liveness.edge_frames", "must be at least 1");
        }
        if !(0.0..=100.0).contains(&lc.edge_over_room) {
            return bad("liveness.edge_over_room", "must be within [0, 100]");
        }
        if !(0.0..=10.0).contains(&lc.moire_sustained) {
            return bad(
                "liveness.moire_sustained",
                "must be within [0, 10] (0: off)",
            );
        }
        if lc.head_evidence == 0 {
            return bad("liveness.head_evidence", "must be at least 1");
        }
        if !(0.0..=100.0).contains(&lc.lip_flow_ratio) {
            return bad("liveness.lip_flow_ratio", "must be within [0, 100]");
        }
        if !(0.0..=240.0).contains(&self.liveness.analysis_fps) {
            return bad(
                "liveness.analysis_fps",
                "must be within [0, 240] (0: every frame)",
            );
        }
        let sc = &self.sync;
        if !sc.site.is_empty() && !facegate_proto::valid_name(&sc.site) {
            return bad(
                "sync.site",
                "must be 1-64 letters, digits, '-', '_' or '.' (one MQTT topic level)",
            );
        }
        if !sc.terminal.is_empty() && !facegate_proto::valid_name(&sc.terminal) {
            return bad(
                "sync.terminal",
                "must be 1-64 letters, digits, '-', '_' or '.' (one MQTT topic level)",
            );
        }
        if sc.token_days == 0 {
            return bad("sync.token_days", "must be at least 1");
        }
        self.camera_specs()?;
        Ok(())
    }

    /// This terminal's name in its site: `sync.terminal`, else the host name.
    pub fn terminal_name(&self) -> String {
        if !self.sync.terminal.is_empty() {
            return self.sync.terminal.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| facegate_proto::valid_name(h));
        host.unwrap_or_else(|| "terminal".to_owned())
    }

    /// The configured cameras, parsed (ids unique).
    pub fn camera_specs(&self) -> Result<Vec<crate::camera::CameraSpec>, ConfigError> {
        let mut out: Vec<crate::camera::CameraSpec> = Vec::new();
        for (i, c) in self.cameras.iter().enumerate() {
            let mut spec = crate::camera::CameraSpec::parse(&c.source, i)
                .map_err(|e| ConfigError::Invalid(format!("cameras[{i}].source: {e}")))?;
            if let Some(id) = &c.id {
                spec.id = id.clone();
            }
            if out.iter().any(|o| o.id == spec.id) {
                return Err(ConfigError::Invalid(format!(
                    "cameras[{i}]: the id `{}` is used twice",
                    spec.id
                )));
            }
            out.push(spec);
        }
        Ok(out)
    }
}

fn parse_table(text: &str, path: &Path) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
}

/// Deep merge: tables merge key by key, anything else is replaced.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("empty key")?;
    let mut cur = table;
    for key in parents {
        let entry = cur
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{key}` is not a section"))?;
    }
    cur.insert(last.clone(), value);
    Ok(())
}

/// `FACEGATE_X=0.4` is a float, `=true` a bool, `=[1,2]` an array; anything else a string.
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn default_data_dir(env: &BTreeMap<String, String>) -> PathBuf {
    let non_empty = |k: &str| env.get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(state) = non_empty("STATE_DIRECTORY") {
        // systemd may pass several colon-separated directories; the first is ours.
        let first = state
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        return PathBuf::from(first);
    }
    if let Some(xdg) = non_empty("XDG_DATA_HOME") {
        return xdg.join("facegate");
    }
    match non_empty("HOME") {
        Some(home) => home.join(".local/share/facegate"),
        None => PathBuf::from("/var/lib/facegate"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_default_loads() {
        let c = Config::load_from(&Overrides::default(), env(&[("HOME", "/home/x")])).unwrap();
        assert_eq!(c.detector.max_side, 320);
        assert_eq!(c.data_dir, PathBuf::from("/home/x/.local/share/facegate"));
        // The liveness rules' own defaults (their unit tests' baseline) are the shipped ones.
        assert_eq!(
            format!("{:?}", c.liveness),
            format!("{:?}", LivenessConfig::default())
        );
    }

    #[test]
    fn env_overrides_nested_keys_and_parses_types() {
        let c = Config::load_from(
            &Overrides::default(),
            env(&[
                ("FACEGATE_DETECTOR__SCORE_THRESHOLD", "0.7"),
                ("FACEGATE_DETECTOR__KIND", "blazeface"),
                ("FACEGATE_DATA_DIR", "/srv/fg"),
                ("FACEGATE_MASTER_KEY", "not a config key"),
            ]),
        )
        .unwrap();
        assert_eq!(c.detector.score_threshold, 0.7);
        assert_eq!(
            c.detector.kind,
            crate::pipeline::detect::DetectorKind::Blazeface
        );
        assert_eq!(c.data_dir, PathBuf::from("/srv/fg"));
    }

    #[test]
    fn cli_data_dir_wins_over_env() {
        let o = Overrides {
            data_dir: Some("/cli".into()),
            ..Default::default()
        };
        let c = Config::load_from(&o, env(&[("FACEGATE_DATA_DIR", "/env")])).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/cli"));
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = Config::load_from(
            &Overrides::default(),
            env(&[("FACEGATE_DETECTOR__TRESHOLD", "1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("treshold"), "{e}");
    }

    #[test]
    fn file_overrides_and_bad_values_are_named() {
        let dir = std::env::temp_dir().join(format!("fg-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "[detector]\nmax_side = 480\n").unwrap();
        let o = Overrides {
            file: Some(path.clone()),
            ..Default::default()
        };
        let c = Config::load_from(&o, env(&[])).unwrap();
        assert_eq!(c.detector.max_side, 480);
        assert_eq!(
            c.detector.score_threshold, 0.5,
            "untouched keys keep their defaults"
        );

        std::fs::write(&path, "[detector]\nscore_threshold = 3.0\n").unwrap();
        let e = Config::load_from(&o, env(&[])).unwrap_err().to_string();
        assert!(e.contains("detector.score_threshold"), "{e}");

        std::fs::write(&path, "[store]\ncache_mib = 0\n").unwrap();
        let e = Config::load_from(&o, env(&[])).unwrap_err().to_string();
        assert!(e.contains("store.cache_mib"), "{e}");

        // A baseline minimum the rolling baseline never reaches would count no blink at all.
        for bad in [
            "[liveness]\nblink_min_baseline_frames = 16\n",
            "[liveness]\nblink_min_baseline_frames = 1\n",
            "[liveness]\nanalysis_fps = -10\n",
            "[liveness]\nrelief_parallax = -0.01\n",
            "[liveness]\nrelief_parallax = nan\n",
            "[liveness]\nrelief_unbent = -0.01\n",
            "[liveness]\nrelief_unbent = nan\n",
            "[liveness]\nmovement_max_change = -0.01\n",
            "[liveness]\nmovement_max_change = nan\n",
            "[liveness]\nlip_flow = -0.01\n",
            "[liveness]\nlip_flow = nan\n",
            "[liveness]\nlip_flow_ratio = -1\n",
            "[liveness]\nblink_squint_baseline = 1.5\n",
            "[liveness]\nblink_squint_baseline = nan\n",
            "[liveness]\nhead_evidence = 0\n",
            "[liveness]\nmoire_sustained = nan\n",
            "[liveness]\nmoire_sustained = -1\n",
            "[liveness]\nrelief_with_blink_depth = 1.5\n",
            "[liveness]\nrelief_with_blink_depth = nan\n",
            "[liveness]\nedge_strength = -1\n",
            "[liveness]\nedge_strength = nan\n",
            "[liveness]\nedge_moved = 0\n",
            "[liveness]\nedge_moved = nan\n",
            "[liveness]\nedge_frames = 0\n",
            "[liveness]\nedge_over_room = -1\n",
            "[liveness]\nedge_over_room = nan\n",
            "[door]\nunknown_rechecks = 1000\n",
            "[door]\nunknown_recheck_s = -1\n",
            "[door]\nunknown_recheck_margin = 1.5\n",
            "[door]\nunknown_recheck_margin = nan\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = Config::load_from(&o, env(&[])).unwrap_err().to_string();
            assert!(
                e.contains(bad.lines().nth(1).unwrap().split(' ').next().unwrap()),
                "{e}"
            );
        }

        std::fs::write(&path, "[detector]\nmax_side = \"big\"\n").unwrap();
        let e = Config::load_from(&o, env(&[])).unwrap_err().to_string();
        assert!(e.contains("max_side") || e.contains("integer"), "{e}");

        std::fs::write(&path, "[detector\n").unwrap();
        let e = Config::load_from(&o, env(&[])).unwrap_err().to_string();
        assert!(e.contains("c.toml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The local API server (`[api]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to serve on; keep it on loopback unless a reverse proxy fronts the terminal.
    pub listen: std::net::SocketAddr,
    /// Also serve on this Unix socket (mode 0660), for local clients managed by file access.
    #[serde(default)]
    pub unix_socket: Option<std::path::PathBuf>,
    /// Lifetime of access tokens (clients and operators), seconds.
    pub token_ttl_s: u64,
    /// Lifetime of operator refresh tokens, seconds.
    pub refresh_ttl_s: u64,
    /// Largest request body (a 10 MB frame as base64 is ~13.4 MB).
    pub max_body_bytes: usize,
    /// A request taking longer than this is answered 503.
    pub request_timeout_s: u64,
    /// Requests in flight at once; more wait for a slot.
    pub max_concurrent_requests: usize,
    /// Frames processed at once (blocking workers).
    pub frame_workers: usize,
    /// Frames that may wait for a busy worker, and for how long (ms); beyond either, 429.
    pub frame_queue: usize,
    pub frame_queue_wait_ms: u64,
    /// Default session lifetime, seconds.
    pub session_ttl_s: u64,
    /// Per client: authentication sessions per hour, enrollment sessions per hour, frames per
    /// minute (429 with Retry-After beyond).
    pub authentication_sessions_per_hour: u32,
    pub enrollment_sessions_per_hour: u32,
    pub frames_per_minute: u32,
    /// Failed logins per minute, for the whole terminal, separately for clients and operators;
    /// beyond, logins are refused (429) until the minute is over.
    pub failed_logins_per_minute: u32,
}
