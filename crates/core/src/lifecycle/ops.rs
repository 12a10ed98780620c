//! The public lifecycle operations (original-behaviour.md §4.3).

use serde::Serialize;

use crate::env::{MachineEnv, build_env};
use crate::fly::WaitState;
use crate::ids::sandbox_id_from_user_id;
use crate::record::{Channels, InstanceRecord, InstanceState};
use crate::requests::{ChannelsPatch, InstanceConfig, KiloCodeConfigPatch};

use super::resources::{DeleteResult, StopResult, running_with_machine};
use super::views::{ChannelsView, ConfigSummary, InstanceStatus, KiloCodeConfigView, Route};
use super::{Instances, LIVE_CHECK_THROTTLE_MS, LifecycleError, Session};

/// How often, and how many times, destroy retries deleting a volume its just-destroyed machine
/// still holds bound (bounded: 5 s in all).
const VOLUME_UNBIND_POLL: std::time::Duration = std::time::Duration::from_secs(1);
const VOLUME_UNBIND_RETRIES: u32 = 5;

/// Result of `provision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionOutcome {
    /// The sandbox id (`201 {sandboxId}`).
    pub sandbox_id: String,
}

/// Result of `destroy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestroyOutcome {
    /// Every Fly resource is confirmed deleted and the record is reset; otherwise the reconciler retries
    /// every minute (the route still answers 200, as the original did).
    pub complete: bool,
}

