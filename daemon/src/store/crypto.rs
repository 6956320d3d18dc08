//! AES-256-GCM sealing of everything the store writes.
//!
//! Invariant: a sealed blob is `version (1) ‖ nonce (12) ‖ ciphertext ‖ tag (16)` with a fresh
//! random 96-bit nonce per seal and the caller's record key as associated data; `open` returns
//! the plaintext only if key, associated data and every byte match, else an error.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes a sealed blob adds to its plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("sealed data is too short or has an unknown format version")]
    Format,
    #[error("sealed data failed authentication (wrong key, moved to another record, or altered)")]
    Authentication,
    #[error("the operating system random generator failed: {0}")]
    Random(String),
}

/// A 256-bit AES-GCM key. Zeroed on drop; `Debug` never shows it.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn generate() -> Result<SecretKey, CryptoError> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(k.as_mut()).map_err(|e| CryptoError::Random(e.to_string()))?;
        Ok(SecretKey(k))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> SecretKey {
        SecretKey(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        // A 32-byte slice is always a valid AES-256 key.
        Aes256Gcm::new_from_slice(self.0.as_ref()).expect("key is 32 bytes")
    }

    /// Encrypts `plaintext`, binding `aad` (the record's key) to it.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| CryptoError::Random(e.to_string()))?;
        let ct = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Authentication)?;
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts a blob sealed with this key and the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < OVERHEAD || sealed[0] != VERSION {
            return Err(CryptoError::Format);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
        self.cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Authentication)
    }
}

/// The data keys a store can open with: the current one seals, every one opens. Holds one key,
/// except while `facegate keys rotate` re-seals records, when the previous key stays until
/// the last record is re-sealed, so readers never see a record they cannot open.
#[derive(Debug)]
pub struct Keyring {
    keys: std::sync::RwLock<Vec<SecretKey>>,
}

impl Keyring {
    pub fn new(current: SecretKey, previous: Option<SecretKey>) -> Keyring {
        Keyring {
            keys: std::sync::RwLock::new(std::iter::once(current).chain(previous).collect()),
        }
    }

    fn keys(&self) -> std::sync::RwLockReadGuard<'_, Vec<SecretKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn current(&self) -> SecretKey {
        self.keys()[0].clone()
    }

    pub fn previous(&self) -> Option<SecretKey> {
        self.keys().get(1).cloned()
    }

    /// Seals with the current key.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.keys()[0].seal(aad, plaintext)
    }

    /// Opens with whichever key sealed it.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.open_which(aad, sealed).map(|(plain, _)| plain)
    }

    /// Opens and says whether the current key (0) or the previous one (1) sealed it.
    pub fn open_which(
        &self,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, usize), CryptoError> {
        let keys = self.keys();
        let mut last = CryptoError::Authentication;
        for (i, k) in keys.iter().enumerate() {
            match k.open(aad, sealed) {
                Ok(plain) => return Ok((plain, i)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Makes `next` the sealing key, keeping the current one for opening.
    pub fn begin_rotation(&self, next: SecretKey) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.truncate(1);
        keys.insert(0, next);
    }

    /// Forgets every key but the current one.
    pub fn finish_rotation(&self) {
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .truncate(1);
    }

    pub fn rotating(&self) -> bool {
        self.keys().len() > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_tamper_is_detected() {
        let key = SecretKey::generate().unwrap();
        let sealed = key.seal(b"enrollment/42", b"template bytes").unwrap();
        assert_eq!(sealed.len(), OVERHEAD + 14);
        assert_eq!(
            key.open(b"enrollment/42", &sealed).unwrap().as_slice(),
            b"template bytes"
        );
        // Moved to another record.
        assert_eq!(
            key.open(b"enrollment/43", &sealed),
            Err(CryptoError::Authentication)
        );
        // Any single flipped bit, anywhere after the version byte.
        for i in 1..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert_eq!(
                key.open(b"enrollment/42", &bad),
                Err(CryptoError::Authentication),
                "byte {i}"
            );
        }
        // Wrong key, truncated, unknown version.
        let other = SecretKey::generate().unwrap();
        assert_eq!(
            other.open(b"enrollment/42", &sealed),
            Err(CryptoError::Authentication)
        );
        assert_eq!(
            key.open(b"enrollment/42", &sealed[..10]),
            Err(CryptoError::Format)
        );
        let mut v2 = sealed.clone();
        v2[0] = 2;
        assert_eq!(key.open(b"enrollment/42", &v2), Err(CryptoError::Format));
    }

    #[test]
    fn nonces_are_fresh_per_seal() {
        let key = SecretKey::generate().unwrap();
        let mut nonces = std::collections::HashSet::new();
        for _ in 0..1000 {
            let s = key.seal(b"k", b"same plaintext").unwrap();
            assert!(nonces.insert(s[1..13].to_vec()), "nonce reused");
        }
    }

    #[test]
    fn a_keyring_opens_with_either_key_during_rotation_and_seals_with_the_new_one() {
        let (old, new) = (
            SecretKey::generate().unwrap(),
            SecretKey::generate().unwrap(),
        );
        let ring = Keyring::new(old.clone(), None);
        let before = ring.seal(b"k", b"x").unwrap();
        ring.begin_rotation(new.clone());
        assert!(ring.rotating());
        assert_eq!(ring.open_which(b"k", &before).unwrap().1, 1);
        let after = ring.seal(b"k", b"y").unwrap();
        assert_eq!(new.open(b"k", &after).unwrap().as_slice(), b"y");
        ring.finish_rotation();
        assert_eq!(ring.open(b"k", &before), Err(CryptoError::Authentication));
        assert_eq!(ring.open_which(b"k", &after).unwrap().1, 0);
        let mut bad = after.clone();
        bad[20] ^= 1;
        assert_eq!(ring.open(b"k", &bad), Err(CryptoError::Authentication));
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = SecretKey::from_bytes([0xAB; 32]);
        assert_eq!(format!("{key:?}"), "SecretKey(..)");
    }
}
