//! LiteLLM connection settings: the proxy URL and the master key that manages its keys.
//!
//! The master key is stored per URL under `connection/<url hash>`, apart from the current
//! `config` record. A lease records the URL that minted its key, so its revocation finds
//! that URL's master key even after the config moved to another URL or was deleted.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bindings::exports::litellm_secrets::engine::types::{Config, ConfigRequest};
use crate::clock;
use crate::error::{Error, Result};
use crate::ids;
use crate::litellm::Client;
use crate::role;
use crate::seal::{self, Sealed, SealingKey};
use crate::settings::Settings;
use crate::store::Store;
use crate::url::BaseUrl;

const CONFIG_KEY: &str = "config";

/// Longest accepted master key, in bytes.
const MAX_MASTER_KEY_BYTES: usize = 1024;

/// The current settings, without the master key.
#[derive(Serialize, Deserialize)]
struct ConfigRecord {
    url: String,
    updated_at: u64,
}

/// A LiteLLM URL and its master key, as stored: sealed when the host configures an
/// encryption key, else in plaintext.
#[derive(Serialize, Deserialize)]
struct StoredConnection {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    master_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_master_key: Option<Sealed>,
}

/// A LiteLLM URL and its master key.
struct Connection {
    /// Base URL of the proxy, as [`BaseUrl`] prints it.
    url: String,
    /// The master key; it never leaves the engine except in LiteLLM's auth header.
    master_key: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.url)
            .field("master_key", &"[redacted]")
            .finish()
    }
}

impl Connection {
    fn client(self, settings: &Settings) -> Result<Client> {
        let url = BaseUrl::parse(&self.url)?;
        Ok(Client::new(url, self.master_key, settings.litellm_timeout))
    }

    fn to_stored(&self, settings: &Settings) -> Result<StoredConnection> {
        let (master_key, sealed_master_key) = match &settings.sealing_key {
            Some(key) => (None, Some(seal::seal(key, &self.master_key, &self.url)?)),
            None => (Some(self.master_key.clone()), None),
        };
        Ok(StoredConnection {
            url: self.url.clone(),
            master_key,
            sealed_master_key,
        })
    }

    fn from_stored(stored: StoredConnection, settings: &Settings) -> Result<Self> {
        let master_key = match (stored.sealed_master_key, stored.master_key) {
            (Some(sealed), _) => open_sealed(&sealed, &stored.url, settings)?,
            (None, Some(master_key)) => master_key,
            (None, None) => {
                return Err(Error::storage(format!(
                    "the stored connection for {} has no master key; write the config again",
                    stored.url
                )));
            }
        };
        Ok(Self {
            url: stored.url,
            master_key,
        })
    }
}

/// Verifies and stores new connection settings.
pub fn write(store: &Store, settings: &Settings, request: ConfigRequest) -> Result<Config> {
    let current: Option<ConfigRecord> = store.get(CONFIG_KEY)?;
    let url_text = match (&request.url, &current) {
        (Some(url), _) => url.clone(),
        (None, Some(current)) => current.url.clone(),
        (None, None) => {
            return Err(Error::invalid(
                "url is required on the first config write; set it to the LiteLLM proxy's \
                 base URL, such as http://127.0.0.1:4000",
            ));
        }
    };
    let url = BaseUrl::parse(&url_text)?;
    let url_string = url.to_string();

    let master_key = match request.master_key {
        Some(master_key) => validate_master_key(master_key)?,
        None => stored_master_key(store, settings, current.as_ref(), &url_string)?,
    };
    Client::new(url, master_key.clone(), settings.litellm_timeout).verify()?;

    let connection = Connection {
        url: url_string.clone(),
        master_key,
    };
    store.put(
        &connection_key(&url_string),
        &connection.to_stored(settings)?,
    )?;
    let record = ConfigRecord {
        url: url_string,
        updated_at: clock::now(),
    };
    store.put(CONFIG_KEY, &record)?;
    role::create_index(store)?;
    if settings.sealing_key.is_some() {
        reseal_connections(store, settings)?;
    }
    Ok(to_config(record, true))
}

/// Returns the stored settings without the master key. A stored master key that the
/// current encryption settings cannot open is an error, so that a wrong or missing
/// `encryption_key` shows on the first read instead of on the first issuance.
pub fn read(store: &Store, settings: &Settings) -> Result<Config> {
    let record: ConfigRecord = store.get(CONFIG_KEY)?.ok_or_else(not_configured)?;
    let master_key_set = store.exists(&connection_key(&record.url))?;
    if master_key_set {
        connection_for(store, settings, &record.url)?.client(settings)?;
    }
    Ok(to_config(record, master_key_set))
}

