//! The key-value boundary: what a Spin component can do through `wasi:keyvalue@0.2.0-draft2`
//! (store + atomics + batch), as one synchronous trait.
//!
//! [`KeyValue::compare_and_swap`] maps onto `Cas::new` + `current()` + `swap`: an implementation must read
//! the current value first, compare it with `expected`, and only then swap, reporting a conflict together
//! with the fresh current value. The store protocol (`store` module) never calls it with `expected = None`,
//! because Spin's SQLite backend turns a swap on an absent key into an unconditional write.

/// A failure of the key-value store itself (not a CAS conflict).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The store label is not configured for this component. Not retryable (configuration).
    #[error("key-value store not found")]
    NoSuchStore,
    /// The component may not open the store. Not retryable (configuration).
    #[error("key-value access denied")]
    AccessDenied,
    /// Any other backend failure (busy database, connection loss, "too many requests"). Retryable.
    #[error("key-value store error: {0}")]
    Other(String),
}

/// Result of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The new value was written.
    Swapped,
    /// The value was not `expected`; nothing was written. Carries the value seen instead.
    Conflict {
        /// The current value (`None`: the key is absent).
        current: Option<Vec<u8>>,
    },
}

/// Keys and values as `get_many` returns them.
pub type KeyValues = Vec<(String, Option<Vec<u8>>)>;

/// A key-value bucket with atomics. All methods are synchronous; components block on the host call.
pub trait KeyValue {
    /// The value of `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Writes `value` unconditionally.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// Removes `key`; removing an absent key succeeds.
    fn delete(&self, key: &str) -> Result<(), KvError>;
    /// Whether `key` has a value.
    fn exists(&self, key: &str) -> Result<bool, KvError>;
    /// Atomically adds `delta` to the counter at `key` (absent = 0) and returns the new value. Counter
    /// encodings differ per backend, so a counter is only ever read with `increment(key, 0)`.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Values of several keys, in the order asked.
    fn get_many(&self, keys: &[String]) -> Result<KeyValues, KvError>;
    /// Writes `new` only if the current value equals `expected` (read with `current()` first).
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<CasOutcome, KvError>;
}

impl<T: KeyValue + ?Sized> KeyValue for &T {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        (**self).get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        (**self).set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), KvError> {
        (**self).delete(key)
    }
    fn exists(&self, key: &str) -> Result<bool, KvError> {
        (**self).exists(key)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        (**self).increment(key, delta)
    }
    fn get_many(&self, keys: &[String]) -> Result<KeyValues, KvError> {
        (**self).get_many(keys)
    }
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<CasOutcome, KvError> {
        (**self).compare_and_swap(key, expected, new)
    }
}
