//! The exported operations: open what the call needs, run the core's logic, map the result.

use kiloclaw_core::fly::FlyApi;
use kiloclaw_core::record::{InstanceRecord, InstanceState};
use kiloclaw_core::requests::{parse_channels_patch, parse_kilocode_patch};
use kiloclaw_core::store::StoreError;

use crate::bindings::exports::kiloclaw::platform::instances::{
    ChannelPresence, ConfigSummary, DestroyOutcome, InstanceError, InstanceStatus, KilocodeConfig,
    ProxyRoute, ReconcileOutcome, ReconcileSummary, RecoveredRoute, VolumeSnapshot,
};
use crate::context::{Context, StoreContext, variable};
use crate::{errors, views};

impl From<StoreError> for InstanceError {
    fn from(error: StoreError) -> Self {
        errors::from_store(error)
    }
}

/// The stored record of a provisioned user, or the error that says why there is none.
fn provisioned(record: Option<InstanceRecord>) -> Result<InstanceRecord, InstanceError> {
    match record {
        Some(record) if record.is_provisioned() => Ok(record),
        _ => Err(InstanceError::NotProvisioned),
    }
}

/// Refuses changes to an instance that is being destroyed.
fn not_destroying(record: &InstanceRecord) -> Result<(), InstanceError> {
    if record.status == Some(InstanceState::Destroying) {
        return Err(InstanceError::BeingDestroyed);
    }
    Ok(())
}

/// The Fly app that serves a record: its own per-user app, else the legacy shared one.
fn app_name(record: &InstanceRecord) -> Result<String, InstanceError> {
    record
        .fly_app_name
        .clone()
        .or_else(|| variable("fly_app_name"))
        .ok_or_else(|| {
            InstanceError::Configuration(vec![
                "fly_app_name (instance has no per-user Fly app)".to_owned(),
            ])
        })
}

fn load(context: &StoreContext, user_id: &str) -> Result<Option<InstanceRecord>, InstanceError> {
    Ok(context
        .store()
        .load(user_id)?
        .map(|snapshot| snapshot.record))
}

pub fn status(user_id: &str) -> Result<InstanceStatus, InstanceError> {
    let context = StoreContext::open()?;
    Ok(load(&context, user_id)?
        .as_ref()
        .map_or_else(views::empty_status, views::status))
}

pub fn summarize_config(user_id: &str) -> Result<ConfigSummary, InstanceError> {
    let context = StoreContext::open()?;
    let record = load(&context, user_id)?
        .filter(InstanceRecord::is_provisioned)
        .unwrap_or_else(InstanceRecord::empty);
    Ok(views::config_summary(&record))
}

pub fn route(user_id: &str) -> Result<ProxyRoute, InstanceError> {
    let context = StoreContext::open()?;
    let record = provisioned(load(&context, user_id)?)?;
    not_destroying(&record)?;
    let machine_id = record
        .fly_machine_id
        .clone()
        .ok_or(InstanceError::NotProvisioned)?;
    let status = record.status.map_or(
        crate::bindings::kiloclaw::platform::types::Lifecycle::Provisioned,
        views::lifecycle,
    );
    Ok(ProxyRoute {
        app_name: app_name(&record)?,
        machine_id,
        status,
    })
}

pub fn patch_kilocode_config(user_id: &str, body: &[u8]) -> Result<KilocodeConfig, InstanceError> {
    let patch = parse_kilocode_patch(body).map_err(errors::from_request)?;
    let context = StoreContext::open()?;
    provisioned(load(&context, user_id)?)?;
    let ((), record) = context
        .store()
        .update(user_id, |record: &mut InstanceRecord| {
            if !record.is_provisioned() {
                return Err(InstanceError::NotProvisioned);
            }
            not_destroying(record)?;
            patch.kilocode_api_key.apply(&mut record.kilocode_api_key);
            patch
                .kilocode_api_key_expires_at
                .apply(&mut record.kilocode_api_key_expires_at);
            patch
                .kilocode_default_model
                .apply(&mut record.kilocode_default_model);
            patch.kilocode_models.apply(&mut record.kilocode_models);
            Ok(())
        })?;
    Ok(views::kilocode_config(&record))
}

pub fn patch_channels(user_id: &str, body: &[u8]) -> Result<ChannelPresence, InstanceError> {
    let patch = parse_channels_patch(body).map_err(errors::from_request)?;
    let context = StoreContext::open()?;
    provisioned(load(&context, user_id)?)?;
    let ((), record) = context
        .store()
        .update(user_id, |record: &mut InstanceRecord| {
            if !record.is_provisioned() {
                return Err(InstanceError::NotProvisioned);
            }
            not_destroying(record)?;
            let mut channels = record.channels.clone().unwrap_or_default();
            patch
                .telegram_bot_token
                .apply(&mut channels.telegram_bot_token);
            patch
                .discord_bot_token
                .apply(&mut channels.discord_bot_token);
            patch.slack_bot_token.apply(&mut channels.slack_bot_token);
            patch.slack_app_token.apply(&mut channels.slack_app_token);
            // No token left means no channel config at all (the original's `channels = null`).
            record.channels = (channels.count() > 0).then_some(channels);
            Ok(())
        })?;
    Ok(views::channel_presence(record.channels.as_ref()))
}

pub fn volume_snapshots(user_id: &str) -> Result<Vec<VolumeSnapshot>, InstanceError> {
    let context = Context::open()?;
    let record = provisioned(
        context
            .store()
            .load(user_id)?
            .map(|snapshot| snapshot.record),
    )?;
    let Some(volume_id) = record.fly_volume_id.clone() else {
        return Ok(Vec::new());
    };
    let app = app_name(&record)?;
    let mut snapshots = context
        .fly
        .list_volume_snapshots(&app, &volume_id)
        .map_err(|e| errors::from_fly(&e))?;
    snapshots.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(snapshots
        .into_iter()
        .map(|s| VolumeSnapshot {
            id: s.id,
            created_at: s.created_at,
            digest: s.digest,
            retention_days: s.retention_days,
            size: s.size,
            status: s.status,
            volume_size: s.volume_size.unwrap_or(0),
        })
        .collect())
}

fn lifecycle_pending(operation: &str) -> InstanceError {
    InstanceError::Internal(format!(
        "{operation}: lifecycle operations are not wired to the core yet"
    ))
}

pub fn provision(_user_id: &str, _body: &[u8]) -> Result<String, InstanceError> {
    Err(lifecycle_pending("provision"))
}

pub fn start(_user_id: &str) -> Result<(), InstanceError> {
    Err(lifecycle_pending("start"))
}

pub fn stop(_user_id: &str) -> Result<(), InstanceError> {
    Err(lifecycle_pending("stop"))
}

pub fn destroy(_user_id: &str) -> Result<DestroyOutcome, InstanceError> {
    Err(lifecycle_pending("destroy"))
}

pub fn restart(_user_id: &str) -> Result<(), InstanceError> {
    Err(lifecycle_pending("restart"))
}

pub fn recover_route(
    _user_id: &str,
    _failed_machine_id: &str,
) -> Result<RecoveredRoute, InstanceError> {
    Err(lifecycle_pending("recover-route"))
}

pub fn reconcile(_user_id: &str) -> Result<ReconcileOutcome, InstanceError> {
    Err(lifecycle_pending("reconcile"))
}

pub fn reconcile_due(_budget_ms: u32) -> Result<ReconcileSummary, InstanceError> {
    Err(lifecycle_pending("reconcile-due"))
}
