//! The terminal's agent: the daemon's change feed -> the broker, and the site's commands
//! (clients, enrollments, revocations re-published by the hub) -> the daemon.
//!
//! Invariant: the daemon's feed is the only queue. A change is acknowledged to the daemon only
//! once the broker acknowledged (PUBACK) it and every change before it, so a crash, a broker
//! outage or a lost connection re-publishes from the cursor (at-least-once; the hub removes
//! duplicates by origin and sequence). An incoming message is acknowledged to the broker only
//! once the daemon applied, found stale, or refused it for good; when the daemon is
//! unreachable the session is dropped and the broker delivers it again. The agent keeps no
//! state on disk and never sees a template or user id in clear (envelopes are sealed by the
//! daemon with the site key).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, Incoming, Outgoing, Publish};
use tokio::sync::mpsc;

use crate::daemon::{ApplyOutcome, DaemonApi};
use crate::mqtt::{AbortOnDrop, Backoff, BrokerArgs, Req, requester};

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// The daemon's API (loopback).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub daemon: String,
    /// File holding a sync token (`facegate sync-token`; default: the systemd credential
    /// `facegate-sync-token`).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Changes per batch (published, then acknowledged together).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Home Assistant MQTT discovery under this prefix (e.g. `homeassistant`): the terminal's
    /// status as a connectivity sensor and its decisions (outcome only: `granted` or the
    /// reason, never who) as an event entity. Off by default.
    #[arg(long, value_name = "PREFIX")]
    pub ha_discovery: Option<String>,
}

