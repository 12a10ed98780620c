//! The core's boundary traits over Spin's guest APIs, shared by the components so that each of
//! them stays a thin shell:
//! - [`kv`]: `KeyValue` over `wasi:keyvalue` (bucket `default`) or outbound Redis ([`redis_store`]),
//!   chosen by the `store_redis_url` variable ([`kv::open_configured`]);
//! - [`postgres`]: the Next.js app's tables (`kilocode_users`, `kiloclaw_instances`,
//!   `kiloclaw_access_codes`) over `spin:postgres/postgres@4.0.0`;
//! - [`variable`], [`HostRandom`], [`install_logger`]: Spin variables, the host's randomness, and
//!   the JSON log lines on stderr.
//!
//! Components keep no state between calls: everything here is opened per exported call.

pub mod kv;
pub mod postgres;
pub mod redis_store;

use kiloclaw_core::clock::Random;

/// A Spin variable, trimmed; `None` when unset, empty, or not visible to this component.
pub fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Randomness from the host (`wasi:random`, a cryptographic source): lease owner ids, jitter,
/// access codes.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostRandom;

impl Random for HostRandom {
    fn next_u64(&self) -> u64 {
        wasi::random::random::get_random_u64()
    }
}

/// Sends the core's `tracing` events (one JSON line per decision and lifecycle step) to stderr,
/// which Spin hosts collect as the component's log. Installed once per instance.
pub fn install_logger() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // A host that already installed a subscriber keeps it.
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_target(false)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::stderr)
            .try_init();
    });
}
