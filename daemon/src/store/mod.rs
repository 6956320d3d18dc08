//! The terminal's encrypted biometric store: sealed records in sled (`records`), the derived
//! per-client vector index in usearch (`index`), AES-256-GCM sealing (`crypto`) and key
//! management (`keys`).
//!
//! Invariant: nothing reaches disk unencrypted; records are the source of truth and are durable
//! before a write returns; the index is derived from them; store/ depends on no other module
//! of the crate.

pub mod clients;
pub mod crypto;
pub mod index;
pub mod keys;
pub mod operators;
pub mod records;
pub mod secrets;
pub mod sync;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Instant;

use serde::Deserialize;

use crypto::SecretKey;
use index::{Hit, IndexError, Quantization, VectorIndex};
use keys::{KeyError, KeySources, MasterKeySource};
use records::{Enrollment, RecordError, Records, ResealReport};

pub const SNAPSHOT_FILE: &str = "index.sealed";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Scalar type the vector index stores templates as.
    pub quantization: Quantization,
    /// HNSW search breadth: recall@1 against search latency (see `facegate bench index`).
    pub search_expansion: usize,
    /// sled's page cache for the records, MiB (sled's own default is 1 GiB, which a rebuild or
    /// a key rotation of a large store fills up to the store's size on disk).
    pub cache_mib: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the data directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("cannot write the index snapshot {path}: {source}")]
    Snapshot {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the index came up at open.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexOrigin {
    Snapshot,
    Rebuilt { reason: String },
}

#[derive(Debug)]
pub struct OpenReport {
    pub key_source: MasterKeySource,
    pub enrollments: usize,
    pub index: IndexOrigin,
    /// Records that failed to open at rebuild (altered or corrupt): refused, not indexed.
    pub refused: Vec<String>,
    pub open_ms: f64,
}

/// What `facegate keys rotate` did.
#[derive(Debug)]
pub struct RotationReport {
    /// The master key was replaced (and where the new one is), or kept.
    pub master: Option<PathBuf>,
    pub resealed: ResealReport,
    pub rotate_ms: f64,
}

#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    key_source: MasterKeySource,
    records: Records,
    /// Writers hold this lock across the record commit and the index update, so a snapshot
    /// taken under the read lock always pairs an index with the epoch it reflects.
    index: RwLock<VectorIndex>,
    /// The first storage failure (disk full, I/O error): sled refuses every write after one
    /// until the process restarts, so it is remembered and reported by health checks.
    failure: std::sync::Mutex<Option<String>>,
}

/// Whether `err` (or a cause of it) is a failure of the storage under the store: the disk
/// full, or an I/O error of the database. Its short description.
pub fn storage_failure(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        let io = e
            .downcast_ref::<sled::Error>()
            .and_then(|s| match s {
                sled::Error::Io(io) => Some(io),
                _ => None,
            })
            .or_else(|| e.downcast_ref::<std::io::Error>());
        if let Some(io) = io {
            let full = io.kind() == std::io::ErrorKind::StorageFull
                || io.raw_os_error() == Some(28)
                || io.to_string().contains("StorageFull");
            return Some(if full {
                "storage full"
            } else {
                "storage I/O error"
            });
        }
        if let Some(sled::Error::Corruption { .. }) = e.downcast_ref::<sled::Error>() {
            return Some("storage corruption");
        }
        cause = e.source();
    }
    None
}

/// A successful 1:N match or 1:1 verification.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub enrollment_id: String,
    pub user_id: String,
    pub similarity: f32,
}

