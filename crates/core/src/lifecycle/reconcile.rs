//! The reconciler (original-behaviour.md §5): level-triggered, idempotent checks of one instance against
//! Fly, and the due-index walk that decides which instances to check on a cron tick.
//!
//! # Flow (one instance, under its lease)
//!
//! 0. A create whose result was never recorded → adopt or orphan what Fly holds (`settle`, on every
//!    session). A record never provisioned is only looked at while it has something to settle,
//!    orphans to delete or a volume to verify (a first provision that failed midway); a volume Fly
//!    lost is forgotten there, not replaced.
//! 1. `destroying` → retry the pending deletes and finish the destroy; nothing else runs.
//! 2. Per-user app setup left incomplete → finish it (the original's App DO retry alarm).
//! 3. Orphans from capacity recovery → delete them.
//! 4. Machine: none recorded → metadata recovery (30-minute cooldown); else read it and sync the status
//!    (`started` → running; `stopped`/`created` while running → fail count, `stopped` at 5; a status
//!    read's live check marks `stopped` at once, also for `suspended`/`destroyed`), repair the
//!    `/root` mount of a started machine (a wrong path by an update; Fly cannot swap a volume, so a
//!    machine on another volume that exists makes the record adopt it, and one on none or a lost one
//!    is retired, `stopped`), and on 404 forget the machine (`stopped`).
//! 5. Volume: none → create one; recorded but 404 → replace it with an empty one (logged as data loss).
//! 6. Schedule the next check by status (running 5 min, destroying 1 min, idle 30 min, + 0–60 s jitter).
//!
//! Fly errors other than 404 leave the state as it is until the next check; a 429 defers that instance
//! (by Fly's `Retry-After` when it is longer than the usual backoff), never the rest of the walk.

use std::time::Duration;

use serde::Serialize;

use crate::due::{
    MINUTE_MS, PROGRESS_EVERY, SHARDS, SWEEP_OVERDUE_MS, SWEEP_READ_CHUNK, ShardClaim, minute_of,
};
use crate::fleet::{FleetFeed, FollowError, Observation};
use crate::fly::{Machine, MachineListFilter, MachineState};
use crate::machine::{METADATA_USER_ID, VOLUME_MOUNT_PATH, mount};
use crate::record::{InstanceRecord, InstanceState};
use crate::store::{StoreError, duration_ms, record_key};

use super::resources::MountCheck;
use super::{INTERVAL_IDLE, Instances, LifecycleError, SELF_HEAL_THRESHOLD, Session};

/// What one reconcile pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileOutcome {
    /// The instance was checked (false: not provisioned, or busy with another operation).
    pub checked: bool,
    /// Fly answered 429 somewhere; callers should back off.
    pub rate_limited: bool,
    /// The longest `Retry-After` Fly sent with a 429, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<i64>,
    /// Status after the pass.
    pub status: Option<String>,
    /// A step failed with an error that may pass (logged; not a 429, which asks for the opposite): the
    /// due walk checks again after a short backoff instead of a whole cadence later.
    pub retry_soon: bool,
}

/// What one due-index walk (and the sweep step after it) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DueReport {
    /// Shard-minutes finished (cleared).
    pub minutes: u32,
    /// Instances checked.
    pub checked: u32,
    /// Entries skipped (superseded or unprovisioned).
    pub skipped: u32,
    /// Entries moved to a later minute (rate limited, busy, or a failure to retry soon). Entries left
    /// when the budget ends are not moved: they wait in their minute for the next walk.
    pub requeued: u32,
    /// Checks that failed (logged; each one requeued or left in its minute).
    pub errors: u32,
    /// Fly answered 429 to at least one check; each such instance was deferred (requeued), the
    /// pass went on.
    pub rate_limited: bool,
    /// Registry entries the sweep looked at.
    pub swept: u32,
    /// Unwatched instances the sweep put back into the index.
    pub rescued: u32,
    /// Machines the fleet listing showed in this walk's follow step.
    pub listed: u32,
}

/// Entries count as current if their minute is not more than this before the record's next check.
const STALE_SLACK_MS: i64 = MINUTE_MS;
/// Delay before a check that failed transiently (store error, Fly 5xx, contention) is tried again: long
/// enough for a blip to pass, short enough that the instance is not left alone for a whole cadence.
pub const RETRY_BACKOFF_MS: i64 = 2 * MINUTE_MS;
/// Delay before checking an instance whose lease another operation holds (it schedules its own check when
/// it finishes; this entry only covers a holder that dies).
const BUSY_BACKOFF_MS: i64 = MINUTE_MS;

