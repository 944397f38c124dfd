//! Host settings read from `wasi:config/store` (Spin variables on Spin).

use crate::bindings::wasi::config::store as config_store;
use crate::duration;
use crate::error::{Error, Result};
use crate::ids;
use crate::redact;
use crate::seal::SealingKey;

/// Lease TTL when neither the request nor the role sets one.
pub const DEFAULT_TTL: u64 = 3600;

/// Lease lifetime cap when the role sets none, as Vault's default system maximum (768h).
pub const MAX_TTL: u64 = 768 * 3600;

/// Wait for the start of each LiteLLM response. `/key/generate` writes to LiteLLM's
/// database, which takes well under a second when healthy.
pub const LITELLM_TIMEOUT: u64 = 30;

/// Largest accepted `litellm_timeout`. The grace period after which tidy deletes an
/// interrupted issuance's key grows with it, to 9 minutes at this value.
pub const MAX_LITELLM_TIMEOUT: u64 = 120;

/// Settings that shape lease ids, storage and TTL defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// First segment of every lease id, as a Vault mount path.
    pub mount: String,
    /// Name of the key-value bucket to open.
    pub bucket: String,
    /// Lease TTL in seconds when neither request nor role sets one.
    pub default_ttl: u64,
    /// Cap in seconds on any lease's lifetime.
    pub max_ttl: u64,
    /// Wait in seconds for the start of each LiteLLM response.
    pub litellm_timeout: u64,
    /// Key that stored master keys are encrypted with; `None` stores them in plaintext.
    pub sealing_key: Option<SealingKey>,
    /// The key before the last rotation, still accepted for opening sealed master keys.
    pub previous_sealing_key: Option<SealingKey>,
}

impl Settings {
    /// Reads the settings, applying defaults for the ones the host does not set.
    pub fn load() -> Result<Self> {
        let mount = read("mount")?.unwrap_or_else(|| "litellm".to_owned());
        validate_mount(&mount)?;
        let bucket = read("key_value_store")?.unwrap_or_else(|| "default".to_owned());
        let default_ttl = read_duration("default_ttl", DEFAULT_TTL)?;
        let max_ttl = read_duration("max_ttl", MAX_TTL)?;
        let litellm_timeout = read_duration("litellm_timeout", LITELLM_TIMEOUT)?;
        let sealing_key = read("encryption_key")?
            .map(|text| SealingKey::from_hex("encryption_key", &text))
            .transpose()?;
        let previous_sealing_key = read("previous_encryption_key")?
            .map(|text| SealingKey::from_hex("previous_encryption_key", &text))
            .transpose()?;
        if litellm_timeout > MAX_LITELLM_TIMEOUT {
            return Err(Error::invalid(format!(
                "host setting litellm_timeout ({litellm_timeout}s) exceeds {MAX_LITELLM_TIMEOUT}s; \
                 lower it"
            )));
        }

        if default_ttl > max_ttl {
            return Err(Error::invalid(format!(
                "host setting default_ttl ({default_ttl}s) exceeds max_ttl ({max_ttl}s); \
                 lower default_ttl or raise max_ttl"
            )));
        }
        Ok(Self {
            mount,
            bucket,
            default_ttl,
            max_ttl,
            litellm_timeout,
            sealing_key,
            previous_sealing_key,
        })
    }
}

/// The SHA-256 digest of the admin token of the HTTP API.
#[derive(Clone, Copy)]
pub struct AdminDigest(pub [u8; 32]);

/// Reads the admin token's digest from `admin_token` (the token itself) or
/// `admin_token_sha256` (its digest in hex, so the host need not keep the token). Returns
/// `None` when neither is set.
pub fn admin_digest() -> Result<Option<AdminDigest>> {
    let token = read("admin_token")?;
    let digest = read("admin_token_sha256")?;
    match (token, digest) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "host settings admin_token and admin_token_sha256 are both set; set only one",
        )),
        (Some(token), None) => Ok(Some(AdminDigest(ids::sha256_bytes(&token)))),
        (None, Some(hex)) => parse_digest(&hex).map(Some),
        (None, None) => Ok(None),
    }
}

fn parse_digest(text: &str) -> Result<AdminDigest> {
    let invalid = || {
        Error::invalid(
            "host setting admin_token_sha256 is invalid: it must be 64 hex digits, the SHA-256 \
             digest of the admin token (`printf %s \"$TOKEN\" | sha256sum`)",
        )
    };
    if text.len() != 64 || !text.is_ascii() {
        return Err(invalid());
    }
    let mut digest = [0u8; 32];
    for (index, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).map_err(|_| invalid())?;
    }
    Ok(AdminDigest(digest))
}

fn read(key: &str) -> Result<Option<String>> {
    let value = config_store::get(key).map_err(|error| {
        let detail = match error {
            config_store::Error::Upstream(message) | config_store::Error::Io(message) => message,
        };
        Error::storage(format!("reading host setting {key} failed: {detail}"))
    })?;
    // Secrets read from files often end in a newline, so values are trimmed.
    Ok(value
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty()))
}

fn read_duration(key: &str, default: u64) -> Result<u64> {
    let Some(text) = read(key)? else {
        return Ok(default);
    };
    let seconds = duration::parse_seconds(&format!("host setting {key}"), &text)?;
    if seconds == 0 {
        return Ok(default);
    }
    Ok(seconds)
}

/// First path segments that the API's own routes use (`/v1/sys/...`, `/v1/auth/...`).
const RESERVED_MOUNTS: [&str; 2] = ["sys", "auth"];

/// Checks that a mount is one or more path segments of letters, digits, `_` and `-`.
fn validate_mount(mount: &str) -> Result<()> {
    let valid_segment = |segment: &str| {
        !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let first = mount.split('/').next().unwrap_or_default();
    if RESERVED_MOUNTS.contains(&first) {
        return Err(Error::invalid(format!(
            "host setting mount is invalid: {mount:?} starts with {first:?}, which the API \
             uses for its own paths; choose another mount, such as litellm"
        )));
    }
    if mount.len() <= 64 && mount.split('/').all(valid_segment) {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "host setting mount is invalid: {:?}; use up to 64 letters, digits, '_' and '-', \
         with '/' between segments",
        redact::truncate(mount, 80)
    )))
}
