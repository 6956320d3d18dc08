//! The terminal's own cameras: `GET /api/cameras/`, `/api/cameras/{id}/snapshot.jpg`,
//! `/api/cameras/{id}/stream.mjpeg` (multipart MJPEG at a capped rate, face boxes with
//! `?overlay=1`), their health for `/health/` and `/metrics`, and the door threads' host (door
//! decisions -> `/ws/events` and metrics).
//!
//! Invariant: frames leave the process only through these routes, to a caller who may see the
//! camera (an operator, or a client the camera's door admits); they are never logged or stored.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use image::RgbImage;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::{Caller, caller_from_headers};
use super::error::ApiError;
use crate::camera::convert::encode_jpeg;
use crate::camera::{Camera, CameraHealth, Frame};
use crate::door::{DoorDecision, DoorHandle, Host, Outcome};
use crate::pipeline::liveness::Instruction;

/// A camera of the terminal, with its door if door mode is on.
#[derive(Debug)]
pub struct CameraEntry {
    pub camera: Arc<Camera>,
    pub door: Option<Arc<DoorHandle>>,
    /// Tenants (client names) who may see it: those its door admits; empty: every tenant.
    pub clients: Vec<String>,
}

impl CameraEntry {
    fn visible_to(&self, caller: &Caller) -> bool {
        caller.admin || self.clients.is_empty() || self.clients.iter().any(|c| caller.sees(c))
    }
}

fn health_json(h: &CameraHealth, e: &CameraEntry) -> Value {
    json!({
        "id": h.id,
        "source": h.source,
        "status": h.state.as_str(),
        "door": e.door.is_some(),
        "clients": e.clients,
        "width": h.width,
        "height": h.height,
        "fps_in": (h.fps_in * 10.0).round() / 10.0,
        "frames_captured": h.captured,
        "frames_processed": h.processed,
        "frames_dropped": h.dropped,
        "frames_idle_skipped": h.idle_skipped,
        "frames_paced_skipped": h.paced_skipped,
        "frames_corrupt": h.corrupt,
        "reconnects": h.reconnects,
        "last_error": h.last_error,
    })
}

/// `services.cameras` of `/health/`.
pub fn health(state: &ApiState) -> Value {
    if state.cameras.is_empty() {
        return json!({"status": "none", "count": 0, "cameras": []});
    }
    let list: Vec<(CameraHealth, &CameraEntry)> = state
        .cameras
        .iter()
        .map(|e| (e.camera.health(), e))
        .collect();
    let all_ok = list.iter().all(|(h, _)| {
        matches!(
            h.state,
            crate::camera::CameraState::Streaming | crate::camera::CameraState::Ended
        )
    });
    json!({
        "status": if all_ok { "ok" } else { "degraded" },
        "count": list.len(),
        "cameras": list.iter().map(|(h, e)| health_json(h, e)).collect::<Vec<_>>(),
    })
}

/// The cameras' counters as Prometheus text (camera ids are configured, a bounded set).
pub fn prometheus(state: &ApiState) -> String {
    let mut t = String::new();
    if state.cameras.is_empty() {
        return t;
    }
    let _ = writeln!(
        t,
        "# HELP facegate_camera_frames_total Camera frames by camera and kind (captured, processed, dropped: replaced before the pipeline took them, idle_skipped: left by a door while nobody was in view, paced_skipped: left because they came faster than liveness.analysis_fps, corrupt: undecodable).\n# TYPE facegate_camera_frames_total counter"
    );
    let healths: Vec<CameraHealth> = state.cameras.iter().map(|e| e.camera.health()).collect();
    for h in &healths {
        for (kind, n) in [
            ("captured", h.captured),
            ("processed", h.processed),
            ("dropped", h.dropped),
            ("idle_skipped", h.idle_skipped),
            ("paced_skipped", h.paced_skipped),
            ("corrupt", h.corrupt),
        ] {
            let _ = writeln!(
                t,
                "facegate_camera_frames_total{{camera=\"{}\",kind=\"{kind}\"}} {n}",
                h.id
            );
        }
    }
    let _ = writeln!(
        t,
        "# HELP facegate_camera_reconnects_total Times a camera was (re)opened after a failure.\n# TYPE facegate_camera_reconnects_total counter"
    );
    for h in &healths {
        let _ = writeln!(
            t,
            "facegate_camera_reconnects_total{{camera=\"{}\"}} {}",
            h.id, h.reconnects
        );
    }
    let _ = writeln!(
        t,
        "# HELP facegate_camera_up 1 while the camera streams.\n# TYPE facegate_camera_up gauge"
    );
    for h in &healths {
        let up = u8::from(h.state == crate::camera::CameraState::Streaming);
        let _ = writeln!(t, "facegate_camera_up{{camera=\"{}\"}} {up}", h.id);
    }
    let _ = writeln!(
        t,
        "# HELP facegate_relay_total Relay fires on grants, by camera and result.\n# TYPE facegate_relay_total counter"
    );
    for e in &state.cameras {
        if let Some(d) = &e.door {
            let c = &d.relay.counters;
            for (result, n) in [
                ("fired", c.fired.load(Ordering::Relaxed)),
                ("failed", c.failures.load(Ordering::Relaxed)),
                ("busy", c.busy.load(Ordering::Relaxed)),
            ] {
                let _ = writeln!(
                    t,
                    "facegate_relay_total{{camera=\"{}\",result=\"{result}\"}} {n}",
                    e.camera.id
                );
            }
        }
    }
    t
}

