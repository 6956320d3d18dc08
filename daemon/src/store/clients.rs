//! Local API clients (door UIs, kiosks): tenants holding an API key and secret.
//!
//! Invariant: the API secret is shown once at creation and stored only as an Argon2id hash
//! inside a sealed record; API keys are looked up through an HMAC, never stored in clear.
//! The keys of a client's `encrypted_data` payloads (SHA-256 of its secret, and of its API
//! key for the reference's AES-256-CBC) are kept inside the same sealed record.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use zeroize::Zeroizing;

use super::records::{Change, RecordError, Records, aad, new_id, now_ms};
use super::secrets::{HashError, hash_secret, verify_secret};

/// How a client's `encrypted_data` payloads are sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PayloadAlgorithm {
    /// AES-256-GCM, key SHA-256(api_secret): nonce || ciphertext || tag.
    #[default]
    Aes256Gcm,
    /// The reference service's AES-256-CBC, key SHA-256(api_key): IV || ciphertext (PKCS7).
    Aes256Cbc,
}

impl PayloadAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadAlgorithm::Aes256Gcm => "AES-256-GCM",
            PayloadAlgorithm::Aes256Cbc => "AES-256-CBC",
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    /// Argon2id PHC string of the API secret.
    secret_hash: String,
    pub created_ms: u64,
    pub payload_algorithm: PayloadAlgorithm,
    /// SHA-256(api_secret) and SHA-256(api_key): the `encrypted_data` keys.
    secret_digest: [u8; 32],
    key_digest: [u8; 32],
}

impl Client {
    /// The key sealing this client's `encrypted_data` payloads with its algorithm.
    pub fn payload_key(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(match self.payload_algorithm {
            PayloadAlgorithm::Aes256Gcm => self.secret_digest,
            PayloadAlgorithm::Aes256Cbc => self.key_digest,
        })
    }
}

impl Client {
    /// A client received from another terminal of the site (`store::sync`).
    pub(super) fn from_parts(
        client_id: String,
        name: String,
        secret_hash: String,
        created_ms: u64,
        payload_algorithm: PayloadAlgorithm,
        secret_digest: [u8; 32],
        key_digest: [u8; 32],
    ) -> Result<Client, ClientError> {
        if !valid_name(&name) || client_id.is_empty() || client_id.len() > 64 {
            return Err(ClientError::BadName);
        }
        if !secret_hash.starts_with("$argon2id$") {
            return Err(ClientError::Hash("the secret hash is not Argon2id".into()));
        }
        Ok(Client {
            client_id,
            name,
            secret_hash,
            created_ms,
            payload_algorithm,
            secret_digest,
            key_digest,
        })
    }

    /// The client as it travels to the other terminals of the site.
    pub(super) fn to_record(&self, api_key: &str) -> facegate_proto::ClientRecord {
        facegate_proto::ClientRecord {
            client_id: self.client_id.clone(),
            name: self.name.clone(),
            api_key: api_key.to_owned(),
            secret_hash: self.secret_hash.clone(),
            secret_digest: hex::encode(self.secret_digest),
            key_digest: hex::encode(self.key_digest),
            payload_algorithm: self.payload_algorithm.as_str().to_owned(),
            created_ms: self.created_ms,
        }
    }
}

fn valid_name(name: &str) -> bool {
    let valid = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    !name.is_empty() && name.len() <= 64 && name.chars().all(valid)
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Returned once by [`Records::add_client`]: the only time the secret exists in clear.
pub struct NewClient {
    pub client: Client,
    pub api_key: String,
    pub api_secret: Zeroizing<String>,
}

impl std::fmt::Debug for NewClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewClient")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("a client named `{0}` already exists")]
    Exists(String),
    #[error("client names are 1-64 characters of letters, digits, '-', '_' or '.'")]
    BadName,
    #[error("an operator's email must look like name@domain")]
    BadEmail,
    #[error("an operator's password must have at least {0} characters")]
    WeakPassword(usize),
    #[error("hashing the API secret failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Secret(#[from] HashError),
    #[error(transparent)]
    Record(#[from] RecordError),
}

fn random_hex(bytes: usize) -> Result<String, ClientError> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| ClientError::Hash(e.to_string()))?;
    Ok(hex::encode(b))
}

impl Records {
    fn api_key_slot(&self, api_key: &str) -> [u8; 32] {
        self.slot(&[b"api-key", api_key.as_bytes()])
    }

    fn name_slot(&self, name: &str) -> [u8; 32] {
        self.slot(&[b"client-name", name.as_bytes()])
    }

