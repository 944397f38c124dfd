//! An in-memory `wasi:keyvalue@0.2.0-draft2` store (store, atomics, batch) with fault
//! injection, shared by every instance a test creates.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::component::Resource;

use crate::host::Ctx;
use crate::host::bindings::wasi::keyvalue::{atomics, batch, store};

/// Keys returned per `list-keys` page, small so that tests cross page boundaries.
const LIST_PAGE_SIZE: usize = 100;

/// A bucket handle: the name of an opened bucket.
pub struct BucketHandle {
    name: String,
}

/// A compare-and-swap handle: the key and the value read when it was created.
pub struct CasHandle {
    bucket: String,
    key: String,
    expected: Option<Vec<u8>>,
}

/// A store operation a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `get`, `exists`, `cas.current` and `get-many`.
    Read,
    /// `set`, `swap`, `increment` and `set-many`.
    Write,
    /// `delete` and `delete-many`.
    Delete,
}

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The operation returns `error::other` with this message.
    Fail(String),
    /// The host call fails, which traps the instance, as a crash would.
    Trap,
}

#[derive(Debug, Clone)]
struct Fault {
    op: Op,
    key_prefix: String,
    effect: Effect,
    /// Matching operations still to pass before the fault applies.
    skip: usize,
    remaining: usize,
}

#[derive(Default)]
struct Inner {
    buckets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    faults: Vec<Fault>,
    reads: Vec<String>,
    writes: Vec<(Op, String)>,
    upsert_on_absent_swap: bool,
}

/// The shared store. Clones share data.
#[derive(Clone, Default)]
pub struct KvStore {
    inner: Arc<Mutex<Inner>>,
}

/// Name of the bucket the engine opens by default, as Spin's default store.
pub const DEFAULT_BUCKET: &str = "default";

impl KvStore {
    /// Creates an empty store with the default bucket.
    pub fn new() -> Self {
        let store = Self::default();
        store
            .lock()
            .buckets
            .insert(DEFAULT_BUCKET.to_owned(), BTreeMap::new());
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns a copy of the default bucket.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.lock()
            .buckets
            .get(DEFAULT_BUCKET)
            .cloned()
            .unwrap_or_default()
    }

    /// Returns the value at `key` in the default bucket as text.
    pub fn get_text(&self, key: &str) -> Option<String> {
        let inner = self.lock();
        let value = inner.buckets.get(DEFAULT_BUCKET)?.get(key)?;
        Some(String::from_utf8_lossy(value).into_owned())
    }

    /// Returns the value at `key` in the default bucket as JSON.
    pub fn get_json(&self, key: &str) -> Option<serde_json::Value> {
        serde_json::from_str(&self.get_text(key)?).ok()
    }

    /// Returns the keys of the default bucket that start with `prefix`.
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.snapshot()
            .into_keys()
            .filter(|key| key.starts_with(prefix))
            .collect()
    }

    /// Writes `value` at `key` in the default bucket, bypassing the component.
    pub fn put_text(&self, key: &str, value: &str) {
        self.lock()
            .buckets
            .entry(DEFAULT_BUCKET.to_owned())
            .or_default()
            .insert(key.to_owned(), value.as_bytes().to_vec());
    }

    /// Deletes `key` from the default bucket, bypassing the component.
    pub fn delete(&self, key: &str) {
        if let Some(entries) = self.lock().buckets.get_mut(DEFAULT_BUCKET) {
            entries.remove(key);
        }
    }

    /// Injects a fault into the next `times` operations of kind `op` on keys starting
    /// with `key_prefix`.
    pub fn inject(&self, op: Op, key_prefix: &str, effect: Effect, times: usize) {
        self.inject_after(op, key_prefix, effect, 0, times);
    }

    /// Injects a fault that lets the next `skip` operations of kind `op` on keys starting
    /// with `key_prefix` pass and then applies to the `times` operations after them.
    /// Operations count towards every fault they match, including one that another fault
    /// ends.
    pub fn inject_after(
        &self,
        op: Op,
        key_prefix: &str,
        effect: Effect,
        skip: usize,
        times: usize,
    ) {
        self.lock().faults.push(Fault {
            op,
            key_prefix: key_prefix.to_owned(),
            effect,
            skip,
            remaining: times,
        });
    }

    /// Returns how many injected faults have not applied yet, summed over all faults.
    pub fn faults_left(&self) -> usize {
        self.lock().faults.iter().map(|fault| fault.remaining).sum()
    }

    /// Removes all injected faults.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Makes `swap` on a key that was absent at `cas.new` overwrite unconditionally, as
    /// Spin's SQLite store does.
    pub fn set_upsert_on_absent_swap(&self, enabled: bool) {
        self.lock().upsert_on_absent_swap = enabled;
    }

    /// Returns the keys read since the last call, and clears the log.
    pub fn take_reads(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().reads)
    }

    /// Returns the `Op::Write` and `Op::Delete` operations attempted since the last call,
    /// in order and with their keys, and clears the log. Attempts that a fault ended are
    /// included.
    pub fn take_writes(&self) -> Vec<(Op, String)> {
        std::mem::take(&mut self.lock().writes)
    }

    /// Returns the effect of the first fault that applies to this operation. Faults still
    /// skipping operations count it.
    fn check_fault(&self, op: Op, key: &str) -> Option<Effect> {
        let mut inner = self.lock();
        if op != Op::Read {
            inner.writes.push((op, key.to_owned()));
        }
        let mut effect = None;
        let matching = inner.faults.iter_mut().filter(|fault| {
            fault.op == op && fault.remaining > 0 && key.starts_with(&fault.key_prefix)
        });
        for fault in matching {
            if fault.skip > 0 {
                fault.skip -= 1;
            } else if effect.is_none() {
                fault.remaining -= 1;
                effect = Some(fault.effect.clone());
            }
        }
        effect
    }
}

