//! The local REST + WebSocket API of the reference service (`../shared/spec/API.md`), on axum.
//!
//! Invariant: handlers never block the async runtime: store and pipeline work runs through
//! `blocking` on tokio's blocking pool; every response to a bad request is the contract's
//! error envelope; the server binds where configured (127.0.0.1 by default) and shuts down
//! gracefully, saving the index snapshot.

pub mod auth;
pub mod enrollments;
pub mod error;
pub mod limits;
pub mod sessions;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::config::Config;
use crate::store::Store;
use auth::JwtKeys;
use error::ApiError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to serve on; keep it on loopback unless a reverse proxy fronts the terminal.
    pub listen: SocketAddr,
    /// Lifetime of client tokens, seconds.
    pub token_ttl_s: u64,
    /// Largest request body (a 10 MB frame as base64 is ~13.4 MB).
    pub max_body_bytes: usize,
    /// A request taking longer than this is answered 503.
    pub request_timeout_s: u64,
    /// Requests in flight at once; more wait for a slot.
    pub max_concurrent_requests: usize,
    /// Frames processed at once (blocking workers); a frame beyond them gets 429 at once.
    pub frame_workers: usize,
    /// Default session lifetime, seconds.
    pub session_ttl_s: u64,
    /// Per client: authentication sessions per hour, enrollment sessions per hour, frames per
    /// minute (429 with Retry-After beyond).
    pub authentication_sessions_per_hour: u32,
    pub enrollment_sessions_per_hour: u32,
    pub frames_per_minute: u32,
}

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
    pub limits: limits::RateLimits,
}

/// Runs store work on the blocking pool and maps its errors to a logged 500.
pub async fn blocking<T, F>(state: &Arc<ApiState>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&ApiState) -> anyhow::Result<T> + Send + 'static,
{
    let state = state.clone();
    tokio::task::spawn_blocking(move || f(&state))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

async fn health(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let enrollments = state.store.records().len();
    let index = state.store.index_len();
    Json(json!({
        "status": "healthy",
        "timestamp": error::now_rfc3339(),
        "uptime_s": state.started.elapsed().as_secs(),
        "active_sessions": state.sessions.active(),
        "services": {
            "store": {"status": "ok", "enrollments": enrollments},
            "index": {"status": if index == enrollments { "ok" } else { "degraded" }, "size": index},
            "models": {"status": "ok"},
            "cameras": {"status": "none", "count": 0},
        },
    }))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

pub fn router(state: Arc<ApiState>) -> Router {
    let cfg = &state.config.api;
    let api = Router::new()
        .route("/api/auth/client/", post(auth::client_login))
        .route("/api/core/auth/client/", post(auth::client_login))
        .route("/api/auth/enrollments/", get(enrollments::list))
        .route("/api/auth/enrollment/", post(sessions::create_enrollment))
        .route(
            "/api/auth/enrollment/process-frame/",
            post(sessions::process_frame),
        )
        .route(
            "/api/auth/authentication/",
            post(sessions::create_authentication),
        )
        .route(
            "/api/auth/authentication/process-frame/",
            post(sessions::process_frame),
        )
        .route("/api/auth/session/{token}/status/", get(sessions::status))
        .route(
            "/api/auth/session/{token}/",
            axum::routing::delete(sessions::cancel),
        )
        .route(
            "/api/auth/enrollments/{id}/",
            get(enrollments::get).delete(enrollments::delete),
        );
    let timeout = Duration::from_secs(cfg.request_timeout_s.max(1));
    Router::new()
        .route("/health/", get(health))
        .route("/ws/auth/process-image/{token}/", get(ws::upgrade))
        .merge(api)
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
        .with_state(state)
}

/// Serves until SIGINT/SIGTERM, then drains requests and saves the index snapshot.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<ApiState>) -> anyhow::Result<()> {
    let app = router(state.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("shutting down: saving the index snapshot");
    let s = state.clone();
    tokio::task::spawn_blocking(move || s.store.save_snapshot()).await??;
    Ok(())
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
