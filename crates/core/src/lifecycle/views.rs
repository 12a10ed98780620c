//! Read models returned to the router, with the original's JSON field names.

use serde::Serialize;

use crate::record::{InstanceRecord, KiloCodeModel};

/// `getStatus()` (§4.3). An unprovisioned user gets nulls and zero counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// `userId`.
    pub user_id: Option<String>,
    /// `sandboxId`.
    pub sandbox_id: Option<String>,
    /// `status`: provisioned, running, stopped, destroying or null.
    pub status: Option<String>,
    /// Epoch ms.
    pub provisioned_at: Option<i64>,
    /// Epoch ms.
    pub last_started_at: Option<i64>,
    /// Epoch ms.
    pub last_stopped_at: Option<i64>,
    /// Number of plaintext env vars.
    pub env_var_count: usize,
    /// Number of encrypted secrets.
    pub secret_count: usize,
    /// Number of channel tokens.
    pub channel_count: usize,
    /// Per-user Fly app.
    pub fly_app_name: Option<String>,
    /// Fly machine id.
    pub fly_machine_id: Option<String>,
    /// Fly volume id.
    pub fly_volume_id: Option<String>,
    /// Fly region.
    pub fly_region: Option<String>,
}

impl InstanceStatus {
    /// The status view of a record.
    pub fn of(record: &InstanceRecord) -> Self {
        if !record.is_provisioned() {
            return Self::default();
        }
        Self {
            user_id: Some(record.user_id.clone()),
            sandbox_id: Some(record.sandbox_id.clone()),
            status: record.status.map(|s| s.as_str().to_owned()),
            provisioned_at: record.provisioned_at,
            last_started_at: record.last_started_at,
            last_stopped_at: record.last_stopped_at,
            env_var_count: record.env_vars.as_ref().map_or(0, |e| e.len()),
            secret_count: record.encrypted_secrets.as_ref().map_or(0, |s| s.len()),
            channel_count: record.channels.as_ref().map_or(0, |c| c.count()),
            fly_app_name: record.fly_app_name.clone(),
            fly_machine_id: record.fly_machine_id.clone(),
            fly_volume_id: record.fly_volume_id.clone(),
            fly_region: record.fly_region.clone(),
        }
    }
}

/// Which channel tokens are set (`PATCH /channels` response, `config.channels`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsView {
    /// Telegram.
    pub telegram: bool,
    /// Discord.
    pub discord: bool,
    /// Slack bot.
    pub slack_bot: bool,
    /// Slack app.
    pub slack_app: bool,
}

impl ChannelsView {
    /// The view of a record.
    pub fn of(record: &InstanceRecord) -> Self {
        let Some(c) = &record.channels else {
            return Self::default();
        };
        Self {
            telegram: c.telegram_bot_token.is_some(),
            discord: c.discord_bot_token.is_some(),
            slack_bot: c.slack_bot_token.is_some(),
            slack_app: c.slack_app_token.is_some(),
        }
    }
}

/// `GET /api/kiloclaw/config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSummary {
    /// Names of the plaintext env vars.
    pub env_var_keys: Vec<String>,
    /// Number of encrypted secrets.
    pub secret_count: usize,
    /// Default model.
    pub kilocode_default_model: Option<String>,
    /// Whether a Kilo API key is stored.
    #[serde(rename = "hasKiloCodeApiKey")]
    pub has_kilocode_api_key: bool,
    /// Its expiry.
    pub kilocode_api_key_expires_at: Option<String>,
    /// Which channel tokens are set.
    pub channels: ChannelsView,
}

impl ConfigSummary {
    /// The summary of a record.
    pub fn of(record: &InstanceRecord) -> Self {
        Self {
            env_var_keys: record
                .env_vars
                .as_ref()
                .map(|e| e.keys().cloned().collect())
                .unwrap_or_default(),
            secret_count: record.encrypted_secrets.as_ref().map_or(0, |s| s.len()),
            kilocode_default_model: record.kilocode_default_model.clone(),
            has_kilocode_api_key: record.kilocode_api_key.is_some(),
            kilocode_api_key_expires_at: record.kilocode_api_key_expires_at.clone(),
            channels: ChannelsView::of(record),
        }
    }
}

/// `PATCH /kilocode-config` response (includes the plaintext key; Next.js strips it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KiloCodeConfigView {
    /// The key.
    pub kilocode_api_key: Option<String>,
    /// Its expiry.
    pub kilocode_api_key_expires_at: Option<String>,
    /// Default model.
    pub kilocode_default_model: Option<String>,
    /// Models.
    pub kilocode_models: Option<Vec<KiloCodeModel>>,
}

impl KiloCodeConfigView {
    /// The view of a record.
    pub fn of(record: &InstanceRecord) -> Self {
        Self {
            kilocode_api_key: record.kilocode_api_key.clone(),
            kilocode_api_key_expires_at: record.kilocode_api_key_expires_at.clone(),
            kilocode_default_model: record.kilocode_default_model.clone(),
            kilocode_models: record.kilocode_models.clone(),
        }
    }
}

/// Where the proxy sends a user's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Fly app (`https://{app}.fly.dev`).
    pub app_name: String,
    /// Value for `fly-force-instance-id`.
    pub machine_id: String,
    /// Current status (a stopped machine is still proxied; Fly answers).
    pub status: String,
}
