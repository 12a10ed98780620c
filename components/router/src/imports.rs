//! The imported `auth` and `instances` interfaces, with their errors mapped to edge errors.

use kiloclaw_core::edge::errors::{EdgeError, FieldError};

pub use crate::bindings::kiloclaw::auth::auth::{self, Credentials, Principal};
use crate::bindings::kiloclaw::auth::auth::{AuthError, GatewayTokenError, InternalKeyError};
pub use crate::bindings::kiloclaw::auth::auth::{IssueError, RedeemError};
use crate::bindings::kiloclaw::instances::instances::InstanceError;
pub use crate::bindings::kiloclaw::instances::instances::{self, InstanceStatus};
use crate::bindings::kiloclaw::types::types::Lifecycle;

impl From<AuthError> for EdgeError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::NotConfigured => EdgeError::ServerConfiguration,
            AuthError::MissingToken => EdgeError::AuthenticationRequired,
            AuthError::InvalidToken(message) => EdgeError::InvalidToken(message),
            AuthError::UserNotFound => EdgeError::UserNotFound,
            AuthError::TokenRevoked => EdgeError::TokenRevoked,
            AuthError::RevocationUnavailable => EdgeError::AuthenticationUnavailable,
        }
    }
}

impl From<InternalKeyError> for EdgeError {
    fn from(error: InternalKeyError) -> Self {
        match error {
            InternalKeyError::NotConfigured => EdgeError::ServerConfiguration,
            InternalKeyError::Forbidden => EdgeError::Forbidden,
        }
    }
}

impl From<GatewayTokenError> for EdgeError {
    fn from(error: GatewayTokenError) -> Self {
        match error {
            GatewayTokenError::NotConfigured => EdgeError::GatewayTokenNotConfigured,
        }
    }
}

impl From<InstanceError> for EdgeError {
    fn from(error: InstanceError) -> Self {
        match error {
            InstanceError::NotProvisioned => EdgeError::NotProvisioned,
            InstanceError::BeingDestroyed => EdgeError::BeingDestroyed,
            InstanceError::NotRunning => EdgeError::NotRunning,
            InstanceError::InvalidRequest(fields) => EdgeError::InvalidRequest(
                fields
                    .into_iter()
                    .map(|f| FieldError {
                        field: f.field,
                        message: f.message,
                    })
                    .collect(),
            ),
            InstanceError::Busy => EdgeError::Busy,
            InstanceError::FlyUnavailable(detail) => EdgeError::FlyUnavailable(detail),
            InstanceError::FlyRejected(failure) => EdgeError::FlyRejected {
                status: failure.status,
                message: failure.message,
            },
            InstanceError::Configuration(missing) => EdgeError::MissingSettings {
                missing,
                platform: true,
            },
            InstanceError::StoreUnavailable(detail) => EdgeError::StoreUnavailable(detail),
            InstanceError::Secrets(message) => EdgeError::Secrets(message),
            InstanceError::Internal(detail) => EdgeError::Internal(detail),
        }
    }
}

/// The lifecycle name as the API spells it.
pub fn lifecycle_name(lifecycle: Lifecycle) -> &'static str {
    match lifecycle {
        Lifecycle::Provisioned => "provisioned",
        Lifecycle::Running => "running",
        Lifecycle::Stopped => "stopped",
        Lifecycle::Destroying => "destroying",
    }
}

/// The status object of `/api/kiloclaw/status` and `/api/platform/status`.
pub fn status_json(status: &InstanceStatus) -> serde_json::Value {
    serde_json::json!({
        "userId": status.user_id,
        "sandboxId": status.sandbox_id,
        "status": status.status.map(lifecycle_name),
        "provisionedAt": status.provisioned_at,
        "lastStartedAt": status.last_started_at,
        "lastStoppedAt": status.last_stopped_at,
        "envVarCount": status.env_var_count,
        "secretCount": status.secret_count,
        "channelCount": status.channel_count,
        "flyAppName": status.fly_app_name,
        "flyMachineId": status.fly_machine_id,
        "flyVolumeId": status.fly_volume_id,
        "flyRegion": status.fly_region,
    })
}
