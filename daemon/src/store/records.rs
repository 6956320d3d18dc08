//! Enrollment records and the change feed in sled, every value sealed.
//!
//! Invariant: records are the source of truth; every value is sealed with the data key and its
//! tree/key as associated data; a write is flushed (fsync) before the call returns, so an
//! acknowledged enrollment survives a crash or power cut.

use std::path::Path;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::crypto::{CryptoError, Keyring, SecretKey};
use super::keys::{self, KeyError, MasterKeySource};

const META_DATA_KEY: &[u8] = b"data_key";
const META_FEED_SEQ: &[u8] = b"feed_seq";
const META_EPOCH: &[u8] = b"enrollment_epoch";
pub(super) const META_LABEL: &[u8] = b"next_label";
/// The data key being rotated away from: present only while a rotation re-seals records.
const META_DATA_KEY_PREV: &[u8] = b"data_key_prev";
const META_LOOKUP_KEY: &[u8] = b"lookup_key";
/// The hybrid logical clock: the highest enrollment version issued or seen.
const META_HLC: &[u8] = b"hlc";
/// `tomb/` ‖ user slot -> the version of the user's last deletion.
pub(super) const META_TOMB: &[u8] = b"tomb/";
/// Trees whose values are sealed with the data key (and so re-sealed by a rotation).
const SEALED_TREES: [&str; 5] = ["enrollments", "feed", "clients", "audit", "operators"];

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the record database failed: {0}")]
    Db(#[from] sled::Error),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("record {key} cannot be opened: {source}")]
    Sealed { key: String, source: CryptoError },
    #[error("record {key} is malformed: {message}")]
    Malformed { key: String, message: String },
    #[error(
        "the record database {0} is in use by another process (is a facegate daemon running on this data directory?)"
    )]
    InUse(String),
    #[error("the data directory has records but no data key: refusing to start with a new key")]
    MissingDataKey,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// One enrolled person of one client.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    pub id: String,
    /// The vector index's key for this enrollment.
    pub label: u64,
    pub client: String,
    pub user_id: String,
    pub template: Vec<f32>,
    pub quality: f32,
    pub liveness_verified: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub version: u64,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("id", &self.id)
            .field("client", &self.client)
            .field("user_id", &self.user_id)
            .field(
                "template",
                &format_args!("[{} values]", self.template.len()),
            )
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// One entry of the change feed that sync consumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    EnrollmentUpserted {
        enrollment_id: String,
        client: String,
        user_id: String,
        version: u64,
    },
    EnrollmentDeleted {
        enrollment_id: String,
        client: String,
        user_id: String,
    },
    Audit(AuditRow),
    /// A periodic metrics snapshot (JSON) for the hub.
    Metrics {
        at_ms: u64,
        json: String,
    },
    // New variants go last: entries are stored by variant index.
    /// A deletion with its version: the tombstone other terminals keep (`EnrollmentDeleted`
    /// is what older terminals wrote).
    EnrollmentRevoked {
        enrollment_id: String,
        client: String,
        user_id: String,
        version: u64,
    },
    /// A client created on this terminal: the API key travels (sealed) so other terminals of
    /// the site can look it up; the secret never exists here.
    ClientCreated {
        client_id: String,
        api_key: String,
    },
}

/// What an audited attempt was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAction {
    Enroll,
    Authenticate,
    Delete,
    ClientLogin,
    OperatorLogin,
    /// Administration (new variants go last: rows are stored by variant index).
    ClientCreated,
    KeysRotated,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Enroll => "enroll",
            AuditAction::Authenticate => "authenticate",
            AuditAction::Delete => "delete",
            AuditAction::ClientLogin => "client_login",
            AuditAction::OperatorLogin => "operator_login",
            AuditAction::ClientCreated => "client_created",
            AuditAction::KeysRotated => "keys_rotated",
        }
    }
}

/// One audited attempt: every enrollment and authentication, successful or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    pub at_ms: u64,
    pub action: AuditAction,
    /// The client (id or name) on whose behalf, or the one that failed to log in.
    pub client: String,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub success: bool,
    /// Why it failed (`no_match_found`, `liveness_failed`, ...), or how it succeeded.
    pub reason: String,
    pub confidence: Option<f32>,
    pub processing_ms: f64,
}

