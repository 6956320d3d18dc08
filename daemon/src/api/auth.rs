//! Client authentication: API key (+ secret) -> HS256 JWT; operator login: email + password
//! (Argon2id) -> access + refresh JWTs with the `admin` scope; every request authenticated by
//! `Authorization: Bearer <jwt>`, `Authorization: JWT <jwt>` or `X-API-Key: <key>`.
//!
//! Invariant: tokens are HS256 only (any other `alg`, `none` included, is refused), expire
//! (no leeway), and are signed with a key derived from the store's keys, never from config.
//! A refresh token is never accepted as an access token. Clients act within their own
//! tenant; operators act across tenants but run no sessions.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{ApiError, ApiJson};
use super::limits::Bucket;
use super::{ApiState, blocking};
use crate::store::records::{AuditAction, AuditRow, now_ms};

const ISSUER: &str = "facegate";

/// The signing keys (HMAC secret) of this terminal's tokens.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> JwtKeys {
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// The client's name: its tenant key in the store.
    pub name: String,
    pub scope: String,
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client's id, or the operator's.
    pub client_id: String,
    /// Tenant key: enrollments, sessions and audit rows are scoped by it (an operator's email
    /// for operators, who are not a tenant).
    pub client: String,
    /// An operator: the `admin` scope, across tenants.
    pub admin: bool,
}

const SCOPE_CLIENT: &str = "client";
const SCOPE_ADMIN: &str = "admin";
const SCOPE_REFRESH: &str = "refresh";

impl Caller {
    /// Whether this caller may see data of `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        self.admin || self.client == tenant
    }

    /// The tenant a session runs for: a client's own; operators hold none.
    pub fn tenant(&self) -> Result<&str, ApiError> {
        if self.admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "sessions belong to a client: use a client token (POST /api/auth/client/)",
            ));
        }
        Ok(&self.client)
    }

    /// The tenants a query covers: `wanted` (admin only, or the caller's own), or all (admin)
    /// or the caller's own.
    pub fn scope(&self, wanted: Option<&str>) -> Result<Option<String>, ApiError> {
        match (self.admin, wanted) {
            (true, w) => Ok(w.map(str::to_owned)),
            (false, Some(w)) if w != self.client && w != self.client_id => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "a client sees only its own data",
            )),
            (false, _) => Ok(Some(self.client.clone())),
        }
    }
}

pub fn issue(
    keys: &JwtKeys,
    client_id: &str,
    name: &str,
    scope: &str,
    ttl_s: u64,
) -> Result<(String, u64), ApiError> {
    let iat = now_ms() / 1000;
    let claims = Claims {
        sub: client_id.to_owned(),
        name: name.to_owned(),
        scope: scope.to_owned(),
        iss: ISSUER.to_owned(),
        iat,
        exp: iat + ttl_s,
        jti: crate::store::records::new_token_id(),
    };
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
        .map_err(ApiError::internal)?;
    Ok((token, claims.exp))
}

pub fn verify(keys: &JwtKeys, token: &str) -> Result<Claims, ApiError> {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 0;
    v.set_issuer(&[ISSUER]);
    v.set_required_spec_claims(&["exp", "iss", "sub"]);
    jsonwebtoken::decode::<Claims>(token, &keys.decoding, &v)
        .map(|d| d.claims)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::InvalidSignature => "the token's signature is not valid",
                ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted (HS256 only)",
                _ => "the token is not valid",
            };
            ApiError::unauthorized(why)
        })
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        caller_from_headers(state, &parts.headers, None).await
    }
}

/// The caller of an access token (a refresh token is refused).
pub fn caller_from_token(state: &ApiState, token: &str) -> Result<Caller, ApiError> {
    let claims = verify(&state.jwt, token.trim())?;
    let scopes = || claims.scope.split(' ');
    if scopes().any(|s| s == SCOPE_REFRESH) {
        return Err(ApiError::unauthorized(
            "a refresh token is not an access token: exchange it at /api/auth/token/refresh/",
        ));
    }
    let admin = scopes().any(|s| s == SCOPE_ADMIN);
    Ok(Caller {
        client_id: claims.sub,
        client: claims.name,
        admin,
    })
}

