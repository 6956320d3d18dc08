//! Operators: people administering the terminal, logging in with email + password.
//!
//! Invariant: the password exists only as an Argon2id hash inside a sealed record; the email
//! is sealed too and found through an HMAC slot, never stored in clear.

use serde::{Deserialize, Serialize};

use super::clients::ClientError;
use super::records::{RecordError, Records, aad, new_id, now_ms};
use super::secrets::{hash_secret, verify_secret};

/// Shortest accepted operator password.
pub const MIN_PASSWORD_CHARS: usize = 12;

#[derive(Clone, Serialize, Deserialize)]
pub struct Operator {
    pub operator_id: String,
    pub email: String,
    pub name: String,
    /// Argon2id PHC string of the password.
    password_hash: String,
    pub created_ms: u64,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("operator_id", &self.operator_id)
            .finish_non_exhaustive()
    }
}

fn normalise(email: &str) -> String {
    email.trim().to_lowercase()
}

impl Records {
    fn operator_slot(&self, email: &str) -> [u8; 32] {
        self.slot(&[b"operator-email", normalise(email).as_bytes()])
    }

    /// Creates an operator, or replaces the password and name of an existing one (same id).
    /// Durable when it returns.
    pub fn set_operator(
        &self,
        email: &str,
        name: &str,
        password: &str,
    ) -> Result<Operator, ClientError> {
        let email = normalise(email);
        let (local, domain) = email.split_once('@').unwrap_or(("", ""));
        if local.is_empty() || domain.is_empty() || email.len() > 254 || email.contains(' ') {
            return Err(ClientError::BadEmail);
        }
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(ClientError::WeakPassword(MIN_PASSWORD_CHARS));
        }
        let slot = self.operator_slot(&email);
        let existing = self.operator_at(&slot)?;
        let operator = Operator {
            operator_id: existing
                .as_ref()
                .map_or_else(new_id, |o| o.operator_id.clone()),
            email,
            name: name.to_owned(),
            password_hash: hash_secret(password.as_bytes())?,
            created_ms: existing.as_ref().map_or_else(now_ms, |o| o.created_ms),
        };
        let plain = zeroize::Zeroizing::new(
            postcard::to_stdvec(&operator).map_err(|e| ClientError::Hash(e.to_string()))?,
        );
        let sealed = self
            .keyring
            .seal(&aad("operators", &slot), &plain)
            .map_err(RecordError::from)?;
        self.operators
            .insert(slot, sealed)
            .map_err(RecordError::from)?;
        self.flush()?;
        Ok(operator)
    }

    fn operator_at(&self, slot: &[u8; 32]) -> Result<Option<Operator>, RecordError> {
        let Some(sealed) = self.operators.get(slot)? else {
            return Ok(None);
        };
        let plain = self
            .keyring
            .open(&aad("operators", slot), &sealed)
            .map_err(|source| RecordError::Sealed {
                key: "an operator".to_owned(),
                source,
            })?;
        postcard::from_bytes(&plain)
            .map(Some)
            .map_err(|e| RecordError::Malformed {
                key: "an operator".to_owned(),
                message: e.to_string(),
            })
    }

    pub fn operator(&self, email: &str) -> Result<Option<Operator>, RecordError> {
        self.operator_at(&self.operator_slot(email))
    }

    /// The operator with this email, if the password matches (Argon2id). An unknown email
    /// costs the same hash as a wrong password, so timing does not tell which emails exist.
    pub fn authenticate_operator(
        &self,
        email: &str,
        password: &str,
    ) -> Result<Option<Operator>, RecordError> {
        match self.operator(email)? {
            Some(o) => Ok(verify_secret(password.as_bytes(), &o.password_hash).then_some(o)),
            None => {
                let _ = verify_secret(password.as_bytes(), dummy_hash());
                Ok(None)
            }
        }
    }

    pub fn operators_len(&self) -> usize {
        self.operators.len()
    }
}

/// A valid Argon2id hash of a random password: the work done for unknown emails.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut pw = [0u8; 16];
        let _ = getrandom::fill(&mut pw);
        hash_secret(&pw).unwrap_or_default()
    })
}
