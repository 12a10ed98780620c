//! Lifecycle operations (original-behaviour.md §4) and the reconciler (§5) over the boundary traits.
//!
//! [`Instances`] bundles the key-value bucket, the Fly API, the clock, randomness and the settings; the
//! `instances` component builds one per request and calls one method. Every operation with Fly side
//! effects runs in a [`Session`]: it takes the user's fenced lease (see `store`), writes intent before
//! each side effect, commits each result as soon as it exists (a created machine id before waiting for
//! it), renews the lease before every long Fly wait (and stops there, before any further Fly call, when
//! the renewal fails: another operation may own the instance by then), and finally schedules the next
//! reconcile check and releases the lease. Before creating a volume or a machine it looks for one that a
//! stalled holder created but could not record, and adopts it. Reads (`status`, `config`, `route`) take no
//! lease.
//!
//! Differences from the original, on purpose (§10): tolerant decoding; re-provision keeps an omitted Kilo
//! key; capacity recovery keeps a machine it could not delete as an orphan to retry instead of forgetting
//! it, and uses the user's region list; restart records status and timestamps, recovers from capacity
//! errors and leaves a truthful status when it fails midway; a status read's live check persists through
//! the normal lease path; every Fly failure is classified, never masked.

mod error;
mod exec;
mod ops;
mod reconcile;
mod recovery;
mod resources;
mod route;
mod settle;
mod views;

use std::time::Duration;

pub use error::LifecycleError;
pub use exec::{
    DoctorOutcome, PAIRING_CACHE_TTL_MS, PairingApproval, is_valid_channel_name,
    is_valid_pairing_code,
};
pub use ops::{DestroyOutcome, ProvisionOutcome};
pub use reconcile::{
    DueReport, FULL_CHECK_INTERVAL_MS, ReconcileOutcome, select_recovery_candidate,
};
pub use recovery::{RECOVERY_WINDOW, Recovery};
pub use route::route_of;
pub use views::{ChannelsView, ConfigSummary, InstanceStatus, KiloCodeConfigView, Route};

use crate::clock::{Clock, Random};
use crate::due::DueIndex;
use crate::env::{EnvelopeDecryptor, MachineEnv};
use crate::fly::FlyApi;
use crate::kv::KeyValue;
use crate::record::{InstanceRecord, InstanceState};
use crate::settings::Settings;
use crate::store::{LeaseGuard, RecordStore, StoreError};

/// Reconcile cadence while running (`ALARM_INTERVAL_RUNNING_MS`).
pub const INTERVAL_RUNNING: Duration = Duration::from_secs(5 * 60);
/// Reconcile cadence while destroying (`ALARM_INTERVAL_DESTROYING_MS`).
pub const INTERVAL_DESTROYING: Duration = Duration::from_secs(60);
/// Reconcile cadence when provisioned or stopped (`ALARM_INTERVAL_IDLE_MS`); also the metadata cooldown.
pub const INTERVAL_IDLE: Duration = Duration::from_secs(30 * 60);
/// Upper bound of the uniform jitter added to every interval (`ALARM_JITTER_MS`).
pub const JITTER_MS: u64 = 60_000;
/// Consecutive "stopped while running" checks before the status follows Fly (`SELF_HEAL_THRESHOLD`).
pub const SELF_HEAL_THRESHOLD: u32 = 5;
/// Minimum time between live checks triggered by status reads (`LIVE_CHECK_THROTTLE_MS`).
pub const LIVE_CHECK_THROTTLE_MS: i64 = 30_000;

/// The interval to the next reconcile check for a status.
pub fn interval_for(status: InstanceState) -> Duration {
    match status {
        InstanceState::Running => INTERVAL_RUNNING,
        InstanceState::Destroying => INTERVAL_DESTROYING,
        InstanceState::Provisioned | InstanceState::Stopped => INTERVAL_IDLE,
    }
}