/// What became of one minute of a claimed shard.
enum MinuteOutcome {
    /// Every slot handled; the minute is cleared.
    Done,
    /// The walker stopped (budget spent, claim lost, an entry it could not deal with); its progress is
    /// recorded and the rest waits for the next walk.
    Stopped,
}

impl Instances<'_> {
    /// Reconciles one user now (`POST /api/platform/reconcile` for one user, tests, live checks), waiting
    /// for the lease like any operation.
    pub fn reconcile(
        &self,
        user_id: &str,
        reason: &'static str,
    ) -> Result<ReconcileOutcome, LifecycleError> {
        if !self.record(user_id)?.is_some_and(|r| r.needs_watch()) {
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

    /// One cron tick: walks the due index from its cursor up to one minute ago, checking each due instance
    /// under its lease, within `budget` of wall time and at most `max_checks` checks; then sweeps one batch
    /// of the registry (see [`crate::due`]). Safe to run concurrently and to kill at any point.
    ///
    /// A failure of the index itself (claiming a shard, reading or clearing a minute) ends the walk and
    /// is returned after the sweep ran; nothing is lost by it (the shard's claim expires, and the
    /// minute keeps its entries and progress). A failure for one
    /// instance only requeues that instance.
    pub fn reconcile_due(
        &self,
        budget: Duration,
        max_checks: u32,
    ) -> Result<DueReport, LifecycleError> {
        let deadline = self.now() + duration_ms(budget);
        let mut report = DueReport::default();
        self.follow_fleet(&mut report);
        let walked = self.walk_due(deadline, max_checks, &mut report);
        if let Err(error) = &walked {
            tracing::warn!(tag = "reconcile", reason = "cron", action = "due_walk_aborted", error = %error);
        }
        if let Err(error) = self.sweep(&mut report) {
            // The sweep is a backstop: its failure is logged and retried next tick, not the tick's failure.
            report.errors += 1;
            tracing::warn!(tag = "reconcile", reason = "sweep", action = "sweep_failed", error = %error);
        }
        // Debug: the reconciler's `reconcile_tick` line carries these counts at info when the tick
        // did anything, so an idle system stays quiet.
        tracing::debug!(
            tag = "reconcile",
            reason = "cron",
            action = "due_walk",
            minutes = report.minutes,
            checked = report.checked,
            skipped = report.skipped,
            requeued = report.requeued,
            errors = report.errors,
            rate_limited = report.rate_limited,
            swept = report.swept,
            rescued = report.rescued
        );
        walked.map_err(LifecycleError::from)?;
        Ok(report)
    }

    /// One step of following Fly's org-wide listing (`fleet`), then whether this walk may trust it. A
    /// failure only costs this walk its shortcut: every check then reads Fly.
    fn follow_fleet(&self, report: &mut DueReport) {
        let Some(org) = self.settings.fly_org_slug.as_deref() else {
            // The legacy shared app has no org to list; its checks read Fly.
            return;
        };
        let feed = FleetFeed::new(self.kv);
        match feed.follow(self.fly, org, self.clock) {
            Ok(step) => {
                report.listed += step.listed;
                if step.followed {
                    tracing::debug!(
                        tag = "reconcile",
                        reason = "cron",
                        action = "follow_fleet",
                        pages = step.pages,
                        listed = step.listed,
                        written = step.written,
                        synced = step.synced
                    );
                }
            }
            Err(error) => {
                report.rate_limited |=
                    matches!(&error, FollowError::Fly(fly) if fly.is_rate_limited());
                tracing::warn!(tag = "reconcile", reason = "cron", action = "follow_fleet_failed", error = %error);
            }
        }
        match feed.state() {
            Ok(state) => self.feed_fresh.set(FleetFeed::is_fresh(&state, self.now())),
            Err(error) => {
                tracing::warn!(tag = "reconcile", reason = "cron", action = "feed_state_unreadable", error = %error);
            }
        }
    }

    fn out_of_budget(&self, until_ms: i64, max_checks: u32, report: &DueReport) -> bool {
        // Not a 429: Fly limits each machine (or app) on its own, so a rate-limited check defers
        // that instance only (see `check_due_entry`) and the pass goes on with the others.
        self.now() >= until_ms || report.checked >= max_checks
    }

    /// The walk part of [`Self::reconcile_due`]: visits the shards oldest cursor first (ties from a
    /// random shard, so walkers that start together spread out) until the budget is spent.
    fn walk_due(
        &self,
        deadline: i64,
        max_checks: u32,
        report: &mut DueReport,
    ) -> Result<(), StoreError> {
        match self.due().drain_legacy(self.now()) {
            Ok(0) => {}
            Ok(moved) => {
                tracing::info!(
                    tag = "reconcile",
                    reason = "upgrade",
                    action = "drain_legacy_index",
                    moved
                );
            }
            // Retried next walk; the sweep backstops it.
            Err(error) => {
                tracing::warn!(tag = "reconcile", reason = "upgrade", action = "drain_legacy_failed", error = %error);
            }
        }
        let last_ready = minute_of(self.now()) - 1;
        let offset = (self.random.next_u64() % u64::from(SHARDS)) as u32;
        let mut order: Vec<(i64, u32, u32)> = (0..SHARDS)
            .zip(self.due().cursors()?)
            .map(|(shard, cursor)| {
                let start = cursor.unwrap_or(last_ready - 60);
                (start, (shard + SHARDS - offset) % SHARDS, shard)
            })
            .collect();
        order.sort_unstable();
        for (start, _, shard) in order {
            if self.out_of_budget(deadline, max_checks, report) {
                break;
            }
            self.walk_shard(shard, start, last_ready, deadline, max_checks, report)?;
        }
        Ok(())
    }

    /// Walks one shard from `start` up to `last_ready` under a claim, if it has anything ready and nobody
    /// else holds it.
    fn walk_shard(
        &self,
        shard: u32,
        start: i64,
        last_ready: i64,
        deadline: i64,
        max_checks: u32,
        report: &mut DueReport,
    ) -> Result<(), StoreError> {
        let due = self.due();
        // Most shards have nothing ready on most ticks: look before claiming.
        let mut first = start;
        while first <= last_ready && !due.has_entries(shard, first)? {
            first += 1;
        }
        if first > last_ready {
            // Minutes up to `last_ready` never receive entries again, so moving past empty ones needs
            // no claim.
            if first != start {
                due.set_cursor(shard, first)?;
            }
            return Ok(());
        }
        let Some(mut claim) = due.claim(shard, self.now())? else {
            // Routine with several walkers: each tick most of them meet shards the others hold.
            tracing::debug!(
                tag = "reconcile",
                reason = "claimed_elsewhere",
                action = "skip_shard",
                shard
            );
            return Ok(());
        };
        let mut minute = first;
        let walked = loop {
            if minute > last_ready {
                break Ok(());
            }
            match self.walk_shard_minute(&mut claim, minute, deadline, max_checks, report) {
                Ok(MinuteOutcome::Done) => minute += 1,
                Ok(MinuteOutcome::Stopped) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        // The first minute not seen done; a stale-low cursor costs `exists` calls, never an entry.
        let moved = if minute != start {
            due.set_cursor(shard, minute)
        } else {
            Ok(())
        };
        if let Err(error) = due.release(&claim) {
            // It expires by itself within a claim's lifetime.
            tracing::warn!(tag = "reconcile", reason = "release_failed", action = "keep_claim", shard,
                expires_at_ms = claim.expires_at_ms(), error = %error);
        }
        walked?;
        moved.map_err(StoreError::from)
    }

    /// Works through the pending slots of one minute of a claimed shard; clears the minute when all are
    /// handled, else records how far it got.
    fn walk_shard_minute(
        &self,
        claim: &mut ShardClaim,
        minute: i64,
        deadline: i64,
        max_checks: u32,
        report: &mut DueReport,
    ) -> Result<MinuteOutcome, StoreError> {
        let due = self.due();
        let shard = claim.shard();
        let pending = due.pending(shard, minute)?;
        let mut seen = std::collections::HashSet::new();
        let mut handled = pending.done;
        let mut unrecorded = 0usize;
        let mut stopped = None;
        for (slot, user_id) in &pending.entries {
            if self.out_of_budget(deadline, max_checks, report) {
                stopped = Some("budget_spent");
                break;
            }
            if !due.renew(claim, self.now())? {
                stopped = Some("claim_lost");
                break;
            }
            if !seen.insert(user_id.as_str()) {
                report.skipped += 1;
            } else if !self.check_due_entry(user_id, minute, report) {
                // Neither handled nor requeued: it stays here for the next walk.
                stopped = Some("entry_not_requeued");
                break;
            }
            handled = *slot;
            unrecorded += 1;
            if unrecorded >= PROGRESS_EVERY {
                due.set_progress(shard, minute, handled)?;
                unrecorded = 0;
            }
        }
        if let Some(reason) = stopped {
            if handled > pending.done {
                due.set_progress(shard, minute, handled)?;
            }
            tracing::info!(
                tag = "reconcile",
                reason,
                action = "leave_minute",
                shard,
                minute,
                handled = handled - pending.done,
                left = pending.count - handled
            );
            return Ok(MinuteOutcome::Stopped);
        }
        due.clear(shard, minute)?;
        report.minutes += 1;
        // Sixteen of these a minute: the tick's summary line carries the counts at info.
        tracing::debug!(
            tag = "reconcile",
            reason = "cron",
            action = "minute_done",
            shard,
            minute,
            entries = pending.entries.len()
        );
        Ok(MinuteOutcome::Done)
    }

    /// Checks one due entry. Returns `false` only when the entry could neither be handled nor requeued, so
    /// its minute must be kept for another walk.
    fn check_due_entry(&self, user_id: &str, minute: i64, report: &mut DueReport) -> bool {
        let snapshot = match self.store().load(user_id).map_err(LifecycleError::from) {
            Ok(Some(snapshot)) if snapshot.record.needs_watch() => snapshot,
            Ok(_) => {
                report.skipped += 1;
                return true;
            }
            Err(error) => {
                report.errors += 1;
                let retry = Retry::after("read_failed", &error, false);
                return self.retry_later(user_id, minute, retry, report);
            }
        };
        let entry_end = (minute + 1) * MINUTE_MS;
        if snapshot
            .record
            .next_check_at_ms
            .is_some_and(|next| next > entry_end + STALE_SLACK_MS)
        {
            // Superseded by a later schedule, which has its own entry.
            report.skipped += 1;
            return true;
        }
        let owner = format!("cron-{:016x}", self.random.next_u64());
        // From the read just made: no second read before taking the lease.
        let guard = match self
            .store()
            .try_acquire_from(user_id, &owner, Some(snapshot))
        {
            Ok(Ok(guard)) => guard,
            Ok(Err(held)) => {
                // Busy: the holder schedules a check when it finishes; requeue in case it dies.
                let at = self.now() + BUSY_BACKOFF_MS;
                return match self.due().schedule(user_id, at, self.now()) {
                    Ok(requeued) => {
                        report.requeued += 1;
                        tracing::info!(tag = "reconcile", reason = "lease_busy", action = "requeue", user_id, minute,
                            requeued_minute = requeued, holder = %held.owner);
                        true
                    }
                    Err(error) => {
                        tracing::warn!(tag = "reconcile", reason = "lease_busy", action = "requeue_failed", user_id, minute, error = %error);
                        false
                    }
                };
            }
            Err(error) => {
                report.errors += 1;
                let error = LifecycleError::from(error);
                let retry = Retry::after("lease_failed", &error, false);
                return self.retry_later(user_id, minute, retry, report);
            }
        };
        let depth = Depth::Light {
            feed_fresh: self.feed_fresh.get(),
        };
        match self.run_session(guard, |session| session.reconcile_at("alarm", depth)) {
            Ok(outcome) => {
                report.checked += 1;
                if outcome.rate_limited {
                    // Fly's limits are per machine or app (1 request/s per action): defer this
                    // instance and carry on with the rest of the minute.
                    report.rate_limited = true;
                    let retry = Retry {
                        reason: "rate_limited",
                        error: &"Fly answered 429 during the check",
                        // Fly's `Retry-After` when it asks for longer than the usual backoff.
                        delay_ms: outcome.retry_after_ms.unwrap_or(0).max(RETRY_BACKOFF_MS),
                        lower_next_check: true,
                    };
                    let _ = self.retry_later(user_id, minute, retry, report);
                } else if outcome.retry_soon {
                    // Checked, but a step failed transiently (logged by the check): look again soon rather
                    // than a whole cadence later. The session already scheduled the regular check, so a
                    // failure to requeue loses nothing.
                    let retry = Retry {
                        reason: "check_step_failed",
                        error: &"a step of the check failed transiently (logged by the check)",
                        delay_ms: RETRY_BACKOFF_MS,
                        lower_next_check: true,
                    };
                    let _ = self.retry_later(user_id, minute, retry, report);
                }
                true
            }
            Err(error) => {
                report.errors += 1;
                // The session may have failed before scheduling its next check (store error while
                // finishing), or after pushing it a cadence out: either way the retry must count.
                let retry = Retry::after("check_failed", &error, true);
                self.retry_later(user_id, minute, retry, report)
            }
        }
    }

    /// Requeues `user_id` after a failure, as `retry` says. Returns whether the entry was written.
    fn retry_later(
        &self,
        user_id: &str,
        minute: i64,
        retry: Retry<'_>,
        report: &mut DueReport,
    ) -> bool {
        let Retry {
            reason,
            error,
            delay_ms,
            lower_next_check,
        } = retry;
        let now = self.now();
        let at = now + delay_ms;
        // Entry first, then the record, like every writer of the index (module doc of `due`).
        let requeued = match self.due().schedule(user_id, at, now) {
            Ok(requeued) => requeued,
            Err(schedule_error) => {
                tracing::warn!(tag = "reconcile", reason, action = "requeue_failed", user_id, minute,
                    error = %error, schedule_error = %schedule_error);
                return false;
            }
        };
        report.requeued += 1;
        tracing::warn!(tag = "reconcile", reason, action = "requeue", user_id, minute, requeued_minute = requeued,
            retry_at_ms = at, error = %error);
        if lower_next_check {
            let lowered = self.store().update(user_id, |record| {
                if record.needs_watch() {
                    record.next_check_at_ms =
                        Some(record.next_check_at_ms.map_or(at, |next| next.min(at)));
                }
                Ok::<(), StoreError>(())
            });
            if let Err(update_error) = lowered {
                // The entry stays; at worst it is skipped as stale and the regular check comes first.
                tracing::warn!(tag = "reconcile", reason, action = "lower_next_check_failed", user_id, error = %update_error);
            }
        }
        true
    }

    /// One sweep step: takes the next registry batch and puts back into the index every provisioned
    /// instance that names no next check or is more than `SWEEP_OVERDUE_MS` overdue.
    fn sweep(&self, report: &mut DueReport) -> Result<(), StoreError> {
        let due = self.due();
        let Some(batch) = due.next_sweep_batch()? else {
            return Ok(());
        };
        let now = self.now();
        let mut rescued = 0u32;
        for users in batch.users.chunks(SWEEP_READ_CHUNK) {
            let keys: Vec<String> = users.iter().map(|user| record_key(user)).collect();
            let values = self.kv.get_many(&keys)?;
            for (user_id, (_, value)) in users.iter().zip(values) {
                report.swept += 1;
                let written = value
                    .and_then(|raw| InstanceRecord::decode(&raw).ok())
                    .map(|(record, _)| record)
                    .filter(|record| record.version >= 1);
                let record = match written {
                    Some(record) => record,
                    // Absent at the usual key, unreadable, or never written since its creation: rare, so
                    // the store's own reader decides (it follows a record that creation had to place
                    // elsewhere, and reports a corrupt one).
                    None => match self.record(user_id) {
                        Ok(Some(record)) => record,
                        Ok(None) => continue,
                        Err(error) => {
                            tracing::warn!(tag = "reconcile", reason = "sweep", action = "skip_unreadable_record", user_id = %user_id, error = %error);
                            continue;
                        }
                    },
                };
                if !record.needs_watch() {
                    continue;
                }
                let next = record.next_check_at_ms;
                if next.is_some_and(|at| at.saturating_add(SWEEP_OVERDUE_MS) >= now) {
                    continue;
                }
                let reason = if next.is_some() {
                    "overdue"
                } else {
                    "unscheduled"
                };
                let requeued = due.schedule(user_id, now, now)?;
                rescued += 1;
                tracing::warn!(tag = "reconcile", reason, action = "sweep_requeue", user_id = %user_id,
                    next_check_at_ms = ?next, requeued_minute = requeued);
            }
        }
        report.rescued += rescued;
        // Every tick sweeps a batch; each rescue is logged above as a warning.
        tracing::debug!(
            tag = "reconcile",
            reason = "sweep",
            action = "sweep_batch",
            first = batch.first,
            last = batch.last,
            registered = batch.registered,
            users = batch.users.len(),
            rescued
        );
        Ok(())
    }
}

impl Session<'_, '_> {
    /// `reconcileWithFly` (see the module doc for the rules and their order), reading everything from
    /// Fly.
    pub(crate) fn reconcile_with_fly(
        &mut self,
        reason: &'static str,
    ) -> Result<ReconcileOutcome, LifecycleError> {
        self.reconcile_at(reason, Depth::Full)
    }

    /// `reconcileWithFly` at `depth`: a due check of a healthy instance is light (module doc).
    fn reconcile_at(
        &mut self,
        reason: &'static str,
        depth: Depth,
    ) -> Result<ReconcileOutcome, LifecycleError> {
        let now = self.instances.now();
        if matches!(depth, Depth::Light { .. }) && self.record().last_full_check_at.is_none() {
            // Never fully checked (a new instance, whose provisioning just read Fly, or one from before
            // full checks were recorded): its first full check falls at a point of the interval fixed
            // by its user id, so an upgraded fleet is not fully checked all at once.
            let spread = first_full_check_spread(&self.user_id());
            self.commit(|r| r.last_full_check_at = Some(now - spread))?;
        }
        let depth = match depth {
            Depth::Light { .. }
                if self
                    .record()
                    .last_full_check_at
                    .is_none_or(|at| now - at >= FULL_CHECK_INTERVAL_MS) =>
            {
                Depth::Full
            }
            other => other,
        };
        let mut outcome = ReconcileOutcome {
            checked: true,
            ..ReconcileOutcome::default()
        };
        if !self.record().is_provisioned() {
            // Never provisioned, but a failed first provision left something to delete (the session
            // settled any unconfirmed create before this) or a volume for the next provision, which
            // must still exist; nothing is created for a record that is not provisioned.
            if !self.record().needs_watch() {
                return Ok(ReconcileOutcome::default());
            }
            self.cleanup_orphans(reason)?;
            if let Err(error) = self.verify_recorded_volume(reason) {
                self.absorb_check_failure(&mut outcome, error, reason, "volume_check_failed")?;
            }
            return Ok(outcome);
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
        let mut volume_bound = false;
        let mut failed = false;
        match self.reconcile_machine(reason, depth) {
            Ok(bound) => volume_bound = bound,
            Err(error) => {
                failed = true;
                self.absorb_check_failure(&mut outcome, error, reason, "machine_check_failed")?;
            }
        }
        // A volume bound to a machine cannot be deleted (Fly refuses while it is attached), so a light
        // check takes the machine's mount as proof the volume is there; a full check reads it anyway.
        let skip_volume = volume_bound && depth != Depth::Full;
        if !skip_volume && let Err(error) = self.reconcile_volume(reason) {
            failed = true;
            self.absorb_check_failure(&mut outcome, error, reason, "volume_check_failed")?;
        }
        if depth == Depth::Full && !failed {
            self.commit(|r| r.last_full_check_at = Some(now))?;
        }
        outcome.status = self.record().status.map(|s| s.as_str().to_owned());
        Ok(outcome)
    }

    /// A failed step of a check: a store failure ends the check (returned); a Fly failure is noted in
    /// the outcome (retry timing, rate limit) and logged as `action`, and the check goes on.
    fn absorb_check_failure(
        &self,
        outcome: &mut ReconcileOutcome,
        error: LifecycleError,
        reason: &'static str,
        action: &'static str,
    ) -> Result<(), LifecycleError> {
        note(outcome, &error);
        if let LifecycleError::Store(_) = error {
            return Err(error);
        }
        tracing::warn!(tag = "reconcile", reason, action, user_id = %self.user_id(), error = %error);
        Ok(())
    }

    /// Checks the machine; returns whether it mounts the recorded volume (so the volume is bound and
    /// cannot have been deleted).
    fn reconcile_machine(
        &mut self,
        reason: &'static str,
        depth: Depth,
    ) -> Result<bool, LifecycleError> {
        let Some(machine_id) = self.record().fly_machine_id.clone() else {
            self.attempt_metadata_recovery(reason)?;
            // Recorded as running with no machine (an operation failed after retiring it, e.g. a
            // capacity relocation whose create then failed) and none found: nothing runs.
            if self.record().fly_machine_id.is_none()
                && self.record().status == Some(InstanceState::Running)
            {
                tracing::warn!(tag = "reconcile", reason, action = "sync_status", user_id = %self.user_id(),
                    old_state = "running", new_state = "stopped", cause = "no_machine");
                let now = self.instances.now();
                self.commit(|r| mark_stopped(r, now))?;
            }
            return Ok(false);
        };
        if let Depth::Light { feed_fresh: true } = depth
            // An unreadable observation only costs the shortcut.
            && let Ok(Some(observation)) = FleetFeed::new(self.instances.kv).observation(&machine_id)
            && self.observation_confirms(&observation)
        {
            // The listing shows the machine as the record says: nothing to ask Fly.
            tracing::debug!(tag = "reconcile", reason, action = "confirmed_by_listing", user_id = %self.user_id(),
                machine_id = %machine_id, state = %observation.state);
            return Ok(true);
        }
        let app = self.app_name()?;
        let machine = match self.instances.fly.get_machine(&app, &machine_id) {
            Ok(machine) => machine,
            Err(error) if error.is_not_found() => {
                self.handle_machine_gone(reason, &machine_id)?;
                return Ok(false);
            }
            Err(error) => return Err(LifecycleError::fly("get machine", error)),
        };
        self.sync_status(reason, &machine)?;
        match self.repair_mount(&machine, reason) {
            Err(LifecycleError::Fly { source, .. }) if source.is_not_found() => {
                self.handle_machine_gone(reason, &machine_id)?;
                Ok(false)
            }
            Err(error) => Err(error),
            Ok(()) => Ok(!machine.state.is_gone()
                && self
                    .record()
                    .fly_volume_id
                    .as_deref()
                    .is_some_and(|volume| Observation::of(&machine).mounts(volume))),
        }
    }

    /// Whether `observation` shows the machine as the record already has it: started and mounting the
    /// volume for a running instance without a pending fail count, not running for a stopped one. Only
    /// then may a light check skip Fly (the `fleet` module doc).
    fn observation_confirms(&self, observation: &Observation) -> bool {
        let record = self.record();
        let Some(volume) = record.fly_volume_id.as_deref() else {
            return false;
        };
        if !observation.mounts(volume) {
            return false;
        }
        match record.status {
            Some(InstanceState::Running) => {
                observation.state == MachineState::Started && record.health_check_fail_count == 0
            }
            Some(InstanceState::Stopped | InstanceState::Provisioned) => matches!(
                observation.state,
                MachineState::Stopped | MachineState::Created | MachineState::Suspended
            ),
            _ => false,
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
            mark_stopped(r, now);
        })?;
        // The record no longer names it; a failure leaves a few bytes that nothing reads.
        if let Err(error) = FleetFeed::new(self.instances.kv).forget(machine_id) {
            tracing::warn!(tag = "reconcile", reason, action = "forget_observation_failed", machine_id, error = %error);
        }
        Ok(())
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
                    self.commit(|r| mark_stopped(r, now))
                } else {
                    self.commit(|r| r.health_check_fail_count = count)
                }
            }
            _ => Ok(()),
        }
    }

    /// `reconcileMachineMount`: a started machine must mount the recorded volume at `/root`. A wrong path
    /// is repaired as the original did (stop, update the mount, wait for it to start again); another
    /// volume or none cannot be changed by an update ([`Session::settle_mounted_volume`]).
    pub(crate) fn repair_mount(
        &mut self,
        machine: &Machine,
        reason: &'static str,
    ) -> Result<(), LifecycleError> {
        if machine.state != MachineState::Started {
            return Ok(());
        }
        match self.settle_mounted_volume(machine, reason)? {
            MountCheck::Mounted | MountCheck::AdoptedMounted => return Ok(()),
            MountCheck::Retired => {
                let now = self.instances.now();
                return self.commit(|r| mark_stopped(r, now));
            }
            MountCheck::WrongPath => {}
        }
        // A wrong path means there is a recorded volume and a config to compare.
        let (Some(volume_id), Some(mut config)) =
            (self.record().fly_volume_id.clone(), machine.config.clone())
        else {
            return Ok(());
        };
        tracing::info!(tag = "reconcile", reason, action = "repair_mount", user_id = %self.user_id(),
            machine_id = %machine.id, volume_id = %volume_id);
        self.stop_machine_and_wait(&machine.id)?;
        config.mounts = vec![mount(&volume_id)];
        self.update_and_boot(&machine.id, config, &MachineState::Stopped)?;
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

    /// Volume: none → create one; recorded but gone → replace it with an empty one.
    fn reconcile_volume(&mut self, reason: &'static str) -> Result<(), LifecycleError> {
        if self.verify_recorded_volume(reason)? {
            return Ok(());
        }
        self.ensure_volume(reason)
    }

    /// Reads the recorded volume from Fly: whether it exists. One that Fly no longer has (404) is
    /// forgotten, logged as data loss, so the record never names it again.
    fn verify_recorded_volume(&mut self, reason: &'static str) -> Result<bool, LifecycleError> {
        let Some(volume_id) = self.record().fly_volume_id.clone() else {
            return Ok(false);
        };
        let app = self.app_name()?;
        match self.instances.fly.get_volume(&app, &volume_id) {
            Ok(_) => Ok(true),
            Err(error) if error.is_not_found() => {
                self.forget_lost_volume(reason, &volume_id)?;
                Ok(false)
            }
            Err(error) => Err(LifecycleError::fly("get volume", error)),
        }
    }

    /// Forgets a recorded volume Fly answered 404 for (its data is gone with it).
    pub(crate) fn forget_lost_volume(
        &mut self,
        reason: &'static str,
        volume_id: &str,
    ) -> Result<(), LifecycleError> {
        tracing::warn!(tag = "reconcile", reason, action = "forget_lost_volume", user_id = %self.user_id(),
            old_volume_id = %volume_id, data_loss = true);
        self.commit(|r| {
            r.fly_volume_id = None;
            r.fly_region = None;
        })
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

/// How much of Fly a check reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// Machine and volume from Fly (explicit reconciles, live checks, and every due check once per
    /// [`FULL_CHECK_INTERVAL_MS`]).
    Full,
    /// A due check: the machine from the fleet listing when it is fresh and confirms the record, else from
    /// Fly; the volume only when the machine does not mount it.
    Light {
        /// Whether the fleet listing was followed recently enough to trust (`fleet::FleetFeed::is_fresh`).
        feed_fresh: bool,
    },
}

/// How often a due check reads the machine and the volume from Fly even when the fleet listing vouches
/// for them: a backstop for changes the listing might not show (an order Fly does not promise, a lost
/// volume on a failed host). Six hours: at 100,000 instances that is about 280 full checks a minute
/// (two 20 ms Fly reads each, some 11 s of one walker's 45 s), where one hour would be 1,700 (67 s,
/// more than one walker has). Status reads and explicit reconciles are always full.
pub const FULL_CHECK_INTERVAL_MS: i64 = 6 * 60 * MINUTE_MS;

/// How long before now a never fully checked instance counts as fully checked: a point of
/// [`FULL_CHECK_INTERVAL_MS`] fixed by the user id (stable, evenly spread).
fn first_full_check_spread(user_id: &str) -> i64 {
    let spread = crate::ids::stable_hash(user_id) % FULL_CHECK_INTERVAL_MS.unsigned_abs();
    i64::try_from(spread).unwrap_or(0)
}

/// Why and when a due entry is tried again after a failure.
struct Retry<'e> {
    /// The decision's reason in the log.
    reason: &'static str,
    /// What failed.
    error: &'e dyn std::fmt::Display,
    /// How long from now.
    delay_ms: i64,
    /// Also pull the record's `nextCheckAtMs` forward to the retry: a failed session may already have
    /// pushed it a whole cadence out, which would make the new entry look stale and be skipped.
    lower_next_check: bool,
}

impl<'e> Retry<'e> {
    /// A retry after `error`: in [`RETRY_BACKOFF_MS`] when the failure may pass, at the idle cadence when it
    /// will not (a corrupt record stays watched without flooding the log).
    fn after(reason: &'static str, error: &'e LifecycleError, lower_next_check: bool) -> Self {
        let delay_ms = if error.is_retryable() {
            RETRY_BACKOFF_MS
        } else {
            duration_ms(INTERVAL_IDLE)
        };
        Self {
            reason,
            error,
            delay_ms,
            lower_next_check,
        }
    }
}

fn note(outcome: &mut ReconcileOutcome, error: &LifecycleError) {
    if let LifecycleError::Fly { source, .. } = error
        && source.is_rate_limited()
    {
        outcome.rate_limited = true;
        if let Some(wait) = source.retry_after() {
            let wait_ms = duration_ms(wait);
            outcome.retry_after_ms =
                Some(outcome.retry_after_ms.map_or(wait_ms, |ms| ms.max(wait_ms)));
        }
    }
    // Only failures that may pass are worth an early retry: a permanent one (a rejected request, missing
    // configuration) would just fail again sooner and more often.
    outcome.retry_soon |= error.is_retryable();
}

/// The record follows a machine that is not running (or not there): `stopped` as of `now`, with the
/// self-heal count reset.
fn mark_stopped(record: &mut InstanceRecord, now: i64) {
    record.status = Some(InstanceState::Stopped);
    record.last_stopped_at = Some(now);
    record.health_check_fail_count = 0;
}
