//! The sync protocol shared by the terminal daemon (which seals and opens events), the sync
//! agent (which carries them) and the hub (which stores and re-publishes them).
//!
//! A message on the broker is an [`Envelope`]: a few routing fields in clear (version, event
//! id, site, origin terminal, its sequence number, kind, time) and the [`Event`] itself sealed
//! with the site key (AES-256-GCM, fresh nonce, the site and kind as associated data). The
//! sealed event repeats the routing fields and [`open`] refuses an envelope whose clear fields
//! differ from them, so a sealed body cannot be replayed under another header.
//!
//! Invariant: templates, user ids, client secrets and audit details exist on the broker only
//! inside `sealed`; the clear fields carry no user data.

pub mod sled_snapshots;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The envelope format version.
pub const VERSION: u8 = 1;
/// The topic root: `facegate/v1/{site}/...`.
pub const ROOT: &str = "facegate/v1";
/// The origin name the hub uses for events it creates (client added, revocation).
pub const HUB: &str = "hub";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("not a facegate envelope: {0}")]
    Malformed(String),
    #[error("envelope version {0} is not supported")]
    Version(u8),
    #[error("the envelope is for site `{0}`, not this one")]
    OtherSite(String),
    #[error("the sealed event does not open with this site's key (wrong key, or altered)")]
    Sealed,
    #[error("the sealed event does not match its envelope ({0})")]
    Mismatch(&'static str),
    #[error("the site key must be 32 bytes, or 64 hex characters: {0}")]
    BadKey(String),
    #[error("the operating system random generator failed")]
    Random,
}

/// What an event is about; also the last topic level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Client,
    Enrollment,
    Deletion,
    Audit,
    Metrics,
    /// The hub asks one terminal to enroll a person from photos (the hub has no face
    /// pipeline); the enrollment then travels like any other.
    EnrollRequest,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Client => "clients",
            Kind::Enrollment => "enrollments",
            Kind::Deletion => "revocations",
            Kind::Audit => "audit",
            Kind::Metrics => "metrics",
            Kind::EnrollRequest => "enroll",
        }
    }

    pub fn from_topic_level(level: &str) -> Option<Kind> {
        [
            Kind::Client,
            Kind::Enrollment,
            Kind::Deletion,
            Kind::Audit,
            Kind::Metrics,
            Kind::EnrollRequest,
        ]
        .into_iter()
        .find(|k| k.as_str() == level)
    }

    /// Whether every terminal of the site applies it (the hub re-publishes these).
    pub fn replicated(self) -> bool {
        matches!(self, Kind::Client | Kind::Enrollment | Kind::Deletion)
    }
}

/// The broker message: routing fields in clear, the event sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u8,
    /// `{origin}:{seq}`: unique per site.
    pub id: String,
    pub site: String,
    pub origin: String,
    pub seq: u64,
    pub kind: Kind,
    pub at_ms: u64,
    /// base64 of nonce (12) ‖ AES-256-GCM ciphertext ‖ tag (16) of the JSON [`Event`].
    pub sealed: String,
}

impl Envelope {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Envelope, ProtoError> {
        let e: Envelope =
            serde_json::from_slice(bytes).map_err(|e| ProtoError::Malformed(e.to_string()))?;
        if e.v != VERSION {
            return Err(ProtoError::Version(e.v));
        }
        if e.id != format!("{}:{}", e.origin, e.seq) {
            return Err(ProtoError::Malformed("id is not origin:seq".into()));
        }
        Ok(e)
    }
}

/// An API client (tenant) as it travels between terminals: what a terminal needs to accept its
/// key and secret and seal its payloads, never the secret itself.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub client_id: String,
    pub name: String,
    pub api_key: String,
    /// Argon2id PHC string of the API secret.
    pub secret_hash: String,
    /// hex SHA-256 of the secret and of the key (the `encrypted_data` keys).
    pub secret_digest: String,
    pub key_digest: String,
    /// `AES-256-GCM` or `AES-256-CBC`.
    pub payload_algorithm: String,
    pub created_ms: u64,
}

impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRecord")
            .field("client_id", &self.client_id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// One enrolled person as it travels: the template is sealed with everything else.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollmentRecord {
    pub enrollment_id: String,
    /// The tenant (client name).
    pub client: String,
    pub user_id: String,
    pub template: Vec<f32>,
    pub quality: f32,
    pub liveness_verified: bool,
    pub created_ms: u64,
    /// Hybrid logical clock ([`next_version`]); ties broken by the enrollment id.
    pub version: u64,
}

impl std::fmt::Debug for EnrollmentRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentRecord")
            .field("enrollment_id", &self.enrollment_id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A deletion: it removes the user's enrollment of an older version and stays as a tombstone
/// that refuses older upserts (right to erasure, offline terminals included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletionRecord {
    pub enrollment_id: String,
    pub client: String,
    pub user_id: String,
    pub version: u64,
}

/// One audited attempt of a terminal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: u64,
    pub action: String,
    pub client: String,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub success: bool,
    pub reason: String,
    pub confidence: Option<f32>,
    pub processing_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    Client(ClientRecord),
    Enrollment(EnrollmentRecord),
    Deletion(DeletionRecord),
    Audit(AuditRecord),
    /// A terminal's metrics snapshot (JSON text).
    Metrics {
        json: String,
    },
    /// Photos of a person to enroll (base64 JPEG / PNG), for one terminal to embed.
    EnrollRequest {
        client: String,
        user_id: String,
        images: Vec<String>,
    },
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Client(_) => Kind::Client,
            Body::Enrollment(_) => Kind::Enrollment,
            Body::Deletion(_) => Kind::Deletion,
            Body::Audit(_) => Kind::Audit,
            Body::Metrics { .. } => Kind::Metrics,
            Body::EnrollRequest { .. } => Kind::EnrollRequest,
        }
    }
}

/// The sealed content of an envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub site: String,
    pub origin: String,
    /// The origin's incarnation: a terminal given a new data directory counts its sequence
    /// numbers from 1 again, so receivers key events by (origin, instance, seq).
    #[serde(default)]
    pub instance: String,
    pub seq: u64,
    pub at_ms: u64,
    pub body: Body,
}

/// A site's 256-bit key: terminals and the hub of a site hold it; the broker never does.
#[derive(Clone)]
pub struct SiteKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SiteKey(..)")
    }
}

impl SiteKey {
    /// From a credential's bytes: 32 raw bytes, or 64 hex characters (surrounding whitespace
    /// ignored).
    pub fn from_credential(bytes: &[u8]) -> Result<SiteKey, ProtoError> {
        let trimmed = bytes.trim_ascii();
        let mut k = Zeroizing::new([0u8; 32]);
        if trimmed.len() == 64 {
            hex::decode_to_slice(trimmed, k.as_mut())
                .map_err(|e| ProtoError::BadKey(e.to_string()))?;
        } else if bytes.len() == 32 {
            k.copy_from_slice(bytes);
        } else {
            return Err(ProtoError::BadKey(format!("{} bytes", bytes.len())));
        }
        Ok(SiteKey(k))
    }

    /// A fresh random key, as 64 hex characters.
    pub fn generate_hex() -> Result<Zeroizing<String>, ProtoError> {
        let mut k = Zeroizing::new([0u8; 32]);
        getrandom::fill(k.as_mut()).map_err(|_| ProtoError::Random)?;
        Ok(Zeroizing::new(hex::encode(k.as_ref())))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.0.as_ref()).expect("key is 32 bytes")
    }

    /// HMAC-SHA256 under a key derived from the site key: pseudonymous ids (the hub's store
    /// keys), never reversible without the key.
    pub fn mac(&self, purpose: &str, parts: &[&str]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref()).expect("any key length");
        mac.update(purpose.as_bytes());
        for p in parts {
            mac.update(&[0]);
            mac.update(p.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// A 256-bit key derived for another purpose (the hub's store key).
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.mac("facegate/site-derive/v1", &[purpose]))
    }
}

