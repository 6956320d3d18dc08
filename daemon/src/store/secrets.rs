//! Argon2id hashing of secrets (API secrets, operator passwords): the one place that knows the
//! parameters, used by `clients` and `operators`.
//!
//! Invariant: a secret leaves this module only as an Argon2id PHC string (random 16-byte salt,
//! the crate's default parameters); verification never panics on a malformed hash (it fails).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Hashing failed (no randomness, or the hasher refused the input).
#[derive(Debug, thiserror::Error)]
#[error("hashing the secret failed: {0}")]
pub struct HashError(String);

/// The Argon2id PHC string of `secret` under a fresh random salt.
pub(super) fn hash_secret(secret: &[u8]) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| HashError(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
    Ok(Argon2::default()
        .hash_password(secret, &salt)
        .map_err(|e| HashError(e.to_string()))?
        .to_string())
}

/// Whether `secret` matches the PHC string `phc` (false for a malformed one).
pub(super) fn verify_secret(secret: &[u8], phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(secret, &h).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_secret_only() {
        let h = hash_secret(b"a long operator password").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_secret(b"a long operator password", &h));
        assert!(!verify_secret(b"another password", &h));
        assert!(!verify_secret(
            b"a long operator password",
            "not a phc string"
        ));
        assert_ne!(
            h,
            hash_secret(b"a long operator password").unwrap(),
            "salted"
        );
    }
}
