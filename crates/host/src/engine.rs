//! The wasmtime engine: component model, pooling allocator, on-disk compilation cache.

use crate::{HostConfig, LoadError};

/// Builds the engine for a host configuration.
pub(crate) fn build(config: &HostConfig) -> Result<wasmtime::Engine, LoadError> {
    let mut wasm = wasmtime::Config::new();
    wasm.wasm_component_model(true);
    if let Some(dir) = &config.compile_cache_dir {
        // Tests and `kiloclaw up` start the host many times on the same components; the cache
        // turns a multi-second Cranelift compile into a file read.
        let mut cache = wasmtime::CacheConfig::new();
        cache.with_directory(dir);
        match wasmtime::Cache::new(cache) {
            Ok(cache) => {
                wasm.cache(Some(cache));
            }
            Err(e) => tracing::warn!(tag = "engine", error = %e, "compilation cache disabled"),
        }
    }
    if config.pooling {
        // Why pooling: instantiation from pre-reserved slots takes microseconds, which is what
        // makes "a fresh instance per request" affordable (Spin makes the same choice).
        let n = config.limits.max_instances.max(1);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            // A composed app is several core instances and memories per component instance.
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(4))
            .total_tables(n.saturating_mul(8))
            .total_stacks(n)
            .max_memories_per_component(32)
            .max_tables_per_component(64)
            .max_core_instances_per_component(64)
            .max_component_instance_size(10 * 1024 * 1024)
            .linear_memory_keep_resident(2 * 1024 * 1024);
        let mut pooled = wasm.clone();
        pooled.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        match wasmtime::Engine::new(&pooled) {
            Ok(engine) => return Ok(engine),
            Err(e) => tracing::warn!(
                tag = "engine",
                error = %e,
                reason = "pooling allocator unavailable; falling back to on-demand allocation",
            ),
        }
    }
    wasmtime::Engine::new(&wasm).map_err(|e| LoadError::Engine(format!("{e:#}")))
}
