//! Roles: the scope, limits and TTLs of the keys minted for them.
//!
//! Stored under `role/<name>`, with the sorted names under `roles` so that listing roles
//! never reads leases.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::bindings::exports::litellm_secrets::engine::types::{Role, RoleRequest, RoleWrite};
use crate::duration;
use crate::error::{Error, Result};
use crate::redact;
use crate::settings::Settings;
use crate::store::{Store, Update};

/// Maximum role name length, in bytes. Lease and pending keys stay under 255 bytes with it.
pub const MAX_NAME_BYTES: usize = 128;

/// Prefix of the metadata keys the engine sets on every key it mints.
pub const RESERVED_METADATA_PREFIX: &str = "secrets_engine_";

const INDEX_KEY: &str = "roles";
const DEFAULT_ALIAS_PREFIX: &str = "vault";
const MAX_ALIAS_PREFIX_BYTES: usize = 64;
const MAX_MODELS: usize = 256;
const MAX_MODEL_BYTES: usize = 256;
const MAX_METADATA_BYTES: usize = 64 * 1024;
const BUDGET_PERIOD_WORDS: [&str; 4] = ["hourly", "daily", "weekly", "monthly"];

/// Maximum budget period, in days. LiteLLM computes the reset date as now plus the period,
/// and a date past year 9999 fails there with HTTP 400.
const MAX_BUDGET_PERIOD_DAYS: f64 = 3660.0;

/// Largest tokens- or requests-per-minute limit: LiteLLM stores them as 64-bit integers.
const MAX_RATE_LIMIT: u64 = i64::MAX as u64;

/// Largest parallel-request limit: LiteLLM stores it as a 32-bit integer.
const MAX_PARALLEL_REQUESTS: u64 = i32::MAX as u64;

/// A stored role, without its name (the storage key carries it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleRecord {
    /// Allowed models; empty means every model.
    pub models: Vec<String>,
    /// Spending limit in USD; `None` is unlimited.
    pub max_budget: Option<f64>,
    /// Budget reset period in LiteLLM's syntax.
    pub budget_duration: Option<String>,
    /// Tokens per minute.
    pub tpm_limit: Option<u64>,
    /// Requests per minute.
    pub rpm_limit: Option<u64>,
    /// Concurrent requests.
    pub max_parallel_requests: Option<u64>,
    /// First part of minted key aliases.
    pub key_alias_prefix: String,
    /// Metadata set on every minted key.
    pub metadata: Map<String, Value>,
    /// Lease TTL in seconds; 0 is the engine default.
    pub ttl: u64,
    /// Lease lifetime cap in seconds; 0 is the engine maximum.
    pub max_ttl: u64,
}

impl Default for RoleRecord {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            max_budget: None,
            budget_duration: None,
            tpm_limit: None,
            rpm_limit: None,
            max_parallel_requests: None,
            key_alias_prefix: DEFAULT_ALIAS_PREFIX.to_owned(),
            metadata: Map::new(),
            ttl: 0,
            max_ttl: 0,
        }
    }
}

/// Checks a role name against the one rule every path uses.
pub fn validate_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "role name is invalid: {:?}; use 1 to {MAX_NAME_BYTES} ASCII letters, digits, '_' and \
         '-', starting with a letter or digit",
        redact::truncate(name, 80)
    )))
}

/// Creates or updates a role with the fields `request` sets.
pub fn write(
    store: &Store,
    settings: &Settings,
    name: &str,
    request: RoleRequest,
) -> Result<RoleWrite> {
    validate_name(name)?;
    let key = role_key(name);

    // Validation runs against the stored role inside the compare-and-swap loop, so an
    // update never overwrites a concurrent one.
    let stored = store
        .update(&key, |current: Option<RoleRecord>| {
            let merged = merge(current.unwrap_or_default(), &request)?;
            validate_ttls(&merged, settings)?;
            Ok(Update::Put(merged))
        })?
        .unwrap_or_default();
    add_to_index(store, name)?;

    let mut warnings = Vec::new();
    if stored.models.is_empty() {
        warnings.push(format!(
            "models is empty, so keys minted for role {name} can call every model on the \
             LiteLLM proxy; set models to restrict them"
        ));
    }
    Ok(RoleWrite {
        role: to_role(name, &stored),
        warnings,
    })
}

/// Returns the role `name`.
pub fn read(store: &Store, name: &str) -> Result<Role> {
    let record = load(store, name)?;
    Ok(to_role(name, &record))
}

/// Loads the stored role `name`.
pub fn load(store: &Store, name: &str) -> Result<RoleRecord> {
    validate_name(name)?;
    store
        .get(&role_key(name))?
        .ok_or_else(|| Error::not_found(format!("role {name} not found")))
}

/// Loads the role `name` if it still exists.
pub fn find(store: &Store, name: &str) -> Result<Option<RoleRecord>> {
    store.get(&role_key(name))
}

