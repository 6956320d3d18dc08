//! `encrypted_data` of completion messages: a JSON summary of the result sealed for the client
//! that ran the session. AES-256-GCM with key SHA-256(api_secret) by default (base64 of
//! nonce || ciphertext || tag); per client, the reference's AES-256-CBC with key
//! SHA-256(api_key) (base64 of IV || ciphertext, PKCS7).
//!
//! Invariant: the payload carries ids, scores and times, never a template or an image.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use cbc::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use serde_json::{Value, json};

use crate::store::clients::{Client, PayloadAlgorithm};

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(b)
}

/// Seals `plain` for `client` with its algorithm.
pub fn seal(client: &Client, plain: &[u8]) -> anyhow::Result<Value> {
    let key = client.payload_key();
    let bytes = match client.payload_algorithm {
        PayloadAlgorithm::Aes256Gcm => {
            let cipher = Aes256Gcm::new_from_slice(key.as_ref())
                .map_err(|_| anyhow::anyhow!("AES-256-GCM key length"))?;
            let nonce = random::<12>()?;
            let ct = cipher
                .encrypt(&Nonce::from(nonce), plain)
                .map_err(|_| anyhow::anyhow!("AES-256-GCM sealing failed"))?;
            [nonce.as_slice(), &ct].concat()
        }
        PayloadAlgorithm::Aes256Cbc => {
            let iv = random::<16>()?;
            let ct = cbc::Encryptor::<aes::Aes256>::new_from_slices(key.as_ref(), &iv)
                .map_err(|_| anyhow::anyhow!("AES-256-CBC key length"))?
                .encrypt_padded_vec::<Pkcs7>(plain);
            [iv.as_slice(), &ct].concat()
        }
    };
    Ok(json!({
        "encrypted_payload": base64::engine::general_purpose::STANDARD.encode(bytes),
        "algorithm": client.payload_algorithm.as_str(),
    }))
}

/// The summary sealed into a successful completion: what the reference's clients read back
/// (`id`, `timestamp`) and the result's ids and scores.
pub fn summary(result: &Value, token: &str) -> Option<Value> {
    if result["session_status"] != "completed" || result["success"] == false {
        return None;
    }
    let id = result
        .get("enrollment_id")
        .or_else(|| result.get("matched_enrollment_id"))?
        .clone();
    Some(json!({
        "id": id,
        "user_id": result["user_id"],
        "session_token": token,
        "authenticated": result.get("authenticated"),
        "confidence": result.get("confidence"),
        "liveness_verified": result.get("liveness_verified").or_else(|| result.get("liveness_passed")),
        "timestamp": super::error::now_rfc3339(),
    }))
}