impl Instances<'_> {
    /// `provision(userId, config)`: creates the per-user app and the volume for a new instance, then
    /// stores the config. Re-provisioning a live instance only updates config (applied on next start).
    pub fn provision(
        &self,
        user_id: &str,
        config: &InstanceConfig,
    ) -> Result<ProvisionOutcome, LifecycleError> {
        let sandbox_id = sandbox_id_from_user_id(user_id)?;
        self.with_lease(user_id, "provision", |session| {
            if session.record().status == Some(InstanceState::Destroying) {
                return Err(LifecycleError::Destroying { operation: "provision" });
            }
            let is_new = session.record().status.is_none();
            if is_new {
                let (user, sandbox) = (user_id.to_owned(), sandbox_id.clone());
                let (size, region) = (config.machine_size, config.region.clone());
                // Identity first: the app and volume steps need it, and a retry then resumes here.
                session.commit(|r| {
                    r.user_id = user.clone();
                    r.sandbox_id = sandbox.clone();
                    if size.is_some() {
                        r.machine_size = size;
                    }
                    if region.is_some() {
                        r.region_preference = region.clone();
                    }
                })?;
                // Legacy records that already have Fly resources are never moved to a per-user app.
                let legacy_with_resources = session.record().fly_app_name.is_none()
                    && (session.record().fly_volume_id.is_some() || session.record().fly_machine_id.is_some());
                if !legacy_with_resources {
                    session.ensure_app()?;
                }
                // A record lost from the store while the user's machine and volume live on (§10 #13, #18):
                // adopt them by Fly metadata before creating anything, so a re-provision never strands the
                // user's data on a volume the new record does not name.
                let record = session.record();
                if record.fly_machine_id.is_none() && record.fly_volume_id.is_none() {
                    session.recover_from_metadata("provision")?;
                }
                session.ensure_volume("provision")?;
            }
            let now = self.now();
            let (user, sandbox) = (user_id.to_owned(), sandbox_id.clone());
            session.commit(|r| {
                apply_config(r, config);
                r.user_id = user.clone();
                r.sandbox_id = sandbox.clone();
                if is_new {
                    // Metadata recovery may have found the user's machine and set its status already.
                    r.status = Some(r.status.unwrap_or(InstanceState::Provisioned));
                    r.provisioned_at = Some(now);
                    r.last_started_at = None;
                    r.last_stopped_at = None;
                    r.health_check_fail_count = 0;
                    r.pending_destroy_machine_id = None;
                    r.pending_destroy_volume_id = None;
                }
            })?;
            tracing::info!(tag = "lifecycle", action = "provision", user_id, sandbox_id = %sandbox_id, is_new,
                volume_id = ?session.record().fly_volume_id, app = ?session.record().fly_app_name);
            Ok(ProvisionOutcome { sandbox_id: sandbox_id.clone() })
        })
    }

    /// Builds (and decrypts) the machine env of a provisioned record before any lease or Fly call, so a
    /// missing private key, a wrong one or a malformed envelope fails the start with nothing stored
    /// changed and a running machine left running. The env is reused under the lease when the record's
    /// env inputs are unchanged by then.
    fn prepare_env(
        &self,
        user_id: &str,
    ) -> Result<Option<(InstanceRecord, MachineEnv)>, LifecycleError> {
        let Some(snapshot) = self.store().load(user_id)? else {
            return Ok(None);
        };
        let record = snapshot.record;
        if !record.is_provisioned()
            || record.sandbox_id.is_empty()
            || record.status == Some(InstanceState::Destroying)
        {
            return Ok(None);
        }
        let env = build_env(&record, self.settings, self.decryptor).inspect_err(|error| {
            tracing::warn!(tag = "lifecycle", action = "machine_env_failed", user_id, error = %error);
        })?;
        Ok(Some((record, env)))
    }

    /// `start(userId)`: ensures the volume, then starts the existing machine or creates one, with
    /// capacity recovery; records `running` only when Fly confirms `started`.
    pub fn start(&self, user_id: &str) -> Result<(), LifecycleError> {
        let prepared = self.prepare_env(user_id)?;
        self.with_lease(user_id, "start", |session| {
            session.prepared_env = prepared;
            let record = session.record();
            if record.status != Some(InstanceState::Destroying) && (!record.is_provisioned() || record.sandbox_id.is_empty()) {
                session.restore_from_registry(user_id)?;
            }
            require_provisioned(session.record(), "start")?;
            session.app_name()?;
            session.ensure_volume("start")?;
            check_volume_region(session)?;
            if let Some(machine_id) = running_with_machine(session.record()) {
                let app = session.app_name()?;
                match self.fly.get_machine(&app, &machine_id) {
                    Ok(machine) if machine.state == crate::fly::MachineState::Started => {
                        session.repair_mount(&machine, "start")?;
                        return Ok(());
                    }
                    Ok(machine) => tracing::info!(tag = "lifecycle", action = "start_not_started", user_id,
                        machine_id = %machine_id, state = %machine.state),
                    Err(error) => tracing::warn!(tag = "lifecycle", action = "start_get_machine_failed", user_id,
                        machine_id = %machine_id, error = %error),
                }
            }
            start_machine(session, "start_412_recovery")?;
            let now = self.now();
            session.commit(|r| {
                r.status = Some(InstanceState::Running);
                r.last_started_at = Some(now);
                r.health_check_fail_count = 0;
            })?;
            tracing::info!(tag = "lifecycle", action = "start", user_id, machine_id = session.record().fly_machine_id.as_deref().unwrap_or_default());
            Ok(())
        })
    }

    /// `stop()`: stops and waits with the machine's `instance_id`; only then records `stopped`. A
    /// non-404 failure leaves the status unchanged and is returned.
    pub fn stop(&self, user_id: &str) -> Result<(), LifecycleError> {
        self.with_lease(user_id, "stop", |session| {
            if !session.record().is_provisioned() {
                return Err(LifecycleError::NotProvisioned);
            }
            let status = session.record().status;
            if matches!(
                status,
                Some(
                    InstanceState::Stopped | InstanceState::Provisioned | InstanceState::Destroying
                )
            ) {
                tracing::info!(tag = "lifecycle", action = "stop_noop", user_id, status = ?status);
                return Ok(());
            }
            if let Some(machine_id) = session.record().fly_machine_id.clone() {
                session.stop_machine_and_wait(&machine_id)?;
            }
            let now = self.now();
            session.commit(|r| {
                r.status = Some(InstanceState::Stopped);
                r.last_stopped_at = Some(now);
            })?;
            tracing::info!(tag = "lifecycle", action = "stop", user_id);
            Ok(())
        })
    }

    /// `destroy()`: records intent (pending ids, `destroying`) before any Fly call, deletes what it can,
    /// and resets the record when everything is confirmed gone. The per-user app is kept for reuse.
    pub fn destroy(&self, user_id: &str) -> Result<DestroyOutcome, LifecycleError> {
        self.with_lease(user_id, "destroy", |session| {
            if session.record().user_id.is_empty() {
                return Err(LifecycleError::NotProvisioned);
            }
            session.commit(|r| {
                r.pending_destroy_machine_id = r
                    .pending_destroy_machine_id
                    .clone()
                    .or_else(|| r.fly_machine_id.clone());
                r.pending_destroy_volume_id = r
                    .pending_destroy_volume_id
                    .clone()
                    .or_else(|| r.fly_volume_id.clone());
                r.status = Some(InstanceState::Destroying);
            })?;
            let complete = session.retry_pending_destroy("destroy")?;
            Ok(DestroyOutcome { complete })
        })
    }

    /// `restartGateway()` ("Redeploy"): stop, rebuild config (current image, env, volume), update, wait.
    /// Unlike the original it records the restart, recovers from capacity errors, and if it fails after
    /// the machine stopped it records `stopped` so the status never claims a machine that is not running.
    pub fn restart(&self, user_id: &str) -> Result<(), LifecycleError> {
        let prepared = self.prepare_env(user_id)?;
        self.with_lease(user_id, "restart", |session| {
            session.prepared_env = prepared;
            let Some(machine_id) = running_with_machine(session.record()) else {
                return Err(LifecycleError::NotRunning);
            };
            let stopped = session.stop_machine_and_wait(&machine_id)?;
            if stopped == StopResult::Gone {
                session.commit(|r| r.fly_machine_id = None)?;
            }
            let result = start_machine(session, "restart_capacity_recovery");
            let now = self.now();
            match result {
                Ok(()) => {
                    session.commit(|r| {
                        r.status = Some(InstanceState::Running);
                        r.last_started_at = Some(now);
                        r.health_check_fail_count = 0;
                    })?;
                    tracing::info!(tag = "lifecycle", action = "restart", user_id, machine_id = ?session.record().fly_machine_id);
                    Ok(())
                }
                Err(error) => {
                    tracing::warn!(tag = "lifecycle", action = "restart_failed", user_id, error = %error);
                    session.commit(|r| {
                        r.status = Some(InstanceState::Stopped);
                        r.last_stopped_at = Some(now);
                    })?;
                    Err(error)
                }
            }
        })
    }

    /// `updateKiloCodeConfig(patch)`: applies defined fields (`null` clears). No Fly call, so no lease:
    /// a CAS read-modify-write that never disturbs a running operation.
    pub fn patch_kilocode_config(
        &self,
        patch: &KiloCodeConfigPatch,
    ) -> Result<KiloCodeConfigView, LifecycleError> {
        sandbox_id_from_user_id(&patch.user_id)?;
        let (view, _) = self.store().update(&patch.user_id, |r| {
            if r.status == Some(InstanceState::Destroying) {
                return Err(LifecycleError::Destroying {
                    operation: "update config",
                });
            }
            patch.kilocode_api_key.apply(&mut r.kilocode_api_key);
            patch
                .kilocode_api_key_expires_at
                .apply(&mut r.kilocode_api_key_expires_at);
            patch
                .kilocode_default_model
                .apply(&mut r.kilocode_default_model);
            patch.kilocode_models.apply(&mut r.kilocode_models);
            Ok(KiloCodeConfigView::of(r))
        })?;
        tracing::info!(tag = "lifecycle", action = "patch_kilocode_config", user_id = %patch.user_id);
        Ok(view)
    }

    /// `updateChannels(patch)`: absent leaves a token, `null` removes it, an envelope sets it; no token
    /// left means no channels. No machine action (the user redeploys).
    pub fn patch_channels(&self, patch: &ChannelsPatch) -> Result<ChannelsView, LifecycleError> {
        sandbox_id_from_user_id(&patch.user_id)?;
        let (view, _) = self.store().update(&patch.user_id, |r| {
            if r.status == Some(InstanceState::Destroying) {
                return Err(LifecycleError::Destroying {
                    operation: "update channels",
                });
            }
            let mut channels = r.channels.clone().unwrap_or_default();
            let slot = |p: &crate::requests::Patch<crate::record::Envelope>,
                        t: &mut Option<crate::record::Envelope>| p.apply(t);
            slot(&patch.telegram_bot_token, &mut channels.telegram_bot_token);
            slot(&patch.discord_bot_token, &mut channels.discord_bot_token);
            slot(&patch.slack_bot_token, &mut channels.slack_bot_token);
            slot(&patch.slack_app_token, &mut channels.slack_app_token);
            r.channels = (channels.count() > 0).then_some(channels);
            Ok(ChannelsView::of(r))
        })?;
        tracing::info!(tag = "lifecycle", action = "patch_channels", user_id = %patch.user_id);
        Ok(view)
    }

    /// `getStatus()`: the stored view, read without a lease. When the instance is running and the last
    /// live check is older than 30 s, asks Fly first through a normal reconcile (lease, commit), unless
    /// another operation holds the lease — so what it reports is persisted, never an in-memory flip.
    pub fn status(&self, user_id: &str) -> Result<InstanceStatus, LifecycleError> {
        let Some(snapshot) = self.store().load(user_id)? else {
            return Ok(InstanceStatus::default());
        };
        let record = snapshot.record;
        let due = record
            .last_live_check_at
            .is_none_or(|t| self.now() - t >= LIVE_CHECK_THROTTLE_MS);
        if running_with_machine(&record).is_some() && due {
            match self.live_check(user_id) {
                Ok(Some(fresh)) => return Ok(InstanceStatus::of(&fresh)),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(tag = "reconcile", reason = "live_check", action = "failed", user_id, error = %error)
                }
            }
        }
        Ok(InstanceStatus::of(&record))
    }

    /// The stored record, if any (for the `instances` component's own needs).
    pub fn record(&self, user_id: &str) -> Result<Option<InstanceRecord>, LifecycleError> {
        Ok(self.store().load(user_id)?.map(|s| s.record))
    }

    /// `getConfig()` summarised for `/api/kiloclaw/config`.
    pub fn config(&self, user_id: &str) -> Result<ConfigSummary, LifecycleError> {
        Ok(self
            .record(user_id)?
            .map(|r| ConfigSummary::of(&r))
            .unwrap_or_default())
    }

    /// Where to proxy a user's traffic: 409 while destroying, 404 without a machine, 503 without an app.
    pub fn route(&self, user_id: &str) -> Result<Route, LifecycleError> {
        let record = self
            .record(user_id)?
            .filter(InstanceRecord::is_provisioned)
            .ok_or(LifecycleError::NotProvisioned)?;
        if record.status == Some(InstanceState::Destroying) {
            return Err(LifecycleError::Destroying { operation: "proxy" });
        }
        let machine_id = record
            .fly_machine_id
            .clone()
            .ok_or(LifecycleError::NotProvisioned)?;
        let app_name = record
            .fly_app_name
            .clone()
            .or_else(|| self.settings.legacy_fly_app_name.clone())
            .ok_or(LifecycleError::NoFlyApp)?;
        Ok(Route {
            app_name,
            machine_id,
            status: record
                .status
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
        })
    }

    /// The gateway token of a provisioned user (`/api/platform/gateway-token`).
    pub fn gateway_token(&self, user_id: &str) -> Result<String, LifecycleError> {
        let record = self
            .record(user_id)?
            .filter(InstanceRecord::is_provisioned)
            .ok_or(LifecycleError::NotProvisioned)?;
        Ok(crate::ids::gateway_token(
            &self.settings.gateway_token_secret,
            &record.sandbox_id,
        ))
    }

    /// Volume snapshots for the admin UI (empty without a volume).
    pub fn volume_snapshots(
        &self,
        user_id: &str,
    ) -> Result<Vec<crate::fly::VolumeSnapshot>, LifecycleError> {
        let Some(record) = self.record(user_id)? else {
            return Ok(Vec::new());
        };
        let Some(volume_id) = &record.fly_volume_id else {
            return Ok(Vec::new());
        };
        let app = record
            .fly_app_name
            .clone()
            .or_else(|| self.settings.legacy_fly_app_name.clone())
            .ok_or(LifecycleError::NoFlyApp)?;
        self.fly
            .list_volume_snapshots(&app, volume_id)
            .map_err(|e| LifecycleError::fly("list volume snapshots", e))
    }
}