/// One template to store with `upsert_many`.
pub struct NewTemplate {
    pub user_id: String,
    pub template: Vec<f32>,
    pub quality: f32,
    pub liveness_verified: bool,
}

impl std::fmt::Debug for NewTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTemplate")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// What a key rotation did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResealReport {
    /// Values re-sealed per tree.
    pub resealed: Vec<(&'static str, usize)>,
}

#[derive(Debug)]
pub struct Records {
    pub(super) db: sled::Db,
    pub(super) meta: sled::Tree,
    pub(super) enrollments: sled::Tree,
    pub(super) users: sled::Tree,
    feed: sled::Tree,
    pub(super) clients: sled::Tree,
    pub(super) api_keys: sled::Tree,
    audit: sled::Tree,
    pub(super) operators: sled::Tree,
    pub(super) keyring: Keyring,
    pub(super) user_key: [u8; 32],
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn get_u64(tree: &sled::Tree, key: &[u8]) -> Result<u64, sled::Error> {
    Ok(tree
        .get(key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

fn cursor_key(consumer: &str) -> Vec<u8> {
    [b"cursor/".as_slice(), consumer.as_bytes()].concat()
}

pub(super) fn aad(tree: &str, key: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(tree.len() + 1 + key.len());
    a.extend_from_slice(tree.as_bytes());
    a.push(b'/');
    a.extend_from_slice(key);
    a
}

impl Records {
    /// Opens (or creates) the database in `dir` with the master key; sled keeps at most
    /// `cache_bytes` of its pages in memory.
    pub fn open(
        dir: &Path,
        master: &SecretKey,
        source: &MasterKeySource,
        cache_bytes: u64,
    ) -> Result<Records, RecordError> {
        let db = open_db(&dir.join("records"), cache_bytes)?;
        let meta = db.open_tree("meta")?;
        let enrollments = db.open_tree("enrollments")?;
        let users = db.open_tree("users")?;
        let feed = db.open_tree("feed")?;
        let clients = db.open_tree("clients")?;
        let api_keys = db.open_tree("api_keys")?;
        let audit = db.open_tree("audit")?;
        let operators = db.open_tree("operators")?;
        let data_key = match meta.get(META_DATA_KEY)? {
            Some(wrapped) => keys::unwrap_data_key(master, source, &wrapped)?,
            None => {
                if !enrollments.is_empty() || !feed.is_empty() {
                    return Err(RecordError::MissingDataKey);
                }
                let dk = SecretKey::generate()?;
                meta.insert(META_DATA_KEY, keys::wrap_data_key(master, &dk)?)?;
                db.flush()?;
                dk
            }
        };
        let previous = match meta.get(META_DATA_KEY_PREV)? {
            Some(wrapped) => Some(keys::unwrap_data_key(master, source, &wrapped)?),
            None => None,
        };
        // The key of the HMAC slots that stand in for user ids, client names and API keys on
        // disk. It outlives data-key rotations (re-keying every slot would be a full rewrite);
        // stores created before it was kept separately derive it from their first data key.
        let lookup_key = match meta.get(META_LOOKUP_KEY)? {
            Some(wrapped) => keys::unwrap_key(master, source, keys::LOOKUP_WRAP_AAD, &wrapped)?,
            None => {
                let first = previous.as_ref().unwrap_or(&data_key);
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(first.as_bytes())
                    .expect("HMAC accepts any key length");
                mac.update(b"facegate/user-index/v1");
                let lk = SecretKey::from_bytes(mac.finalize().into_bytes().into());
                meta.insert(
                    META_LOOKUP_KEY,
                    keys::wrap_key(master, keys::LOOKUP_WRAP_AAD, &lk)?,
                )?;
                db.flush()?;
                lk
            }
        };
        Ok(Records {
            db,
            meta,
            enrollments,
            users,
            feed,
            clients,
            api_keys,
            audit,
            operators,
            keyring: Keyring::new(data_key, previous),
            user_key: *lookup_key.as_bytes(),
        })
    }

    /// The lookup key for an identifier that must not appear in clear on disk:
    /// HMAC-SHA256 under a key derived from the data key, over NUL-separated parts.
    pub(super) fn slot(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.user_key)
            .expect("HMAC accepts any key length");
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(&[0]);
            }
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// A 256-bit secret for another purpose (e.g. signing API tokens), derived from the store's
    /// lookup key: it lives no longer on disk than the store does, and never in the config.
    pub fn derive_secret(&self, purpose: &str) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.slot(&[b"facegate/derived-secret/v1", purpose.as_bytes()]))
    }

    pub(super) fn user_slot(&self, client: &str, user_id: &str) -> [u8; 32] {
        self.slot(&[client.as_bytes(), user_id.as_bytes()])
    }

    pub(super) fn seal_enrollment(&self, e: &Enrollment) -> Result<Vec<u8>, RecordError> {
        let plain = zeroize::Zeroizing::new(postcard::to_stdvec(e).map_err(|err| {
            RecordError::Malformed {
                key: e.id.clone(),
                message: err.to_string(),
            }
        })?);
        Ok(self
            .keyring
            .seal(&aad("enrollments", e.id.as_bytes()), &plain)?)
    }

    fn open_enrollment(&self, key: &[u8], sealed: &[u8]) -> Result<Enrollment, RecordError> {
        let name = || String::from_utf8_lossy(key).into_owned();
        let plain = self
            .keyring
            .open(&aad("enrollments", key), sealed)
            .map_err(|source| RecordError::Sealed {
                key: format!("enrollment {}", name()),
                source,
            })?;
        postcard::from_bytes(&plain).map_err(|e| RecordError::Malformed {
            key: name(),
            message: e.to_string(),
        })
    }

    fn seal_change(&self, seq: u64, c: &Change) -> Result<Vec<u8>, RecordError> {
        let plain = postcard::to_stdvec(c).map_err(|e| RecordError::Malformed {
            key: format!("feed {seq}"),
            message: e.to_string(),
        })?;
        Ok(self
            .keyring
            .seal(&aad("feed", &seq.to_be_bytes()), &plain)?)
    }

    /// Inserts or replaces the enrollment of `(client, user_id)`; durable when it returns.
    /// Returns the stored enrollment and the label it replaced (if any). Callers serialize
    /// writes (`Store` holds its index write lock), so the read of the previous version and
    /// the transaction cannot interleave with another upsert of the same user.
    pub fn upsert(
        &self,
        client: &str,
        user_id: &str,
        template: Vec<f32>,
        quality: f32,
        liveness_verified: bool,
    ) -> Result<(Enrollment, Option<u64>), RecordError> {
        let mut done = self.upsert_many(
            client,
            vec![NewTemplate {
                user_id: user_id.to_owned(),
                template,
                quality,
                liveness_verified,
            }],
        )?;
        Ok(done.remove(0))
    }

    /// `upsert` for many users of one client in one transaction and one flush (bulk import,
    /// sync): all of them are durable when it returns, or none. A user id given twice keeps
    /// the last template.
    pub fn upsert_many(
        &self,
        client: &str,
        items: Vec<NewTemplate>,
    ) -> Result<Vec<(Enrollment, Option<u64>)>, RecordError> {
        let now = now_ms();
        let mut latest: std::collections::HashMap<[u8; 32], Enrollment> =
            std::collections::HashMap::new();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let slot = self.user_slot(client, &item.user_id);
            let previous = match latest.get(&slot) {
                Some(p) => Some(p.clone()),
                None => match self.users.get(slot)? {
                    Some(id) => match self.enrollments.get(&id)? {
                        Some(sealed) => Some(self.open_enrollment(&id, &sealed)?),
                        None => None,
                    },
                    None => None,
                },
            };
            let label = self.next(META_LABEL)?;
            let floor = previous
                .as_ref()
                .map_or(0, |p| p.version)
                .max(self.tombstone(&slot)?);
            let version = self.next_version(floor)?;
            let enrollment = Enrollment {
                id: previous
                    .as_ref()
                    .map(|p| p.id.clone())
                    .unwrap_or_else(new_id),
                label,
                client: client.to_owned(),
                user_id: item.user_id,
                template: item.template,
                quality: item.quality,
                liveness_verified: item.liveness_verified,
                created_ms: previous.as_ref().map_or(now, |p| p.created_ms),
                updated_ms: now,
                version,
            };
            latest.insert(slot, enrollment.clone());
            out.push((slot, enrollment, previous.map(|p| p.label)));
        }
        let sealed = out
            .iter()
            .map(|(_, e, _)| self.seal_enrollment(e))
            .collect::<Result<Vec<_>, _>>()?;
        let changes: Vec<Change> = out
            .iter()
            .map(|(_, e, _)| Change::EnrollmentUpserted {
                enrollment_id: e.id.clone(),
                client: client.to_owned(),
                user_id: e.user_id.clone(),
                version: e.version,
            })
            .collect();
        self.commit(&changes, true, &[], |e, u, _| {
            for ((slot, enrollment, _), sealed) in out.iter().zip(&sealed) {
                e.insert(enrollment.id.as_bytes(), sealed.clone())?;
                u.insert(slot.as_slice(), enrollment.id.as_bytes())?;
            }
            Ok(())
        })?;
        Ok(out
            .into_iter()
            .map(|(_, e, replaced)| (e, replaced))
            .collect())
    }

