//! Fly resource steps shared by the operations and the reconciler: the per-user app, volumes (with region
//! fallback and capacity replacement), machines (create, start, stop with `instance_id`) and deletes.

use crate::env::{MachineEnv, build_env, env_inputs};
use crate::fly::{
    AllocateIpRequest, CreateAppRequest, CreateMachineRequest, FlyError, IpAssignmentType, Machine,
    MachineConfig, MachineListFilter, MachineState, UpdateMachineRequest, Volume, WaitRequest,
    WaitState,
};
use crate::ids::{app_name_from_user_id, volume_name};
use crate::machine::{
    METADATA_USER_ID, VOLUME_MOUNT_PATH, deprioritize_region, machine_config, mount, regions_for,
    volume_request,
};
use crate::record::InstanceRecord;
use crate::secrets::machine_env::{ENV_KEY_SECRET, EnvKey, seal_env};
use crate::store::StoreError;

use super::settle::{Created, names_machine, names_volume};
use super::{LifecycleError, Session};

/// How often a start is retried while Fly still reports the machine as being replaced (412), and the pause
/// between tries: together a little over Fly's usual replace time for a stopped machine.
const START_WHILE_REPLACING_ATTEMPTS: u32 = 20;
const START_WHILE_REPLACING_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// Result of a best-effort delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeleteResult {
    /// Deleted now.
    Deleted,
    /// Fly says it no longer exists (404).
    AlreadyGone,
    /// Fly failed; the id must be kept for a retry.
    Failed,
}

