//! What site-wide sync does to the store: enrollments, deletions and clients applied from other
//! terminals (through the hub) under the conflict rule, and clients exported for them.
//!
//! Invariant: an applied change is idempotent and order-free: an enrollment replaces the user's
//! current one only if its (version, id) is newer and its version is above the user's
//! tombstone; a deletion removes an older enrollment and raises the tombstone, so erasure wins
//! over every older upsert wherever it arrives first. Applied changes write no feed entry (they
//! are not this terminal's to publish), but bump the enrollment epoch like local ones.

use facegate_proto::{ClientRecord, DeletionRecord, EnrollmentRecord};
use sha2::{Digest, Sha256};

use super::clients::{Client, ClientError, PayloadAlgorithm};
use super::records::{Enrollment, RecordError, Records, now_ms, tomb_key};
use super::{Store, StoreError};

/// What applying a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The store changed.
    Changed,
    /// Nothing to do: already here, or superseded by a newer version or a tombstone.
    Stale,
    /// Never applicable here (an enrollment id that names another person on this terminal):
    /// refused for good, with the reason.
    Conflict(String),
}

impl Records {
    /// Applies an enrollment from another node. Returns the stored enrollment and the label
    /// of the one it replaced, or `None` when stale.
    /// `Ok(Err(reason))` when it can never apply here.
    #[allow(clippy::type_complexity)]
    fn apply_enrollment(
        &self,
        rec: &EnrollmentRecord,
    ) -> Result<Result<Option<(Enrollment, Option<u64>)>, String>, RecordError> {
        let slot = self.user_slot(&rec.client, &rec.user_id);
        self.observe_version(rec.version)?;
        if rec.version <= self.tombstone(&slot)? {
            return Ok(Ok(None));
        }
        let existing = match self.enrollment_id_of(&slot)? {
            Some(id) => self.get(&id)?,
            None => None,
        };
        if let Some(p) = &existing
            && !facegate_proto::newer((rec.version, &rec.enrollment_id), (p.version, &p.id))
        {
            return Ok(Ok(None));
        }
        if rec.template.iter().any(|v| !v.is_finite()) {
            return Ok(Err("the template is not finite".into()));
        }
        // An enrollment id names one user: a record of that id for another user is refused.
        if let Some(other) = self.get(&rec.enrollment_id)?
            && (other.client != rec.client || other.user_id != rec.user_id)
        {
            return Ok(Err(format!(
                "enrollment {} belongs to another person here",
                rec.enrollment_id
            )));
        }
        let e = Enrollment {
            id: rec.enrollment_id.clone(),
            label: self.next(super::records::META_LABEL)?,
            client: rec.client.clone(),
            user_id: rec.user_id.clone(),
            template: rec.template.clone(),
            quality: rec.quality,
            liveness_verified: rec.liveness_verified,
            created_ms: rec.created_ms,
            updated_ms: now_ms(),
            version: rec.version,
        };
        let sealed = self.seal_enrollment(&e)?;
        let old_id = existing.as_ref().map(|p| p.id.clone());
        self.commit(&[], true, &[], |et, u, _| {
            if let Some(old) = &old_id
                && *old != e.id
            {
                et.remove(old.as_bytes())?;
            }
            et.insert(e.id.as_bytes(), sealed.clone())?;
            u.insert(slot.as_slice(), e.id.as_bytes())?;
            Ok(())
        })?;
        Ok(Ok(Some((e, existing.map(|p| p.label)))))
    }

    /// Applies a deletion from another node: removes the user's enrollment if it is older and
    /// raises the tombstone. Returns the removed enrollment's label, `Ok(None)` when stale.
    fn apply_deletion(&self, rec: &DeletionRecord) -> Result<Option<Option<u64>>, RecordError> {
        let slot = self.user_slot(&rec.client, &rec.user_id);
        self.observe_version(rec.version)?;
        let tomb = self.tombstone(&slot)?;
        let existing = match self.enrollment_id_of(&slot)? {
            Some(id) => self.get(&id)?,
            None => None,
        };
        let remove = existing
            .as_ref()
            .filter(|p| p.version < rec.version)
            .cloned();
        if remove.is_none() && rec.version <= tomb {
            return Ok(None);
        }
        let writes = [(
            tomb_key(&slot),
            tomb.max(rec.version).to_be_bytes().to_vec(),
        )];
        self.commit(&[], remove.is_some(), &writes, |et, u, _| {
            if let Some(p) = &remove {
                et.remove(p.id.as_bytes())?;
                u.remove(slot.as_slice())?;
            }
            Ok(())
        })?;
        Ok(Some(remove.map(|p| p.label)))
    }

    /// Stores a client created elsewhere in the site (same id, key and secret hash). A client
    /// already here is left as it is; a different client with the same name is refused.
    pub fn apply_client(&self, rec: &ClientRecord) -> Result<Applied, ClientError> {
        if self.client(&rec.client_id)?.is_some() {
            return Ok(Applied::Stale);
        }
        let digest = |h: &str| -> Result<[u8; 32], ClientError> {
            let mut d = [0u8; 32];
            hex::decode_to_slice(h, &mut d).map_err(|e| ClientError::Hash(e.to_string()))?;
            Ok(d)
        };
        let algorithm = match rec.payload_algorithm.as_str() {
            "AES-256-CBC" => PayloadAlgorithm::Aes256Cbc,
            _ => PayloadAlgorithm::Aes256Gcm,
        };
        if <[u8; 32]>::from(Sha256::digest(rec.api_key.as_bytes())) != digest(&rec.key_digest)? {
            return Err(ClientError::Hash(
                "the key digest does not match the key".into(),
            ));
        }
        let client = Client::from_parts(
            rec.client_id.clone(),
            rec.name.clone(),
            rec.secret_hash.clone(),
            rec.created_ms,
            algorithm,
            digest(&rec.secret_digest)?,
            digest(&rec.key_digest)?,
        )?;
        self.insert_client(&client, &rec.api_key)?;
        Ok(Applied::Changed)
    }

    /// A client as it travels to the other terminals of the site (`api_key` from the feed).
    pub fn export_client(
        &self,
        client_id: &str,
        api_key: &str,
    ) -> Result<Option<ClientRecord>, RecordError> {
        Ok(self.client(client_id)?.map(|c| c.to_record(api_key)))
    }
}

impl Store {
    /// Applies an enrollment from another node to the records and the index.
    pub fn apply_enrollment(&self, rec: &EnrollmentRecord) -> Result<Applied, StoreError> {
        let mut index = self.write_index();
        if rec.template.len() != index.dim() {
            return Ok(Applied::Conflict(format!(
                "the template has {} dimensions, this terminal's {}",
                rec.template.len(),
                index.dim()
            )));
        }
        match self.records.apply_enrollment(rec)? {
            Err(why) => Ok(Applied::Conflict(why)),
            Ok(None) => Ok(Applied::Stale),
            Ok(Some((e, replaced))) => {
                if let Some(old) = replaced {
                    index.remove(&e.client, old)?;
                }
                index.insert(&e)?;
                Ok(Applied::Changed)
            }
        }
    }

    /// Applies a deletion from another node to the records and the index.
    pub fn apply_deletion(&self, rec: &DeletionRecord) -> Result<Applied, StoreError> {
        let mut index = self.write_index();
        match self.records.apply_deletion(rec)? {
            None => Ok(Applied::Stale),
            Some(removed) => {
                if let Some(label) = removed {
                    index.remove(&rec.client, label)?;
                }
                Ok(Applied::Changed)
            }
        }
    }
}
