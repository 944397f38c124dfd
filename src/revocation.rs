//! Revocation: deleting a lease's key in LiteLLM and then the lease, on request or by tidy
//! once the lease expired.
//!
//! A revocation first claims the lease by writing `revoking_since` with compare-and-swap.
//! A renewal that meets a live claim fails, so no renewal reports success for a key that
//! is being deleted, and two tidy passes never revoke the same lease at once.
//!
//! A revocation on request files the claimed lease for tidy at the end of the claim. If
//! the instance dies or the lease delete fails after the key was deleted, tidy finds the
//! stale claim there and finishes the revocation, so no stored lease outlives its key.

use crate::clock;
use crate::config;
use crate::due;
use crate::error::{Error, Result};
use crate::ids;
use crate::lease::{self, LeaseRecord};
use crate::litellm::Deletion;
use crate::log;
use crate::settings::Settings;
use crate::store::{Store, Update};

/// Failed revocations after which a lease is marked irrevocable.
pub const IRREVOCABLE_AFTER_ATTEMPTS: u32 = 6;

/// Time a claim holds, in seconds: longer than the three attempts of a delete can take
/// with the longest allowed timeouts, so a live claim always belongs to a running
/// revocation and an older one to a revocation that died.
pub const CLAIM_SECONDS: u64 = 600;

/// Maximum pause between tidy's revocation retries, in seconds.
const MAX_RETRY_SECONDS: u64 = 3600;

/// Result of one revocation attempt by tidy.
pub enum RevokeOutcome {
    /// The key is gone and the lease deleted.
    Revoked,
    /// The attempt failed and a retry is filed.
    Failed {
        /// Whether this failure made the lease irrevocable.
        became_irrevocable: bool,
    },
    /// Nothing to do: the lease is gone, was renewed, or another revocation holds it.
    Skipped,
}

/// State of a lease when a revocation tried to claim it.
enum Claim {
    /// The claim was written; the record is the lease as claimed.
    Claimed(LeaseRecord),
    /// The lease no longer exists.
    Gone,
    /// The lease is not expired (any more) and no revocation that died claimed it, so
    /// tidy leaves it.
    NotExpired,
    /// Another revocation claimed the lease less than [`CLAIM_SECONDS`] ago. Its claim
    /// ends at `until`.
    Busy { until: u64 },
}

/// Returns whether a revocation started at `since` may still be running at `now`.
pub fn claim_is_live(since: Option<u64>, now: u64) -> bool {
    since.is_some_and(|since| now < since.saturating_add(CLAIM_SECONDS))
}

/// Deletes the key of lease `lease_id` in LiteLLM and then the lease. On failure the lease
/// is kept, with the attempt recorded. A lease that no longer exists counts as revoked, as
/// in Vault.
pub fn revoke(store: &Store, settings: &Settings, lease_id: &str) -> Result<()> {
    let key = lease::storage_key_of(settings, lease_id)?;
    let now = clock::now();
    let record = match claim(store, &key, now, false)? {
        Claim::Claimed(record) => record,
        Claim::Gone | Claim::NotExpired | Claim::Busy { .. } => return Ok(()),
    };
    due::file(store, &key, now + CLAIM_SECONDS)?;
    match delete_key(store, settings, &record) {
        Ok(_) => store.delete(&key),
        Err(error) => {
            record_failure(store, &record, &error)?;
            Err(error)
        }
    }
}

/// Revokes an expired lease, or one whose revocation on request died, for tidy. On
/// failure the lease is kept and filed again after a backoff.
pub fn revoke_expired(
    store: &Store,
    settings: &Settings,
    record: &LeaseRecord,
    now: u64,
) -> Result<RevokeOutcome> {
    let key = record.storage_key();
    let claimed = match claim(store, &key, now, true)? {
        Claim::Claimed(claimed) => claimed,
        Claim::Gone | Claim::NotExpired => return Ok(RevokeOutcome::Skipped),
        Claim::Busy { until } => {
            // The other revocation may die; looking again when its claim ends finds out.
            due::file(store, &key, until)?;
            return Ok(RevokeOutcome::Skipped);
        }
    };

    match delete_key(store, settings, &claimed) {
        Ok(_) => {
            store.delete(&key)?;
            Ok(RevokeOutcome::Revoked)
        }
        Err(error) => {
            log::warn(&format!(
                "revoking expired lease {}/{} failed: {error}",
                claimed.role, claimed.id
            ));
            let attempts = record_failure(store, &claimed, &error)?
                .map_or(claimed.revoke_attempts + 1, |lease| lease.revoke_attempts);
            due::file(store, &key, clock::now() + retry_delay(attempts))?;
            Ok(RevokeOutcome::Failed {
                became_irrevocable: attempts == IRREVOCABLE_AFTER_ATTEMPTS,
            })
        }
    }
}

/// Pause before retry number `attempts`: one minute, doubling up to an hour.
pub fn retry_delay(attempts: u32) -> u64 {
    let doublings = attempts.saturating_sub(1).min(6);
    (due::BUCKET_SECONDS << doublings).min(MAX_RETRY_SECONDS)
}

/// Marks the lease at `key` as being revoked. Tidy (`for_tidy`) leaves leases that are not
/// expired, unless a revocation claimed them and died, and leases with a live claim. A
/// revocation on request takes over any claim.
fn claim(store: &Store, key: &str, now: u64, for_tidy: bool) -> Result<Claim> {
    let mut outcome = Claim::Gone;
    store.update(key, |current: Option<LeaseRecord>| {
        let Some(mut lease) = current else {
            outcome = Claim::Gone;
            return Ok(Update::Keep);
        };
        if for_tidy && lease.expires_at > now && lease.revoking_since.is_none() {
            outcome = Claim::NotExpired;
            return Ok(Update::Keep);
        }
        if for_tidy && claim_is_live(lease.revoking_since, now) {
            outcome = Claim::Busy {
                until: lease.revoking_since.unwrap_or(now) + CLAIM_SECONDS,
            };
            return Ok(Update::Keep);
        }
        lease.revoking_since = Some(now);
        lease.revoking_claim = Some(ids::new_id());
        outcome = Claim::Claimed(lease.clone());
        Ok(Update::Put(lease))
    })?;
    Ok(outcome)
}

fn delete_key(store: &Store, settings: &Settings, record: &LeaseRecord) -> Result<Deletion> {
    config::client_for(store, settings, &record.litellm_url)?.delete_key(&record.token_hash)
}

/// Records a failed attempt and releases the claim, so that the lease can be renewed and
/// revoked again.
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
        // A revocation on request may have taken the claim over meanwhile, and it may be
        // deleting the key now, so only this revocation's own claim is released.
        if current.revoking_claim == record.revoking_claim {
            current.revoking_since = None;
            current.revoking_claim = None;
        }
        Ok(Update::Put(current))
    })
}
