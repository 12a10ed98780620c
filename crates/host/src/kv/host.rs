//! The guest-facing key-value interfaces, both bound to [`super::Store`]:
//! `fermyon:spin/key-value@2.0.0` and `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2`.
//!
//! Opening a label the component does not list in `key_value_stores` is `access-denied`, as in
//! Spin; labels that are listed but not configured never get this far (load-time error).

use super::{Snapshot, Store, SwapError};
use crate::bindings::spin::fermyon::spin::key_value as spin_kv;
use crate::bindings::spin::wasi::keyvalue::{atomics, batch, store as wasi_kv};
use crate::metrics::KvOutcome;
use crate::state::InstanceState;
use wasmtime::component::Resource;

/// An open store handle.
#[derive(Debug, Clone)]
pub struct BucketResource {
    label: String,
    store: Store,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl BucketResource {
    /// Counts one operation's outcome and passes its result on.
    fn observed<T>(
        &self,
        operation: &str,
        result: Result<T, super::KvError>,
    ) -> Result<T, super::KvError> {
        let outcome = if result.is_ok() {
            KvOutcome::Ok
        } else {
            KvOutcome::Error
        };
        self.metrics.observe_kv(&self.label, operation, outcome);
        result
    }

    /// A write: counted like [`Self::observed`], and a test-only crash point once it succeeded.
    fn written<T>(
        &self,
        operation: &str,
        key: &str,
        result: Result<T, super::KvError>,
    ) -> Result<T, super::KvError> {
        let result = self.observed(operation, result);
        if result.is_ok() {
            wrote(self, operation, key);
        }
        result
    }
}

/// A CAS handle: the key and what `new` observed.
#[derive(Debug, Clone)]
pub struct CasResource {
    bucket: BucketResource,
    key: String,
    snapshot: Snapshot,
}

fn spin_err(e: super::KvError) -> spin_kv::Error {
    spin_kv::Error::Other(e.to_string())
}

fn wasi_err(e: super::KvError) -> wasi_kv::Error {
    wasi_kv::Error::Other(e.to_string())
}

/// A test-only crash point after a completed write (see [`crate::crash`]).
fn wrote(bucket: &BucketResource, operation: &str, key: &str) {
    crate::crash::point(|| format!("after key-value {operation} {key} in {}", bucket.label));
}

impl InstanceState {
    fn open_bucket(&self, label: &str) -> Option<BucketResource> {
        self.component
            .stores
            .get(label)
            .map(|store| BucketResource {
                label: label.to_string(),
                store: store.clone(),
                metrics: self.component.metrics.clone(),
            })
    }

    fn bucket(&self, r: &Resource<BucketResource>) -> wasmtime::Result<BucketResource> {
        Ok(self.table.get(r)?.clone())
    }
}

impl spin_kv::Host for InstanceState {}

impl spin_kv::HostStore for InstanceState {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<BucketResource>, spin_kv::Error>> {
        match self.open_bucket(&label) {
            Some(bucket) => Ok(Ok(self.table.push(bucket)?)),
            None => Ok(Err(spin_kv::Error::AccessDenied)),
        }
    }

