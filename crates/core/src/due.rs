//! The reconciler's due index: which users to look at in which minute, without listing keys; and the
//! registry the slow sweep walks so that an instance that fell out of the index is found again.
//!
//! # Keys
//!
//! - `due/{minute}/n`: counter of the minute's slots; `due/{minute}/{slot}`: a user id.
//! - `due/{minute}/claim/{window}`: counter electing the walker of `minute` in claim window `window`.
//! - `due/cursor`: plain JSON number, the first minute a walk looks at.
//! - `sweep/n`: counter of registry slots; `sweep/{slot}`: a user id (one per record ever created).
//! - `sweep/cursor`: JSON `{"turn": …, "next": …}`, the next registry slot the sweep looks at.
//!
//! # Flow
//!
//! - **Schedule** ([`DueIndex::schedule`]): `n = increment("due/{minute}/n", 1)`, then
//!   `set("due/{minute}/{n}", userId)`. Every entry gets its own slot key, so writers never contend and no
//!   key is ever created by CAS. The minute is never earlier than the next one, so a minute being
//!   processed receives no new entries. One entry per instance: a lifecycle operation that ends while
//!   the record's `nextCheckAtMs` is still ahead (and no later than the check it would schedule) keeps
//!   that check and appends nothing (`lifecycle::Session::finish`), so live status checks, proxy
//!   recoveries and user calls between two checks cost the index nothing.
//! - **Walk** (`reconcile::Instances::reconcile_due`): look at minutes from the cursor up to
//!   `now - 1 minute` (one minute of grace for clock skew between writers and the reconciler). A minute
//!   whose count key is absent is done (never scheduled, or cleared: [`DueIndex::clear`] deletes the count
//!   last). Otherwise the walker claims it ([`DueIndex::claim`]), reads its entries with one `get_many`,
//!   checks each user, requeues what it cannot check (budget spent, lease busy, any failure) into a later
//!   minute, and clears the minute, which makes it done. A minute that could not be cleared, or that
//!   another walker holds, keeps the cursor from passing it.
//! - **Claim** ([`DueIndex::claim`]): claim windows are `CLAIM_WINDOW_MS` long. In window `w` a walker
//!   first checks that `due/{minute}/claim/{w-1}` is absent (a claim from the previous window is still
//!   live), then takes `increment("due/{minute}/claim/{w}", 1) == 1`. So a claim lives through the end of
//!   window `w + 1`: at least one window, at most two. Its holder starts no check after
//!   [`Claim::work_until_ms`]. A holder that dies (trap, kill, redeploy) or fails to clear leaves its key,
//!   which blocks only the next window: from window `w + 2` on the minute can be claimed again. A holder
//!   that fails but is still alive deletes its key ([`DueIndex::release`]) so the next tick retries at once.
//!   Only `increment` and `exists` decide a claim: no CAS, so the claim is as safe on Spin's SQLite
//!   backend as anywhere (DESIGN decision 2).
//! - **Sweep** ([`DueIndex::next_sweep_batch`]): the key-value interface has no key listing, so every
//!   record is registered when it is created ([`DueIndex::register`], called by the store before it writes
//!   a new record). Each tick takes the next batch of registry slots by moving `sweep/cursor` with a CAS on
//!   the present value, reads those users' records with `get_many` at their usual key (the store's own
//!   reader takes over for the rare record that is not there, or was never written since its creation),
//!   and schedules every provisioned instance that names no next check or is more than
//!   [`SWEEP_OVERDUE_MS`] overdue.
//! - **Cursor**: `due/cursor` only says where to start walking; a walker writes the first minute it did not
//!   see done. A stale cursor costs a few extra `exists` calls, never a missed entry.
//!
//! # Guarantees
//!
//! - Scaling: one tick costs O(entries due) store calls for the index, never O(instances). With 100,000
//!   instances at the idle cadence about 3,400 entries fall in a minute, read in one `get_many`.
//! - Entries are idempotent: the record's `nextCheckAtMs` decides whether an entry is current. A stale
//!   entry (superseded by a later schedule) is skipped, a duplicate causes one harmless extra check. So
//!   re-walking a minute after a crash, or two walkers in one minute (clock skew across a window edge), only
//!   repeats work; the per-user lease keeps the checks themselves safe.
//! - A claimed minute is never lost: its entries stay until a walker clears the minute, and a claim whose
//!   holder died blocks the minute for at most two claim windows.
//! - No instance stays unwatched: an instance missing from the index (a lost entry, a record whose
//!   schedule was never written) is put back within `SWEEP_OVERDUE_MS` plus one sweep pass after its check
//!   was due.
//!
//! # Cost of the sweep at 100,000 instances
//!
//! The batch is `ceil(registered / SWEEP_PASS_TICKS)`, clamped to `SWEEP_BATCH_MIN..=SWEEP_BATCH_MAX`, so
//! one pass takes about an hour at one tick a minute. At 100,000 registered users that is about 1,700
//! slots a tick: one `get` and one CAS of the cursor, one counter read, and `get_many` calls of at most
//! `SWEEP_READ_CHUNK` keys for the slots and then the records (about 8 calls, some megabytes of record
//! JSON a minute, 28 records a second). That is a fraction of what the due checks themselves read (a
//! running fleet is checked every five minutes), and it writes nothing unless it finds an unwatched
//! instance. The registry costs one counter `increment` and one `set` per record creation and one small
//! key per user; records are never deleted (a destroy leaves an unprovisioned record), so the registry
//! never needs pruning, and the sweep skips unprovisioned records after reading them.
//!
//! # Assumptions and caveats
//!
//! - Writers order their work as "append the entry, then commit `nextCheckAtMs`", so a record never names
//!   a check time without an entry. A process that dies between the `increment` and the `set` of a slot
//!   leaves an empty slot (skipped); the instance is then found by its next operation or by the sweep.
//! - Clocks must agree within the one-minute grace. An entry written into a minute a walker already saw
//!   done (a writer's clock more than a minute behind) is missed by the walk and found by the sweep.
//! - Claims make a minute's double processing rare, not impossible (a stale read of the previous window's
//!   key at a window edge, clock skew between walkers); correctness rests on the leases and on idempotent
//!   entries, not on the claim.
//! - A finished minute deletes the claim keys of the last `CLAIM_GC_WINDOWS` windows; a key left by a
//!   holder that died longer ago than that before the minute was finished stays as garbage (a few bytes,
//!   only after a crash and a long outage).
//! - Records written before the registry existed are not registered: they stay watched through the index,
//!   and [`DueIndex::register`] backfills them (registering twice is harmless).
//! - The sweep cursor is created with a plain `set` when absent (never by CAS, DESIGN decision 2). Two
//!   walkers creating it at once may both sweep the first batch; a reset repeats batches, never skips one.

