//! The reconciler's due index: which users to look at in which minute, split into shards that walkers
//! (cron ticks of any number of replicas) claim with expiring claims; and the registry the slow sweep
//! walks so that an instance that fell out of the index is found again.
//!
//! # Keys (`s` = shard, `m` = minute)
//!
//! - `due/s{s}/{m}/n`: counter of the shard-minute's slots; `due/s{s}/{m}/{slot}`: a user id.
//! - `due/s{s}/{m}/done`: plain JSON number, the slots already handled (progress of a walk cut short).
//! - `due/s{s}/cursor`: plain JSON number, the first minute of the shard a walk looks at.
//! - `due/s{s}/claim/{window}`: counter electing the shard's walker in claim window `window`.
//! - `sweep/n`: counter of registry slots; `sweep/{slot}`: a user id (one per record ever created).
//! - `sweep/cursor`: JSON `{"turn": …, "next": …}`, the next registry slot the sweep looks at.
//!
//! # Flow
//!
//! - **Schedule** ([`DueIndex::schedule`]): the user's shard is fixed ([`shard_of`], a hash of the id), so
//!   all of one user's entries meet in one shard. `n = increment("due/s{s}/{m}/n", 1)`, then
//!   `set("due/s{s}/{m}/{n}", userId)`. Every entry gets its own slot key, so writers never contend and no
//!   key is ever created by CAS. The minute is never earlier than the next one, so a minute being
//!   processed receives no new entries. One entry per instance: a lifecycle operation that ends while
//!   the record's `nextCheckAtMs` is still ahead (and no later than the check it would schedule) keeps
//!   that check and appends nothing (`lifecycle::Session::finish`), so live status checks, proxy
//!   recoveries and user calls between two checks cost the index nothing.
//! - **Walk** (`reconcile::Instances::reconcile_due`): a tick reads the [`SHARDS`] cursors with one
//!   `get_many` and visits the shards oldest cursor first. For a shard it looks at minutes from the cursor
//!   up to `now - 1 minute` (one minute of grace for clock skew between writers and the reconciler); a
//!   minute whose count key is absent is done. At the first minute with entries it claims the shard
//!   ([`DueIndex::claim`]), then works through the minutes in order: reads the pending slots (after
//!   `done`) with one `get_many`, checks each user, records its progress in `done` every
//!   [`PROGRESS_EVERY`] checks, clears a finished minute and moves the shard's cursor past it. When its
//!   budget ends it records its progress and releases the claim: the rest stays where it is and the next
//!   walker carries on from there, so a backlog is never copied or requeued, and is worked oldest first.
//! - **Claim** ([`DueIndex::claim`]): claim windows are [`CLAIM_WINDOW_MS`] long. In window `w` a walker
//!   first checks that `due/s{s}/claim/{w-1}` is absent (a claim from the previous window is still live),
//!   then takes `increment("due/s{s}/claim/{w}", 1) == 1`. The holder renews before each check
//!   ([`DueIndex::renew`]: in window `w+1` it takes `claim/{w+1}` the same way, which nobody else can,
//!   because its `claim/{w}` blocks them), so a live walker keeps its shard as long as it works. A holder
//!   that dies (trap, kill, redeploy) stops renewing: from the second window after its last renewal the
//!   shard can be claimed again, so its entries wait at most [`CLAIM_TTL_MS`]. A walker that finishes or
//!   gives up deletes its keys ([`DueIndex::release`]) so the next walker need not wait. Only `increment`
//!   and `exists` decide a claim: no CAS, so the claim is as safe on Spin's SQLite backend as anywhere
//!   (DESIGN decision 2).
//! - **Sweep** ([`DueIndex::next_sweep_batch`]): the key-value interface has no key listing, so every
//!   record is registered when it is created ([`DueIndex::register`], called by the store before it writes
//!   a new record). Each tick takes the next batch of registry slots by moving `sweep/cursor` with a CAS on
//!   the present value, reads those users' records with `get_many` at their usual key (the store's own
//!   reader takes over for the rare record that is not there, or was never written since its creation),
//!   and schedules every provisioned instance that names no next check or is more than
//!   [`SWEEP_OVERDUE_MS`] overdue.
//! - **Cursor**: a shard's cursor only says where to start walking; the holder writes the first minute
//!   it did not see done. A stale cursor costs a few extra `exists` calls, never a missed entry.
//!
//! # Guarantees
//!
//! - Work sharing: k walkers (one per cron trigger, replica and tick — spin.toml declares two triggers —
//!   or k concurrent calls of the HTTP reconcile route) hold k different shards at once, so they do about
//!   k times the work of one while there are at least k shards with due entries. [`SHARDS`] is fixed: changing it would strand the entries of the
//!   shards that disappear until the sweep puts their instances back.
//! - Scaling: one tick costs O(entries due) store calls for the index, never O(instances). With 100,000
//!   instances at the idle cadence about 3,400 entries fall in a minute, about 210 a shard.
//! - Entries are idempotent: the record's `nextCheckAtMs` decides whether an entry is current. A stale
//!   entry (superseded by a later schedule) is skipped, a duplicate causes one harmless extra check. So
//!   re-walking a minute after a crash (progress is recorded every few checks), or two walkers in one shard
//!   (a holder whose check outlived its claim), only repeats work; the per-user lease keeps the checks
//!   themselves safe.
//! - A claimed shard is never lost: its entries stay until a walker clears their minute, and a claim whose
//!   holder died blocks the shard for at most [`CLAIM_TTL_MS`].
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
//! - Claims make double processing rare, not impossible (a stale read of the previous window's key at a
//!   window edge, clock skew between walkers, a check that outlives its holder's claim); correctness rests
//!   on the leases and on idempotent entries, not on the claim. Such an overlap can leave a `done` key
//!   behind a cleared minute (a few bytes).
//! - A new claim deletes the keys that holders which died in the last [`CLAIM_GC_WINDOWS`] windows left;
//!   a key left longer ago than that stays as garbage (a few bytes, only after a crash and a long outage).
//! - Entries of the unsharded index of earlier releases (`due/{m}/…`, with the cursor `due/cursor`) are
//!   moved into the shards as their minutes come due ([`DueIndex::drain_legacy`], once per walk while
//!   `due/cursor` exists), so an upgrade, or an old replica still writing there during a rolling
//!   deploy, strands nothing. Claim keys that old walkers left behind stay as garbage.
//! - Records written before the registry existed are not registered: they stay watched through the index,
//!   and [`DueIndex::register`] backfills them (registering twice is harmless).
//! - The sweep cursor is created with a plain `set` when absent (never by CAS, DESIGN decision 2). Two
//!   walkers creating it at once may both sweep the first batch; a reset repeats batches, never skips one.

