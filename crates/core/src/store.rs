//! The store protocol: one versioned record per user in a key-value bucket, changed only by
//! compare-and-swap, with a fenced lease that makes one caller at a time the writer of Fly side effects.
//!
//! # Keys
//!
//! - `instance/{userId}`: the [`InstanceRecord`] as JSON (schema-versioned, tolerant decoding): the home
//!   of creation generation 1, where every record lives unless its creator stalled (Flow 1).
//! - `instance-create/{g}/{userId}`: a counter per creation generation `g` that elects the one caller
//!   allowed to create generation `g`'s home. Its own prefix, so no user id can name it: the old
//!   `instance/{userId}#created` was the record key of the user id `{userId}#created`.
//! - `instance-gen/{g}/{userId}` (`g` ≥ 2): the record's home after `g - 1` stalled creators (rare).
//! - `due/…`: the reconciler's due index (see [`crate::due`]).
//! - `sweep/…`: the registry of every record ever created, which the reconciler's sweep walks (see
//!   [`crate::due`]); the elected creator registers the user before writing the record.
//!
//! # Flow
//!
//! 1. **Create.** A record is created once per user and never deleted: a finished destroy leaves an
//!    unprovisioned record (the per-user Fly app setup and the version counter survive). Creation must not
//!    use CAS on an absent key (on Spin's SQLite backend that is an unconditional upsert), so it is elected:
//!    a caller that finds no record calls `increment(instance-create/1/{userId}, 1)`, and only the caller
//!    that gets `1` writes the empty record (`version` 0) with a plain `set`. Everyone else polls until it
//!    appears. That `set` is the only write of the key that is not a CAS on present bytes, and it happens
//!    at most once; so it always lands on an absent key and can never overwrite a record, however late it
//!    lands. If it has not appeared after `creation_grace`, the creator may be dead — or merely slow, and
//!    its `set` still to come. The waiters then elect a creator of generation 2 (`instance-create/2/…`)
//!    instead of writing the key themselves; it creates the record at `instance-gen/2/{userId}`, and so on
//!    for a creator of generation 2 that stalls in turn.
//!
//!    Generation `g`'s home is *superseded* once generation `g + 1` is elected, unless it is live by then.
//!    A reader walks the generations from 1 and stops at the first home that holds a record with
//!    `version` ≥ 1 (written by a CAS, so never the creation write), or a creation write (`version` 0)
//!    whose next generation is not elected. It goes past a home only when it is absent or sealed (a
//!    non-JSON marker) while the next generation is elected; a superseded creation write (the slow
//!    creator's `set`, landed after all) is first *sealed* by a CAS from its exact bytes to the marker.
//!    Why no write is lost: a home becomes live only by a CAS from its creation write, made by a writer
//!    that read the creation write and *then* found the next generation not elected. The elected creator
//!    of the next generation reads the home after its election and seals it (or, finding it live, gives
//!    up and uses it); its seal and any such CAS start from the same bytes, so exactly one wins. A home read
//!    absent after the election can only ever receive the late creation write, which is sealed before any
//!    reader goes past it, so it never becomes live. Every read costs one `get` when the first home is live.
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
//!    Fly wait and stops (returns the error) when the renewal fails, before its next Fly call.
//!    [`RecordStore::release`] is a final commit that also clears the lease.
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
//! - Creation never overwrites a record, whatever the delays: a late creator's write lands on an absent key
//!   (Flow 1), and at most one home per user is ever live.
//!
//! # Assumptions
//!
//! - `compare_and_swap` reads the current value before swapping and reports a conflict truthfully. Spin's
//!   SQLite, Cosmos and DynamoDB backends do; Spin's **Redis** backend reports lost swaps as success and is
//!   **not safe** for this protocol. Our own host's backends all are.
//! - `increment` is atomic (it is on every Spin backend), and a counter it created `exists`. Counters are
//!   never incremented on a key that may hold anything else (Spin's SQLite `increment` panics on a value
//!   that is not 8 bytes).
//! - Clocks of cooperating processes agree to well within `lease_ttl`; a holder renews before each Fly wait
//!   longer than a few seconds and Fly waits are capped at 60 s, which is why `lease_ttl` defaults to 150 s.
//!
//! # Caveats
//!
//! - A stalled creator costs the waiters `creation_grace` per generation, and moves the record off
//!   `instance/{userId}`. Readers that read that key directly (the proxy's [`crate::lifecycle::route_of`])
//!   must follow with [`current_record_bytes`] when it holds no live record; generations are bounded by
//!   [`MAX_GENERATIONS`].
//! - Records created before generations existed were elected through `instance/{userId}#created`; those
//!   counters are no longer read or written. During a rolling deploy an old replica and a new one can both
//!   create a missing record (identical empty bytes, then CAS as usual).
//! - A lease bounds *who* writes, not *what Fly does*: a holder that stalls past its expiry may still have
//!   a Fly call in flight. Side effects are therefore written as intent first (pending-destroy ids, machine
//!   name = sandbox id, orphan lists), found again before a create (the user's volume by name in its own
//!   app, its machine by metadata), or recorded as orphans by the stale holder itself, so that neither a
//!   duplicate nor a leak survives the next operation or reconcile.

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

