//! The reconciler (original-behaviour.md §5): level-triggered, idempotent checks of one instance against
//! Fly, and the due-index walk that decides which instances to check on a cron tick.
//!
//! # Flow (one instance, under its lease)
//!
//! 1. `destroying` → retry the pending deletes and finish the destroy; nothing else runs.
//! 2. Per-user app setup left incomplete → finish it (the original's App DO retry alarm).
//! 3. Orphans from capacity recovery → delete them.
//! 4. Machine: none recorded → metadata recovery (30-minute cooldown); else read it and sync the status
//!    (`started` → running; `stopped`/`created` while running → fail count, `stopped` at 5; a status
//!    read's live check marks `stopped` at once, also for `suspended`/`destroyed`), repair the
//!    `/root` mount of a started machine, and on 404 forget the machine (`stopped`).
//! 5. Volume: none → create one; recorded but 404 → replace it with an empty one (logged as data loss).
//! 6. Schedule the next check by status (running 5 min, destroying 1 min, idle 30 min, + 0–60 s jitter).
//!
//! Fly errors other than 404 leave the state as it is until the next check; a 429 also ends the current
//! cron tick early so the whole fleet backs off.

use std::time::Duration;

use serde::Serialize;

use crate::due::{MINUTE_MS, minute_of};
use crate::fly::{Machine, MachineListFilter, MachineState};
use crate::machine::{METADATA_USER_ID, VOLUME_MOUNT_PATH, mount};
use crate::record::{InstanceRecord, InstanceState};
use crate::store::{StoreError, duration_ms};

use super::{INTERVAL_IDLE, Instances, LifecycleError, SELF_HEAL_THRESHOLD, Session};

/// What one reconcile pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileOutcome {
    /// The instance was checked (false: not provisioned, or busy with another operation).
    pub checked: bool,
    /// Fly answered 429 somewhere; callers should back off.
    pub rate_limited: bool,
    /// Status after the pass.
    pub status: Option<String>,
}

/// What one due-index walk did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DueReport {
    /// Minutes claimed and processed.
    pub minutes: u32,
    /// Instances checked.
    pub checked: u32,
    /// Entries skipped (superseded, unprovisioned, or their instance busy and requeued).
    pub skipped: u32,
    /// Entries moved to the next minute (budget spent, rate limited, busy).
    pub requeued: u32,
    /// Checks that failed (logged).
    pub errors: u32,
    /// Stopped early because Fly rate-limited us.
    pub rate_limited: bool,
}

/// Entries count as current if their minute is not more than this before the record's next check.
const STALE_SLACK_MS: i64 = MINUTE_MS;