fn require_provisioned(
    record: &InstanceRecord,
    operation: &'static str,
) -> Result<(), LifecycleError> {
    if record.status == Some(InstanceState::Destroying) {
        return Err(LifecycleError::Destroying { operation });
    }
    if !record.is_provisioned() || record.sandbox_id.is_empty() {
        return Err(LifecycleError::NotProvisioned);
    }
    Ok(())
}

/// Region check on start: a volume without a machine must exist where the record says it is.
fn check_volume_region(session: &mut Session<'_, '_>) -> Result<(), LifecycleError> {
    let record = session.record();
    let (Some(volume_id), None) = (record.fly_volume_id.clone(), record.fly_machine_id.as_ref())
    else {
        return Ok(());
    };
    let app = session.app_name()?;
    match session.instances.fly.get_volume(&app, &volume_id) {
        Ok(volume) if Some(&volume.region) != session.record().fly_region.as_ref() => {
            tracing::warn!(tag = "reconcile", reason = "start", action = "fly_region_drift", user_id = %session.user_id(),
                volume_id = %volume_id, region = %volume.region);
            session.commit(|r| r.fly_region = Some(volume.region.clone()))
        }
        Ok(_) => Ok(()),
        Err(error) if error.is_not_found() => {
            session.forget_lost_volume("start", &volume_id)?;
            session.ensure_volume("start")
        }
        Err(error) => {
            tracing::warn!(tag = "lifecycle", action = "volume_check_failed", error = %error);
            Ok(())
        }
    }
}

