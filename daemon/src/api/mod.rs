//! The local REST + WebSocket API of the reference service (`../shared/spec/API.md`), on axum.
//!
//! Invariant: handlers never block the async runtime: store and pipeline work runs through
//! `blocking` on tokio's blocking pool; every response to a bad request is the contract's
//! error envelope; the server binds where configured (127.0.0.1 by default) and shuts down
//! gracefully, saving the index snapshot.

pub mod admin;
pub mod analytics;
pub mod auth;
pub mod cameras;
pub mod enrollments;
pub mod error;
pub mod events;
pub mod frames;
pub mod kiosk;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod payload;
pub mod sessions;
pub mod sync;
pub mod ws;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::config::Config;
use crate::store::Store;
use auth::JwtKeys;
use error::ApiError;

pub use crate::config::ApiConfig;

/// What every handler shares.
#[derive(Debug)]
pub struct ApiState {
    pub config: Config,
    pub store: Store,
    pub jwt: JwtKeys,
    pub started: Instant,
    pub engine: crate::sessions::Engine,
    pub sessions: crate::sessions::Sessions,
    pub frame_slots: Arc<tokio::sync::Semaphore>,
    /// Places to wait for a frame worker (`frame_queue`).
    pub frame_queue: Arc<tokio::sync::Semaphore>,
    pub limits: limits::RateLimits,
    pub metrics: metrics::Metrics,
    /// `/ws/events` listeners.
    pub events: events::Events,
    /// Triggered at SIGTERM/SIGINT: WebSockets close with 1001 and the servers drain.
    pub shutdown: Shutdown,
    /// Set when the daemon stops itself to reopen a failed store (it then exits non-zero).
    pub restart: std::sync::atomic::AtomicBool,
    /// WebSockets open now (shutdown waits a moment for their close frames).
    pub open_sockets: std::sync::atomic::AtomicUsize,
    /// The terminal's cameras (and doors), started with the server.
    pub cameras: Vec<cameras::CameraEntry>,
    /// Sessions fed by a camera (`source: camera:<id>`): their result channels.
    pub feeds: sessions::Feeds,
    /// The local sync API's site, key and counters.
    pub sync: sync::SyncState,
}

/// Runs store work on the blocking pool and maps its errors to a logged 500.
pub async fn blocking<T, F>(state: &Arc<ApiState>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&ApiState) -> anyhow::Result<T> + Send + 'static,
{
    let state = state.clone();
    let st = state.clone();
    tokio::task::spawn_blocking(move || f(&st))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match state.store.note_failure(e.as_ref()) {
            Some(what) => storage_error(what),
            None => ApiError::internal(e),
        })
}

/// The answer to a request that needed to write while the storage is failing: nothing of it
/// was stored; the terminal keeps answering what needs no write.
pub(crate) fn storage_error(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the terminal cannot store anything ({what}): nothing of this request was kept; \
             an administrator must free space or repair the disk, then restart the service"
        ),
    )
    .with_details(json!({"reason": "storage_failure", "storage": what}))
}

#[utoipa::path(get, path = "/health/", tag = "health",
    responses((status = 200, description = "`{status: healthy, timestamp, services{store, index, models, cameras}}`"),
              (status = 503, description = "`status: unhealthy`: the storage failed (disk full, I/O error); reads go on, writes are refused until restart")))]
