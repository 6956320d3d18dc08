//! Client authentication: API key (+ secret) -> HS256 JWT; every request authenticated by
//! `Authorization: Bearer <jwt>`, `Authorization: JWT <jwt>` or `X-API-Key: <key>`.
//!
//! Invariant: tokens are HS256 only (any other `alg`, `none` included, is refused), expire
//! (no leeway), and are signed with a key derived from the store's keys, never from config.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{ApiError, ApiJson};
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
    pub client_id: String,
    /// Tenant key: enrollments, sessions and audit rows are scoped by it.
    pub client: String,
    pub admin: bool,
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
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let value = value
                .to_str()
                .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("JWT "))
                .ok_or_else(|| {
                    ApiError::unauthorized("use `Authorization: Bearer <token>` or `JWT <token>`")
                })?;
            let claims = verify(&state.jwt, token.trim())?;
            return Ok(Caller {
                client_id: claims.sub,
                client: claims.name,
                admin: claims.scope.split(' ').any(|s| s == "admin"),
            });
        }
        if let Some(key) = parts.headers.get("x-api-key") {
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
        Err(ApiError::unauthorized(
            "authentication required: a Bearer/JWT token or an X-API-Key header",
        ))
    }
}

#[derive(Debug, Deserialize)]
pub struct ClientLogin {
    api_key: String,
    #[serde(default)]
    api_secret: Option<String>,
}

/// `POST /api/auth/client/` (and `/api/core/auth/client/`): both seeds' response fields.
pub async fn client_login(
    State(state): State<Arc<ApiState>>,
    ApiJson(body): ApiJson<ClientLogin>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let started = std::time::Instant::now();
    let key = body.api_key.clone();
    let secret = body.api_secret.clone();
    let client = blocking(&state, move |s| {
        Ok(s.store
            .records()
            .authenticate_client(&key, secret.as_deref())?)
    })
    .await?;
    let ok = client.is_some();
    let row = AuditRow {
        at_ms: now_ms(),
        action: AuditAction::ClientLogin,
        client: client
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), |c| c.name.clone()),
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
    blocking(&state, move |s| Ok(s.store.records().audit(&row)?)).await?;
    let client = client.ok_or_else(|| ApiError::unauthorized("invalid API key or secret"))?;
    let ttl = state.config.api.token_ttl_s;
    let (token, exp) = issue(&state.jwt, &client.client_id, &client.name, "client", ttl)?;
    let expires_at = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp),
    )
    .to_string();
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
