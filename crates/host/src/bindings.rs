//! Host bindings generated from `crates/host/wit` (the Spin 5.2 SDK's WIT plus our cron world).

/// `fermyon:spin/{key-value,variables,redis}@2.0.0`, `spin:postgres/postgres@4.0.0` and
/// `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2`.
pub mod spin {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "kiloclaw:host/spin-imports",
        imports: { default: async | trappable },
        with: {
            "fermyon:spin/key-value.store": crate::kv::host::BucketResource,
            "fermyon:spin/redis.connection": crate::outbound::redis::RedisConnection,
            "spin:postgres/postgres.connection": crate::outbound::postgres::PgConnection,
            "wasi:keyvalue/store.bucket": crate::kv::host::BucketResource,
            "wasi:keyvalue/atomics.cas": crate::kv::host::CasResource,
        },
    });
}

/// The `fermyon:spin-cron@2.0.0` world: the `handle-cron-event` export.
pub mod cron {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "kiloclaw:host/cron-guest",
        exports: { default: async },
    });
}
