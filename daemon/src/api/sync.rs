//! The local sync API that `facegate-sync` uses (the daemon makes no outbound connection):
//! `GET /api/sync/changes` (long-poll of this terminal's change feed, each change sealed with
//! the site key as a broker-ready envelope), `POST /api/sync/ack` (the agent's cursor, moved
//! only once the broker accepted everything up to it), `POST /api/sync/apply` (a site envelope
//! from the hub: a client, an enrollment or a deletion; idempotent).
//!
//! Invariant: only a sync-scope token (`facegate sync-token`, signed with a key of its own, so
//! no API or operator token passes) reaches these routes; what leaves is sealed with the site
//! key (templates, user ids and audit rows are never in clear outside the daemon); an envelope
//! that is malformed, for another site, wrongly sealed or not applicable changes nothing and is
//! answered 422 with the reason, counted by reason and logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use facegate_proto::{
    AuditRecord, Body, DeletionRecord, EnrollmentRecord, Envelope, Event, SiteKey,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::analytics::SYNC_CONSUMER;
use super::auth::{JwtKeys, issue, verify};
use super::error::{ApiError, ApiJson};
use super::{ApiState, blocking};
use crate::store::records::{Change, now_ms};
use crate::store::sync::Applied;

pub const SCOPE_SYNC: &str = "sync";
const MAX_LIMIT: usize = 500;

/// What the sync routes share: the site, this terminal's name, the site key, the sync token
/// keys, and counters for /metrics.
pub struct SyncState {
    pub site: String,
    pub terminal: String,
    /// This data directory's incarnation (derived from the store: stable across restarts,
    /// new with a new data directory).
    pub instance: String,
    key: Option<SiteKey>,
    jwt: JwtKeys,
    pub applied: AtomicU64,
    pub stale: AtomicU64,
    /// Refused envelopes by reason: malformed, other_site, sealed, mismatch, not_applicable,
    /// conflict.
    pub refused: [AtomicU64; 6],
}

pub const REFUSAL_REASONS: [&str; 6] = [
    "malformed",
    "other_site",
    "sealed",
    "mismatch",
    "not_applicable",
    "conflict",
];

impl std::fmt::Debug for SyncState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncState")
            .field("site", &self.site)
            .field("terminal", &self.terminal)
            .finish_non_exhaustive()
    }
}

impl SyncState {
    pub fn new(
        site: String,
        terminal: String,
        instance: String,
        key: Option<SiteKey>,
        secret: &[u8],
    ) -> SyncState {
        SyncState {
            site,
            terminal,
            instance,
            key,
            jwt: JwtKeys::new(secret),
            applied: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            refused: Default::default(),
        }
    }

    /// A sync-scope token valid for `days`.
    pub fn token(&self, days: u64) -> Result<(String, u64), ApiError> {
        issue(
            &self.jwt,
            SYNC_CONSUMER,
            &self.terminal,
            SCOPE_SYNC,
            days * 86_400,
        )
    }

    fn ready(&self) -> Result<&SiteKey, ApiError> {
        if self.site.is_empty() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "sync is off on this terminal (set sync.site)",
            ));
        }
        self.key.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "sync has no site key (the facegate-site-key credential or sync.site_key_file)",
            )
        })
    }

    fn refuse(&self, reason: usize, message: String) -> ApiError {
        self.refused[reason].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            reason = REFUSAL_REASONS[reason],
            %message,
            "refused a sync envelope"
        );
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
            .with_details(json!({"reason": REFUSAL_REASONS[reason]}))
    }
}

/// A request carrying a valid sync-scope token.
#[derive(Debug)]
pub struct SyncCaller;

impl FromRequestParts<Arc<ApiState>> for SyncCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("a sync token is required (Bearer)"))?;
        let claims = verify(&state.sync.jwt, token.trim())?;
        if claims.scope != SCOPE_SYNC {
            return Err(ApiError::unauthorized("not a sync token"));
        }
        Ok(SyncCaller)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// Changes after this sequence number (default: the agent's acknowledged cursor).
    after: Option<u64>,
    limit: Option<usize>,
    /// Wait up to this long (ms) for a change when there is none.
    wait_ms: Option<u64>,
}