/// The caller by `Authorization` (Bearer / JWT), `X-API-Key`, or else `query_token` (for
/// browser WebSockets, which cannot set headers).
pub async fn caller_from_headers(
    state: &Arc<ApiState>,
    headers: &axum::http::HeaderMap,
    query_token: Option<&str>,
) -> Result<Caller, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("JWT "))
            .ok_or_else(|| {
                ApiError::unauthorized("use `Authorization: Bearer <token>` or `JWT <token>`")
            })?;
        return caller_from_token(state, token);
    }
    if let Some(key) = headers.get("x-api-key") {
        let key = key
            .to_str()
            .map_err(|_| ApiError::unauthorized("the X-API-Key header is not text"))?
            .trim()
            .to_owned();
        let client = blocking(state, move |s| {
            Ok(s.store.records().authenticate_client(&key, None)?)
        })
        .await?;
        return client
            .map(|c| Caller {
                client_id: c.client_id,
                client: c.name,
                admin: false,
            })
            .ok_or_else(|| ApiError::unauthorized("unknown API key"));
    }
    if let Some(token) = query_token {
        return caller_from_token(state, token);
    }
    Err(ApiError::unauthorized(
        "authentication required: a Bearer/JWT token or an X-API-Key header",
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ClientLogin {
    api_key: String,
    #[serde(default)]
    api_secret: Option<String>,
}

#[utoipa::path(post, path = "/api/auth/client/", tag = "auth", request_body = ClientLogin,
    responses((status = 200, description = "`{jwt_token, access_token, token_type, expires_in, expires_at, client_id, client_name}`"),
              (status = 401, description = "Unknown key or wrong secret", body = super::openapi::ErrorBody)))]
/// Client login: API key (+ secret) to a JWT.
///
/// Also at `/api/core/auth/client/`; the answer carries both seeds' field names.
pub async fn client_login(
    State(state): State<Arc<ApiState>>,
    ApiJson(body): ApiJson<ClientLogin>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let started = std::time::Instant::now();
    login_gate(&state, Bucket::FailedClientLogins)?;
    let key = body.api_key.clone();
    let secret = body.api_secret.clone();
    let client = blocking(&state, move |s| {
        Ok(s.store
            .records()
            .authenticate_client(&key, secret.as_deref())?)
    })
    .await?;
    let who = client.as_ref().map(|c| c.name.clone());
    audit_login(
        &state,
        AuditAction::ClientLogin,
        Bucket::FailedClientLogins,
        who,
        started,
    )
    .await?;
    let client = client.ok_or_else(|| ApiError::unauthorized("invalid API key or secret"))?;
    let ttl = state.config.api.token_ttl_s;
    let (token, exp) = issue(
        &state.jwt,
        &client.client_id,
        &client.name,
        SCOPE_CLIENT,
        ttl,
    )?;
    let expires_at = rfc3339_s(exp);
    Ok(axum::Json(json!({
        "jwt_token": token,
        "access_token": token,
        "token_type": "JWT",
        "expires_in": ttl,
        "expires_at": expires_at,
        "client_id": client.client_id,
        "client_name": client.name,
    })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct OperatorLogin {
    #[serde(alias = "username")]
    email: String,
    password: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Refresh {
    refresh: String,
}

fn rfc3339_s(exp: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp))
        .to_string()
}

fn operator_tokens(
    state: &ApiState,
    op: &crate::store::operators::Operator,
) -> Result<serde_json::Value, ApiError> {
    let cfg = &state.config.api;
    let (access, exp) = issue(
        &state.jwt,
        &op.operator_id,
        &op.email,
        SCOPE_ADMIN,
        cfg.token_ttl_s,
    )?;
    let (refresh, _) = issue(
        &state.jwt,
        &op.operator_id,
        &op.email,
        SCOPE_REFRESH,
        cfg.refresh_ttl_s,
    )?;
    Ok(json!({
        "access": access,
        "refresh": refresh,
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": cfg.token_ttl_s,
        "expires_at": rfc3339_s(exp),
        "user": {
            "id": op.operator_id,
            "email": op.email,
            "name": op.name,
            "scope": SCOPE_ADMIN,
            "is_staff": true,
        },
    }))
}

#[utoipa::path(post, path = "/api/auth/token/", tag = "auth", request_body = OperatorLogin,
    responses((status = 200, description = "`{access, refresh, user}`: admin-scope tokens"),
              (status = 401, description = "Wrong email or password", body = super::openapi::ErrorBody)))]