/// Daemon health: store, index, models, cameras.
async fn health(State(state): State<Arc<ApiState>>) -> (StatusCode, Json<serde_json::Value>) {
    let enrollments = state.store.records().len();
    let index = state.store.index_len();
    let failure = state.store.failure();
    let store = match &failure {
        None => json!({"status": "ok", "enrollments": enrollments}),
        Some(what) => json!({"status": "error", "error": what, "enrollments": enrollments}),
    };
    let (code, status) = match failure {
        None => (StatusCode::OK, "healthy"),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
    };
    (
        code,
        Json(json!({
            "status": status,
            "timestamp": error::now_rfc3339(),
            "uptime_s": state.started.elapsed().as_secs(),
            "active_sessions": state.sessions.active(),
            "services": {
                "store": store,
                "index": {"status": if index == enrollments { "ok" } else { "degraded" }, "size": index},
                "models": {"status": "ok"},
                "cameras": cameras::health(&state),
            },
        })),
    )
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

pub fn router(state: Arc<ApiState>) -> Router {
    let cfg = &state.config.api;
    let api = Router::new()
        .route("/api/auth/client/", post(auth::client_login))
        .route("/api/core/auth/client/", post(auth::client_login))
        .route("/api/auth/token/", post(auth::operator_login))
        .route("/api/auth/token/refresh/", post(auth::operator_refresh))
        .route("/api/auth/enrollments/", get(enrollments::list))
        .route("/api/auth/enrollment/", post(sessions::create_enrollment))
        .route(
            "/api/auth/enrollment/process-frame/",
            post(sessions::process_enrollment_frame),
        )
        .route(
            "/api/auth/authentication/",
            post(sessions::create_authentication),
        )
        .route(
            "/api/auth/authentication/process-frame/",
            post(sessions::process_authentication_frame),
        )
        .route("/api/auth/session/{token}/status/", get(sessions::status))
        .route(
            "/api/auth/session/{token}/",
            axum::routing::delete(sessions::cancel),
        )
        .route(
            "/api/auth/enrollments/{id}/",
            get(enrollments::get).delete(enrollments::delete),
        )
        .route(
            "/api/analytics/authentication-metrics/",
            get(analytics::authentication_metrics),
        )
        .route(
            "/api/analytics/system-metrics/",
            get(analytics::system_metrics),
        )
        .route(
            "/api/admin/clients/",
            get(admin::list_clients).post(admin::add_client),
        )
        .route("/api/admin/keys/rotate/", post(admin::rotate_keys))
        .route("/api/cameras/", get(cameras::list))
        .route("/api/cameras/{id}/snapshot.jpg", get(cameras::snapshot))
        .route("/api/cameras/{id}/stream.mjpeg", get(cameras::stream))
        .route("/api/sync/changes", get(sync::changes))
        .route("/api/sync/ack", post(sync::ack))
        .route("/api/sync/apply", post(sync::apply));
    let timeout = Duration::from_secs(cfg.request_timeout_s.max(1));
    let docs: Router<Arc<ApiState>> = utoipa_swagger_ui::SwaggerUi::new("/api/schema/swagger-ui")
        .url("/api/schema/", openapi::document())
        .into();
    Router::new()
        .route("/", get(kiosk::index))
        .route("/kiosk/kiosk.js", get(kiosk::script))
        .route("/kiosk/kiosk.css", get(kiosk::style))
        .route("/health/", get(health))
        .route("/metrics", get(analytics::prometheus))
        .route("/ws/auth/process-image/{token}/", get(ws::upgrade))
        .route("/ws/events", get(events::upgrade))
        .merge(api)
        .merge(docs)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(
                    |_: tower::BoxError| async {
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the terminal is busy or the request took too long",
                        )
                    },
                ))
                .timeout(timeout)
                .concurrency_limit(cfg.max_concurrent_requests.max(1)),
        )
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Request ids and request metrics: the caller's `X-Request-Id` (if sane) or a fresh one is
/// echoed on the response and carried by the request's log span; status and latency are
/// counted per route template (never the raw path, which may hold a session token).
async fn observe(
    State(state): State<Arc<ApiState>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument as _;
    let started = Instant::now();
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(crate::store::records::new_token_id, str::to_owned);
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().clone();
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    let span = tracing::info_span!("request", id = %id, method = %method, route = %route);
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    state.metrics.request(&route, status, seconds);
    span.in_scope(|| tracing::debug!(status, ms = seconds * 1000.0, "answered"));
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

const REQUEST_ID: &str = "x-request-id";

/// How often expired sessions are looked for (their audit rows written, old ones forgotten).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Serves until SIGINT/SIGTERM, then drains requests and saves the index snapshot. With a
/// Unix socket configured, the same router answers there too.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<ApiState>) -> anyhow::Result<()> {
    let app = router(state.clone());
    let shutdown = state.shutdown.clone();
    let unix = match &state.config.api.unix_socket {
        Some(path) => Some(unix_listener(path)?),
        None => None,
    };
    // Sessions that expire untouched still get their audit row, within `SWEEP_EVERY`.
    let sweeper = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tick.tick().await;
                let s = state.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    s.sessions.record_ends(&s.store);
                    s.sessions.sweep();
                })
                .await;
                if storage_recovered(&state) {
                    tracing::error!(
                        "the storage failed and has space again: stopping so the service \
                         manager restarts the daemon and the database is reopened"
                    );
                    state
                        .restart
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    state.shutdown.trigger();
                }
            }
        })
    };
    // With sync on, a metrics snapshot enters the change feed for the hub now and then.
    let snapshots = sync::spawn_metrics_snapshots(state.clone());
    // systemd (Type=notify): ready once the listeners are bound; the watchdog is pinged only
    // while a probe through the store and a frame worker (and every door's pipeline) succeeds.
    let notifier = crate::notify::Notifier::from_env();
    let watchdog = {
        let state = state.clone();
        let notifier = notifier.clone();
        tokio::spawn(async move { watchdog_loop(state, notifier).await })
    };
    notifier.ready(&status_line(&state));
    let tcp = axum::serve(listener, app.clone()).with_graceful_shutdown(shutdown.wait());
    let unix = async {
        let Some((l, path)) = unix else {
            return Ok(());
        };
        // The socket (mode 0660: the daemon's user and group) also hands out sync tokens, so
        // the sync agent of a running terminal can get one.
        let app = app.merge(
            Router::new()
                .route("/api/sync/token", post(sync::token_over_socket))
                .with_state(state.clone()),
        );
        let served = axum::serve(l, app)
            .with_graceful_shutdown(shutdown.wait())
            .await;
        let _ = std::fs::remove_file(&path);
        served
    };
    // Ends at SIGTERM/SIGINT, or when the daemon stops itself (a failed store to reopen).
    let signal = async {
        tokio::select! {
            () = shutdown_signal() => shutdown.trigger(),
            () = shutdown.wait() => {}
        }
    };
    let stopping = {
        let notifier = notifier.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.wait().await;
            notifier.stopping();
        }
    };
    let (tcp, unix, (), ()) = tokio::join!(tcp, unix, signal, stopping);
    watchdog.abort();
    tcp?;
    unix?;
    // Upgraded connections outlive the servers: give the WebSockets told "going away" a moment
    // to send their close frames.
    let deadline = Instant::now() + Duration::from_secs(2);
    while state.open_sockets.load(std::sync::atomic::Ordering::SeqCst) > 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sweeper.abort();
    if let Some(s) = snapshots {
        s.abort();
    }
    for e in &state.cameras {
        e.camera.stop();
    }
    let s = state.clone();
    tokio::task::spawn_blocking(move || s.sessions.record_ends(&s.store)).await?;
    tracing::info!("shutting down: saving the index snapshot");
    let s = state.clone();
    tokio::task::spawn_blocking(move || s.store.save_snapshot()).await??;
    if state.restart.load(std::sync::atomic::Ordering::SeqCst) {
        anyhow::bail!(
            "stopped to reopen the database after a storage failure (space is back): \
             restart the service (systemd does, Restart=on-failure)"
        );
    }
    Ok(())
}