/// Deletes the role `name`; deleting a missing role succeeds. Leases are not touched.
///
/// The name leaves the index before the record is deleted. A write racing the delete
/// then either re-adds the name after this removal or has its record deleted, and the
/// listing hides names without a record, so the index never hides a stored role.
pub fn delete(store: &Store, name: &str) -> Result<()> {
    validate_name(name)?;
    store.update(INDEX_KEY, |current: Option<Vec<String>>| {
        let mut names = current.unwrap_or_default();
        let before = names.len();
        names.retain(|existing| existing != name);
        Ok(if names.len() == before {
            Update::Keep
        } else {
            Update::Put(names)
        })
    })?;
    store.delete(&role_key(name))
}

/// Returns the names of all roles, sorted.
pub fn list(store: &Store) -> Result<Vec<String>> {
    let names: Vec<String> = store.get(INDEX_KEY)?.unwrap_or_default();

    // A name whose role record is gone is skipped: a write racing a delete can leave one
    // behind. Results are matched by key, because stores such as Spin's return only the
    // keys that exist, in their own order.
    let keys: Vec<String> = names.iter().map(|name| role_key(name)).collect();
    let found: std::collections::BTreeSet<String> = store
        .get_many_text(&keys)?
        .into_iter()
        .filter(|(_, value)| value.is_some())
        .map(|(key, _)| key)
        .collect();
    let mut existing: Vec<String> = names
        .into_iter()
        .filter(|name| found.contains(&role_key(name)))
        .collect();
    existing.sort();
    Ok(existing)
}

/// Creates the empty role index if it is missing, so that later updates of it are swaps
/// on an existing key.
pub fn create_index(store: &Store) -> Result<()> {
    store.update(INDEX_KEY, |current: Option<Vec<String>>| {
        Ok(match current {
            Some(_) => Update::Keep,
            None => Update::Put(Vec::new()),
        })
    })?;
    Ok(())
}

fn add_to_index(store: &Store, name: &str) -> Result<()> {
    store.update(INDEX_KEY, |current: Option<Vec<String>>| {
        let mut names = current.unwrap_or_default();
        match names.binary_search_by(|existing| existing.as_str().cmp(name)) {
            Ok(_) => Ok(Update::Keep),
            Err(position) => {
                names.insert(position, name.to_owned());
                Ok(Update::Put(names))
            }
        }
    })?;
    Ok(())
}

fn role_key(name: &str) -> String {
    format!("role/{name}")
}

fn merge(mut role: RoleRecord, request: &RoleRequest) -> Result<RoleRecord> {
    if let Some(models) = &request.models {
        role.models = validate_models(models)?;
    }
    if let Some(max_budget) = request.max_budget {
        role.max_budget = validate_budget(max_budget)?;
    }
    if let Some(period) = &request.budget_duration {
        role.budget_duration = validate_budget_duration(period)?;
    }
    if let Some(limit) = request.tpm_limit {
        role.tpm_limit = validate_limit("tpm_limit", limit, MAX_RATE_LIMIT)?;
    }
    if let Some(limit) = request.rpm_limit {
        role.rpm_limit = validate_limit("rpm_limit", limit, MAX_RATE_LIMIT)?;
    }
    if let Some(limit) = request.max_parallel_requests {
        role.max_parallel_requests =
            validate_limit("max_parallel_requests", limit, MAX_PARALLEL_REQUESTS)?;
    }
    if let Some(prefix) = &request.key_alias_prefix {
        validate_alias_prefix(prefix)?;
        role.key_alias_prefix = prefix.clone();
    }
    if let Some(metadata) = &request.metadata {
        role.metadata = validate_metadata(metadata)?;
    }
    if let Some(ttl) = &request.ttl {
        role.ttl = duration::parse_seconds("ttl", ttl)?;
    }
    if let Some(max_ttl) = &request.max_ttl {
        role.max_ttl = duration::parse_seconds("max_ttl", max_ttl)?;
    }
    Ok(role)
}

/// Checks a limit against the largest value LiteLLM's database column stores; `0` clears it.
fn validate_limit(field: &str, value: u64, max: u64) -> Result<Option<u64>> {
    if value > max {
        return Err(Error::invalid(format!(
            "{field} is {value}; the maximum LiteLLM stores is {max}, and 0 means no limit"
        )));
    }
    Ok((value > 0).then_some(value))
}

fn validate_models(models: &[String]) -> Result<Vec<String>> {
    if models.len() > MAX_MODELS {
        return Err(Error::invalid(format!(
            "models has {} entries; the maximum is {MAX_MODELS}",
            models.len()
        )));
    }
    let mut accepted: Vec<String> = Vec::with_capacity(models.len());
    for model in models {
        let quoted = redact::truncate(model, 80);
        if model.trim().is_empty() || model.trim() != model {
            return Err(Error::invalid(format!(
                "models contains {quoted:?}; model names must be non-empty without leading or \
                 trailing whitespace"
            )));
        }
        if model.len() > MAX_MODEL_BYTES || model.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "models contains {quoted:?}; model names have at most {MAX_MODEL_BYTES} bytes and \
                 no control characters"
            )));
        }
        if accepted.contains(model) {
            return Err(Error::invalid(format!(
                "models lists {quoted:?} twice; list it once"
            )));
        }
        accepted.push(model.clone());
    }
    Ok(accepted)
}

