//! Client tokens: created by the admin, scoped to named roles, with a TTL. The store keeps
//! only the token's SHA-256 hash, under `token/<hash>`.

use serde::{Deserialize, Serialize};

use crate::bindings::wasi::random::random;
use crate::clock;
use crate::due;
use crate::duration;
use crate::error::{Error, Result};
use crate::ids;
use crate::role;
use crate::settings::Settings;
use crate::store::Store;

/// TTL of a client token when the request sets none, in seconds, unless the engine's
/// maximum TTL is lower.
pub const DEFAULT_TOKEN_TTL: u64 = 24 * 3600;

/// Most roles one token may name.
const MAX_TOKEN_ROLES: usize = 1000;

/// Prefix of every client token, so that a leaked one is recognisable.
const TOKEN_PREFIX: &str = "lse.";

/// A stored client token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public handle of the token; leases record it as their owner.
    pub accessor: String,
    /// Roles whose credentials the token may request.
    pub roles: Vec<String>,
    /// Name shown in lookups.
    pub display_name: String,
    /// Creation time.
    pub created_at: u64,
    /// Expiry time.
    pub expires_at: u64,
}

/// Creates a token for `roles`; returns the token itself, which is never stored.
pub fn create(
    store: &Store,
    settings: &Settings,
    roles: Vec<String>,
    ttl: Option<&str>,
    display_name: Option<String>,
) -> Result<(String, TokenRecord)> {
    if roles.is_empty() {
        return Err(Error::invalid(
            "roles is missing or empty; name the roles whose credentials the token may request",
        ));
    }
    if roles.len() > MAX_TOKEN_ROLES {
        return Err(Error::invalid(format!(
            "roles has {} entries; the maximum is {MAX_TOKEN_ROLES}",
            roles.len()
        )));
    }
    for name in &roles {
        role::validate_name(name)?;
    }
    let mut roles = roles;
    roles.sort();
    roles.dedup();
    let requested = match ttl {
        Some(text) => duration::parse_seconds("ttl", text)?,
        None => 0,
    };
    let ttl = if requested > 0 {
        requested
    } else {
        DEFAULT_TOKEN_TTL.min(settings.max_ttl)
    };
    if ttl > settings.max_ttl {
        return Err(Error::invalid(format!(
            "ttl ({}) exceeds the engine's maximum TTL ({}); lower ttl",
            duration::format_seconds(ttl),
            duration::format_seconds(settings.max_ttl)
        )));
    }

    let token = format!("{TOKEN_PREFIX}{}", ids::hex(&random::get_random_bytes(32)));
    let now = clock::now();
    let record = TokenRecord {
        accessor: ids::new_id(),
        roles,
        display_name: display_name.unwrap_or_else(|| "token".to_owned()),
        created_at: now,
        expires_at: now + ttl,
    };
    let key = storage_key(&token);
    due::file(store, &key, record.expires_at)?;
    store.put(&key, &record)?;
    Ok((token, record))
}

/// Returns the live token record for `token`; an expired one is deleted and not returned.
pub fn lookup(store: &Store, token: &str) -> Result<Option<TokenRecord>> {
    let key = storage_key(token);
    let Some(record) = store.get::<TokenRecord>(&key)? else {
        return Ok(None);
    };
    if record.expires_at <= clock::now() {
        store.delete(&key)?;
        return Ok(None);
    }
    Ok(Some(record))
}

/// Deletes the token.
pub fn revoke(store: &Store, token: &str) -> Result<()> {
    store.delete(&storage_key(token))
}

/// Deletes the token record at `record_key` if it expired, for tidy; returns whether it
/// still waits for its expiry.
pub fn tidy_expired(store: &Store, record_key: &str, now: u64) -> Result<bool> {
    match store.get::<TokenRecord>(record_key)? {
        Some(record) if record.expires_at > now => Ok(true),
        Some(_) => {
            store.delete(record_key)?;
            Ok(false)
        }
        None => Ok(false),
    }
}

fn storage_key(token: &str) -> String {
    format!("token/{}", ids::sha256_hex(token))
}