/// Everything a lifecycle operation needs.
pub struct Instances<'a> {
    pub(crate) kv: &'a dyn KeyValue,
    pub(crate) fly: &'a dyn FlyApi,
    pub(crate) clock: &'a dyn Clock,
    pub(crate) random: &'a dyn Random,
    pub(crate) settings: &'a Settings,
    pub(crate) decryptor: Option<&'a dyn EnvelopeDecryptor>,
    pub(crate) registry: Option<&'a dyn InstanceRegistry>,
    /// Whether this call's due walk may trust the fleet listing (set by `reconcile_due` after it
    /// followed the listing; `fleet` module doc).
    pub(crate) feed_fresh: std::cell::Cell<bool>,
}

/// The Postgres registry of active instances (`kiloclaw_instances`), which Next.js writes. `start` asks it
/// when the store has no record for a user, to restore one (original-behaviour.md §4.6).
pub trait InstanceRegistry {
    /// The sandbox id of the user's active (not destroyed) instance, if any. An `Err` is logged and
    /// treated as "no row", as the original did.
    fn active_sandbox_id(&self, user_id: &str) -> Result<Option<String>, String>;
}

impl std::fmt::Debug for Instances<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances")
            .field("has_decryptor", &self.decryptor.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> Instances<'a> {
    /// Bundles the boundaries.
    pub fn new(
        kv: &'a dyn KeyValue,
        fly: &'a dyn FlyApi,
        clock: &'a dyn Clock,
        random: &'a dyn Random,
        settings: &'a Settings,
    ) -> Self {
        Self {
            kv,
            fly,
            clock,
            random,
            settings,
            decryptor: None,
            registry: None,
            feed_fresh: std::cell::Cell::new(false),
        }
    }

    /// Adds the instance registry used to restore lost records on start.
    pub fn with_registry(mut self, registry: &'a dyn InstanceRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Adds a decryptor for the users' RSA envelopes.
    pub fn with_decryptor(mut self, decryptor: &'a dyn EnvelopeDecryptor) -> Self {
        self.decryptor = Some(decryptor);
        self
    }

    pub(crate) fn store(&self) -> RecordStore<'a, dyn KeyValue + 'a, dyn Clock + 'a> {
        RecordStore::new(self.kv, self.clock, self.settings.store.clone())
    }

    pub(crate) fn due(&self) -> DueIndex<'a, dyn KeyValue + 'a> {
        DueIndex::new(self.kv)
    }

    pub(crate) fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn owner_id(&self, operation: &str) -> String {
        format!("{operation}-{:016x}", self.random.next_u64())
    }

    /// Runs `body` under the user's lease (waiting for it), then schedules the next check and releases.
    /// On failure the lease is still released (best effort), after scheduling a check so the reconciler
    /// repairs whatever the failure left behind.
    pub(crate) fn with_lease<T>(
        &self,
        user_id: &str,
        operation: &'static str,
        body: impl FnOnce(&mut Session<'_, 'a>) -> Result<T, LifecycleError>,
    ) -> Result<T, LifecycleError> {
        let guard = self.store().acquire(user_id, &self.owner_id(operation))?;
        self.run_session(guard, body)
    }

    pub(crate) fn run_session<T>(
        &self,
        guard: LeaseGuard,
        body: impl FnOnce(&mut Session<'_, 'a>) -> Result<T, LifecycleError>,
    ) -> Result<T, LifecycleError> {
        let mut session = Session {
            instances: self,
            guard: Some(guard),
            prepared_env: None,
            adopted_machine: false,
        };
        // A create whose result was never recorded is settled before anything else is decided.
        let result = session
            .settle_unconfirmed_creates("session_start")
            .and_then(|()| body(&mut session));
        let finish = session.finish();
        match (result, finish) {
            (Ok(value), Ok(())) => Ok(value),
            (Ok(_), Err(error)) => Err(error),
            (Err(error), finish) => {
                if let Err(finish_error) = finish {
                    tracing::warn!(tag = "lifecycle", action = "release_failed", error = %finish_error);
                }
                Err(error)
            }
        }
    }
}