/// Key of a user's record: the home of creation generation 1, where every record lives unless its creator
/// stalled (see Flow 1; [`current_record_bytes`] follows the others).
pub fn record_key(user_id: &str) -> String {
    format!("instance/{user_id}")
}

/// How many creation generations a reader follows. Each one past the first needs a creator that stalled
/// for longer than `creation_grace`, so reaching this bound means the store is failing, not contended.
pub const MAX_GENERATIONS: u32 = 8;

/// Where generation `generation`'s record lives: [`record_key`] for the first, so existing records stay
/// where they are. The generation comes before the user id, so no two (generation, user) pairs share a key.
fn home_key(user_id: &str, generation: u32) -> String {
    if generation <= 1 {
        record_key(user_id)
    } else {
        format!("instance-gen/{generation}/{user_id}")
    }
}

/// The counter that elects generation `generation`'s creator. Its prefix is not `instance/`, so it is never
/// the record key of any user id.
fn creation_key(user_id: &str, generation: u32) -> String {
    format!("instance-create/{generation}/{user_id}")
}

/// What a superseded home is sealed with: not JSON, so nothing decodes it as a record or CASes from it.
const SUPERSEDED: &[u8] = b"kiloclaw:superseded-creation";

/// Whether a stored value is the seal of a superseded home (Flow 1) rather than a record.
pub fn is_sealed(raw: &[u8]) -> bool {
    raw == SUPERSEDED
}

/// The bytes of a user's current record, for readers that decode only what they need and never write (the
/// proxy's route): one `get` when [`record_key`] holds a live record, else the walk of Flow 1, read-only
/// (a superseded creation write is skipped, not sealed). `None` when there is no record.
pub fn current_record_bytes<K: KeyValue + ?Sized>(
    kv: &K,
    user_id: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    for generation in 1..=MAX_GENERATIONS {
        let raw = kv.get(&home_key(user_id, generation))?;
        let maybe_superseded = match raw.as_deref() {
            Some(bytes) if bytes == SUPERSEDED => true,
            // Only the creation write has version 0; anything else (including bytes that are not a record,
            // which the caller reports) is this user's current value.
            Some(bytes) => InstanceRecord::decode(bytes).is_ok_and(|(r, _)| r.version == 0),
            None => true,
        };
        if !maybe_superseded || !kv.exists(&creation_key(user_id, generation + 1))? {
            return Ok(raw.filter(|bytes| bytes.as_slice() != SUPERSEDED));
        }
    }
    Err(StoreError::Contention)
}

/// Where a user's record is, as the walk of Flow 1 found it.
enum Located {
    /// The current record (boxed: a record is large and `Absent` is common while creating).
    Found(Box<Snapshot>),
    /// No record yet; `generation` is the one to create.
    Absent { generation: u32 },
}

/// A decoded record plus the exact bytes it came from (the CAS `expected` value).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The decoded record.
    pub record: InstanceRecord,
    raw: Vec<u8>,
    /// The key it was read from (the CAS target).
    key: String,
}