use serde::{Deserialize, Serialize};

use crate::kv::{CasOutcome, KeyValue, KvError};

/// Milliseconds in an index bucket.
pub const MINUTE_MS: i64 = 60_000;
/// Shards of the index: the most walkers that can work at once. Fixed (see the module doc).
pub const SHARDS: u32 = 16;
/// Length of a claim window. A claim lives through the end of the window after the last one its holder
/// renewed it in.
pub const CLAIM_WINDOW_MS: i64 = 15_000;
/// The longest a claim outlives its holder's last renewal: how long a dead walker's shard waits.
pub const CLAIM_TTL_MS: i64 = 2 * CLAIM_WINDOW_MS;
/// How many earlier windows a new claim looks at for keys that dead holders left behind.
const CLAIM_GC_WINDOWS: i64 = 8;
/// A walker records its progress in a minute after this many handled slots (and when it stops), so a
/// walker that dies repeats at most this many checks.
pub const PROGRESS_EVERY: usize = 16;
/// A sweep pass is spread over this many ticks (about an hour at one tick a minute).
pub const SWEEP_PASS_TICKS: i64 = 60;
/// Fewest registry slots a tick sweeps (small fleets finish a pass in a few ticks).
pub const SWEEP_BATCH_MIN: i64 = 16;
/// Most registry slots a tick sweeps (caps one tick's reads however large the fleet grows).
pub const SWEEP_BATCH_MAX: i64 = 2_000;
/// Keys per `get_many` of the sweep and of a minute's slots: keeps one call's answer to a few megabytes.
pub const SWEEP_READ_CHUNK: usize = 500;
/// How late a record's `nextCheckAtMs` may be before the sweep counts the instance as unwatched. Longer
/// than the walk's usual lag (one minute of grace, a short backoff), so that instances merely waiting in a
/// backlog are left to the index.
pub const SWEEP_OVERDUE_MS: i64 = 10 * MINUTE_MS;

