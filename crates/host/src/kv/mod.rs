//! Key-value stores: one [`Store`] per runtime-config label, over three backends.
//!
//! Both guest APIs (`fermyon:spin/key-value@2.0.0` and `wasi:keyvalue@0.2.0-draft2`) reach the
//! same store for a label, as in Spin (`host.rs` binds both to these types).
//!
//! # Compare-and-swap contract (stricter than Spin, on purpose)
//!
//! * Flow: `Cas::new(bucket, key)` reads the key and records a [`Snapshot`] (the value, and a
//!   version where the backend has one); `current()` returns that recorded value; `swap(v)`
//!   writes `v` only if the key still holds the snapshot, else fails with `cas-failed` and the
//!   host hands the guest a fresh, re-read handle.
//! * Guarantees, on every backend and across processes sharing the SQLite file or the Redis
//!   server: no lost update; a swap on a key that was absent is an insert-if-absent (two racing
//!   creators: exactly one wins); `increment` is atomic.
//! * Where Spin differs: Spin's SQLite backend upserts blindly when the key was absent (both
//!   racing creators "win"), and its Redis backend reports a lost swap (EXEC → nil) as success.
//!   Spin's Cosmos and DynamoDB backends are correct.
//! * Caveats: SQLite and memory compare a row version as well as the value, so ABA is detected
//!   among writers that go through this host; a real Spin process writing the same SQLite file
//!   does not bump the version, so against it the check degrades to Spin's value comparison.
//!   Redis compares values (ABA between our own writers is possible there; a value carrying its
//!   own version, as our components' records do, makes it irrelevant).
//! * `increment` encodings follow Spin: 8-byte little-endian i64 on SQLite and memory, ASCII
//!   decimal (`INCRBY`) on Redis. Never read a counter with `get` across backends.

mod memory;
mod redis_store;
mod sqlite;

pub mod host;

pub use memory::MemoryStore;
pub use redis_store::RedisStore;
pub use sqlite::SqliteStore;

use crate::runtime_config::KeyValueStoreConfig;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// A failure inside a store backend. Maps to the WIT `other(string)` error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    /// The backend failed (I/O, busy database, Redis unreachable…). Retrying may succeed.
    #[error("{0}")]
    Backend(String),
    /// The stored value is not what the operation expects (e.g. a non-counter under `increment`).
    #[error("{0}")]
    Invalid(String),
}

/// Why a swap did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SwapError {
    /// The key changed since the snapshot (or appeared, for an absent-key snapshot).
    #[error("compare and swap failed: the value changed")]
    CasFailed,
    /// The backend failed.
    #[error(transparent)]
    Store(#[from] KvError),
}

/// What `Cas::new` observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The value, `None` if the key was absent.
    pub value: Option<Vec<u8>>,
    /// A backend version when the backend keeps one.
    pub version: Option<i64>,
}

/// One configured store.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(Arc<SqliteStore>),
    Redis(Arc<RedisStore>),
    Memory(Arc<MemoryStore>),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Redis($s) => $e,
            Store::Memory($s) => $e,
        }
    };
}

impl Store {
    /// Opens a store from its runtime-config definition. `label` is the SQLite `store` column.
    pub async fn open(label: &str, config: &KeyValueStoreConfig) -> Result<Self, KvError> {
        Ok(match config {
            KeyValueStoreConfig::Sqlite { path } => {
                Store::Sqlite(Arc::new(SqliteStore::open(path, label)?))
            }
            KeyValueStoreConfig::Redis { url, prefix } => {
                Store::Redis(Arc::new(RedisStore::open(url, prefix).await?))
            }
            KeyValueStoreConfig::Memory => Store::Memory(Arc::new(MemoryStore::default())),
        })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        dispatch!(self, s => s.get(key).await)
    }
    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        dispatch!(self, s => s.set(key, value).await)
    }
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        dispatch!(self, s => s.delete(key).await)
    }
    pub async fn exists(&self, key: &str) -> Result<bool, KvError> {
        dispatch!(self, s => s.exists(key).await)
    }
    pub async fn keys(&self) -> Result<Vec<String>, KvError> {
        dispatch!(self, s => s.keys().await)
    }
    pub async fn get_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        dispatch!(self, s => s.get_many(keys).await)
    }
    pub async fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        dispatch!(self, s => s.set_many(pairs).await)
    }
    pub async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        dispatch!(self, s => s.delete_many(keys).await)
    }
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        dispatch!(self, s => s.increment(key, delta).await)
    }
    pub async fn snapshot(&self, key: &str) -> Result<Snapshot, KvError> {
        dispatch!(self, s => s.snapshot(key).await)
    }
    pub async fn swap(
        &self,
        key: &str,
        expected: &Snapshot,
        value: &[u8],
    ) -> Result<(), SwapError> {
        dispatch!(self, s => s.swap(key, expected, value).await)
    }
}

