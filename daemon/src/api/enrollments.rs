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
use crate::store::records::Enrollment;

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
        "status": "completed",
        "quality_score": e.quality,
        "liveness_verified": e.liveness_verified,
        "version": e.version,
        "created_at": rfc3339_ms(e.created_ms),
        "updated_at": rfc3339_ms(e.updated_ms),
    })
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    page: Option<usize>,
    page_size: Option<usize>,
    user_id: Option<String>,
}

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
    let client = caller.client.clone();
    let user = q.user_id.clone();
    let all = blocking(&state, move |s| {
        let mut all = s.store.list(Some(&client))?;
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
        if let Some(u) = &q.user_id {
            url.push_str("&user_id=");
            url.push_str(&u.replace(['&', '=', '?', '#', ' '], "_"));
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
    e.filter(|e| e.client == caller.client)
        .ok_or_else(|| ApiError::not_found("no such enrollment"))
}

pub async fn get(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(enrollment_json(&own(&state, &caller, id).await?)))
}

/// Deletion erases the template from the records and the index and emits a revocation on
/// the change feed. The contract reserves it to operators (admin scope).
pub async fn delete(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let e = own(&state, &caller, id).await?;
    let client = e.client.clone();
    let id = e.id.clone();
    blocking(&state, move |s| {
        s.store.delete(&client, &id)?;
        s.store.save_snapshot()?;
        Ok(())
    })
    .await?;
    Ok(Json(
        json!({"success": true, "message": "enrollment deleted", "enrollment_id": e.id}),
    ))
}
