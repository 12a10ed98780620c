//! The instance store's backends: `wasi:keyvalue@0.2.0-draft2` (store + atomics + batch) on the
//! `default` bucket, or outbound Redis ([`crate::redis_store`]) when `store_redis_url` is set.
//!
//! Compare-and-swap always calls `current()` before `swap`: Spin's SQLite backend turns a swap
//! without a prior `current()` into a blind write (spin-platform.md §2). The store protocol in
//! `kiloclaw_core::store` keeps a version inside every value, so value comparison is safe from ABA.

use kiloclaw_core::kv::{CasOutcome, KeyValue, KeyValues, KvError};
use spin_sdk::wit::wasi::keyvalue::{atomics, batch, store};

/// The one store label the app declares (`key_value_stores = ["default"]`).
pub const BUCKET: &str = "default";

/// The `default` bucket, opened for the duration of one exported call.
pub struct SpinBucket {
    bucket: store::Bucket,
}

fn kv_error(error: store::Error) -> KvError {
    match error {
        store::Error::NoSuchStore => KvError::NoSuchStore,
        store::Error::AccessDenied => KvError::AccessDenied,
        store::Error::Other(message) => KvError::Other(message),
    }
}

impl SpinBucket {
    /// Opens the `default` bucket.
    pub fn open() -> Result<Self, KvError> {
        store::open(BUCKET)
            .map(|bucket| Self { bucket })
            .map_err(kv_error)
    }
}

impl KeyValue for SpinBucket {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.bucket.get(key).map_err(kv_error)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.bucket.set(key, value).map_err(kv_error)
    }

    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.bucket.delete(key).map_err(kv_error)
    }

    fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.bucket.exists(key).map_err(kv_error)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        atomics::increment(&self.bucket, key, delta).map_err(kv_error)
    }

    fn get_many(&self, keys: &[String]) -> Result<KeyValues, KvError> {
        let found = batch::get_many(&self.bucket, keys).map_err(kv_error)?;
        // Backends need not answer in request order (nor list absent keys): re-order explicitly.
        let mut by_key: std::collections::HashMap<String, Option<Vec<u8>>> =
            found.into_iter().collect();
        Ok(keys
            .iter()
            .map(|key| (key.clone(), by_key.remove(key).flatten()))
            .collect())
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<CasOutcome, KvError> {
        let cas = atomics::Cas::new(&self.bucket, key).map_err(kv_error)?;
        let current = cas.current().map_err(kv_error)?;
        if current.as_deref() != expected {
            return Ok(CasOutcome::Conflict { current });
        }
        match atomics::swap(cas, new) {
            Ok(()) => Ok(CasOutcome::Swapped),
            Err(atomics::CasError::CasFailed(fresh)) => Ok(CasOutcome::Conflict {
                current: fresh.current().map_err(kv_error)?,
            }),
            Err(atomics::CasError::StoreError(error)) => Err(kv_error(error)),
        }
    }
}

/// The store one exported call uses, chosen by the `store_redis_url` variable: empty → Spin's
/// `default` key-value store (SQLite on Spin; our host's configured backend), set → outbound Redis
/// (the multi-process choice on Spin, whose own Redis key-value CAS is broken).
pub type Bucket = Box<dyn KeyValue>;

/// Opens the configured backend; `redis` is `(address, key prefix)`.
pub fn open(redis: Option<(&str, &str)>) -> Result<Bucket, KvError> {
    Ok(match redis {
        Some((address, prefix)) => Box::new(crate::redis_store::open(address, prefix)?),
        None => Box::new(SpinBucket::open()?),
    })
}

/// The key prefix under which the store lives in a shared Redis when `store_redis_key_prefix` is unset.
const DEFAULT_REDIS_KEY_PREFIX: &str = "kiloclaw:";

/// The store the `store_redis_url` and `store_redis_key_prefix` variables select.
pub fn open_configured() -> Result<Bucket, KvError> {
    let redis_url = crate::variable("store_redis_url");
    let prefix = crate::variable("store_redis_key_prefix");
    let redis = redis_url
        .as_deref()
        .map(|url| (url, prefix.as_deref().unwrap_or(DEFAULT_REDIS_KEY_PREFIX)));
    open(redis)
}