impl Store {
    /// Remembers a storage failure seen by a caller (the first one is kept); returns its
    /// description when `err` is one.
    pub fn note_failure(&self, err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
        let what = storage_failure(err)?;
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            tracing::error!(error = %err, "the store's storage failed: writes are refused until restart");
            *f = Some(what.to_owned());
        }
        Some(what)
    }

    /// The storage failure since which writes fail, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Opens the store in `dir` (created 0700 if missing), resolving the master key from
    /// `sources`; the index comes from its snapshot, or is rebuilt from the records.
    pub fn open(
        dir: &Path,
        sources: &KeySources,
        cfg: &StoreConfig,
        dim: usize,
    ) -> Result<(Store, OpenReport), StoreError> {
        let started = Instant::now();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        let (records, key_source) = open_records(dir, sources, cfg.cache_mib << 20)?;
        let epoch = records.epoch()?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let mut refused = Vec::new();
        let restored = match std::fs::read(&snapshot_path) {
            Ok(bytes) => VectorIndex::from_sealed_snapshot(
                &bytes,
                records.keyring(),
                epoch,
                cfg.search_expansion,
            )
            .map_err(|e| e.to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no snapshot".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        let (index, origin) = match restored {
            Ok(index) if index.quantization() == cfg.quantization => (index, IndexOrigin::Snapshot),
            other => {
                let reason = match other {
                    Ok(_) => "quantization changed".to_owned(),
                    Err(reason) => reason,
                };
                let mut all = Vec::with_capacity(records.len());
                for r in records.iter() {
                    match r {
                        Ok(e) => all.push(e),
                        Err(e @ (RecordError::Sealed { .. } | RecordError::Malformed { .. })) => {
                            tracing::error!(error = %e, "enrollment record refused: not indexed, not served");
                            refused.push(e.to_string());
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                let read_ms = started.elapsed().as_secs_f64() * 1000.0;
                let index =
                    VectorIndex::rebuild(dim, cfg.quantization, cfg.search_expansion, all.iter())?;
                tracing::info!(
                    %reason,
                    enrollments = all.len(),
                    read_ms,
                    build_ms = started.elapsed().as_secs_f64() * 1000.0 - read_ms,
                    "vector index rebuilt from the records"
                );
                (index, IndexOrigin::Rebuilt { reason })
            }
        };
        let store = Store {
            dir: dir.to_owned(),
            key_source: key_source.clone(),
            records,
            index: RwLock::new(index),
            failure: std::sync::Mutex::new(None),
        };
        if matches!(origin, IndexOrigin::Rebuilt { .. }) {
            store.save_snapshot()?;
        }
        if store.records.rotating() {
            tracing::warn!("a key rotation was interrupted: finishing its re-sealing now");
            store.finish_rotation()?;
        }
        let report = OpenReport {
            key_source,
            enrollments: store.records.len(),
            index: origin,
            refused,
            open_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        Ok((store, report))
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, VectorIndex> {
        // A writer that panicked left the index as consistent as its last completed call.
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, VectorIndex> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Enrolls (or re-enrolls) `user_id` of `client`; durable when it returns.
    pub fn enroll(
        &self,
        client: &str,
        user_id: &str,
        template: &[f32],
        quality: f32,
        liveness_verified: bool,
    ) -> Result<Enrollment, StoreError> {
        let mut index = self.write_index();
        let (e, replaced) = self.records.upsert(
            client,
            user_id,
            template.to_vec(),
            quality,
            liveness_verified,
        )?;
        if let Some(old) = replaced {
            index.remove(client, old)?;
        }
        index.insert(&e)?;
        Ok(e)
    }

    /// Enrolls many users of one client in one durable transaction (bulk import, sync).
    pub fn enroll_many(
        &self,
        client: &str,
        items: Vec<records::NewTemplate>,
    ) -> Result<Vec<Enrollment>, StoreError> {
        let mut index = self.write_index();
        let done = self.records.upsert_many(client, items)?;
        let mut out = Vec::with_capacity(done.len());
        for (e, replaced) in done {
            if let Some(old) = replaced {
                index.remove(client, old)?;
            }
            index.insert(&e)?;
            out.push(e);
        }
        Ok(out)
    }

    /// Deletes from records and index; the change feed records the deletion.
    pub fn delete(
        &self,
        client: &str,
        enrollment_id: &str,
    ) -> Result<Option<Enrollment>, StoreError> {
        let mut index = self.write_index();
        let deleted = self.records.delete(client, enrollment_id)?;
        if let Some(e) = &deleted {
            index.remove(client, e.label)?;
        }
        Ok(deleted)
    }

    /// 1:N: the index proposes the `k` nearest enrollments of `client`; the best is confirmed
    /// against its record (opened and scored exactly in f32), so a record that fails to open
    /// is refused with an error, never served from the index alone.
    pub fn identify(
        &self,
        client: &str,
        query: &[f32],
        k: usize,
        threshold: f32,
    ) -> Result<(Option<Match>, Vec<Hit>), StoreError> {
        let hits = self.read_index().search(client, query, k)?;
        let Some(top) = hits.first() else {
            return Ok((None, hits));
        };
        let record = self.records.get(&top.enrollment_id)?;
        let best = record
            .filter(|e| e.client == client)
            .map(|e| Match {
                similarity: cosine(&e.template, query),
                enrollment_id: e.id,
                user_id: e.user_id,
            })
            .filter(|m| m.similarity >= threshold);
        Ok((best, hits))
    }

    /// The tenants (client names) that have enrollments.
    pub fn tenants(&self) -> Vec<String> {
        self.read_index().tenants()
    }

    /// 1:1: exact cosine against the user's stored template.
    pub fn verify(
        &self,
        client: &str,
        user_id: &str,
        query: &[f32],
    ) -> Result<Option<Match>, StoreError> {
        Ok(self.records.get_by_user(client, user_id)?.map(|e| Match {
            similarity: cosine(&e.template, query),
            enrollment_id: e.id,
            user_id: e.user_id,
        }))
    }

    pub fn get(&self, enrollment_id: &str) -> Result<Option<Enrollment>, StoreError> {
        Ok(self.records.get(enrollment_id)?)
    }

    /// Every enrollment (of one client, if given), oldest first.
    pub fn list(&self, client: Option<&str>) -> Result<Vec<Enrollment>, StoreError> {
        let mut all: Vec<Enrollment> = self
            .records
            .iter()
            .filter(|r| !matches!((r, client), (Ok(e), Some(c)) if e.client != c))
            .collect::<Result<_, _>>()?;
        all.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(all)
    }

    pub fn records(&self) -> &Records {
        &self.records
    }

    pub fn index_len(&self) -> usize {
        self.read_index().len()
    }

    /// Seals the index with its epoch and replaces the snapshot atomically.
    pub fn save_snapshot(&self) -> Result<(), StoreError> {
        let index = self.read_index();
        let sealed = index.to_sealed_snapshot(self.records.epoch()?, self.records.keyring())?;
        drop(index);
        let path = self.dir.join(SNAPSHOT_FILE);
        write_atomically(&path, &sealed).map_err(|source| StoreError::Snapshot { path, source })
    }

    /// Replaces the data key (every sealed value and the index snapshot are re-sealed with a
    /// new one) and re-wraps it under a master key: `new_master` if given; else a new one
    /// written to the data directory's key file when that is where the master key lives;
    /// else (systemd credential, environment) the same master key. Readers keep working
    /// throughout: until the last value is re-sealed both data keys open.
    pub fn rotate_keys(
        &self,
        sources: &KeySources,
        new_master: Option<SecretKey>,
    ) -> Result<RotationReport, StoreError> {
        let started = Instant::now();
        let key_file = match &self.key_source {
            MasterKeySource::KeyFile(p) | MasterKeySource::Created(p) => Some(p.clone()),
            MasterKeySource::Credential(_) | MasterKeySource::Environment => None,
        };
        let (master, replaced) = match (new_master, &key_file) {
            (Some(k), _) => (k, true),
            (None, Some(_)) => (SecretKey::generate().map_err(KeyError::from)?, true),
            (None, None) => (keys::resolve_master_key(&self.dir, sources)?.0, false),
        };
        // The new master key reaches disk before anything is wrapped under it, and replaces
        // the old key file only once everything is: `open_records` resolves a crash between.
        let pending = match (&key_file, replaced) {
            (Some(path), true) => {
                let pending = keys::pending_key_file(path);
                keys::write_new_key_file(&pending, &master)?;
                Some((pending, path.clone()))
            }
            _ => None,
        };
        self.records.begin_rotation(&master)?;
        if let Some((pending, path)) = &pending {
            keys::commit_key_file(pending, path)?;
        }
        let resealed = self.finish_rotation()?;
        Ok(RotationReport {
            master: replaced.then(|| key_file.unwrap_or_default()),
            resealed,
            rotate_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    fn finish_rotation(&self) -> Result<ResealReport, StoreError> {
        let report = self.records.reseal_all()?;
        self.save_snapshot()?;
        self.records.finish_rotation()?;
        Ok(report)
    }

    pub fn key_source(&self) -> &MasterKeySource {
        &self.key_source
    }

    /// Checks that the index holds exactly the records' enrollments (tests, `facegate doctor`).
    pub fn check_consistency(&self) -> Result<Vec<String>, StoreError> {
        let index = self.read_index();
        let mut problems = Vec::new();
        let all = self.list(None)?;
        for e in &all {
            let hits = index.search(&e.client, &e.template, 1)?;
            match hits.first() {
                Some(h) if h.enrollment_id == e.id => {}
                Some(h) => problems.push(format!("{} found {} first", e.id, h.enrollment_id)),
                None => problems.push(format!("{} missing from the index", e.id)),
            }
        }
        if index.len() != all.len() {
            problems.push(format!(
                "index holds {}, records {}",
                index.len(),
                all.len()
            ));
        }
        Ok(problems)
    }
}

/// Resolves the master key and opens the records. A pending key file (a rotation stopped
/// between writing its new master key and replacing the old key file) is settled here:
/// whichever of the two opens the data key wins, and the other is removed.
fn open_records(
    dir: &Path,
    sources: &KeySources,
    cache_bytes: u64,
) -> Result<(Records, MasterKeySource), StoreError> {
    let (master, source) = keys::resolve_master_key(dir, sources)?;
    let pending = match &source {
        MasterKeySource::KeyFile(p) => Some((keys::pending_key_file(p), p.clone())),
        _ => None,
    }
    .filter(|(pending, _)| pending.exists());
    match (Records::open(dir, &master, &source, cache_bytes), pending) {
        (Ok(records), Some((pending, _))) => {
            tracing::warn!(path = %pending.display(), "a key rotation stopped before using its new master key: removed it");
            std::fs::remove_file(&pending).map_err(|source| StoreError::Dir {
                path: pending.clone(),
                source,
            })?;
            Ok((records, source))
        }
        (Ok(records), None) => Ok((records, source)),
        (Err(RecordError::Key(KeyError::WrongMasterKey { .. })), Some((pending, path))) => {
            let next = keys::read_master_key_file(&pending)?;
            let records = Records::open(
                dir,
                &next,
                &MasterKeySource::KeyFile(pending.clone()),
                cache_bytes,
            )?;
            tracing::warn!(path = %path.display(), "a key rotation stopped after re-wrapping: its new master key now replaces the key file");
            keys::commit_key_file(&pending, &path)?;
            Ok((records, MasterKeySource::KeyFile(path)))
        }
        (Err(e), _) => Err(e.into()),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
