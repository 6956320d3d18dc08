//! `GET /api/auth/enrollments/` (paginated, filtered by user), `GET|DELETE
//! /api/auth/enrollments/{id}/`, scoped to the calling client.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Caller, require_admin};
use super::error::ApiError;
use super::{ApiState, blocking};
use crate::store::records::{AuditAction, Enrollment};

const MAX_PAGE_SIZE: usize = 100;

fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

pub fn enrollment_json(e: &Enrollment) -> Value {
    json!({
        "id": e.id,
        "enrollment_id": e.id,
        "user_id": e.user_id,
        "client": e.client,
        "status": "completed",
        "quality_score": e.quality,
        "liveness_verified": e.liveness_verified,
        "version": e.version,
        "created_at": rfc3339_ms(e.created_ms),
        "updated_at": rfc3339_ms(e.updated_ms),
    })
}

/// A query-string value, percent-encoded (RFC 3986 unreserved characters kept).
fn percent_encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    page: Option<usize>,
    page_size: Option<usize>,
    user_id: Option<String>,
    /// Operators only: one client's enrollments (by name or id); default all.
    client_id: Option<String>,
}

#[utoipa::path(get, path = "/api/auth/enrollments/", tag = "enrollments", params(ListQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "`{count, next, previous, results[]}`")))]
/// Enrollments of the caller (operators: all, or one client's), paginated.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = q.page.unwrap_or(1);
    if page == 0 {
        return Err(ApiError::bad_request("page starts at 1"));
    }
    let size = q.page_size.unwrap_or(20).clamp(1, MAX_PAGE_SIZE);
    let user = q.user_id.clone();
    let scope = super::analytics::resolve_tenant(&state, &caller, q.client_id.as_deref()).await?;
    let all = blocking(&state, move |s| {
        let mut all = s.store.list(scope.as_deref())?;
        if let Some(u) = &user {
            all.retain(|e| &e.user_id == u);
        }
        Ok(all)
    })
    .await?;
    let count = all.len();
    let results: Vec<Value> = all
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(enrollment_json)
        .collect();
    let link = |p: usize| {
        let mut url = format!("/api/auth/enrollments/?page={p}&page_size={size}");
        for (name, v) in [("user_id", &q.user_id), ("client_id", &q.client_id)] {
            if let Some(v) = v {
                url.push_str(&format!("&{name}="));
                url.push_str(&percent_encode(v));
            }
        }
        url
    };
    Ok(Json(json!({
        "count": count,
        "next": (page * size < count).then(|| link(page + 1)),
        "previous": (page > 1).then(|| link(page - 1)),
        "results": results,
    })))
}

async fn own(state: &Arc<ApiState>, caller: &Caller, id: String) -> Result<Enrollment, ApiError> {
    let e = blocking(state, move |s| Ok(s.store.get(&id)?)).await?;
    // Another client's enrollment is as absent as a missing one.
    e.filter(|e| caller.sees(&e.client))
        .ok_or_else(|| ApiError::not_found("no such enrollment"))
}

#[utoipa::path(get, path = "/api/auth/enrollments/{id}/", tag = "enrollments",
    params(("id" = String, Path, description = "enrollment_id")), security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "One enrollment"), (status = 404, description = "No such enrollment (or another client's)")))]
/// One enrollment.
pub async fn get(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(enrollment_json(&own(&state, &caller, id).await?)))
}

/// Delete an enrollment (operators only).
///
/// Erases the template from the records and the index and emits a revocation on the change
/// feed. The contract reserves it to operators (admin scope).
#[utoipa::path(delete, path = "/api/auth/enrollments/{id}/", tag = "enrollments",
    params(("id" = String, Path, description = "enrollment_id")), security(("bearer" = [])),
    responses((status = 200, description = "Erased from records and index; a revocation is queued for sync"),
              (status = 403, description = "Needs an operator (admin) token"), (status = 404, description = "No such enrollment")))]
pub async fn delete(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let e = own(&state, &caller, id).await?;
    let client = e.client.clone();
    let id = e.id.clone();
    let row = super::admin::admin_row(
        &caller,
        AuditAction::Delete,
        &e.client,
        Some(&e.user_id),
        "deleted",
    );
    blocking(&state, move |s| {
        s.store.delete(&client, &id)?;
        s.store.records().audit(&row)?;
        s.store.save_snapshot()?;
        Ok(())
    })
    .await?;
    state.events.publish(
        Some(&e.client),
        json!({"type": "enrollment_deleted", "enrollment_id": e.id, "user_id": e.user_id}),
    );
    Ok(Json(
        json!({"success": true, "message": "enrollment deleted", "enrollment_id": e.id}),
    ))
}
