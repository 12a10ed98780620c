//! What one exported call works with: the `default` bucket, the wall clock, the deployment settings
//! (Spin variables) and a Fly API client. Built afresh per call; components keep no state.

use kiloclaw_core::clock::SystemClock;
use kiloclaw_core::fly::{DEFAULT_BASE_URL, FlyClient, FlyClientConfig};
use kiloclaw_core::settings::Settings;
use kiloclaw_core::store::{RecordStore, StoreSettings};

use crate::bindings::exports::kiloclaw::platform::instances::InstanceError;
use crate::errors;
use crate::kv::SpinBucket;
use crate::transport::WasiHttpTransport;

/// A Spin variable, `None` when unset, empty, or not visible to this component.
pub fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Store access only (reads, and writes that need no Fly call).
pub struct StoreContext {
    pub bucket: SpinBucket,
    pub clock: SystemClock,
    pub store_settings: StoreSettings,
}

impl StoreContext {
    pub fn open() -> Result<Self, InstanceError> {
        Ok(Self {
            bucket: SpinBucket::open().map_err(errors::from_kv)?,
            clock: SystemClock,
            store_settings: StoreSettings::default(),
        })
    }

    pub fn store(&self) -> RecordStore<'_, SpinBucket, SystemClock> {
        RecordStore::new(&self.bucket, &self.clock, self.store_settings.clone())
    }
}

/// Everything a lifecycle operation needs.
pub struct Context {
    pub settings: Settings,
    pub bucket: SpinBucket,
    pub clock: SystemClock,
    pub fly: FlyClient<WasiHttpTransport>,
}

impl Context {
    /// Reads and validates the settings (every problem reported at once), opens the bucket.
    pub fn open() -> Result<Self, InstanceError> {
        let token = variable("fly_api_token");
        let mut problems = Vec::new();
        if token.is_none() {
            problems.push("fly_api_token".to_owned());
        }
        let settings =
            Settings::from_lookup(variable).map_err(|error| errors::setting_problems(&error));
        let settings = match settings {
            Ok(settings) if problems.is_empty() => settings,
            Ok(_) => return Err(InstanceError::Configuration(problems)),
            Err(more) => {
                problems.extend(more);
                return Err(InstanceError::Configuration(problems));
            }
        };
        let base_url = variable("fly_api_base_url").unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let config = FlyClientConfig::new(token.unwrap_or_default()).with_base_url(base_url);
        Ok(Self {
            settings,
            bucket: SpinBucket::open().map_err(errors::from_kv)?,
            clock: SystemClock,
            fly: FlyClient::new(WasiHttpTransport, &config),
        })
    }

    pub fn store(&self) -> RecordStore<'_, SpinBucket, SystemClock> {
        RecordStore::new(&self.bucket, &self.clock, self.settings.store.clone())
    }
}
