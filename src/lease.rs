//! Leases: what renewal and revocation need to manage a minted key, stored under
//! `lease/<role>/<id>` without the plaintext key.

use serde::{Deserialize, Serialize};

use crate::bindings::exports::litellm_secrets::engine::types::{Lease, Renewal};
use crate::clock;
use crate::config;
use crate::due;
use crate::duration;
use crate::error::{Error, Result};
use crate::litellm::Deletion;
use crate::log;
use crate::redact;
use crate::role;
use crate::settings::Settings;
use crate::store::{Store, Update};

/// Extra lifetime given to a key in LiteLLM beyond its lease, in seconds, so that clock
/// skew never ends a key before its lease. Tidy deletes the key when the lease expires.
pub const KEY_EXPIRY_BUFFER_SECONDS: u64 = 60;

/// Failed revocations after which a lease is marked irrevocable.
pub const IRREVOCABLE_AFTER_ATTEMPTS: u32 = 6;

/// Maximum pause between tidy's revocation retries, in seconds.
const MAX_RETRY_SECONDS: u64 = 3600;

/// A stored lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Name of the role the key was issued for.
    pub role: String,
    /// Random id, the last segment of the lease id.
    pub id: String,
    /// Lowercase hex SHA-256 of the key, LiteLLM's handle for it.
    pub token_hash: String,
    /// The key's alias in LiteLLM.
    pub key_alias: String,
    /// Base URL of the LiteLLM proxy that minted the key.
    pub litellm_url: String,
    /// Issue time.
    pub issued_at: u64,
    /// Time of the last renewal.
    pub last_renewed_at: Option<u64>,
    /// Expiry time.
    pub expires_at: u64,
    /// Latest expiry a renewal may set: issue time plus max TTL.
    pub max_expires_at: u64,
    /// TTL in seconds given at issue; renewals fall back to it when the role is gone.
    pub ttl: u64,
    /// Failed revocation attempts.
    pub revoke_attempts: u32,
    /// Set after [`IRREVOCABLE_AFTER_ATTEMPTS`] failed revocations.
    pub irrevocable: bool,
    /// Error of the last failed revocation.
    pub last_revoke_error: Option<String>,
}

impl LeaseRecord {
    /// Storage key of this lease.
    pub fn storage_key(&self) -> String {
        storage_key(&self.role, &self.id)
    }
}

/// Returns the storage key of lease `id` of `role`.
pub fn storage_key(role: &str, id: &str) -> String {
    format!("lease/{role}/{id}")
}

/// Returns the public lease id of lease `id` of `role`.
pub fn lease_id(settings: &Settings, role: &str, id: &str) -> String {
    format!("{}/creds/{role}/{id}", settings.mount)
}

/// Splits a lease id `<mount>/creds/<role>/<id>` into role and id.
fn parse_lease_id<'a>(settings: &Settings, lease_id: &'a str) -> Result<(&'a str, &'a str)> {
    let invalid = || {
        Error::invalid(format!(
            "lease_id is invalid: {:?}; lease ids look like {}/creds/<role>/<id>",
            redact::truncate(lease_id, 200),
            settings.mount
        ))
    };
    let rest = lease_id
        .strip_prefix(settings.mount.as_str())
        .and_then(|rest| rest.strip_prefix("/creds/"))
        .ok_or_else(invalid)?;
    let (role_name, id) = rest.split_once('/').ok_or_else(invalid)?;
    let id_valid = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if !id_valid || role::validate_name(role_name).is_err() {
        return Err(invalid());
    }
    Ok((role_name, id))
}

fn load(store: &Store, settings: &Settings, lease_id: &str) -> Result<LeaseRecord> {
    let (role_name, id) = parse_lease_id(settings, lease_id)?;
    store
        .get(&storage_key(role_name, id))?
        .ok_or_else(|| Error::not_found(format!("lease {lease_id} not found")))
}

/// Returns the lease `lease_id`.
pub fn lookup(store: &Store, settings: &Settings, lease_id: &str) -> Result<Lease> {
    let record = load(store, settings, lease_id)?;
    Ok(to_lease(settings, &record, clock::now()))
}

