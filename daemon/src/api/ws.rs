//! `GET /ws/auth/process-image/{session_token}/`: the WebSocket protocol of the contract.
//! Client -> server: `{type:"frame", image}` or `{type:"process_frame", frame_data}` (data URL or
//! base64), binary messages with raw JPEG bytes, `{type:"ping"}`, `{type:"cancel"}`.
//! Server -> client: `connection_established`, `frame_processed` and `enrollment_progress`
//! (same payload), `frame_rejected`, `liveness_instruction`, `enrollment_complete`,
//! `authentication_complete` and `authentication_result` (both spellings), `error`, `pong`.
//! Close codes: 1000 done, 1008 bad or expired token, 4429 frame budget exceeded.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::ApiState;
use super::error::ApiError;
use super::sessions::{frame_bytes, run_frame, with_session};
use crate::sessions::{Session, Status};

#[utoipa::path(get, path = "/ws/auth/process-image/{token}/", tag = "sessions",
    params(("token" = String, Path, description = "session_token")),
    responses((status = 101, description = "WebSocket: send `{type:\"frame\", image}`, `{type:\"process_frame\", frame_data}` or binary JPEG; receive `frame_processed`, `enrollment_progress`, `frame_rejected`, `liveness_instruction`, `enrollment_complete`, `authentication_complete` / `authentication_result`, `error`, `pong`. Close 1000 done, 1008 bad token, 4429 frame budget.")))]
/// The session's WebSocket: frames in, progress, instructions and the result out.
pub async fn upgrade(
    State(state): State<Arc<ApiState>>,
    Path(token): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    Ok(websocket(ws)?
        .max_message_size(state.config.api.max_body_bytes)
        .on_upgrade(move |socket| session_socket(state, token, socket)))
}

/// The upgrade, or the envelope's 400 for a request that is not a WebSocket handshake.
pub fn websocket(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, ApiError> {
    ws.map_err(|r| {
        ApiError::bad_request(format!(
            "this is a WebSocket endpoint: connect with a WebSocket handshake ({r})"
        ))
    })
}

fn error_message(e: &ApiError) -> Value {
    let code = ApiError::code(e.status);
    json!({
        "type": "error",
        "error": code,
        "error_code": code,
        "code": e.status.as_u16(),
        "message": e.message,
        "details": e.details,
    })
}

async fn send(socket: &mut WebSocket, v: &Value) -> bool {
    socket
        .send(Message::Text(v.to_string().into()))
        .await
        .is_ok()
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_owned().into(),
        })))
        .await;
}

