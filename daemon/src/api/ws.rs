//! `GET /ws/auth/process-image/{session_token}/`: the WebSocket protocol of the contract.
//! Client -> server: `{type:"frame", image}` or `{type:"process_frame", frame_data}` (data URL or
//! base64), binary messages with raw JPEG bytes, `{type:"ping"}`, `{type:"cancel"}`.
//! Server -> client: `connection_established` at connect, `pong` to a ping, and exactly ONE
//! message per frame, named in the client's dialect (`frames::Dialect`) and carrying the whole
//! progress payload: the completion (`enrollment_complete`, `authentication_result` /
//! `authentication_complete`), else `frame_rejected`, else `liveness_instruction` when the
//! instruction changed, else progress (`enrollment_progress` / `frame_processed`); or `error`.
//! After a completion the socket stays open until the client closes it or 10 s pass (a frame
//! sent then gets an `error`). Close codes: 1000 done, 1008 bad or expired token, 4429 frame
//! budget exceeded.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::ApiState;
use super::error::ApiError;
use super::frames::Dialect;
use super::sessions::{FrameInput, camera_fed_error, frame_bytes, run_frame, with_session};
use crate::sessions::{Session, Status};

#[utoipa::path(get, path = "/ws/auth/process-image/{token}/", tag = "sessions",
    params(("token" = String, Path, description = "session_token")),
    responses((status = 101, description = "WebSocket: send `{type:\"frame\", image}`, `{type:\"process_frame\", frame_data}` or binary JPEG; exactly one reply per frame, named in the client's dialect and carrying the whole progress payload: the completion (`enrollment_complete`, `authentication_result` for process_frame / `authentication_complete` for frame and binary), else `frame_rejected`, else `liveness_instruction` when the instruction changed, else progress (`enrollment_progress` for process_frame enrollments, else `frame_processed`); `error`; `pong`. The socket stays open 10 s after the completion. Close 1000 done, 1008 bad token, 4429 frame budget.")))]
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
    // A camera-fed session: its results arrive from the feed, the client sends no frames.
    let camera = state.feeds.camera_of(&token);
    let mut feed = state.feeds.subscribe(&token);
    let hello = json!({
        "type": "connection_established",
        "session_type": kind,
        "session_token": token,
        "source": camera.as_ref().map(|c| format!("camera:{c}")),
        "message": if camera.is_some() { "Connected: frames come from the terminal's camera" } else { "Connected: send frames" },
    });
    if !send(&mut socket, &hello).await {
        return;
    }
    let mut last_instruction = None;
    // Set once the session ended: the close code and reason, and until when to linger.
    let mut ended: Option<(u16, &'static str, tokio::time::Instant)> = None;
    loop {
        let linger = async {
            match ended {
                Some((_, _, until)) => tokio::time::sleep_until(until).await,
                None => std::future::pending().await,
            }
        };
        let next_result = async {
            match feed.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let msg = tokio::select! {
            item = next_result => {
                match item {
                    Ok(item) => {
                        let mut body = item.body.clone();
                        body["type"] = json!(Dialect::Readme.message_type(kind, &item.result, &mut last_instruction));
                        body["session_token"] = json!(token);
                        if !send(&mut socket, &body).await {
                            return;
                        }
                        if item.result.done() && ended.is_none() {
                            ended = Some((1000, "session ended", tokio::time::Instant::now() + LINGER));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => feed = None,
                }
                continue;
            }
            m = socket.recv() => match m {
                Some(Ok(m)) => m,
                _ => return,
            },
            () = &mut shutdown => {
                return close(socket, 1001, "the terminal is shutting down").await;
            }
            () = linger => {
                let (code, reason, _) = ended.unwrap_or((1000, "session ended", tokio::time::Instant::now()));
                return close(socket, code, reason).await;
            }
        };
        let (bytes, dialect) = match msg {
            Message::Binary(b) => (Ok(b.to_vec()), Dialect::Guide),
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
                    Some(t @ ("frame" | "process_frame")) => {
                        let (field, dialect) = if t == "frame" {
                            ("image", Dialect::Guide)
                        } else {
                            ("frame_data", Dialect::Readme)
                        };
                        let data = v[field]
                            .as_str()
                            .or_else(|| v["image"].as_str())
                            .or_else(|| v["frame_data"].as_str())
                            .unwrap_or("");
                        (
                            frame_bytes(data, state.config.limits.max_image_bytes),
                            dialect,
                        )
                    }
                    _ => (
                        Err(ApiError::bad_request("unknown message type")),
                        Dialect::Guide,
                    ),
                }
            }
            // The client closed: reading on lets the close reply go out before the drop.
            Message::Close(_) => {
                let drain = async { while let Some(Ok(_)) = socket.recv().await {} };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
                return;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if ended.is_some() {
            // The session is over: one reply for this frame too, then keep lingering.
            let e = ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "the session has ended: close the socket",
            );
            if !send(&mut socket, &error_message(&e)).await {
                return;
            }
            continue;
        }
        let result = match bytes {
            Ok(_) if camera.is_some() => Err(camera_fed_error()),
            Ok(b) => run_frame(&state, &client, &token, FrameInput::Encoded(b)).await,
            Err(e) => Err(e),
        };
        let (r, mut body) = match result {
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
        body["type"] = json!(dialect.message_type(kind, &r, &mut last_instruction));
        body["session_token"] = json!(token);
        if !send(&mut socket, &body).await {
            return;
        }
        if let Some(ending) = &r.ending {
            let budget = matches!(
                ending,
                crate::sessions::Ending::Failed {
                    reason: "max_frames_exceeded"
                }
            );
            let code = if budget { 4429 } else { 1000 };
            ended = Some((code, "session ended", tokio::time::Instant::now() + LINGER));
        }
    }
}

/// How long a socket stays open after its session ended, for the client to read the result
/// and close.
const LINGER: std::time::Duration = std::time::Duration::from_secs(10);
