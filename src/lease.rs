//! Leases: what renewal and revocation need to manage a minted key, stored under
//! `lease/<role>/<id>` without the plaintext key.

use serde::{Deserialize, Serialize};

use crate::bindings::exports::litellm_secrets::engine::types::{Lease, Renewal};
use crate::clock;
use crate::config;
use crate::due;
use crate::duration;
use crate::error::{Error, Result};
use crate::redact;
use crate::revocation;
use crate::role;
use crate::settings::Settings;
use crate::store::{Store, Update};

/// Extra lifetime given to a key in LiteLLM beyond its lease, in seconds, so that clock
/// skew never ends a key before its lease. Tidy deletes the key when the lease expires.
pub const KEY_EXPIRY_BUFFER_SECONDS: u64 = 60;

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
    /// Set after [`revocation::IRREVOCABLE_AFTER_ATTEMPTS`] failed revocations.
    pub irrevocable: bool,
    /// Error of the last failed revocation.
    pub last_revoke_error: Option<String>,
    /// Start of the revocation that holds the lease, while it runs.
    #[serde(default)]
    pub revoking_since: Option<u64>,
    /// Random id of the revocation that holds the lease, so that two claims made in the
    /// same second stay apart.
    #[serde(default)]
    pub revoking_claim: Option<String>,
    /// Accessor of the client token that requested the credential; `None` for the admin
    /// and for hosts that call the engine directly.
    #[serde(default)]
    pub owner: Option<String>,
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

/// Returns the storage key of the lease `lease_id`, checking the id's form.
pub fn storage_key_of(settings: &Settings, lease_id: &str) -> Result<String> {
    let (role_name, id) = parse_lease_id(settings, lease_id)?;
    Ok(storage_key(role_name, id))
}

/// Returns the lease `lease_id` if it exists.
pub fn find(store: &Store, settings: &Settings, lease_id: &str) -> Result<Option<LeaseRecord>> {
    store.get(&storage_key_of(settings, lease_id)?)
}

fn load(store: &Store, settings: &Settings, lease_id: &str) -> Result<LeaseRecord> {
    find(store, settings, lease_id)?
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
/// Explains a failed LiteLLM update by a revocation that started after the lease was
/// read: the key it updated may already be deleted, and the caller should hear that the
/// lease is revoked, not that LiteLLM failed.
fn revoked_meanwhile(
    store: &Store,
    record: &LeaseRecord,
    lease_id: &str,
    now: u64,
) -> Option<Error> {
    match store.get::<LeaseRecord>(&record.storage_key()) {
        Ok(None) => Some(Error::not_found(format!(
            "lease {lease_id} was revoked during the renewal"
        ))),
        Ok(Some(current)) if revocation::claim_is_live(current.revoking_since, now) => {
            Some(being_revoked(lease_id))
        }
        _ => None,
    }
}

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
    if revocation::claim_is_live(record.revoking_since, now) {
        return Err(being_revoked(lease_id));
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
    config::client_for(store, settings, &record.litellm_url)?
        .set_expiry(
            &record.token_hash,
            expires_at - now + KEY_EXPIRY_BUFFER_SECONDS,
        )
        .map_err(|error| revoked_meanwhile(store, &record, lease_id, now).unwrap_or(error))?;
    due::file(store, &record.storage_key(), expires_at)?;

    let renewed = store
        .update(&record.storage_key(), |current: Option<LeaseRecord>| {
            let Some(mut current) = current else {
                return Err(Error::not_found(format!(
                    "lease {lease_id} was revoked during the renewal"
                )));
            };
            if revocation::claim_is_live(current.revoking_since, now) {
                return Err(being_revoked(lease_id));
            }
            current.expires_at = expires_at;
            current.last_renewed_at = Some(now);
            current.revoking_since = None;
            current.revoking_claim = None;
            Ok(Update::Put(current))
        })?
        .ok_or_else(|| Error::not_found(format!("lease {lease_id} not found")))?;

    Ok(Renewal {
        lease: to_lease(settings, &renewed, now),
        lease_duration: expires_at - now,
        warnings,
    })
}

fn being_revoked(lease_id: &str) -> Error {
    Error::invalid(format!(
        "lease {lease_id} is being revoked, so it cannot be renewed; request new credentials"
    ))
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