fn event_body(store: &crate::store::Store, change: Change) -> anyhow::Result<Option<Body>> {
    Ok(match change {
        Change::EnrollmentUpserted { enrollment_id, .. } => {
            // The record as it is now: a later version supersedes, a deletion follows.
            store.get(&enrollment_id)?.map(|e| {
                Body::Enrollment(EnrollmentRecord {
                    enrollment_id: e.id,
                    client: e.client,
                    user_id: e.user_id,
                    template: e.template,
                    quality: e.quality,
                    liveness_verified: e.liveness_verified,
                    created_ms: e.created_ms,
                    version: e.version,
                })
            })
        }
        Change::EnrollmentDeleted {
            enrollment_id,
            client,
            user_id,
        } => Some(Body::Deletion(DeletionRecord {
            enrollment_id,
            client,
            user_id,
            // Written before versions were clocks: the clock now stands in.
            version: facegate_proto::next_version(0, now_ms()),
        })),
        Change::EnrollmentRevoked {
            enrollment_id,
            client,
            user_id,
            version,
        } => Some(Body::Deletion(DeletionRecord {
            enrollment_id,
            client,
            user_id,
            version,
        })),
        Change::Audit(row) => Some(Body::Audit(AuditRecord {
            at_ms: row.at_ms,
            action: row.action.as_str().to_owned(),
            client: row.client,
            user_id: row.user_id,
            session_id: row.session_id,
            success: row.success,
            reason: row.reason,
            confidence: row.confidence,
            processing_ms: row.processing_ms,
        })),
        Change::Metrics { json, .. } => Some(Body::Metrics { json }),
        Change::ClientCreated { client_id, api_key } => store
            .records()
            .export_client(&client_id, &api_key)?
            .map(Body::Client),
    })
}

fn change_at(change: &Change) -> u64 {
    match change {
        Change::Audit(row) => row.at_ms,
        Change::Metrics { at_ms, .. } => *at_ms,
        _ => now_ms(),
    }
}

