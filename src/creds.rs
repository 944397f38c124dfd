//! Credential issuance: a fresh LiteLLM key bound to a new lease, with no key left behind
//! when any step fails.
//!
//! The steps, in order: record a pending entry `pending/<role>/<id>` and file it for tidy,
//! generate the key, file and write the lease, and delete the pending entry. If generation or
//! the lease write fails, the key is deleted by its alias at once. If that deletion fails
//! too, or the instance dies midway, tidy later finds the pending entry without a lease
//! and deletes the key by alias.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::bindings::exports::litellm_secrets::engine::types::Credential;
use crate::clock;
use crate::config;
use crate::due;
use crate::duration;
use crate::error::{Error, Result};
use crate::ids;
use crate::lease::{self, KEY_EXPIRY_BUFFER_SECONDS, LeaseRecord};
use crate::litellm::{self, Client, GenerateError, NewKey};
use crate::log;
use crate::outbound;
use crate::revocation;
use crate::role::{self, RESERVED_METADATA_PREFIX, RoleRecord};
use crate::settings::Settings;
use crate::store::Store;

/// Slack for storage writes in the pending grace period, in seconds.
const GRACE_MARGIN_SECONDS: u64 = 30;

/// Age after which tidy treats a pending entry as left by an interrupted issuance, in
/// seconds. An issuance makes at most two LiteLLM calls (generate, then a cleanup delete
/// if generate failed), so the period covers two of the longest exchanges and a margin:
/// 180 seconds with the default `litellm_timeout` of 30 seconds.
pub fn pending_grace_seconds(settings: &Settings) -> u64 {
    2 * outbound::longest_exchange_seconds(settings.litellm_timeout) + GRACE_MARGIN_SECONDS
}

/// An issuance in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingRecord {
    /// Role the key is issued for.
    pub role: String,
    /// Lease id segment, shared with the lease once it is written.
    pub id: String,
    /// Alias of the key being generated.
    pub key_alias: String,
    /// Base URL of the LiteLLM proxy the key is generated at.
    pub litellm_url: String,
    /// When the issuance started.
    pub created_at: u64,
    /// Failed cleanup attempts by tidy.
    #[serde(default)]
    pub cleanup_attempts: u32,
}

impl PendingRecord {
    /// Storage key of this entry.
    pub fn storage_key(&self) -> String {
        pending_key(&self.role, &self.id)
    }
}

/// Returns the storage key of the pending entry for lease `id` of `role`.
pub fn pending_key(role: &str, id: &str) -> String {
    format!("pending/{role}/{id}")
}

/// Lease times of one issue.
struct LeaseTimes {
    issued_at: u64,
    ttl: u64,
    expires_at: u64,
    max_expires_at: u64,
    warnings: Vec<String>,
}

/// Mints a key for `role_name` and stores its lease, owned by the client token with
/// accessor `owner` if one requested it.
pub fn issue(
    store: &Store,
    settings: &Settings,
    role_name: &str,
    requested_ttl: Option<&str>,
    owner: Option<&str>,
) -> Result<Credential> {
    let role = role::load(store, role_name)?;
    let requested = match requested_ttl {
        Some(text) => duration::parse_seconds("ttl", text)?,
        None => 0,
    };
    let client = config::current_client(store, settings)?;
    let times = lease_times(settings, &role, requested, clock::now());

    let id = ids::new_id();
    let pending = PendingRecord {
        role: role_name.to_owned(),
        id: id.clone(),
        key_alias: format!("{}-{role_name}-{id}", role.key_alias_prefix),
        litellm_url: client.url().to_string(),
        created_at: times.issued_at,
        cleanup_attempts: 0,
    };
    due::file(
        store,
        &pending.storage_key(),
        times.issued_at + pending_grace_seconds(settings),
    )?;
    store.put(&pending.storage_key(), &pending)?;

    let lease_id = lease::lease_id(settings, role_name, &id);
    let spec = generate_spec(&role, &pending, &lease_id, times.ttl);
    let new_key = client
        .generate(&spec)
        .map_err(|failure| abandon_generate(store, &client, &pending, failure))?;

    let record = LeaseRecord {
        role: role_name.to_owned(),
        id,
        token_hash: new_key.token_hash.clone(),
        key_alias: pending.key_alias.clone(),
        litellm_url: pending.litellm_url.clone(),
        issued_at: times.issued_at,
        last_renewed_at: None,
        expires_at: times.expires_at,
        max_expires_at: times.max_expires_at,
        ttl: times.ttl,
        revoke_attempts: 0,
        irrevocable: false,
        last_revoke_error: None,
        revoking_since: None,
        revoking_claim: None,
        owner: owner.map(str::to_owned),
    };
    store_lease(store, &record)
        .map_err(|error| abandon_lease(store, &client, &pending, &new_key, error))?;
    finish(store, &pending);

    Ok(Credential {
        key: new_key.key,
        key_alias: record.key_alias,
        lease_id,
        lease_duration: times.ttl,
        renewable: times.expires_at < times.max_expires_at,
        expires_at: times.expires_at,
        warnings: times.warnings,
    })
}

