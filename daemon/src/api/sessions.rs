//! Enrollment and authentication sessions over REST: create, process a frame, status, cancel.
//! Frames run on the blocking pool, at most `frame_workers` at once; when every worker is busy
//! a frame is refused at once (429, Retry-After) rather than queued without bound.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson};
use super::limits::Bucket;
use crate::pipeline::PipelineError;
use crate::pipeline::decode::DecodeError;
use crate::sessions::{Ending, FrameError, FrameResult, Handle, Kind, Session, Status, rfc3339_ms};

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct EnrollmentMeta {
    target_samples: Option<usize>,
    enable_quality_check: Option<bool>,
    min_quality_score: Option<f32>,
    required_blinks: Option<usize>,
    #[serde(default)]
    #[allow(dead_code)]
    device_info: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateEnrollment {
    user_id: String,
    /// `camera:<id>`: the session takes its frames from that camera of the terminal (results
    /// stream on the session's WebSocket); absent: the client sends frames.
    #[serde(default)]
    source: Option<String>,
    /// Operators only: the client (name or id) the enrollment is for (the kiosk's operator view).
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    session_type: Option<String>,
    #[serde(default)]
    metadata: Option<EnrollmentMeta>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct AuthMeta {
    min_confidence: Option<f32>,
    max_frames: Option<u64>,
    timeout_seconds: Option<u64>,
    min_frames_required: Option<u64>,
    /// Matches tried before `no_match_found` (1-10, default 3).
    max_attempts: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)]
    required_blinks: Option<usize>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateAuthentication {
    #[serde(default)]
    user_id: Option<String>,
    /// `camera:<id>`: the session takes its frames from that camera of the terminal.
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    require_liveness: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    session_type: Option<String>,
    #[serde(default)]
    metadata: Option<AuthMeta>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ProcessFrame {
    session_token: String,
    /// A data URL (`data:image/jpeg;base64,...`) or bare base64 of a JPEG or PNG.
    frame_data: String,
}

fn websocket_url(headers: &HeaderMap, state: &ApiState, token: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| state.config.api.listen.to_string(), str::to_owned);
    format!("ws://{host}/ws/auth/process-image/{token}/")
}

fn validate_user_id(user_id: &str) -> Result<(), ApiError> {
    if user_id.trim().is_empty() || user_id.len() > 256 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "user_id must be 1-256 characters",
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/auth/enrollment/", tag = "enrollment", request_body = CreateEnrollment,
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 201, description = "Session created: `session_token`, `websocket_url`, `config`"),
              (status = 400, description = "Malformed JSON or frame", body = super::openapi::ErrorBody), (status = 401, description = "No, expired or forged token", body = super::openapi::ErrorBody), (status = 429, description = "Too many sessions this hour", body = super::openapi::ErrorBody)))]
/// Start an enrollment session for `user_id` (liveness: blinks + head movement).
pub async fn create_enrollment(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateEnrollment>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate_user_id(&body.user_id)?;
    let tenant = session_tenant(&state, &caller, body.client_id.as_deref()).await?;
    let camera = camera_source(&state, &caller, &tenant, body.source.as_deref())?;
    state.limits.check(
        &tenant,
        Bucket::EnrollmentSessions,
        state.config.api.enrollment_sessions_per_hour,
        Duration::from_secs(3600),
    )?;
    let meta = body.metadata.unwrap_or_default();
    let target = meta.target_samples.unwrap_or(5).clamp(1, 50);
    let min_quality = if meta.enable_quality_check == Some(false) {
        0.0
    } else {
        meta.min_quality_score
            .unwrap_or(state.engine.min_quality)
            .clamp(0.0, 1.0)
    };
    let blinks = meta.required_blinks.unwrap_or(1).min(10);
    let ttl = Duration::from_secs(state.config.api.session_ttl_s);
    state.metrics.session_created("enrollment");
    let h = state.sessions.create(
        &tenant,
        Kind::Enrollment {
            user_id: body.user_id.clone(),
            target_samples: target,
            required_blinks: blinks,
            min_quality,
        },
        &state.engine,
        ttl,
    );
    if let Some(cam) = camera {
        start_feed(&state, &h, cam);
    }
    // A new session: nobody else holds it yet.
    let s = h.lock();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "session_token": s.token,
            "client_name": tenant,
            "source": body.source,
            "enrollment_id": null,
            "status": "active",
            "session_type": "enrollment",
            "expires_at": rfc3339_ms(s.expires_ms),
            "websocket_url": websocket_url(&headers, &state, &s.token),
            "target_samples": target,
            "config": {
                "target_samples": target,
                "current_samples": 0,
                "require_liveness": true,
                "required_blinks": blinks,
                "min_quality_score": min_quality,
                "min_liveness_score": 1.0 - state.engine.liveness.spoof_threshold,
            },
            "message": "Enrollment session created: send frames; blink and turn your head slightly",
        })),
    ))
}