/// `GET /api/sync/changes`: this terminal's changes after `after`, sealed for the site.
pub async fn changes(
    State(state): State<Arc<ApiState>>,
    _caller: SyncCaller,
    Query(q): Query<ChangesQuery>,
) -> Result<Json<Value>, ApiError> {
    state.sync.ready()?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0).min(state.config.sync.max_wait_ms));
    let deadline = Instant::now() + wait;
    let after = match q.after {
        Some(a) => a,
        None => blocking(&state, |s| Ok(s.store.records().cursor(SYNC_CONSUMER)?)).await?,
    };
    loop {
        let last = blocking(&state, |s| Ok(s.store.records().feed_seq()?)).await?;
        if last > after || Instant::now() >= deadline || state.shutdown.is_triggered() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    blocking(&state, move |s| {
        let key = s.sync.ready().map_err(|e| anyhow::anyhow!(e.message))?;
        let records = s.store.records();
        let entries = records.feed_after(after, limit)?;
        let mut out = Vec::with_capacity(entries.len());
        for (seq, change) in entries {
            let at_ms = change_at(&change);
            let Some(body) = event_body(&s.store, change)? else {
                out.push(json!({"seq": seq, "skip": true}));
                continue;
            };
            let kind = body.kind();
            // The outcome of an authentication, without who or which tenant: what a home
            // automation may see in clear (the agent publishes it only with --ha-discovery).
            let decision = match &body {
                Body::Audit(a) if a.action == "authenticate" => Some(if a.success {
                    "granted".to_owned()
                } else {
                    a.reason.clone()
                }),
                _ => None,
            };
            let env = facegate_proto::seal(
                key,
                &Event {
                    site: s.sync.site.clone(),
                    origin: s.sync.terminal.clone(),
                    instance: s.sync.instance.clone(),
                    seq,
                    at_ms,
                    body,
                },
            )?;
            let mut item = json!({
                "seq": seq,
                "topic": facegate_proto::terminal_topic(&s.sync.site, &s.sync.terminal, kind),
                "envelope": env,
            });
            if let Some(d) = decision {
                item["decision"] = json!(d);
            }
            out.push(item);
        }
        Ok(Json(json!({
            "site": s.sync.site,
            "terminal": s.sync.terminal,
            "instance": s.sync.instance,
            "cursor": records.cursor(SYNC_CONSUMER)?,
            "last_seq": records.feed_seq()?,
            "changes": out,
        })))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    seq: u64,
}

/// `POST /api/sync/ack {seq}`: everything up to `seq` reached the broker; the cursor never
/// moves back and never past the feed's end.
pub async fn ack(
    State(state): State<Arc<ApiState>>,
    _caller: SyncCaller,
    ApiJson(body): ApiJson<AckBody>,
) -> Result<Json<Value>, ApiError> {
    blocking(&state, move |s| {
        let records = s.store.records();
        let last = records.feed_seq()?;
        let cursor = records.ack(SYNC_CONSUMER, body.seq.min(last))?;
        Ok(Json(json!({"cursor": cursor, "last_seq": last})))
    })
    .await
}

/// `POST /api/sync/apply`: one envelope from the site (the body is the envelope's JSON, as it
/// came off the broker).
pub async fn apply(
    State(state): State<Arc<ApiState>>,
    _caller: SyncCaller,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let key = state.sync.ready()?;
    let sync = &state.sync;
    let env = Envelope::from_json(&body).map_err(|e| sync.refuse(0, e.to_string()))?;
    let event = facegate_proto::open(key, &sync.site, &env).map_err(|e| {
        use facegate_proto::ProtoError as P;
        let reason = match e {
            P::OtherSite(_) => 1,
            P::Sealed => 2,
            P::Mismatch(_) => 3,
            _ => 0,
        };
        sync.refuse(reason, e.to_string())
    })?;
    let id = env.id.clone();
    let outcome = blocking(&state, move |s| {
        Ok(match event.body {
            Body::Client(c) => match s.store.records().apply_client(&c) {
                Ok(a) => Ok(a),
                Err(crate::store::clients::ClientError::Record(e)) => return Err(e.into()),
                Err(e) => Err((5, e.to_string())),
            },
            Body::Enrollment(e) => Ok(s.store.apply_enrollment(&e)?),
            Body::Deletion(d) => Ok(s.store.apply_deletion(&d)?),
            Body::EnrollRequest {
                client,
                user_id,
                images,
            } => enroll_from_photos(s, &client, &user_id, &images)?,
            Body::Audit(_) | Body::Metrics { .. } => Err((
                4,
                format!("a {} event is not applied on a terminal", env.kind.as_str()),
            )),
        })
    })
    .await?;
    match outcome {
        Ok(Applied::Changed) => {
            sync.applied.fetch_add(1, Ordering::Relaxed);
            Ok(Json(json!({"result": "applied", "id": id})))
        }
        Ok(Applied::Stale) => {
            sync.stale.fetch_add(1, Ordering::Relaxed);
            Ok(Json(json!({"result": "stale", "id": id})))
        }
        Ok(Applied::Conflict(why)) => Err(sync.refuse(5, why)),
        Err((reason, message)) => Err(sync.refuse(reason, message)),
    }
}

/// The hub's enrollment from photos: each photo's largest face embedded, the
/// quality-weighted mean template stored (liveness not verified: photos), audited. The
/// enrollment then leaves through the feed like any other. `Err((reason, message))` when no
/// photo has a usable face.
fn enroll_from_photos(
    s: &ApiState,
    client: &str,
    user_id: &str,
    images: &[String],
) -> anyhow::Result<Result<Applied, (usize, String)>> {
    use base64::Engine as _;
    let started = Instant::now();
    let mut sum = vec![0f32; crate::pipeline::embed::EMBEDDING_DIM];
    let (mut used, mut quality) = (0usize, 0f32);
    for b64 in images {
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        if let Ok((_, a)) = s.engine.pipeline.analyze_largest(&bytes) {
            let w = a.quality.score.max(0.05);
            for (acc, v) in sum.iter_mut().zip(a.embedding.as_slice()) {
                *acc += w * v;
            }
            quality += a.quality.score;
            used += 1;
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
    let row = |ok: bool, reason: &str| crate::store::records::AuditRow {
        at_ms: now_ms(),
        action: crate::store::records::AuditAction::Enroll,
        client: client.to_owned(),
        user_id: Some(user_id.to_owned()),
        session_id: None,
        success: ok,
        reason: reason.to_owned(),
        confidence: None,
        processing_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    if used == 0 || norm <= 0.0 {
        s.store.records().audit(&row(false, "no_face_detected"))?;
        return Ok(Err((
            4,
            format!("none of the {} photo(s) had a usable face", images.len()),
        )));
    }
    sum.iter_mut().for_each(|x| *x /= norm);
    s.store
        .enroll(client, user_id, &sum, quality / used as f32, false)?;
    s.store.records().audit(&row(true, "hub_import"))?;
    Ok(Ok(Applied::Changed))
}

/// The sync counters for /metrics.
pub fn prometheus(state: &ApiState) -> String {
    let s = &state.sync;
    let pending = state
        .store
        .records()
        .feed_seq()
        .unwrap_or(0)
        .saturating_sub(state.store.records().cursor(SYNC_CONSUMER).unwrap_or(0));
    let mut out = format!(
        "# HELP facegate_sync_pending_changes Feed entries the sync agent has not acknowledged.\n\
         # TYPE facegate_sync_pending_changes gauge\nfacegate_sync_pending_changes {pending}\n\
         # HELP facegate_sync_applied_total Site envelopes applied.\n\
         # TYPE facegate_sync_applied_total counter\nfacegate_sync_applied_total {}\n\
         # HELP facegate_sync_stale_total Site envelopes already applied or superseded.\n\
         # TYPE facegate_sync_stale_total counter\nfacegate_sync_stale_total {}\n\
         # HELP facegate_sync_refused_total Site envelopes refused, by reason.\n\
         # TYPE facegate_sync_refused_total counter\n",
        s.applied.load(Ordering::Relaxed),
        s.stale.load(Ordering::Relaxed),
    );
    for (i, r) in REFUSAL_REASONS.iter().enumerate() {
        out += &format!(
            "facegate_sync_refused_total{{reason=\"{r}\"}} {}\n",
            s.refused[i].load(Ordering::Relaxed)
        );
    }
    out
}

/// Loads the site key: the systemd credential `facegate-site-key`, else `sync.site_key_file`.
pub fn load_site_key(cfg: &crate::config::SyncConfig) -> anyhow::Result<Option<SiteKey>> {
    use anyhow::Context as _;
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|d| std::path::PathBuf::from(d).join("facegate-site-key"))
        .filter(|p| p.exists());
    let path = match credential {
        Some(p) => p,
        None if cfg.site_key_file.as_os_str().is_empty() => return Ok(None),
        None => cfg.site_key_file.clone(),
    };
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(&path).with_context(|| format!("reading the site key {}", path.display()))?,
    );
    Ok(Some(SiteKey::from_credential(&bytes).with_context(
        || format!("the site key {}", path.display()),
    )?))
}

/// `POST /api/sync/token` on the Unix socket only (whoever may open the socket may sync): a
/// sync token valid for `sync.token_days`.
pub async fn token_over_socket(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<Value>, ApiError> {
    let (token, exp) = state.sync.token(state.config.sync.token_days.max(1))?;
    tracing::info!("a sync token was issued over the Unix socket");
    Ok(Json(token_json(&token, exp)))
}

/// The body `facegate sync-token` prints.
pub fn token_json(token: &str, exp: u64) -> Value {
    json!({"token": token, "token_type": "Bearer", "scope": SCOPE_SYNC, "expires_at": exp})
}

/// Appends a metrics snapshot to the change feed every `sync.metrics_interval_s` while sync
/// is on (the hub's per-terminal figures); `None` when off.
pub fn spawn_metrics_snapshots(state: Arc<ApiState>) -> Option<tokio::task::JoinHandle<()>> {
    let every = state.config.sync.metrics_interval_s;
    if state.sync.site.is_empty() || state.sync.key.is_none() || every == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.tick().await;
        loop {
            tick.tick().await;
            let s = state.clone();
            let done = tokio::task::spawn_blocking(move || {
                let records = s.store.records();
                let snapshot = json!({
                    "enrollments": records.len(),
                    "audit_rows": records.audit_len(),
                    "active_sessions": s.sessions.active(),
                    "uptime_s": s.started.elapsed().as_secs(),
                    "sync_pending": records.feed_seq().unwrap_or(0)
                        .saturating_sub(records.cursor(SYNC_CONSUMER).unwrap_or(0)),
                });
                records.append_metrics(now_ms(), snapshot.to_string())
            })
            .await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "could not append a metrics snapshot");
            }
        }
    }))
}
