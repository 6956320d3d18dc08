//! The hub's admin API: on a Unix socket in its data directory (mode 0600: the hub's own user
//! and root) for the `facegate-sync hub ...` commands, and `/metrics` (Prometheus) on
//! `--listen`. The commands never open the hub's files, so they work while it runs.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, bail};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use facegate_proto::{Body, ClientRecord, DeletionRecord};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::hub::{Hub, REFUSALS};

pub const SOCKET: &str = "admin.sock";

type Answer = Result<Json<Value>, (StatusCode, Json<Value>)>;

fn fail(status: StatusCode, e: impl std::fmt::Display) -> (StatusCode, Json<Value>) {
    (status, Json(json!({"error": e.to_string()})))
}

pub async fn serve(hub: Arc<Hub>, dir: &Path, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let path = dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let unix = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding the admin socket {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let admin = Router::new()
        .route("/terminals", get(terminals))
        .route("/audit", get(audit))
        .route("/clients", post(add_client))
        .route("/revoke", post(revoke))
        .route("/enroll", post(enroll))
        .route("/enrollment", get(enrollment))
        .route("/metrics", get(metrics))
        .with_state(hub.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(unix, admin).await {
            tracing::error!(error = %e, "the admin socket stopped");
        }
    });
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("hub metrics on http://{}/metrics", tcp.local_addr()?);
    let public = Router::new()
        .route("/metrics", get(metrics))
        .with_state(hub);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(tcp, public).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}

async fn blocking<T: Send + 'static>(
    hub: &Arc<Hub>,
    f: impl FnOnce(&Hub) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, (StatusCode, Json<Value>)> {
    let h = hub.clone();
    tokio::task::spawn_blocking(move || f(&h))
        .await
        .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e))?
        .map_err(|e| fail(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))
}

async fn terminals(State(hub): State<Arc<Hub>>) -> Answer {
    let t = blocking(&hub, |h| h.terminals()).await?;
    Ok(Json(json!({"terminals": t})))
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    terminal: Option<String>,
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

async fn audit(State(hub): State<Arc<Hub>>, Query(q): Query<AuditQuery>) -> Answer {
    let rows = blocking(&hub, move |h| {
        h.audit(
            q.terminal.as_deref(),
            q.after,
            q.limit.unwrap_or(1000).min(100_000),
        )
    })
    .await?;
    Ok(Json(json!({"rows": rows})))
}

#[derive(Debug, Deserialize)]
struct NewClient {
    name: String,
    site: Option<String>,
    #[serde(default)]
    payload_encryption: Option<String>,
}

fn random_hex(n: usize) -> anyhow::Result<String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    Ok(hex::encode(b))
}

fn site_of(hub: &Hub, wanted: Option<String>) -> anyhow::Result<String> {
    match wanted {
        Some(s) => Ok(s),
        None if hub.sites.len() == 1 => Ok(hub.sites.keys().next().cloned().unwrap_or_default()),
        None => bail!("this hub serves several sites: say which (site)"),
    }
}