    /// Deletes an enrollment of `client`; durable when it returns. `None` if there is none.
    pub fn delete(
        &self,
        client: &str,
        enrollment_id: &str,
    ) -> Result<Option<Enrollment>, RecordError> {
        let Some(existing) = self.get(enrollment_id)? else {
            return Ok(None);
        };
        if existing.client != client {
            return Ok(None);
        }
        let slot = self.user_slot(client, &existing.user_id);
        let version = self.next_version(existing.version.max(self.tombstone(&slot)?))?;
        let change = Change::EnrollmentRevoked {
            enrollment_id: existing.id.clone(),
            client: client.to_owned(),
            user_id: existing.user_id.clone(),
            version,
        };
        let tomb = [(tomb_key(&slot), version.to_be_bytes().to_vec())];
        self.commit(std::slice::from_ref(&change), true, &tomb, |e, u, _| {
            e.remove(existing.id.as_bytes())?;
            u.remove(&slot)?;
            Ok(())
        })?;
        Ok(Some(existing))
    }

    /// Runs one transaction that appends `changes` to the feed with the next sequence numbers
    /// (and, for enrollment changes, bumps the enrollment epoch) and writes `meta_writes` along
    /// with `body`, then flushes to disk. `body` gets the enrollments, users and audit trees
    /// and the first sequence number; returns the last.
    pub(super) fn commit<F>(
        &self,
        changes: &[Change],
        bump_epoch: bool,
        meta_writes: &[(Vec<u8>, Vec<u8>)],
        body: F,
    ) -> Result<u64, RecordError>
    where
        F: Fn(
            &sled::transaction::TransactionalTree,
            &sled::transaction::TransactionalTree,
            (&sled::transaction::TransactionalTree, u64),
        ) -> Result<(), ConflictableTransactionError<RecordError>>,
    {
        let seq = (
            &self.enrollments,
            &self.users,
            &self.feed,
            &self.meta,
            &self.audit,
        )
            .transaction(|(e, u, f, m, a)| {
                let counter =
                    |key: &[u8]| -> Result<u64, sled::transaction::UnabortableTransactionError> {
                        Ok(m.get(key)?
                            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                            .map_or(0, u64::from_be_bytes))
                    };
                let first = counter(META_FEED_SEQ)? + 1;
                let mut seq = first;
                for change in changes {
                    let sealed = self
                        .seal_change(seq, change)
                        .map_err(ConflictableTransactionError::Abort)?;
                    f.insert(&seq.to_be_bytes(), sealed)?;
                    seq += 1;
                }
                let last = seq - 1;
                m.insert(META_FEED_SEQ, &last.to_be_bytes())?;
                if bump_epoch {
                    let epoch = counter(META_EPOCH)? + 1;
                    m.insert(META_EPOCH, &epoch.to_be_bytes())?;
                }
                for (k, v) in meta_writes {
                    m.insert(k.as_slice(), v.as_slice())?;
                }
                body(e, u, (a, first))?;
                Ok(last)
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => RecordError::Db(e),
            })?;
        self.db.flush()?;
        Ok(seq)
    }