/// Operator login: email + password to admin-scope access and refresh tokens (audited).
pub async fn operator_login(
    State(state): State<Arc<ApiState>>,
    ApiJson(body): ApiJson<OperatorLogin>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let started = std::time::Instant::now();
    login_gate(&state, Bucket::FailedOperatorLogins)?;
    let op = blocking(&state, move |s| {
        Ok(s.store
            .records()
            .authenticate_operator(&body.email, &body.password)?)
    })
    .await?;
    let who = op.as_ref().map(|o| format!("operator:{}", o.operator_id));
    audit_login(
        &state,
        AuditAction::OperatorLogin,
        Bucket::FailedOperatorLogins,
        who,
        started,
    )
    .await?;
    let op = op.ok_or_else(|| ApiError::unauthorized("invalid email or password"))?;
    Ok(axum::Json(operator_tokens(&state, &op)?))
}

#[utoipa::path(post, path = "/api/auth/token/refresh/", tag = "auth", request_body = Refresh,
    responses((status = 200, description = "New `{access, refresh, user}`"),
              (status = 401, description = "Expired or not a refresh token", body = super::openapi::ErrorBody)))]
/// New operator tokens for a refresh token, while the operator still exists.
pub async fn operator_refresh(
    State(state): State<Arc<ApiState>>,
    ApiJson(body): ApiJson<Refresh>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let claims = verify(&state.jwt, body.refresh.trim())?;
    if !claims.scope.split(' ').any(|s| s == SCOPE_REFRESH) {
        return Err(ApiError::unauthorized("this is not a refresh token"));
    }
    let email = claims.name.clone();
    let op = blocking(&state, move |s| Ok(s.store.records().operator(&email)?))
        .await?
        .filter(|o| o.operator_id == claims.sub)
        .ok_or_else(|| ApiError::unauthorized("the operator no longer exists"))?;
    Ok(axum::Json(operator_tokens(&state, &op)?))
}

const LOGIN_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// 429 while this minute's failed logins of the kind are used up.
fn login_gate(state: &ApiState, bucket: Bucket) -> Result<(), ApiError> {
    let limit = state.config.api.failed_logins_per_minute;
    state.limits.full("logins", bucket, limit, LOGIN_WINDOW)
}

/// The audit row of a login attempt: `who` logged in, or nobody did (a failure counts
/// against the login limit).
async fn audit_login(
    state: &Arc<ApiState>,
    action: AuditAction,
    bucket: Bucket,
    who: Option<String>,
    started: std::time::Instant,
) -> Result<(), ApiError> {
    let ok = who.is_some();
    if !ok {
        state.limits.count("logins", bucket, LOGIN_WINDOW);
    }
    let row = AuditRow {
        at_ms: now_ms(),
        action,
        client: who.unwrap_or_else(|| "unknown".to_owned()),
        user_id: None,
        session_id: None,
        success: ok,
        reason: if ok {
            "token_issued"
        } else {
            "invalid_credentials"
        }
        .to_owned(),
        confidence: None,
        processing_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    blocking(state, move |s| Ok(s.store.records().audit(&row)?))
        .await
        .map(|_| ())
}

/// A 403 unless the caller holds the operator `admin` scope.
pub fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this needs an operator token with the admin scope",
        ))
    }
}