/// Deletes the current settings. Connections stay, so existing leases remain revocable.
pub fn delete(store: &Store) -> Result<()> {
    store.delete(CONFIG_KEY)
}

/// Returns a client for the current config, for issuing credentials.
pub fn current_client(store: &Store, settings: &Settings) -> Result<Client> {
    let record: ConfigRecord = store.get(CONFIG_KEY)?.ok_or_else(not_configured)?;
    connection_for(store, settings, &record.url)?.client(settings)
}

/// Returns a client for the LiteLLM proxy at `url`, for managing the keys it minted.
pub fn client_for(store: &Store, settings: &Settings, url: &str) -> Result<Client> {
    connection_for(store, settings, url)?.client(settings)
}

fn connection_for(store: &Store, settings: &Settings, url: &str) -> Result<Connection> {
    let stored: StoredConnection = store.get(&connection_key(url))?.ok_or_else(|| {
        Error::not_found(format!(
            "no master key is stored for LiteLLM at {url}; write the config with this url \
             and its master_key to manage its keys"
        ))
    })?;
    Connection::from_stored(stored, settings)
}

/// Opens a sealed master key with the key that sealed it: the current `encryption_key`, or
/// `previous_encryption_key` during a rotation.
fn open_sealed(sealed: &Sealed, url: &str, settings: &Settings) -> Result<String> {
    let keys = [&settings.sealing_key, &settings.previous_sealing_key];
    let mut candidates = keys.into_iter().flatten().peekable();
    if candidates.peek().is_none() {
        return Err(Error::storage(format!(
            "the master key for {url} is stored encrypted, but no encryption_key is set; set it \
             to the key it was written with"
        )));
    }
    let matching = candidates
        .find(|key| sealed.key_id.is_none() || sealed.key_id.as_deref() == Some(key.id().as_str()));
    match matching {
        Some(key) => seal::open(key, sealed, url),
        None => Err(Error::storage(format!(
            "the master key for {url} was sealed with another key; set encryption_key or \
             previous_encryption_key to the key it was written with"
        ))),
    }
}

/// Seals, with the current key, the master keys stored in plaintext before an encryption
/// key was set and those sealed with the previous key, so that a rotation completes.
// NOTE: this scans every key in the bucket, leases included, but only config writes with
// an encryption key do it.
fn reseal_connections(store: &Store, settings: &Settings) -> Result<()> {
    for key in store.keys_with_prefix("connection/")? {
        let Some(stored) = store.get::<StoredConnection>(&key)? else {
            continue;
        };
        let current_id = settings.sealing_key.as_ref().map(SealingKey::id);
        let sealed_with_current = stored
            .sealed_master_key
            .as_ref()
            .is_some_and(|sealed| sealed.key_id.is_some() && sealed.key_id == current_id);
        if sealed_with_current {
            continue;
        }
        let connection = Connection::from_stored(stored, settings)?;
        store.put(&key, &connection.to_stored(settings)?)?;
    }
    Ok(())
}

fn stored_master_key(
    store: &Store,
    settings: &Settings,
    current: Option<&ConfigRecord>,
    url: &str,
) -> Result<String> {
    match current {
        Some(current) if current.url == url => Ok(connection_for(store, settings, url)?.master_key),
        Some(current) => Err(Error::invalid(format!(
            "master_key is required when url changes (from {} to {url}); send the master key \
             of the new proxy",
            current.url
        ))),
        None => Err(Error::invalid(
            "master_key is required on the first config write; send the LiteLLM master key",
        )),
    }
}

/// Checks the key's shape without ever quoting it.
fn validate_master_key(master_key: String) -> Result<String> {
    if master_key.trim().is_empty() {
        return Err(Error::invalid(
            "master_key is empty; send the LiteLLM master key",
        ));
    }
    if master_key.len() > MAX_MASTER_KEY_BYTES {
        return Err(Error::invalid(format!(
            "master_key is longer than {MAX_MASTER_KEY_BYTES} bytes; send the LiteLLM master key"
        )));
    }
    if master_key
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::invalid(
            "master_key contains whitespace or control characters; send the key without them",
        ));
    }
    Ok(master_key)
}

fn connection_key(url: &str) -> String {
    format!("connection/{}", &ids::sha256_hex(url)[..32])
}

fn not_configured() -> Error {
    Error::not_found("LiteLLM is not configured; write the config with url and master_key first")
}

fn to_config(record: ConfigRecord, master_key_set: bool) -> Config {
    Config {
        url: record.url,
        master_key_set,
        updated_at: record.updated_at,
    }
}
