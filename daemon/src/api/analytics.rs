//! `GET /api/analytics/authentication-metrics/` (from the sealed audit rows, by date range)
//! and `GET /api/analytics/system-metrics/`; `GET /metrics` (Prometheus text).
//!
//! Invariant: a client's figures come from its own audit rows and enrollments only;
//! operators see every tenant's, or one's with `client_id`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::ApiError;
use super::{ApiState, blocking};
use crate::store::records::{AuditAction, now_ms};

/// Rows read at most for one answer (a day of a busy door is a few thousand; a million is
/// ~1 s of decryption).
const MAX_ROWS: usize = 1_000_000;
const DAY_MS: u64 = 86_400_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct MetricsQuery {
    /// First day (YYYY-MM-DD) or instant (RFC 3339); default 30 days before `end_date`.
    start_date: Option<String>,
    /// Last day, inclusive (YYYY-MM-DD), or instant (RFC 3339); default now.
    end_date: Option<String>,
    /// Operators: one client (name or id). Clients: their own (or omit).
    client_id: Option<String>,
}

/// Milliseconds since the epoch of a date (`YYYY-MM-DD`, start of that UTC day) or an
/// RFC 3339 instant.
fn parse_when(s: &str, end_of_day: bool) -> Result<u64, ApiError> {
    let s = s.trim();
    let (text, add) = if s.len() == 10 {
        (
            format!("{s}T00:00:00Z"),
            if end_of_day { DAY_MS } else { 0 },
        )
    } else {
        (s.to_owned(), 0)
    };
    humantime::parse_rfc3339_weak(&text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64 + add)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{s}` is not a date (YYYY-MM-DD) or an RFC 3339 time"
            ))
        })
}

fn day_of(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_owned()
}

/// `client_id` (a name or an id) as the tenant key (the client's name).
pub(super) async fn resolve_tenant(
    state: &Arc<ApiState>,
    caller: &Caller,
    wanted: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let scope = caller.scope(wanted)?;
    match scope {
        Some(w) if caller.admin => {
            blocking(state, move |s| {
                Ok(Some(s.store.records().client(&w)?.map_or(w, |c| c.name)))
            })
            .await
        }
        scope => Ok(scope),
    }
}

#[utoipa::path(get, path = "/api/analytics/authentication-metrics/", tag = "analytics",
    params(MetricsQuery), security(("bearer" = [])),
    responses((status = 200, description = "Attempts, successes and failures by day and reason"),
              (status = 400, description = "Bad date"), (status = 401, description = "No or bad token")))]
/// Authentication attempts by day and failure reason, from the audit rows.
pub async fn authentication_metrics(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(q): Query<MetricsQuery>,
) -> Result<Json<Value>, ApiError> {
    let end = match &q.end_date {
        Some(s) => parse_when(s, true)?,
        None => now_ms() + 1,
    };
    let start = match &q.start_date {
        Some(s) => parse_when(s, false)?,
        None => end.saturating_sub(30 * DAY_MS),
    };
    if start >= end {
        return Err(ApiError::bad_request("start_date must be before end_date"));
    }
    let tenant = resolve_tenant(&state, &caller, q.client_id.as_deref()).await?;
    let client_id = tenant.clone();
    #[derive(Default)]
    struct Tally {
        by_date: BTreeMap<String, (u64, u64)>,
        reasons: BTreeMap<String, u64>,
        ok: u64,
        failed: u64,
        ms_sum: f64,
        rows: usize,
    }
    // Folded row by row on the blocking pool: a year of a busy door never sits in memory.
    let t = blocking(&state, move |s| {
        let mut t = Tally::default();
        t.rows = s.store.records().audit_each(start, end, MAX_ROWS, |r| {
            if r.action != AuditAction::Authenticate
                || tenant.as_ref().is_some_and(|t| &r.client != t)
            {
                return;
            }
            let day = t.by_date.entry(day_of(r.at_ms)).or_default();
            day.0 += 1;
            t.ms_sum += r.processing_ms;
            if r.success {
                t.ok += 1;
                day.1 += 1;
            } else {
                t.failed += 1;
                *t.reasons.entry(r.reason).or_default() += 1;
            }
        })?;
        Ok(t)
    })
    .await?;
    let truncated = t.rows == MAX_ROWS;
    let (by_date, reasons, ok, failed, ms_sum) = (t.by_date, t.reasons, t.ok, t.failed, t.ms_sum);
    let total = ok + failed;
    Ok(Json(json!({
        "total_attempts": total,
        "successful_authentications": ok,
        "failed_authentications": failed,
        "success_rate": if total == 0 { 0.0 } else { ok as f64 / total as f64 },
        "average_response_time_ms": if total == 0 { 0.0 } else { ms_sum / total as f64 },
        "by_date": by_date.iter().map(|(date, (n, s))| json!({
            "date": date, "attempts": n, "successes": s, "failures": n - s,
        })).collect::<Vec<_>>(),
        "failure_reasons": reasons,
        "start_date": crate::sessions::rfc3339_ms(start),
        "end_date": crate::sessions::rfc3339_ms(end),
        "client_id": client_id,
        "truncated": truncated,
    })))
}

#[utoipa::path(get, path = "/api/analytics/system-metrics/", tag = "analytics",
    security(("bearer" = [])),
    responses((status = 200, description = "Sessions, enrollments, processing time, store / index / sync state")))]
/// Sessions, enrollments, processing time, index / store / sync state.
pub async fn system_metrics(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let tenant = resolve_tenant(&state, &caller, None).await?;
    let t = tenant.clone();
    let (enrollments, users, pending) = blocking(&state, move |s| {
        let all = s.store.list(t.as_deref())?;
        let users: std::collections::BTreeSet<(&str, &str)> = all
            .iter()
            .map(|e| (e.client.as_str(), e.user_id.as_str()))
            .collect();
        let r = s.store.records();
        let pending = r.epoch()?.saturating_sub(r.cursor(SYNC_CONSUMER)?);
        Ok((all.len(), users.len(), pending))
    })
    .await?;
    let index = state.store.index_len();
    let total = state.store.records().len();
    Ok(Json(json!({
        "timestamp": super::error::now_rfc3339(),
        "active_sessions": state.sessions.active_for(tenant.as_deref()),
        "total_enrollments": enrollments,
        "total_users": users,
        "average_processing_time_ms": state.metrics.mean_frame_ms().unwrap_or(0.0),
        "requests_per_minute": state.metrics.requests_per_minute(),
        "cameras": {},
        "index_status": {"status": if index == total { "ok" } else { "degraded" }, "size": index},
        "store_status": {
            "status": if state.store.failure().is_some() { "error" } else { "ok" },
            "error": state.store.failure(),
            "enrollments": total,
            "rotating_keys": state.store.records().rotating(),
        },
        "sync_status": {"pending_changes": pending},
        "uptime_s": state.started.elapsed().as_secs(),
    })))
}

/// The change-feed consumer the sync agent acknowledges as.
pub const SYNC_CONSUMER: &str = "sync";

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
/// Prometheus metrics: frames, decisions, per-stage latency, sessions, index size.
pub async fn prometheus(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    let enrollments = state.store.records().len() as f64;
    let gauges = [
        (
            "facegate_active_sessions",
            "Sessions in progress.",
            state.sessions.active() as f64,
        ),
        (
            "facegate_enrollments",
            "Enrollments in the store.",
            enrollments,
        ),
        (
            "facegate_index_size",
            "Templates in the vector index.",
            state.store.index_len() as f64,
        ),
        (
            "facegate_audit_rows",
            "Audit rows kept.",
            state.store.records().audit_len() as f64,
        ),
        (
            "facegate_frame_workers_free",
            "Frame workers idle now.",
            state.frame_slots.available_permits() as f64,
        ),
        (
            "facegate_uptime_seconds",
            "Seconds since start.",
            state.started.elapsed().as_secs_f64(),
        ),
        (
            "facegate_store_failed",
            "1 once the storage failed (writes refused until restart).",
            f64::from(u8::from(state.store.failure().is_some())),
        ),
    ];
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&gauges)
            + &super::cameras::prometheus(&state)
            + &super::sync::prometheus(&state),
    )
}
