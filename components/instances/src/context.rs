//! What one exported call works with: the `default` bucket, the wall clock, host randomness, the
//! deployment settings (Spin variables) and a Fly API client. Built afresh per call; components keep
//! no state between calls.

use kiloclaw_core::clock::{Random, SystemClock};
use kiloclaw_core::fly::{DEFAULT_BASE_URL, FlyClient, FlyClientConfig};
use kiloclaw_core::settings::Settings;

use crate::bindings::exports::kiloclaw::instances::instances::InstanceError;
use crate::errors;
use crate::kv::Bucket;
use crate::transport::WasiHttpTransport;

/// A Spin variable, `None` when unset, empty, or not visible to this component.
pub fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Randomness from the host (`wasi:random`): lease owner ids and reconcile jitter.
pub struct HostRandom;

impl Random for HostRandom {
    fn next_u64(&self) -> u64 {
        wasi::random::random::get_random_u64()
    }
}

/// Sends the core's `tracing` events (one JSON line per reconcile decision and lifecycle step) to
/// stderr, which Spin hosts collect as the component's log. Installed once per instance.
fn install_logger() {
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

/// The key prefix under which the store lives in a shared Redis when `store_redis_key_prefix` is unset.
const DEFAULT_REDIS_KEY_PREFIX: &str = "kiloclaw:";

/// The store the `store_redis_url` variable selects (see [`Bucket`]).
pub fn open_bucket() -> Result<Bucket, InstanceError> {
    let redis_url = variable("store_redis_url");
    let prefix = variable("store_redis_key_prefix");
    let redis = redis_url
        .as_deref()
        .map(|url| (url, prefix.as_deref().unwrap_or(DEFAULT_REDIS_KEY_PREFIX)));
    crate::kv::open(redis).map_err(errors::from_kv)
}

/// Everything a lifecycle operation needs.
pub struct Context {
    pub settings: Settings,
    pub bucket: Bucket,
    pub clock: SystemClock,
    pub random: HostRandom,
    pub fly: FlyClient<WasiHttpTransport>,
    /// `agent_env_vars_private_key` (PEM), when set: opens the users' secret envelopes.
    pub private_key: Option<String>,
}

impl Context {
    /// Reads and validates the settings (every problem reported at once), opens the bucket.
    pub fn open() -> Result<Self, InstanceError> {
        install_logger();
        let token = variable("fly_api_token");
        let mut problems = Vec::new();
        if token.is_none() {
            problems.push("fly_api_token".to_owned());
        }
        let settings = match Settings::from_lookup(variable) {
            Ok(settings) if problems.is_empty() => settings,
            Ok(_) => return Err(InstanceError::Configuration(problems)),
            Err(error) => {
                problems.extend(errors::setting_problems(&error));
                return Err(InstanceError::Configuration(problems));
            }
        };
        let base_url = variable("fly_api_base_url").unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let config = FlyClientConfig::new(token.unwrap_or_default()).with_base_url(base_url);
        Ok(Self {
            settings,
            bucket: open_bucket()?,
            clock: SystemClock,
            random: HostRandom,
            fly: FlyClient::new(WasiHttpTransport, &config),
            private_key: variable("agent_env_vars_private_key"),
        })
    }
}