#[utoipa::path(post, path = "/api/auth/authentication/", tag = "authentication", request_body = CreateAuthentication,
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 201, description = "Session created: 1:1 with `user_id`, else 1:N"),
              (status = 400, description = "Malformed JSON or frame", body = super::openapi::ErrorBody), (status = 401, description = "No, expired or forged token", body = super::openapi::ErrorBody), (status = 429, description = "Too many sessions this hour", body = super::openapi::ErrorBody)))]
/// Start an authentication session: 1:1 with `user_id`, else 1:N over the client's enrollments.
pub async fn create_authentication(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateAuthentication>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if let Some(u) = &body.user_id {
        validate_user_id(u)?;
    }
    let camera = camera_source(&state, &caller, caller.tenant()?, body.source.as_deref())?;
    state.limits.check(
        caller.tenant()?,
        Bucket::AuthenticationSessions,
        state.config.api.authentication_sessions_per_hour,
        Duration::from_secs(3600),
    )?;
    let meta = body.metadata.unwrap_or_default();
    let min_confidence = meta
        .min_confidence
        .unwrap_or(state.engine.match_threshold)
        .clamp(0.0, 1.0);
    let max_frames = meta.max_frames.unwrap_or(50).clamp(1, 1000);
    let min_frames = meta.min_frames_required.unwrap_or(3).clamp(1, max_frames);
    let max_attempts = meta.max_attempts.unwrap_or(3).clamp(1, 10);
    let ttl = Duration::from_secs(
        meta.timeout_seconds
            .unwrap_or(state.config.api.session_ttl_s)
            .clamp(5, 3600),
    );
    let require_liveness = body.require_liveness.unwrap_or(true);
    let kind = Kind::Authentication {
        user_id: body.user_id.clone(),
        min_frames,
        max_frames,
        min_confidence,
        require_liveness,
        max_attempts,
    };
    let session_type = kind.type_name();
    state.metrics.session_created(session_type);
    let h = state
        .sessions
        .create(caller.tenant()?, kind, &state.engine, ttl);
    if let Some(cam) = camera {
        start_feed(&state, &h, cam);
    }
    let s = h.lock();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "session_token": s.token,
            "source": body.source,
            "status": "active",
            "session_type": session_type,
            "expires_at": rfc3339_ms(s.expires_ms),
            "websocket_url": websocket_url(&headers, &state, &s.token),
            "config": {
                "require_liveness": require_liveness,
                "min_confidence": min_confidence,
                "max_attempts": max_attempts,
                "max_frames": max_frames,
                "min_frames_required": min_frames,
            },
            "message": "Authentication session created: send frames",
        })),
    ))
}

/// A frame for a session: sent by the client (encoded), or taken from a camera (decoded).
#[derive(Debug)]
pub enum FrameInput {
    Encoded(Vec<u8>),
    Camera(Arc<image::RgbImage>),
}

/// The tenant a new session runs for: a client's own; an operator names one (`client_id`).
async fn session_tenant(
    state: &Arc<ApiState>,
    caller: &Caller,
    client_id: Option<&str>,
) -> Result<String, ApiError> {
    if !caller.admin {
        if client_id.is_some_and(|c| c != caller.client && c != caller.client_id) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "a client starts sessions for itself only",
            ));
        }
        return Ok(caller.client.clone());
    }
    let Some(wanted) = client_id.map(str::to_owned) else {
        return caller.tenant().map(str::to_owned);
    };
    let w = wanted.clone();
    let found = super::blocking(state, move |s| {
        let r = s.store.records();
        Ok(match r.client_by_name(&w)? {
            Some(c) => Some(c),
            None => r.client(&w)?,
        })
    })
    .await?;
    found
        .map(|c| c.name)
        .ok_or_else(|| ApiError::not_found(format!("no client `{wanted}`")))
}