/// One line for `systemctl status`: where it serves, what it holds, its cameras.
fn status_line(state: &ApiState) -> String {
    let cams: Vec<String> = state
        .cameras
        .iter()
        .map(|e| {
            let h = e.camera.health();
            format!("{} {} {:.0} fps", h.id, h.state.as_str(), h.fps_in)
        })
        .collect();
    format!(
        "serving {}; {} enrollments; {} active sessions; cameras: {}{}",
        state.config.api.listen,
        state.store.records().len(),
        state.sessions.active(),
        if cams.is_empty() {
            "none".to_owned()
        } else {
            cams.join(", ")
        },
        state
            .store
            .failure()
            .map_or(String::new(), |f| format!("; STORAGE FAILED: {f}"))
    )
}

/// Proves the terminal works end to end: the store answers a read, a frame worker runs the
/// detector on a small image, and every door that was given frames processed some.
async fn probe(
    state: &Arc<ApiState>,
    captured: &mut Vec<u64>,
    stuck_after: Duration,
) -> Result<(), String> {
    blocking(state, |s| Ok(s.store.records().epoch()?))
        .await
        .map_err(|e| format!("store: {}", e.message))?;
    let permit = state
        .frame_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| e.to_string())?;
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        st.engine
            .pipeline
            .detect(&image::RgbImage::new(64, 64))
            .map(|_| ())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("pipeline: {e}"))?;
    use std::sync::atomic::Ordering;
    // A door given frames since the last probe must have finished one within `stuck_after`
    // (a slow frame is not a stuck door; a door busy on one frame that long is).
    let now: Vec<u64> = state
        .cameras
        .iter()
        .map(|e| e.camera.counters.captured.load(Ordering::Relaxed))
        .collect();
    let now_ms = crate::store::records::now_ms();
    for ((e, cap), before) in state.cameras.iter().zip(&now).zip(captured.iter()) {
        let Some(door) = &e.door else { continue };
        let last = door.last_frame_ms.load(Ordering::Relaxed);
        let idle_ms = now_ms.saturating_sub(last);
        if *cap > before + 1 && last > 0 && idle_ms > stuck_after.as_millis() as u64 {
            return Err(format!(
                "door {} finished no frame for {} ms while its camera delivered {}",
                e.camera.id,
                idle_ms,
                cap - before
            ));
        }
    }
    *captured = now;
    Ok(())
}

