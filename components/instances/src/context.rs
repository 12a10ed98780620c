//! What one exported call works with: the `default` bucket, the wall clock, host randomness, the
//! deployment settings (Spin variables) and a Fly API client. Built afresh per call; components keep
//! no state between calls.

use kiloclaw_core::clock::SystemClock;
use kiloclaw_core::fly::{DEFAULT_BASE_URL, FlyClient, FlyClientConfig};
use kiloclaw_core::settings::Settings;

use crate::bindings::exports::kiloclaw::instances::instances::InstanceError;
use crate::errors;
use crate::transport::WasiHttpTransport;
use kiloclaw_spin_adapters::kv::Bucket;

pub use kiloclaw_spin_adapters::{HostRandom, install_logger, variable};

/// The store the `store_redis_url` variable selects.
pub fn open_bucket() -> Result<Bucket, InstanceError> {
    kiloclaw_spin_adapters::kv::open_configured().map_err(errors::from_kv)
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