    /// Appends an audit row (and its feed entry); durable when it returns. Returns the feed
    /// sequence number.
    pub fn audit(&self, row: &AuditRow) -> Result<u64, RecordError> {
        let plain = zeroize::Zeroizing::new(postcard::to_stdvec(row).map_err(|e| {
            RecordError::Malformed {
                key: "audit".into(),
                message: e.to_string(),
            }
        })?);
        let change = Change::Audit(row.clone());
        self.commit(
            std::slice::from_ref(&change),
            false,
            &[],
            |_, _, (a, seq)| {
                let key = audit_key(row.at_ms, seq);
                let sealed = self
                    .keyring
                    .seal(&aad("audit", &key), &plain)
                    .map_err(|e| ConflictableTransactionError::Abort(e.into()))?;
                a.insert(key.as_slice(), sealed)?;
                Ok(())
            },
        )
    }

    /// Appends a metrics snapshot to the feed for the hub.
    pub fn append_metrics(&self, at_ms: u64, json: String) -> Result<u64, RecordError> {
        self.commit(&[Change::Metrics { at_ms, json }], false, &[], |_, _, _| {
            Ok(())
        })
    }

    /// Audit rows with `from_ms <= at_ms < to_ms`, oldest first, at most `limit`.
    pub fn audit_between(
        &self,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<AuditRow>, RecordError> {
        let mut out = Vec::new();
        self.audit_each(from_ms, to_ms, limit, |row| out.push(row))?;
        Ok(out)
    }

    /// Calls `f` with each audit row with `from_ms <= at_ms < to_ms`, oldest first, at most
    /// `limit`, one at a time (no more than one row in memory); the number visited.
    pub fn audit_each(
        &self,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
        mut f: impl FnMut(AuditRow),
    ) -> Result<usize, RecordError> {
        let mut n = 0;
        for kv in self
            .audit
            .range(audit_key(from_ms, 0)..audit_key(to_ms, 0))
            .take(limit)
        {
            let (k, v) = kv?;
            let plain =
                self.keyring
                    .open(&aad("audit", &k), &v)
                    .map_err(|source| RecordError::Sealed {
                        key: "audit row".into(),
                        source,
                    })?;
            f(
                postcard::from_bytes(&plain).map_err(|e| RecordError::Malformed {
                    key: "audit row".into(),
                    message: e.to_string(),
                })?,
            );
            n += 1;
        }
        Ok(n)
    }

    pub fn audit_len(&self) -> usize {
        self.audit.len()
    }

    /// Starts (or, after an interrupted one, resumes) a data-key rotation: a new data key
    /// seals from now on, the old one stays for opening until `finish_rotation`; both, and the
    /// lookup key, are wrapped under `master` (which may itself be new). Durable on return.
    pub fn begin_rotation(&self, master: &SecretKey) -> Result<(), RecordError> {
        if !self.keyring.rotating() {
            let next = SecretKey::generate()?;
            let current = self.keyring.current();
            let mut batch = sled::Batch::default();
            batch.insert(META_DATA_KEY, keys::wrap_data_key(master, &next)?);
            batch.insert(META_DATA_KEY_PREV, keys::wrap_data_key(master, &current)?);
            self.rewrap_lookup(master, &mut batch)?;
            self.meta.apply_batch(batch)?;
            self.db.flush()?;
            self.keyring.begin_rotation(next);
        } else {
            // Resuming: the keys stay, only their wrapping follows the (maybe new) master.
            let mut batch = sled::Batch::default();
            batch.insert(
                META_DATA_KEY,
                keys::wrap_data_key(master, &self.keyring.current())?,
            );
            if let Some(prev) = self.keyring.previous() {
                batch.insert(META_DATA_KEY_PREV, keys::wrap_data_key(master, &prev)?);
            }
            self.rewrap_lookup(master, &mut batch)?;
            self.meta.apply_batch(batch)?;
            self.db.flush()?;
        }
        Ok(())
    }

    fn rewrap_lookup(
        &self,
        master: &SecretKey,
        batch: &mut sled::Batch,
    ) -> Result<(), RecordError> {
        let lookup = SecretKey::from_bytes(self.user_key);
        batch.insert(
            META_LOOKUP_KEY,
            keys::wrap_key(master, keys::LOOKUP_WRAP_AAD, &lookup)?,
        );
        Ok(())
    }

    /// Re-seals every value not yet sealed with the current data key. Concurrent writers are
    /// safe: each value is swapped only if unchanged since it was read (a changed one was
    /// written with the current key already). A value that opens with neither key is left
    /// as it is and reported by the readers that meet it.
    pub fn reseal_all(&self) -> Result<ResealReport, RecordError> {
        let mut report = ResealReport::default();
        for name in SEALED_TREES {
            let tree = self.db.open_tree(name)?;
            let mut n = 0;
            for kv in tree.iter() {
                let (k, v) = kv?;
                let associated = aad(name, &k);
                let Ok((plain, which)) = self.keyring.open_which(&associated, &v) else {
                    tracing::error!(
                        tree = name,
                        "a sealed value opens with no key: left as it is"
                    );
                    continue;
                };
                if which == 0 {
                    continue;
                }
                let fresh = self.keyring.seal(&associated, &plain)?;
                if tree.compare_and_swap(&k, Some(&v), Some(fresh))?.is_ok() {
                    n += 1;
                }
            }
            report.resealed.push((name, n));
        }
        self.db.flush()?;
        Ok(report)
    }

    /// Ends a rotation: the previous data key is forgotten, on disk and in memory.
    pub fn finish_rotation(&self) -> Result<(), RecordError> {
        self.meta.remove(META_DATA_KEY_PREV)?;
        self.db.flush()?;
        self.keyring.finish_rotation();
        Ok(())
    }

    pub fn rotating(&self) -> bool {
        self.keyring.rotating()
    }

    /// The version of the user's last deletion (0: none).
    pub(super) fn tombstone(&self, slot: &[u8; 32]) -> Result<u64, RecordError> {
        Ok(get_u64(&self.meta, &tomb_key(slot))?)
    }

    /// The next enrollment version: above `floor`, every version issued or seen here, and
    /// the wall clock (a hybrid logical clock; see `facegate_proto::next_version`).
    pub(super) fn next_version(&self, floor: u64) -> Result<u64, RecordError> {
        let now = now_ms();
        let v = self.meta.update_and_fetch(META_HLC, |old| {
            let last = old
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map_or(0, u64::from_be_bytes)
                .max(floor);
            Some(
                facegate_proto::next_version(last, now)
                    .to_be_bytes()
                    .to_vec(),
            )
        })?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(1, u64::from_be_bytes))
    }

