//! Per-client rate limits (the contract's defaults: authentication sessions 100/h, enrollment
//! sessions 20/h, frames 1000/min), fixed windows, answered 429 with Retry-After.
//!
//! Failed logins (client and operator, each a bucket of its own for the whole terminal: every
//! caller is local) are limited too, so a password cannot be guessed at Argon2's pace.
//!
//! Invariant: a limit counts only the calling client's requests; a refused request does not
//! count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;

use super::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    AuthenticationSessions,
    EnrollmentSessions,
    Frames,
    FailedClientLogins,
    FailedOperatorLogins,
}

#[derive(Debug, Default)]
pub struct RateLimits {
    windows: Mutex<HashMap<(String, Bucket), (Instant, u32)>>,
}

impl RateLimits {
    /// Counts one request of `client` in `bucket` (at most `limit` per `window`), or refuses it.
    pub fn check(
        &self,
        client: &str,
        bucket: Bucket,
        limit: u32,
        window: Duration,
    ) -> Result<(), ApiError> {
        self.admit(client, bucket, limit, window, true)
    }

    /// Refuses when `bucket` is full, without counting (see `count`).
    pub fn full(
        &self,
        client: &str,
        bucket: Bucket,
        limit: u32,
        window: Duration,
    ) -> Result<(), ApiError> {
        self.admit(client, bucket, limit, window, false)
    }

    /// Counts one event in `bucket` (e.g. a failed login), whatever the limit.
    pub fn count(&self, client: &str, bucket: Bucket, window: Duration) {
        let _ = self.admit(client, bucket, u32::MAX, window, true);
    }

    fn admit(
        &self,
        client: &str,
        bucket: Bucket,
        limit: u32,
        window: Duration,
        count: bool,
    ) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let entry = w.entry((client.to_owned(), bucket)).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        if entry.1 >= limit {
            let retry = window
                .saturating_sub(now.duration_since(entry.0))
                .as_secs()
                .max(1);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "rate limit: at most {limit} per {} s for this client",
                    window.as_secs()
                ),
            )
            .with_details(
                json!({"limit": limit, "window_s": window.as_secs(), "retry_after_s": retry}),
            );
            e.retry_after_s = Some(retry);
            return Err(e);
        }
        if count {
            entry.1 += 1;
        }
        Ok(())
    }
}
