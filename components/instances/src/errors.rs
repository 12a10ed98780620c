//! Core errors → the WIT `instance-error` variant (whose cases name the HTTP status the router uses).

use kiloclaw_core::env::EnvError;
use kiloclaw_core::fly::{FlyError, FlyErrorKind};
use kiloclaw_core::kv::KvError;
use kiloclaw_core::lifecycle::LifecycleError;
use kiloclaw_core::requests::RequestError;
use kiloclaw_core::settings::{SettingProblem, SettingsError};
use kiloclaw_core::store::StoreError;

use crate::bindings::exports::kiloclaw::instances::instances::{FlyFailure, InstanceError};
use crate::bindings::kiloclaw::types::types::FieldError;

/// Fly messages are cut to this many characters: enough to diagnose, never a whole echoed body.
const MAX_FLY_MESSAGE: usize = 300;

pub fn from_kv(error: KvError) -> InstanceError {
    match error {
        KvError::NoSuchStore | KvError::AccessDenied => {
            InstanceError::Configuration(vec![format!(
                "key_value_stores or store_redis_url (the component cannot open its store: {error})"
            )])
        }
        KvError::Other(detail) => InstanceError::StoreUnavailable(detail),
    }
}

pub fn from_store(error: StoreError) -> InstanceError {
    match error {
        StoreError::Kv(kv) => from_kv(kv),
        StoreError::Busy { .. } | StoreError::LeaseLost => InstanceError::Busy,
        StoreError::Contention => InstanceError::StoreUnavailable(error.to_string()),
        StoreError::Corrupt { .. } => InstanceError::Internal(error.to_string()),
    }
}

/// One entry per problem: the variable name, plus the reason when it is set but unusable.
pub fn setting_problems(error: &SettingsError) -> Vec<String> {
    error
        .0
        .iter()
        .map(|problem| match problem {
            SettingProblem::Missing(name) => (*name).to_owned(),
            SettingProblem::Invalid { name, reason } => format!("{name} ({reason})"),
        })
        .collect()
}

pub fn from_request(error: RequestError) -> InstanceError {
    match error {
        RequestError::MalformedJson => InstanceError::InvalidRequest(vec![FieldError {
            field: "(body)".to_owned(),
            message: "Malformed JSON body".to_owned(),
        }]),
        RequestError::Invalid(fields) => InstanceError::InvalidRequest(
            fields
                .0
                .into_iter()
                .flat_map(|(field, messages)| {
                    messages.into_iter().map(move |message| FieldError {
                        field: field.clone(),
                        message,
                    })
                })
                .collect(),
        ),
    }
}

pub fn from_fly(error: &FlyError) -> InstanceError {
    if error.is_transient() {
        return InstanceError::FlyUnavailable(error.to_string());
    }
    match error.kind() {
        FlyErrorKind::Unauthorized => {
            InstanceError::Configuration(vec!["fly_api_token (the Fly API refused it)".to_owned()])
        }
        _ => {
            let message: String = error.message().chars().take(MAX_FLY_MESSAGE).collect();
            InstanceError::FlyRejected(FlyFailure {
                status: error.http_status().unwrap_or(0),
                message,
            })
        }
    }
}

pub fn from_lifecycle(error: LifecycleError) -> InstanceError {
    match error {
        LifecycleError::InvalidUserId(problem) => InstanceError::InvalidRequest(vec![FieldError {
            field: "userId".to_owned(),
            message: problem.to_string(),
        }]),
        LifecycleError::NotProvisioned => InstanceError::NotProvisioned,
        LifecycleError::Destroying { .. } => InstanceError::BeingDestroyed,
        LifecycleError::NotRunning => InstanceError::NotRunning,
        LifecycleError::NoFlyApp => InstanceError::Configuration(vec![
            "fly_app_name (the instance has no per-user Fly app and no legacy app is configured)"
                .to_owned(),
        ]),
        LifecycleError::Env(
            error @ (EnvError::EncryptionConfiguration(_) | EnvError::Decryption { .. }),
        ) => InstanceError::Secrets(error.to_string()),
        LifecycleError::Store(store) => from_store(store),
        LifecycleError::Fly { operation, source } => match from_fly(&source) {
            InstanceError::FlyUnavailable(detail) => {
                InstanceError::FlyUnavailable(format!("{operation}: {detail}"))
            }
            other => other,
        },
        LifecycleError::NoRegion(detail) => {
            InstanceError::FlyUnavailable(format!("no region could host a volume: {detail}"))
        }
        error @ (LifecycleError::AppNameCollision { .. } | LifecycleError::Env(_)) => {
            InstanceError::Internal(error.to_string())
        }
    }
}
