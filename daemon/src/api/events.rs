//! `GET /ws/events`: access decisions, enrollment results and system events, one JSON object
//! per WebSocket text message, for door controllers and local UIs on the terminal.
//!
//! Invariant: a client receives only its own tenant's events, an operator every tenant's;
//! events carry ids, results and scores, never a template, an image or a session token; a
//! slow listener loses events (and is told how many), it never slows a session down.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::ApiState;
use super::auth::{Caller, caller_from_headers};
use super::error::ApiError;

/// Events kept for a listener that is behind; beyond, the oldest are dropped for it.
const BACKLOG: usize = 256;

#[derive(Debug)]
struct Event {
    /// The tenants it belongs to; empty: every listener's (system events, doors that admit
    /// every tenant).
    clients: Vec<String>,
    body: Value,
}

#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Events {
    /// Sends `body` (with a `timestamp`) to the listeners who may see `client`'s data; free
    /// when nobody listens.
    pub fn publish(&self, client: Option<&str>, mut body: Value) {
        if let Some(c) = client {
            body["client"] = json!(c);
        }
        self.publish_to(
            &client.map(str::to_owned).into_iter().collect::<Vec<_>>(),
            body,
        );
    }

    /// Sends `body` to the listeners who may see any of `clients` (empty: every listener).
    pub fn publish_to(&self, clients: &[String], mut body: Value) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        body["timestamp"] = json!(super::error::now_rfc3339());
        let _ = self.tx.send(Arc::new(Event {
            clients: clients.to_vec(),
            body,
        }));
    }

    /// The event of a session's decision (`result` is the frame response that ended it).
    pub fn decision(&self, client: &str, kind: &str, result: &Value) {
        let success = result["success"] == true;
        let body = if kind == "enrollment" {
            json!({
                "type": "enrollment_result",
                "success": success,
                "user_id": result["user_id"],
                "enrollment_id": result["enrollment_id"],
                "reason": result["reason"],
            })
        } else {
            json!({
                "type": "access_decision",
                "decision": if success { "granted" } else { "denied" },
                "authenticated": success,
                "session_type": kind,
                "user_id": result["user_id"],
                "enrollment_id": result["matched_enrollment_id"],
                "confidence": result["confidence"],
                "liveness_passed": result["liveness_passed"],
                "reason": result["reason"],
            })
        };
        self.publish(Some(client), body);
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// An access token, for WebSocket clients that cannot set headers (browsers).
    token: Option<String>,
}

#[utoipa::path(get, path = "/ws/events", tag = "events", params(EventsQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 101, description = "WebSocket of JSON events: `connection_established`, `access_decision` {decision granted|denied, user_id, enrollment_id, confidence, reason, session_type}, `enrollment_result`, `enrollment_deleted`, `events_lost` {missed}, `system` {event: shutting_down}; send `{type:\"ping\"}` for a `pong`."),
              (status = 401, description = "No or bad token", body = super::openapi::ErrorBody)))]
/// Access decisions and system events, as they happen.
pub async fn upgrade(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let caller = caller_from_headers(&state, &headers, q.token.as_deref()).await?;
    Ok(super::ws::websocket(ws)?
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| listen(state, caller, socket)))
}

async fn send(socket: &mut WebSocket, v: &Value) -> bool {
    socket
        .send(Message::Text(v.to_string().into()))
        .await
        .is_ok()
}

async fn listen(state: Arc<ApiState>, caller: Caller, mut socket: WebSocket) {
    let _open = super::SocketGuard::new(&state);
    let mut rx = state.events.tx.subscribe();
    let shutdown = state.shutdown.wait();
    tokio::pin!(shutdown);
    let hello = json!({
        "type": "connection_established",
        "scope": if caller.admin { "admin" } else { "client" },
        "message": "Listening: access decisions and system events",
    });
    if !send(&mut socket, &hello).await {
        return;
    }
    loop {
        tokio::select! {
            e = rx.recv() => match e {
                Ok(ev) => {
                    if (ev.clients.is_empty() || ev.clients.iter().any(|c| caller.sees(c)))
                        && !send(&mut socket, &ev.body).await
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    if !send(&mut socket, &json!({"type": "events_lost", "missed": missed})).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            m = socket.recv() => match m {
                Some(Ok(Message::Text(t))) => {
                    let ping = serde_json::from_str::<Value>(t.as_str())
                        .is_ok_and(|v| v["type"] == "ping");
                    if ping
                        && !send(&mut socket, &json!({"type": "pong", "timestamp": super::error::now_rfc3339()})).await
                    {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            () = &mut shutdown => {
                send(&mut socket, &json!({"type": "system", "event": "shutting_down", "timestamp": super::error::now_rfc3339()})).await;
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: 1001,
                        reason: "the terminal is shutting down".into(),
                    })))
                    .await;
                return;
            }
        }
    }
}