/// Result type of trappable host calls.
type HostResult<T, E = store::Error> = wasmtime::Result<Result<T, E>>;

/// Applies an injected fault: `Some` ends the call with the fault's effect.
fn fault_result<T, E: From<String>>(
    effect: Option<Effect>,
) -> Option<wasmtime::Result<Result<T, E>>> {
    match effect? {
        Effect::Fail(message) => Some(Ok(Err(E::from(message)))),
        Effect::Trap => Some(Err(wasmtime::format_err!(
            "injected crash in the key-value store"
        ))),
    }
}

impl From<String> for store::Error {
    fn from(message: String) -> Self {
        store::Error::Other(message)
    }
}

impl Ctx {
    fn bucket_name(&self, bucket: &Resource<BucketHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(bucket)?.name.clone())
    }

    fn read(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let mut inner = self.kv.lock();
        inner.reads.push(key.to_owned());
        inner.buckets.get(bucket)?.get(key).cloned()
    }

    fn write(&self, bucket: &str, key: &str, value: Vec<u8>) {
        self.kv
            .lock()
            .buckets
            .entry(bucket.to_owned())
            .or_default()
            .insert(key.to_owned(), value);
    }

    fn remove(&self, bucket: &str, key: &str) {
        if let Some(entries) = self.kv.lock().buckets.get_mut(bucket) {
            entries.remove(key);
        }
    }
}

impl store::Host for Ctx {
    fn open(&mut self, identifier: String) -> HostResult<Resource<BucketHandle>> {
        if !self.kv.lock().buckets.contains_key(&identifier) {
            return Ok(Err(store::Error::NoSuchStore));
        }
        Ok(Ok(self.table.push(BucketHandle { name: identifier })?))
    }
}

impl store::HostBucket for Ctx {
    fn get(&mut self, bucket: Resource<BucketHandle>, key: String) -> HostResult<Option<Vec<u8>>> {
        if let Some(result) = fault_result(self.kv.check_fault(Op::Read, &key)) {
            return result;
        }
        let name = self.bucket_name(&bucket)?;
        Ok(Ok(self.read(&name, &key)))
    }