/// An operation holding a user's lease.
pub struct Session<'s, 'a> {
    pub(crate) instances: &'s Instances<'a>,
    guard: Option<LeaseGuard>,
    /// The machine env built (and its envelopes decrypted) before the lease was taken, with the record
    /// it was built from; reused while the record's env inputs are unchanged.
    pub(crate) prepared_env: Option<(InstanceRecord, MachineEnv)>,
    /// Whether this operation already adopted a machine that no record named: once is enough, and a
    /// machine that Fly lists but then cannot find must not be adopted again and again.
    pub(crate) adopted_machine: bool,
}

impl std::fmt::Debug for Session<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<'a> Session<'_, 'a> {
    fn guard(&mut self) -> Result<&mut LeaseGuard, LifecycleError> {
        self.guard
            .as_mut()
            .ok_or(LifecycleError::Store(StoreError::LeaseLost))
    }

    /// The record as of the last commit.
    pub fn record(&self) -> &InstanceRecord {
        // The guard is only taken by `finish`, which consumes the session's use.
        match &self.guard {
            Some(guard) => guard.record(),
            None => empty_record(),
        }
    }

    /// Commits a change to the fresh record under the lease (also renews the lease).
    pub fn commit(
        &mut self,
        mut change: impl FnMut(&mut InstanceRecord),
    ) -> Result<(), LifecycleError> {
        let store = self.instances.store();
        let guard = self.guard()?;
        store.commit(guard, |record| {
            change(record);
            Ok::<(), StoreError>(())
        })?;
        Ok(())
    }

    /// Extends the lease before a long Fly wait.
    pub fn renew(&mut self) -> Result<(), LifecycleError> {
        let store = self.instances.store();
        let guard = self.guard()?;
        store.renew(guard)?;
        Ok(())
    }

    pub(crate) fn user_id(&self) -> String {
        self.record().user_id.clone()
    }

    /// Appends the next due entry, then releases the lease while recording `nextCheckAtMs`.
    fn finish(&mut self) -> Result<(), LifecycleError> {
        let Some(guard) = self.guard.take() else {
            return Ok(());
        };
        let instances = self.instances;
        let now = instances.now();
        let record = guard.record();
        // A record that was never provisioned but still has Fly resources to settle or delete is looked
        // at on the destroying cadence; one that only holds its failed provision's volume, on the idle one.
        let interval = match record.status {
            Some(status) => Some(interval_for(status)),
            None if record.has_unsettled_creates() => Some(INTERVAL_DESTROYING),
            None if record.needs_watch() => Some(INTERVAL_IDLE),
            None => None,
        };
        let wanted = interval.map(|interval| {
            let jitter = instances.random.below(JITTER_MS) as i64;
            now + crate::store::duration_ms(interval) + jitter
        });
        let next = match (wanted, record.next_check_at_ms) {
            // One due entry per instance: a check already pending no later than the one wanted
            // (its entry is still ahead of the walkers) stands, so operations between two checks
            // (live status reads, proxy recoveries, user calls) append nothing. The cost is at
            // most one check earlier than the new cadence asks for.
            (Some(at), Some(pending)) if pending > now && pending <= at => Some(pending),
            (Some(at), _) => {
                instances
                    .due()
                    .schedule(guard.user_id(), at, now)
                    .map_err(StoreError::from)?;
                Some(at)
            }
            (None, _) => None,
        };
        match instances.store().release_with(guard, |record| {
            record.next_check_at_ms = if record.needs_watch() { next } else { None };
            Ok::<(), StoreError>(())
        }) {
            Ok(_) => Ok(()),
            // A stale holder's result is not written; the new holder's view wins (store caveats).
            Err(error) => Err(error.into()),
        }
    }
}

fn empty_record() -> &'static InstanceRecord {
    static EMPTY: std::sync::OnceLock<InstanceRecord> = std::sync::OnceLock::new();
    EMPTY.get_or_init(InstanceRecord::empty)
}

#[cfg(test)]
mod tests;