/// All stores of an app, by label.
#[derive(Debug, Clone, Default)]
pub struct StoreManager {
    stores: BTreeMap<String, Store>,
}

impl StoreManager {
    /// Opens every configured store; `default` is added as SQLite at
    /// `<state_dir>/sqlite_key_value.db` when the runtime config does not define it.
    pub async fn open(
        configured: &BTreeMap<String, KeyValueStoreConfig>,
        state_dir: &Path,
    ) -> Result<Self, (String, KvError)> {
        let mut all = configured.clone();
        all.entry("default".to_string())
            .or_insert_with(|| KeyValueStoreConfig::Sqlite {
                path: state_dir.join("sqlite_key_value.db"),
            });
        let mut stores = BTreeMap::new();
        for (label, config) in &all {
            let store = Store::open(label, config)
                .await
                .map_err(|e| (label.clone(), e))?;
            stores.insert(label.clone(), store);
        }
        Ok(Self { stores })
    }

    /// The store for a label.
    pub fn get(&self, label: &str) -> Option<&Store> {
        self.stores.get(label)
    }

    /// Whether a label is configured.
    pub fn contains(&self, label: &str) -> bool {
        self.stores.contains_key(label)
    }
}

/// Decodes Spin's SQLite/memory counter encoding.
pub(crate) fn decode_counter(key: &str, bytes: &[u8]) -> Result<i64, KvError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| {
        KvError::Invalid(format!(
            "increment: key `{key}` holds {} bytes, not an 8-byte little-endian counter",
            bytes.len()
        ))
    })?;
    Ok(i64::from_le_bytes(array))
}

#[cfg(test)]
pub(crate) mod contract {
    //! The CAS contract every backend must pass; each backend's tests call these.
    use super::*;

    pub async fn basic_crud(store: &Store) {
        assert_eq!(store.get("a").await.expect("get"), None);
        store.set("a", b"1").await.expect("set");
        assert_eq!(store.get("a").await.expect("get"), Some(b"1".to_vec()));
        assert!(store.exists("a").await.expect("exists"));
        store
            .set_many(&[("b".into(), b"2".to_vec())])
            .await
            .expect("set_many");
        let mut keys = store.keys().await.expect("keys");
        keys.sort();
        assert_eq!(keys, vec!["a".to_string(), "b".to_string()]);
        let many = store
            .get_many(&["a".into(), "zz".into()])
            .await
            .expect("get_many");
        assert_eq!(
            many,
            vec![("a".into(), Some(b"1".to_vec())), ("zz".into(), None)]
        );
        store.delete_many(&["a".into()]).await.expect("delete_many");
        store.delete("b").await.expect("delete");
        assert!(store.keys().await.expect("keys").is_empty());
    }

    pub async fn cas_semantics(store: &Store) {
        // Absent key: two creators race, exactly one wins.
        let s1 = store.snapshot("k").await.expect("snap");
        let s2 = store.snapshot("k").await.expect("snap");
        assert_eq!(s1.value, None);
        store
            .swap("k", &s1, b"first")
            .await
            .expect("first creator wins");
        assert!(matches!(
            store.swap("k", &s2, b"second").await,
            Err(SwapError::CasFailed)
        ));
        assert_eq!(store.get("k").await.expect("get"), Some(b"first".to_vec()));
        // Existing key: a stale snapshot loses.
        let fresh = store.snapshot("k").await.expect("snap");
        let stale = store.snapshot("k").await.expect("snap");
        store.swap("k", &fresh, b"v2").await.expect("fresh swap");
        assert!(matches!(
            store.swap("k", &stale, b"v3").await,
            Err(SwapError::CasFailed)
        ));
        // Deleted key: a snapshot of the old value loses.
        let before_delete = store.snapshot("k").await.expect("snap");
        store.delete("k").await.expect("delete");
        assert!(matches!(
            store.swap("k", &before_delete, b"v4").await,
            Err(SwapError::CasFailed)
        ));
        // Increment.
        assert_eq!(store.increment("n", 5).await.expect("incr"), 5);
        assert_eq!(store.increment("n", -2).await.expect("incr"), 3);
    }
}