/// A client for every terminal of the site: the secret is returned here, once, and travels
/// only as its Argon2id hash (sealed).
async fn add_client(State(hub): State<Arc<Hub>>, Json(body): Json<NewClient>) -> Answer {
    let out = blocking(&hub, move |h| {
        let site = site_of(h, body.site)?;
        let valid = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if body.name.is_empty() || body.name.len() > 64 || !body.name.chars().all(valid) {
            bail!("client names are 1-64 characters of letters, digits, '-', '_' or '.'");
        }
        let api_key = format!("fgk_{}", random_hex(16)?);
        let api_secret = zeroize::Zeroizing::new(format!("fgs_{}", random_hex(32)?));
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("random: {e}"))?;
        let salt = argon2::password_hash::SaltString::encode_b64(&salt)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let hash = argon2::PasswordHasher::hash_password(
            &argon2::Argon2::default(),
            api_secret.as_bytes(),
            &salt,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("random: {e}"))?;
        id[6] = (id[6] & 0x0f) | 0x40;
        id[8] = (id[8] & 0x3f) | 0x80;
        let h16 = hex::encode(id);
        let client_id = format!(
            "{}-{}-{}-{}-{}",
            &h16[..8],
            &h16[8..12],
            &h16[12..16],
            &h16[16..20],
            &h16[20..]
        );
        let rec = ClientRecord {
            client_id: client_id.clone(),
            name: body.name.clone(),
            api_key: api_key.clone(),
            secret_hash: hash,
            secret_digest: hex::encode(Sha256::digest(api_secret.as_bytes())),
            key_digest: hex::encode(Sha256::digest(api_key.as_bytes())),
            payload_algorithm: body
                .payload_encryption
                .clone()
                .unwrap_or_else(|| "AES-256-GCM".into()),
            created_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        h.originate(&site, Body::Client(rec))?;
        Ok(
            json!({"client_id": client_id, "name": body.name, "site": site,
                  "api_key": api_key, "api_secret": api_secret.as_str()}),
        )
    })
    .await?;
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
struct Revoke {
    enrollment_id: String,
}

/// A revocation: the enrollment is deleted on every terminal of its site (offline ones when
/// they return) and kept as a tombstone.
async fn revoke(State(hub): State<Arc<Hub>>, Json(body): Json<Revoke>) -> Answer {
    let out = blocking(&hub, move |h| {
        let Some((site, e)) = h.find_enrollment(&body.enrollment_id)? else {
            bail!("no enrollment {} at the hub", body.enrollment_id);
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let env = h.originate(
            &site,
            Body::Deletion(DeletionRecord {
                enrollment_id: e.enrollment_id.clone(),
                client: e.client,
                user_id: e.user_id,
                version: facegate_proto::next_version(e.version, now),
            }),
        )?;
        Ok(json!({"revoked": e.enrollment_id, "site": site, "event": env.id}))
    })
    .await?;
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
struct Enroll {
    client: String,
    user_id: String,
    /// base64 photos.
    images: Vec<String>,
    site: Option<String>,
    terminal: Option<String>,
}

/// Photos of a person to one terminal of the site (given, or one online now), which embeds
/// them and enrolls the person; the enrollment comes back to the hub and goes to the others.
async fn enroll(State(hub): State<Arc<Hub>>, Json(body): Json<Enroll>) -> Answer {
    let out = blocking(&hub, move |h| {
        let site = site_of(h, body.site)?;
        if body.images.is_empty() {
            bail!("give at least one photo");
        }
        let terminal = match body.terminal {
            Some(t) => t,
            None => h.online_terminal(&site).context(
                "no terminal of the site is online: give --terminal (it enrolls when it returns)",
            )?,
        };
        let before = h.enrollment_of(&site, &body.client, &body.user_id)?;
        let env = h.originate_to(
            &site,
            Some(&terminal),
            Body::EnrollRequest {
                client: body.client,
                user_id: body.user_id,
                images: body.images,
            },
        )?;
        Ok(
            json!({"request": env.id, "site": site, "terminal": terminal,
                  "previous_version": before.map(|b| b.1)}),
        )
    })
    .await?;
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
struct EnrollmentQuery {
    client: String,
    user_id: String,
    site: Option<String>,
}

/// The current enrollment of a person at the hub.
async fn enrollment(State(hub): State<Arc<Hub>>, Query(q): Query<EnrollmentQuery>) -> Answer {
    let out = blocking(&hub, move |h| {
        let site = site_of(h, q.site)?;
        Ok(match h.enrollment_of(&site, &q.client, &q.user_id)? {
            Some((id, version)) => json!({"enrollment_id": id, "version": version, "site": site}),
            None => json!({"enrollment_id": null, "site": site}),
        })
    })
    .await?;
    Ok(Json(out))
}

async fn metrics(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    let terminals = blocking(&hub, |h| h.terminals()).await.unwrap_or_default();
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str| {
        out += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
    };
    family(
        "facegate_hub_terminal_online",
        "1 while the terminal's agent is connected.",
        "gauge",
    );
    family(
        "facegate_hub_terminal_backlog",
        "Changes the terminal has not yet delivered (its last metrics snapshot).",
        "gauge",
    );
    family(
        "facegate_hub_terminal_events_total",
        "Events stored from the terminal (each once).",
        "counter",
    );
    family(
        "facegate_hub_terminal_decisions_total",
        "Authentication decisions audited by the terminal.",
        "counter",
    );
    let _ = &mut family;
    let mut lines = String::new();
    for t in &terminals {
        let labels = format!(
            "site=\"{}\",terminal=\"{}\"",
            t["site"].as_str().unwrap_or_default(),
            t["terminal"].as_str().unwrap_or_default()
        );
        lines += &format!(
            "facegate_hub_terminal_online{{{labels}}} {}\n",
            u8::from(t["online"] == true)
        );
        lines += &format!(
            "facegate_hub_terminal_backlog{{{labels}}} {}\n",
            t["backlog"].as_u64().unwrap_or(0)
        );
        lines += &format!(
            "facegate_hub_terminal_events_total{{{labels}}} {}\n",
            t["events"].as_u64().unwrap_or(0)
        );
        for (k, result) in [("decisions_ok", "success"), ("decisions_failed", "failure")] {
            lines += &format!(
                "facegate_hub_terminal_decisions_total{{{labels},result=\"{result}\"}} {}\n",
                t[k].as_u64().unwrap_or(0)
            );
        }
    }
    out += &lines;
    out += &format!(
        "# HELP facegate_hub_events_stored_total Events stored since start.\n# TYPE facegate_hub_events_stored_total counter\nfacegate_hub_events_stored_total {}\n\
         # HELP facegate_hub_duplicates_total Redelivered events recognised and not stored again.\n# TYPE facegate_hub_duplicates_total counter\nfacegate_hub_duplicates_total {}\n\
         # HELP facegate_hub_outbox Events waiting for the broker.\n# TYPE facegate_hub_outbox gauge\nfacegate_hub_outbox {}\n\
         # HELP facegate_hub_uptime_seconds Seconds since the hub started.
# TYPE facegate_hub_uptime_seconds gauge
facegate_hub_uptime_seconds {}
\
         # HELP facegate_hub_refused_total Messages refused, by reason.\n# TYPE facegate_hub_refused_total counter\n",
        hub.stored.load(Ordering::Relaxed),
        hub.duplicates.load(Ordering::Relaxed),
        hub.outbox_len(),
        hub.started.elapsed().as_secs(),
    );
    for (i, r) in REFUSALS.iter().enumerate() {
        out += &format!(
            "facegate_hub_refused_total{{reason=\"{r}\"}} {}\n",
            hub.refused[i].load(Ordering::Relaxed)
        );
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

/// One request to the running hub's admin socket: (status, body).
pub fn request(
    dir: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, String)> {
    let sock = dir.join(SOCKET);
    let mut s = std::os::unix::net::UnixStream::connect(&sock).with_context(|| {
        format!(
            "connecting to the hub's admin socket {} (is the hub running?)",
            sock.display()
        )
    })?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .context("a malformed answer from the hub")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("a malformed status line from the hub")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out += &rest[..n];
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
