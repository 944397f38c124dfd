//! The embedded store: one redb file. Every write is its own transaction, committed
//! durably before it returns, so a crash keeps each write whole or leaves it out. redb
//! serializes write transactions, which makes compare-and-swap and increment atomic.

use std::fs::OpenOptions;
use std::ops::Bound;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};

use super::{HostWrite, KvResult};

/// The component's bucket.
const BUCKET: TableDefinition<&str, &[u8]> = TableDefinition::new("bucket/default");

/// Values the host keeps for itself, such as the admin token's digest.
const HOST: TableDefinition<&str, &str> = TableDefinition::new("host");

/// A redb file. Clones share the open database.
#[derive(Clone)]
pub struct FileStore {
    db: Arc<Database>,
}

impl FileStore {
    /// Opens `path`, creating it with mode 0600 if it does not exist. Its directory must
    /// exist.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        create_private(path)?;
        let db = Database::create(path).map_err(|error| match error {
            DatabaseError::DatabaseAlreadyOpen => anyhow::anyhow!(
                "the data file {} is in use by another process; stop it, or give this host \
                 its own --data file (several hosts share data through --redis-url)",
                path.display()
            ),
            other => anyhow::anyhow!(
                "opening the data file {} failed: {other}; if the file is damaged, restore it \
                 from a backup or start with another --data file",
                path.display()
            ),
        })?;

        let txn = db.begin_write()?;
        txn.open_table(BUCKET)?;
        txn.open_table(HOST)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    pub fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(BUCKET).map_err(failed)?;
        let value = table.get(key).map_err(failed)?;
        Ok(value.map(|value| value.value().to_vec()))
    }

    pub fn get_many(&self, keys: &[String]) -> KvResult<Vec<(String, Vec<u8>)>> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(BUCKET).map_err(failed)?;
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(value) = table.get(key.as_str()).map_err(failed)? {
                found.push((key.clone(), value.value().to_vec()));
            }
        }
        Ok(found)
    }

    pub fn keys_after(&self, cursor: Option<&str>, limit: usize) -> KvResult<Vec<String>> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(BUCKET).map_err(failed)?;
        let range = match cursor {
            Some(after) => table.range((Bound::Excluded(after), Bound::<&str>::Unbounded)),
            None => table.range(..),
        }
        .map_err(failed)?;
        let mut keys = Vec::new();
        for entry in range.take(limit) {
            let (key, _) = entry.map_err(failed)?;
            keys.push(key.value().to_owned());
        }
        Ok(keys)
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.write(move |table| {
            table.insert(key.as_str(), value.as_slice())?;
            Ok(())
        })
        .await
    }

    pub async fn delete(&self, key: &str) -> KvResult<()> {
        let key = key.to_owned();
        self.write(move |table| {
            table.remove(key.as_str())?;
            Ok(())
        })
        .await
    }

    pub async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        let key = key.to_owned();
        self.write(move |table| {
            let current = match table.get(key.as_str())? {
                None => 0,
                Some(value) => parse_counter(&key, value.value())?,
            };
            let sum = current
                .checked_add(delta)
                .ok_or_else(|| WriteError::Refused(format!("counter {key} would overflow")))?;
            table.insert(key.as_str(), sum.to_string().as_bytes())?;
            Ok(sum)
        })
        .await
    }

    pub async fn swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> KvResult<bool> {
        let (key, expected, value) = (key.to_owned(), expected.map(<[u8]>::to_vec), value.to_vec());
        self.write(move |table| {
            let current = table
                .get(key.as_str())?
                .map(|current| current.value().to_vec());
            if current != expected {
                return Ok(false);
            }
            table.insert(key.as_str(), value.as_slice())?;
            Ok(true)
        })
        .await
    }

    pub fn host_value(&self, name: &str) -> KvResult<Option<String>> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(HOST).map_err(failed)?;
        let value = table.get(name).map_err(failed)?;
        Ok(value.map(|value| value.value().to_owned()))
    }

    pub async fn set_host_value(&self, name: &str, value: &str, mode: HostWrite) -> KvResult<bool> {
        let db = Arc::clone(&self.db);
        let (name, value) = (name.to_owned(), value.to_owned());
        blocking(move || {
            let txn = db.begin_write().map_err(failed)?;
            let written = {
                let mut table = txn.open_table(HOST).map_err(failed)?;
                let present = table.get(name.as_str()).map_err(failed)?.is_some();
                let write = mode == HostWrite::Replace || !present;
                if write {
                    table
                        .insert(name.as_str(), value.as_str())
                        .map_err(failed)?;
                }
                write
            };
            txn.commit().map_err(failed)?;
            Ok(written)
        })
        .await
    }

    /// Runs `change` in one write transaction on a blocking thread, and commits it unless
    /// it failed. redb commits are durable (fsync) by default.
    async fn write<T, F>(&self, change: F) -> KvResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut redb::Table<'_, &'static str, &'static [u8]>) -> Result<T, WriteError>
            + Send
            + 'static,
    {
        let db = Arc::clone(&self.db);
        blocking(move || {
            let txn = db.begin_write().map_err(failed)?;
            let result = {
                let mut table = txn.open_table(BUCKET).map_err(failed)?;
                change(&mut table)
            };
            match result {
                Ok(value) => {
                    txn.commit().map_err(failed)?;
                    Ok(value)
                }
                Err(error) => {
                    txn.abort().map_err(failed)?;
                    Err(error.to_string())
                }
            }
        })
        .await
    }
}

