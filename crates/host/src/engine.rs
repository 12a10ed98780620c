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
        let mut reuse = SlotReuse::for_this_kernel();
        loop {
            let mut pooled = wasm.clone();
            pooled.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool_config(
                config.limits.max_instances.max(1),
                reuse,
            )));
            match wasmtime::Engine::new(&pooled) {
                Ok(engine) => return Ok(engine),
                // The kernel is new enough but the ioctl is unavailable (e.g. filtered by a
                // sandbox): reset slots the way older kernels need instead.
                Err(e) if reuse.pagemap => {
                    tracing::warn!(tag = "engine", error = %e, reason = "PAGEMAP_SCAN unavailable");
                    reuse = SlotReuse::WITHOUT_PAGEMAP;
                }
                Err(e) => {
                    tracing::warn!(
                        tag = "engine",
                        error = %e,
                        reason = "pooling allocator unavailable; falling back to on-demand allocation",
                    );
                    break;
                }
            }
        }
    }
    wasmtime::Engine::new(&wasm).map_err(|e| LoadError::Engine(format!("{e:#}")))
}

/// Per-component ceilings: a component needing more is refused at load (wasmtime checks them in
/// `Component::new`). Our composed components use a fraction (docs/reliability.md).
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 64;
const MAX_MEMORIES_PER_COMPONENT: u32 = 16;
const MAX_TABLES_PER_COMPONENT: u32 = 64;

/// The pool for `n` concurrent component instances, its slots reset as `reuse` says.
///
/// Every total is `n` times the per-component ceiling, so `n` live instances of any component the
/// engine accepts always fit: with admission capped at `n` instances ([`crate::admission`]),
/// instantiation never fails for want of pool space. The old totals (8 core instances, 4 memories
/// per instance) ran out at about 200 concurrent requests of a composed component (a 500 with an
/// empty body). Core instances are only counted (their state is allocated on demand); memories
/// and tables reserve address space, not RAM.
fn pool_config(n: u32, reuse: SlotReuse) -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(MAX_CORE_INSTANCES_PER_COMPONENT))
        .total_memories(n.saturating_mul(MAX_MEMORIES_PER_COMPONENT))
        .total_tables(n.saturating_mul(MAX_TABLES_PER_COMPONENT))
        .total_stacks(n)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_component_instance_size(10 * 1024 * 1024)
        .linear_memory_keep_resident(env_or("KILOCLAW_POOL_KEEP_RESIDENT", reuse.memory))
        .table_keep_resident(env_or("KILOCLAW_POOL_TABLE_KEEP_RESIDENT", reuse.table))
        .pagemap_scan(if reuse.pagemap {
            wasmtime::Enabled::Yes
        } else {
            wasmtime::Enabled::No
        })
        // Returning a slot's pages (madvise) makes the kernel shoot down TLB entries on every
        // core; batching the decommits amortises those interrupts over many instances.
        .decommit_batch_size(env_or(
            "KILOCLAW_POOL_DECOMMIT_BATCH",
            DEFAULT_DECOMMIT_BATCH,
        ));
    pool
}

/// A `usize` tuning knob from the environment, for experiments (docs/benchmarks.md).
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// How a pooled slot's pages are reset between instances. Measured on the router's `/health` at c=16
/// on 2 cores (docs/benchmarks.md, "Slot reuse"):
///
/// - Returning every page with `madvise` (keep nothing resident) makes the next instance fault its pages
///   back in; the copy-on-write faults on the memory image and the tables each flush the TLB of every
///   core the process runs on (an IPI), about a quarter of the request's CPU.
/// - Keeping pages resident and resetting them with `memset` avoids the faults but zeroes the whole
///   kept range every time: 2 MiB per memory cost more than the faults (492 vs 368 µs per request).
/// - With Linux's `PAGEMAP_SCAN` (6.7+), wasmtime finds the pages an instance actually wrote and
///   resets only those, so a large resident range costs only what was touched: 387 → 290 µs.
///
/// So: a large resident range with `PAGEMAP_SCAN` where the kernel has it, none without.
/// `KILOCLAW_POOL_KEEP_RESIDENT` and `KILOCLAW_POOL_TABLE_KEEP_RESIDENT` (bytes) and
/// `KILOCLAW_POOL_PAGEMAP` (`0`/`1`) override it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotReuse {
    memory: usize,
    table: usize,
    pagemap: bool,
}

impl SlotReuse {
    /// Nothing kept resident: every page returned with `madvise`.
    const WITHOUT_PAGEMAP: Self = Self {
        memory: 0,
        table: 0,
        pagemap: false,
    };

    fn for_this_kernel() -> Self {
        let pagemap = match std::env::var("KILOCLAW_POOL_PAGEMAP").as_deref() {
            Ok("0") => false,
            Ok("1") => true,
            _ => std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .is_ok_and(|release| kernel_has_pagemap_scan(&release)),
        };
        if pagemap {
            Self {
                memory: 8 << 20,
                table: 1 << 20,
                pagemap,
            }
        } else {
            Self::WITHOUT_PAGEMAP
        }
    }
}

/// `PAGEMAP_SCAN` arrived in Linux 6.7.
fn kernel_has_pagemap_scan(release: &str) -> bool {
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (6, 7),
        _ => false,
    }
}

/// Decommits flushed together (`KILOCLAW_POOL_DECOMMIT_BATCH` overrides it).
const DEFAULT_DECOMMIT_BATCH: usize = 32;

#[cfg(test)]
mod tests {
    use super::kernel_has_pagemap_scan;

    #[test]
    fn pagemap_scan_needs_linux_6_7() {
        assert!(kernel_has_pagemap_scan("6.18.44-fc-v657\n"));
        assert!(kernel_has_pagemap_scan("6.7.0"));
        assert!(kernel_has_pagemap_scan("7.0.1-arch1"));
        assert!(!kernel_has_pagemap_scan("6.6.87.2-microsoft-standard-WSL2"));
        assert!(!kernel_has_pagemap_scan("5.15.0-105-generic"));
        assert!(!kernel_has_pagemap_scan("garbage"));
    }
}