/// Cursor of the unsharded index of earlier releases (`due/{m}/n`, `due/{m}/{slot}`).
const LEGACY_CURSOR_KEY: &str = "due/cursor";
/// Most legacy minutes one drain looks at (a release schedules at most about half an hour ahead).
const LEGACY_DRAIN_MINUTES: i64 = 180;
const REGISTRY_COUNT_KEY: &str = "sweep/n";
const SWEEP_CURSOR_KEY: &str = "sweep/cursor";

/// The due index over a key-value bucket.
#[derive(Debug)]
pub struct DueIndex<'a, K: ?Sized> {
    kv: &'a K,
}

fn count_key(shard: u32, minute: i64) -> String {
    format!("due/s{shard}/{minute}/n")
}

fn slot_key(shard: u32, minute: i64, slot: i64) -> String {
    format!("due/s{shard}/{minute}/{slot}")
}

fn progress_key(shard: u32, minute: i64) -> String {
    format!("due/s{shard}/{minute}/done")
}

fn cursor_key(shard: u32) -> String {
    format!("due/s{shard}/cursor")
}

fn claim_key(shard: u32, window: i64) -> String {
    format!("due/s{shard}/claim/{window}")
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

/// The shard of `user_id`: stable across processes, releases and architectures (a SHA-256 prefix, not
/// std's randomly seeded hasher).
pub fn shard_of(user_id: &str) -> u32 {
    // The hash's first four bytes (big-endian), as this has always been computed.
    let prefix = (crate::ids::stable_hash(user_id) >> 32) as u32;
    prefix % SHARDS
}

fn decode_number(raw: Option<Vec<u8>>) -> Option<i64> {
    raw.and_then(|v| serde_json::from_slice::<i64>(&v).ok())
}

/// A walker's claim on one shard (see the module doc): proof that it may walk the shard until
/// [`ShardClaim::expires_at_ms`], renewable with [`DueIndex::renew`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardClaim {
    shard: u32,
    /// The window of the first claim key this holder took.
    first_window: i64,
    /// The window of the last claim key this holder took.
    window: i64,
}

impl ShardClaim {
    /// The claimed shard.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// When the claim ends unless renewed: from then on another walker may take the shard.
    pub fn expires_at_ms(&self) -> i64 {
        (self.window + 2) * CLAIM_WINDOW_MS
    }
}

/// The slots of one shard-minute that still wait for a walker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSlots {
    /// Slots handled by earlier walks (the `done` mark).
    pub done: i64,
    /// Slots in use.
    pub count: i64,
    /// `(slot, user)` for every written slot after `done`, in order (empty slots are left out).
    pub entries: Vec<(i64, String)>,
}