/// Proof of holding a user's lease; pass it to [`RecordStore::commit`]. Dropping it without
/// [`RecordStore::release`] leaves the lease to expire.
#[derive(Debug, Clone)]
pub struct LeaseGuard {
    user_id: String,
    owner: String,
    fence: u64,
    record: InstanceRecord,
    /// The key and bytes of this holder's last write: while they are still what is stored, nobody
    /// else wrote since, so the next commit can swap against them without reading first.
    written: (String, Vec<u8>),
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
        match self.locate(user_id)? {
            Located::Found(snapshot) => Ok(Some(*snapshot)),
            Located::Absent { .. } => Ok(None),
        }
    }

    fn decode(&self, user_id: &str, raw: Vec<u8>, key: String) -> Result<Snapshot, StoreError> {
        let (record, report) =
            InstanceRecord::decode(&raw).map_err(|source| StoreError::Corrupt {
                user_id: user_id.to_owned(),
                source,
            })?;
        if !report.bad_fields.is_empty() || report.newer_schema {
            tracing::warn!(tag = "store", action = "tolerant_decode", user_id, bad_fields = ?report.bad_fields,
                newer_schema = report.newer_schema, "instance record had fields that did not decode");
        }
        Ok(Snapshot { record, raw, key })
    }

    /// Whether generation `generation + 1` has been elected, which supersedes generation `generation`'s
    /// home unless that is live already (Flow 1).
    fn superseded(&self, user_id: &str, generation: u32) -> Result<bool, StoreError> {
        Ok(self.kv.exists(&creation_key(user_id, generation + 1))?)
    }

    /// The walk of Flow 1: the first home that holds a live record, sealing superseded creation writes on
    /// the way, or the generation to create.
    fn locate(&self, user_id: &str) -> Result<Located, StoreError> {
        let mut generation = 1;
        let mut seals = 0;
        while generation <= MAX_GENERATIONS {
            let key = home_key(user_id, generation);
            match self.kv.get(&key)? {
                Some(raw) if raw == SUPERSEDED => {}
                Some(raw) => {
                    let snapshot = self.decode(user_id, raw, key)?;
                    // The order matters: the home was read before the election was checked, so a creation
                    // write found live here can only be superseded by a creator that will find it and seal
                    // it, racing our CAS from the same bytes.
                    if snapshot.record.version > 0 || !self.superseded(user_id, generation)? {
                        return Ok(Located::Found(Box::new(snapshot)));
                    }
                    seals += 1;
                    if seals > self.settings.cas_attempts {
                        return Err(StoreError::Contention);
                    }
                    self.seal(user_id, generation, &snapshot)?;
                    // Sealed now, or changed meanwhile (sealed by someone else, or made live by a writer
                    // that read it before the election): read this generation again.
                    continue;
                }
                None => {
                    if !self.superseded(user_id, generation)? {
                        return Ok(Located::Absent { generation });
                    }
                }
            }
            generation += 1;
        }
        tracing::error!(
            tag = "store",
            action = "too_many_generations",
            user_id,
            max = MAX_GENERATIONS
        );
        Err(StoreError::Contention)
    }

    /// Seals a superseded creation write (a CAS from its exact bytes, so a write that made it live first
    /// wins instead).
    fn seal(&self, user_id: &str, generation: u32, snapshot: &Snapshot) -> Result<(), StoreError> {
        let outcome = self
            .kv
            .compare_and_swap(&snapshot.key, Some(&snapshot.raw), SUPERSEDED)?;
        tracing::warn!(
            tag = "store",
            action = "seal_superseded_record",
            user_id,
            generation,
            sealed = outcome == CasOutcome::Swapped,
            reason = "its creator wrote it after a takeover"
        );
        Ok(())
    }

    /// Reads a user's record, creating the empty record first if there is none (see Flow 1).
    pub fn load_or_create(&self, user_id: &str) -> Result<Snapshot, StoreError> {
        // Each round finds the record, creates a generation, or waits `creation_grace` for one creator and
        // elects the next generation's; so the rounds are bounded by the generations.
        for _ in 0..3 * MAX_GENERATIONS {
            let generation = match self.locate(user_id)? {
                Located::Found(snapshot) => return Ok(*snapshot),
                Located::Absent { generation } => generation,
            };
            if self.kv.increment(&creation_key(user_id, generation), 1)? == 1 {
                self.create(user_id, generation)?;
                continue;
            }
            // Another caller is creating this generation: wait for it.
            let deadline = self.clock.now_ms() + duration_ms(self.settings.creation_grace);
            let timed_out = loop {
                match self.locate(user_id)? {
                    Located::Found(snapshot) => return Ok(*snapshot),
                    // A takeover already moved on to a later generation: start the round over there.
                    Located::Absent { generation: now } if now != generation => break false,
                    Located::Absent { .. } if self.clock.now_ms() >= deadline => break true,
                    Located::Absent { .. } => self.clock.sleep(self.settings.lease_poll),
                }
            };
            if !timed_out {
                continue;
            }
            // The creator may be dead or only slow: never write its key (its `set` may still land), elect
            // the next generation's creator instead.
            let takeover = self
                .kv
                .increment(&creation_key(user_id, generation + 1), 1)?;
            tracing::warn!(
                tag = "store",
                action = "creator_stalled",
                user_id,
                generation,
                elected = takeover == 1,
                reason = "no record after creation_grace"
            );
            if takeover == 1 {
                // The walk seals what this generation's late creator may have written, or finds the record
                // live after all (then it is used, and the new generation stays empty).
                match self.locate(user_id)? {
                    Located::Found(snapshot) => return Ok(*snapshot),
                    Located::Absent { generation: next } if next == generation + 1 => {
                        self.create(user_id, next)?;
                    }
                    Located::Absent { .. } => {}
                }
            }
        }
        Err(StoreError::Contention)
    }

    /// The elected creator's write of generation `generation`'s empty record: the one plain `set` of that
    /// key, which nobody else writes before it exists (Flow 1), so it can only land on an absent key.
    fn create(&self, user_id: &str, generation: u32) -> Result<(), StoreError> {
        // Registered before the record exists, so the reconciler's sweep reaches every record; a takeover
        // registers again (the stalled creator may have died before registering; a second slot is harmless).
        crate::due::DueIndex::new(self.kv).register(user_id)?;
        self.kv.set(
            &home_key(user_id, generation),
            &InstanceRecord::empty().encode(),
        )?;
        tracing::info!(tag = "store", action = "create_record", user_id, generation);
        Ok(())
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
            if self.swap(user_id, &snapshot, &next.encode())? {
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
        self.try_acquire_from(user_id, owner, None)
    }

    /// [`Self::try_acquire`] starting from `snapshot`, a read the caller just made (saves reading the
    /// record again; a stale snapshot only costs a failed swap and a fresh read).
    pub fn try_acquire_from(
        &self,
        user_id: &str,
        owner: &str,
        mut snapshot: Option<Snapshot>,
    ) -> Result<Result<LeaseGuard, Lease>, StoreError> {
        for _ in 0..self.settings.cas_attempts {
            let snapshot = match snapshot.take() {
                Some(snapshot) => snapshot,
                None => self.load_or_create(user_id)?,
            };
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
            let next_raw = next.encode();
            if self.swap(user_id, &snapshot, &next_raw)? {
                return Ok(Ok(LeaseGuard {
                    user_id: user_id.to_owned(),
                    owner: owner.to_owned(),
                    fence: next.version,
                    record: next,
                    written: (snapshot.key, next_raw),
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
        // First against this holder's own last write: if nobody wrote since, the lease is still ours
        // and the record is the one we hold, so no read is needed. Any other write makes the swap fail
        // and the loop below reads and checks, as it always did.
        let (key, raw) = guard.written.clone();
        let own = Snapshot {
            record: guard.record.clone(),
            raw,
            key,
        };
        let mut first = Some(own);
        for _ in 0..=self.settings.cas_attempts {
            let snapshot = match first.take() {
                Some(own) => own,
                None => {
                    let Some(snapshot) = self.load(&guard.user_id)? else {
                        return Err(StoreError::LeaseLost.into());
                    };
                    let still_ours = snapshot.record.lease.as_ref().is_some_and(|lease| {
                        lease.owner == guard.owner && lease.fence == guard.fence
                    });
                    if !still_ours {
                        tracing::warn!(tag = "store", action = "stale_commit_refused", user_id = %guard.user_id,
                            owner = %guard.owner, fence = guard.fence);
                        return Err(StoreError::LeaseLost.into());
                    }
                    snapshot
                }
            };
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
            let next_raw = next.encode();
            if self.swap(&guard.user_id, &snapshot, &next_raw)? {
                guard.record = next;
                guard.written = (snapshot.key, next_raw);
                return Ok(value);
            }
        }
        Err(StoreError::Contention.into())
    }

    fn swap(
        &self,
        user_id: &str,
        snapshot: &Snapshot,
        next_raw: &[u8],
    ) -> Result<bool, StoreError> {
        match self
            .kv
            .compare_and_swap(&snapshot.key, Some(&snapshot.raw), next_raw)?
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
        assert_eq!(kv.increment(&creation_key(USER, 1), 0), Ok(1));
        assert_eq!(kv.cas_calls(), 1, "creation never uses CAS-from-absent");
    }

    #[test]
    fn creation_waits_for_elected_creator_then_recovers_from_a_stalled_one() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        // Someone was elected (claim = 1) and died before writing the record.
        kv.increment(&creation_key(USER, 1), 1).expect("claim");
        let store = store(&kv, &clock);
        let snapshot = store.load_or_create(USER).expect("fallback creation");
        assert_eq!(snapshot.record, InstanceRecord::empty());
        assert!(clock.total_slept() >= store.settings().creation_grace);
    }

    /// A live instance as later writers leave it (provisioned, running, with a machine).
    fn live(r: &mut InstanceRecord) {
        r.user_id = USER.into();
        r.sandbox_id = "dXNlci0x".into();
        r.status = Some(InstanceState::Running);
        r.fly_app_name = Some("acct-app".into());
        r.fly_machine_id = Some("m1".into());
        r.kilocode_api_key = Some("kilo-key".into());
    }

    #[test]
    fn a_late_elected_creator_never_overwrites_a_record_written_since() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        // The elected creator decides to write the empty record and is then descheduled for longer
        // than `creation_grace`, while everyone else goes on.
        let stalled = kv.stall_next_set(&record_key(USER));
        std::thread::scope(|scope| {
            let creator = scope.spawn(|| store.load_or_create(USER));
            stalled.wait_until_reached();
            for _ in 0..14 {
                store.update(USER, set(live)).expect("update");
            }
            assert_eq!(
                store
                    .load(USER)
                    .expect("load")
                    .expect("exists")
                    .record
                    .version,
                14
            );
            stalled.release();
            let late = creator
                .join()
                .expect("creator thread")
                .expect("late creator");
            assert_eq!(
                late.record.fly_machine_id.as_deref(),
                Some("m1"),
                "the late creator reads the live record"
            );
        });
        assert_eq!(
            kv.raw(&record_key(USER)).as_deref(),
            Some(SUPERSEDED),
            "the late write was sealed"
        );
        let record = store.load(USER).expect("load").expect("exists").record;
        assert_eq!(record.version, 14, "{record:?}");
        assert_eq!(record.fly_machine_id.as_deref(), Some("m1"));
        assert_eq!(record.kilocode_api_key.as_deref(), Some("kilo-key"));
        // Writes go on against the live record, and the proxy's one-read path finds it too.
        let (_, next) = store
            .update(USER, set(|r| r.health_check_fail_count += 1))
            .expect("update");
        assert_eq!(next.version, 15);
        let route = crate::lifecycle::route_of(&kv, USER, None).expect("route");
        assert_eq!(route.machine_id, "m1");
    }

    #[test]
    fn a_late_creation_write_is_sealed_so_it_never_becomes_live() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        // Generation 1's creator stalled; generation 2 took over and the instance lives there.
        kv.increment(&creation_key(USER, 1), 1).expect("claim 1");
        store.update(USER, set(live)).expect("update");
        assert!(kv.get(&record_key(USER)).expect("get").is_none());
        // Then the stalled creator's write lands after all.
        kv.set(&record_key(USER), &InstanceRecord::empty().encode())
            .expect("late set");
        let snapshot = store.load(USER).expect("load").expect("exists");
        assert_eq!(snapshot.record.fly_machine_id.as_deref(), Some("m1"));
        assert_eq!(
            kv.raw(&record_key(USER)).as_deref(),
            Some(SUPERSEDED),
            "the first reader seals it"
        );
        assert_eq!(
            current_record_bytes(&kv, USER).expect("bytes"),
            Some(snapshot.raw.clone())
        );
        let (_, record) = store
            .update(USER, set(|r| r.health_check_fail_count += 1))
            .expect("update");
        assert_eq!(record.version, 2);
        assert_eq!(kv.raw(&home_key(USER, 2)), Some(record.encode()));
    }

    #[test]
    fn a_creation_write_made_live_before_the_takeover_sealed_it_stays_live() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        store.load_or_create(USER).expect("create");
        // A writer reads the creation write while no takeover is elected...
        let read = store.load(USER).expect("load").expect("exists");
        // ...a waiter that missed it elects generation 2...
        kv.increment(&creation_key(USER, 2), 1).expect("takeover");
        // ...and the writer's CAS from the creation write wins the race with the seal.
        let mut next = read.record.clone();
        live(&mut next);
        next.version = 1;
        assert!(store.swap(USER, &read, &next.encode()).expect("swap"));
        // The new generation's creator finds the record live and uses it; nothing is sealed or created.
        let found = store.load_or_create(USER).expect("load");
        assert_eq!(found.record, next);
        assert_eq!(found.key, record_key(USER));
        assert_eq!(kv.raw(&home_key(USER, 2)), None);
    }

    #[test]
    fn a_creation_write_sealed_first_refuses_the_writer_that_read_it_earlier() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        store.load_or_create(USER).expect("create");
        let read = store.load(USER).expect("load").expect("exists");
        kv.increment(&creation_key(USER, 2), 1).expect("takeover");
        // The takeover's walk seals the creation write before the writer's CAS arrives.
        assert!(store.load(USER).expect("load").is_none());
        assert_eq!(kv.raw(&record_key(USER)).as_deref(), Some(SUPERSEDED));
        let mut next = read.record.clone();
        next.version = 1;
        assert!(
            !store.swap(USER, &read, &next.encode()).expect("swap"),
            "refused"
        );
        store.create(USER, 2).expect("the takeover's creation");
        // The writer starts over and lands in generation 2.
        let (_, written) = store.update(USER, set(live)).expect("update");
        assert_eq!(kv.raw(&home_key(USER, 2)), Some(written.encode()));
    }

    #[test]
    fn stalled_creators_of_several_generations_cost_one_grace_each() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        // Generations 1 and 2 were elected and their creators never wrote.
        kv.increment(&creation_key(USER, 1), 1).expect("claim 1");
        kv.increment(&creation_key(USER, 2), 1).expect("claim 2");
        let snapshot = store.load_or_create(USER).expect("create");
        assert_eq!(snapshot.key, home_key(USER, 3));
        assert!(clock.total_slept() >= store.settings().creation_grace);
        assert!(clock.total_slept() < store.settings().creation_grace * 3);
        // Both stalled creators write late; readers seal both and keep using generation 3.
        store.update(USER, set(live)).expect("update");
        for generation in [1, 2] {
            kv.set(
                &home_key(USER, generation),
                &InstanceRecord::empty().encode(),
            )
            .expect("late set");
        }
        let record = store.load(USER).expect("load").expect("exists").record;
        assert_eq!(record.fly_machine_id.as_deref(), Some("m1"));
        for generation in [1, 2] {
            assert_eq!(
                kv.raw(&home_key(USER, generation)).as_deref(),
                Some(SUPERSEDED)
            );
        }
        let route = crate::lifecycle::route_of(&kv, USER, None).expect("route");
        assert_eq!(route.machine_id, "m1");
    }

    proptest! {
        /// Record homes and election counters of any two users and generations are distinct keys, and no
        /// election counter is the record key of any user id.
        #[test]
        fn protocol_keys_never_collide(
            a in "[a-z#/0-9-]{0,10}", b in "[a-z#/0-9-]{0,10}", ga in 1u32..4, gb in 1u32..4
        ) {
            let keys = |user: &str, generation: u32| [home_key(user, generation), creation_key(user, generation)];
            let [home_a, election_a] = keys(&a, ga);
            let [home_b, election_b] = keys(&b, gb);
            prop_assert_ne!(&home_a, &election_b);
            prop_assert_ne!(&election_a, &home_b);
            prop_assert!(!election_a.starts_with("instance/"));
            if (a.as_str(), ga) != (b.as_str(), gb) {
                prop_assert_ne!(&home_a, &home_b);
                prop_assert_ne!(&election_a, &election_b);
            }
        }
    }

    #[test]
    fn election_keys_never_collide_with_record_keys() {
        let (kv, clock) = (MemoryKv::new(), FakeClock::default());
        let store = store(&kv, &clock);
        // "alice" is created first; a user whose id is alice's record key plus a suffix gets a record
        // of its own, and so does the other order ("bob#created" before "bob").
        for user in ["alice", "alice#created", "bob#created", "bob"] {
            let owner = user.to_owned();
            store
                .update(user, set(move |r| r.user_id = owner.clone()))
                .unwrap_or_else(|e| panic!("{user}: {e}"));
        }
        for user in ["alice", "alice#created", "bob#created", "bob"] {
            let record = store.load(user).expect("load").expect("exists").record;
            assert_eq!(record.user_id, user);
            assert_eq!(record.version, 1, "{user}: created once, written once");
        }
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