/// Builds the config and starts or creates the machine, with one capacity recovery.
fn start_machine(
    session: &mut Session<'_, '_>,
    reason: &'static str,
) -> Result<(), LifecycleError> {
    let config = session.build_config()?;
    session.with_capacity_recovery(reason, |session| {
        match session.record().fly_machine_id.clone() {
            Some(machine_id) => session.start_existing_machine(&machine_id, config),
            None => session.create_machine(config),
        }
    })
}

/// Writes the provision config (re-provision semantics in [`InstanceConfig`]).
fn apply_config(record: &mut InstanceRecord, config: &InstanceConfig) {
    record.env_vars = config.env_vars.clone();
    record.encrypted_secrets = config.encrypted_secrets.clone();
    record.channels = config.channels.clone().filter(|c: &Channels| c.count() > 0);
    config.kilocode_api_key.apply(&mut record.kilocode_api_key);
    config
        .kilocode_api_key_expires_at
        .apply(&mut record.kilocode_api_key_expires_at);
    config
        .kilocode_default_model
        .apply(&mut record.kilocode_default_model);
    config.kilocode_models.apply(&mut record.kilocode_models);
    if config.machine_size.is_some() {
        record.machine_size = config.machine_size;
    }
    if config.region.is_some() {
        record.region_preference = config.region.clone();
    }
}