/// Computes the lease TTL: the request's, else the role's, else the engine default,
/// capped by the role's max TTL and the engine maximum.
fn lease_times(settings: &Settings, role: &RoleRecord, requested: u64, now: u64) -> LeaseTimes {
    let cap = match role.max_ttl {
        0 => settings.max_ttl,
        role_max => role_max.min(settings.max_ttl),
    };
    let chosen = [requested, role.ttl, settings.default_ttl]
        .into_iter()
        .find(|ttl| *ttl > 0)
        .unwrap_or(settings.default_ttl);

    let mut warnings = Vec::new();
    if chosen > cap {
        warnings.push(format!(
            "TTL of {} exceeds the max TTL of the role; the lease TTL is capped at {}",
            duration::format_seconds(chosen),
            duration::format_seconds(cap)
        ));
    }
    let ttl = chosen.min(cap);
    LeaseTimes {
        issued_at: now,
        ttl,
        expires_at: now + ttl,
        max_expires_at: now + cap,
        warnings,
    }
}

/// Builds the `/key/generate` body. The key may call LLM routes only (`key_type:
/// llm_api`) and expires in LiteLLM shortly after its lease.
fn generate_spec(role: &RoleRecord, pending: &PendingRecord, lease_id: &str, ttl: u64) -> Value {
    let mut metadata = role.metadata.clone();
    metadata.insert(
        format!("{RESERVED_METADATA_PREFIX}role"),
        json!(pending.role),
    );
    metadata.insert(
        format!("{RESERVED_METADATA_PREFIX}lease_id"),
        json!(lease_id),
    );

    litellm::object(vec![
        ("models", Some(json!(role.models))),
        ("max_budget", role.max_budget.map(|budget| json!(budget))),
        (
            "budget_duration",
            role.budget_duration.as_ref().map(|period| json!(period)),
        ),
        ("tpm_limit", role.tpm_limit.map(|limit| json!(limit))),
        ("rpm_limit", role.rpm_limit.map(|limit| json!(limit))),
        (
            "max_parallel_requests",
            role.max_parallel_requests.map(|limit| json!(limit)),
        ),
        ("key_alias", Some(json!(pending.key_alias))),
        ("key_type", Some(json!("llm_api"))),
        (
            "duration",
            Some(json!(format!("{}s", ttl + KEY_EXPIRY_BUFFER_SECONDS))),
        ),
        ("metadata", Some(Value::Object(metadata))),
    ])
}

fn store_lease(store: &Store, record: &LeaseRecord) -> Result<()> {
    due::file(store, &record.storage_key(), record.expires_at)?;
    store.put(&record.storage_key(), record)
}

/// Cleans up after a failed generate and returns its error.
///
/// Without a response LiteLLM may still be creating the key, so the pending entry stays
/// even after a cleanup that found nothing: tidy deletes by alias again after the grace
/// period.
fn abandon_generate(
    store: &Store,
    client: &Client,
    pending: &PendingRecord,
    failure: GenerateError,
) -> Error {
    if !failure.key_may_exist {
        finish(store, pending);
    } else if delete_by_alias(client, pending) && !failure.may_be_in_flight {
        finish(store, pending);
    }
    failure.error
}

/// Deletes a key whose lease could not be stored and returns the storage error.
fn abandon_lease(
    store: &Store,
    client: &Client,
    pending: &PendingRecord,
    new_key: &NewKey,
    error: Error,
) -> Error {
    match client.delete_key(&new_key.token_hash) {
        Ok(_) => finish(store, pending),
        Err(cleanup) => log::warn(&format!(
            "deleting key {} after its lease write failed did not succeed: {cleanup}; tidy \
             will retry",
            pending.key_alias
        )),
    }
    error
}

/// Deletes the key by alias and returns whether LiteLLM confirmed it is gone.
fn delete_by_alias(client: &Client, pending: &PendingRecord) -> bool {
    match client.delete_alias(&pending.key_alias) {
        Ok(_) => true,
        Err(cleanup) => {
            log::warn(&format!(
                "deleting key {} after a failed generate did not succeed: {cleanup}; tidy \
                 will retry",
                pending.key_alias
            ));
            false
        }
    }
}

/// Deletes the pending entry; tidy removes it later if this fails.
fn finish(store: &Store, pending: &PendingRecord) {
    if let Err(error) = store.delete(&pending.storage_key()) {
        log::warn(&format!(
            "deleting pending entry {} failed: {error}; tidy will remove it",
            pending.storage_key()
        ));
    }
}

/// Deletes the key an interrupted issuance left, for tidy, which checked that no lease
/// was written. Returns whether the pending entry is resolved; on failure the entry is
/// kept and filed again.
// NOTE: a key that LiteLLM creates only after this delete (a generate it processed past
// the grace period) is not looked for again. It lives until its own expiry, the lease TTL
// plus 60 s.
pub fn clean_up(store: &Store, settings: &Settings, pending: &PendingRecord) -> Result<bool> {
    let deleted = config::client_for(store, settings, &pending.litellm_url)
        .and_then(|client| client.delete_alias(&pending.key_alias));
    match deleted {
        Ok(_) => {
            store.delete(&pending.storage_key())?;
            Ok(true)
        }
        Err(error) => {
            log::warn(&format!(
                "deleting key {} left by an interrupted issuance failed: {error}",
                pending.key_alias
            ));
            let mut retry = pending.clone();
            retry.cleanup_attempts += 1;
            store.put(&retry.storage_key(), &retry)?;
            due::file(
                store,
                &retry.storage_key(),
                clock::now() + revocation::retry_delay(retry.cleanup_attempts),
            )?;
            Ok(false)
        }
    }
}
