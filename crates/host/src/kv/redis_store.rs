//! Spin's `redis` key-value backend, with a CAS that is actually atomic.
//!
//! Spin's backend does `WATCH; GET` … `MULTI; SET; EXEC` and ignores EXEC's nil reply, so a lost
//! race is reported as success. Here `swap` is one Lua script that compares the current value
//! with the snapshot and writes only on a match (absent snapshot → `SET NX` semantics), so a
//! conflict is always `cas-failed`. Like Spin, every label shares one keyspace; our optional
//! `prefix` (runtime-config extension) namespaces keys. `increment` is `INCRBY` (ASCII decimal
//! value, as in Spin). One multiplexed connection manager per store reconnects by itself.

use super::{KvError, Snapshot, SwapError};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

const SWAP_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == 'absent' then
  if current then return 0 end
else
  if not current or current ~= ARGV[2] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
";

/// A Redis-backed store.
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    swap: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn backend(e: redis::RedisError) -> KvError {
    KvError::Backend(format!("redis: {e}"))
}

fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisStore {
    /// Connects to `url` (the URL is never logged: it may carry a password).
    pub async fn open(url: &str, prefix: &str) -> Result<Self, KvError> {
        let client = redis::Client::open(url)
            .map_err(|e| KvError::Backend(format!("invalid redis url: {}", e.category())))?;
        let connection = ConnectionManager::new(client).await.map_err(backend)?;
        Ok(Self {
            connection,
            prefix: prefix.to_string(),
            swap: redis::Script::new(SWAP_SCRIPT),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let mut c = self.connection.clone();
        c.get(self.key(key)).await.map_err(backend)
    }
    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let mut c = self.connection.clone();
        c.set(self.key(key), value).await.map_err(backend)
    }
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        let mut c = self.connection.clone();
        c.del(self.key(key)).await.map_err(backend)
    }
    pub async fn exists(&self, key: &str) -> Result<bool, KvError> {
        let mut c = self.connection.clone();
        c.exists(self.key(key)).await.map_err(backend)
    }
    pub async fn keys(&self) -> Result<Vec<String>, KvError> {
        let mut c = self.connection.clone();
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(backend)?;
            out.extend(
                batch
                    .into_iter()
                    .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_string)),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
    pub async fn get_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.connection.clone();
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&full)
            .query_async(&mut c)
            .await
            .map_err(backend)?;
        Ok(keys.iter().cloned().zip(values).collect())
    }
    pub async fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut c = self.connection.clone();
        let mut cmd = redis::cmd("MSET");
        for (k, v) in pairs {
            cmd.arg(self.key(k)).arg(v.as_slice());
        }
        cmd.query_async::<()>(&mut c).await.map_err(backend)
    }
    pub async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut c = self.connection.clone();
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        c.del(full).await.map_err(backend)
    }
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut c = self.connection.clone();
        c.incr(self.key(key), delta).await.map_err(backend)
    }
    pub async fn snapshot(&self, key: &str) -> Result<Snapshot, KvError> {
        Ok(Snapshot {
            value: self.get(key).await?,
            version: None,
        })
    }
    pub async fn swap(
        &self,
        key: &str,
        expected: &Snapshot,
        value: &[u8],
    ) -> Result<(), SwapError> {
        let mut c = self.connection.clone();
        let mut invocation = self.swap.key(self.key(key));
        match &expected.value {
            None => invocation.arg("absent").arg(""),
            Some(old) => invocation.arg("present").arg(old.as_slice()),
        };
        invocation.arg(value);
        let applied: i64 = invocation.invoke_async(&mut c).await.map_err(backend)?;
        if applied == 1 {
            Ok(())
        } else {
            Err(SwapError::CasFailed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Store, contract};
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn contract_holds_against_local_redis() {
        let prefix = format!("kc-host-test:{}:{}:", std::process::id(), line!());
        let store = RedisStore::open("redis://127.0.0.1:6379", &prefix)
            .await
            .expect("redis at 127.0.0.1:6379 (CI starts it)");
        let store = Store::Redis(Arc::new(store));
        contract::basic_crud(&store).await;
        contract::cas_semantics(&store).await;
        store
            .delete_many(&["k".into(), "n".into()])
            .await
            .expect("cleanup");
    }
}
