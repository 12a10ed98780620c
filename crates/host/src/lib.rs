//! A Spin-compatible host on wasmtime: manifest, composition, HTTP and cron triggers, key-value, variables, outbound HTTP.
