//! The exported operations: open the call's context, run the core's lifecycle operation, map the
//! result. The decisions (leases, intent, Fly calls, recovery) all live in `kiloclaw_core::lifecycle`.

use std::time::Duration;

use kiloclaw_core::lifecycle::{Instances, LifecycleError};
use kiloclaw_core::requests::{parse_channels_patch, parse_kilocode_patch, parse_provision};
use kiloclaw_core::secrets::envelope::RsaEnvelopeDecryptor;

use crate::bindings::exports::kiloclaw::instances::instances::{
    ChannelPresence, CommandOutcome, ConfigSummary, DestroyOutcome, InstanceError, InstanceStatus,
    KilocodeConfig, ProxyRoute, ReconcileOutcome, ReconcileSummary, RecoveredRoute, VolumeSnapshot,
};
use crate::context::Context;
use crate::{errors, views};

/// Runs `operation` with the core's [`Instances`] over this call's boundaries.
fn with_instances<T>(
    operation: impl FnOnce(&Instances<'_>) -> Result<T, LifecycleError>,
) -> Result<T, InstanceError> {
    let context = Context::open()?;
    let decryptor = context
        .private_key
        .as_deref()
        .map(|pem| RsaEnvelopeDecryptor::new(pem, &context.random));
    let mut instances = Instances::new(
        &*context.bucket,
        &context.fly,
        &context.clock,
        &context.random,
        &context.settings,
    );
    if let Some(decryptor) = &decryptor {
        instances = instances.with_decryptor(decryptor);
    }
    // Connected only if `start` finds no record (restore, §4.6).
    let registry = kiloclaw_spin_adapters::postgres::Database::configured();
    if let Some(registry) = &registry {
        instances = instances.with_registry(registry);
    }
    operation(&instances).map_err(errors::from_lifecycle)
}

/// The request body with `userId` set to the call's `user-id` argument, which wins over whatever the
/// body says (the WIT contract: the body's `userId` is ignored). A body that is not a JSON object is
/// passed through for the parser to reject.
fn with_user_id(body: &[u8], user_id: &str) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut object)) => {
            object.insert(
                "userId".to_owned(),
                serde_json::Value::String(user_id.to_owned()),
            );
            serde_json::Value::Object(object).to_string().into_bytes()
        }
        _ => body.to_vec(),
    }
}

pub fn provision(user_id: &str, body: &[u8]) -> Result<String, InstanceError> {
    let request = parse_provision(&with_user_id(body, user_id)).map_err(errors::from_request)?;
    with_instances(|instances| instances.provision(user_id, &request.config))
        .map(|outcome| outcome.sandbox_id)
}

pub fn patch_kilocode_config(user_id: &str, body: &[u8]) -> Result<KilocodeConfig, InstanceError> {
    let patch = parse_kilocode_patch(&with_user_id(body, user_id)).map_err(errors::from_request)?;
    with_instances(|instances| instances.patch_kilocode_config(&patch)).map(views::kilocode_config)
}

pub fn patch_channels(user_id: &str, body: &[u8]) -> Result<ChannelPresence, InstanceError> {
    let patch = parse_channels_patch(&with_user_id(body, user_id)).map_err(errors::from_request)?;
    with_instances(|instances| instances.patch_channels(&patch)).map(views::channel_presence)
}

pub fn start(user_id: &str) -> Result<(), InstanceError> {
    with_instances(|instances| instances.start(user_id))
}

pub fn stop(user_id: &str) -> Result<(), InstanceError> {
    with_instances(|instances| instances.stop(user_id))
}

pub fn destroy(user_id: &str) -> Result<DestroyOutcome, InstanceError> {
    with_instances(|instances| instances.destroy(user_id)).map(|outcome| DestroyOutcome {
        complete: outcome.complete,
    })
}

pub fn restart(user_id: &str) -> Result<(), InstanceError> {
    with_instances(|instances| instances.restart(user_id))
}

