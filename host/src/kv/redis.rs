//! The shared store: Redis, for several host processes. Each value is a Redis string,
//! and a sorted set per bucket indexes the keys so that listing pages through them in
//! byte order, as the file store does. Every write that touches both runs as one Lua
//! script, which Redis executes atomically, so compare-and-swap stays atomic across
//! processes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use super::{BUCKET, HostWrite, KvResult};

/// Wait for each Redis reply before the operation fails.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

const SET: &str = r"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return 1";

const DELETE: &str = r"
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1";

/// ARGV[1] is '1' when a value is expected and '0' when the key must be absent.
const SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if current then return 0 end
elseif current ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[4])
return 1";

const INCREMENT: &str = r"
local sum = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return sum";

struct Scripts {
    set: Script,
    delete: Script,
    swap: Script,
    increment: Script,
}

/// A Redis connection that reconnects on its own. Clones share it.
#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    connection: Arc<Mutex<ConnectionManager>>,
    /// Set after a failed login: the connection manager does not log in again by itself,
    /// so the next operation replaces it.
    stale: Arc<AtomicBool>,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
}

impl RedisStore {
    /// Connects to `url`; every key the host writes starts with `prefix:`.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = Client::open(url).map_err(|error| {
            anyhow::anyhow!(
                "--redis-url {} is invalid: {error}; use redis://[:PASSWORD@]HOST:PORT/DB, \
                     such as redis://127.0.0.1:6379/0 (TLS is not supported)",
                masked(url)
            )
        })?;
        let connection = client
            .get_connection_manager_with_config(manager_config())
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "connecting to Redis at {} failed: {error}; check that it runs and that \
                     --redis-url is right",
                    masked(url)
                )
            })?;
        Ok(Self {
            client,
            connection: Arc::new(Mutex::new(connection)),
            stale: Arc::default(),
            prefix: Arc::from(prefix),
            scripts: Arc::new(Scripts {
                set: Script::new(SET),
                delete: Script::new(DELETE),
                swap: Script::new(SWAP),
                increment: Script::new(INCREMENT),
            }),
        })
    }

    /// Returns the shared connection, first replacing it if a login failed on it.
    async fn connection(&self) -> KvResult<ConnectionManager> {
        if self.stale.swap(false, Ordering::SeqCst) {
            match self
                .client
                .get_connection_manager_with_config(manager_config())
                .await
            {
                Ok(fresh) => *self.lock() = fresh,
                Err(error) => {
                    // The old connection still cannot log in, so the next operation retries.
                    self.stale.store(true, Ordering::SeqCst);
                    return Err(format!("Redis: {error}"));
                }
            }
            tracing::info!("reconnected to Redis after a failed login");
        }
        Ok(self.lock().clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConnectionManager> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Describes a failed operation, and marks the connection for replacement when the
    /// server rejected its login.
    fn failed(&self, error: redis::RedisError) -> String {
        if error.kind() == redis::ErrorKind::AuthenticationFailed {
            self.stale.store(true, Ordering::SeqCst);
        }
        format!("Redis: {error}")
    }

    fn value_key(&self, key: &str) -> String {
        format!("{}:value:{BUCKET}:{key}", self.prefix)
    }

    fn index_key(&self) -> String {
        format!("{}:keys:{BUCKET}", self.prefix)
    }

    fn host_key(&self, name: &str) -> String {
        format!("{}:host:{name}", self.prefix)
    }

    pub async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        let mut connection = self.connection().await?;
        redis::cmd("GET")
            .arg(self.value_key(key))
            .query_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn exists(&self, key: &str) -> KvResult<bool> {
        let mut connection = self.connection().await?;
        redis::cmd("EXISTS")
            .arg(self.value_key(key))
            .query_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn get_many(&self, keys: &[String]) -> KvResult<Vec<(String, Vec<u8>)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.connection().await?;
        let mut command = redis::cmd("MGET");
        for key in keys {
            command.arg(self.value_key(key));
        }
        let values: Vec<Option<Vec<u8>>> = command
            .query_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(keys
            .iter()
            .zip(values)
            .filter_map(|(key, value)| Some((key.clone(), value?)))
            .collect())
    }

    pub async fn keys_after(&self, cursor: Option<&str>, limit: usize) -> KvResult<Vec<String>> {
        let mut connection = self.connection().await?;
        let start = match cursor {
            Some(after) => format!("({after}"),
            None => "-".to_owned(),
        };
        redis::cmd("ZRANGEBYLEX")
            .arg(self.index_key())
            .arg(start)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        let mut connection = self.connection().await?;
        let _: i64 = self
            .scripts
            .set
            .key(self.value_key(key))
            .key(self.index_key())
            .arg(value)
            .arg(key)
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> KvResult<()> {
        let mut connection = self.connection().await?;
        let _: i64 = self
            .scripts
            .delete
            .key(self.value_key(key))
            .key(self.index_key())
            .arg(key)
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(())
    }

    pub async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        let mut connection = self.connection().await?;
        self.scripts
            .increment
            .key(self.value_key(key))
            .key(self.index_key())
            .arg(delta)
            .arg(key)
            .invoke_async(&mut connection)
            .await
            .map_err(|error| format!("incrementing counter {key} failed: {}", self.failed(error)))
    }

    pub async fn swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> KvResult<bool> {
        let mut connection = self.connection().await?;
        let swapped: i64 = self
            .scripts
            .swap
            .key(self.value_key(key))
            .key(self.index_key())
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(value)
            .arg(key)
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(swapped == 1)
    }

    pub async fn host_value(&self, name: &str) -> KvResult<Option<String>> {
        let mut connection = self.connection().await?;
        redis::cmd("GET")
            .arg(self.host_key(name))
            .query_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))
    }

    pub async fn set_host_value(&self, name: &str, value: &str, mode: HostWrite) -> KvResult<bool> {
        let mut connection = self.connection().await?;
        let mut command = redis::cmd("SET");
        command.arg(self.host_key(name)).arg(value);
        if mode == HostWrite::IfAbsent {
            command.arg("NX");
        }
        let reply: Option<String> = command
            .query_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(reply.is_some())
    }
}

/// Returns `url` with any user and password replaced by `***`.
fn masked(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".to_owned();
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(3)
}

#[cfg(test)]
mod tests {
    use super::masked;

    #[test]
    fn masked_url_hides_credentials() {
        assert_eq!(
            masked("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(masked("redis://user:p@ss@host:1"), "redis://***@host:1");
        assert_eq!(masked("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(masked("s3cret"), "(not a URL)");
    }
}
