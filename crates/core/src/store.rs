//! The store protocol: one versioned record per user in a key-value bucket, changed only by
//! compare-and-swap, with a fenced lease that makes one caller at a time the writer of Fly side effects.
//!
//! # Keys
//!
//! - `instance/{userId}`: the [`InstanceRecord`] as JSON (schema-versioned, tolerant decoding).
//! - `instance/{userId}#created`: a counter that elects the one caller allowed to create the record.
//! - `due/…`: the reconciler's due index (see [`crate::due`]).
//!
//! # Flow
//!
//! 1. **Create.** A record is created once per user and never deleted: a finished destroy leaves an
//!    unprovisioned record (the per-user Fly app setup and the version counter survive). A caller that finds
//!    the key absent calls `increment("instance/{userId}#created", 1)`; only the caller that gets `1` writes
//!    the empty record, with a plain `set`. Everyone else polls `get` until it appears.
//! 2. **Read-modify-write** ([`RecordStore::update`]): read the bytes, decode, apply the mutation to that
//!    fresh copy, bump `version`, and `compare_and_swap(expected = the bytes read)`. On a conflict, start over
//!    from the fresh value, up to `cas_attempts` times. The lease, if any, is carried over untouched.
//! 3. **Lease** ([`RecordStore::acquire`]): the same read-modify-write, allowed only when there is no lease,
//!    the lease has expired, or the caller already holds it. The new lease gets `fence = new version`, so a
//!    takeover always carries a larger fence than the lease it replaced. A caller that finds a live lease
//!    held by someone else sleeps `lease_poll` and tries again until `lease_wait` has passed.
//! 4. **Commit under lease** ([`RecordStore::commit`]): a read-modify-write that first checks that the stored
//!    lease still has the caller's owner *and* fence, and extends its expiry (every commit is a renewal).
//!    [`RecordStore::renew`] is a commit that changes nothing else; lifecycle code renews before each long
//!    Fly wait. [`RecordStore::release`] is a final commit that also clears the lease.
//!
//! # Guarantees
//!
//! - No lost updates: every write is a CAS against the exact bytes it was computed from, and every value
//!   carries a strictly increasing `version`, so equal bytes mean "nothing happened in between" even on a
//!   backend that compares values (Spin SQLite) instead of versions (no ABA).
//! - A lease holder whose lease expired and was taken over cannot write: its commit finds a different
//!   owner or fence and fails with [`StoreError::LeaseLost`], whatever the new holder has done since.
//! - Writes without a lease (config patches) never disturb a lease, and a holder's commits apply their
//!   mutation to the fresh record, so a patch made during a long start is not overwritten by the start.
//! - The record is never recreated by a second caller while the first creator is alive.
//!
//! # Assumptions
//!
//! - `compare_and_swap` reads the current value before swapping and reports a conflict truthfully. Spin's
//!   SQLite, Cosmos and DynamoDB backends do; Spin's **Redis** backend reports lost swaps as success and is
//!   **not safe** for this protocol. Our own host's backends all are.
//! - `increment` is atomic (it is on every Spin backend).
//! - Clocks of cooperating processes agree to well within `lease_ttl`; a holder renews before each Fly wait
//!   longer than a few seconds and Fly waits are capped at 60 s, which is why `lease_ttl` defaults to 150 s.
//!
//! # Caveats
//!
//! - The protocol never relies on CAS to create a key (`expected = None`): on Spin SQLite that is an
//!   unconditional upsert. If the elected creator dies between its `increment` and its `set` (two
//!   consecutive store calls), later callers wait `creation_grace` and then write the empty record with a
//!   plain `set`. Two such late callers race harmlessly (identical bytes); the only window for a lost update
//!   is a write landing between one late caller's final `get` and its `set`, once per user, after a crash.
//! - A lease bounds *who* writes, not *what Fly does*: a holder that stalls past its expiry may still have
//!   a Fly call in flight. Side effects are therefore written as intent first (pending-destroy ids, machine
//!   name = sandbox id, orphan lists) so the reconciler repairs whatever a stale holder leaves behind.