/// Entries due but not yet handled, over every shard (what the benchmark reports as the backlog).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backlog {
    /// Slots in minutes up to the one before `now` that no walker has handled yet.
    pub entries: i64,
    /// The oldest minute holding such slots.
    pub oldest_minute: Option<i64>,
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

    /// Adds `user_id` to its shard's bucket of `at_ms` (never earlier than the minute after `now_ms`).
    /// Returns the minute used.
    pub fn schedule(&self, user_id: &str, at_ms: i64, now_ms: i64) -> Result<i64, KvError> {
        let minute = minute_of(at_ms).max(minute_of(now_ms) + 1);
        let shard = shard_of(user_id);
        let slot = self.kv.increment(&count_key(shard, minute), 1)?;
        self.kv
            .set(&slot_key(shard, minute, slot), user_id.as_bytes())?;
        Ok(minute)
    }

    /// Whether `minute` of `shard` still holds entries to process (`false`: never scheduled, or cleared).
    pub fn has_entries(&self, shard: u32, minute: i64) -> Result<bool, KvError> {
        self.kv.exists(&count_key(shard, minute))
    }

    /// Every shard's cursor, in shard order (`None`: never walked, or unreadable).
    pub fn cursors(&self) -> Result<Vec<Option<i64>>, KvError> {
        let keys: Vec<String> = (0..SHARDS).map(cursor_key).collect();
        Ok(self
            .kv
            .get_many(&keys)?
            .into_iter()
            .map(|(_, value)| decode_number(value))
            .collect())
    }

    /// Records where the next walk of `shard` should start.
    pub fn set_cursor(&self, shard: u32, minute: i64) -> Result<(), KvError> {
        self.kv
            .set(&cursor_key(shard), minute.to_string().as_bytes())
    }

    /// Claims `shard` at `now_ms`; `None` if another walker holds it.
    pub fn claim(&self, shard: u32, now_ms: i64) -> Result<Option<ShardClaim>, KvError> {
        let window = claim_window_of(now_ms);
        // A claim taken (or renewed) in the previous window is live through the end of this one.
        if self.kv.exists(&claim_key(shard, window - 1))? {
            return Ok(None);
        }
        if self.kv.increment(&claim_key(shard, window), 1)? != 1 {
            return Ok(None);
        }
        // Keys that holders which died recently left behind; they are expired, so nobody needs them.
        for old in window - CLAIM_GC_WINDOWS..window - 1 {
            self.kv.delete(&claim_key(shard, old))?;
        }
        Ok(Some(ShardClaim {
            shard,
            first_window: window,
            window,
        }))
    }

    /// Keeps `claim` alive at `now_ms`. Returns `false` when it was lost (its holder went too long
    /// without renewing, or another walker took the window): the holder must stop walking the shard.
    pub fn renew(&self, claim: &mut ShardClaim, now_ms: i64) -> Result<bool, KvError> {
        let window = claim_window_of(now_ms);
        if window == claim.window {
            return Ok(true);
        }
        // Only the window right after the last renewal is still ours to take: our key blocks everyone else
        // in it. Later than that, the claim expired and someone else may hold the shard.
        if window != claim.window + 1 || self.kv.increment(&claim_key(claim.shard, window), 1)? != 1
        {
            return Ok(false);
        }
        claim.window = window;
        Ok(true)
    }

    /// Gives a claim up (finished, out of budget, or failed but alive), so the next walker need not wait
    /// for it to expire.
    pub fn release(&self, claim: &ShardClaim) -> Result<(), KvError> {
        for window in claim.first_window..=claim.window {
            self.kv.delete(&claim_key(claim.shard, window))?;
        }
        Ok(())
    }

    /// The slots of `minute` in `shard` that no walk has handled yet.
    pub fn pending(&self, shard: u32, minute: i64) -> Result<PendingSlots, KvError> {
        let count = self.kv.increment(&count_key(shard, minute), 0)?;
        let done = decode_number(self.kv.get(&progress_key(shard, minute))?)
            .unwrap_or(0)
            .clamp(0, count.max(0));
        let slots: Vec<i64> = (done + 1..=count).collect();
        let mut entries = Vec::with_capacity(slots.len());
        for chunk in slots.chunks(SWEEP_READ_CHUNK) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|slot| slot_key(shard, minute, *slot))
                .collect();
            for (slot, (_, value)) in chunk.iter().zip(self.kv.get_many(&keys)?) {
                if let Some(user) = value.and_then(|v| String::from_utf8(v).ok()) {
                    entries.push((*slot, user));
                }
            }
        }
        Ok(PendingSlots {
            done,
            count,
            entries,
        })
    }

    /// The distinct users still waiting in `minute` over every shard, shard by shard in scheduling order
    /// (for tests and operators; a walker reads one shard with [`Self::pending`]).
    pub fn entries(&self, minute: i64) -> Result<Vec<String>, KvError> {
        let mut seen = std::collections::HashSet::new();
        let mut users = Vec::new();
        for shard in 0..SHARDS {
            if !self.has_entries(shard, minute)? {
                continue;
            }
            for (_, user) in self.pending(shard, minute)?.entries {
                if seen.insert(user.clone()) {
                    users.push(user);
                }
            }
        }
        Ok(users)
    }

    /// Records that the slots of `minute` in `shard` up to `done` are handled.
    pub fn set_progress(&self, shard: u32, minute: i64, done: i64) -> Result<(), KvError> {
        self.kv
            .set(&progress_key(shard, minute), done.to_string().as_bytes())
    }

    /// Deletes a processed minute's keys, the count key last: once it is gone every walker treats the
    /// minute as done, and a crash before that leaves a minute that is simply walked again.
    pub fn clear(&self, shard: u32, minute: i64) -> Result<(), KvError> {
        let count = self.kv.increment(&count_key(shard, minute), 0)?;
        for slot in 1..=count {
            self.kv.delete(&slot_key(shard, minute, slot))?;
        }
        self.kv.delete(&progress_key(shard, minute))?;
        self.kv.delete(&count_key(shard, minute))
    }

    /// Moves the entries of the unsharded index of earlier releases whose minute is ready at `now_ms`
    /// into the shards (due at once), then deletes them; returns how many. Does nothing once that index
    /// was never used (no `due/cursor`). Two walkers draining at once only duplicate entries, which the
    /// walk skips as stale or checks twice harmlessly.
    pub fn drain_legacy(&self, now_ms: i64) -> Result<u32, KvError> {
        let Some(cursor) = decode_number(self.kv.get(LEGACY_CURSOR_KEY)?) else {
            return Ok(0);
        };
        let last_ready = minute_of(now_ms) - 1;
        let first = cursor.max(last_ready - LEGACY_DRAIN_MINUTES);
        let mut moved = 0;
        for minute in first..=last_ready {
            let count_key = format!("due/{minute}/n");
            if !self.kv.exists(&count_key)? {
                continue;
            }
            let count = self.kv.increment(&count_key, 0)?;
            let keys: Vec<String> = (1..=count)
                .map(|slot| format!("due/{minute}/{slot}"))
                .collect();
            for chunk in keys.chunks(SWEEP_READ_CHUNK) {
                for (key, value) in self.kv.get_many(chunk)? {
                    if let Some(user) = value.and_then(|v| String::from_utf8(v).ok()) {
                        self.schedule(&user, now_ms, now_ms)?;
                        moved += 1;
                    }
                    self.kv.delete(&key)?;
                }
            }
            self.kv.delete(&format!("due/{minute}/claim"))?;
            self.kv.delete(&count_key)?;
        }
        if last_ready + 1 > cursor {
            self.kv
                .set(LEGACY_CURSOR_KEY, (last_ready + 1).to_string().as_bytes())?;
        }
        Ok(moved)
    }

    /// Entries due before the minute of `now_ms` that no walker has handled yet, over every shard. Reads
    /// each shard from its cursor, so it costs O(minutes behind) calls per shard; meant for benchmarks
    /// and operators, not for the walk.
    pub fn backlog(&self, now_ms: i64) -> Result<Backlog, KvError> {
        let last_ready = minute_of(now_ms) - 1;
        let mut backlog = Backlog::default();
        for (shard, cursor) in (0..SHARDS).zip(self.cursors()?) {
            let first = cursor.unwrap_or(last_ready - 60);
            for minute in first..=last_ready {
                if !self.has_entries(shard, minute)? {
                    continue;
                }
                let count = self.kv.increment(&count_key(shard, minute), 0)?;
                let done = decode_number(self.kv.get(&progress_key(shard, minute))?).unwrap_or(0);
                let waiting = (count - done).max(0);
                if waiting > 0 {
                    backlog.entries += waiting;
                    backlog.oldest_minute = Some(
                        backlog
                            .oldest_minute
                            .map_or(minute, |oldest| oldest.min(minute)),
                    );
                }
            }
        }
        Ok(backlog)
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

    fn users_of(pending: &PendingSlots) -> Vec<&str> {
        pending.entries.iter().map(|(_, u)| u.as_str()).collect()
    }

    #[test]
    fn entries_go_into_the_users_shard_and_never_into_the_past() {
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
        let (a, b) = (shard_of("a"), shard_of("b"));
        assert_eq!(
            users_of(&index.pending(a, 11).expect("pending")),
            ["a", "a"]
        );
        assert_eq!(users_of(&index.pending(b, 15).expect("pending")), ["b"]);
        assert_eq!(index.has_entries(b, 11), Ok(a == b));
        assert_eq!(index.pending(a, 12).expect("pending").entries, vec![]);
    }

    #[test]
    fn shards_are_stable_and_even() {
        // Pinned: the shard of a user must never change between releases, or entries would be looked
        // for in the wrong shard.
        assert_eq!(
            ["user-1", "user-2", "alice", ""].map(shard_of),
            [4, 15, 9, 2]
        );
        let mut per_shard = [0u32; SHARDS as usize];
        for i in 0..16_000 {
            per_shard[shard_of(&format!("user-{i}")) as usize] += 1;
        }
        assert!(
            per_shard.iter().all(|n| (800..=1_200).contains(n)),
            "about 1,000 users a shard: {per_shard:?}"
        );
    }

    #[test]
    fn a_shard_is_claimed_once_renewed_by_its_holder_and_released() {
        let kv = MemoryKv::new();
        let index = DueIndex::new(&kv);
        let now = 100 * CLAIM_WINDOW_MS;
        let mut claim = index.claim(3, now).expect("claim").expect("free");
        assert_eq!(
            index.claim(3, now + 1_000),
            Ok(None),
            "an overlapping walker must not take the same shard"
        );
        assert!(
            index.claim(4, now).expect("claim").is_some(),
            "other shards are free"
        );
        // The holder renews through many windows; nobody else gets in meanwhile.
        for step in 1..10 {
            let at = now + step * CLAIM_WINDOW_MS;
            assert_eq!(index.renew(&mut claim, at), Ok(true));
            assert_eq!(index.claim(3, at + 1), Ok(None));
        }
        index.release(&claim).expect("release");
        assert!(
            kv.keys().iter().all(|k| !k.starts_with("due/s3/claim")),
            "every key of the holder is gone: {:?}",
            kv.keys()
        );
        assert!(
            index
                .claim(3, now + 10 * CLAIM_WINDOW_MS)
                .expect("claim")
                .is_some()
        );
    }

    #[test]
    fn the_shard_of_a_dead_holder_is_free_one_claim_ttl_after_its_last_renewal() {
        let kv = MemoryKv::new();
        let index = DueIndex::new(&kv);
        // Renewed at the very start of a window: the longest a claim can live after it.
        let taken_at = 20 * CLAIM_WINDOW_MS;
        let mut claim = index.claim(0, taken_at).expect("claim").expect("free");
        let renewed_at = taken_at + CLAIM_WINDOW_MS;
        assert_eq!(index.renew(&mut claim, renewed_at), Ok(true));
        assert_eq!(claim.expires_at_ms(), renewed_at + CLAIM_TTL_MS);
        // Its holder dies here.
        assert_eq!(index.claim(0, renewed_at + CLAIM_WINDOW_MS), Ok(None));
        assert_eq!(index.claim(0, claim.expires_at_ms() - 1), Ok(None));
        let next = index
            .claim(0, claim.expires_at_ms())
            .expect("claim")
            .expect("expired claims can be taken");
        // The holder comes back to life (a long stall): its claim is gone and it must stop.
        let late = claim.expires_at_ms() + 1;
        assert_eq!(index.renew(&mut claim, late), Ok(false));
        index.release(&next).expect("release");
        assert!(
            kv.keys().iter().all(|k| !k.starts_with("due/s0/claim")),
            "the dead holder's keys are collected too: {:?}",
            kv.keys()
        );
    }

    #[test]
    fn progress_lets_the_next_walker_carry_on_where_the_last_one_stopped() {
        let kv = MemoryKv::new();
        let index = DueIndex::new(&kv);
        let users: Vec<String> = (0..200)
            .map(|i| format!("u{i}"))
            .filter(|u| shard_of(u) == 5)
            .collect();
        for user in &users {
            index.schedule(user, 11 * MINUTE_MS, 0).expect("schedule");
        }
        let first = index.pending(5, 11).expect("pending");
        assert_eq!((first.done, first.count), (0, users.len() as i64));
        index.set_progress(5, 11, 4).expect("progress");
        let rest = index.pending(5, 11).expect("pending");
        assert_eq!(
            users_of(&rest),
            users[4..].iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert_eq!(
            index.backlog(13 * MINUTE_MS).expect("backlog"),
            Backlog {
                entries: users.len() as i64 - 4,
                oldest_minute: Some(11)
            }
        );
        index.clear(5, 11).expect("clear");
        assert!(
            kv.keys().iter().all(|k| !k.starts_with("due/s5/11/")),
            "{:?}",
            kv.keys()
        );
        assert_eq!(
            index.has_entries(5, 11),
            Ok(false),
            "a cleared minute is done"
        );
        assert_eq!(index.backlog(13 * MINUTE_MS).expect("backlog").entries, 0);
        index.set_cursor(5, 12).expect("cursor");
        assert_eq!(index.cursors().expect("cursors")[5], Some(12));
    }

    #[test]
    fn entries_of_the_unsharded_index_move_into_the_shards_as_they_come_due() {
        let kv = MemoryKv::new();
        let index = DueIndex::new(&kv);
        // What an earlier release left: a cursor, minute 11 with two entries, minute 40 with one.
        kv.put_raw("due/cursor", b"10");
        kv.put_raw("due/11/1", b"a");
        kv.put_raw("due/11/2", b"b");
        index.kv.increment("due/11/n", 2).expect("count");
        kv.put_raw("due/40/1", b"c");
        index.kv.increment("due/40/n", 1).expect("count");
        let now = 13 * MINUTE_MS;
        assert_eq!(index.drain_legacy(now), Ok(2));
        assert!(
            kv.keys().iter().all(|k| !k.starts_with("due/11/")),
            "{:?}",
            kv.keys()
        );
        assert_eq!(index.entries(14), Ok(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(index.drain_legacy(now), Ok(0), "nothing twice");
        // Minute 40 moves once it is ready.
        assert_eq!(index.drain_legacy(41 * MINUTE_MS + 1), Ok(1));
        assert_eq!(index.entries(42), Ok(vec!["c".to_owned()]));
        let fresh = MemoryKv::new();
        assert_eq!(DueIndex::new(&fresh).drain_legacy(now), Ok(0));
        assert!(
            fresh.keys().is_empty(),
            "an index that never existed stays absent"
        );
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
        /// Walkers that stop after any number of slots (budget spent, death after recording progress)
        /// and come back later find every scheduled entry, none twice.
        #[test]
        fn every_scheduled_entry_is_handled_once_however_the_walks_are_cut(
            schedules in proptest::collection::vec((0usize..40, 0i64..30), 1..120),
            cuts in proptest::collection::vec(1usize..8, 1..40),
        ) {
            let kv = MemoryKv::new();
            let index = DueIndex::new(&kv);
            let now = 1_000 * MINUTE_MS;
            let mut expected = std::collections::BTreeMap::<(u32, i64), usize>::new();
            for (user, offset_min) in &schedules {
                let user = format!("u{user}");
                let minute = index.schedule(&user, now + offset_min * MINUTE_MS, now).expect("schedule");
                proptest::prop_assert!(minute > minute_of(now));
                *expected.entry((shard_of(&user), minute)).or_default() += 1;
            }
            let walk_at = now + 40 * MINUTE_MS;
            let mut handled = std::collections::BTreeMap::<(u32, i64), usize>::new();
            let mut cuts = cuts.into_iter().cycle();
            for shard in 0..SHARDS {
                // Walk each shard with walkers that each handle only `cut` slots, then record progress.
                while let Some(minute) = (minute_of(now)..minute_of(walk_at))
                    .find(|m| index.has_entries(shard, *m).expect("exists"))
                {
                    let claim = index.claim(shard, walk_at).expect("claim").expect("free");
                    let pending = index.pending(shard, minute).expect("pending");
                    let cut = cuts.next().unwrap_or(1);
                    let taken: Vec<_> = pending.entries.iter().take(cut).collect();
                    *handled.entry((shard, minute)).or_default() += taken.len();
                    match taken.last() {
                        Some((slot, _)) if (*slot) < pending.count => {
                            index.set_progress(shard, minute, *slot).expect("progress");
                        }
                        _ => index.clear(shard, minute).expect("clear"),
                    }
                    index.release(&claim).expect("release");
                }
            }
            proptest::prop_assert_eq!(handled, expected);
            proptest::prop_assert_eq!(index.backlog(walk_at).expect("backlog").entries, 0);
        }
    }
}