pub fn status(user_id: &str) -> Result<InstanceStatus, InstanceError> {
    with_instances(|instances| instances.status(user_id)).map(views::status)
}

pub fn summarize_config(user_id: &str) -> Result<ConfigSummary, InstanceError> {
    with_instances(|instances| instances.config(user_id)).map(views::config_summary)
}

/// The proxy's hot path: one key-value read and no settings validation, Fly client or logger
/// (`kiloclaw_core::lifecycle::route_of` answers exactly as the full `Instances::route`).
pub fn route(user_id: &str) -> Result<ProxyRoute, InstanceError> {
    let bucket = crate::context::open_bucket()?;
    let legacy_app = crate::context::variable("fly_app_name");
    kiloclaw_core::lifecycle::route_of(&*bucket, user_id, legacy_app.as_deref())
        .map_err(errors::from_lifecycle)
        .and_then(views::route)
}

/// Crash recovery for the proxy, at most once per user per window (`kiloclaw_core::lifecycle`'s
/// `recover_route`): says whether anything was actually restarted, so the router never replays a
/// request the app answered.
pub fn recover_route(
    user_id: &str,
    failed_machine_id: &str,
) -> Result<RecoveredRoute, InstanceError> {
    let recovery = with_instances(|instances| instances.recover_route(user_id, failed_machine_id))?;
    Ok(RecoveredRoute {
        route: views::route(recovery.route)?,
        restarted: recovery.restarted,
    })
}

pub fn volume_snapshots(user_id: &str) -> Result<Vec<VolumeSnapshot>, InstanceError> {
    let mut snapshots = with_instances(|instances| instances.volume_snapshots(user_id))?;
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

pub fn pairing_requests(user_id: &str, refresh: bool) -> Result<String, InstanceError> {
    let requests = with_instances(|instances| instances.pairing_requests(user_id, refresh))?;
    Ok(serde_json::Value::Array(requests).to_string())
}

pub fn approve_pairing(
    user_id: &str,
    channel: &str,
    code: &str,
) -> Result<CommandOutcome, InstanceError> {
    with_instances(|instances| instances.approve_pairing(user_id, channel, code)).map(|approval| {
        CommandOutcome {
            success: approval.success,
            message: approval.message,
        }
    })
}

pub fn run_doctor(user_id: &str) -> Result<CommandOutcome, InstanceError> {
    with_instances(|instances| instances.run_doctor(user_id)).map(|outcome| CommandOutcome {
        success: outcome.success,
        message: outcome.output,
    })
}

/// Upper bound of checks per `reconcile-due` call, on top of the time budget (which is what normally
/// ends a walk: a light check takes a few milliseconds, so 45 s is some 10,000 of them).
const MAX_CHECKS_PER_PASS: u32 = 50_000;

pub fn reconcile(user_id: &str) -> Result<ReconcileOutcome, InstanceError> {
    with_instances(|instances| {
        let outcome = instances.reconcile(user_id, "api")?;
        let next_check_at = instances
            .record(user_id)?
            .and_then(|record| record.next_check_at_ms);
        Ok((outcome, next_check_at))
    })
    .map(|(outcome, next_check_at)| ReconcileOutcome {
        checked: outcome.checked,
        rate_limited: outcome.rate_limited,
        status: outcome.status.as_deref().and_then(views::lifecycle),
        next_check_at: next_check_at.and_then(|ms| u64::try_from(ms).ok()),
    })
}

pub fn reconcile_due(budget_ms: u32) -> Result<ReconcileSummary, InstanceError> {
    let started = std::time::Instant::now();
    let report = with_instances(|instances| {
        instances.reconcile_due(
            Duration::from_millis(u64::from(budget_ms)),
            MAX_CHECKS_PER_PASS,
        )
    })?;
    Ok(ReconcileSummary {
        minutes: report.minutes,
        checked: report.checked,
        skipped: report.skipped,
        requeued: report.requeued,
        errors: report.errors,
        rate_limited: report.rate_limited,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}
