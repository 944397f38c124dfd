//! Random identifiers for leases and key aliases.

use crate::bindings::wasi::random::random;

/// Bytes of randomness in an id: 128 bits, so ids never collide in practice.
const ID_BYTES: u64 = 16;

/// Returns a new random id of 32 lowercase hex digits.
pub fn new_id() -> String {
    hex(&random::get_random_bytes(ID_BYTES))
}

/// Encodes `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

/// Decodes hex text; `None` when it is not an even number of hex digits.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok())
        .collect()
}

/// Returns the lowercase hex SHA-256 digest of `text`, the form LiteLLM stores keys in.
pub fn sha256_hex(text: &str) -> String {
    hex(&sha256_bytes(text))
}

/// Returns the SHA-256 digest of `text`.
pub fn sha256_bytes(text: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes()).into()
}