async fn session_socket(state: Arc<ApiState>, token: String, mut socket: WebSocket) {
    let _open = super::SocketGuard::new(&state);
    let shutdown = state.shutdown.wait();
    tokio::pin!(shutdown);
    let Some(session) = state.sessions.by_token(&token) else {
        let e = ApiError::unauthorized("unknown session token");
        send(&mut socket, &error_message(&e)).await;
        return close(socket, 1008, "unknown session token").await;
    };
    let (client, kind) = (session.client.clone(), session.kind);
    let status = with_session(session.clone(), Session::current_status).await;
    if !matches!(status, Ok(Status::Active)) {
        let e = ApiError::unauthorized("the session is not active (expired or ended)");
        send(&mut socket, &error_message(&e)).await;
        return close(socket, 1008, "session not active").await;
    }
    let hello = json!({
        "type": "connection_established",
        "session_type": kind,
        "session_token": token,
        "message": "Connected: send frames",
    });
    if !send(&mut socket, &hello).await {
        return;
    }
    loop {
        let msg = tokio::select! {
            m = socket.recv() => match m {
                Some(Ok(m)) => m,
                _ => return,
            },
            () = &mut shutdown => {
                return close(socket, 1001, "the terminal is shutting down").await;
            }
        };
        let bytes = match msg {
            Message::Binary(b) => Ok(b.to_vec()),
            Message::Text(t) => {
                let v: Value = match serde_json::from_str(t.as_str()) {
                    Ok(v) => v,
                    Err(_) => {
                        let e = ApiError::bad_request("messages are JSON objects with a `type`");
                        if !send(&mut socket, &error_message(&e)).await {
                            return;
                        }
                        continue;
                    }
                };
                match v["type"].as_str() {
                    Some("ping") => {
                        if !send(
                            &mut socket,
                            &json!({"type": "pong", "timestamp": super::error::now_rfc3339()}),
                        )
                        .await
                        {
                            return;
                        }
                        continue;
                    }
                    Some("cancel") => {
                        let st = state.clone();
                        let cancelled = with_session(session.clone(), move |s| {
                            let cancelled = s.cancel();
                            s.record_end(&st.store);
                            cancelled
                        });
                        if cancelled.await.unwrap_or(false) {
                            state.metrics.decision(kind, "cancelled");
                        }
                        send(
                            &mut socket,
                            &json!({"type": "session_cancelled", "message": "session cancelled"}),
                        )
                        .await;
                        return close(socket, 1000, "cancelled").await;
                    }
                    Some("frame" | "process_frame") => {
                        let data = v["image"]
                            .as_str()
                            .or_else(|| v["frame_data"].as_str())
                            .unwrap_or("");
                        frame_bytes(data, state.config.limits.max_image_bytes)
                    }
                    _ => Err(ApiError::bad_request("unknown message type")),
                }
            }
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let result = match bytes {
            Ok(b) => run_frame(&state, &client, &token, b).await,
            Err(e) => Err(e),
        };
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                let gone = e.status.as_u16() == 409 || e.status.as_u16() == 410;
                if !send(&mut socket, &error_message(&e)).await {
                    return;
                }
                if gone {
                    return close(socket, 1008, "session ended or expired").await;
                }
                continue;
            }
        };
        for m in messages(kind, &r) {
            if !send(&mut socket, &m).await {
                return;
            }
        }
        match r["session_status"].as_str() {
            Some("in_progress") | None => {}
            _ => {
                let budget = r["reason"] == "max_frames_exceeded";
                return close(socket, if budget { 4429 } else { 1000 }, "session ended").await;
            }
        }
    }
}

/// The messages one frame result becomes.
fn messages(kind: &str, r: &Value) -> Vec<Value> {
    let with_type = |t: &str| {
        let mut m = r.clone();
        m["type"] = json!(t);
        m
    };
    let done = r["session_status"] != "in_progress";
    if kind == "enrollment" {
        if done {
            return vec![with_type("enrollment_complete")];
        }
    } else if done {
        return vec![
            with_type("authentication_complete"),
            with_type("authentication_result"),
        ];
    }
    let live = &r["liveness_data"];
    let mut progress = with_type("frame_processed");
    progress["frames_processed"] = r["frames_processed"].clone();
    progress["blinks_detected"] = live["blinks_detected"].clone();
    progress["motion_events"] = live["motion_events"].clone();
    progress["liveness_score"] = live["liveness_score"].clone();
    progress["liveness_verified"] = live["liveness_passed"].clone();
    progress["no_obstacles"] = json!(r["obstacles"].as_array().is_none_or(|a| a.is_empty()));
    progress["visual_data"] = json!({
        "face_bbox": r["face_bbox"],
        "liveness_indicators": {
            "ear": live["ear"],
            "blinks": live["blinks_detected"],
            "motion_events": live["motion_events"],
            "frame_counter": r["frames_processed"],
        },
    });
    let mut out = vec![progress.clone()];
    if kind == "enrollment" {
        let mut p = progress;
        p["type"] = json!("enrollment_progress");
        out.push(p);
    }
    if r["obstacles"].as_array().is_some_and(|a| !a.is_empty()) {
        out.push(json!({
            "type": "frame_rejected",
            "reason": "obstacle",
            "obstacles": r["obstacles"],
            "obstacle_confidence": r["obstacle_confidence"],
            "message": r["message"],
        }));
    } else if !r["face_detected"].as_bool().unwrap_or(false) {
        out.push(json!({"type": "frame_rejected", "reason": "no_face", "obstacles": [], "obstacle_confidence": 0.0, "message": r["message"]}));
    }
    if let Some(i) = r["instruction"].as_str() {
        out.push(json!({"type": "liveness_instruction", "instruction": i, "message": r["message"], "timeout_seconds": 10}));
    }
    out
}
