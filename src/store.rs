//! Typed access to the host's `wasi:keyvalue` bucket: JSON records, compare-and-swap updates,
//! counters and key listing.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::wasi::keyvalue::{atomics, batch, store};
use crate::error::{Error, Result};

/// Attempts of one compare-and-swap update before it reports a conflict.
const CAS_ATTEMPTS: usize = 16;

/// Keys read per `get-many` call.
const BATCH_SIZE: usize = 100;

/// Decision of an [`Store::update`] callback about the value it read.
pub enum Update<T> {
    /// Writes the new value.
    Put(T),
    /// Leaves the stored value as it is.
    Keep,
}

/// Result of [`Store::swap_bytes`].
enum Swapped {
    /// The new value was written.
    Written,
    /// The change kept the value that was read: these bytes, or an absent key.
    Kept(Option<Vec<u8>>),
}

/// The engine's bucket.
pub struct Store {
    bucket: store::Bucket,
}

impl Store {
    /// Opens the bucket `name`.
    pub fn open(name: &str) -> Result<Self> {
        let bucket = store::open(name).map_err(|error| {
            Error::storage(format!(
                "opening key-value store {name:?} failed: {}; the host must grant the \
                 component this store",
                describe(&error)
            ))
        })?;
        Ok(Self { bucket })
    }

    /// Reads and decodes the record at `key`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let bytes = self
            .bucket
            .get(key)
            .map_err(|error| failed("reading", key, &error))?;
        bytes.map(|bytes| decode(key, &bytes)).transpose()
    }

    /// Encodes and writes `value` at `key`.
    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = encode(key, value)?;
        self.bucket
            .set(key, &bytes)
            .map_err(|error| failed("writing", key, &error))
    }

    /// Writes raw text at `key`.
    pub fn put_text(&self, key: &str, text: &str) -> Result<()> {
        self.bucket
            .set(key, text.as_bytes())
            .map_err(|error| failed("writing", key, &error))
    }

    /// Deletes `key`; deleting an absent key succeeds.
    pub fn delete(&self, key: &str) -> Result<()> {
        self.bucket
            .delete(key)
            .map_err(|error| failed("deleting", key, &error))
    }

    /// Returns whether `key` exists.
    pub fn exists(&self, key: &str) -> Result<bool> {
        self.bucket
            .exists(key)
            .map_err(|error| failed("reading", key, &error))
    }

    /// Adds `delta` to the counter at `key`, creating it at 0 first, and returns the sum.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        atomics::increment(&self.bucket, key, delta)
            .map_err(|error| failed("incrementing", key, &error))
    }

    /// Reads many keys at once, returning each key's raw value if present.
    pub fn get_many_text(&self, keys: &[String]) -> Result<Vec<(String, Option<String>)>> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_SIZE) {
            let values = batch::get_many(&self.bucket, chunk).map_err(|error| {
                failed("reading", chunk.first().map_or("", String::as_str), &error)
            })?;
            for (key, value) in values {
                let text = value.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
                found.push((key, text));
            }
        }
        Ok(found)
    }

    /// Reads the record at `key`, lets `change` decide on a new value and writes it only if
    /// no other writer changed `key` meanwhile, retrying on conflict. Returns the stored value.
    pub fn update<T, F>(&self, key: &str, mut change: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> Result<Update<T>>,
    {
        let mut written = None;
        let outcome = self.swap_bytes(key, &mut |current| {
            let current = current.map(|bytes| decode::<T>(key, bytes)).transpose()?;
            match change(current)? {
                Update::Keep => Ok(None),
                Update::Put(value) => {
                    let bytes = encode(key, &value)?;
                    written = Some(value);
                    Ok(Some(bytes))
                }
            }
        })?;
        match outcome {
            Swapped::Written => Ok(written),
            Swapped::Kept(bytes) => bytes.map(|bytes| decode(key, &bytes)).transpose(),
        }
    }

    /// The compare-and-swap loop of [`Store::update`] on raw bytes. It is not generic, so
    /// the component contains one copy of it rather than one per record type.
    fn swap_bytes(
        &self,
        key: &str,
        change: &mut dyn FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>>,
    ) -> Result<Swapped> {
        for _ in 0..CAS_ATTEMPTS {
            let cas = atomics::Cas::new(&self.bucket, key)
                .map_err(|error| failed("reading", key, &error))?;
            let current = cas
                .current()
                .map_err(|error| failed("reading", key, &error))?;

            let Some(bytes) = change(current.as_deref())? else {
                return Ok(Swapped::Kept(current));
            };
            match atomics::swap(cas, &bytes) {
                Ok(()) if current.is_some() || self.reads_back(key, &bytes)? => {
                    return Ok(Swapped::Written);
                }
                Ok(()) | Err(atomics::CasError::CasFailed(_)) => continue,
                Err(atomics::CasError::StoreError(error)) => {
                    return Err(failed("writing", key, &error));
                }
            }
        }
        Err(Error::storage(format!(
            "writing {key} failed: it changed concurrently {CAS_ATTEMPTS} times in a row; retry"
        )))
    }

    /// Returns whether the value at `key` is still `bytes`.
    ///
    /// Some stores (Spin's SQLite store among them) turn a swap on an absent key into an
    /// unconditional write, so two concurrent creators both succeed and the later one wins.
    /// Reading the value back lets the earlier one notice and retry against the existing
    /// key, whose swaps are atomic.
    // NOTE: a creator that reads back before the other's write lands still loses its
    // change. Callers that create shared keys create them early (config write creates the
    // role index) to keep this window out of concurrent paths.
    fn reads_back(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        let stored = self
            .bucket
            .get(key)
            .map_err(|error| failed("reading", key, &error))?;
        Ok(stored.as_deref() == Some(bytes))
    }

    /// Returns every key that starts with `prefix`, in the store's order.
    pub fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .bucket
                .list_keys(cursor.as_deref())
                .map_err(|error| failed("listing", prefix, &error))?;
            keys.extend(page.keys.into_iter().filter(|key| key.starts_with(prefix)));
            match page.cursor {
                Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                _ => return Ok(keys),
            }
        }
    }
}

fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|error| Error::storage(format!("encoding {key} failed: {error}")))
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|error| {
        Error::storage(format!(
            "stored record {key} is not valid: {error}; restore it from a backup or delete it"
        ))
    })
}

fn failed(action: &str, key: &str, error: &store::Error) -> Error {
    Error::storage(format!(
        "{action} {key} in the key-value store failed: {}",
        describe(error)
    ))
}

fn describe(error: &store::Error) -> String {
    match error {
        store::Error::NoSuchStore => "no such store".to_owned(),
        store::Error::AccessDenied => "access denied".to_owned(),
        store::Error::Other(message) => message.clone(),
    }
}
