//! `wasi:keyvalue@0.2.0-draft2` (store, atomics, batch) for the component, backed by a
//! redb file or by Redis. Both give compare-and-swap that is atomic across every
//! instance, and across processes for Redis, which is what the engine's race rules need.

mod file;
mod redis;

use wasmtime::component::Resource;

use crate::runtime::Ctx;
use crate::runtime::bindings::wasi::keyvalue::{atomics, batch, store};

pub use self::file::FileStore;
pub use self::redis::RedisStore;

/// The only bucket the host offers, named as Spin's default store.
pub const BUCKET: &str = "default";

/// Keys returned per `list-keys` page.
const LIST_PAGE_SIZE: usize = 500;

/// A bucket handle. The host has one bucket, so the handle carries nothing.
pub struct BucketHandle;

/// A compare-and-swap handle: the key and the value it had when the handle was made.
pub struct CasHandle {
    key: String,
    expected: Option<Vec<u8>>,
}

/// A page of keys and the cursor of the next page, if any.
pub struct KeyPage {
    pub keys: Vec<String>,
    pub cursor: Option<String>,
}

/// The storage backend. Clones share the same store.
#[derive(Clone)]
pub enum Backend {
    /// A redb file, for one host process.
    File(FileStore),
    /// A Redis server, which several host processes may share.
    Redis(RedisStore),
}

/// Whether a host value may overwrite one already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostWrite {
    /// Overwrite any stored value.
    Replace,
    /// Write only when no value is stored, atomically, so that of several hosts starting
    /// at once exactly one writes.
    IfAbsent,
}

/// A storage failure, as text for the component's `error::other`.
pub type KvResult<T> = Result<T, String>;

impl Backend {
    pub async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        match self {
            Self::File(file) => file.get(key),
            Self::Redis(redis) => redis.get(key).await,
        }
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        match self {
            Self::File(file) => file.set(key, value).await,
            Self::Redis(redis) => redis.set(key, value).await,
        }
    }

    pub async fn delete(&self, key: &str) -> KvResult<()> {
        match self {
            Self::File(file) => file.delete(key).await,
            Self::Redis(redis) => redis.delete(key).await,
        }
    }

    pub async fn exists(&self, key: &str) -> KvResult<bool> {
        match self {
            Self::File(file) => Ok(file.get(key)?.is_some()),
            Self::Redis(redis) => redis.exists(key).await,
        }
    }

    /// Keys after `cursor` in byte order, at most `LIST_PAGE_SIZE` of them.
    pub async fn list_keys(&self, cursor: Option<&str>) -> KvResult<KeyPage> {
        let keys = match self {
            Self::File(file) => file.keys_after(cursor, LIST_PAGE_SIZE)?,
            Self::Redis(redis) => redis.keys_after(cursor, LIST_PAGE_SIZE).await?,
        };
        let cursor = (keys.len() == LIST_PAGE_SIZE).then(|| keys[LIST_PAGE_SIZE - 1].clone());
        Ok(KeyPage { keys, cursor })
    }

    /// Adds `delta` to the decimal counter at `key` (absent counts as 0) and returns the sum.
    pub async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        match self {
            Self::File(file) => file.increment(key, delta).await,
            Self::Redis(redis) => redis.increment(key, delta).await,
        }
    }

    /// Writes `value` if `key` still contains `expected` (`None`: is still absent), as one
    /// atomic step, and returns whether it wrote.
    pub async fn swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> KvResult<bool> {
        match self {
            Self::File(file) => file.swap(key, expected, value).await,
            Self::Redis(redis) => redis.swap(key, expected, value).await,
        }
    }

    /// Values of the keys that exist, paired with their keys.
    pub async fn get_many(&self, keys: &[String]) -> KvResult<Vec<(String, Vec<u8>)>> {
        match self {
            Self::File(file) => file.get_many(keys),
            Self::Redis(redis) => redis.get_many(keys).await,
        }
    }

    /// Reads a value the host keeps for itself, outside the component's bucket.
    pub async fn host_value(&self, name: &str) -> KvResult<Option<String>> {
        match self {
            Self::File(file) => file.host_value(name),
            Self::Redis(redis) => redis.host_value(name).await,
        }
    }

    /// Writes a value the host keeps for itself, and returns whether it was written.
    pub async fn set_host_value(&self, name: &str, value: &str, mode: HostWrite) -> KvResult<bool> {
        match self {
            Self::File(file) => file.set_host_value(name, value, mode).await,
            Self::Redis(redis) => redis.set_host_value(name, value, mode).await,
        }
    }
}