/// The camera a session's `source` names (`camera:<id>`), if the caller's tenant may use it.
fn camera_source(
    state: &ApiState,
    caller: &Caller,
    tenant: &str,
    source: Option<&str>,
) -> Result<Option<Arc<crate::camera::Camera>>, ApiError> {
    let Some(source) = source else {
        return Ok(None);
    };
    let id = source.strip_prefix("camera:").ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("source must be `camera:<id>`, not `{source}`"),
        )
    })?;
    state
        .cameras
        .iter()
        .find(|e| {
            e.camera.id == id
                && (caller.admin || e.clients.is_empty() || e.clients.iter().any(|c| c == tenant))
        })
        .map(|e| Some(e.camera.clone()))
        .ok_or_else(|| ApiError::not_found(format!("no camera `{id}`")))
}

pub fn camera_fed_error() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "this session takes its frames from a camera of the terminal: read its results on the \
         session's WebSocket",
    )
}

/// One result of a camera-fed session, for its WebSocket listeners.
#[derive(Debug)]
pub struct FeedItem {
    pub result: FrameResult,
    pub body: Value,
}

/// Session token -> (camera id, result channel).
type FeedMap =
    std::collections::HashMap<String, (String, tokio::sync::broadcast::Sender<Arc<FeedItem>>)>;

/// Sessions fed by a camera: their result channels.
#[derive(Debug, Default)]
pub struct Feeds {
    map: std::sync::Mutex<FeedMap>,
}

impl Feeds {
    fn lock(&self) -> std::sync::MutexGuard<'_, FeedMap> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The camera id feeding session `token`.
    pub fn camera_of(&self, token: &str) -> Option<String> {
        self.lock().get(token).map(|(c, _)| c.clone())
    }

    /// The results of session `token` from now on.
    pub fn subscribe(
        &self,
        token: &str,
    ) -> Option<tokio::sync::broadcast::Receiver<Arc<FeedItem>>> {
        self.lock().get(token).map(|(_, tx)| tx.subscribe())
    }
}

/// Feeds a session with its camera's latest frames until it ends (one frame at a time, on the
/// frame workers like any client frame); each result goes to the session's WebSocket.
fn start_feed(state: &Arc<ApiState>, h: &Arc<Handle>, camera: Arc<crate::camera::Camera>) {
    let (tx, _) = tokio::sync::broadcast::channel(64);
    state
        .feeds
        .lock()
        .insert(h.token.clone(), (camera.id.clone(), tx.clone()));
    let (state, token, client) = (state.clone(), h.token.clone(), h.client.clone());
    tokio::spawn(async move {
        let mut seq = camera.latest().map_or(0, |f| f.seq);
        // At the rate liveness is tuned for (a 30 fps camera would also spend a 50-frame
        // budget in under 2 s).
        let mut pacer = crate::camera::Pacer::new(state.engine.liveness.analysis_fps);
        let shutdown = state.shutdown.clone();
        loop {
            let cam = camera.clone();
            let frame =
                tokio::task::spawn_blocking(move || cam.next_after(seq, Duration::from_secs(2)))
                    .await
                    .ok()
                    .flatten();
            if shutdown.is_triggered() {
                break;
            }
            let Some(frame) = frame else {
                // No frame (reconnecting, ended): the session expires on its own clock.
                let active = state
                    .sessions
                    .get(&client, &token)
                    .is_some_and(|h| h.try_status().is_none_or(|s| s == Status::Active));
                if !active {
                    break;
                }
                continue;
            };
            seq = frame.seq;
            if !pacer.take(frame.captured) {
                continue;
            }
            match run_frame(&state, &client, &token, FrameInput::Camera(frame.image)).await {
                Ok((result, body)) => {
                    let done = result.done();
                    let _ = tx.send(Arc::new(FeedItem { result, body }));
                    if done {
                        break;
                    }
                }
                // Busy workers: try the next frame.
                Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => {}
                Err(_) => break,
            }
        }
        // Listeners keep their receivers until the linger ends; new ones find no feed.
        tokio::time::sleep(Duration::from_secs(15)).await;
        state.feeds.lock().remove(&token);
    });
}