    /// Creates a client with a fresh API key and secret; durable when it returns.
    pub fn add_client(
        &self,
        name: &str,
        payload_algorithm: PayloadAlgorithm,
    ) -> Result<NewClient, ClientError> {
        if !valid_name(name) {
            return Err(ClientError::BadName);
        }
        let api_key = format!("fgk_{}", random_hex(16)?);
        let api_secret = Zeroizing::new(format!("fgs_{}", random_hex(32)?));
        let client = Client {
            client_id: new_id(),
            name: name.to_owned(),
            secret_hash: hash_secret(api_secret.as_bytes())?,
            created_ms: now_ms(),
            payload_algorithm,
            secret_digest: Sha256::digest(api_secret.as_bytes()).into(),
            key_digest: Sha256::digest(api_key.as_bytes()).into(),
        };
        if self
            .api_keys
            .get(self.name_slot(name))
            .map_err(RecordError::from)?
            .is_some()
        {
            return Err(ClientError::Exists(name.to_owned()));
        }
        // First the feed entry that lets the sync agent take the client to the other terminals
        // of the site, then the client: a crash between the two leaves an entry for a client
        // that does not exist (skipped by sync; the caller was never told it exists), never a
        // client that is not synced.
        self.commit(
            &[Change::ClientCreated {
                client_id: client.client_id.clone(),
                api_key: api_key.clone(),
            }],
            false,
            &[],
            |_, _, _| Ok(()),
        )?;
        self.insert_client(&client, &api_key)?;
        Ok(NewClient {
            client,
            api_key,
            api_secret,
        })
    }

    /// Stores a client (sealed) with its name and API key lookups in one transaction; refused
    /// if the name is taken; durable when it returns. Local creation and site sync both use it.
    pub(super) fn insert_client(&self, client: &Client, api_key: &str) -> Result<(), ClientError> {
        let plain = Zeroizing::new(
            postcard::to_stdvec(client).map_err(|e| ClientError::Hash(e.to_string()))?,
        );
        let sealed = self
            .keyring
            .seal(&aad("clients", client.client_id.as_bytes()), &plain)
            .map_err(RecordError::from)?;
        let (name_slot, key_slot) = (self.name_slot(&client.name), self.api_key_slot(api_key));
        let result = (&self.clients, &self.api_keys).transaction(|(c, k)| {
            if k.get(name_slot)?.is_some() {
                return Err(ConflictableTransactionError::Abort(()));
            }
            c.insert(client.client_id.as_bytes(), sealed.clone())?;
            k.insert(&name_slot, client.client_id.as_bytes())?;
            k.insert(&key_slot, client.client_id.as_bytes())?;
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(())) => {
                return Err(ClientError::Exists(client.name.clone()));
            }
            Err(TransactionError::Storage(e)) => return Err(RecordError::Db(e).into()),
        }
        self.flush()?;
        Ok(())
    }

    pub fn client(&self, client_id: &str) -> Result<Option<Client>, RecordError> {
        let Some(sealed) = self.clients.get(client_id.as_bytes())? else {
            return Ok(None);
        };
        let plain = self
            .keyring
            .open(&aad("clients", client_id.as_bytes()), &sealed)
            .map_err(|source| RecordError::Sealed {
                key: format!("client {client_id}"),
                source,
            })?;
        postcard::from_bytes(&plain)
            .map(Some)
            .map_err(|e| RecordError::Malformed {
                key: format!("client {client_id}"),
                message: e.to_string(),
            })
    }

    /// The client holding this API key, if the secret matches (Argon2id, constant time).
    /// `secret = None` checks the key alone (the reference API accepts a bare API key).
    pub fn authenticate_client(
        &self,
        api_key: &str,
        secret: Option<&str>,
    ) -> Result<Option<Client>, RecordError> {
        let Some(id) = self.api_keys.get(self.api_key_slot(api_key))? else {
            return Ok(None);
        };
        let Some(client) = self.client(&String::from_utf8_lossy(&id))? else {
            return Ok(None);
        };
        let Some(secret) = secret else {
            return Ok(Some(client));
        };
        let ok = verify_secret(secret.as_bytes(), &client.secret_hash);
        Ok(ok.then_some(client))
    }

    /// Every client, oldest first.
    pub fn list_clients(&self) -> Result<Vec<Client>, RecordError> {
        let mut out = Vec::new();
        for kv in self.clients.iter() {
            let (id, _) = kv?;
            if let Some(c) = self.client(&String::from_utf8_lossy(&id))? {
                out.push(c);
            }
        }
        out.sort_by(|a, b| (a.created_ms, &a.name).cmp(&(b.created_ms, &b.name)));
        Ok(out)
    }

    /// The client with this name (the tenant key sessions and enrollments carry).
    pub fn client_by_name(&self, name: &str) -> Result<Option<Client>, RecordError> {
        let Some(id) = self.api_keys.get(self.name_slot(name))? else {
            return Ok(None);
        };
        self.client(&String::from_utf8_lossy(&id))
    }
}
