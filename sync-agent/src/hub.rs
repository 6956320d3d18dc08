//! The site hub: subscribes to its sites' terminals, keeps every event it receives exactly
//! once in its own store (sled; the envelopes as received, sealed with the site key), resolves
//! clients, enrollments and revocations with the same rule as the terminals, and re-publishes
//! the winners to every terminal of the site. Admins talk to the running hub through its admin
//! API (`admin.sock` in the data directory, and `/metrics` on `--listen`).
//!
//! Invariant: an incoming message is acknowledged to the broker only after what it changed
//! (the event, the site state, the outbox entry) is flushed to disk in one batch, so `kill -9`
//! loses nothing and a redelivery is recognised by (site, origin, seq) and stored once. What the
//! hub must publish waits in the outbox until the broker acknowledged it (re-sent after every
//! reconnect; terminals apply idempotently). Nothing the hub stores or logs holds a template or
//! a user id in clear.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use facegate_proto::{Body, Envelope, Event, Kind, SiteKey};
use rumqttc::{AsyncClient, Incoming};
use serde_json::{Value, json};

use crate::mqtt::{AbortOnDrop, Backoff, BrokerArgs, Req, requester};

#[derive(Debug, clap::Args)]
pub struct HubArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// A site this hub serves (repeatable; one --site-key-file each, in the same order).
    #[arg(long = "site", value_name = "SITE")]
    pub sites: Vec<String>,
    /// The site's key (64 hex characters), one per --site.
    #[arg(long = "site-key-file", value_name = "FILE")]
    pub site_keys: Vec<PathBuf>,
    /// Prometheus `/metrics` for all terminals.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9466")]
    pub listen: std::net::SocketAddr,
    /// This hub's name (its MQTT client id and status topic).
    #[arg(long, default_value = "hub")]
    pub name: String,
}

/// Why a message was refused (counted per reason).
pub const REFUSALS: [&str; 5] = ["malformed", "other_site", "sealed", "mismatch", "topic"];

#[derive(Debug)]
pub struct Hub {
    pub db: sled::Db,
    events: sled::Tree,
    state: sled::Tree,
    outbox: sled::Tree,
    terminals: sled::Tree,
    meta: sled::Tree,
    pub sites: BTreeMap<String, SiteKey>,
    /// Wakes the MQTT session when the outbox grew (admin actions).
    pub wake: tokio::sync::Notify,
    pub refused: [AtomicU64; 5],
    /// This hub store's incarnation (random, kept in its meta tree).
    instance: String,
    pub duplicates: AtomicU64,
    pub stored: AtomicU64,
    /// Terminals' last status as seen now (online / offline).
    online: std::sync::Mutex<HashMap<(String, String), bool>>,
    pub started: Instant,
}

