//! `facegate-sync`: the terminal's store-and-forward MQTT sync agent (`run`), and the site hub
//! (`hub`) with its admin commands. The agent talks to the daemon's local sync API only, never
//! its files; the hub's commands talk to the running hub's admin socket, never its files.

mod admin;
mod agent;
mod daemon;
mod hub;
mod mqtt;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{ArgAction, Parser, Subcommand};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "facegate-sync",
    version,
    about = "facegate terminal <-> hub sync over MQTT"
)]
struct Cli {
    /// More log output (-v debug).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The terminal's agent: the daemon's change feed to the hub, the site's changes to the
    /// daemon.
    Run(agent::AgentArgs),
    /// Print a new random site key (64 hex characters) for the terminals and the hub of a site.
    SiteKey,
    /// Run the hub (with no command), or ask the running hub.
    Hub {
        /// The hub's state directory (its store and admin socket).
        #[arg(
            long,
            value_name = "DIR",
            global = true,
            default_value = "/var/lib/facegate-hub"
        )]
        data_dir: PathBuf,
        #[command(flatten)]
        run: hub::HubArgs,
        #[command(subcommand)]
        action: Option<HubAction>,
    },
}

#[derive(Debug, Subcommand)]
enum HubAction {
    /// The terminals the hub has heard of: online, events, backlog, decisions.
    Terminals,
    /// Audit rows received from the terminals (JSON lines), oldest first.
    Audit {
        #[arg(long)]
        terminal: Option<String>,
        /// Keep printing rows as they arrive.
        #[arg(long)]
        follow: bool,
    },
    /// Site-wide API clients.
    Clients {
        #[command(subcommand)]
        action: ClientsAction,
    },
    /// Enroll a person from photos on every terminal of the site: one terminal (given, or one
    /// online) embeds them; its enrollment reaches the others through the hub.
    Enroll {
        /// The tenant (client name).
        #[arg(long)]
        client: String,
        #[arg(long)]
        user_id: String,
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        terminal: Option<String>,
        /// Seconds to wait for the enrollment to reach the hub (0: do not wait).
        #[arg(long, default_value_t = 30)]
        wait: u64,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Delete an enrollment on every terminal of its site (kept as a tombstone).
    Revoke { enrollment_id: String },
    /// The hub's Prometheus metrics.
    Metrics,
}

#[derive(Debug, Subcommand)]
enum ClientsAction {
    /// Create a client on every terminal of the site; prints {client_id, api_key, api_secret}
    /// once.
    Add {
        name: String,
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FACEGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn ask(
    dir: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let (status, text) = admin::request(dir, method, path, body)?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or(json!({"error": text}));
    if status != 200 {
        bail!("the hub refused: {}", v["error"].as_str().unwrap_or(&text));
    }
    Ok(v)
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => runtime()?.block_on(agent::run(args)),
        Command::SiteKey => {
            println!("{}", facegate_proto::SiteKey::generate_hex()?.as_str());
            Ok(())
        }
        Command::Hub { data_dir, run, action: None } => runtime()?.block_on(hub::run(run, data_dir)),
        Command::Hub { data_dir, action: Some(action), .. } => match action {
            HubAction::Terminals => {
                let v = ask(&data_dir, "GET", "/terminals", None)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
                Ok(())
            }
            HubAction::Metrics => {
                let (_, text) = admin::request(&data_dir, "GET", "/metrics", None)?;
                print!("{text}");
                Ok(())
            }
            HubAction::Enroll {
                client,
                user_id,
                site,
                terminal,
                wait,
                images,
            } => {
                use base64::Engine as _;
                let mut photos = Vec::new();
                for p in &images {
                    let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                    photos.push(base64::engine::general_purpose::STANDARD.encode(bytes));
                }
                let v = ask(
                    &data_dir,
                    "POST",
                    "/enroll",
                    Some(&json!({"client": client, "user_id": user_id, "images": photos,
                                 "site": site, "terminal": terminal})),
                )?;
                let before = v["previous_version"].as_u64().unwrap_or(0);
                let q = format!(
                    "/enrollment?client={}&user_id={}&site={}",
                    encode(&client),
                    encode(&user_id),
                    encode(v["site"].as_str().unwrap_or_default())
                );
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
                loop {
                    let e = ask(&data_dir, "GET", &q, None)?;
                    if e["version"].as_u64().is_some_and(|ver| ver > before) {
                        println!(
                            "{}",
                            json!({"enrollment_id": e["enrollment_id"], "version": e["version"],
                                   "terminal": v["terminal"], "request": v["request"]})
                        );
                        return Ok(());
                    }
                    if std::time::Instant::now() >= deadline {
                        if wait == 0 {
                            println!("{v}");
                            return Ok(());
                        }
                        bail!(
                            "terminal {} has not enrolled {user_id} within {wait} s (request {} stays queued for it; \
                             its log says why if no photo had a usable face)",
                            v["terminal"].as_str().unwrap_or_default(),
                            v["request"].as_str().unwrap_or_default()
                        );
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
            HubAction::Revoke { enrollment_id } => {
                let v = ask(&data_dir, "POST", "/revoke", Some(&json!({"enrollment_id": enrollment_id})))?;
                println!("{v}");
                Ok(())
            }
            HubAction::Clients { action: ClientsAction::Add { name, site, json } } => {
                let v = ask(&data_dir, "POST", "/clients", Some(&json!({"name": name, "site": site})))?;
                if json {
                    println!("{v}");
                } else {
                    println!(
                        "client {} ({}) created on site {}\napi_key    {}\napi_secret {}  (shown once)",
                        v["name"].as_str().unwrap_or_default(),
                        v["client_id"].as_str().unwrap_or_default(),
                        v["site"].as_str().unwrap_or_default(),
                        v["api_key"].as_str().unwrap_or_default(),
                        v["api_secret"].as_str().unwrap_or_default()
                    );
                }
                Ok(())
            }
            HubAction::Audit { terminal, follow } => {
                let mut after: std::collections::HashMap<String, u64> = Default::default();
                loop {
                    let mut path = "/audit?limit=100000".to_owned();
                    if let Some(t) = &terminal {
                        path += &format!("&terminal={t}");
                    }
                    let v = ask(&data_dir, "GET", &path, None)?;
                    for r in v["rows"].as_array().cloned().unwrap_or_default() {
                        let key = format!(
                            "{}/{}/{}",
                            r["site"].as_str().unwrap_or_default(),
                            r["terminal"].as_str().unwrap_or_default(),
                            r["instance"].as_str().unwrap_or_default()
                        );
                        let seq = r["seq"].as_u64().unwrap_or(0);
                        if after.get(&key).is_some_and(|a| seq <= *a) {
                            continue;
                        }
                        after.insert(key, seq);
                        // A closed pipe (`| head`) ends the listing quietly.
                        if writeln!(std::io::stdout().lock(), "{r}").is_err() {
                            return Ok(());
                        }
                    }
                    if !follow {
                        return Ok(());
                    }
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        },
    }
    .context("facegate-sync")
}