/// The reason a write transaction did not commit.
enum WriteError {
    Storage(redb::StorageError),
    Refused(String),
}

impl From<redb::StorageError> for WriteError {
    fn from(error: redb::StorageError) -> Self {
        Self::Storage(error)
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Storage(error) => write!(f, "data file: {error}"),
            Self::Refused(message) => f.write_str(message),
        }
    }
}

fn parse_counter(key: &str, bytes: &[u8]) -> Result<i64, WriteError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| WriteError::Refused(format!("value at {key} is not a counter")))
}

fn failed(error: impl std::fmt::Display) -> String {
    format!("data file: {error}")
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> KvResult<T> + Send + 'static,
) -> KvResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| format!("data file write did not finish: {error}"))?
}

/// Creates `path` empty with mode 0600 if it is missing, because it contains master keys,
/// and warns when an existing file is readable by others.
fn create_private(path: &Path) -> anyhow::Result<()> {
    // A missing directory is more likely a typo than a new store, which would start
    // empty and forget every lease, so it is an error.
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty());
    if let Some(parent) = parent.filter(|parent| !parent.is_dir()) {
        anyhow::bail!(
            "the directory {} of the data file does not exist; create it, or fix --data",
            parent.display()
        );
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let metadata = std::fs::metadata(path)?;
            if !metadata.is_file() {
                return Ok(());
            }
            let mode = metadata.permissions().mode();
            if metadata.len() == 0 && mode & 0o077 != 0 {
                // An empty file contains no data yet, so it is made private before redb fills it.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                return Ok(());
            }
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "the data file is readable by other users; chmod 600 it"
                );
            }
            Ok(())
        }
        Err(error) => Err(anyhow::anyhow!(
            "creating the data file {} failed: {error}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(name: &str) -> (FileStore, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("lse-file-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = FileStore::open(&dir.join("data.redb")).unwrap();
        (store, dir)
    }

    #[tokio::test]
    async fn swap_writes_only_over_the_expected_value() {
        let (store, dir) = temp_store("swap");
        assert!(store.swap("k", None, b"one").await.unwrap());
        assert!(
            !store.swap("k", None, b"two").await.unwrap(),
            "create-if-absent runs once"
        );
        assert!(!store.swap("k", Some(b"stale"), b"two").await.unwrap());
        assert!(store.swap("k", Some(b"one"), b"two").await.unwrap());
        assert_eq!(store.get("k").unwrap(), Some(b"two".to_vec()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn increment_counts_and_refuses_other_values() {
        let (store, dir) = temp_store("increment");
        assert_eq!(store.increment("n", 5).await.unwrap(), 5);
        assert_eq!(store.increment("n", -2).await.unwrap(), 3);
        store.set("text", b"abc").await.unwrap();
        let error = store.increment("text", 1).await.unwrap_err();
        assert_eq!(error, "value at text is not a counter");
        assert_eq!(store.get("text").unwrap(), Some(b"abc".to_vec()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn keys_page_in_byte_order_and_survive_reopening() {
        let (store, dir) = temp_store("keys");
        for key in ["b", "a", "c/1", "c/0"] {
            store.set(key, key.as_bytes()).await.unwrap();
        }
        store.delete("b").await.unwrap();
        assert_eq!(store.keys_after(None, 2).unwrap(), ["a", "c/0"]);
        assert_eq!(store.keys_after(Some("c/0"), 2).unwrap(), ["c/1"]);
        drop(store);

        let reopened = FileStore::open(&dir.join("data.redb")).unwrap();
        let found = reopened
            .get_many(&["a".into(), "b".into(), "c/1".into()])
            .unwrap();
        assert_eq!(
            found,
            [("a".into(), b"a".to_vec()), ("c/1".into(), b"c/1".to_vec())]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn open_rejects_a_file_in_use() {
        let (store, dir) = temp_store("locked");
        let error = FileStore::open(&dir.join("data.redb"))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("is in use by another process"), "{error}");
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
