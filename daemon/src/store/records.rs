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

use super::crypto::{CryptoError, SecretKey};
use super::keys::{self, KeyError, MasterKeySource};

const META_DATA_KEY: &[u8] = b"data_key";
const META_FEED_SEQ: &[u8] = b"feed_seq";
const META_EPOCH: &[u8] = b"enrollment_epoch";
const META_LABEL: &[u8] = b"next_label";

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
}

#[derive(Debug)]
pub struct Records {
    pub(super) db: sled::Db,
    meta: sled::Tree,
    enrollments: sled::Tree,
    users: sled::Tree,
    feed: sled::Tree,
    pub(super) clients: sled::Tree,
    pub(super) api_keys: sled::Tree,
    pub(super) data_key: SecretKey,
    pub(super) user_key: [u8; 32],
}

pub(super) fn now_ms() -> u64 {
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
    /// Opens (or creates) the database in `dir` with the master key.
    pub fn open(
        dir: &Path,
        master: &SecretKey,
        source: &MasterKeySource,
    ) -> Result<Records, RecordError> {
        let db = sled::Config::new()
            .path(dir.join("records"))
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let meta = db.open_tree("meta")?;
        let enrollments = db.open_tree("enrollments")?;
        let users = db.open_tree("users")?;
        let feed = db.open_tree("feed")?;
        let clients = db.open_tree("clients")?;
        let api_keys = db.open_tree("api_keys")?;
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
        // The user-id lookup key is derived from the data key: user ids never appear in clear.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(data_key.as_bytes())
            .expect("HMAC accepts any key length");
        mac.update(b"facegate/user-index/v1");
        let user_key: [u8; 32] = mac.finalize().into_bytes().into();
        Ok(Records {
            db,
            meta,
            enrollments,
            users,
            feed,
            clients,
            api_keys,
            data_key,
            user_key,
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

    fn user_slot(&self, client: &str, user_id: &str) -> [u8; 32] {
        self.slot(&[client.as_bytes(), user_id.as_bytes()])
    }

    fn seal_enrollment(&self, e: &Enrollment) -> Result<Vec<u8>, RecordError> {
        let plain = zeroize::Zeroizing::new(postcard::to_stdvec(e).map_err(|err| {
            RecordError::Malformed {
                key: e.id.clone(),
                message: err.to_string(),
            }
        })?);
        Ok(self
            .data_key
            .seal(&aad("enrollments", e.id.as_bytes()), &plain)?)
    }

    fn open_enrollment(&self, key: &[u8], sealed: &[u8]) -> Result<Enrollment, RecordError> {
        let name = || String::from_utf8_lossy(key).into_owned();
        let plain = self
            .data_key
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
            .data_key
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
        let slot = self.user_slot(client, user_id);
        let previous = match self.users.get(slot)? {
            Some(id) => match self.enrollments.get(&id)? {
                Some(sealed) => Some(self.open_enrollment(&id, &sealed)?),
                None => None,
            },
            None => None,
        };
        let now = now_ms();
        let label = self.next(META_LABEL)?;
        let enrollment = Enrollment {
            id: previous
                .as_ref()
                .map(|p| p.id.clone())
                .unwrap_or_else(new_id),
            label,
            client: client.to_owned(),
            user_id: user_id.to_owned(),
            template,
            quality,
            liveness_verified,
            created_ms: previous.as_ref().map_or(now, |p| p.created_ms),
            updated_ms: now,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
        };
        let sealed = self.seal_enrollment(&enrollment)?;
        let change = Change::EnrollmentUpserted {
            enrollment_id: enrollment.id.clone(),
            client: client.to_owned(),
            user_id: user_id.to_owned(),
            version: enrollment.version,
        };
        self.commit(&change, |e, u| {
            e.insert(enrollment.id.as_bytes(), sealed.clone())?;
            u.insert(&slot, enrollment.id.as_bytes())?;
            Ok(())
        })?;
        Ok((enrollment, previous.map(|p| p.label)))
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
        let change = Change::EnrollmentDeleted {
            enrollment_id: existing.id.clone(),
            client: client.to_owned(),
            user_id: existing.user_id.clone(),
        };
        self.commit(&change, |e, u| {
            e.remove(existing.id.as_bytes())?;
            u.remove(&slot)?;
            Ok(())
        })?;
        Ok(Some(existing))
    }

    /// Runs one enrollment change as a transaction that also appends `change` to the feed with
    /// the next sequence number and bumps the enrollment epoch, then flushes to disk.
    fn commit<F>(&self, change: &Change, body: F) -> Result<(), RecordError>
    where
        F: Fn(
            &sled::transaction::TransactionalTree,
            &sled::transaction::TransactionalTree,
        ) -> Result<(), ConflictableTransactionError<RecordError>>,
    {
        (&self.enrollments, &self.users, &self.feed, &self.meta)
            .transaction(|(e, u, f, m)| {
                let counter =
                    |key: &[u8]| -> Result<u64, sled::transaction::UnabortableTransactionError> {
                        Ok(m.get(key)?
                            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                            .map_or(0, u64::from_be_bytes))
                    };
                let seq = counter(META_FEED_SEQ)? + 1;
                let epoch = counter(META_EPOCH)? + 1;
                m.insert(META_FEED_SEQ, &seq.to_be_bytes())?;
                m.insert(META_EPOCH, &epoch.to_be_bytes())?;
                let sealed = self
                    .seal_change(seq, change)
                    .map_err(ConflictableTransactionError::Abort)?;
                f.insert(&seq.to_be_bytes(), sealed)?;
                body(e, u)
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => RecordError::Db(e),
            })?;
        self.db.flush()?;
        Ok(())
    }

    fn next(&self, key: &[u8]) -> Result<u64, RecordError> {
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
                self.data_key
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

    pub fn data_key(&self) -> &SecretKey {
        &self.data_key
    }

    pub fn flush(&self) -> Result<(), RecordError> {
        self.db.flush()?;
        Ok(())
    }
}

/// A random RFC 4122 version-4 UUID.
pub(super) fn new_id() -> String {
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