    fn set(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> HostResult<()> {
        if let Some(result) = fault_result(self.kv.check_fault(Op::Write, &key)) {
            return result;
        }
        let name = self.bucket_name(&bucket)?;
        self.write(&name, &key, value);
        Ok(Ok(()))
    }

    fn delete(&mut self, bucket: Resource<BucketHandle>, key: String) -> HostResult<()> {
        if let Some(result) = fault_result(self.kv.check_fault(Op::Delete, &key)) {
            return result;
        }
        let name = self.bucket_name(&bucket)?;
        self.remove(&name, &key);
        Ok(Ok(()))
    }

    fn exists(&mut self, bucket: Resource<BucketHandle>, key: String) -> HostResult<bool> {
        if let Some(result) = fault_result(self.kv.check_fault(Op::Read, &key)) {
            return result;
        }
        let name = self.bucket_name(&bucket)?;
        let inner = self.kv.lock();
        Ok(Ok(inner
            .buckets
            .get(&name)
            .is_some_and(|entries| entries.contains_key(&key))))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> HostResult<store::KeyResponse> {
        let name = self.bucket_name(&bucket)?;
        let inner = self.kv.lock();
        let Some(entries) = inner.buckets.get(&name) else {
            return Ok(Err(store::Error::NoSuchStore));
        };
        let keys: Vec<String> = match &cursor {
            Some(after) => entries
                .range::<String, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                .take(LIST_PAGE_SIZE)
                .map(|(key, _)| key.clone())
                .collect(),
            None => entries.keys().take(LIST_PAGE_SIZE).cloned().collect(),
        };
        let cursor = (keys.len() == LIST_PAGE_SIZE).then(|| keys[LIST_PAGE_SIZE - 1].clone());
        Ok(Ok(store::KeyResponse { keys, cursor }))
    }

    fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl From<String> for atomics::CasError {
    fn from(message: String) -> Self {
        atomics::CasError::StoreError(store::Error::Other(message))
    }
}

impl atomics::Host for Ctx {
    fn increment(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        delta: i64,
    ) -> HostResult<i64> {
        if let Some(result) = fault_result(self.kv.check_fault(Op::Write, &key)) {
            return result;
        }
        let name = self.bucket_name(&bucket)?;
        let mut inner = self.kv.lock();
        let entries = inner.buckets.entry(name).or_default();
        let current = match entries.get(&key) {
            None => 0,
            Some(bytes) => match std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.parse::<i64>().ok())
            {
                Some(value) => value,
                None => {
                    return Ok(Err(store::Error::Other(format!(
                        "value at {key} is not a counter"
                    ))));
                }
            },
        };
        let sum = current + delta;
        entries.insert(key, sum.to_string().into_bytes());
        Ok(Ok(sum))
    }

    fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> HostResult<(), atomics::CasError> {
        let key = self.table.get(&cas)?.key.clone();
        if let Some(result) = fault_result(self.kv.check_fault(Op::Write, &key)) {
            return result;
        }
        let handle = self.table.get(&cas)?;
        let (bucket, expected) = (handle.bucket.clone(), handle.expected.clone());
        let mut inner = self.kv.lock();
        let upsert = inner.upsert_on_absent_swap && expected.is_none();
        let entries = inner.buckets.entry(bucket).or_default();
        if !upsert && entries.get(&key) != expected.as_ref() {
            drop(inner);
            return Ok(Err(atomics::CasError::CasFailed(cas)));
        }
        entries.insert(key, value);
        drop(inner);
        self.table.delete(cas)?;
        Ok(Ok(()))
    }
}

impl atomics::HostCas for Ctx {
    fn new(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> HostResult<Resource<CasHandle>> {
        if let Some(result) = fault_result(self.kv.check_fault(Op::Read, &key)) {
            return result;
        }
        let name = self.bucket_name(&bucket)?;
        let expected = self.read(&name, &key);
        Ok(Ok(self.table.push(CasHandle {
            bucket: name,
            key,
            expected,
        })?))
    }

    fn current(&mut self, cas: Resource<CasHandle>) -> HostResult<Option<Vec<u8>>> {
        Ok(Ok(self.table.get(&cas)?.expected.clone()))
    }

    fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for Ctx {
    fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> HostResult<Vec<(String, Option<Vec<u8>>)>> {
        for key in &keys {
            if let Some(result) = fault_result(self.kv.check_fault(Op::Read, key)) {
                return result;
            }
        }
        // Like Spin's stores, only keys that exist are returned, in no promised order.
        let name = self.bucket_name(&bucket)?;
        let mut found: Vec<(String, Option<Vec<u8>>)> = keys
            .into_iter()
            .filter_map(|key| {
                let value = self.read(&name, &key)?;
                Some((key, Some(value)))
            })
            .collect();
        found.reverse();
        Ok(Ok(found))
    }

    fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> HostResult<()> {
        let name = self.bucket_name(&bucket)?;
        for (key, value) in key_values {
            if let Some(result) = fault_result(self.kv.check_fault(Op::Write, &key)) {
                return result;
            }
            self.write(&name, &key, value);
        }
        Ok(Ok(()))
    }

    fn delete_many(&mut self, bucket: Resource<BucketHandle>, keys: Vec<String>) -> HostResult<()> {
        let name = self.bucket_name(&bucket)?;
        for key in keys {
            if let Some(result) = fault_result(self.kv.check_fault(Op::Delete, &key)) {
                return result;
            }
            self.remove(&name, &key);
        }
        Ok(Ok(()))
    }
}