impl Session<'_, '_> {
    /// Destroy phases 2 and 3: delete pending (and orphaned) resources, then reset the record when all
    /// are gone. Returns whether the destroy is complete.
    pub(crate) fn retry_pending_destroy(
        &mut self,
        reason: &'static str,
    ) -> Result<bool, LifecycleError> {
        let user_id = self.user_id();
        let mut machine_just_destroyed = false;
        if let Some(machine_id) = self.record().pending_destroy_machine_id.clone() {
            let result = self.delete_machine(&machine_id);
            let action = match result {
                DeleteResult::Deleted => "destroy_machine_ok",
                DeleteResult::AlreadyGone => "destroy_machine_already_gone",
                DeleteResult::Failed => "destroy_machine_failed",
            };
            tracing::info!(tag = "reconcile", reason, action, user_id, machine_id = %machine_id);
            if result == DeleteResult::Deleted {
                self.wait_until_destroyed(&machine_id)?;
                machine_just_destroyed = true;
            }
            if result != DeleteResult::Failed {
                self.commit(|r| {
                    r.pending_destroy_machine_id = None;
                    if r.fly_machine_id.as_ref() == Some(&machine_id) {
                        r.fly_machine_id = None;
                    }
                })?;
            }
        }
        // An orphaned machine may hold the volume bound (one whose create answered an error after
        // Fly made it): it goes before the volume, and its destroy is waited for like the machine's.
        machine_just_destroyed |= self.cleanup_orphaned_machines(reason)?;
        if let Some(volume_id) = self.record().pending_destroy_volume_id.clone() {
            let mut result = self.delete_volume(&volume_id);
            // Right after its machine is destroyed, Fly can keep the volume bound for a moment (up
            // to about a minute): a few short retries finish most destroys in this call, and the
            // rest is left to the next tick as before.
            let mut retries = 0;
            while result == DeleteResult::Failed
                && machine_just_destroyed
                && retries < VOLUME_UNBIND_RETRIES
            {
                retries += 1;
                self.instances.clock.sleep(VOLUME_UNBIND_POLL);
                self.renew()?;
                result = self.delete_volume(&volume_id);
            }
            let action = match result {
                DeleteResult::Deleted => "destroy_volume_ok",
                DeleteResult::AlreadyGone => "destroy_volume_already_gone",
                DeleteResult::Failed => "destroy_volume_failed",
            };
            tracing::info!(tag = "reconcile", reason, action, user_id, volume_id = %volume_id);
            if result != DeleteResult::Failed {
                self.commit(|r| {
                    r.pending_destroy_volume_id = None;
                    if r.fly_volume_id.as_ref() == Some(&volume_id) {
                        r.fly_volume_id = None;
                    }
                })?;
            }
        }
        self.cleanup_orphans(reason)?;
        let record = self.record();
        let complete = record.pending_destroy_machine_id.is_none()
            && record.pending_destroy_volume_id.is_none()
            && record.unconfirmed_create_at.is_none()
            && record.orphaned_machine_ids.is_empty()
            && record.orphaned_volume_ids.is_empty();
        if complete {
            tracing::info!(
                tag = "reconcile",
                reason,
                action = "destroy_complete",
                user_id
            );
            self.commit(|r| {
                let kept = InstanceRecord {
                    schema_version: r.schema_version,
                    version: r.version,
                    lease: r.lease.clone(),
                    fly_app_name: r.fly_app_name.clone(),
                    app_setup: r.app_setup.clone(),
                    extra: r.extra.clone(),
                    ..InstanceRecord::empty()
                };
                *r = kept;
            })?;
        } else {
            tracing::warn!(
                tag = "reconcile",
                reason,
                action = "destroy_incomplete",
                user_id
            );
        }
        Ok(complete)
    }