use std::time::Duration;

use crate::clock::Clock;
use crate::kv::{CasOutcome, KeyValue, KvError};
use crate::record::{InstanceRecord, Lease, RecordDecodeError};

/// Timing and retry knobs of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// How long a lease lives without renewal (longer than the longest single Fly call, a 60 s wait).
    pub lease_ttl: Duration,
    /// How long a caller waits for another holder's lease (like the Durable Object's queue).
    pub lease_wait: Duration,
    /// Pause between lease attempts while waiting.
    pub lease_poll: Duration,
    /// CAS attempts before giving up with [`StoreError::Contention`].
    pub cas_attempts: u32,
    /// How long to wait for an elected creator before writing the empty record ourselves.
    pub creation_grace: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(150),
            lease_wait: Duration::from_secs(90),
            lease_poll: Duration::from_millis(250),
            cas_attempts: 16,
            creation_grace: Duration::from_secs(10),
        }
    }
}

/// A failure of the store protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend failed. Retryable when the inner error is `Other`.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// The stored value is not a record at all. Not retryable; needs an operator (the value is left as is).
    #[error("stored instance record for {user_id} is unreadable: {source}")]
    Corrupt {
        /// Whose record.
        user_id: String,
        /// Why.
        source: RecordDecodeError,
    },
    /// Another operation held the lease for longer than `lease_wait`. Retryable later (HTTP 409/503).
    #[error(
        "instance is busy with another operation (lease held by {holder} until {expires_at_ms})"
    )]
    Busy {
        /// The other holder.
        holder: String,
        /// When its lease lapses.
        expires_at_ms: i64,
    },
    /// This caller's lease expired and was taken over; its result was not written. Not retryable as is:
    /// the new holder's view wins.
    #[error("lease lost: another operation took over this instance")]
    LeaseLost,
    /// CAS kept conflicting. Retryable.
    #[error("too much contention on the instance record")]
    Contention,
}

impl StoreError {
    /// Whether retrying the whole operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Kv(KvError::Other(_)) | Self::Busy { .. } | Self::Contention => true,
            Self::Kv(_) | Self::Corrupt { .. } | Self::LeaseLost => false,
        }
    }
}

/// Key of a user's record.
pub fn record_key(user_id: &str) -> String {
    format!("instance/{user_id}")
}

fn creation_claim_key(user_id: &str) -> String {
    format!("instance/{user_id}#created")
}

/// A decoded record plus the exact bytes it came from (the CAS `expected` value).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The decoded record.
    pub record: InstanceRecord,
    raw: Vec<u8>,
}

/// Proof of holding a user's lease; pass it to [`RecordStore::commit`]. Dropping it without
/// [`RecordStore::release`] leaves the lease to expire.
#[derive(Debug, Clone)]
pub struct LeaseGuard {
    user_id: String,
    owner: String,
    fence: u64,
    record: InstanceRecord,
}

impl LeaseGuard {
    /// The record as of the last acquire or commit.
    pub fn record(&self) -> &InstanceRecord {
        &self.record
    }
    /// The fence of this lease.
    pub fn fence(&self) -> u64 {
        self.fence
    }
    /// The owner id of this lease.
    pub fn owner(&self) -> &str {
        &self.owner
    }
    /// Whose record.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }
}

/// The protocol over a [`KeyValue`] bucket and a [`Clock`].
#[derive(Debug)]
pub struct RecordStore<'a, K: ?Sized, C: ?Sized> {
    kv: &'a K,
    clock: &'a C,
    settings: StoreSettings,
}

