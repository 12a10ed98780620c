//! Creates whose result was never recorded. Fly can perform a create and still answer an error (a
//! 5xx, a timeout), and a holder can die or lose its lease between a create and the commit of its id;
//! either way Fly holds a volume or machine that no record field names, and nothing would ever delete
//! it (the chaos-convergence test found a destroy stuck on such a machine, a volume leaked by capacity
//! relocation and one by a failed first provision).
//!
//! So every create is preceded by a commit of `unconfirmed_create_at` (intent, as destroy records its
//! pending ids before deleting), and the commit of the created id clears it. A session that starts
//! with it set lists the app first — volumes by the sandbox's name, machines by the user's metadata —
//! and for every live resource no field names either adopts it (the record has no resource of that
//! kind, and the instance is not being destroyed) or keeps it as an orphan for `cleanup_orphans` to
//! delete, then clears the mark. A record with the mark or with orphans stays under the reconciler's
//! watch even when it was never provisioned (`InstanceRecord::needs_watch`).

use crate::fly::{Machine, MachineListFilter, Volume};
use crate::ids::volume_name;
use crate::machine::{METADATA_USER_ID, VOLUME_MOUNT_PATH};
use crate::record::{InstanceRecord, InstanceState};
use crate::store::StoreError;

use super::{LifecycleError, Session, select_recovery_candidate};

/// How soon a resource created by a holder that lost its lease is settled.
const SETTLE_CHECK_DELAY_MS: i64 = 60_000;