use serde::{Deserialize, Serialize};

use crate::kv::{CasOutcome, KeyValue, KvError};

/// Milliseconds in an index bucket.
pub const MINUTE_MS: i64 = 60_000;
/// Length of a claim window: a claim lives through the end of the window after the one it was taken in.
/// One minute, so that a minute whose holder died is walked again by the second tick after the claim.
pub const CLAIM_WINDOW_MS: i64 = MINUTE_MS;
/// A holder starts no check later than this before its claim ends, so a check under way (its Fly calls
/// take seconds) usually ends before another walker may take the minute over.
pub const CLAIM_MARGIN_MS: i64 = 15_000;
/// How many earlier windows a finished minute looks at for claim keys that dead holders left behind.
const CLAIM_GC_WINDOWS: i64 = 16;
/// A sweep pass is spread over this many ticks (about an hour at one tick a minute).
pub const SWEEP_PASS_TICKS: i64 = 60;
/// Fewest registry slots a tick sweeps (small fleets finish a pass in a few ticks).
pub const SWEEP_BATCH_MIN: i64 = 16;
/// Most registry slots a tick sweeps (caps one tick's reads however large the fleet grows).
pub const SWEEP_BATCH_MAX: i64 = 2_000;
/// Keys per `get_many` of the sweep: keeps one call's answer to a few megabytes at most.
pub const SWEEP_READ_CHUNK: usize = 500;
/// How late a record's `nextCheckAtMs` may be before the sweep counts the instance as unwatched. Longer
/// than the walk's usual lag (one minute of grace, a short backoff), so that instances merely waiting in a
/// backlog are left to the index.
pub const SWEEP_OVERDUE_MS: i64 = 10 * MINUTE_MS;