impl<'a, K: KeyValue + ?Sized, C: Clock + ?Sized> RecordStore<'a, K, C> {
    /// A store over `kv`.
    pub fn new(kv: &'a K, clock: &'a C, settings: StoreSettings) -> Self {
        Self {
            kv,
            clock,
            settings,
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// Reads a user's record without creating it.
    pub fn load(&self, user_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let Some(raw) = self.kv.get(&record_key(user_id))? else {
            return Ok(None);
        };
        self.decode(user_id, raw).map(Some)
    }

    fn decode(&self, user_id: &str, raw: Vec<u8>) -> Result<Snapshot, StoreError> {
        let (record, report) =
            InstanceRecord::decode(&raw).map_err(|source| StoreError::Corrupt {
                user_id: user_id.to_owned(),
                source,
            })?;
        if !report.bad_fields.is_empty() || report.newer_schema {
            tracing::warn!(tag = "store", action = "tolerant_decode", user_id, bad_fields = ?report.bad_fields,
                newer_schema = report.newer_schema, "instance record had fields that did not decode");
        }
        Ok(Snapshot { record, raw })
    }

    /// Reads a user's record, creating the empty record first if there is none (see Flow 1).
    pub fn load_or_create(&self, user_id: &str) -> Result<Snapshot, StoreError> {
        if let Some(snapshot) = self.load(user_id)? {
            return Ok(snapshot);
        }
        let claim = self.kv.increment(&creation_claim_key(user_id), 1)?;
        if claim == 1 {
            self.kv
                .set(&record_key(user_id), &InstanceRecord::empty().encode())?;
            tracing::info!(tag = "store", action = "create_record", user_id);
        } else {
            let deadline = self.clock.now_ms() + duration_ms(self.settings.creation_grace);
            while self.clock.now_ms() < deadline {
                if let Some(snapshot) = self.load(user_id)? {
                    return Ok(snapshot);
                }
                self.clock.sleep(self.settings.lease_poll);
            }
            if let Some(snapshot) = self.load(user_id)? {
                return Ok(snapshot);
            }
            tracing::warn!(
                tag = "store",
                action = "create_record_after_stalled_creator",
                user_id,
                claim
            );
            self.kv
                .set(&record_key(user_id), &InstanceRecord::empty().encode())?;
        }
        match self.load(user_id)? {
            Some(snapshot) => Ok(snapshot),
            None => Err(StoreError::Kv(KvError::Other(
                "record vanished right after creation".into(),
            ))),
        }
    }

    /// Read-modify-write without a lease (Flow 2). `mutate` may run several times, each time on the fresh
    /// record; an `Err` from it aborts without writing. Returns its value and the record as written.
    pub fn update<T, E: From<StoreError>>(
        &self,
        user_id: &str,
        mut mutate: impl FnMut(&mut InstanceRecord) -> Result<T, E>,
    ) -> Result<(T, InstanceRecord), E> {
        for _ in 0..self.settings.cas_attempts {
            let snapshot = self.load_or_create(user_id)?;
            let mut next = snapshot.record.clone();
            let value = mutate(&mut next)?;
            next.version = snapshot.record.version + 1;
            next.lease = snapshot.record.lease.clone();
            if self.swap(user_id, &snapshot, &next)? {
                return Ok((value, next));
            }
        }
        Err(StoreError::Contention.into())
    }

    /// Takes the user's lease for `owner`, waiting up to `lease_wait` for another holder (Flow 3).
    pub fn acquire(&self, user_id: &str, owner: &str) -> Result<LeaseGuard, StoreError> {
        let deadline = self.clock.now_ms() + duration_ms(self.settings.lease_wait);
        loop {
            match self.try_acquire(user_id, owner)? {
                Ok(guard) => return Ok(guard),
                Err(held) => {
                    if self.clock.now_ms() >= deadline {
                        return Err(StoreError::Busy {
                            holder: held.owner,
                            expires_at_ms: held.expires_at_ms,
                        });
                    }
                    self.clock.sleep(self.settings.lease_poll);
                }
            }
        }
    }

    /// One attempt to take the lease: `Ok(Err(lease))` when someone else holds a live lease.
    pub fn try_acquire(
        &self,
        user_id: &str,
        owner: &str,
    ) -> Result<Result<LeaseGuard, Lease>, StoreError> {
        for _ in 0..self.settings.cas_attempts {
            let snapshot = self.load_or_create(user_id)?;
            let now = self.clock.now_ms();
            if let Some(lease) = &snapshot.record.lease {
                if lease.owner != owner && lease.expires_at_ms > now {
                    return Ok(Err(lease.clone()));
                }
                if lease.owner != owner {
                    tracing::warn!(tag = "store", action = "lease_takeover", user_id, previous_owner = %lease.owner,
                        previous_fence = lease.fence, "taking over an expired lease");
                }
            }
            let mut next = snapshot.record.clone();
            next.version = snapshot.record.version + 1;
            next.lease = Some(Lease {
                owner: owner.to_owned(),
                fence: next.version,
                expires_at_ms: now + duration_ms(self.settings.lease_ttl),
            });
            if self.swap(user_id, &snapshot, &next)? {
                return Ok(Ok(LeaseGuard {
                    user_id: user_id.to_owned(),
                    owner: owner.to_owned(),
                    fence: next.version,
                    record: next,
                }));
            }
        }
        Err(StoreError::Contention)
    }

    /// Writes `mutate` applied to the fresh record, only if `guard`'s lease is still the stored one, and
    /// extends the lease (Flow 4).
    pub fn commit<T, E: From<StoreError>>(
        &self,
        guard: &mut LeaseGuard,
        mutate: impl FnMut(&mut InstanceRecord) -> Result<T, E>,
    ) -> Result<T, E> {
        self.commit_inner(guard, mutate, false)
    }

    /// Extends the lease without changing anything else.
    pub fn renew(&self, guard: &mut LeaseGuard) -> Result<(), StoreError> {
        self.commit_inner(guard, |_| Ok::<(), StoreError>(()), false)
    }

    /// Final commit: applies `mutate` and clears the lease.
    pub fn release_with<T, E: From<StoreError>>(
        &self,
        mut guard: LeaseGuard,
        mutate: impl FnMut(&mut InstanceRecord) -> Result<T, E>,
    ) -> Result<(T, InstanceRecord), E> {
        let value = self.commit_inner(&mut guard, mutate, true)?;
        Ok((value, guard.record))
    }

    /// Clears the lease if it is still ours.
    pub fn release(&self, guard: LeaseGuard) -> Result<InstanceRecord, StoreError> {
        self.release_with(guard, |_| Ok::<(), StoreError>(()))
            .map(|(_, record)| record)
    }

    fn commit_inner<T, E: From<StoreError>>(
        &self,
        guard: &mut LeaseGuard,
        mut mutate: impl FnMut(&mut InstanceRecord) -> Result<T, E>,
        release: bool,
    ) -> Result<T, E> {
        for _ in 0..self.settings.cas_attempts {
            let Some(snapshot) = self.load(&guard.user_id)? else {
                return Err(StoreError::LeaseLost.into());
            };
            let still_ours = snapshot
                .record
                .lease
                .as_ref()
                .is_some_and(|lease| lease.owner == guard.owner && lease.fence == guard.fence);
            if !still_ours {
                tracing::warn!(tag = "store", action = "stale_commit_refused", user_id = %guard.user_id,
                    owner = %guard.owner, fence = guard.fence);
                return Err(StoreError::LeaseLost.into());
            }
            let mut next = snapshot.record.clone();
            let value = mutate(&mut next)?;
            next.version = snapshot.record.version + 1;
            next.lease = if release {
                None
            } else {
                Some(Lease {
                    owner: guard.owner.clone(),
                    fence: guard.fence,
                    expires_at_ms: self.clock.now_ms() + duration_ms(self.settings.lease_ttl),
                })
            };
            if self.swap(&guard.user_id, &snapshot, &next)? {
                guard.record = next;
                return Ok(value);
            }
        }
        Err(StoreError::Contention.into())
    }

    fn swap(
        &self,
        user_id: &str,
        snapshot: &Snapshot,
        next: &InstanceRecord,
    ) -> Result<bool, StoreError> {
        match self
            .kv
            .compare_and_swap(&record_key(user_id), Some(&snapshot.raw), &next.encode())?
        {
            CasOutcome::Swapped => Ok(true),
            CasOutcome::Conflict { .. } => {
                tracing::debug!(
                    tag = "store",
                    action = "cas_conflict",
                    user_id,
                    version = snapshot.record.version
                );
                Ok(false)
            }
        }
    }
}

pub(crate) fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::InstanceState;
    use crate::testing::{FakeClock, KvOp, MemoryKv};
    use proptest::prelude::*;

    const USER: &str = "user-1";

    /// A mutation that cannot fail.
    fn set(
        mut f: impl FnMut(&mut InstanceRecord),
    ) -> impl FnMut(&mut InstanceRecord) -> Result<(), StoreError> {
        move |r| {
            f(r);
            Ok(())
        }
    }

    fn store<'a>(kv: &'a MemoryKv, clock: &'a FakeClock) -> RecordStore<'a, MemoryKv, FakeClock> {
        RecordStore::new(kv, clock, StoreSettings::default())
    }

    #[test]
    fn creation_is_elected_by_increment_and_happens_once() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        let first = store.load_or_create(USER).expect("create");
        assert_eq!(first.record.version, 0);
        store
            .update(USER, set(|r| r.user_id = USER.into()))
            .expect("update");
        let again = store.load_or_create(USER).expect("load");
        assert_eq!(
            again.record.user_id, USER,
            "a second caller must not recreate the record"
        );
        assert_eq!(kv.increment(&creation_claim_key(USER), 0), Ok(1));
        assert_eq!(kv.cas_calls(), 1, "creation never uses CAS-from-absent");
    }