/// A Fly resource a holder created and then could not commit because its lease was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Created<'a> {
    Volume(&'a str),
    Machine(&'a str),
}

impl Session<'_, '_> {
    /// Records the intent to create before the Fly call (once per outstanding create).
    pub(crate) fn begin_create(&mut self) -> Result<(), LifecycleError> {
        if self.record().unconfirmed_create_at.is_some() {
            return Ok(());
        }
        let now = self.instances.now();
        self.commit(|r| r.unconfirmed_create_at = Some(now))
    }

    /// Adopts or orphans what an unconfirmed create may have left in Fly (see the module doc). A no-op
    /// unless the mark is set; a failed listing fails the session (retryable), leaving the mark.
    pub(crate) fn settle_unconfirmed_creates(
        &mut self,
        reason: &'static str,
    ) -> Result<(), LifecycleError> {
        if self.record().unconfirmed_create_at.is_none() {
            return Ok(());
        }
        let user_id = self.user_id();
        let Ok(app) = self.app_name() else {
            // No app: nothing can have been created.
            return self.commit(|r| r.unconfirmed_create_at = None);
        };
        let fly = self.instances.fly;
        let record = self.record().clone();
        // Names prove nothing in the legacy shared app (cut to 30 characters, two users' names can be
        // equal), so volumes are only settled in a per-user app; machines carry the user's metadata.
        let volumes: Vec<Volume> = if record.fly_app_name.is_some() && !record.sandbox_id.is_empty()
        {
            let name = volume_name(&record.sandbox_id);
            let mut volumes: Vec<Volume> = fly
                .list_volumes(&app)
                .map_err(|e| LifecycleError::fly("list volumes", e))?
                .into_iter()
                .filter(|v| {
                    v.name == name && !v.state.is_deleted() && !names_volume(&record, &v.id)
                })
                .collect();
            volumes.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
            volumes
        } else {
            Vec::new()
        };
        let machines: Vec<Machine> = fly
            .list_machines(
                &app,
                &MachineListFilter::metadata(METADATA_USER_ID, user_id.clone()),
            )
            .map_err(|e| LifecycleError::fly("list machines", e))?
            .into_iter()
            .filter(|m| !m.state.is_gone() && !names_machine(&record, &m.id))
            .collect();

        let destroying = record.status == Some(InstanceState::Destroying);
        let adopted_volume = (!destroying && record.fly_volume_id.is_none())
            .then(|| volumes.first().cloned())
            .flatten();
        let volume_id = adopted_volume
            .as_ref()
            .map(|v| v.id.clone())
            .or_else(|| record.fly_volume_id.clone());
        let mounting: Vec<Machine> = machines
            .iter()
            .filter(|m| volume_id.as_deref().is_some_and(|v| mounts(m, v)))
            .cloned()
            .collect();
        let adopted_machine = (!destroying && record.fly_machine_id.is_none())
            .then(|| select_recovery_candidate(&mounting).cloned())
            .flatten();
        let orphan_volumes: Vec<String> = volumes
            .iter()
            .filter(|v| adopted_volume.as_ref().is_none_or(|a| a.id != v.id))
            .map(|v| v.id.clone())
            .collect();
        let orphan_machines: Vec<String> = machines
            .iter()
            .filter(|m| adopted_machine.as_ref().is_none_or(|a| a.id != m.id))
            .map(|m| m.id.clone())
            .collect();

        tracing::warn!(tag = "reconcile", reason, action = "settle_unconfirmed_create", user_id,
            adopted_volume = ?adopted_volume.as_ref().map(|v| &v.id),
            adopted_machine = ?adopted_machine.as_ref().map(|m| &m.id),
            orphaned_volumes = ?orphan_volumes, orphaned_machines = ?orphan_machines);
        self.commit(|r| {
            if let Some(volume) = &adopted_volume {
                r.fly_volume_id = Some(volume.id.clone());
                r.fly_region = Some(volume.region.clone());
            }
            if let Some(machine) = &adopted_machine {
                r.fly_machine_id = Some(machine.id.clone());
            }
            push_new(&mut r.orphaned_volume_ids, &orphan_volumes);
            push_new(&mut r.orphaned_machine_ids, &orphan_machines);
            r.unconfirmed_create_at = None;
        })
    }

    /// After a create whose commit failed because the lease was lost, records it with a lease-free
    /// update (which never disturbs the new holder) unless the record names the resource by now (the new
    /// holder adopted it), and schedules a check. A volume is kept as an orphan (its name proves nothing
    /// in the legacy shared app, so it could not be settled there); a machine marks the create
    /// unconfirmed again, so the next session adopts it if the record has no machine (it mounts the
    /// user's volume and may be running) and orphans it otherwise. Best effort: a failure is logged,
    /// naming the resource.
    pub(crate) fn record_after_lost_lease(&self, created: Created<'_>, reason: &'static str) {
        let user_id = self.user_id();
        let instances = self.instances;
        let now = instances.now();
        let outcome = instances.store().update(&user_id, |r| {
            let named = match created {
                Created::Volume(id) => names_volume(r, id),
                Created::Machine(id) => names_machine(r, id),
            };
            match created {
                _ if named => {}
                Created::Volume(id) => r.orphaned_volume_ids.push(id.to_owned()),
                Created::Machine(_) => {
                    r.unconfirmed_create_at = r.unconfirmed_create_at.or(Some(now));
                }
            }
            Ok::<bool, StoreError>(!named)
        });
        let marked = match outcome {
            Ok((marked, _)) => marked,
            Err(error) => {
                tracing::error!(tag = "reconcile", reason, action = "record_after_lease_lost",
                    user_id, resource = ?created, marked = false, error = %error);
                return;
            }
        };
        // Entry after the record, unlike the usual order: the mark alone already keeps the record
        // watched by the sweep if this schedule fails.
        let scheduled = marked
            && instances
                .due()
                .schedule(&user_id, now + SETTLE_CHECK_DELAY_MS, now)
                .is_ok();
        tracing::warn!(tag = "reconcile", reason, action = "record_after_lease_lost",
            user_id, resource = ?created, marked, scheduled);
    }
}

pub(super) fn names_volume(record: &InstanceRecord, id: &str) -> bool {
    record.fly_volume_id.as_deref() == Some(id)
        || record.pending_destroy_volume_id.as_deref() == Some(id)
        || record.orphaned_volume_ids.iter().any(|v| v == id)
}

pub(super) fn names_machine(record: &InstanceRecord, id: &str) -> bool {
    record.fly_machine_id.as_deref() == Some(id)
        || record.pending_destroy_machine_id.as_deref() == Some(id)
        || record.orphaned_machine_ids.iter().any(|m| m == id)
}

fn mounts(machine: &Machine, volume_id: &str) -> bool {
    machine.config.as_ref().is_some_and(|c| {
        c.mounts
            .iter()
            .any(|mount| mount.volume == volume_id && mount.path == VOLUME_MOUNT_PATH)
    })
}

fn push_new(list: &mut Vec<String>, ids: &[String]) {
    for id in ids {
        if !list.contains(id) {
            list.push(id.clone());
        }
    }
}