    /// Deletes the orphaned machines; returns whether any was deleted just now (its volume may stay
    /// bound for a moment).
    fn cleanup_orphaned_machines(&mut self, reason: &'static str) -> Result<bool, LifecycleError> {
        let mut deleted = false;
        for machine_id in self.record().orphaned_machine_ids.clone() {
            let result = self.delete_machine(&machine_id);
            tracing::info!(tag = "reconcile", reason, action = "delete_orphaned_machine", user_id = %self.user_id(),
                machine_id = %machine_id, result = ?result);
            if result == DeleteResult::Deleted {
                self.wait_until_destroyed(&machine_id)?;
                deleted = true;
            }
            if result != DeleteResult::Failed {
                self.commit(|r| r.orphaned_machine_ids.retain(|m| m != &machine_id))?;
            }
        }
        Ok(deleted)
    }

    /// Fly destroys a machine asynchronously and keeps its volume bound until it is gone, so a
    /// volume delete right after the machine's is refused and the destroy used to finish only on
    /// the next reconcile tick. Waiting (bounded by Fly's wait timeout, lease renewed first) lets
    /// the same call delete the volume; if the wait fails the volume is simply left to that tick.
    fn wait_until_destroyed(&mut self, machine_id: &str) -> Result<(), LifecycleError> {
        match self.wait(machine_id, WaitState::Destroyed, None)? {
            Ok(()) => Ok(()),
            Err(error) if error.is_not_found() => Ok(()),
            Err(error) => {
                tracing::info!(tag = "reconcile", action = "destroy_wait_unfinished", user_id = %self.user_id(),
                    machine_id, reason = "volume left to the next tick", error = %error);
                Ok(())
            }
        }
    }