fn aad(site: &str, kind: Kind) -> Vec<u8> {
    format!("{ROOT}/{site}/{}", kind.as_str()).into_bytes()
}

/// Seals `event` into an envelope.
pub fn seal(key: &SiteKey, event: &Event) -> Result<Envelope, ProtoError> {
    let kind = event.body.kind();
    let plain = Zeroizing::new(
        serde_json::to_vec(event).map_err(|e| ProtoError::Malformed(e.to_string()))?,
    );
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|_| ProtoError::Random)?;
    let ct = key
        .cipher()
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &plain,
                aad: &aad(&event.site, kind),
            },
        )
        .map_err(|_| ProtoError::Sealed)?;
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&ct);
    Ok(Envelope {
        v: VERSION,
        id: format!("{}:{}", event.origin, event.seq),
        site: event.site.clone(),
        origin: event.origin.clone(),
        seq: event.seq,
        kind,
        at_ms: event.at_ms,
        sealed: B64.encode(blob),
    })
}

/// Opens an envelope of `site`: the event, if the key opens it and it matches the clear fields.
pub fn open(key: &SiteKey, site: &str, env: &Envelope) -> Result<Event, ProtoError> {
    if env.v != VERSION {
        return Err(ProtoError::Version(env.v));
    }
    if env.site != site {
        return Err(ProtoError::OtherSite(env.site.clone()));
    }
    let blob = B64
        .decode(env.sealed.as_bytes())
        .map_err(|e| ProtoError::Malformed(format!("sealed: {e}")))?;
    if blob.len() < 12 + 16 {
        return Err(ProtoError::Sealed);
    }
    let (nonce, ct) = blob.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| ProtoError::Sealed)?;
    let plain = Zeroizing::new(
        key.cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: &aad(site, env.kind),
                },
            )
            .map_err(|_| ProtoError::Sealed)?,
    );
    let event: Event =
        serde_json::from_slice(&plain).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if event.site != env.site {
        return Err(ProtoError::Mismatch("site"));
    }
    if event.origin != env.origin {
        return Err(ProtoError::Mismatch("origin"));
    }
    if event.seq != env.seq {
        return Err(ProtoError::Mismatch("seq"));
    }
    if event.body.kind() != env.kind {
        return Err(ProtoError::Mismatch("kind"));
    }
    if event.at_ms != env.at_ms {
        return Err(ProtoError::Mismatch("at_ms"));
    }
    Ok(event)
}

/// Topic of an event published by a terminal: `facegate/v1/{site}/{terminal}/{kind}`.
pub fn terminal_topic(site: &str, terminal: &str, kind: Kind) -> String {
    format!("{ROOT}/{site}/{terminal}/{}", kind.as_str())
}

/// Topic of a command to every terminal of a site: `facegate/v1/{site}/cmd/{kind}`.
pub fn site_cmd_topic(site: &str, kind: Kind) -> String {
    format!("{ROOT}/{site}/cmd/{}", kind.as_str())
}

/// Topic of a command to one terminal: `facegate/v1/{site}/{terminal}/cmd/{kind}`.
pub fn terminal_cmd_topic(site: &str, terminal: &str, kind: Kind) -> String {
    format!("{ROOT}/{site}/{terminal}/cmd/{}", kind.as_str())
}

/// Retained `online` / `offline` of a terminal (or of the hub, terminal = `hub`).
pub fn status_topic(site: &str, terminal: &str) -> String {
    format!("{ROOT}/{site}/{terminal}/status")
}

/// Whether a name is usable as a site or terminal (one topic level, no wildcards).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name != "cmd"
}