fn validate_budget(max_budget: f64) -> Result<Option<f64>> {
    if !max_budget.is_finite() || max_budget < 0.0 {
        return Err(Error::invalid(format!(
            "max_budget must be a finite number of USD at least 0, got {max_budget}; use 0 for \
             unlimited"
        )));
    }
    Ok((max_budget > 0.0).then_some(max_budget))
}

/// Accepts LiteLLM's budget period syntax, strictly: a positive integer with a unit.
fn validate_budget_duration(period: &str) -> Result<Option<String>> {
    if period.is_empty() {
        return Ok(None);
    }
    if BUDGET_PERIOD_WORDS.contains(&period) {
        return Ok(Some(period.to_owned()));
    }
    let digits_end = period
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(period.len());
    let (number, unit) = period.split_at(digits_end);
    let days_per_unit = match unit {
        "s" => 1.0 / 86_400.0,
        "m" => 1.0 / 1440.0,
        "h" => 1.0 / 24.0,
        "d" => 1.0,
        "w" => 7.0,
        "mo" => 31.0,
        _ => 0.0,
    };
    let count = number.parse::<u64>().unwrap_or(0);
    if count > 0 && days_per_unit > 0.0 && count as f64 * days_per_unit <= MAX_BUDGET_PERIOD_DAYS {
        return Ok(Some(period.to_owned()));
    }
    Err(Error::invalid(format!(
        "budget_duration is invalid: {:?}; use a positive integer with s, m, h, d, w or mo \
         up to {MAX_BUDGET_PERIOD_DAYS} days (such as \"30d\"), or hourly, daily, weekly, \
         monthly",
        redact::truncate(period, 80)
    )))
}

/// Checks an alias prefix against a character set that LiteLLM's alias checks accept.
fn validate_alias_prefix(prefix: &str) -> Result<()> {
    let valid = !prefix.is_empty()
        && prefix.len() <= MAX_ALIAS_PREFIX_BYTES
        && prefix.as_bytes()[0].is_ascii_alphanumeric()
        && !prefix.contains("..")
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "key_alias_prefix is invalid: {:?}; use 1 to {MAX_ALIAS_PREFIX_BYTES} ASCII letters, \
         digits, '.', '_' and '-', starting with a letter or digit, without '..'",
        redact::truncate(prefix, 80)
    )))
}

fn validate_metadata(text: &str) -> Result<Map<String, Value>> {
    if text.len() > MAX_METADATA_BYTES {
        return Err(Error::invalid(format!(
            "metadata has {} bytes; the maximum is {MAX_METADATA_BYTES} bytes (64 KiB)",
            text.len()
        )));
    }
    let value: Value = serde_json::from_str(text).map_err(|error| {
        Error::invalid(format!(
            "metadata must be a JSON object, but it is not valid JSON: {error}"
        ))
    })?;
    let map = match value {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        other => {
            return Err(Error::invalid(format!(
                "metadata must be a JSON object, got a JSON {}",
                json_kind(&other)
            )));
        }
    };
    if let Some(reserved) = map
        .keys()
        .find(|key| key.starts_with(RESERVED_METADATA_PREFIX))
    {
        return Err(Error::invalid(format!(
            "metadata key {:?} is reserved: keys starting with {RESERVED_METADATA_PREFIX} are \
             set by the engine; rename it",
            redact::truncate(reserved, 80)
        )));
    }
    Ok(map)
}

/// Names the JSON type of `value`, for messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn validate_ttls(role: &RoleRecord, settings: &Settings) -> Result<()> {
    let limit = settings.max_ttl;
    if role.max_ttl > limit {
        return Err(Error::invalid(format!(
            "max_ttl ({}) exceeds the engine's maximum lease TTL ({}); lower max_ttl",
            duration::format_seconds(role.max_ttl),
            duration::format_seconds(limit)
        )));
    }
    if role.ttl > limit {
        return Err(Error::invalid(format!(
            "ttl ({}) exceeds the engine's maximum lease TTL ({}); lower ttl",
            duration::format_seconds(role.ttl),
            duration::format_seconds(limit)
        )));
    }
    if role.max_ttl > 0 && role.ttl > role.max_ttl {
        return Err(Error::invalid(format!(
            "ttl ({}) exceeds max_ttl ({}); lower ttl or raise max_ttl",
            duration::format_seconds(role.ttl),
            duration::format_seconds(role.max_ttl)
        )));
    }
    Ok(())
}

fn to_role(name: &str, record: &RoleRecord) -> Role {
    Role {
        name: name.to_owned(),
        models: record.models.clone(),
        max_budget: record.max_budget,
        budget_duration: record.budget_duration.clone(),
        tpm_limit: record.tpm_limit,
        rpm_limit: record.rpm_limit,
        max_parallel_requests: record.max_parallel_requests,
        key_alias_prefix: record.key_alias_prefix.clone(),
        metadata: Value::Object(record.metadata.clone()).to_string(),
        ttl: record.ttl,
        max_ttl: record.max_ttl,
    }
}
