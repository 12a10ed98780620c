//! The wasmtime engine: component model, pooling allocator, on-disk compilation cache.

use crate::{HostConfig, LoadError};

/// Builds the engine for a host configuration.
pub(crate) fn build(config: &HostConfig) -> Result<wasmtime::Engine, LoadError> {
    let mut wasm = wasmtime::Config::new();
    wasm.wasm_component_model(true);
    if std::env::var_os("KILOCLAW_WASM_PERFMAP").is_some() {
        // For profiling with `perf record`: names the JIT-compiled guest functions in
        // /tmp/perf-<pid>.map (docs/benchmarks.md shows how).
        wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
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
            .linear_memory_keep_resident(env_or(
                "KILOCLAW_POOL_KEEP_RESIDENT",
                DEFAULT_KEEP_RESIDENT,
            ))
            // Returning a slot's pages (madvise) makes the kernel shoot down TLB entries on every
            // core; batching the decommits amortises those interrupts over many instances.
            .decommit_batch_size(env_or(
                "KILOCLAW_POOL_DECOMMIT_BATCH",
                DEFAULT_DECOMMIT_BATCH,
            ));
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

/// A `usize` tuning knob from the environment, for experiments (docs/benchmarks.md).
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Bytes of each linear memory that a pooled slot keeps resident and resets with `memset` when an
/// instance ends (the rest is returned with `madvise`). Measured on the router's `/health` at c=16
/// (docs/benchmarks.md): 2 MiB cost 492 µs of CPU per request, 64 KiB 437 µs, none 368 µs — the
/// composed component has several memories and zeroing them outweighs the page faults saved.
/// `KILOCLAW_POOL_KEEP_RESIDENT` (bytes) overrides it.
const DEFAULT_KEEP_RESIDENT: usize = 0;

/// Decommits flushed together (`KILOCLAW_POOL_DECOMMIT_BATCH` overrides it).
const DEFAULT_DECOMMIT_BATCH: usize = 32;