    /// Deletes machines and volumes kept as orphans (by capacity recovery, by a holder that lost its
    /// lease after a create, or by settling an unconfirmed create).
    pub(crate) fn cleanup_orphans(&mut self, reason: &'static str) -> Result<(), LifecycleError> {
        // Machines first: an orphaned volume may be bound to one of them.
        self.cleanup_orphaned_machines(reason)?;
        for volume_id in self.record().orphaned_volume_ids.clone() {
            let result = self.delete_volume(&volume_id);
            tracing::info!(tag = "reconcile", reason, action = "delete_orphaned_volume", user_id = %self.user_id(),
                volume_id = %volume_id, result = ?result);
            if result != DeleteResult::Failed {
                self.commit(|r| r.orphaned_volume_ids.retain(|v| v != &volume_id))?;
            }
        }
        Ok(())
    }
}

impl Session<'_, '_> {
    /// `restoreFromPostgres` (§4.6): rebuild a lost record from the registry row, then find the machine
    /// and volume by Fly metadata. Config (Kilo key, secrets, channels) cannot be restored; Next.js
    /// re-provisions. Unlike the original (§10 #14), a derived per-user app is only assumed when it exists
    /// in Fly (or no legacy app is configured), so restored legacy users keep pointing at the shared app.
    fn restore_from_registry(&mut self, user_id: &str) -> Result<(), LifecycleError> {
        let Some(registry) = self.instances.registry else {
            tracing::warn!(
                tag = "reconcile",
                reason = "postgres_restore",
                action = "no_registry",
                user_id
            );
            return Ok(());
        };
        let sandbox_id = match registry.active_sandbox_id(user_id) {
            Ok(Some(sandbox_id)) => sandbox_id,
            Ok(None) => {
                tracing::warn!(
                    tag = "reconcile",
                    reason = "postgres_restore",
                    action = "no_active_row",
                    user_id
                );
                return Ok(());
            }
            Err(error) => {
                tracing::warn!(tag = "reconcile", reason = "postgres_restore", action = "registry_failed", user_id, error = %error);
                return Ok(());
            }
        };
        let settings = self.instances.settings;
        let mut app = self.record().fly_app_name.clone();
        let mut app_exists = false;
        if app.is_none() && settings.fly_org_slug.is_some() {
            let derived = crate::ids::app_name_from_user_id(user_id, settings.is_development());
            app_exists = self
                .instances
                .fly
                .get_app(&derived)
                .map_err(|e| LifecycleError::fly("get app", e))?
                .is_some();
            if app_exists || settings.legacy_fly_app_name.is_none() {
                app = Some(derived);
            }
        }
        let now = self.instances.now();
        let user = user_id.to_owned();
        self.commit(|r| {
            // What a failed first provision of the same sandbox left (a volume it settled, orphans) is
            // kept: dropping it would leak it.
            // Fly ids are only meaningful in the app they were made in.
            let same_app = r.fly_app_name == app;
            let same_place = same_app && r.sandbox_id == sandbox_id;
            let fresh = InstanceRecord {
                fly_volume_id: r.fly_volume_id.clone().filter(|_| same_place),
                fly_region: r.fly_region.clone().filter(|_| same_place),
                orphaned_machine_ids: if same_app {
                    r.orphaned_machine_ids.clone()
                } else {
                    Vec::new()
                },
                orphaned_volume_ids: if same_app {
                    r.orphaned_volume_ids.clone()
                } else {
                    Vec::new()
                },
                unconfirmed_create_at: r.unconfirmed_create_at.filter(|_| same_app),
                schema_version: r.schema_version,
                version: r.version,
                lease: r.lease.clone(),
                user_id: user.clone(),
                sandbox_id: sandbox_id.clone(),
                status: Some(InstanceState::Provisioned),
                provisioned_at: Some(now),
                fly_app_name: app.clone(),
                app_setup: if app == r.fly_app_name {
                    r.app_setup.clone()
                } else {
                    crate::record::AppSetup {
                        created: app_exists,
                        ..Default::default()
                    }
                },
                extra: r.extra.clone(),
                ..InstanceRecord::empty()
            };
            *r = fresh;
        })?;
        tracing::info!(tag = "reconcile", reason = "postgres_restore", action = "restore_record", user_id, app = ?app);
        if self.record().fly_app_name.is_some() && !self.record().app_setup.is_complete() {
            self.ensure_app()?;
        }
        if let Err(error) = self.attempt_metadata_recovery("postgres_restore") {
            tracing::warn!(tag = "reconcile", reason = "postgres_restore", action = "metadata_recovery_failed", user_id, error = %error);
        }
        Ok(())
    }
}