impl Instances<'_> {
    /// Reconciles one user now (`POST /api/platform/reconcile` for one user, tests, live checks), waiting
    /// for the lease like any operation.
    pub fn reconcile(
        &self,
        user_id: &str,
        reason: &'static str,
    ) -> Result<ReconcileOutcome, LifecycleError> {
        if !self.record(user_id)?.is_some_and(|r| r.is_provisioned()) {
            return Ok(ReconcileOutcome::default());
        }
        self.with_lease(user_id, "reconcile", |session| {
            session.reconcile_with_fly(reason)
        })
    }

    /// Live check for a status read: reconcile only if the lease is free; returns the fresh record.
    pub(crate) fn live_check(
        &self,
        user_id: &str,
    ) -> Result<Option<InstanceRecord>, LifecycleError> {
        let owner = format!("live-{:016x}", self.random.next_u64());
        let Ok(guard) = self.store().try_acquire(user_id, &owner)? else {
            return Ok(None);
        };
        let now = self.now();
        self.run_session(guard, |session| {
            session.commit(|r| r.last_live_check_at = Some(now))?;
            session.reconcile_with_fly("live_check")?;
            Ok(())
        })?;
        self.record(user_id)
    }

    /// Walks the due index from its cursor up to one minute ago, checking each due instance under its
    /// lease, within `budget` of wall time and at most `max_checks` checks. Safe to run concurrently.
    pub fn reconcile_due(
        &self,
        budget: Duration,
        max_checks: u32,
    ) -> Result<DueReport, LifecycleError> {
        let started = self.now();
        let deadline = started + duration_ms(budget);
        let due = self.due();
        let last_ready = minute_of(started) - 1;
        let first = due
            .cursor()
            .map_err(StoreError::from)?
            .unwrap_or(last_ready - 60);
        let mut report = DueReport::default();
        let mut minute = first;
        while minute <= last_ready {
            if self.now() >= deadline || report.checked >= max_checks || report.rate_limited {
                break;
            }
            if due.claim(minute).map_err(StoreError::from)? {
                let entries = due.entries(minute).map_err(StoreError::from)?;
                for (index, user_id) in entries.iter().enumerate() {
                    let out_of_budget = self.now() >= deadline
                        || report.checked >= max_checks
                        || report.rate_limited;
                    if out_of_budget {
                        for rest in &entries[index..] {
                            due.schedule(rest, self.now(), self.now())
                                .map_err(StoreError::from)?;
                            report.requeued += 1;
                        }
                        break;
                    }
                    self.check_due_entry(user_id, minute, &mut report)?;
                }
                due.clear(minute).map_err(StoreError::from)?;
                report.minutes += 1;
            }
            minute += 1;
            due.set_cursor(minute).map_err(StoreError::from)?;
        }
        tracing::info!(
            tag = "reconcile",
            reason = "cron",
            action = "due_walk",
            minutes = report.minutes,
            checked = report.checked,
            skipped = report.skipped,
            requeued = report.requeued,
            errors = report.errors,
            rate_limited = report.rate_limited
        );
        Ok(report)
    }

    fn check_due_entry(
        &self,
        user_id: &str,
        minute: i64,
        report: &mut DueReport,
    ) -> Result<(), LifecycleError> {
        let record = match self.record(user_id) {
            Ok(Some(record)) if record.is_provisioned() => record,
            Ok(_) => {
                report.skipped += 1;
                return Ok(());
            }
            Err(error) => {
                tracing::warn!(tag = "reconcile", reason = "cron", action = "read_failed", user_id, error = %error);
                report.errors += 1;
                return Ok(());
            }
        };
        let entry_end = (minute + 1) * MINUTE_MS;
        if record
            .next_check_at_ms
            .is_some_and(|next| next > entry_end + STALE_SLACK_MS)
        {
            // Superseded by a later schedule, which has its own entry.
            report.skipped += 1;
            return Ok(());
        }
        let owner = format!("cron-{:016x}", self.random.next_u64());
        let guard = match self.store().try_acquire(user_id, &owner) {
            Ok(Ok(guard)) => guard,
            Ok(Err(_held)) => {
                // Busy: the holder schedules a check when it finishes; requeue in case it dies.
                self.due()
                    .schedule(user_id, self.now() + MINUTE_MS, self.now())
                    .map_err(StoreError::from)?;
                report.requeued += 1;
                return Ok(());
            }
            Err(error) => {
                tracing::warn!(tag = "reconcile", reason = "cron", action = "lease_failed", user_id, error = %error);
                report.errors += 1;
                return Ok(());
            }
        };
        match self.run_session(guard, |session| session.reconcile_with_fly("alarm")) {
            Ok(outcome) => {
                report.checked += 1;
                report.rate_limited |= outcome.rate_limited;
            }
            Err(error) => {
                tracing::warn!(tag = "reconcile", reason = "alarm", action = "reconcile_failed", user_id, error = %error);
                report.errors += 1;
            }
        }
        Ok(())
    }
}

impl Session<'_, '_> {
    /// `reconcileWithFly` (see the module doc for the rules and their order).
    pub(crate) fn reconcile_with_fly(
        &mut self,
        reason: &'static str,
    ) -> Result<ReconcileOutcome, LifecycleError> {
        let mut outcome = ReconcileOutcome {
            checked: true,
            ..ReconcileOutcome::default()
        };
        if !self.record().is_provisioned() {
            return Ok(ReconcileOutcome::default());
        }
        if self.record().status == Some(InstanceState::Destroying) {
            self.retry_pending_destroy(reason)?;
            outcome.status = self.record().status.map(|s| s.as_str().to_owned());
            return Ok(outcome);
        }
        if self.record().fly_app_name.is_some()
            && !self.record().app_setup.is_complete()
            && let Err(error) = self.ensure_app()
        {
            note(&mut outcome, &error);
            tracing::warn!(tag = "reconcile", reason, action = "app_setup_failed", user_id = %self.user_id(), error = %error);
        }
        self.cleanup_orphans(reason)?;
        if let Err(error) = self.reconcile_machine(reason) {
            note(&mut outcome, &error);
            if let LifecycleError::Store(_) = error {
                return Err(error);
            }
            tracing::warn!(tag = "reconcile", reason, action = "machine_check_failed", user_id = %self.user_id(), error = %error);
        }
        if let Err(error) = self.reconcile_volume(reason) {
            note(&mut outcome, &error);
            if let LifecycleError::Store(_) = error {
                return Err(error);
            }
            tracing::warn!(tag = "reconcile", reason, action = "volume_check_failed", user_id = %self.user_id(), error = %error);
        }
        outcome.status = self.record().status.map(|s| s.as_str().to_owned());
        Ok(outcome)
    }