    async fn get(
        &mut self,
        r: Resource<BucketResource>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, spin_kv::Error>> {
        let b = self.bucket(&r)?;
        Ok(b.observed("get", b.store.get(&key).await).map_err(spin_err))
    }

    async fn set(
        &mut self,
        r: Resource<BucketResource>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let b = self.bucket(&r)?;
        Ok(b.written("set", &key, b.store.set(&key, &value).await)
            .map_err(spin_err))
    }

    async fn delete(
        &mut self,
        r: Resource<BucketResource>,
        key: String,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let b = self.bucket(&r)?;
        Ok(b.written("delete", &key, b.store.delete(&key).await)
            .map_err(spin_err))
    }

    async fn exists(
        &mut self,
        r: Resource<BucketResource>,
        key: String,
    ) -> wasmtime::Result<Result<bool, spin_kv::Error>> {
        let b = self.bucket(&r)?;
        Ok(b.observed("exists", b.store.exists(&key).await)
            .map_err(spin_err))
    }

    async fn get_keys(
        &mut self,
        r: Resource<BucketResource>,
    ) -> wasmtime::Result<Result<Vec<String>, spin_kv::Error>> {
        let b = self.bucket(&r)?;
        Ok(b.observed("keys", b.store.keys().await).map_err(spin_err))
    }

    async fn drop(&mut self, r: Resource<BucketResource>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl wasi_kv::Host for InstanceState {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<BucketResource>, wasi_kv::Error>> {
        match self.open_bucket(&identifier) {
            Some(bucket) => Ok(Ok(self.table.push(bucket)?)),
            None => Ok(Err(wasi_kv::Error::AccessDenied)),
        }
    }
}

impl wasi_kv::HostBucket for InstanceState {
    async fn get(
        &mut self,
        r: Resource<BucketResource>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        let b = self.bucket(&r)?;
        Ok(b.observed("get", b.store.get(&key).await).map_err(wasi_err))
    }

    async fn set(
        &mut self,
        r: Resource<BucketResource>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let b = self.bucket(&r)?;
        Ok(b.written("set", &key, b.store.set(&key, &value).await)
            .map_err(wasi_err))
    }

    async fn delete(
        &mut self,
        r: Resource<BucketResource>,
        key: String,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let b = self.bucket(&r)?;
        Ok(b.written("delete", &key, b.store.delete(&key).await)
            .map_err(wasi_err))
    }

    async fn exists(
        &mut self,
        r: Resource<BucketResource>,
        key: String,
    ) -> wasmtime::Result<Result<bool, wasi_kv::Error>> {
        let b = self.bucket(&r)?;
        Ok(b.observed("exists", b.store.exists(&key).await)
            .map_err(wasi_err))
    }

    async fn list_keys(
        &mut self,
        r: Resource<BucketResource>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<wasi_kv::KeyResponse, wasi_kv::Error>> {
        if cursor.is_some() {
            return Ok(Err(wasi_kv::Error::Other(
                "list_keys: cursor not supported".into(),
            )));
        }
        let b = self.bucket(&r)?;
        Ok(b.store
            .keys()
            .await
            .map(|keys| wasi_kv::KeyResponse { keys, cursor: None })
            .map_err(wasi_err))
    }

    async fn drop(&mut self, r: Resource<BucketResource>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl atomics::Host for InstanceState {
    async fn increment(
        &mut self,
        bucket: Resource<BucketResource>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, wasi_kv::Error>> {
        let b = self.bucket(&bucket)?;
        Ok(
            b.written("increment", &key, b.store.increment(&key, delta).await)
                .map_err(wasi_err),
        )
    }

    async fn swap(
        &mut self,
        cas: Resource<CasResource>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let cas = self.table.delete(cas)?;
        let swapped = cas.bucket.store.swap(&cas.key, &cas.snapshot, &value).await;
        let outcome = match &swapped {
            Ok(()) => KvOutcome::Ok,
            Err(SwapError::CasFailed) => KvOutcome::CasConflict,
            Err(SwapError::Store(_)) => KvOutcome::Error,
        };
        cas.bucket
            .metrics
            .observe_kv(&cas.bucket.label, "compare-and-swap", outcome);
        match swapped {
            Ok(()) => {
                wrote(&cas.bucket, "compare-and-swap", &cas.key);
                Ok(Ok(()))
            }
            Err(SwapError::CasFailed) => {
                tracing::debug!(tag = "kv", store = %cas.bucket.label, action = "cas-failed");
                // As Spin: hand back a fresh handle that has already re-read the key.
                match cas.bucket.store.snapshot(&cas.key).await {
                    Ok(snapshot) => {
                        let fresh = self.table.push(CasResource {
                            bucket: cas.bucket,
                            key: cas.key,
                            snapshot,
                        })?;
                        Ok(Err(atomics::CasError::CasFailed(fresh)))
                    }
                    Err(e) => Ok(Err(atomics::CasError::StoreError(wasi_err(e)))),
                }
            }
            Err(SwapError::Store(e)) => Ok(Err(atomics::CasError::StoreError(wasi_err(e)))),
        }
    }
}

impl atomics::HostCas for InstanceState {
    async fn new(
        &mut self,
        bucket: Resource<BucketResource>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<CasResource>, wasi_kv::Error>> {
        let b = self.bucket(&bucket)?;
        match b.observed("snapshot", b.store.snapshot(&key).await) {
            Ok(snapshot) => Ok(Ok(self.table.push(CasResource {
                bucket: b,
                key,
                snapshot,
            })?)),
            Err(e) => Ok(Err(wasi_err(e))),
        }
    }

    async fn current(
        &mut self,
        cas: Resource<CasResource>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        Ok(Ok(self.table.get(&cas)?.snapshot.value.clone()))
    }

    async fn drop(&mut self, r: Resource<CasResource>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl batch::Host for InstanceState {
    async fn get_many(
        &mut self,
        bucket: Resource<BucketResource>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, wasi_kv::Error>> {
        let b = self.bucket(&bucket)?;
        Ok(b.observed("get-many", b.store.get_many(&keys).await)
            .map_err(wasi_err))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<BucketResource>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let b = self.bucket(&bucket)?;
        let first = key_values.first().map(|(key, _)| key.as_str());
        Ok(b.written(
            "set-many",
            first.unwrap_or_default(),
            b.store.set_many(&key_values).await,
        )
        .map_err(wasi_err))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<BucketResource>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let b = self.bucket(&bucket)?;
        let first = keys.first().map(String::as_str);
        Ok(b.written(
            "delete-many",
            first.unwrap_or_default(),
            b.store.delete_many(&keys).await,
        )
        .map_err(wasi_err))
    }
}
