//! Encryption at rest of stored master keys with ChaCha20-Poly1305, keyed by the host's
//! `encryption_key` setting.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};

use crate::bindings::wasi::random::random;
use crate::error::{Error, Result};
use crate::ids;

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;

/// The 256-bit key stored master keys are encrypted with. Its `Debug` output is redacted.
#[derive(Clone)]
pub struct SealingKey([u8; KEY_BYTES]);

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey([redacted])")
    }
}

impl SealingKey {
    /// Parses 64 hex digits, such as `openssl rand -hex 32` prints.
    pub fn from_hex(setting: &str, text: &str) -> Result<Self> {
        let invalid = || {
            Error::invalid(format!(
                "host setting {setting} is invalid: it must be 64 hex digits (32 bytes); \
                 generate one with `openssl rand -hex 32`"
            ))
        };
        let text = text.trim();
        if text.len() != KEY_BYTES * 2 {
            return Err(invalid());
        }
        let mut key = [0u8; KEY_BYTES];
        for (index, byte) in key.iter_mut().enumerate() {
            let pair = text.get(index * 2..index * 2 + 2).ok_or_else(invalid)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
        }
        Ok(Self(key))
    }

    /// Returns a short id of the key, the first 16 hex digits of its SHA-256 digest, which
    /// identifies the key without revealing it.
    pub fn id(&self) -> String {
        use sha2::{Digest, Sha256};
        ids::hex(&Sha256::digest(self.0)[..8])
    }
}

/// A sealed secret: a random nonce and the ciphertext with its tag, both hex, and the id of
/// the key that sealed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sealed {
    /// [`SealingKey::id`] of the sealing key; absent in records written before key ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The 96-bit nonce, hex.
    pub nonce: String,
    /// Ciphertext followed by the 128-bit tag, hex.
    pub ciphertext: String,
}

/// Encrypts `secret`, binding it to `context` (authenticated, not encrypted), so that a
/// sealed value copied to another record fails to open.
pub fn seal(key: &SealingKey, secret: &str, context: &str) -> Result<Sealed> {
    let nonce_bytes = random::get_random_bytes(NONCE_BYTES as u64);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
    let payload = Payload {
        msg: secret.as_bytes(),
        aad: context.as_bytes(),
    };
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce_bytes), payload)
        .map_err(|_| Error::storage("encrypting the master key failed"))?;
    Ok(Sealed {
        key_id: Some(key.id()),
        nonce: ids::hex(&nonce_bytes),
        ciphertext: ids::hex(&ciphertext),
    })
}

/// Decrypts a value sealed for `context`.
pub fn open(key: &SealingKey, sealed: &Sealed, context: &str) -> Result<String> {
    let failed = || {
        Error::storage(format!(
            "decrypting the stored master key for {context} failed; the encryption_key setting \
             must be the key it was written with"
        ))
    };
    let nonce = ids::unhex(&sealed.nonce)
        .filter(|nonce| nonce.len() == NONCE_BYTES)
        .ok_or_else(failed)?;
    let ciphertext = ids::unhex(&sealed.ciphertext).ok_or_else(failed)?;
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
    let payload = Payload {
        msg: &ciphertext,
        aad: context.as_bytes(),
    };
    let plaintext = cipher
        .decrypt(Nonce::from_slice(&nonce), payload)
        .map_err(|_| failed())?;
    String::from_utf8(plaintext).map_err(|_| failed())
}