    /// Records that a version was seen (applied from another node), so local versions
    /// issued later are above it.
    pub(super) fn observe_version(&self, seen: u64) -> Result<(), RecordError> {
        self.meta.update_and_fetch(META_HLC, |old| {
            let last = old
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map_or(0, u64::from_be_bytes);
            Some(last.max(seen).to_be_bytes().to_vec())
        })?;
        Ok(())
    }

    /// The last feed sequence number (0: empty feed).
    pub fn feed_seq(&self) -> Result<u64, RecordError> {
        Ok(get_u64(&self.meta, META_FEED_SEQ)?)
    }

    pub(super) fn enrollment_id_of(&self, slot: &[u8; 32]) -> Result<Option<String>, RecordError> {
        Ok(self
            .users
            .get(slot)?
            .map(|id| String::from_utf8_lossy(&id).into_owned()))
    }

    pub(super) fn next(&self, key: &[u8]) -> Result<u64, RecordError> {
        let v = self.meta.update_and_fetch(key, |old| {
            let n = old
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map_or(0, u64::from_be_bytes);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(1, u64::from_be_bytes))
    }

    pub fn get(&self, enrollment_id: &str) -> Result<Option<Enrollment>, RecordError> {
        match self.enrollments.get(enrollment_id.as_bytes())? {
            Some(sealed) => Ok(Some(
                self.open_enrollment(enrollment_id.as_bytes(), &sealed)?,
            )),
            None => Ok(None),
        }
    }

    pub fn get_by_user(
        &self,
        client: &str,
        user_id: &str,
    ) -> Result<Option<Enrollment>, RecordError> {
        match self.users.get(self.user_slot(client, user_id))? {
            Some(id) => self.get(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// Every enrollment, decrypted; a record that fails to open is reported, not skipped.
    pub fn iter(&self) -> impl Iterator<Item = Result<Enrollment, RecordError>> + '_ {
        self.enrollments.iter().map(move |kv| {
            let (k, v) = kv?;
            self.open_enrollment(&k, &v)
        })
    }

    pub fn len(&self) -> usize {
        self.enrollments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.enrollments.is_empty()
    }

    /// Bumped by every enrollment change: the vector index snapshot records the epoch it saw.
    pub fn epoch(&self) -> Result<u64, RecordError> {
        Ok(get_u64(&self.meta, META_EPOCH)?)
    }

    /// Feed entries with a sequence number above `after`, oldest first.
    pub fn feed_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Change)>, RecordError> {
        let mut out = Vec::new();
        for kv in self.feed.range((after + 1).to_be_bytes()..).take(limit) {
            let (k, v) = kv?;
            let seq = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| RecordError::Malformed {
                    key: "feed".into(),
                    message: "bad sequence key".into(),
                })?;
            let plain =
                self.keyring
                    .open(&aad("feed", &k), &v)
                    .map_err(|source| RecordError::Sealed {
                        key: format!("feed {seq}"),
                        source,
                    })?;
            let change = postcard::from_bytes(&plain).map_err(|e| RecordError::Malformed {
                key: format!("feed {seq}"),
                message: e.to_string(),
            })?;
            out.push((seq, change));
        }
        Ok(out)
    }

    /// The last feed sequence number `consumer` acknowledged (0 if none).
    pub fn cursor(&self, consumer: &str) -> Result<u64, RecordError> {
        Ok(get_u64(&self.meta, &cursor_key(consumer))?)
    }

    /// Records that `consumer` has durably handled the feed up to `seq`. A cursor never moves
    /// back, so a late or repeated acknowledgement cannot replay entries; flushed on return.
    pub fn ack(&self, consumer: &str, seq: u64) -> Result<u64, RecordError> {
        let v = self.meta.update_and_fetch(cursor_key(consumer), |old| {
            let old = old
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map_or(0, u64::from_be_bytes);
            Some(old.max(seq).to_be_bytes().to_vec())
        })?;
        self.db.flush()?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub fn flush(&self) -> Result<(), RecordError> {
        self.db.flush()?;
        Ok(())
    }
}

/// Opens the sled database. Its file lock is released only once sled's background flusher of
/// a previous open (in this process, or a process still exiting) has let go of it, so a busy
/// lock is retried for up to 3 s before it is reported as another process using the directory.
fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db, RecordError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut cleared = false;
    loop {
        match sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") =>
            {
                if std::time::Instant::now() >= deadline {
                    return Err(RecordError::InUse(path.display().to_string()));
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            // A SIGKILL while sled wrote a snapshot (`facegate_proto::sled_snapshots`;
            // `tests/store.rs::an_unfinished_sled_snapshot_does_not_stop_the_store`).
            Err(sled::Error::Corruption { .. }) if !cleared && clear_unfinished(path)? > 0 => {
                cleared = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn clear_unfinished(path: &Path) -> Result<usize, RecordError> {
    let removed =
        facegate_proto::sled_snapshots::remove_unfinished(path).map_err(sled::Error::Io)?;
    if removed > 0 {
        tracing::warn!(removed, "removed sled snapshots left unfinished by a crash");
    }
    Ok(removed)
}

pub(super) fn tomb_key(slot: &[u8; 32]) -> Vec<u8> {
    [META_TOMB, slot.as_slice()].concat()
}

/// Audit rows are keyed by time, then feed sequence, for date-range queries.
fn audit_key(at_ms: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&at_ms.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// A random token id (for JWT `jti`, session tokens).
pub fn new_token_id() -> String {
    new_id()
}

/// A random RFC 4122 version-4 UUID.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    // getrandom only fails on a broken OS; a time-derived id keeps the store usable then.
    if getrandom::fill(&mut b).is_err() {
        b[..8].copy_from_slice(&now_ms().to_be_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
