//! Operator-only administration of a running terminal (the contract reserves client
//! management and key rotation to the `admin` scope): `GET|POST /api/admin/clients/`,
//! `POST /api/admin/keys/rotate/`. The CLI does the same on a stopped terminal.
//!
//! Invariant: every handler here starts with `require_admin`; a new client's secret appears
//! only in the 201 answer that creates it.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Caller, require_admin};
use super::error::{ApiError, ApiJson};
use super::{ApiState, blocking};
use crate::store::clients::{ClientError, PayloadAlgorithm};
use crate::store::keys::KeySources;
use crate::store::records::{AuditAction, AuditRow, now_ms};

/// The audit row of an operator's action on `tenant`: `reason` says what, and by whom.
pub fn admin_row(
    caller: &Caller,
    action: AuditAction,
    tenant: &str,
    user_id: Option<&str>,
    what: &str,
) -> AuditRow {
    AuditRow {
        at_ms: now_ms(),
        action,
        client: tenant.to_owned(),
        user_id: user_id.map(str::to_owned),
        session_id: None,
        success: true,
        reason: format!("{what} by operator:{}", caller.client_id),
        confidence: None,
        processing_ms: 0.0,
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewClient {
    /// 1-64 letters, digits, '-', '_' or '.'; the tenant's name.
    name: String,
    /// `AES-256-GCM` (default) or `AES-256-CBC` (the reference's decryption code).
    #[serde(default)]
    payload_encryption: Option<String>,
}

#[utoipa::path(get, path = "/api/admin/clients/", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "`{count, results[{client_id, name, created_at, payload_encryption}]}`"),
              (status = 403, description = "Needs an operator (admin) token", body = super::openapi::ErrorBody)))]
/// The terminal's API clients (operators only).
pub async fn list_clients(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let clients = blocking(&state, |s| Ok(s.store.records().list_clients()?)).await?;
    let results: Vec<Value> = clients
        .iter()
        .map(|c| {
            json!({
                "client_id": c.client_id,
                "name": c.name,
                "created_at": crate::sessions::rfc3339_ms(c.created_ms),
                "payload_encryption": c.payload_algorithm.as_str(),
            })
        })
        .collect();
    Ok(Json(json!({"count": results.len(), "results": results})))
}

#[utoipa::path(post, path = "/api/admin/clients/", tag = "admin", request_body = NewClient,
    security(("bearer" = [])),
    responses((status = 201, description = "`{client_id, name, api_key, api_secret, payload_encryption}`: the secret is shown this once"),
              (status = 403, description = "Needs an operator (admin) token", body = super::openapi::ErrorBody),
              (status = 409, description = "A client with this name exists", body = super::openapi::ErrorBody),
              (status = 422, description = "Bad name or algorithm", body = super::openapi::ErrorBody)))]
/// Create an API client (operators only); its secret is returned once.
pub async fn add_client(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    ApiJson(body): ApiJson<NewClient>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&caller)?;
    let algorithm = match body.payload_encryption.as_deref() {
        None | Some("AES-256-GCM" | "aes-256-gcm") => PayloadAlgorithm::Aes256Gcm,
        Some("AES-256-CBC" | "aes-256-cbc") => PayloadAlgorithm::Aes256Cbc,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("payload_encryption `{other}`: use AES-256-GCM or AES-256-CBC"),
            ));
        }
    };
    let name = body.name;
    let created = tokio::task::spawn_blocking({
        let state = state.clone();
        move || state.store.records().add_client(&name, algorithm)
    })
    .await
    .map_err(ApiError::internal)?;
    let new = match created {
        Ok(n) => n,
        Err(e @ ClientError::Exists(_)) => {
            return Err(ApiError::new(StatusCode::CONFLICT, e.to_string()));
        }
        Err(e @ ClientError::BadName) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                e.to_string(),
            ));
        }
        Err(ClientError::Record(e)) => {
            return Err(match state.store.note_failure(&e) {
                Some(what) => super::storage_error(what),
                None => ApiError::internal(e),
            });
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    tracing::info!(client = %new.client.name, by = %caller.client_id, "client created");
    let row = admin_row(
        &caller,
        AuditAction::ClientCreated,
        &new.client.name,
        None,
        "client created",
    );
    blocking(&state, move |s| Ok(s.store.records().audit(&row)?)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "client_id": new.client.client_id,
            "name": new.client.name,
            "api_key": new.api_key,
            "api_secret": new.api_secret.as_str(),
            "payload_encryption": algorithm.as_str(),
            "message": "Keep the secret now: it is stored only as an Argon2id hash",
        })),
    ))
}

#[utoipa::path(post, path = "/api/admin/keys/rotate/", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "`{master_key, resealed{tree: n}, rotate_ms}`: a new data key; every sealed value and the index snapshot re-sealed while serving"),
              (status = 403, description = "Needs an operator (admin) token", body = super::openapi::ErrorBody)))]
/// Rotate the store's keys while serving (operators only).
pub async fn rotate_keys(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let by = caller.client_id.clone();
    let report = blocking(&state, |s| {
        Ok(s.store.rotate_keys(&KeySources::from_env(), None)?)
    })
    .await?;
    tracing::info!(by = %by, ms = report.rotate_ms, "keys rotated");
    let row = admin_row(
        &caller,
        AuditAction::KeysRotated,
        "terminal",
        None,
        "keys rotated",
    );
    blocking(&state, move |s| Ok(s.store.records().audit(&row)?)).await?;
    let resealed: serde_json::Map<String, Value> = report
        .resealed
        .resealed
        .iter()
        .map(|(tree, n)| ((*tree).to_owned(), json!(n)))
        .collect();
    Ok(Json(json!({
        "master_key": if report.master.is_some() { "replaced" } else { "kept" },
        "resealed": resealed,
        "rotate_ms": report.rotate_ms,
    })))
}