async fn watchdog_loop(state: Arc<ApiState>, notifier: crate::notify::Notifier) {
    let Some(interval) = crate::notify::watchdog_interval() else {
        return;
    };
    let every = interval / 3;
    let mut captured = vec![0; state.cameras.len()];
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match tokio::time::timeout(interval / 2, probe(&state, &mut captured, interval)).await {
            Ok(Ok(())) => {
                notifier.watchdog();
                notifier.status(&status_line(&state));
            }
            Ok(Err(why)) => {
                tracing::error!(%why, "watchdog probe failed: not pinging systemd");
                notifier.status(&format!("unhealthy: {why}"));
            }
            Err(_) => {
                tracing::error!("watchdog probe timed out: not pinging systemd");
                notifier.status("unhealthy: the watchdog probe timed out");
            }
        }
    }
}

/// Free space at which a failed store is worth reopening (or a tenth of a smaller disk).
const RECOVERY_FREE_BYTES: u64 = 32 * 1024 * 1024;

/// The store failed (disk full) and its file system has room again.
// statvfs counts are u32 on 32-bit targets (armv7): the conversions are not useless there.
#[allow(clippy::useless_conversion)]
fn storage_recovered(state: &ApiState) -> bool {
    if state.store.failure().is_none() {
        return false;
    }
    nix::sys::statvfs::statvfs(&state.config.data_dir).is_ok_and(|v| {
        let block = u64::from(v.fragment_size());
        let free = u64::from(v.blocks_available()).saturating_mul(block);
        let total = u64::from(v.blocks()).saturating_mul(block);
        free >= RECOVERY_FREE_BYTES.min(total / 10)
    })
}

/// Binds the Unix socket (a stale file from a killed run is replaced), mode 0660.
fn unix_listener(
    path: &std::path::Path,
) -> anyhow::Result<(tokio::net::UnixListener, std::path::PathBuf)> {
    use anyhow::Context as _;
    use std::os::unix::fs::PermissionsExt as _;
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!("{} is served by another process", path.display());
    }
    let _ = std::fs::remove_file(path);
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on the Unix socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    tracing::info!(path = %path.display(), "serving the API on a Unix socket");
    Ok((l, path.to_owned()))
}

/// A one-shot broadcast: every waiter wakes when triggered (also those that start waiting
/// after).
#[derive(Debug, Clone)]
pub struct Shutdown(tokio::sync::watch::Sender<bool>);

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown(tokio::sync::watch::channel(false).0)
    }
}

impl Shutdown {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    }
}

/// Counts an open WebSocket for as long as it lives.
#[derive(Debug)]
pub struct SocketGuard(Arc<ApiState>);

impl SocketGuard {
    pub fn new(state: &Arc<ApiState>) -> SocketGuard {
        state
            .open_sockets
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        SocketGuard(state.clone())
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0
            .open_sockets
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