const CURSOR_KEY: &str = "due/cursor";
const REGISTRY_COUNT_KEY: &str = "sweep/n";
const SWEEP_CURSOR_KEY: &str = "sweep/cursor";

/// The due index over a key-value bucket.
#[derive(Debug)]
pub struct DueIndex<'a, K: ?Sized> {
    kv: &'a K,
}

fn count_key(minute: i64) -> String {
    format!("due/{minute}/n")
}

fn slot_key(minute: i64, slot: i64) -> String {
    format!("due/{minute}/{slot}")
}

fn claim_key(minute: i64, window: i64) -> String {
    format!("due/{minute}/claim/{window}")
}

/// The single, never-expiring claim counter of earlier releases; finished minutes delete it too.
fn legacy_claim_key(minute: i64) -> String {
    format!("due/{minute}/claim")
}

fn registry_key(slot: i64) -> String {
    format!("sweep/{slot}")
}

/// The bucket (minute number) holding `at_ms`.
pub fn minute_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(MINUTE_MS)
}

/// The claim window holding `at_ms`.
pub fn claim_window_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(CLAIM_WINDOW_MS)
}

/// A walker's claim on one minute (see the module doc): proof that it may process the minute until
/// [`Claim::work_until_ms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    minute: i64,
    window: i64,
}

impl Claim {
    /// The claimed minute.
    pub fn minute(&self) -> i64 {
        self.minute
    }

    /// When the claim ends: from then on another walker may take the minute.
    pub fn expires_at_ms(&self) -> i64 {
        (self.window + 2) * CLAIM_WINDOW_MS
    }

    /// The last moment the holder may start a check.
    pub fn work_until_ms(&self) -> i64 {
        self.expires_at_ms() - CLAIM_MARGIN_MS
    }
}

/// One batch of the sweep: the users registered in slots `first..=last` of `registered`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepBatch {
    /// First registry slot of the batch.
    pub first: i64,
    /// Last registry slot of the batch.
    pub last: i64,
    /// Registry slots in use when the batch was taken.
    pub registered: i64,
    /// The distinct user ids found in the batch's slots (empty slots are left out).
    pub users: Vec<String>,
}

/// The stored sweep cursor. `turn` grows with every move, so equal bytes mean "nobody moved it", also on
/// a backend whose CAS compares values (no ABA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SweepCursor {
    turn: u64,
    next: i64,
}

