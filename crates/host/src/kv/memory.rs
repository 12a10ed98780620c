//! An in-process store (runtime-config `type = "memory"`, our extension, or Spin's `type = "spin"`
//! without a path). Every write gets a fresh version from one counter, so CAS is exact (no ABA).

use super::{KvError, Snapshot, SwapError, decode_counter};
use std::collections::HashMap;
use std::sync::Mutex;

/// A process-local store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, (Vec<u8>, i64)>,
    next_version: i64,
}

impl Inner {
    fn put(&mut self, key: &str, value: Vec<u8>) {
        self.next_version += 1;
        let version = self.next_version;
        self.entries.insert(key.to_string(), (value, version));
    }
}

impl MemoryStore {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, KvError> {
        self.inner
            .lock()
            .map_err(|_| KvError::Backend("memory store poisoned".into()))
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.lock()?.entries.get(key).map(|(v, _)| v.clone()))
    }
    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.lock()?.put(key, value.to_vec());
        Ok(())
    }
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.lock()?.entries.remove(key);
        Ok(())
    }
    pub async fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.lock()?.entries.contains_key(key))
    }
    pub async fn keys(&self) -> Result<Vec<String>, KvError> {
        Ok(self.lock()?.entries.keys().cloned().collect())
    }
    pub async fn get_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        let inner = self.lock()?;
        Ok(keys
            .iter()
            .map(|k| (k.clone(), inner.entries.get(k).map(|(v, _)| v.clone())))
            .collect())
    }
    pub async fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        let mut inner = self.lock()?;
        for (k, v) in pairs {
            inner.put(k, v.clone());
        }
        Ok(())
    }
    pub async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        let mut inner = self.lock()?;
        for k in keys {
            inner.entries.remove(k);
        }
        Ok(())
    }
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut inner = self.lock()?;
        let current = match inner.entries.get(key) {
            Some((bytes, _)) => decode_counter(key, bytes)?,
            None => 0,
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| KvError::Invalid(format!("increment: counter `{key}` overflows")))?;
        inner.put(key, next.to_le_bytes().to_vec());
        Ok(next)
    }
    pub async fn snapshot(&self, key: &str) -> Result<Snapshot, KvError> {
        let inner = self.lock()?;
        Ok(match inner.entries.get(key) {
            Some((v, version)) => Snapshot {
                value: Some(v.clone()),
                version: Some(*version),
            },
            None => Snapshot {
                value: None,
                version: None,
            },
        })
    }
    pub async fn swap(
        &self,
        key: &str,
        expected: &Snapshot,
        value: &[u8],
    ) -> Result<(), SwapError> {
        let mut inner = self.lock()?;
        let unchanged = match (inner.entries.get(key), expected.version) {
            (None, None) => expected.value.is_none(),
            (Some((_, version)), Some(expected_version)) => *version == expected_version,
            _ => false,
        };
        if !unchanged {
            return Err(SwapError::CasFailed);
        }
        inner.put(key, value.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Store, contract};
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn contract_holds() {
        let store = Store::Memory(Arc::new(MemoryStore::default()));
        contract::basic_crud(&store).await;
        contract::cas_semantics(&store).await;
    }
}