/// The index in `state.cameras` of camera `id`, if the caller may see it.
fn find(state: &ApiState, caller: &Caller, id: &str) -> Result<usize, ApiError> {
    state
        .cameras
        .iter()
        .position(|e| e.camera.id == id && e.visible_to(caller))
        .ok_or_else(|| ApiError::not_found(format!("no camera `{id}`")))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CameraQuery {
    /// An access token, for browsers (`<img src>` cannot set headers).
    token: Option<String>,
    /// `1`: draw the face boxes and their state on the frames.
    overlay: Option<u8>,
    /// Frames per second of the stream (capped at 15; default 10).
    fps: Option<f64>,
}

#[utoipa::path(get, path = "/api/cameras/", tag = "cameras",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "`{cameras: [{id, source, status, door, clients, width, height, fps_in, frames_captured, frames_processed, frames_dropped, frames_idle_skipped, frames_paced_skipped, frames_corrupt, reconnects, last_error}]}`"),
              (status = 401, description = "No or bad token", body = super::openapi::ErrorBody)))]
/// The terminal's cameras and their health.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<CameraQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = caller_from_headers(&state, &headers, q.token.as_deref()).await?;
    let list: Vec<Value> = state
        .cameras
        .iter()
        .filter(|e| e.visible_to(&caller))
        .map(|e| {
            let mut v = health_json(&e.camera.health(), e);
            if let Some(d) = &e.door {
                let view = d.view();
                v["prompt"] = json!(view.prompt.map(|p| p.instruction));
                v["last_decision"] = json!(view.last_decision.as_ref().map(decision_json));
            }
            v
        })
        .collect();
    Ok(Json(json!({"cameras": list})))
}

/// The frame as JPEG, boxes drawn when asked.
fn frame_jpeg(entry: &CameraEntry, frame: &Frame, overlay: bool) -> Vec<u8> {
    let view = entry.door.as_ref().filter(|_| overlay).map(|d| d.view());
    match (view, &frame.jpeg) {
        (None, Some(j)) => j.as_ref().clone(),
        (None, None) => encode_jpeg(&frame.image, 85),
        (Some(v), _) => {
            let mut img: RgbImage = frame.image.as_ref().clone();
            for (bbox, state) in &v.faces {
                let color = match *state {
                    "granted" => [40, 200, 60],
                    "denied" | "unknown" => [220, 40, 40],
                    _ => [240, 200, 40],
                };
                draw_box(&mut img, bbox, color);
            }
            encode_jpeg(&img, 80)
        }
    }
}

fn draw_box(img: &mut RgbImage, b: &[f32; 4], color: [u8; 3]) {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return;
    }
    let clampx = |v: f32| (v.max(0.0) as u32).min(w - 1);
    let clampy = |v: f32| (v.max(0.0) as u32).min(h - 1);
    let (x0, y0, x1, y1) = (clampx(b[0]), clampy(b[1]), clampx(b[2]), clampy(b[3]));
    let t = (w / 320).max(1) + 1;
    for k in 0..t {
        for x in x0..=x1 {
            img.put_pixel(x, (y0 + k).min(h - 1), image::Rgb(color));
            img.put_pixel(x, y1.saturating_sub(k), image::Rgb(color));
        }
        for y in y0..=y1 {
            img.put_pixel((x0 + k).min(w - 1), y, image::Rgb(color));
            img.put_pixel(x1.saturating_sub(k), y, image::Rgb(color));
        }
    }
}

#[utoipa::path(get, path = "/api/cameras/{id}/snapshot.jpg", tag = "cameras",
    params(("id" = String, Path, description = "Camera id"), CameraQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The latest frame (image/jpeg)"),
              (status = 404, description = "No such camera", body = super::openapi::ErrorBody),
              (status = 503, description = "No frame yet (the camera is starting or reconnecting)", body = super::openapi::ErrorBody)))]
/// The camera's latest frame.
pub async fn snapshot(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<CameraQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller_from_headers(&state, &headers, q.token.as_deref()).await?;
    let i = find(&state, &caller, &id)?;
    let entry = &state.cameras[i];
    let frame = entry.camera.latest().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "camera `{id}` has no frame yet ({})",
                entry.camera.state().as_str()
            ),
        )
    })?;
    let overlay = q.overlay == Some(1);
    let st = state.clone();
    let jpeg = tokio::task::spawn_blocking(move || frame_jpeg(&st.cameras[i], &frame, overlay))
        .await
        .map_err(ApiError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg,
    )
        .into_response())
}

const BOUNDARY: &str = "facegateframe";