/// Result type of the generated host traits: an outer error traps the instance.
type HostResult<T, E = store::Error> = wasmtime::Result<Result<T, E>>;

/// Logs a failed operation and turns it into the component's error. Only the first
/// segment of the key is logged, such as `lease` or `token`.
fn storage_error(operation: &str, key: &str, message: String) -> store::Error {
    let kind = key.split('/').next().unwrap_or_default();
    tracing::error!(operation, key_kind = kind, error = %message, "key-value operation failed");
    store::Error::Other(message)
}

impl store::Host for Ctx {
    async fn open(&mut self, identifier: String) -> HostResult<Resource<BucketHandle>> {
        if identifier != BUCKET {
            return Ok(Err(store::Error::NoSuchStore));
        }
        Ok(Ok(self.table.push(BucketHandle)?))
    }
}

impl store::HostBucket for Ctx {
    async fn get(&mut self, _: Resource<BucketHandle>, key: String) -> HostResult<Option<Vec<u8>>> {
        Ok(self
            .kv
            .get(&key)
            .await
            .map_err(|message| storage_error("get", &key, message)))
    }

    async fn set(
        &mut self,
        _: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> HostResult<()> {
        Ok(self
            .kv
            .set(&key, &value)
            .await
            .map_err(|message| storage_error("set", &key, message)))
    }

    async fn delete(&mut self, _: Resource<BucketHandle>, key: String) -> HostResult<()> {
        Ok(self
            .kv
            .delete(&key)
            .await
            .map_err(|message| storage_error("delete", &key, message)))
    }

    async fn exists(&mut self, _: Resource<BucketHandle>, key: String) -> HostResult<bool> {
        Ok(self
            .kv
            .exists(&key)
            .await
            .map_err(|message| storage_error("exists", &key, message)))
    }

    async fn list_keys(
        &mut self,
        _: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> HostResult<store::KeyResponse> {
        let page = self.kv.list_keys(cursor.as_deref()).await;
        Ok(page
            .map(|page| store::KeyResponse {
                keys: page.keys,
                cursor: page.cursor,
            })
            .map_err(|message| storage_error("list-keys", "", message)))
    }

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for Ctx {
    async fn increment(
        &mut self,
        _: Resource<BucketHandle>,
        key: String,
        delta: i64,
    ) -> HostResult<i64> {
        Ok(self
            .kv
            .increment(&key, delta)
            .await
            .map_err(|message| storage_error("increment", &key, message)))
    }

    async fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> HostResult<(), atomics::CasError> {
        let handle = self.table.get(&cas)?;
        let (key, expected) = (handle.key.clone(), handle.expected.clone());
        match self.kv.swap(&key, expected.as_deref(), &value).await {
            Ok(true) => {
                self.table.delete(cas)?;
                Ok(Ok(()))
            }
            Ok(false) => Ok(Err(atomics::CasError::CasFailed(cas))),
            Err(message) => {
                self.table.delete(cas)?;
                Ok(Err(atomics::CasError::StoreError(storage_error(
                    "swap", &key, message,
                ))))
            }
        }
    }
}

impl atomics::HostCas for Ctx {
    async fn new(
        &mut self,
        _: Resource<BucketHandle>,
        key: String,
    ) -> HostResult<Resource<CasHandle>> {
        let expected = match self.kv.get(&key).await {
            Ok(expected) => expected,
            Err(message) => return Ok(Err(storage_error("cas", &key, message))),
        };
        Ok(Ok(self.table.push(CasHandle { key, expected })?))
    }

    async fn current(&mut self, cas: Resource<CasHandle>) -> HostResult<Option<Vec<u8>>> {
        Ok(Ok(self.table.get(&cas)?.expected.clone()))
    }

    async fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for Ctx {
    async fn get_many(
        &mut self,
        _: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> HostResult<Vec<(String, Option<Vec<u8>>)>> {
        let first = keys.first().cloned().unwrap_or_default();
        let found = self
            .kv
            .get_many(&keys)
            .await
            .map_err(|message| storage_error("get-many", &first, message));
        Ok(found.map(|pairs| {
            pairs
                .into_iter()
                .map(|(key, value)| (key, Some(value)))
                .collect()
        }))
    }

    async fn set_many(
        &mut self,
        _: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> HostResult<()> {
        for (key, value) in key_values {
            if let Err(message) = self.kv.set(&key, &value).await {
                return Ok(Err(storage_error("set-many", &key, message)));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(
        &mut self,
        _: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> HostResult<()> {
        for key in keys {
            if let Err(message) = self.kv.delete(&key).await {
                return Ok(Err(storage_error("delete-many", &key, message)));
            }
        }
        Ok(Ok(()))
    }
}