/// Home Assistant discovery configs (retained) for a terminal, the way Frigate announces its
/// cameras: (topic, payload).
pub fn ha_configs(prefix: &str, site: &str, terminal: &str) -> Vec<(String, Vec<u8>)> {
    let id = format!("facegate_{site}_{terminal}").replace(['.', '-'], "_");
    let device = serde_json::json!({
        "identifiers": [id],
        "name": format!("facegate {terminal}"),
        "manufacturer": "facegate",
        "model": "door terminal",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let status = facegate_proto::status_topic(site, terminal);
    vec![
        (
            format!("{prefix}/binary_sensor/{id}/online/config"),
            serde_json::json!({
                "name": "Online",
                "unique_id": format!("{id}_online"),
                "device_class": "connectivity",
                "state_topic": status,
                "payload_on": "online",
                "payload_off": "offline",
                "device": device,
            })
            .to_string()
            .into_bytes(),
        ),
        (
            format!("{prefix}/event/{id}/decision/config"),
            serde_json::json!({
                "name": "Decision",
                "unique_id": format!("{id}_decision"),
                "state_topic": decisions_topic(site, terminal),
                "event_types": ["granted", "no_match_found", "liveness_failed", "session_expired",
                                "cancelled", "obstacle_detected", "low_quality", "denied"],
                "availability_topic": status,
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": device,
            })
            .to_string()
            .into_bytes(),
        ),
    ]
}

/// `facegate/v1/{site}/{terminal}/decisions`: `{"event_type": ...}` per authentication.
pub fn decisions_topic(site: &str, terminal: &str) -> String {
    format!("{}/{site}/{terminal}/decisions", facegate_proto::ROOT)
}

enum Work {
    Changes(anyhow::Result<serde_json::Value>),
    Acked(anyhow::Result<u64>),
    Applied(Box<Publish>, anyhow::Result<ApplyOutcome>),
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let token_path = args
        .token_file
        .clone()
        .or_else(|| {
            std::env::var_os("CREDENTIALS_DIRECTORY")
                .map(|d| std::path::PathBuf::from(d).join("facegate-sync-token"))
        })
        .context("--token-file (or the facegate-sync-token credential) is required")?;
    let token = std::fs::read_to_string(&token_path)
        .with_context(|| format!("reading the sync token {}", token_path.display()))?
        .trim()
        .to_owned();
    let api = DaemonApi::new(&args.daemon, token);
    // Who am I: the daemon knows its site and terminal name.
    let (site, terminal, instance) = loop {
        let a = api.clone();
        match tokio::task::spawn_blocking(move || a.changes(None, 1, 0)).await? {
            Ok(v) => {
                break (
                    v["site"].as_str().unwrap_or_default().to_owned(),
                    v["terminal"].as_str().unwrap_or_default().to_owned(),
                    v["instance"].as_str().unwrap_or_default().to_owned(),
                );
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the daemon's sync API is not ready; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    // A configuration error (no broker, no CA for mqtts, an unreadable password file) stops
    // the agent now instead of being retried forever.
    args.broker.options(
        &format!("facegate-{site}-{terminal}-{instance}"),
        (String::new(), "offline"),
    )?;
    tracing::info!(%site, %terminal, "facegate-sync agent starting");
    let mut backoff = Backoff::default();
    loop {
        let started = Instant::now();
        match session(&args, &api, (&site, &terminal, &instance)).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                if started.elapsed() > Duration::from_secs(10) {
                    backoff.reset();
                }
                let wait = backoff.next();
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "sync session ended");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One broker connection, from CONNACK until an error. Nothing in it outlives it: the next
/// session starts again from the daemon's cursor.
async fn session(
    args: &AgentArgs,
    api: &DaemonApi,
    (site, terminal, instance): (&str, &str, &str),
) -> anyhow::Result<()> {
    let status = facegate_proto::status_topic(site, terminal);
    // The daemon's incarnation is part of the session: a terminal given a new data directory
    // starts a new broker session, and so asks the hub for the site's state.
    let opts = args.broker.options(
        &format!("facegate-{site}-{terminal}-{instance}"),
        (status.clone(), "offline"),
    )?;
    let (client, mut events) = AsyncClient::new(opts, 256);
    let (req, requests) = requester(client);
    let _stop = AbortOnDrop(requests);
    let (tx, mut rx) = mpsc::channel::<Work>(64);
    // Publishes in the order they were handed to the client, waiting for their packet id.
    let mut order: VecDeque<Option<u64>> = VecDeque::new();
    let mut inflight: HashMap<u16, u64> = HashMap::new();
    let mut batch_left = 0usize;
    let mut batch_last = 0u64;
    let mut connected = false;
    let mut applying = false;
    let mut inbox: VecDeque<Publish> = VecDeque::new();
    let mut after: Option<u64> = None;

    let fetch = |after: Option<u64>, tx: mpsc::Sender<Work>| {
        let a = api.clone();
        let limit = args.batch.clamp(1, 500);
        tokio::spawn(async move {
            let r = tokio::task::spawn_blocking(move || a.changes(after, limit, 20_000))
                .await
                .unwrap_or_else(|e| Err(e.into()));
            let _ = tx.send(Work::Changes(r)).await;
        });
    };
    let apply = |p: Publish, tx: mpsc::Sender<Work>| {
        let a = api.clone();
        tokio::spawn(async move {
            let body = p.payload.clone();
            let r = tokio::task::spawn_blocking(move || a.apply(&body))
                .await
                .unwrap_or_else(|e| Err(e.into()));
            let _ = tx.send(Work::Applied(Box::new(p), r)).await;
        });
    };

    loop {
        tokio::select! {
            ev = events.poll() => {
                match ev.context("broker connection")? {
                    Event::Incoming(Incoming::ConnAck(ack)) => {
                        tracing::info!(session_present = ack.session_present, "connected to the broker");
                        connected = true;
                        req.send(Req::Publish { topic: status.clone(), payload: b"online".to_vec(), retain: true })?;
                        order.push_back(None);
                        if let Some(prefix) = &args.ha_discovery {
                            for (topic, payload) in ha_configs(prefix, site, terminal) {
                                req.send(Req::Publish { topic, payload, retain: true })?;
                                order.push_back(None);
                            }
                        }
                        for t in [
                            format!("{}/{site}/cmd/#", facegate_proto::ROOT),
                            format!("{}/{site}/{terminal}/cmd/#", facegate_proto::ROOT),
                        ] {
                            req.send(Req::Subscribe(t))?;
                        }
                        if !ack.session_present {
                            // The broker holds nothing for us (a new terminal, or a broker that
                            // lost its sessions): ask the hub for the site's state.
                            req.send(Req::Publish {
                                topic: format!("{}/{site}/{terminal}/resync", facegate_proto::ROOT),
                                payload: b"{}".to_vec(),
                                retain: false,
                            })?;
                            order.push_back(None);
                        }
                        fetch(None, tx.clone());
                    }
                    Event::Outgoing(Outgoing::Publish(pkid)) => {
                        if let Some(Some(seq)) = order.pop_front() {
                            inflight.insert(pkid, seq);
                        }
                    }
                    Event::Incoming(Incoming::PubAck(ack)) if inflight.remove(&ack.pkid).is_some() => {
                        batch_left = batch_left.saturating_sub(1);
                        if batch_left == 0 {
                            spawn_ack(api, batch_last, tx.clone());
                        }
                    }
                    Event::Incoming(Incoming::Publish(p)) => {
                        inbox.push_back(p);
                        if !applying && let Some(next) = inbox.pop_front() {
                            applying = true;
                            apply(next, tx.clone());
                        }
                    }
                    Event::Incoming(Incoming::Disconnect) => anyhow::bail!("the broker disconnected"),
                    _ => {}
                }
            }
            Some(work) = rx.recv(), if connected => {
                match work {
                    Work::Changes(r) => {
                        let v = r?;
                        let changes = v["changes"].as_array().cloned().unwrap_or_default();
                        if changes.is_empty() {
                            fetch(after.or(v["cursor"].as_u64()), tx.clone());
                            continue;
                        }
                        let mut n = 0;
                        for c in &changes {
                            let seq = c["seq"].as_u64().unwrap_or(0);
                            batch_last = batch_last.max(seq);
                            if c["skip"] == true {
                                continue;
                            }
                            if args.ha_discovery.is_some() && let Some(d) = c["decision"].as_str() {
                                let payload = serde_json::json!({"event_type": d}).to_string().into_bytes();
                                req.send(Req::Publish { topic: decisions_topic(site, terminal), payload, retain: false })?;
                                order.push_back(None);
                            }
                            let topic = c["topic"].as_str().unwrap_or_default().to_owned();
                            let payload = serde_json::to_vec(&c["envelope"])?;
                            req.send(Req::Publish { topic, payload, retain: false })?;
                            order.push_back(Some(seq));
                            n += 1;
                        }
                        after = Some(batch_last);
                        batch_left = n;
                        if n == 0 {
                            spawn_ack(api, batch_last, tx.clone());
                        }
                    }
                    Work::Acked(r) => {
                        let cursor = r?;
                        tracing::debug!(cursor, "acknowledged to the daemon");
                        fetch(Some(batch_last), tx.clone());
                    }
                    Work::Applied(p, r) => {
                        match r {
                            Ok(outcome) => {
                                // Applied and stale envelopes are counted by the daemon's /metrics.
                                if let ApplyOutcome::Refused(why) = &outcome {
                                    tracing::warn!(topic = %p.topic, reason = %why, "the daemon refused a site message: dropped");
                                }
                                req.send(Req::Ack(p))?;
                            }
                            // Not acknowledged: a new session gets it again.
                            Err(e) => return Err(e.context("applying a site message")),
                        }
                        applying = false;
                        if let Some(next) = inbox.pop_front() {
                            applying = true;
                            apply(next, tx.clone());
                        }
                    }
                }
            }
        }
    }
}

fn spawn_ack(api: &DaemonApi, seq: u64, tx: mpsc::Sender<Work>) {
    let a = api.clone();
    tokio::spawn(async move {
        let r = tokio::task::spawn_blocking(move || a.ack(seq))
            .await
            .unwrap_or_else(|e| Err(e.into()));
        let _ = tx.send(Work::Acked(r)).await;
    });
}