#[utoipa::path(get, path = "/api/cameras/{id}/stream.mjpeg", tag = "cameras",
    params(("id" = String, Path, description = "Camera id"), CameraQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "multipart/x-mixed-replace JPEG frames at up to `fps` (default 10, at most 15)"),
              (status = 404, description = "No such camera", body = super::openapi::ErrorBody)))]
/// A live MJPEG preview of the camera.
pub async fn stream(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<CameraQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller_from_headers(&state, &headers, q.token.as_deref()).await?;
    let i = find(&state, &caller, &id)?;
    let overlay = q.overlay == Some(1);
    let period = Duration::from_secs_f64(1.0 / q.fps.unwrap_or(10.0).clamp(0.5, 15.0));
    let shutdown = state.shutdown.clone();
    let body = futures_util::stream::unfold((state, 0u64), move |(state, seq)| {
        let shutdown = shutdown.clone();
        async move {
            let started = tokio::time::Instant::now();
            let st = state.clone();
            let next = tokio::task::spawn_blocking(move || {
                let e = &st.cameras[i];
                // A camera still starting or reconnecting is waited for; an ended one ends
                // the stream.
                loop {
                    if let Some(f) = e.camera.next_after(seq, Duration::from_secs(2)) {
                        return Some((f.seq, frame_jpeg(e, &f, overlay)));
                    }
                    if st.shutdown.is_triggered()
                        || matches!(
                            e.camera.state(),
                            crate::camera::CameraState::Ended | crate::camera::CameraState::Stopped
                        )
                    {
                        return None;
                    }
                }
            });
            let next = tokio::select! {
                r = next => r.ok().flatten(),
                () = shutdown.wait() => None,
            };
            let (seq, jpeg) = next?;
            let mut part = Vec::with_capacity(jpeg.len() + 128);
            part.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                    jpeg.len()
                )
                .as_bytes(),
            );
            part.extend_from_slice(&jpeg);
            part.extend_from_slice(b"\r\n");
            tokio::time::sleep_until(started + period).await;
            Some((Ok::<Bytes, std::io::Error>(Bytes::from(part)), (state, seq)))
        }
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// A door decision as `/ws/events` and `/api/cameras/` show it.
pub fn decision_json(d: &DoorDecision) -> Value {
    let (user_id, enrollment_id, confidence, reason, client) = match &d.outcome {
        Outcome::Granted {
            client,
            user_id,
            enrollment_id,
            confidence,
        } => (
            json!(user_id),
            json!(enrollment_id),
            json!(confidence),
            Value::Null,
            json!(client),
        ),
        Outcome::Unknown { best_confidence } => (
            Value::Null,
            Value::Null,
            json!(best_confidence),
            json!("no_match_found"),
            Value::Null,
        ),
        Outcome::Denied { reason } => (
            Value::Null,
            Value::Null,
            Value::Null,
            json!(reason),
            Value::Null,
        ),
    };
    json!({
        "type": "access_decision",
        "source": format!("camera:{}", d.camera),
        "camera": d.camera,
        "session_type": "door",
        "decision": d.outcome.as_str(),
        "authenticated": matches!(d.outcome, Outcome::Granted { .. }),
        "user_id": user_id,
        "enrollment_id": enrollment_id,
        "client_name": client,
        "confidence": confidence,
        "liveness_passed": d.liveness_passed,
        "reason": reason,
        "visit": d.visit,
        "frames": d.frames,
        "latency_ms": (d.latency_ms * 10.0).round() / 10.0,
        "decided_at": crate::sessions::rfc3339_ms(d.at_ms),
    })
}

impl Host for ApiState {
    fn engine(&self) -> &crate::sessions::Engine {
        &self.engine
    }

    fn store(&self) -> &crate::store::Store {
        &self.store
    }

    fn decided(&self, d: &DoorDecision) {
        let result = match &d.outcome {
            Outcome::Granted { .. } => "authenticated",
            Outcome::Unknown { .. } => "no_match_found",
            Outcome::Denied { reason } => reason,
        };
        self.metrics.decision("door", result);
        let audience = match &d.outcome {
            Outcome::Granted { client, .. } => vec![client.clone()],
            _ => self.camera_audience(&d.camera),
        };
        self.events.publish_to(&audience, decision_json(d));
    }

    fn prompt(&self, camera: &str, prompt: Option<Instruction>) {
        let body = json!({
            "type": "door_prompt",
            "camera": camera,
            "instruction": prompt.map(|p| p.instruction),
            "message": prompt.map(|p| p.message),
        });
        self.events.publish_to(&self.camera_audience(camera), body);
    }

    fn frame_done(&self, _camera: &str, ms: f64) {
        self.metrics.door_frame(ms);
    }

    fn stopping(&self) -> bool {
        self.shutdown.is_triggered()
    }
}

impl ApiState {
    /// Who hears a camera's events that name nobody: the tenants its door admits (empty: all).
    fn camera_audience(&self, camera: &str) -> Vec<String> {
        self.cameras
            .iter()
            .find(|e| e.camera.id == camera)
            .map(|e| e.clients.clone())
            .unwrap_or_default()
    }
}
