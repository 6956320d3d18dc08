//! Broker connection options shared by the agent and the hub: `mqtt://` or `mqtts://` URLs,
//! username + password (a file or a systemd credential), TLS with a CA and an optional client
//! certificate (rustls), persistent sessions (clean session off), a retained last will.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

/// How to reach the broker (the same flags for the agent and the hub).
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// `mqtt://HOST[:PORT]` (1883) or `mqtts://HOST[:PORT]` (8883, TLS).
    #[arg(long, value_name = "URL", env = "FACEGATE_SYNC_BROKER")]
    pub broker: Option<String>,
    #[arg(long, env = "FACEGATE_SYNC_USERNAME")]
    pub username: Option<String>,
    /// File holding the password (default: the systemd credential `mqtt-password` if present).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) the broker's certificate must chain to (mqtts).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for brokers that authenticate clients by certificate.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

fn credential(name: &str) -> Option<PathBuf> {
    std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|d| PathBuf::from(d).join(name))
        .filter(|p| p.exists())
}

impl BrokerArgs {
    /// Options for a persistent session of `client_id` whose last will is `will` (retained).
    pub fn options(
        &self,
        client_id: &str,
        will: (String, &'static str),
    ) -> anyhow::Result<MqttOptions> {
        let Some(broker) = &self.broker else {
            bail!("--broker URL is required (mqtt://HOST[:PORT] or mqtts://HOST[:PORT])");
        };
        let (tls, rest) = if let Some(r) = broker.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = broker.strip_prefix("mqtt://") {
            (false, r)
        } else {
            bail!("--broker must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]");
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().context("--broker port")?),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            bail!("--broker has no host");
        }
        let mut o = MqttOptions::new(client_id, host, port);
        o.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(15))
            .set_manual_acks(true)
            .set_inflight(100)
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_request_channel_capacity(256)
            .set_last_will(LastWill::new(will.0, will.1, QoS::AtLeastOnce, true));
        let password = match (self.password_file.clone(), credential("mqtt-password")) {
            (Some(p), _) | (None, Some(p)) => Some(
                std::fs::read_to_string(&p)
                    .with_context(|| format!("reading the MQTT password {}", p.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            (None, None) => None,
        };
        if let Some(user) = &self.username {
            o.set_credentials(user, password.unwrap_or_default());
        }
        if tls {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let ca_path = self.ca.clone().or_else(|| credential("mqtt-ca.pem"));
            let ca = match ca_path {
                Some(p) => std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
                None => bail!("mqtts needs --ca (the broker's CA certificate, PEM)"),
            };
            let client_auth = match (&self.cert, &self.key) {
                (Some(c), Some(k)) => Some((
                    std::fs::read(c).with_context(|| format!("reading {}", c.display()))?,
                    std::fs::read(k).with_context(|| format!("reading {}", k.display()))?,
                )),
                _ => None,
            };
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth,
            }));
        }
        Ok(o)
    }
}

/// Reconnection backoff: 250 ms doubling to 8 s; reset once a session came up.
#[derive(Debug)]
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff(Duration::from_millis(250))
    }
}

impl Backoff {
    pub fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(8));
        d
    }

    pub fn reset(&mut self) {
        self.0 = Duration::from_millis(250);
    }
}

/// A request to the broker, queued without blocking the event loop.
#[derive(Debug)]
pub enum Req {
    Publish {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    Ack(Box<rumqttc::Publish>),
    Subscribe(String),
}

/// Hands requests to the client in order from a task of its own: the client's request
/// channel is drained only while the event loop is polled, so awaiting it from the loop
/// itself can deadlock once many messages are in flight. Ends with the session.
pub fn requester(
    client: rumqttc::AsyncClient,
) -> (
    tokio::sync::mpsc::UnboundedSender<Req>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Req>();
    let task = tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            let done = match r {
                Req::Publish {
                    topic,
                    payload,
                    retain,
                } => {
                    client
                        .publish(topic, QoS::AtLeastOnce, retain, payload)
                        .await
                }
                Req::Ack(p) => client.ack(&p).await,
                Req::Subscribe(t) => client.subscribe(t, QoS::AtLeastOnce).await,
            };
            if done.is_err() {
                return;
            }
        }
    });
    (tx, task)
}

/// Aborts a task when dropped (a session's helper tasks end with it).
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