    fn reconcile_machine(&mut self, reason: &'static str) -> Result<(), LifecycleError> {
        let Some(machine_id) = self.record().fly_machine_id.clone() else {
            return self.attempt_metadata_recovery(reason);
        };
        let app = self.app_name()?;
        let machine = match self.instances.fly.get_machine(&app, &machine_id) {
            Ok(machine) => machine,
            Err(error) if error.is_not_found() => {
                return self.handle_machine_gone(reason, &machine_id);
            }
            Err(error) => return Err(LifecycleError::fly("get machine", error)),
        };
        self.sync_status(reason, &machine)?;
        match self.repair_mount(&machine, reason) {
            Err(LifecycleError::Fly { source, .. }) if source.is_not_found() => {
                self.handle_machine_gone(reason, &machine_id)
            }
            other => other,
        }
    }

    fn handle_machine_gone(
        &mut self,
        reason: &'static str,
        machine_id: &str,
    ) -> Result<(), LifecycleError> {
        tracing::info!(tag = "reconcile", reason, action = "clear_stale_machine", user_id = %self.user_id(), machine_id);
        let now = self.instances.now();
        self.commit(|r| {
            r.fly_machine_id = None;
            r.status = Some(InstanceState::Stopped);
            r.last_stopped_at = Some(now);
            r.health_check_fail_count = 0;
        })
    }

    /// `syncStatusWithFly`.
    fn sync_status(
        &mut self,
        reason: &'static str,
        machine: &Machine,
    ) -> Result<(), LifecycleError> {
        let status = self.record().status;
        let running = status == Some(InstanceState::Running);
        let live = reason == "live_check";
        match machine.state {
            MachineState::Started if !running => {
                tracing::info!(tag = "reconcile", reason, action = "sync_status", user_id = %self.user_id(),
                    machine_id = %machine.id, old_state = ?status, new_state = "running");
                self.commit(|r| {
                    r.status = Some(InstanceState::Running);
                    r.health_check_fail_count = 0;
                })
            }
            MachineState::Started if self.record().health_check_fail_count > 0 => {
                self.commit(|r| r.health_check_fail_count = 0)
            }
            MachineState::Stopped
            | MachineState::Created
            | MachineState::Suspended
            | MachineState::Destroyed
                if running
                    && (live
                        || matches!(
                            machine.state,
                            MachineState::Stopped | MachineState::Created
                        )) =>
            {
                let count = self.record().health_check_fail_count + 1;
                // A status read's live check follows Fly at once, as the original's did (§4.3), but
                // persisted; the periodic check waits for five sightings to ride out flaps (§4.4).
                if live || count >= SELF_HEAL_THRESHOLD {
                    tracing::info!(tag = "reconcile", reason, action = "mark_stopped", user_id = %self.user_id(),
                        machine_id = %machine.id, fail_count = count);
                    let now = self.instances.now();
                    self.commit(|r| {
                        r.status = Some(InstanceState::Stopped);
                        r.last_stopped_at = Some(now);
                        r.health_check_fail_count = 0;
                    })
                } else {
                    self.commit(|r| r.health_check_fail_count = count)
                }
            }
            _ => Ok(()),
        }
    }

    /// `reconcileMachineMount`: a started machine must mount the recorded volume at `/root`; if not, stop
    /// it, update its config with the mount, and wait for it to start again.
    pub(crate) fn repair_mount(
        &mut self,
        machine: &Machine,
        reason: &'static str,
    ) -> Result<(), LifecycleError> {
        let Some(volume_id) = self.record().fly_volume_id.clone() else {
            return Ok(());
        };
        if machine.state != MachineState::Started {
            return Ok(());
        }
        let Some(config) = machine.config.clone() else {
            return Ok(());
        };
        if config
            .mounts
            .iter()
            .any(|m| m.volume == volume_id && m.path == VOLUME_MOUNT_PATH)
        {
            return Ok(());
        }
        tracing::info!(tag = "reconcile", reason, action = "repair_mount", user_id = %self.user_id(),
            machine_id = %machine.id, volume_id = %volume_id);
        self.stop_machine_and_wait(&machine.id)?;
        let mut config = config;
        config.mounts = vec![mount(&volume_id)];
        self.update_and_boot(&machine.id, config, &MachineState::Stopped)
            .map_err(|(operation, error)| LifecycleError::fly(operation, error))?;
        Ok(())
    }

    /// `attemptMetadataRecovery`: find the user's machine by Fly metadata (30-minute cooldown).
    pub(crate) fn attempt_metadata_recovery(
        &mut self,
        reason: &'static str,
    ) -> Result<(), LifecycleError> {
        let now = self.instances.now();
        if self
            .record()
            .last_metadata_recovery_at
            .is_some_and(|t| now - t < duration_ms(INTERVAL_IDLE))
        {
            return Ok(());
        }
        self.commit(|r| r.last_metadata_recovery_at = Some(now))?;
        self.recover_from_metadata(reason)
    }