    #[test]
    fn creation_waits_for_elected_creator_then_recovers_from_a_stalled_one() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        // Someone was elected (claim = 1) and died before writing the record.
        kv.increment(&creation_claim_key(USER), 1).expect("claim");
        let store = store(&kv, &clock);
        let snapshot = store.load_or_create(USER).expect("fallback creation");
        assert_eq!(snapshot.record, InstanceRecord::empty());
        assert!(clock.total_slept() >= store.settings().creation_grace);
    }

    #[test]
    fn update_retries_on_cas_conflict() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        store.load_or_create(USER).expect("create");
        kv.force_conflicts(&record_key(USER), 3);
        let (_, record) = store
            .update(USER, set(|r| r.user_id = USER.into()))
            .expect("update");
        assert_eq!(record.version, 1);
        assert_eq!(kv.cas_calls(), 4);
    }

    #[test]
    fn update_applies_mutation_to_value_written_by_concurrent_writer() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        store.load_or_create(USER).expect("create");
        kv.write_concurrently_before_next_cas(&record_key(USER), |current| {
            let (mut record, _) =
                InstanceRecord::decode(&current.unwrap_or_default()).expect("decode");
            record.version += 1;
            record.kilocode_api_key = Some("from-the-other-writer".into());
            record.encode()
        });
        let (_, record) = store
            .update(USER, set(|r| r.fly_volume_id = Some("vol_1".into())))
            .expect("update");
        assert_eq!(
            record.kilocode_api_key.as_deref(),
            Some("from-the-other-writer")
        );
        assert_eq!(record.fly_volume_id.as_deref(), Some("vol_1"));
        assert_eq!(record.version, 2);
    }

    #[test]
    fn update_gives_up_with_contention_after_bounded_attempts() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        store.load_or_create(USER).expect("create");
        kv.force_conflicts(&record_key(USER), 1000);
        let result = store.update(USER, |_| Ok::<_, StoreError>(()));
        assert_eq!(result.err(), Some(StoreError::Contention));
        assert!(StoreError::Contention.is_retryable());
    }

    #[test]
    fn kv_failure_is_reported_and_retryable() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        kv.fail_next(KvOp::Get, 1);
        let error = store.load(USER).expect_err("injected");
        assert!(matches!(error, StoreError::Kv(KvError::Other(_))));
        assert!(error.is_retryable());
    }

    #[test]
    fn corrupt_record_is_an_error_and_left_untouched() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        kv.put_raw(&record_key(USER), b"\x00garbage");
        let store = store(&kv, &clock);
        assert!(matches!(
            store.update(USER, |_| Ok::<_, StoreError>(())),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(kv.get(&record_key(USER)), Ok(Some(b"\x00garbage".to_vec())));
    }

    #[test]
    fn lease_acquire_commit_release() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        let mut guard = store.acquire(USER, "op-a").expect("acquire");
        assert_eq!(guard.fence(), 1);
        store
            .commit(&mut guard, set(|r| r.status = Some(InstanceState::Running)))
            .expect("commit");
        let record = store.release(guard).expect("release");
        assert_eq!(record.lease, None);
        assert_eq!(record.status, Some(InstanceState::Running));
    }

    #[test]
    fn second_caller_waits_for_lease_then_reports_busy() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        let _held = store.acquire(USER, "op-a").expect("acquire");
        let error = store.acquire(USER, "op-b").expect_err("busy");
        assert!(matches!(error, StoreError::Busy { ref holder, .. } if holder == "op-a"));
        assert!(clock.total_slept() >= store.settings().lease_wait);
    }

    #[test]
    fn second_caller_gets_lease_after_first_releases() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        let mut first = store.acquire(USER, "op-a").expect("acquire");
        store
            .commit(&mut first, set(|r| r.user_id = USER.into()))
            .expect("commit");
        store.release(first).expect("release");
        let second = store.acquire(USER, "op-b").expect("acquire");
        assert_eq!(
            second.record().user_id,
            USER,
            "the second caller sees the first caller's result"
        );
        assert_eq!(clock.total_slept(), Duration::ZERO);
    }

    #[test]
    fn expired_lease_is_taken_over_and_stale_holder_commit_fails() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        let mut stale = store.acquire(USER, "op-a").expect("acquire");
        clock.advance(store.settings().lease_ttl + Duration::from_millis(1));
        let mut fresh = store.acquire(USER, "op-b").expect("take over");
        assert!(fresh.fence() > stale.fence());
        let result = store.commit(&mut stale, set(|r| r.fly_machine_id = Some("dup".into())));
        assert_eq!(result, Err(StoreError::LeaseLost));
        assert!(store.renew(&mut stale).is_err());
        store
            .commit(&mut fresh, set(|r| r.fly_machine_id = Some("m1".into())))
            .expect("commit");
        let record = store.load(USER).expect("load").expect("exists").record;
        assert_eq!(record.fly_machine_id.as_deref(), Some("m1"));
    }

    #[test]
    fn stale_holder_fails_even_if_new_holder_released() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        let mut stale = store.acquire(USER, "op-a").expect("acquire");
        clock.advance(store.settings().lease_ttl * 2);
        let fresh = store.acquire(USER, "op-b").expect("take over");
        store.release(fresh).expect("release");
        assert_eq!(store.renew(&mut stale), Err(StoreError::LeaseLost));
    }

    #[test]
    fn renew_extends_lease_so_it_is_not_taken_over() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        let mut guard = store.acquire(USER, "op-a").expect("acquire");
        clock.advance(store.settings().lease_ttl - Duration::from_secs(1));
        store.renew(&mut guard).expect("renew");
        clock.advance(Duration::from_secs(2));
        assert!(
            matches!(store.try_acquire(USER, "op-b"), Ok(Err(_))),
            "renewed lease is still live"
        );
    }

    #[test]
    fn unleased_patch_during_lease_survives_holder_commit() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        let mut guard = store.acquire(USER, "op-a").expect("acquire");
        store
            .update(USER, set(|r| r.kilocode_default_model = Some("m".into())))
            .expect("patch");
        store
            .commit(&mut guard, set(|r| r.fly_machine_id = Some("m1".into())))
            .expect("commit");
        let record = store.release(guard).expect("release");
        assert_eq!(record.kilocode_default_model.as_deref(), Some("m"));
        assert_eq!(record.fly_machine_id.as_deref(), Some("m1"));
    }

    #[derive(Debug, Clone)]
    enum LeaseStep {
        TryAcquire(usize),
        Commit(usize),
        Release(usize),
        Advance(u64),
    }

    fn lease_step() -> impl Strategy<Value = LeaseStep> {
        prop_oneof![
            (0usize..3).prop_map(LeaseStep::TryAcquire),
            (0usize..3).prop_map(LeaseStep::Commit),
            (0usize..3).prop_map(LeaseStep::Release),
            (0u64..200).prop_map(LeaseStep::Advance),
        ]
    }

    proptest! {
        /// Whatever the interleaving of three operations and the passing of time, a commit succeeds only
        /// for the holder of the newest lease, and every successful commit is visible afterwards.
        #[test]
        fn fenced_lease_admits_only_the_newest_holder(steps in proptest::collection::vec(lease_step(), 1..40)) {
            let (kv, clock) = (MemoryKv::new(), FakeClock::default());
            let store = store(&kv, &clock);
            let owners = ["op-a", "op-b", "op-c"];
            let mut guards: Vec<Option<LeaseGuard>> = vec![None, None, None];
            let mut newest_fence = 0u64;
            let mut commits = 0u32;
            for step in steps {
                match step {
                    LeaseStep::TryAcquire(i) => {
                        if let Ok(Ok(guard)) = store.try_acquire(USER, owners[i]) {
                            prop_assert!(guard.fence() > newest_fence || guard.owner() == owners[i]);
                            newest_fence = newest_fence.max(guard.fence());
                            guards[i] = Some(guard);
                        }
                    }
                    LeaseStep::Commit(i) => {
                        if let Some(guard) = guards[i].as_mut() {
                            let result = store.commit(guard, set(|r| r.health_check_fail_count += 1));
                            if result.is_ok() {
                                prop_assert_eq!(guard.fence(), newest_fence, "only the newest holder commits");
                                commits += 1;
                            } else {
                                prop_assert_eq!(result, Err(StoreError::LeaseLost));
                                guards[i] = None;
                            }
                        }
                    }
                    LeaseStep::Release(i) => {
                        if let Some(guard) = guards[i].take()
                            && store.release(guard).is_ok()
                        {
                            // Releasing frees the lease; the next acquisition gets a larger fence.
                        }
                    }
                    LeaseStep::Advance(secs) => clock.advance(Duration::from_secs(secs)),
                }
            }
            let record = store.load(USER).expect("load").map(|s| s.record);
            prop_assert_eq!(record.map_or(0, |r| r.health_check_fail_count), commits);
        }
    }

    proptest! {
        #[test]
        fn cas_retry_loop_never_loses_updates_under_random_conflicts(
            plan in proptest::collection::vec((0u32..4, any::<bool>()), 1..12)
        ) {
            let (kv, clock) = (MemoryKv::new(), FakeClock::default());
            let store = store(&kv, &clock);
            store.load_or_create(USER).expect("create");
            let mut expected = 0u32;
            for (conflicts, concurrent) in plan {
                kv.force_conflicts(&record_key(USER), conflicts);
                if concurrent {
                    expected += 1;
                    kv.write_concurrently_before_next_cas(&record_key(USER), |current| {
                        let (mut record, _) = InstanceRecord::decode(&current.unwrap_or_default()).expect("decode");
                        record.version += 1;
                        record.health_check_fail_count += 1;
                        record.encode()
                    });
                }
                store.update(USER, set(|r| r.health_check_fail_count += 1)).expect("update");
                expected += 1;
            }
            let record = store.load(USER).expect("load").expect("exists").record;
            prop_assert_eq!(record.health_check_fail_count, expected);
        }
    }
}