impl SweepCursor {
    fn encode(&self) -> Vec<u8> {
        // Two integers always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Registry slots a tick sweeps when `registered` slots are in use (see the module doc for the cost).
pub fn sweep_batch_size(registered: i64) -> i64 {
    let registered = registered.max(0);
    // Rounded up, so a pass never needs more than `SWEEP_PASS_TICKS` ticks.
    let per_tick = registered / SWEEP_PASS_TICKS + i64::from(registered % SWEEP_PASS_TICKS != 0);
    per_tick.clamp(SWEEP_BATCH_MIN, SWEEP_BATCH_MAX)
}

impl<'a, K: KeyValue + ?Sized> DueIndex<'a, K> {
    /// The index in `kv`.
    pub fn new(kv: &'a K) -> Self {
        Self { kv }
    }

    /// Adds `user_id` to the bucket of `at_ms` (never earlier than the minute after `now_ms`). Returns the
    /// minute used.
    pub fn schedule(&self, user_id: &str, at_ms: i64, now_ms: i64) -> Result<i64, KvError> {
        let minute = minute_of(at_ms).max(minute_of(now_ms) + 1);
        let slot = self.kv.increment(&count_key(minute), 1)?;
        self.kv.set(&slot_key(minute, slot), user_id.as_bytes())?;
        Ok(minute)
    }

    /// Whether `minute` still holds entries to process (`false`: never scheduled, or cleared).
    pub fn has_entries(&self, minute: i64) -> Result<bool, KvError> {
        self.kv.exists(&count_key(minute))
    }

    /// Claims `minute` for processing at `now_ms`; `None` if another walker holds it.
    pub fn claim(&self, minute: i64, now_ms: i64) -> Result<Option<Claim>, KvError> {
        let window = claim_window_of(now_ms);
        // A claim taken in the previous window is live through the end of this one.
        if self.kv.exists(&claim_key(minute, window - 1))? {
            return Ok(None);
        }
        if self.kv.increment(&claim_key(minute, window), 1)? != 1 {
            return Ok(None);
        }
        Ok(Some(Claim { minute, window }))
    }

    /// Gives a claim up early (its holder failed but is alive), so the next walker need not wait for it to
    /// expire.
    pub fn release(&self, claim: &Claim) -> Result<(), KvError> {
        self.kv.delete(&claim_key(claim.minute, claim.window))
    }

    /// The distinct users scheduled in `minute`, in scheduling order.
    pub fn entries(&self, minute: i64) -> Result<Vec<String>, KvError> {
        let count = self.kv.increment(&count_key(minute), 0)?;
        if count <= 0 {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = (1..=count).map(|slot| slot_key(minute, slot)).collect();
        let mut seen = std::collections::HashSet::new();
        Ok(self
            .kv
            .get_many(&keys)?
            .into_iter()
            .filter_map(|(_, value)| value.and_then(|v| String::from_utf8(v).ok()))
            .filter(|user| seen.insert(user.clone()))
            .collect())
    }

    /// Deletes a processed minute's keys, the count key last: once it is gone every walker treats the
    /// minute as done, and a crash before that leaves a minute that is simply walked again.
    pub fn clear(&self, claim: &Claim) -> Result<(), KvError> {
        let minute = claim.minute;
        let count = self.kv.increment(&count_key(minute), 0)?;
        for slot in 1..=count {
            self.kv.delete(&slot_key(minute, slot))?;
        }
        // This holder's claim key and any that holders which died before it left behind.
        let mut claims: Vec<String> = (claim.window - CLAIM_GC_WINDOWS..=claim.window)
            .map(|window| claim_key(minute, window))
            .collect();
        claims.push(legacy_claim_key(minute));
        for (key, value) in self.kv.get_many(&claims)? {
            if value.is_some() {
                self.kv.delete(&key)?;
            }
        }
        self.kv.delete(&count_key(minute))
    }

    /// Where the last walk stopped, if any.
    pub fn cursor(&self) -> Result<Option<i64>, KvError> {
        Ok(self
            .kv
            .get(CURSOR_KEY)?
            .and_then(|v| serde_json::from_slice::<i64>(&v).ok()))
    }

    /// Records where the next walk should start.
    pub fn set_cursor(&self, minute: i64) -> Result<(), KvError> {
        self.kv.set(CURSOR_KEY, minute.to_string().as_bytes())
    }

    /// Adds `user_id` to the sweep registry. The store calls it once per record, before writing a new
    /// record, so that no record exists that the sweep cannot reach. Returns the slot.
    pub fn register(&self, user_id: &str) -> Result<i64, KvError> {
        let slot = self.kv.increment(REGISTRY_COUNT_KEY, 1)?;
        self.kv.set(&registry_key(slot), user_id.as_bytes())?;
        Ok(slot)
    }

    /// Takes the next batch of registry slots for this tick's sweep, wrapping around at the end. `None`
    /// when nothing is registered, or when another walker moved the cursor first (it sweeps that batch).
    pub fn next_sweep_batch(&self) -> Result<Option<SweepBatch>, KvError> {
        let registered = self.kv.increment(REGISTRY_COUNT_KEY, 0)?;
        if registered <= 0 {
            return Ok(None);
        }
        let stored = self.kv.get(SWEEP_CURSOR_KEY)?;
        let decoded = stored
            .as_deref()
            .and_then(|raw| serde_json::from_slice::<SweepCursor>(raw).ok());
        let (raw, cursor) = match (stored, decoded) {
            (Some(raw), Some(cursor)) => (raw, cursor),
            _ => {
                // Absent or unreadable: start over at the first slot. A plain `set`, because a CAS from
                // absent is an unconditional write on Spin's SQLite backend anyway (DESIGN decision 2); two
                // walkers doing this at once repeat a batch, they never skip one.
                let initial = SweepCursor { turn: 0, next: 1 };
                let raw = initial.encode();
                self.kv.set(SWEEP_CURSOR_KEY, &raw)?;
                (raw, initial)
            }
        };
        let first = if (1..=registered).contains(&cursor.next) {
            cursor.next
        } else {
            1
        };
        let last = first
            .saturating_add(sweep_batch_size(registered) - 1)
            .min(registered);
        let moved = SweepCursor {
            turn: cursor.turn.wrapping_add(1),
            next: last + 1,
        };
        if let CasOutcome::Conflict { .. } =
            self.kv
                .compare_and_swap(SWEEP_CURSOR_KEY, Some(&raw), &moved.encode())?
        {
            return Ok(None);
        }
        let keys: Vec<String> = (first..=last).map(registry_key).collect();
        let mut seen = std::collections::HashSet::new();
        let mut users = Vec::new();
        for chunk in keys.chunks(SWEEP_READ_CHUNK) {
            for (_, value) in self.kv.get_many(chunk)? {
                if let Some(user) = value.and_then(|v| String::from_utf8(v).ok())
                    && seen.insert(user.clone())
                {
                    users.push(user);
                }
            }
        }
        Ok(Some(SweepBatch {
            first,
            last,
            registered,
            users,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemoryKv;

    #[test]
    fn due_index_schedules_into_future_minutes_and_dedupes() {
        let kv = MemoryKv::new();
        let index = DueIndex::new(&kv);
        let now = 10 * MINUTE_MS + 5;
        assert_eq!(
            index.schedule("a", now - MINUTE_MS, now),
            Ok(11),
            "never into the past or current minute"
        );
        assert_eq!(index.schedule("b", 15 * MINUTE_MS + 1, now), Ok(15));
        assert_eq!(index.schedule("a", 11 * MINUTE_MS, now), Ok(11));
        assert_eq!(index.entries(11), Ok(vec!["a".to_owned()]));
        assert_eq!(index.entries(15), Ok(vec!["b".to_owned()]));
        assert_eq!(index.entries(12), Ok(vec![]));
    }

    #[test]
    fn due_index_minute_is_claimed_once_and_cleared() {
        let kv = MemoryKv::new();
        let index = DueIndex::new(&kv);
        index.schedule("a", 11 * MINUTE_MS, 0).expect("schedule");
        assert_eq!(index.has_entries(11), Ok(true));
        let now = 13 * MINUTE_MS;
        let claim = index.claim(11, now).expect("claim").expect("free");
        assert_eq!(
            index.claim(11, now + 1_000),
            Ok(None),
            "an overlapping tick must not process the same minute"
        );
        index.clear(&claim).expect("clear");
        assert!(
            kv.keys().iter().all(|k| !k.starts_with("due/11/")),
            "{:?}",
            kv.keys()
        );
        assert_eq!(index.has_entries(11), Ok(false), "a cleared minute is done");
        index.set_cursor(12).expect("cursor");
        assert_eq!(index.cursor(), Ok(Some(12)));
    }

    #[test]
    fn claim_of_a_dead_holder_expires_after_at_most_two_windows() {
        let kv = MemoryKv::new();
        let index = DueIndex::new(&kv);
        index.schedule("a", 11 * MINUTE_MS, 0).expect("schedule");
        // Taken at the very start of a window: the longest a claim can live.
        let taken_at = 20 * CLAIM_WINDOW_MS;
        let claim = index.claim(11, taken_at).expect("claim").expect("free");
        assert_eq!(claim.expires_at_ms(), taken_at + 2 * CLAIM_WINDOW_MS);
        assert!(claim.work_until_ms() > taken_at + CLAIM_WINDOW_MS);
        // Its holder dies here. The next window still respects it; the one after does not.
        assert_eq!(index.claim(11, taken_at + CLAIM_WINDOW_MS), Ok(None));
        assert_eq!(index.claim(11, claim.expires_at_ms() - 1), Ok(None));
        let again = index
            .claim(11, claim.expires_at_ms())
            .expect("claim")
            .expect("expired claims can be taken");
        assert_eq!(index.entries(11), Ok(vec!["a".to_owned()]), "entries kept");
        index.clear(&again).expect("clear");
        assert!(
            kv.keys().iter().all(|k| !k.starts_with("due/11/")),
            "the dead holder's claim key is collected too: {:?}",
            kv.keys()
        );
    }

    #[test]
    fn claim_taken_late_in_a_window_still_lives_a_full_window() {
        let kv = MemoryKv::new();
        let index = DueIndex::new(&kv);
        index.schedule("a", 11 * MINUTE_MS, 0).expect("schedule");
        let taken_at = 21 * CLAIM_WINDOW_MS - 1;
        let claim = index.claim(11, taken_at).expect("claim").expect("free");
        assert_eq!(claim.expires_at_ms() - taken_at, CLAIM_WINDOW_MS + 1);
        assert_eq!(index.claim(11, taken_at + 2), Ok(None));
    }

    #[test]
    fn released_claim_can_be_taken_at_once() {
        let kv = MemoryKv::new();
        let index = DueIndex::new(&kv);
        index.schedule("a", 11 * MINUTE_MS, 0).expect("schedule");
        let now = 13 * MINUTE_MS;
        let claim = index.claim(11, now).expect("claim").expect("free");
        index.release(&claim).expect("release");
        assert!(index.claim(11, now + 1).expect("claim").is_some());
    }

    #[test]
    fn sweep_batches_walk_the_registry_and_wrap_around() {
        let kv = MemoryKv::new();
        let index = DueIndex::new(&kv);
        assert_eq!(index.next_sweep_batch(), Ok(None), "nothing registered");
        let users: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
        for user in &users {
            index.register(user).expect("register");
        }
        let mut seen = Vec::new();
        for expected_first in [1, 17, 33, 1] {
            let batch = index.next_sweep_batch().expect("sweep").expect("batch");
            assert_eq!(batch.first, expected_first, "{batch:?}");
            assert_eq!(batch.registered, 40);
            if seen.len() < users.len() {
                seen.extend(batch.users);
            }
        }
        assert_eq!(seen, users, "one pass sees every registered user once");
    }

    #[test]
    fn sweep_cursor_moved_by_another_walker_yields_no_batch() {
        let kv = MemoryKv::new();
        let index = DueIndex::new(&kv);
        index.register("a").expect("register");
        index.next_sweep_batch().expect("sweep").expect("batch");
        kv.force_conflicts(SWEEP_CURSOR_KEY, 1);
        assert_eq!(index.next_sweep_batch(), Ok(None));
        assert!(index.next_sweep_batch().expect("sweep").is_some());
    }

    #[test]
    fn sweep_cursor_that_is_unreadable_starts_over() {
        let kv = MemoryKv::new();
        let index = DueIndex::new(&kv);
        index.register("a").expect("register");
        kv.put_raw(SWEEP_CURSOR_KEY, b"not json");
        let batch = index.next_sweep_batch().expect("sweep").expect("batch");
        assert_eq!((batch.first, batch.users), (1, vec!["a".to_owned()]));
    }

    #[test]
    fn sweep_batch_size_spreads_a_pass_over_an_hour_within_bounds() {
        assert_eq!(sweep_batch_size(0), SWEEP_BATCH_MIN);
        assert_eq!(sweep_batch_size(100), SWEEP_BATCH_MIN);
        assert_eq!(sweep_batch_size(100_000), 1_667);
        assert_eq!(sweep_batch_size(10_000_000), SWEEP_BATCH_MAX);
    }

    #[test]
    fn memory_kv_meets_the_key_value_contract() {
        crate::testing::check_key_value_contract(&MemoryKv::new(), "t/").expect("contract");
    }

    proptest::proptest! {
        #[test]
        fn every_scheduled_user_is_found_in_exactly_one_walk(
            schedules in proptest::collection::vec((0usize..20, 0i64..120), 1..60)
        ) {
            let kv = MemoryKv::new();
            let index = DueIndex::new(&kv);
            let now = 1_000 * MINUTE_MS;
            let mut expected = std::collections::BTreeSet::new();
            for (user, offset_min) in &schedules {
                let minute = index.schedule(&format!("u{user}"), now + offset_min * MINUTE_MS, now).expect("schedule");
                proptest::prop_assert!(minute > minute_of(now));
                expected.insert((minute, format!("u{user}")));
            }
            let mut found = std::collections::BTreeSet::new();
            for minute in minute_of(now)..=minute_of(now) + 121 {
                let walk_at = (minute + 2) * MINUTE_MS;
                if !index.has_entries(minute).expect("exists") {
                    continue;
                }
                if let Some(claim) = index.claim(minute, walk_at).expect("claim") {
                    for user in index.entries(minute).expect("entries") {
                        proptest::prop_assert!(found.insert((minute, user)), "no duplicates within a minute");
                    }
                    index.clear(&claim).expect("clear");
                }
                proptest::prop_assert!(!index.has_entries(minute).expect("exists again"));
            }
            proptest::prop_assert_eq!(found, expected);
        }
    }
}