    /// The lookup behind [`Self::attempt_metadata_recovery`] without its cooldown: provisioning a fresh
    /// record calls it once, and must not delay the reconciler's own attempts.
    pub(crate) fn recover_from_metadata(
        &mut self,
        reason: &'static str,
    ) -> Result<(), LifecycleError> {
        let user_id = self.user_id();
        let app = self.app_name()?;
        let fly = self.instances.fly;
        let machines = fly
            .list_machines(
                &app,
                &MachineListFilter::metadata(METADATA_USER_ID, user_id.clone()),
            )
            .map_err(|e| LifecycleError::fly("list machines", e))?;
        if machines.len() > 1 {
            let ids: Vec<&str> = machines.iter().map(|m| m.id.as_str()).collect();
            tracing::warn!(tag = "reconcile", reason, action = "multiple_machines_found", user_id, count = machines.len(), machine_ids = ?ids);
        }
        let Some(candidate) = select_recovery_candidate(&machines) else {
            return Ok(());
        };
        let candidate = candidate.clone();
        let adopt_volume = if self.record().fly_volume_id.is_none() {
            let mounted = candidate
                .config
                .as_ref()
                .and_then(|c| c.mounts.iter().find(|m| m.path == VOLUME_MOUNT_PATH))
                .map(|m| m.volume.clone());
            match mounted {
                Some(volume_id) => match fly.get_volume(&app, &volume_id) {
                    Ok(volume) => {
                        tracing::info!(tag = "reconcile", reason, action = "recover_volume_from_mount", user_id, volume_id = %volume.id);
                        Some(volume.id)
                    }
                    Err(error) if error.is_not_found() => {
                        tracing::warn!(tag = "reconcile", reason, action = "recovered_volume_missing", user_id, volume_id = %volume_id);
                        None
                    }
                    Err(error) => return Err(LifecycleError::fly("get volume", error)),
                },
                None => None,
            }
        } else {
            None
        };
        tracing::info!(tag = "reconcile", reason, action = "recover_machine_from_metadata", user_id,
            machine_id = %candidate.id, state = %candidate.state, region = %candidate.region);
        self.commit(|r| {
            r.fly_machine_id = Some(candidate.id.clone());
            r.fly_region = Some(candidate.region.clone());
            match candidate.state {
                MachineState::Started => r.status = Some(InstanceState::Running),
                MachineState::Stopped | MachineState::Created => {
                    r.status = Some(InstanceState::Stopped)
                }
                _ => {}
            }
            if let Some(volume) = &adopt_volume {
                r.fly_volume_id = Some(volume.clone());
            }
        })
    }

    fn reconcile_volume(&mut self, reason: &'static str) -> Result<(), LifecycleError> {
        let Some(volume_id) = self.record().fly_volume_id.clone() else {
            return self.ensure_volume(reason);
        };
        let app = self.app_name()?;
        match self.instances.fly.get_volume(&app, &volume_id) {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() => {
                tracing::warn!(tag = "reconcile", reason, action = "replace_lost_volume", user_id = %self.user_id(),
                    old_volume_id = %volume_id, data_loss = true);
                self.commit(|r| {
                    r.fly_volume_id = None;
                    r.fly_region = None;
                })?;
                self.ensure_volume(reason)
            }
            Err(error) => Err(LifecycleError::fly("get volume", error)),
        }
    }
}

/// `selectRecoveryCandidate`: skip destroyed/destroying, prefer started > starting > stopped > created >
/// stopping > replacing > others, newest `updated_at` first.
pub fn select_recovery_candidate(machines: &[Machine]) -> Option<&Machine> {
    let rank = |state: &MachineState| match state {
        MachineState::Started => 0,
        MachineState::Starting => 1,
        MachineState::Stopped => 2,
        MachineState::Created => 3,
        MachineState::Stopping => 4,
        MachineState::Replacing => 5,
        _ => 99,
    };
    machines
        .iter()
        .filter(|m| !matches!(m.state, MachineState::Destroyed | MachineState::Destroying))
        .min_by(|a, b| {
            rank(&a.state)
                .cmp(&rank(&b.state))
                .then_with(|| b.updated_at.cmp(&a.updated_at))
        })
}

fn note(outcome: &mut ReconcileOutcome, error: &LifecycleError) {
    if let LifecycleError::Fly { source, .. } = error {
        outcome.rate_limited |= source.is_rate_limited();
    }
}
