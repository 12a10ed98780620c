//! Core read models → the WIT records the router renders (no secret values leave here, except the
//! Kilo Code API key that `patch-kilocode-config` deliberately returns to the backend).

use kiloclaw_core::lifecycle::{self, ChannelsView, KiloCodeConfigView};

use crate::bindings::exports::kiloclaw::instances::instances::{
    ChannelPresence, ConfigSummary, InstanceError, InstanceStatus, KilocodeConfig, Model,
    ProxyRoute,
};
use crate::bindings::kiloclaw::types::types::Lifecycle;

fn millis(value: Option<i64>) -> Option<u64> {
    value.and_then(|ms| u64::try_from(ms).ok())
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The stored status name as the WIT enum.
pub fn lifecycle(name: &str) -> Option<Lifecycle> {
    match name {
        "provisioned" => Some(Lifecycle::Provisioned),
        "running" => Some(Lifecycle::Running),
        "stopped" => Some(Lifecycle::Stopped),
        "destroying" => Some(Lifecycle::Destroying),
        _ => None,
    }
}

pub fn status(status: lifecycle::InstanceStatus) -> InstanceStatus {
    InstanceStatus {
        user_id: status.user_id,
        sandbox_id: status.sandbox_id,
        status: status.status.as_deref().and_then(lifecycle),
        provisioned_at: millis(status.provisioned_at),
        last_started_at: millis(status.last_started_at),
        last_stopped_at: millis(status.last_stopped_at),
        env_var_count: count(status.env_var_count),
        secret_count: count(status.secret_count),
        channel_count: count(status.channel_count),
        fly_app_name: status.fly_app_name,
        fly_machine_id: status.fly_machine_id,
        fly_volume_id: status.fly_volume_id,
        fly_region: status.fly_region,
    }
}

pub fn channel_presence(channels: ChannelsView) -> ChannelPresence {
    ChannelPresence {
        telegram: channels.telegram,
        discord: channels.discord,
        slack_bot: channels.slack_bot,
        slack_app: channels.slack_app,
    }
}

pub fn config_summary(summary: lifecycle::ConfigSummary) -> ConfigSummary {
    ConfigSummary {
        env_var_keys: summary.env_var_keys,
        secret_count: count(summary.secret_count),
        default_model: summary.kilocode_default_model,
        has_api_key: summary.has_kilocode_api_key,
        api_key_expires_at: summary.kilocode_api_key_expires_at,
        channels: channel_presence(summary.channels),
    }
}

pub fn kilocode_config(config: KiloCodeConfigView) -> KilocodeConfig {
    KilocodeConfig {
        api_key: config.kilocode_api_key,
        api_key_expires_at: config.kilocode_api_key_expires_at,
        default_model: config.kilocode_default_model,
        models: config.kilocode_models.map(|models| {
            models
                .into_iter()
                .map(|m| Model {
                    id: m.id,
                    name: m.name,
                })
                .collect()
        }),
    }
}

pub fn route(route: lifecycle::Route) -> Result<ProxyRoute, InstanceError> {
    let status = lifecycle(&route.status).ok_or_else(|| {
        InstanceError::Internal(format!("unknown stored status {}", route.status))
    })?;
    Ok(ProxyRoute {
        app_name: route.app_name,
        machine_id: route.machine_id,
        status,
    })
}