/// Returns the ids of all leases whose id starts with `prefix`, sorted.
pub fn list(store: &Store, settings: &Settings, prefix: &str) -> Result<Vec<String>> {
    let mut ids: Vec<String> = store
        .keys_with_prefix("lease/")?
        .iter()
        .filter_map(|key| {
            let (role_name, id) = key.strip_prefix("lease/")?.split_once('/')?;
            Some(lease_id(settings, role_name, id))
        })
        .filter(|id| id.starts_with(prefix))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Extends a lease and the key's expiry in LiteLLM.
pub fn renew(
    store: &Store,
    settings: &Settings,
    lease_id: &str,
    increment: Option<&str>,
) -> Result<Renewal> {
    let record = load(store, settings, lease_id)?;
    let now = clock::now();
    if now >= record.expires_at {
        return Err(Error::invalid(format!(
            "lease {lease_id} expired at {} (Unix time); request new credentials",
            record.expires_at
        )));
    }
    if now >= record.max_expires_at {
        return Err(Error::invalid(format!(
            "lease {lease_id} reached its max TTL; request new credentials"
        )));
    }

    let requested = match increment {
        Some(text) => duration::parse_seconds("increment", text)?,
        None => 0,
    };
    let increment = if requested > 0 {
        requested
    } else {
        default_increment(store, settings, &record)?
    };
    let mut warnings = Vec::new();
    let mut expires_at = now.saturating_add(increment);
    if expires_at > record.max_expires_at {
        expires_at = record.max_expires_at;
        warnings.push(format!(
            "TTL of {} exceeded the lease's max TTL; the lease expires in {} instead",
            duration::format_seconds(increment),
            duration::format_seconds(expires_at - now)
        ));
    }

    // LiteLLM first: if it rejects the update, the lease keeps its old expiry and still
    // matches the key. The new expiry is filed before the lease is written, so tidy always
    // finds it.
    config::client_for(store, settings, &record.litellm_url)?.set_expiry(
        &record.token_hash,
        expires_at - now + KEY_EXPIRY_BUFFER_SECONDS,
    )?;
    due::file(store, &record.storage_key(), expires_at)?;

    let renewed = store
        .update(&record.storage_key(), |current: Option<LeaseRecord>| {
            let Some(mut current) = current else {
                return Err(Error::not_found(format!(
                    "lease {lease_id} was revoked during the renewal"
                )));
            };
            current.expires_at = expires_at;
            current.last_renewed_at = Some(now);
            Ok(Update::Put(current))
        })?
        .ok_or_else(|| Error::not_found(format!("lease {lease_id} not found")))?;

    Ok(Renewal {
        lease: to_lease(settings, &renewed, now),
        lease_duration: expires_at - now,
        warnings,
    })
}

/// Returns the increment of a renewal that names none: the role's TTL, or the lease's
/// first TTL when the role is gone, or the engine default.
fn default_increment(store: &Store, settings: &Settings, record: &LeaseRecord) -> Result<u64> {
    let role_ttl = role::find(store, &record.role)?.map_or(record.ttl, |role| role.ttl);
    Ok(if role_ttl > 0 {
        role_ttl
    } else {
        settings.default_ttl
    })
}

/// Deletes the lease's key in LiteLLM and then the lease. On failure the lease is kept,
/// with the attempt recorded. A lease that no longer exists counts as revoked, as in Vault.
pub fn revoke(store: &Store, settings: &Settings, lease_id: &str) -> Result<()> {
    let (role_name, id) = parse_lease_id(settings, lease_id)?;
    let Some(record) = store.get::<LeaseRecord>(&storage_key(role_name, id))? else {
        return Ok(());
    };
    match delete_key(store, settings, &record) {
        Ok(_) => store.delete(&record.storage_key()),
        Err(error) => {
            record_failure(store, &record, &error)?;
            Err(error)
        }
    }
}

/// Revokes a lease for tidy. On failure the lease is kept and filed again after a backoff;
/// returns whether the lease has just become irrevocable.
pub fn revoke_expired(
    store: &Store,
    settings: &Settings,
    record: &LeaseRecord,
) -> Result<RevokeOutcome> {
    match delete_key(store, settings, record) {
        Ok(_) => {
            store.delete(&record.storage_key())?;
            Ok(RevokeOutcome::Revoked)
        }
        Err(error) => {
            log::warn(&format!(
                "revoking expired lease {}/{} failed: {error}",
                record.role, record.id
            ));
            let updated = record_failure(store, record, &error)?;
            let attempts = updated
                .as_ref()
                .map_or(record.revoke_attempts + 1, |lease| lease.revoke_attempts);
            due::file(
                store,
                &record.storage_key(),
                clock::now() + retry_delay(attempts),
            )?;
            Ok(RevokeOutcome::Failed {
                became_irrevocable: attempts == IRREVOCABLE_AFTER_ATTEMPTS,
            })
        }
    }
}

/// Result of one revocation attempt by tidy.
pub enum RevokeOutcome {
    /// The key is gone and the lease deleted.
    Revoked,
    /// The attempt failed and a retry is filed.
    Failed {
        /// Whether this failure made the lease irrevocable.
        became_irrevocable: bool,
    },
}

/// Pause before retry number `attempts`: one minute, doubling up to an hour.
pub fn retry_delay(attempts: u32) -> u64 {
    let doublings = attempts.saturating_sub(1).min(6);
    (due::BUCKET_SECONDS << doublings).min(MAX_RETRY_SECONDS)
}

fn delete_key(store: &Store, settings: &Settings, record: &LeaseRecord) -> Result<Deletion> {
    config::client_for(store, settings, &record.litellm_url)?.delete_key(&record.token_hash)
}

fn record_failure(
    store: &Store,
    record: &LeaseRecord,
    error: &Error,
) -> Result<Option<LeaseRecord>> {
    let message = error.to_string();
    store.update(&record.storage_key(), |current: Option<LeaseRecord>| {
        let Some(mut current) = current else {
            return Ok(Update::Keep);
        };
        current.revoke_attempts += 1;
        current.irrevocable = current.revoke_attempts >= IRREVOCABLE_AFTER_ATTEMPTS;
        current.last_revoke_error = Some(message.clone());
        Ok(Update::Put(current))
    })
}

/// Converts a stored lease to the WIT record as of time `now`.
pub fn to_lease(settings: &Settings, record: &LeaseRecord, now: u64) -> Lease {
    Lease {
        lease_id: lease_id(settings, &record.role, &record.id),
        role: record.role.clone(),
        key_alias: record.key_alias.clone(),
        litellm_url: record.litellm_url.clone(),
        issued_at: record.issued_at,
        last_renewed_at: record.last_renewed_at,
        expires_at: record.expires_at,
        max_expires_at: record.max_expires_at,
        ttl: record.expires_at.saturating_sub(now),
        renewable: now < record.expires_at && record.expires_at < record.max_expires_at,
        revoke_attempts: record.revoke_attempts,
        irrevocable: record.irrevocable,
        last_revoke_error: record.last_revoke_error.clone(),
    }
}