/// `site \0 origin \0 instance \0 seq`: an event's key, and what a redelivery is recognised by.
fn event_key(site: &str, origin: &str, instance: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(site.len() + origin.len() + instance.len() + 11);
    for part in [site, origin, instance] {
        k.extend_from_slice(part.as_bytes());
        k.push(0);
    }
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// (site, origin, instance, seq) of an event key.
fn split_event_key(k: &[u8]) -> Option<(String, String, String, u64)> {
    let mut parts = k.splitn(4, |b| *b == 0);
    let site = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let origin = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let instance = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let seq = u64::from_be_bytes(parts.next()?.try_into().ok()?);
    Some((site, origin, instance, seq))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The state a replicated event claims: its key in the site state and its (version, id).
fn claim(site: &str, key: &SiteKey, event: &Event) -> Option<(Vec<u8>, u64, String)> {
    let mut k = site.as_bytes().to_vec();
    k.push(0);
    match &event.body {
        Body::Client(c) => {
            k.extend_from_slice(&key.mac("client", &[&c.client_id]));
            Some((k, 0, c.client_id.clone()))
        }
        Body::Enrollment(e) => {
            k.extend_from_slice(&key.mac("user", &[&e.client, &e.user_id]));
            Some((k, e.version, e.enrollment_id.clone()))
        }
        Body::Deletion(d) => {
            k.extend_from_slice(&key.mac("user", &[&d.client, &d.user_id]));
            Some((k, d.version, d.enrollment_id.clone()))
        }
        _ => None,
    }
}

impl Hub {
    pub fn open(dir: &std::path::Path, sites: BTreeMap<String, SiteKey>) -> anyhow::Result<Hub> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("hub.db");
        let open = || {
            sled::Config::new()
                .path(&path)
                .mode(sled::Mode::HighThroughput)
                .open()
        };
        let db = match open() {
            // A SIGKILL while sled wrote a snapshot (facegate_proto::sled_snapshots).
            Err(sled::Error::Corruption { .. })
                if facegate_proto::sled_snapshots::remove_unfinished(&path)? > 0 =>
            {
                tracing::warn!("removed sled snapshots left unfinished by a crash");
                open()
            }
            other => other,
        }
        .with_context(|| {
            format!(
                "opening the hub store in {} (is a hub running on it?)",
                dir.display()
            )
        })?;
        let meta = db.open_tree("meta")?;
        let instance = match meta.get(b"instance")? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random: {e}"))?;
                let i = hex::encode(b);
                meta.insert(b"instance", i.as_bytes())?;
                db.flush()?;
                i
            }
        };
        Ok(Hub {
            instance,
            events: db.open_tree("events")?,
            state: db.open_tree("state")?,
            outbox: db.open_tree("outbox")?,
            terminals: db.open_tree("terminals")?,
            meta,
            db,
            sites,
            wake: tokio::sync::Notify::new(),
            refused: Default::default(),
            duplicates: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            online: Default::default(),
            started: Instant::now(),
        })
    }

    fn refuse(&self, reason: usize, topic: &str, why: &str) {
        self.refused[reason].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(reason = REFUSALS[reason], %topic, %why, "refused a message");
    }

    /// Handles one message from a terminal; `Ok` means it may be acknowledged to the broker.
    pub fn receive(&self, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
        let levels: Vec<&str> = topic.split('/').collect();
        let [_, _, site, terminal, last] = levels[..] else {
            self.refuse(4, topic, "not facegate/v1/SITE/TERMINAL/KIND");
            return Ok(());
        };
        if last == "resync" && terminal != "cmd" {
            if self.sites.contains_key(site) {
                self.resync(site, terminal)?;
            }
            return Ok(());
        }
        if terminal == "cmd" || last == "decisions" {
            // the hub's own re-publications; Home Assistant's decision events
            return Ok(());
        }
        let Some(key) = self.sites.get(site) else {
            self.refuse(1, topic, "a site this hub does not serve");
            return Ok(());
        };
        if last == "status" {
            let online = payload == b"online";
            self.online
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((site.to_owned(), terminal.to_owned()), online);
            self.update_terminal(site, terminal, |t| {
                t["online"] = json!(online);
                t["status_at_ms"] = json!(now_ms());
            })?;
            return Ok(());
        }
        let Some(kind) = Kind::from_topic_level(last) else {
            self.refuse(4, topic, "unknown kind");
            return Ok(());
        };
        let env = match Envelope::from_json(payload) {
            Ok(e) => e,
            Err(e) => {
                self.refuse(0, topic, &e.to_string());
                return Ok(());
            }
        };
        if env.origin != terminal || env.kind != kind {
            self.refuse(3, topic, "the envelope's origin or kind is not its topic's");
            return Ok(());
        }
        let event = match facegate_proto::open(key, site, &env) {
            Ok(ev) => ev,
            Err(e) => {
                let reason = match e {
                    facegate_proto::ProtoError::OtherSite(_) => 1,
                    facegate_proto::ProtoError::Sealed => 2,
                    facegate_proto::ProtoError::Mismatch(_) => 3,
                    _ => 0,
                };
                self.refuse(reason, topic, &e.to_string());
                return Ok(());
            }
        };
        let ekey = event_key(site, &env.origin, &event.instance, env.seq);
        if self.events.contains_key(&ekey)? {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.record(site, key, &env, &event, &ekey, None)?;
        self.stored.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Stores an event (and, for a replicated winner, the site state and an outbox entry) in
    /// one batch per tree set, flushed before it returns.
    fn record(
        &self,
        site: &str,
        key: &SiteKey,
        env: &Envelope,
        event: &Event,
        ekey: &[u8],
        direct: Option<&str>,
    ) -> anyhow::Result<bool> {
        use sled::Transactional;
        let json = env.to_json();
        let claim = claim(site, key, event);
        let wins = match &claim {
            Some((skey, version, id)) => match self.state.get(skey)? {
                None => true,
                Some(cur) => {
                    let cur: Value = serde_json::from_slice(&cur)?;
                    let cv = cur["version"].as_u64().unwrap_or(0);
                    let cid = cur["id"].as_str().unwrap_or_default();
                    match event.body.kind() {
                        Kind::Client => false,
                        // erasure wins over every older upsert, and a tombstone only yields
                        // to a strictly newer version
                        Kind::Deletion => *version > cv,
                        _ if cur["deleted"] == true => *version > cv,
                        _ => facegate_proto::newer((*version, id), (cv, cid)),
                    }
                }
            },
            None => direct.is_some(),
        };
        let topic = direct
            .map(str::to_owned)
            .unwrap_or_else(|| facegate_proto::site_cmd_topic(site, env.kind));
        let deleted = event.body.kind() == Kind::Deletion;
        let origin = env.origin.clone();
        let seq = env.seq;
        (&self.events, &self.state, &self.outbox, &self.terminals)
            .transaction(|(ev, st, ob, te)| {
                ev.insert(ekey, json.as_slice())?;
                if wins {
                    if let Some((skey, version, id)) = &claim {
                        let v = json!({"version": version, "id": id, "deleted": deleted, "event": ekey_hex(ekey)});
                        st.insert(skey.as_slice(), serde_json::to_vec(&v).unwrap_or_default())?;
                    }
                    let mut ok = site.as_bytes().to_vec();
                    ok.push(0);
                    ok.extend_from_slice(env.id.as_bytes());
                    ob.insert(ok, [topic.as_bytes(), b"\n", json.as_slice()].concat())?;
                }
                let tkey = [site.as_bytes(), &[0], origin.as_bytes()].concat();
                let mut t: Value = te
                    .get(&tkey)?
                    .and_then(|v| serde_json::from_slice(&v).ok())
                    .unwrap_or_else(|| json!({"events": 0, "last_seq": 0}));
                t["events"] = json!(t["events"].as_u64().unwrap_or(0) + 1);
                t["last_seq"] = json!(t["last_seq"].as_u64().unwrap_or(0).max(seq));
                t["last_event_ms"] = json!(now_ms());
                match &event.body {
                    Body::Audit(a) => {
                        let k = if a.success { "decisions_ok" } else { "decisions_failed" };
                        if a.action == "authenticate" {
                            t[k] = json!(t[k].as_u64().unwrap_or(0) + 1);
                        }
                        t["audit_rows"] = json!(t["audit_rows"].as_u64().unwrap_or(0) + 1);
                    }
                    Body::Metrics { json: m } => {
                        let m: Value = serde_json::from_str(m).unwrap_or(Value::Null);
                        t["backlog"] = m["sync_pending"].clone();
                        t["enrollments"] = m["enrollments"].clone();
                    }
                    _ => {}
                }
                te.insert(tkey, serde_json::to_vec(&t).unwrap_or_default())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| anyhow::anyhow!("hub store: {e:?}"))?;
        self.db.flush()?;
        if wins {
            self.wake.notify_one();
        }
        Ok(wins)
    }

    fn update_terminal(
        &self,
        site: &str,
        terminal: &str,
        f: impl Fn(&mut Value),
    ) -> anyhow::Result<()> {
        let tkey = [site.as_bytes(), &[0], terminal.as_bytes()].concat();
        let mut t: Value = self
            .terminals
            .get(&tkey)?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_else(|| json!({"events": 0, "last_seq": 0}));
        f(&mut t);
        self.terminals.insert(tkey, serde_json::to_vec(&t)?)?;
        self.db.flush()?;
        Ok(())
    }

    fn next_seq(&self, site: &str) -> anyhow::Result<u64> {
        let k = [b"seq/".as_slice(), site.as_bytes()].concat();
        let v = self.meta.update_and_fetch(k, |old| {
            let n = old
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map_or(0, u64::from_be_bytes);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(1, u64::from_be_bytes))
    }

    /// An event the hub itself originates (a client added, a revocation): stored, resolved
    /// and queued for the site like a terminal's.
    pub fn originate(&self, site: &str, body: Body) -> anyhow::Result<Envelope> {
        self.originate_to(site, None, body)
    }

    /// `originate` to one terminal (`{site}/{terminal}/cmd/{kind}`), or the site.
    pub fn originate_to(
        &self,
        site: &str,
        terminal: Option<&str>,
        body: Body,
    ) -> anyhow::Result<Envelope> {
        let key = self
            .sites
            .get(site)
            .context("a site this hub does not serve")?;
        let event = Event {
            site: site.to_owned(),
            origin: facegate_proto::HUB.to_owned(),
            instance: self.instance.clone(),
            seq: self.next_seq(site)?,
            at_ms: now_ms(),
            body,
        };
        let env = facegate_proto::seal(key, &event)?;
        let ekey = event_key(site, &env.origin, &event.instance, env.seq);
        let direct = terminal.map(|t| facegate_proto::terminal_cmd_topic(site, t, env.kind));
        if !self.record(site, key, &env, &event, &ekey, direct.as_deref())? {
            bail!("superseded by a newer change already at the hub");
        }
        Ok(env)
    }

    /// The current enrollment record (opened) of an enrollment id in a site.
    pub fn find_enrollment(
        &self,
        enrollment_id: &str,
    ) -> anyhow::Result<Option<(String, facegate_proto::EnrollmentRecord)>> {
        for kv in self.state.iter() {
            let (_, v) = kv?;
            let cur: Value = serde_json::from_slice(&v)?;
            if cur["id"] != enrollment_id || cur["deleted"] == true {
                continue;
            }
            let Some(ekey) = cur["event"].as_str().and_then(|h| hex::decode(h).ok()) else {
                continue;
            };
            let Some((site, _, _, _)) = split_event_key(&ekey) else {
                continue;
            };
            let Some(raw) = self.events.get(&ekey)? else {
                continue;
            };
            let env = Envelope::from_json(&raw)?;
            let key = self.sites.get(&site).context("site key")?;
            if let Body::Enrollment(e) = facegate_proto::open(key, &site, &env)?.body {
                return Ok(Some((site, e)));
            }
        }
        Ok(None)
    }

    /// Outbox entries to (re-)publish: (outbox key, topic, payload).
    fn outbox(&self) -> anyhow::Result<Vec<Outgoing>> {
        let mut out = Vec::new();
        for kv in self.outbox.iter() {
            let (k, v) = kv?;
            // topic \n envelope
            let Some(nl) = v.iter().position(|b| *b == b'\n') else {
                continue;
            };
            let topic = String::from_utf8_lossy(&v[..nl]).into_owned();
            out.push((k.to_vec(), topic, v[nl + 1..].to_vec()));
        }
        Ok(out)
    }

    fn outbox_done(&self, key: &[u8]) -> anyhow::Result<()> {
        self.outbox.remove(key)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Every terminal the hub has heard of.
    pub fn terminals(&self) -> anyhow::Result<Vec<Value>> {
        let online = self
            .online
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = Vec::new();
        for kv in self.terminals.iter() {
            let (k, v) = kv?;
            let mut parts = k.splitn(2, |b| *b == 0);
            let site = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            if name == facegate_proto::HUB {
                continue;
            }
            let mut t: Value = serde_json::from_slice(&v)?;
            if let Some(o) = online.get(&(site.clone(), name.clone())) {
                t["online"] = json!(o);
            }
            t["site"] = json!(site);
            t["terminal"] = json!(name);
            out.push(t);
        }
        Ok(out)
    }

    /// Audit rows (opened), oldest first per terminal, after `after` (a terminal's seq).
    pub fn audit(
        &self,
        terminal: Option<&str>,
        after: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        for kv in self.events.iter() {
            let (k, v) = kv?;
            let Some((site, origin, instance, seq)) = split_event_key(&k) else {
                continue;
            };
            if terminal.is_some_and(|t| t != origin) || seq <= after {
                continue;
            }
            let env = Envelope::from_json(&v)?;
            if env.kind != Kind::Audit {
                continue;
            }
            let key = self.sites.get(&site).context("site key")?;
            if let Body::Audit(a) = facegate_proto::open(key, &site, &env)?.body {
                out.push(json!({"site": site, "terminal": origin, "instance": instance, "seq": seq, "row": a}));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Queues the site's whole state (every client, the winning enrollment or tombstone of
    /// every person) for one terminal: what a terminal that starts without a broker session
    /// (a new one, or after the broker lost its sessions) has missed. Applying is idempotent.
    fn resync(&self, site: &str, terminal: &str) -> anyhow::Result<()> {
        let mut prefix = site.as_bytes().to_vec();
        prefix.push(0);
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in self.state.scan_prefix(&prefix) {
            let (_, v) = kv?;
            let cur: Value = serde_json::from_slice(&v)?;
            let Some(ekey) = cur["event"].as_str().and_then(|h| hex::decode(h).ok()) else {
                continue;
            };
            let Some(raw) = self.events.get(&ekey)? else {
                continue;
            };
            let env = Envelope::from_json(&raw)?;
            let topic = facegate_proto::terminal_cmd_topic(site, terminal, env.kind);
            let okey = [
                prefix.as_slice(),
                b"resync/",
                terminal.as_bytes(),
                &[0],
                env.id.as_bytes(),
            ]
            .concat();
            batch.insert(okey, [topic.as_bytes(), b"\n", raw.as_ref()].concat());
            n += 1;
        }
        self.outbox.apply_batch(batch)?;
        self.db.flush()?;
        tracing::info!(%site, %terminal, changes = n, "a terminal without a session: the site's state queued for it");
        self.wake.notify_one();
        Ok(())
    }

    /// A terminal of `site` whose agent is online now.
    pub fn online_terminal(&self, site: &str) -> Option<String> {
        self.online
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((s, t), on)| s == site && **on && t != facegate_proto::HUB)
            .map(|((_, t), _)| t.clone())
            .min()
    }

    /// The current enrollment of (client, user id) at the hub: (id, version), if any.
    pub fn enrollment_of(
        &self,
        site: &str,
        client: &str,
        user_id: &str,
    ) -> anyhow::Result<Option<(String, u64)>> {
        let key = self
            .sites
            .get(site)
            .context("a site this hub does not serve")?;
        let mut k = site.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(&key.mac("user", &[client, user_id]));
        Ok(match self.state.get(k)? {
            Some(v) => {
                let cur: Value = serde_json::from_slice(&v)?;
                (cur["deleted"] != true).then(|| {
                    (
                        cur["id"].as_str().unwrap_or_default().to_owned(),
                        cur["version"].as_u64().unwrap_or(0),
                    )
                })
            }
            None => None,
        })
    }

    pub fn events_len(&self) -> usize {
        self.events.len()
    }
}

/// An outbox entry to publish: (outbox key, topic, payload).
type Outgoing = (Vec<u8>, String, Vec<u8>);

fn ekey_hex(k: &[u8]) -> String {
    hex::encode(k)
}

pub async fn run(args: HubArgs, data_dir: PathBuf) -> anyhow::Result<()> {
    if args.sites.is_empty() {
        bail!("facegate-sync hub needs --broker, --site and --site-key-file (or a command)");
    }
    if args.sites.len() != args.site_keys.len() {
        bail!("give one --site-key-file per --site");
    }
    let mut sites = BTreeMap::new();
    for (s, f) in args.sites.iter().zip(&args.site_keys) {
        if !facegate_proto::valid_name(s) {
            bail!("--site {s:?}: letters, digits, '-', '_' or '.'");
        }
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
        );
        sites.insert(s.clone(), SiteKey::from_credential(&bytes)?);
    }
    args.broker.options(
        &format!("facegate-hub-{}", args.name),
        (String::new(), "offline"),
    )?;
    let hub = Arc::new(Hub::open(&data_dir, sites)?);
    crate::admin::serve(hub.clone(), &data_dir, args.listen).await?;
    tracing::info!(sites = ?args.sites, events = hub.events_len(), outbox = hub.outbox_len(), "facegate-sync hub starting");
    let mut backoff = Backoff::default();
    loop {
        let started = Instant::now();
        if let Err(e) = session(&args, &hub).await {
            if started.elapsed() > Duration::from_secs(10) {
                backoff.reset();
            }
            let wait = backoff.next();
            tracing::warn!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "hub session ended");
            tokio::time::sleep(wait).await;
        }
    }
}

async fn session(args: &HubArgs, hub: &Arc<Hub>) -> anyhow::Result<()> {
    let status = format!("{}/{}/status", facegate_proto::ROOT, args.name);
    let opts = args.broker.options(
        &format!("facegate-hub-{}", args.name),
        (status.clone(), "offline"),
    )?;
    let (client, mut events) = AsyncClient::new(opts, 512);
    let (req, requests) = requester(client);
    let _stop = AbortOnDrop(requests);
    let mut order: VecDeque<Option<Vec<u8>>> = VecDeque::new();
    let mut inflight: HashMap<u16, Vec<u8>> = HashMap::new();
    let mut queued: std::collections::HashSet<Vec<u8>> = Default::default();
    let mut connected = false;
    loop {
        tokio::select! {
            ev = events.poll() => {
                match ev.context("broker connection")? {
                    rumqttc::Event::Incoming(Incoming::ConnAck(ack)) => {
                        tracing::info!(session_present = ack.session_present, "hub connected to the broker");
                        connected = true;
                        req.send(Req::Publish { topic: status.clone(), payload: b"online".to_vec(), retain: true })?;
                        order.push_back(None);
                        for site in hub.sites.keys() {
                            req.send(Req::Subscribe(format!("{}/{site}/+/+", facegate_proto::ROOT)))?;
                        }
                        hub.wake.notify_one();
                    }
                    rumqttc::Event::Incoming(Incoming::Publish(p)) => {
                        let h = hub.clone();
                        let topic = p.topic.clone();
                        let payload = p.payload.clone();
                        tokio::task::spawn_blocking(move || h.receive(&topic, &payload)).await??;
                        req.send(Req::Ack(Box::new(p)))?;
                    }
                    rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => {
                        if let Some(Some(k)) = order.pop_front() {
                            inflight.insert(pkid, k);
                        }
                    }
                    rumqttc::Event::Incoming(Incoming::PubAck(ack)) => {
                        if let Some(k) = inflight.remove(&ack.pkid) {
                            let h = hub.clone();
                            let kk = k.clone();
                            tokio::task::spawn_blocking(move || h.outbox_done(&kk)).await??;
                            queued.remove(&k);
                        }
                    }
                    rumqttc::Event::Incoming(Incoming::Disconnect) => bail!("the broker disconnected"),
                    _ => {}
                }
            }
            _ = hub.wake.notified(), if connected => {
                let h = hub.clone();
                let pending = tokio::task::spawn_blocking(move || h.outbox()).await??;
                for (k, topic, payload) in pending {
                    if queued.insert(k.clone()) {
                        req.send(Req::Publish { topic, payload, retain: false })?;
                        order.push_back(Some(k));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hub killed while sled wrote a snapshot opens again with what it stored.
    #[test]
    fn an_unfinished_sled_snapshot_does_not_stop_the_hub() {
        let dir = std::env::temp_dir().join(format!("facegate-hub-snap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let instance = Hub::open(&dir, BTreeMap::new()).unwrap().instance.clone();
        let unfinished = dir.join("hub.db").join("snap.7FFFFFFFFFFFFFFF.generating");
        std::fs::write(&unfinished, b"").unwrap();
        // sled's flusher of the first open may hold the lock a moment after the drop.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let hub = loop {
            match Hub::open(&dir, BTreeMap::new()) {
                Ok(hub) => break hub,
                Err(e)
                    if std::time::Instant::now() < deadline
                        && format!("{e:#}").contains("lock") =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("{e:#}"),
            }
        };
        assert_eq!(hub.instance, instance, "the same store, not a new one");
        assert!(!unfinished.exists());
        drop(hub);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