impl<'a> Session<'_, 'a> {
    /// The Fly app for this record: its own app, else the legacy shared app.
    pub(crate) fn app_name(&self) -> Result<String, LifecycleError> {
        self.record()
            .fly_app_name
            .clone()
            .or_else(|| self.instances.settings.legacy_fly_app_name.clone())
            .ok_or(LifecycleError::NoFlyApp)
    }

    /// Creates or completes the user's own Fly app (§4.8): name, app, IPv6, shared IPv4, each step
    /// committed as it succeeds so a retry resumes where it stopped. Without `fly_org_slug` the legacy app
    /// is used and nothing happens.
    pub(crate) fn ensure_app(&mut self) -> Result<(), LifecycleError> {
        let settings = self.instances.settings;
        let Some(org) = settings.fly_org_slug.clone() else {
            if settings.legacy_fly_app_name.is_none() {
                return Err(LifecycleError::NoFlyApp);
            }
            return Ok(());
        };
        let user_id = self.user_id();
        let name = self
            .record()
            .fly_app_name
            .clone()
            .unwrap_or_else(|| app_name_from_user_id(&user_id, settings.is_development()));
        if self.record().fly_app_name.as_deref() != Some(name.as_str()) {
            let persisted = name.clone();
            self.commit(|r| r.fly_app_name = Some(persisted.clone()))?;
        }
        let fly = self.instances.fly;
        if !self.record().app_setup.created {
            let exists = fly
                .get_app(&name)
                .map_err(|e| LifecycleError::fly("get app", e))?
                .is_some();
            if !exists {
                match fly.create_app(&CreateAppRequest::new(
                    name.clone(),
                    org,
                    Some(name.clone()),
                )) {
                    Ok(_) => {
                        tracing::info!(tag = "lifecycle", action = "create_app", user_id, app = %name)
                    }
                    Err(error) if error.is_name_taken() => {
                        self.verify_app_ownership(&name, &user_id)?
                    }
                    Err(error) => return Err(LifecycleError::fly("create app", error)),
                }
            }
            self.commit(|r| r.app_setup.created = true)?;
        }
        if !self.record().app_setup.ipv6_allocated {
            allocate(fly, &name, IpAssignmentType::V6)?;
            self.commit(|r| r.app_setup.ipv6_allocated = true)?;
        }
        if !self.record().app_setup.ipv4_allocated {
            allocate(fly, &name, IpAssignmentType::SharedV4)?;
            self.commit(|r| r.app_setup.ipv4_allocated = true)?;
        }
        Ok(())
    }

    /// A taken name is ours unless one of its machines names another user. When its machines cannot
    /// be listed the name is *not* taken for ours (the original failed open): the app may be a
    /// squatter's in another organisation, and adopting it would hand its URL to the browser as the
    /// user's gateway. The caller retries later.
    fn verify_app_ownership(&self, app: &str, user_id: &str) -> Result<(), LifecycleError> {
        match self
            .instances
            .fly
            .list_machines(app, &MachineListFilter::default())
        {
            Ok(machines) => {
                let foreign = machines.iter().any(|m| {
                    m.metadata_value(METADATA_USER_ID)
                        .is_some_and(|owner| owner != user_id)
                });
                if foreign {
                    tracing::error!(
                        tag = "lifecycle",
                        action = "app_name_collision",
                        user_id,
                        app
                    );
                    return Err(LifecycleError::AppNameCollision {
                        app: app.to_owned(),
                    });
                }
                Ok(())
            }
            Err(error) => {
                tracing::warn!(tag = "lifecycle", action = "app_ownership_unverified", reason = "fail_closed", user_id, app, error = %error);
                Err(LifecycleError::fly("verify app ownership", error))
            }
        }
    }

    /// Creates a volume in the first region with capacity (`createVolumeWithFallback`), after recording
    /// the intent (see [`super::settle`]); the caller's commit of the volume clears it.
    pub(crate) fn create_volume_with_fallback(
        &mut self,
        regions: &[String],
        source_volume_id: Option<&str>,
    ) -> Result<Volume, LifecycleError> {
        let app = self.app_name()?;
        self.begin_create()?;
        let mut last_error = None;
        for region in regions {
            let request = volume_request(self.record(), region, source_volume_id);
            match self.instances.fly.create_volume(&app, &request) {
                Ok(volume) => return Ok(volume),
                Err(error) if error.is_capacity() => {
                    tracing::warn!(tag = "lifecycle", action = "volume_region_full", region = %region, error = %error);
                    last_error = Some(error);
                }
                Err(error) => return Err(LifecycleError::fly("create volume", error)),
            }
        }
        match last_error {
            Some(error) => Err(LifecycleError::fly("create volume", error)),
            None => Err(LifecycleError::NoRegion(
                "createVolumeWithFallback: no regions provided".into(),
            )),
        }
    }

    /// Region order for a new volume: the region already recorded first, then the user's list.
    fn volume_regions(&self) -> Vec<String> {
        let mut regions = regions_for(self.record(), self.instances.settings);
        if let Some(current) = &self.record().fly_region {
            regions.retain(|r| r != current);
            regions.insert(0, current.clone());
        }
        regions
    }

    /// Creates a volume when there is none (`ensureVolume`) and commits its id and region. A volume of
    /// this user that no record field names (one a holder created and could not commit) is adopted
    /// instead, so a holder that lost its lease between its create and its commit leaves no duplicate.
    pub(crate) fn ensure_volume(&mut self, reason: &'static str) -> Result<(), LifecycleError> {
        if self.record().fly_volume_id.is_some() || self.record().sandbox_id.is_empty() {
            return Ok(());
        }
        if let Some(volume) = self.find_unrecorded_volume()? {
            tracing::warn!(tag = "reconcile", reason, action = "adopt_volume", user_id = %self.user_id(),
                volume_id = %volume.id, region = %volume.region);
            return self.commit(|r| {
                r.fly_volume_id = Some(volume.id.clone());
                r.fly_region = Some(volume.region.clone());
                // Adopting wins over a stale holder that listed it as its orphan meanwhile.
                r.orphaned_volume_ids.retain(|v| v != &volume.id);
            });
        }
        let regions = self.volume_regions();
        let volume = self.create_volume_with_fallback(&regions, None)?;
        tracing::info!(tag = "reconcile", reason, action = "create_volume", user_id = %self.user_id(),
            volume_id = %volume.id, region = %volume.region);
        self.commit_created_volume(&volume, reason)
    }

    /// An unattached volume named for this user's sandbox in its own app that no record field names, the
    /// oldest first (the likelier to hold data). Only in a per-user app: volume names are not unique and,
    /// cut to 30 characters, two users' names can be equal, so in the legacy shared app a name proves
    /// nothing (there a stale holder's volume is only kept as an orphan, see
    /// [`Self::commit_created_volume`]).
    fn find_unrecorded_volume(&self) -> Result<Option<Volume>, LifecycleError> {
        let record = self.record();
        let Some(app) = record.fly_app_name.clone() else {
            return Ok(None);
        };
        let name = volume_name(&record.sandbox_id);
        // A failed listing fails the operation (retryable): creating blindly could leak one.
        let volumes = self
            .instances
            .fly
            .list_volumes(&app)
            .map_err(|e| LifecycleError::fly("list volumes", e))?;
        Ok(volumes
            .into_iter()
            .filter(|v| v.name == name && !v.state.is_deleted() && v.attached_machine_id.is_none())
            .filter(|v| !names_volume(record, &v.id))
            .min_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id))))
    }

    /// Commits the id and region of a volume this holder just created. If the lease was lost since (the
    /// holder stalled past its expiry and another operation took over), the holder cannot commit, so it
    /// records the volume as an orphan (see [`Session::record_after_lost_lease`]): the next reconcile
    /// deletes it, instead of it leaking with no record naming it.
    fn commit_created_volume(
        &mut self,
        volume: &Volume,
        reason: &'static str,
    ) -> Result<(), LifecycleError> {
        let result = self.commit(|r| {
            r.fly_volume_id = Some(volume.id.clone());
            r.fly_region = Some(volume.region.clone());
            r.unconfirmed_create_at = None;
        });
        if let Err(LifecycleError::Store(StoreError::LeaseLost)) = &result {
            self.record_after_lost_lease(Created::Volume(&volume.id), reason);
        }
        result
    }

    /// Capacity recovery (`replaceStrandedVolume`): retire the machine (kept as an orphan if Fly will not
    /// delete it now), fork the volume elsewhere when it holds user data (a failed fork propagates: no
    /// silent empty volume) or create a fresh one, and delete the old volume best-effort (kept as an
    /// orphan on failure, so nothing leaks silently).
    pub(crate) fn replace_stranded_volume(
        &mut self,
        reason: &'static str,
    ) -> Result<(), LifecycleError> {
        let Some(old_volume) = self.record().fly_volume_id.clone() else {
            return Ok(());
        };
        if self.record().sandbox_id.is_empty() {
            return Ok(());
        }
        let user_id = self.user_id();
        let has_user_data = self.record().last_started_at.is_some();
        let regions = deprioritize_region(
            regions_for(self.record(), self.instances.settings),
            self.record().fly_region.as_deref(),
        );
        self.retire_machine(reason)?;
        let volume = if has_user_data {
            let volume = self.create_volume_with_fallback(&regions, Some(&old_volume))?;
            tracing::info!(tag = "reconcile", reason, action = "fork_stranded_volume", user_id,
                old_volume_id = %old_volume, volume_id = %volume.id, region = %volume.region);
            volume
        } else {
            self.commit(|r| {
                r.fly_volume_id = None;
                r.fly_region = None;
                if !r.orphaned_volume_ids.contains(&old_volume) {
                    r.orphaned_volume_ids.push(old_volume.clone());
                }
            })?;
            let volume = self.create_volume_with_fallback(&regions, None)?;
            tracing::info!(tag = "reconcile", reason, action = "create_replacement_volume", user_id,
                volume_id = %volume.id, region = %volume.region);
            volume
        };
        self.commit_created_volume(&volume, reason)?;
        let result = self.delete_volume(&old_volume);
        tracing::info!(tag = "reconcile", reason, action = "delete_stranded_volume", user_id,
            volume_id = %old_volume, result = ?result);
        self.commit(|r| match result {
            DeleteResult::Deleted | DeleteResult::AlreadyGone => {
                r.orphaned_volume_ids.retain(|v| v != &old_volume)
            }
            DeleteResult::Failed => {
                if !r.orphaned_volume_ids.contains(&old_volume) {
                    r.orphaned_volume_ids.push(old_volume.clone());
                }
            }
        })
    }

    /// Removes the current machine from the record: deleted, already gone, or (on failure) moved to the
    /// orphan list for the reconciler to delete later (fixes bug §10 #16).
    fn retire_machine(&mut self, reason: &'static str) -> Result<(), LifecycleError> {
        let Some(machine_id) = self.record().fly_machine_id.clone() else {
            return Ok(());
        };
        let result = self.delete_machine(&machine_id);
        tracing::info!(tag = "reconcile", reason, action = "destroy_stranded_machine", user_id = %self.user_id(),
            machine_id = %machine_id, result = ?result);
        self.commit(|r| {
            r.fly_machine_id = None;
            if result == DeleteResult::Failed && !r.orphaned_machine_ids.contains(&machine_id) {
                r.orphaned_machine_ids.push(machine_id.clone());
            }
        })
    }

    /// `DELETE /machines/{id}?force=true`, classified.
    pub(crate) fn delete_machine(&self, machine_id: &str) -> DeleteResult {
        let Ok(app) = self.app_name() else {
            return DeleteResult::Failed;
        };
        match self.instances.fly.destroy_machine(&app, machine_id, true) {
            Ok(()) => DeleteResult::Deleted,
            Err(error) if error.is_not_found() => DeleteResult::AlreadyGone,
            Err(error) => {
                tracing::warn!(tag = "lifecycle", action = "destroy_machine_error", machine_id, error = %error);
                DeleteResult::Failed
            }
        }
    }

    /// `DELETE /volumes/{id}`, classified.
    pub(crate) fn delete_volume(&self, volume_id: &str) -> DeleteResult {
        let Ok(app) = self.app_name() else {
            return DeleteResult::Failed;
        };
        match self.instances.fly.delete_volume(&app, volume_id) {
            Ok(()) => DeleteResult::Deleted,
            Err(error) if error.is_not_found() => DeleteResult::AlreadyGone,
            Err(error) => {
                tracing::warn!(tag = "lifecycle", action = "delete_volume_error", volume_id, error = %error);
                DeleteResult::Failed
            }
        }
    }

    /// The machine env for the current record: the one prepared before the lease when the record's env
    /// inputs have not changed since, else built (and its envelopes decrypted) now.
    pub(crate) fn machine_env(&mut self) -> Result<MachineEnv, LifecycleError> {
        if let Some((prepared_from, env)) = &self.prepared_env
            && env_inputs(prepared_from) == env_inputs(self.record())
        {
            return Ok(env.clone());
        }
        let instances = self.instances;
        Ok(build_env(
            self.record(),
            instances.settings,
            instances.decryptor,
        )?)
    }

    /// The machine config for the current record. On a per-user app every sensitive value is sealed under
    /// the user's env key ([`crate::secrets::machine_env`]); the legacy shared app cannot hold a per-user
    /// key, so its machines get the plain values, as the seed gave them.
    pub(crate) fn build_config(&mut self) -> Result<MachineConfig, LifecycleError> {
        let env = self.machine_env()?;
        let vars = match self.ensure_env_key()? {
            Some(key) => seal_env(&env, &key, self.instances.random),
            None => {
                tracing::warn!(tag = "lifecycle", action = "plain_machine_env", user_id = %self.user_id(),
                    reason = "legacy shared app: no per-user KILOCLAW_ENV_KEY");
                env.vars
            }
        };
        Ok(machine_config(self.record(), self.instances.settings, vars))
    }

    /// The user's machine-env key: the stored one, or a new one set as the app secret
    /// `KILOCLAW_ENV_KEY` and committed with the secrets version Fly returned. `None` for the legacy
    /// shared app. The secret is set only when there is no usable stored key, not on every start.
    fn ensure_env_key(&mut self) -> Result<Option<EnvKey>, LifecycleError> {
        let Some(app) = self.record().fly_app_name.clone() else {
            return Ok(None);
        };
        let setup = &self.record().app_setup;
        if let (Some(stored), Some(_)) = (&setup.env_key, setup.env_key_secrets_version) {
            match EnvKey::from_base64(stored) {
                Ok(key) => return Ok(Some(key)),
                Err(error) => tracing::warn!(tag = "lifecycle", action = "env_key_replaced",
                    user_id = %self.user_id(), reason = %error),
            }
        }
        let key = EnvKey::generate(self.instances.random);
        let encoded = key.to_base64();
        let set = self
            .instances
            .fly
            .set_secret(&app, ENV_KEY_SECRET, &encoded)
            .map_err(|e| LifecycleError::fly("set machine env key secret", e))?;
        tracing::info!(tag = "lifecycle", action = "set_env_key", user_id = %self.user_id(), app = %app,
            secrets_version = set.version);
        self.commit(|r| {
            r.app_setup.env_key = Some(encoded.clone());
            r.app_setup.env_key_secrets_version = Some(set.version);
        })?;
        Ok(Some(key))
    }

    /// `min_secrets_version` for machine create and update: the version that holds the env key.
    fn min_secrets_version(&self) -> Option<u64> {
        let record = self.record();
        record
            .fly_app_name
            .as_ref()
            .and(record.app_setup.env_key_secrets_version)
    }

    /// Renews the lease, then waits for `state`. The outer `Err` means the lease could not be renewed
    /// (taken over, or the store failed): the holder must stop before its next Fly call, since another
    /// operation may own the instance now (a user's stop completing under the new lease must not be
    /// undone by this holder's next start). The inner result is Fly's answer.
    pub(super) fn wait(
        &mut self,
        machine_id: &str,
        state: WaitState,
        instance_id: Option<String>,
    ) -> Result<Result<(), FlyError>, LifecycleError> {
        if let Err(error) = self.renew() {
            tracing::warn!(tag = "lifecycle", action = "stop_before_fly_call", user_id = %self.user_id(),
                machine_id, reason = "lease_renewal_failed", error = %error);
            return Err(error);
        }
        let app = self.app_name()?;
        let mut request = WaitRequest::new(state, self.instances.settings.startup_timeout_s);
        request.instance_id = instance_id;
        Ok(self
            .instances
            .fly
            .wait_machine(&app, machine_id, &request)
            .map(|_| ()))
    }

    /// A machine of this user (by metadata) that no record field names and that mounts the recorded
    /// volume: one a holder created and then could not commit (it lost its lease, or died). Adopting it
    /// instead of creating another is what keeps a stalled holder from leaving a duplicate behind.
    fn find_unrecorded_machine(&self) -> Result<Option<Machine>, LifecycleError> {
        let record = self.record();
        let Some(volume_id) = record.fly_volume_id.clone() else {
            return Ok(None);
        };
        let app = self.app_name()?;
        // A failed listing fails the operation (retryable): creating blindly could duplicate.
        let machines = self
            .instances
            .fly
            .list_machines(
                &app,
                &MachineListFilter::metadata(METADATA_USER_ID, record.user_id.clone()),
            )
            .map_err(|e| LifecycleError::fly("list machines", e))?;
        let candidates: Vec<Machine> = machines
            .into_iter()
            .filter(|m| !m.state.is_gone() && !names_machine(record, &m.id))
            .filter(|m| {
                m.config.as_ref().is_some_and(|c| {
                    c.mounts
                        .iter()
                        .any(|mount| mount.volume == volume_id && mount.path == VOLUME_MOUNT_PATH)
                })
            })
            .collect();
        Ok(super::select_recovery_candidate(&candidates).cloned())
    }

    /// `createNewMachine`: adopt the user's unrecorded machine if a stalled holder left one (see
    /// [`Self::find_unrecorded_machine`]), else create (name = sandbox id, so a crash before the commit is
    /// found again by metadata), commit the id at once, then wait for `started`.
    pub(crate) fn create_machine(&mut self, config: MachineConfig) -> Result<(), LifecycleError> {
        let unrecorded = if self.adopted_machine {
            None
        } else {
            self.find_unrecorded_machine()?
        };
        if let Some(machine) = unrecorded {
            self.adopted_machine = true;
            tracing::warn!(tag = "lifecycle", action = "adopt_machine", user_id = %self.user_id(),
                machine_id = %machine.id, state = %machine.state, reason = "created_but_never_recorded");
            let id = machine.id.clone();
            self.commit(|r| {
                r.fly_machine_id = Some(id.clone());
                r.orphaned_machine_ids.retain(|m| m != &id);
            })?;
            return self.start_existing_machine(&machine.id, config);
        }
        let app = self.app_name()?;
        self.begin_create()?;
        let record = self.record();
        let request = CreateMachineRequest {
            config,
            name: Some(record.sandbox_id.clone()),
            region: record
                .fly_region
                .clone()
                .or_else(|| self.instances.settings.fly_regions.first().cloned()),
            min_secrets_version: self.min_secrets_version(),
            ..CreateMachineRequest::default()
        };
        let machine = self
            .instances
            .fly
            .create_machine(&app, &request)
            .map_err(|e| LifecycleError::fly("create machine", e))?;
        tracing::info!(tag = "lifecycle", action = "create_machine", user_id = %self.user_id(), machine_id = %machine.id,
            region = %machine.region);
        let committed = self.commit(|r| {
            r.fly_machine_id = Some(machine.id.clone());
            r.unconfirmed_create_at = None;
        });
        if let Err(LifecycleError::Store(StoreError::LeaseLost)) = &committed {
            self.record_after_lost_lease(Created::Machine(&machine.id), "create_machine");
        }
        committed?;
        self.wait(&machine.id, WaitState::Started, None)?
            .map_err(|e| LifecycleError::fly("wait for started", e))
    }

    /// `startExistingMachine`: update a stopped/created machine (which starts it), start a suspended one,
    /// leave a started one, wait otherwise. 404 → forget the machine and create a new one; any other error
    /// propagates (never a duplicate machine on a transient error).
    pub(crate) fn start_existing_machine(
        &mut self,
        machine_id: &str,
        config: MachineConfig,
    ) -> Result<(), LifecycleError> {
        let app = self.app_name()?;
        let fly = self.instances.fly;
        let machine = match fly.get_machine(&app, machine_id) {
            Ok(machine) => machine,
            Err(error) if error.is_not_found() => {
                return self.recreate_lost_machine(machine_id, config);
            }
            Err(error) => return Err(LifecycleError::fly("get machine", error)),
        };
        let result = match machine.state {
            MachineState::Stopped | MachineState::Created => {
                let mut config = config;
                match self.settle_mounted_volume(&machine, "start")? {
                    MountCheck::Mounted | MountCheck::WrongPath => {}
                    // The record now names the machine's own volume: only the mount changes.
                    MountCheck::AdoptedMounted => {
                        config.mounts = self
                            .record()
                            .fly_volume_id
                            .as_deref()
                            .map(mount)
                            .into_iter()
                            .collect();
                    }
                    MountCheck::Retired => return self.create_machine(config),
                }
                self.update_and_boot(machine_id, config, &machine.state)
            }
            MachineState::Suspended => match fly.start_machine(&app, machine_id) {
                Ok(_) => self
                    .wait(machine_id, WaitState::Started, None)?
                    .map_err(|e| LifecycleError::fly("wait for started", e)),
                Err(error) => Err(LifecycleError::fly("start machine", error)),
            },
            MachineState::Started => Ok(()),
            _ => self
                .wait(machine_id, WaitState::Started, None)?
                .map_err(|e| LifecycleError::fly("wait for started", e)),
        };
        match result {
            Err(LifecycleError::Fly { source, .. }) if source.is_not_found() => {
                let config = self.build_config()?;
                self.recreate_lost_machine(machine_id, config)
            }
            other => other,
        }
    }

    /// Applies `config` to a machine that is not running and boots it. Fly's docs say an update boots a
    /// stopped machine, but since 2026 flyd leaves it stopped ("leaving the new version stopped",
    /// fly-machines-api.md §2.6), and the original's update-then-wait then times out. So the update is made
    /// with `skip_launch`, which leaves the new version down under either behaviour, and an explicit start
    /// follows. A `stopped` machine is first waited on with the new `instance_id` (start is refused with 412
    /// while Fly is still replacing); other states have no instance-bound wait, so the start is retried.
    /// A lease that cannot be renewed before a wait ends it before the start (see [`Self::wait`]).
    pub(crate) fn update_and_boot(
        &mut self,
        machine_id: &str,
        config: MachineConfig,
        previous: &MachineState,
    ) -> Result<(), LifecycleError> {
        let app = self.app_name()?;
        let fly = self.instances.fly;
        let request = UpdateMachineRequest {
            config,
            skip_launch: Some(true),
            min_secrets_version: self.min_secrets_version(),
            ..UpdateMachineRequest::default()
        };
        let updated = fly
            .update_machine(&app, machine_id, &request)
            .map_err(|e| LifecycleError::fly("update machine", e))?;
        if *previous == MachineState::Stopped {
            self.wait(machine_id, WaitState::Stopped, Some(updated.instance_id))?
                .map_err(|e| LifecycleError::fly("wait for stopped", e))?;
        }
        let mut attempts_left = START_WHILE_REPLACING_ATTEMPTS;
        loop {
            match fly.start_machine(&app, machine_id) {
                Ok(_) => break,
                Err(error) if error.http_status() == Some(412) && attempts_left > 1 => {
                    attempts_left -= 1;
                    self.instances.clock.sleep(START_WHILE_REPLACING_PAUSE);
                }
                Err(error) => return Err(LifecycleError::fly("start machine", error)),
            }
        }
        self.wait(machine_id, WaitState::Started, None)?
            .map_err(|e| LifecycleError::fly("wait for started", e))
    }

    /// Compares the machine's volume with the record's. Fly cannot change a machine's volume by an
    /// update (fly-machines-api.md §2.6: destroy and recreate instead), so unlike the original, which
    /// stopped the machine and then had its update refused (a running gateway left stopped), a machine
    /// that mounts another volume is settled here: when its volume still exists, that is where the
    /// user's data lives, so the record adopts it and keeps the volume it named as an orphan to delete;
    /// a machine with no volume or a lost one can never get the user's, so it is retired (the caller
    /// creates a new one, or records `stopped`).
    pub(crate) fn settle_mounted_volume(
        &mut self,
        machine: &Machine,
        reason: &'static str,
    ) -> Result<MountCheck, LifecycleError> {
        // Without a recorded volume or a config to compare there is nothing to settle.
        let (Some(recorded), Some(config)) =
            (self.record().fly_volume_id.clone(), machine.config.as_ref())
        else {
            return Ok(MountCheck::Mounted);
        };
        let mounted = config
            .mounts
            .first()
            .map(|m| (m.volume.clone(), m.path.clone()));
        let other = match mounted {
            Some((volume, path)) if volume == recorded => {
                return Ok(if path == VOLUME_MOUNT_PATH {
                    MountCheck::Mounted
                } else {
                    MountCheck::WrongPath
                });
            }
            Some((volume, _)) => Some(volume),
            None => None,
        };
        let app = self.app_name()?;
        let adoptable = match &other {
            Some(volume_id) => match self.instances.fly.get_volume(&app, volume_id) {
                Ok(volume) if !volume.state.is_deleted() => Some(volume),
                Ok(_) => None,
                Err(error) if error.is_not_found() => None,
                Err(error) => return Err(LifecycleError::fly("get volume", error)),
            },
            None => None,
        };
        if let Some(volume) = adoptable {
            tracing::warn!(tag = "reconcile", reason, action = "adopt_mounted_volume", user_id = %self.user_id(),
                machine_id = %machine.id, volume_id = %volume.id, orphaned_volume_id = %recorded);
            return self
                .commit(|r| {
                    r.fly_volume_id = Some(volume.id.clone());
                    r.fly_region = Some(volume.region.clone());
                    r.orphaned_volume_ids.retain(|v| v != &volume.id);
                    if !r.orphaned_volume_ids.contains(&recorded) {
                        r.orphaned_volume_ids.push(recorded.clone());
                    }
                })
                .map(|()| MountCheck::AdoptedMounted);
        }
        tracing::warn!(tag = "reconcile", reason, action = "retire_unmountable_machine", user_id = %self.user_id(),
            machine_id = %machine.id, mounted_volume_id = ?other, volume_id = %recorded);
        self.retire_machine(reason)?;
        Ok(MountCheck::Retired)
    }

    fn recreate_lost_machine(
        &mut self,
        machine_id: &str,
        config: MachineConfig,
    ) -> Result<(), LifecycleError> {
        tracing::info!(tag = "reconcile", reason = "start", action = "clear_stale_machine", user_id = %self.user_id(), machine_id);
        self.commit(|r| r.fly_machine_id = None)?;
        self.create_machine(config)
    }

    /// `stopMachineAndWait`: stop, read the `instance_id`, wait for `stopped` with it. 404 anywhere means
    /// the machine is gone, which counts as stopped; other errors propagate.
    pub(crate) fn stop_machine_and_wait(
        &mut self,
        machine_id: &str,
    ) -> Result<StopResult, LifecycleError> {
        let app = self.app_name()?;
        let fly = self.instances.fly;
        let gone = |e: &FlyError| e.is_not_found();
        match fly.stop_machine(&app, machine_id) {
            Err(error) if gone(&error) => return Ok(StopResult::Gone),
            Err(error) => return Err(LifecycleError::fly("stop machine", error)),
            Ok(()) => {}
        }
        let machine: Machine = match fly.get_machine(&app, machine_id) {
            Err(error) if gone(&error) => return Ok(StopResult::Gone),
            Err(error) => return Err(LifecycleError::fly("get machine", error)),
            Ok(machine) => machine,
        };
        match self.wait(machine_id, WaitState::Stopped, Some(machine.instance_id))? {
            Ok(()) => Ok(StopResult::Stopped),
            Err(error) if gone(&error) => Ok(StopResult::Gone),
            Err(error) => Err(LifecycleError::fly("wait for stopped", error)),
        }
    }

    /// Runs `attempt`; on a capacity error, replaces the stranded volume and creates a new machine once.
    pub(crate) fn with_capacity_recovery(
        &mut self,
        reason: &'static str,
        attempt: impl FnOnce(&mut Self) -> Result<(), LifecycleError>,
    ) -> Result<(), LifecycleError> {
        match attempt(self) {
            Err(LifecycleError::Fly { source, operation }) if source.is_capacity() => {
                tracing::warn!(tag = "reconcile", reason, action = "capacity_recovery", user_id = %self.user_id(),
                    operation, error = %source);
                self.replace_stranded_volume(reason)?;
                let config = self.build_config()?;
                self.create_machine(config)
            }
            other => other,
        }
    }
}

/// How a machine's volume compares with the record's, after [`Session::settle_mounted_volume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MountCheck {
    /// It mounts the recorded volume at `/root` (or there is no recorded volume or config to compare).
    Mounted,
    /// It mounts the recorded volume at another path: an update can fix that.
    WrongPath,
    /// It mounted another volume that exists; the record now names that one.
    AdoptedMounted,
    /// It mounted no volume or a lost one; it was retired and the record names no machine.
    Retired,
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopResult {
    /// Fly reports the machine stopped.
    Stopped,
    /// The machine no longer exists.
    Gone,
}

fn allocate(
    fly: &dyn crate::fly::FlyApi,
    app: &str,
    kind: IpAssignmentType,
) -> Result<(), LifecycleError> {
    match fly.allocate_ip(app, &AllocateIpRequest::of(kind)) {
        Ok(_) => Ok(()),
        Err(error) if error.is_already_exists() => Ok(()),
        Err(error) => Err(LifecycleError::fly("allocate ip", error)),
    }
}

/// Whether a record's status is running with a machine.
pub(crate) fn running_with_machine(record: &InstanceRecord) -> Option<String> {
    (record.status == Some(crate::record::InstanceState::Running))
        .then(|| record.fly_machine_id.clone())
        .flatten()
}