/// The next version of a hybrid logical clock: above every version issued or seen (`last`)
/// and, when the wall clock is ahead, the wall clock (ms, shifted to leave 16 bits of counter).
pub fn next_version(last: u64, now_ms: u64) -> u64 {
    (now_ms << 16).max(last.saturating_add(1))
}

/// Whether (version, id) `a` is newer than `b`: the conflict rule, the same on every node.
pub fn newer(a: (u64, &str), b: (u64, &str)) -> bool {
    a > b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SiteKey {
        SiteKey::from_credential(&[b; 32]).expect("32 bytes")
    }

    fn event() -> Event {
        Event {
            site: "hq".into(),
            origin: "door-a".into(),
            instance: "i1".into(),
            seq: 7,
            at_ms: 1_700_000_000_000,
            body: Body::Enrollment(EnrollmentRecord {
                enrollment_id: "e1".into(),
                client: "acme".into(),
                user_id: "alice@example.com".into(),
                template: vec![0.25; 192],
                quality: 0.9,
                liveness_verified: true,
                created_ms: 1,
                version: 5,
            }),
        }
    }

    #[test]
    fn sealed_events_open_only_with_the_site_key_and_their_own_header() {
        let env = seal(&key(1), &event()).expect("seal");
        let json = env.to_json();
        let text = String::from_utf8_lossy(&json);
        assert!(!text.contains("alice"), "user id in clear: {text}");
        assert!(!text.contains("acme"), "tenant in clear: {text}");
        let back = Envelope::from_json(&json).expect("parse");
        assert_eq!(open(&key(1), "hq", &back).expect("open"), event());
        assert_eq!(open(&key(2), "hq", &back), Err(ProtoError::Sealed));
        assert_eq!(
            open(&key(1), "other", &back),
            Err(ProtoError::OtherSite("hq".into()))
        );
        let mut moved = back.clone();
        moved.seq = 8;
        moved.id = "door-a:8".into();
        assert_eq!(
            open(&key(1), "hq", &moved),
            Err(ProtoError::Mismatch("seq"))
        );
        let mut rekinded = back.clone();
        rekinded.kind = Kind::Audit;
        assert_eq!(open(&key(1), "hq", &rekinded), Err(ProtoError::Sealed));
        let mut flipped = back;
        let mut blob = B64.decode(&flipped.sealed).expect("b64");
        blob[20] ^= 1;
        flipped.sealed = B64.encode(blob);
        assert_eq!(open(&key(1), "hq", &flipped), Err(ProtoError::Sealed));
    }

    #[test]
    fn malformed_envelopes_are_refused_with_a_reason() {
        for bad in [
            &b"not json"[..],
            br#"{"v":1}"#,
            br#"{"v":2,"id":"a:1","site":"s","origin":"a","seq":1,"kind":"audit","at_ms":1,"sealed":""}"#,
            br#"{"v":1,"id":"b:1","site":"s","origin":"a","seq":1,"kind":"audit","at_ms":1,"sealed":""}"#,
        ] {
            assert!(Envelope::from_json(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn versions_move_forward_and_ties_break_the_same_everywhere() {
        assert_eq!(next_version(0, 1000), 1000 << 16);
        assert_eq!(next_version(u64::MAX - 1, 0), u64::MAX);
        let later_clock_behind = next_version(5_000 << 16, 1000);
        assert!(later_clock_behind > 5_000 << 16);
        assert!(newer((2, "a"), (1, "z")));
        assert!(newer((2, "b"), (2, "a")));
        assert!(!newer((2, "a"), (2, "a")));
    }

    #[test]
    fn site_keys_come_from_hex_or_raw_bytes() {
        let hex64 = SiteKey::generate_hex().expect("random");
        assert!(SiteKey::from_credential(format!("{}\n", hex64.as_str()).as_bytes()).is_ok());
        assert!(SiteKey::from_credential(b"short").is_err());
        assert!(
            valid_name("door-a") && !valid_name("a/b") && !valid_name("+") && !valid_name("cmd")
        );
    }
}