/// The image bytes of `frame_data`: a data URL or bare base64.
pub fn frame_bytes(frame_data: &str, max_bytes: usize) -> Result<Vec<u8>, ApiError> {
    let b64 = match frame_data.strip_prefix("data:") {
        Some(rest) => rest
            .split_once(',')
            .map(|(_, data)| data)
            .ok_or_else(|| ApiError::bad_request("frame_data is a data URL without data"))?,
        None => frame_data,
    };
    let b64 = b64.trim();
    if b64.len() / 4 * 3 > max_bytes + 3 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the frame is larger than {max_bytes} bytes"),
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| ApiError::bad_request("frame_data is not valid base64 (or a data URL)"))
}

/// Runs one frame through a session on the bounded worker pool: the typed result and its wire
/// body (with `encrypted_data` on a successful completion).
pub async fn run_frame(
    state: &Arc<ApiState>,
    client: &str,
    token: &str,
    input: FrameInput,
) -> Result<(FrameResult, Value), ApiError> {
    let session = state
        .sessions
        .get(client, token)
        .ok_or_else(|| ApiError::not_found("no such session"))?;
    let kind = session.kind;
    let metrics = &state.metrics;
    // Camera frames are paced by the terminal itself, not by the client: not rate limited.
    if let FrameInput::Encoded(_) = &input
        && let Err(e) = state.limits.check(
            client,
            Bucket::Frames,
            state.config.api.frames_per_minute,
            Duration::from_secs(60),
        )
    {
        metrics.frame(kind, "rate_limited", None);
        return Err(e);
    }
    let shed = || {
        metrics.frame(kind, "busy", None);
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "every frame worker is busy: frame dropped, send the next one",
        );
        e.retry_after_s = Some(1);
        e
    };
    // A free worker, else one of `frame_queue` places to wait at most `frame_queue_wait_ms`
    // for one, else shed at once: frames in memory are bounded by workers + queue.
    let permit = match state.frame_slots.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            let _place = state
                .frame_queue
                .clone()
                .try_acquire_owned()
                .map_err(|_| shed())?;
            let wait = Duration::from_millis(state.config.api.frame_queue_wait_ms);
            match tokio::time::timeout(wait, state.frame_slots.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => return Err(shed()),
            }
        }
    };
    let st = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut s = session.lock();
        let r = match &input {
            FrameInput::Encoded(bytes) => s.process(&st.engine, &st.store, bytes),
            FrameInput::Camera(img) => {
                s.process_image(&st.engine, &st.store, img, std::time::Instant::now())
            }
        };
        s.record_end(&st.store);
        let outcome = match &r {
            Ok(_) => "processed",
            Err(FrameError::NotActive(_)) => "session_closed",
            Err(FrameError::Image(_)) => "bad_image",
            Err(FrameError::Internal(_)) => "error",
        };
        st.metrics.frame(kind, outcome, s.last_costs.as_ref());
        r
    })
    .await
    .map_err(ApiError::internal)?;
    let result = result.map_err(|e| match e {
        FrameError::NotActive(Status::Expired) => {
            ApiError::new(StatusCode::GONE, "the session has expired")
                .with_details(json!({"reason": "session_expired"}))
        }
        FrameError::NotActive(status) => ApiError::new(
            StatusCode::CONFLICT,
            format!("the session is {}", status.as_str()),
        ),
        FrameError::Image(PipelineError::Decode(
            d @ (DecodeError::TooManyBytes { .. } | DecodeError::TooLarge { .. }),
        )) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, d.to_string()),
        FrameError::Image(e) => ApiError::bad_request(e.to_string()),
        FrameError::Internal(e) => ApiError::internal(e),
    })?;
    let mut body = super::frames::body(kind, &result);
    if let Some(ending) = &result.ending {
        let why = match ending {
            Ending::Enrolled { .. } => "completed",
            Ending::Authenticated { .. } => "authenticated",
            Ending::Failed { reason } => reason,
        };
        metrics.decision(kind, why);
        state.events.decision(client, kind, &body);
    }
    if let Some(summary) = super::payload::summary(&body, token) {
        let client = client.to_owned();
        body["encrypted_data"] = super::blocking(state, move |s| {
            let Some(c) = s.store.records().client_by_name(&client)? else {
                return Ok(Value::Null);
            };
            super::payload::seal(&c, summary.to_string().as_bytes())
        })
        .await?;
    }
    Ok((result, body))
}

