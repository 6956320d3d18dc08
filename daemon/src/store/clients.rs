//! Local API clients (door UIs, kiosks): tenants holding an API key and secret.
//!
//! Invariant: the API secret is shown once at creation and stored only as an Argon2id hash
//! inside a sealed record; API keys are looked up through an HMAC, never stored in clear.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use zeroize::Zeroizing;

use super::records::{RecordError, Records, aad, new_id, now_ms};

#[derive(Clone, Serialize, Deserialize)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    /// Argon2id PHC string of the API secret.
    secret_hash: String,
    pub created_ms: u64,
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
    #[error("hashing the API secret failed: {0}")]
    Hash(String),
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
    pub fn add_client(&self, name: &str) -> Result<NewClient, ClientError> {
        let valid = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if name.is_empty() || name.len() > 64 || !name.chars().all(valid) {
            return Err(ClientError::BadName);
        }
        let api_key = format!("fgk_{}", random_hex(16)?);
        let api_secret = Zeroizing::new(format!("fgs_{}", random_hex(32)?));
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| ClientError::Hash(e.to_string()))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| ClientError::Hash(e.to_string()))?;
        let secret_hash = Argon2::default()
            .hash_password(api_secret.as_bytes(), &salt)
            .map_err(|e| ClientError::Hash(e.to_string()))?
            .to_string();
        let client = Client {
            client_id: new_id(),
            name: name.to_owned(),
            secret_hash,
            created_ms: now_ms(),
        };
        let plain = Zeroizing::new(
            postcard::to_stdvec(&client).map_err(|e| ClientError::Hash(e.to_string()))?,
        );
        let sealed = self
            .keyring
            .seal(&aad("clients", client.client_id.as_bytes()), &plain)
            .map_err(RecordError::from)?;
        let (name_slot, key_slot) = (self.name_slot(name), self.api_key_slot(&api_key));
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
            Err(TransactionError::Abort(())) => return Err(ClientError::Exists(name.to_owned())),
            Err(TransactionError::Storage(e)) => return Err(RecordError::Db(e).into()),
        }
        self.flush()?;
        Ok(NewClient {
            client,
            api_key,
            api_secret,
        })
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
        let ok = PasswordHash::new(&client.secret_hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(secret.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        Ok(ok.then_some(client))
    }
}
