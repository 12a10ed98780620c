//! Stored record → the WIT records the router renders (no secret values leave here, except the
//! Kilo Code API key that `patch-kilocode-config` deliberately returns to the backend).

use kiloclaw_core::record::{Channels, InstanceRecord, InstanceState};

use crate::bindings::exports::kiloclaw::platform::instances::{
    ChannelPresence, ConfigSummary, InstanceStatus, KilocodeConfig, Model,
};
use crate::bindings::kiloclaw::platform::types::Lifecycle;

fn millis(value: Option<i64>) -> Option<u64> {
    value.and_then(|ms| u64::try_from(ms).ok())
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub fn lifecycle(state: InstanceState) -> Lifecycle {
    match state {
        InstanceState::Provisioned => Lifecycle::Provisioned,
        InstanceState::Running => Lifecycle::Running,
        InstanceState::Stopped => Lifecycle::Stopped,
        InstanceState::Destroying => Lifecycle::Destroying,
    }
}

/// The status of an unprovisioned user: every field empty.
pub fn empty_status() -> InstanceStatus {
    InstanceStatus {
        user_id: None,
        sandbox_id: None,
        status: None,
        provisioned_at: None,
        last_started_at: None,
        last_stopped_at: None,
        env_var_count: 0,
        secret_count: 0,
        channel_count: 0,
        fly_app_name: None,
        fly_machine_id: None,
        fly_volume_id: None,
        fly_region: None,
    }
}

pub fn status(record: &InstanceRecord) -> InstanceStatus {
    if !record.is_provisioned() {
        return empty_status();
    }
    InstanceStatus {
        user_id: Some(record.user_id.clone()),
        sandbox_id: Some(record.sandbox_id.clone()),
        status: record.status.map(lifecycle),
        provisioned_at: millis(record.provisioned_at),
        last_started_at: millis(record.last_started_at),
        last_stopped_at: millis(record.last_stopped_at),
        env_var_count: count(record.env_vars.as_ref().map_or(0, |vars| vars.len())),
        secret_count: count(
            record
                .encrypted_secrets
                .as_ref()
                .map_or(0, |secrets| secrets.len()),
        ),
        channel_count: count(record.channels.as_ref().map_or(0, Channels::count)),
        fly_app_name: record.fly_app_name.clone(),
        fly_machine_id: record.fly_machine_id.clone(),
        fly_volume_id: record.fly_volume_id.clone(),
        fly_region: record.fly_region.clone(),
    }
}

pub fn channel_presence(channels: Option<&Channels>) -> ChannelPresence {
    ChannelPresence {
        telegram: channels.is_some_and(|c| c.telegram_bot_token.is_some()),
        discord: channels.is_some_and(|c| c.discord_bot_token.is_some()),
        slack_bot: channels.is_some_and(|c| c.slack_bot_token.is_some()),
        slack_app: channels.is_some_and(|c| c.slack_app_token.is_some()),
    }
}

pub fn config_summary(record: &InstanceRecord) -> ConfigSummary {
    ConfigSummary {
        env_var_keys: record
            .env_vars
            .as_ref()
            .map(|vars| vars.keys().cloned().collect())
            .unwrap_or_default(),
        secret_count: count(
            record
                .encrypted_secrets
                .as_ref()
                .map_or(0, |secrets| secrets.len()),
        ),
        default_model: record.kilocode_default_model.clone(),
        has_api_key: record.kilocode_api_key.is_some(),
        api_key_expires_at: record.kilocode_api_key_expires_at.clone(),
        channels: channel_presence(record.channels.as_ref()),
    }
}

pub fn kilocode_config(record: &InstanceRecord) -> KilocodeConfig {
    KilocodeConfig {
        api_key: record.kilocode_api_key.clone(),
        api_key_expires_at: record.kilocode_api_key_expires_at.clone(),
        default_model: record.kilocode_default_model.clone(),
        models: record.kilocode_models.as_ref().map(|models| {
            models
                .iter()
                .map(|m| Model {
                    id: m.id.clone(),
                    name: m.name.clone(),
                })
                .collect()
        }),
    }
}