#[utoipa::path(post, path = "/api/auth/enrollment/process-frame/", tag = "enrollment", request_body = ProcessFrame,
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Progress, or completion with `enrollment_id` and `encrypted_data`"),
              (status = 400, description = "Malformed JSON or frame", body = super::openapi::ErrorBody), (status = 401, description = "No, expired or forged token", body = super::openapi::ErrorBody), (status = 404, description = "No such session"), (status = 409, description = "The session has ended"),
              (status = 410, description = "The session has expired"), (status = 413, description = "Frame over 10 MB"),
              (status = 429, description = "Frame budget or workers exhausted (Retry-After)")))]
/// Send one frame to an enrollment session.
pub async fn process_enrollment_frame(
    state: State<Arc<ApiState>>,
    caller: Caller,
    body: ApiJson<ProcessFrame>,
) -> Result<Json<Value>, ApiError> {
    process_frame(state, caller, body).await
}

#[utoipa::path(post, path = "/api/auth/authentication/process-frame/", tag = "authentication", request_body = ProcessFrame,
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "`authenticated` with `confidence` and `user_id`, or a failure `reason`"),
              (status = 400, description = "Malformed JSON or frame", body = super::openapi::ErrorBody), (status = 401, description = "No, expired or forged token", body = super::openapi::ErrorBody), (status = 404, description = "No such session"), (status = 409, description = "The session has ended"),
              (status = 410, description = "The session has expired"), (status = 413, description = "Frame over 10 MB"),
              (status = 429, description = "Frame budget or workers exhausted (Retry-After)")))]
/// Send one frame to an authentication session.
pub async fn process_authentication_frame(
    state: State<Arc<ApiState>>,
    caller: Caller,
    body: ApiJson<ProcessFrame>,
) -> Result<Json<Value>, ApiError> {
    process_frame(state, caller, body).await
}

async fn process_frame(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    ApiJson(body): ApiJson<ProcessFrame>,
) -> Result<Json<Value>, ApiError> {
    let bytes = frame_bytes(&body.frame_data, state.config.limits.max_image_bytes)?;
    if state.feeds.camera_of(&body.session_token).is_some() {
        return Err(camera_fed_error());
    }
    Ok(Json(
        run_frame(
            &state,
            caller.tenant()?,
            &body.session_token,
            FrameInput::Encoded(bytes),
        )
        .await?
        .1,
    ))
}

#[utoipa::path(get, path = "/api/auth/session/{token}/status/", tag = "sessions",
    params(("token" = String, Path, description = "session_token")), security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Status, progress, last activity"), (status = 404, description = "No such session")))]
/// Status and progress of a session.
pub async fn status(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(token): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let h = state
        .sessions
        .get(caller.tenant()?, &token)
        .ok_or_else(|| ApiError::not_found("no such session"))?;
    let v = with_session(h, |s| s.status_view()).await?;
    Ok(Json(json!({
        "session_token": v.token,
        "status": v.status.as_str(),
        "session_type": v.session_type,
        "created_at": rfc3339_ms(v.created_ms),
        "expires_at": rfc3339_ms(v.expires_ms),
        "last_activity": rfc3339_ms(v.last_activity_ms),
        "progress": {
            "completed_samples": v.completed_samples,
            "target_samples": v.target_samples,
            "frames_processed": v.frames_processed,
            "liveness_checks_passed": v.liveness_passed,
        },
    })))
}

/// Runs `f` on a session off the async runtime: it may wait for a frame in progress.
pub async fn with_session<T, F>(h: Arc<Handle>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut Session) -> T + Send + 'static,
{
    tokio::task::spawn_blocking(move || f(&mut h.lock()))
        .await
        .map_err(ApiError::internal)
}

#[utoipa::path(delete, path = "/api/auth/session/{token}/", tag = "sessions",
    params(("token" = String, Path, description = "session_token")), security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "`{success, message}`"), (status = 404, description = "No such session")))]
/// Cancel a session.
pub async fn cancel(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(token): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let h = state
        .sessions
        .get(caller.tenant()?, &token)
        .ok_or_else(|| ApiError::not_found("no such session"))?;
    let kind = h.kind;
    let st = state.clone();
    let cancelled = with_session(h, move |s| {
        let cancelled = s.cancel();
        s.record_end(&st.store);
        cancelled
    })
    .await?;
    if cancelled {
        state.metrics.decision(kind, "cancelled");
    }
    Ok(Json(json!({
        "success": cancelled,
        "message": if cancelled { "session cancelled" } else { "the session had already ended" },
    })))
}
