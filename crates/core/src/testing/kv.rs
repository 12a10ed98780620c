//! [`MemoryKv`]: a correct in-memory bucket plus fault injection.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::Stall;
use crate::kv::{CasOutcome, KeyValue, KvError};

/// Operations that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// `get` and `get_many`.
    Get,
    /// `set`.
    Set,
    /// `delete`.
    Delete,
    /// `increment`.
    Increment,
    /// `compare_and_swap`.
    Cas,
}

type Writer = Box<dyn FnMut(Option<Vec<u8>>) -> Vec<u8> + Send>;

#[derive(Default)]
struct State {
    data: BTreeMap<String, Vec<u8>>,
    forced_conflicts: HashMap<String, u32>,
    concurrent_writers: HashMap<String, Vec<Writer>>,
    failures: HashMap<KvOp, u32>,
    cas_calls: u64,
    set_stalls: HashMap<String, Stall>,
}

/// An in-memory bucket with the semantics a correct backend has: CAS compares with the value read, an
/// absent expected value means insert-if-absent, counters are 8-byte little-endian like Spin's SQLite.
#[derive(Default)]
pub struct MemoryKv {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryKv").finish_non_exhaustive()
    }
}

impl MemoryKv {
    /// An empty bucket.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking test thread must not hide the data from the others.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next `count` CAS calls on `key` report a conflict without writing (as if another writer won).
    pub fn force_conflicts(&self, key: &str, count: u32) {
        *self
            .lock()
            .forced_conflicts
            .entry(key.to_owned())
            .or_default() += count;
    }

    /// Before the next CAS on `key`, another writer replaces the value with `write(current)`, so the CAS
    /// sees a changed value (the "concurrent writer between current() and swap" case).
    pub fn write_concurrently_before_next_cas(
        &self,
        key: &str,
        write: impl FnMut(Option<Vec<u8>>) -> Vec<u8> + Send + 'static,
    ) {
        self.lock()
            .concurrent_writers
            .entry(key.to_owned())
            .or_default()
            .push(Box::new(write));
    }

    /// The next `set` of `key` stops just before writing until the returned [`Stall`] is released (a writer
    /// that decided to write and was then descheduled, while everyone else went on).
    pub fn stall_next_set(&self, key: &str) -> Stall {
        let stall = Stall::new();
        self.lock().set_stalls.insert(key.to_owned(), stall.clone());
        stall
    }

    /// The next `count` calls of `op` fail with `KvError::Other`.
    pub fn fail_next(&self, op: KvOp, count: u32) {
        *self.lock().failures.entry(op).or_default() += count;
    }

    /// Number of CAS calls so far.
    pub fn cas_calls(&self) -> u64 {
        self.lock().cas_calls
    }

    /// All keys, sorted (for assertions).
    pub fn keys(&self) -> Vec<String> {
        self.lock().data.keys().cloned().collect()
    }

    /// The stored bytes of `key` (for tests that check nothing was written).
    pub fn raw(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().data.get(key).cloned()
    }

    /// Writes raw bytes (for tests that plant corrupt data).
    pub fn put_raw(&self, key: &str, value: &[u8]) {
        self.lock().data.insert(key.to_owned(), value.to_vec());
    }

    fn check_failure(state: &mut State, op: KvOp) -> Result<(), KvError> {
        if let Some(left) = state.failures.get_mut(&op)
            && *left > 0
        {
            *left -= 1;
            return Err(KvError::Other(format!("injected {op:?} failure")));
        }
        Ok(())
    }
}

impl KeyValue for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let mut state = self.lock();
        Self::check_failure(&mut state, KvOp::Get)?;
        Ok(state.data.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        // Held outside the lock, so the rest of the world can use the bucket meanwhile.
        let stall = self.lock().set_stalls.remove(key);
        if let Some(stall) = stall {
            stall.hold();
        }
        let mut state = self.lock();
        Self::check_failure(&mut state, KvOp::Set)?;
        state.data.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), KvError> {
        let mut state = self.lock();
        Self::check_failure(&mut state, KvOp::Delete)?;
        state.data.remove(key);
        Ok(())
    }

    fn exists(&self, key: &str) -> Result<bool, KvError> {
        let mut state = self.lock();
        Self::check_failure(&mut state, KvOp::Get)?;
        Ok(state.data.contains_key(key))
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut state = self.lock();
        Self::check_failure(&mut state, KvOp::Increment)?;
        let current = match state.data.get(key) {
            None => 0,
            Some(bytes) => {
                let array: [u8; 8] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| KvError::Other(format!("{key} is not a counter")))?;
                i64::from_le_bytes(array)
            }
        };
        let next = current + delta;
        state
            .data
            .insert(key.to_owned(), next.to_le_bytes().to_vec());
        Ok(next)
    }

    fn get_many(&self, keys: &[String]) -> Result<crate::kv::KeyValues, KvError> {
        let mut state = self.lock();
        Self::check_failure(&mut state, KvOp::Get)?;
        Ok(keys
            .iter()
            .map(|k| (k.clone(), state.data.get(k).cloned()))
            .collect())
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<CasOutcome, KvError> {
        let mut state = self.lock();
        state.cas_calls += 1;
        Self::check_failure(&mut state, KvOp::Cas)?;
        if let Some(writers) = state.concurrent_writers.get_mut(key)
            && !writers.is_empty()
        {
            let mut write = writers.remove(0);
            let current = state.data.get(key).cloned();
            let written = write(current);
            state.data.insert(key.to_owned(), written);
        }
        if let Some(left) = state.forced_conflicts.get_mut(key)
            && *left > 0
        {
            *left -= 1;
            return Ok(CasOutcome::Conflict {
                current: state.data.get(key).cloned(),
            });
        }
        let current = state.data.get(key).map(Vec::as_slice);
        if current != expected {
            return Ok(CasOutcome::Conflict {
                current: current.map(<[u8]>::to_vec),
            });
        }
        state.data.insert(key.to_owned(), new.to_vec());
        Ok(CasOutcome::Swapped)
    }
}
