//! The daemon's local sync API, from the agent's side (blocking HTTP on loopback or a Unix
//! socket path is not needed: the daemon listens on loopback).

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct DaemonApi {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// How the daemon answered an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    Applied,
    Stale,
    /// Refused for good (malformed, wrongly sealed, not applicable): the reason.
    Refused(String),
}

impl DaemonApi {
    pub fn new(base: &str, token: String) -> DaemonApi {
        DaemonApi {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .into(),
        }
    }

    fn read(resp: ureq::http::Response<ureq::Body>) -> anyhow::Result<(u16, Value)> {
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().unwrap_or_default();
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Changes after `after` (the acknowledged cursor when `None`), waiting up to `wait_ms`.
    pub fn changes(&self, after: Option<u64>, limit: usize, wait_ms: u64) -> anyhow::Result<Value> {
        let mut url = format!(
            "{}/api/sync/changes?limit={limit}&wait_ms={wait_ms}",
            self.base
        );
        if let Some(a) = after {
            url += &format!("&after={a}");
        }
        let resp = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .context("the daemon's sync API")?;
        match Self::read(resp)? {
            (200, v) => Ok(v),
            (s, v) => bail!("GET /api/sync/changes: {s} {}", v["message"]),
        }
    }

    pub fn ack(&self, seq: u64) -> anyhow::Result<u64> {
        let resp = self
            .agent
            .post(&format!("{}/api/sync/ack", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(format!("{{\"seq\":{seq}}}"))
            .context("the daemon's sync API")?;
        match Self::read(resp)? {
            (200, v) => Ok(v["cursor"].as_u64().unwrap_or(0)),
            (s, v) => bail!("POST /api/sync/ack: {s} {}", v["message"]),
        }
    }

    /// Hands one envelope (as it came off the broker) to the daemon. `Err` only when the
    /// daemon did not decide (unreachable, 5xx): the message must be delivered again.
    pub fn apply(&self, envelope: &[u8]) -> anyhow::Result<ApplyOutcome> {
        let resp = self
            .agent
            .post(&format!("{}/api/sync/apply", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(envelope)
            .context("the daemon's sync API")?;
        match Self::read(resp)? {
            (200, v) if v["result"] == "applied" => Ok(ApplyOutcome::Applied),
            (200, _) => Ok(ApplyOutcome::Stale),
            (400 | 413 | 422, v) => Ok(ApplyOutcome::Refused(
                v["details"]["reason"]
                    .as_str()
                    .or(v["message"].as_str())
                    .unwrap_or("refused")
                    .to_owned(),
            )),
            (s, v) => bail!("POST /api/sync/apply: {s} {}", v["message"]),
        }
    }
}
