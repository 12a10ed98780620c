//! The due walk never forgets an instance (DESIGN decision 4): a claimed shard survives the death of its
//! claimant or a store error, a check that fails for one instance requeues it at a short backoff, and the
//! slow sweep over the registry puts an instance that fell out of the index back into it.
//!
//! Faults are injected with [`FaultyKv`], a wrapper around the world's bucket that fails chosen calls:
//! once (a transient store error), or from a chosen call on (the process died there and writes nothing
//! more, which is what a trap, a kill or a redeploy look like from the store).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::kv::{KeyValue, KvError};

use super::*;

/// How [`FaultyKv`] fails once its rule matches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The first matching call fails; later calls work.
    Once,
    /// The first matching call and every call after it fail: the process died there.
    Die,
}

/// Picks the calls to fail: `rule(operation, key)`.
type Rule<'a> = Box<dyn Fn(&str, &str) -> bool + 'a>;

/// What [`FaultyKv`] fails: the calls its rule picks (see [`Fault`]).
struct Faults<'a> {
    rule: Rule<'a>,
    fault: Fault,
    /// The rule matched already (for `Once`: spent; for `Die`: dead).
    tripped: AtomicBool,
}

impl BeforeCall for Faults<'_> {
    fn before(&self, operation: &str, keys: &[&str]) -> Result<(), KvError> {
        let tripped = self.tripped.load(Ordering::SeqCst);
        if tripped && self.fault == Fault::Die {
            return Err(KvError::Other("process is dead".into()));
        }
        if !tripped && keys.iter().any(|key| (self.rule)(operation, key)) {
            self.tripped.store(true, Ordering::SeqCst);
            return Err(KvError::Other(format!("injected {operation} failure")));
        }
        Ok(())
    }
}

/// The world's bucket, failing the calls that its rule picks (see [`Fault`]).
type FaultyKv<'a> = HookedKv<'a, Faults<'a>>;

impl<'a> FaultyKv<'a> {
    fn new(inner: &'a MemoryKv, fault: Fault, rule: impl Fn(&str, &str) -> bool + 'a) -> Self {
        Self {
            inner,
            hook: Faults {
                rule: Box::new(rule),
                fault,
                tripped: AtomicBool::new(false),
            },
        }
    }

    /// Whether the rule has matched.
    fn tripped(&self) -> bool {
        self.hook.tripped.load(Ordering::SeqCst)
    }
}

/// A due-index slot key `due/s{shard}/{minute}/{slot}` (not the count, progress, claim or cursor keys).
fn is_slot_key(key: &str) -> bool {
    let numeric =
        |part: &str| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit() || c == '-');
    let parts: Vec<&str> = key.split('/').collect();
    matches!(parts.as_slice(), ["due", shard, minute, slot]
        if shard.strip_prefix('s').is_some_and(numeric) && numeric(minute) && numeric(slot))
}

impl World {
    /// One cron tick through `kv` (the world's own bucket or a faulty view of it).
    fn tick_through(&self, kv: &dyn KeyValue) -> Result<DueReport, LifecycleError> {
        Instances::new(kv, &self.fly, &self.clock, &self.random, &self.settings)
            .reconcile_due(Duration::from_secs(30), 100)
    }

    /// One healthy cron tick.
    fn tick(&self) -> DueReport {
        self.instances()
            .reconcile_due(Duration::from_secs(30), 100)
            .expect("healthy tick")
    }

    /// `minutes` healthy ticks, one a minute (the clock moves first); the checks they made.
    fn ticks(&self, minutes: u32) -> u32 {
        let mut checked = 0;
        for _ in 0..minutes {
            self.clock.advance(Duration::from_secs(60));
            checked += self.tick().checked;
        }
        checked
    }

    /// A world with one running instance whose next check has come due: it was set for five minutes after
    /// the start (plus up to a minute of jitter), and seven minutes on its minute is ready for the walk.
    fn with_a_due_check() -> Self {
        let world = Self::new();
        world.running();
        world.clock.advance(Duration::from_secs(7 * 60));
        world
    }

    /// Loses the whole due index (every `due/` key), as if it had never been written.
    fn wipe_due_index(&self) {
        for key in self.kv.keys() {
            if key.starts_with("due/") {
                self.kv.delete(&key).expect("delete");
            }
        }
    }
}

/// The one due check failed before it could check anything, and instead of being dropped the instance was
/// requeued at the short backoff: the next ticks check it exactly once, within three minutes.
fn assert_requeued_at_the_backoff(world: &World, report: &DueReport) {
    assert_eq!(
        (report.errors, report.requeued, report.checked),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!(world.ticks(3), 1, "checked again after the backoff");
}

// ---------- a claimed shard is never lost ----------

#[test]
fn due_shard_claimed_by_a_walker_that_died_is_walked_again_once_the_claim_expires() {
    let world = World::with_a_due_check();
    // The walker claims the minute, starts checking the user and dies there.
    let dying = FaultyKv::new(&world.kv, Fault::Die, |_, key| key == record_key(USER));
    let _ = world.tick_through(&dying);
    assert!(
        dying.tripped(),
        "the walker got as far as the user's record"
    );
    assert_eq!(
        world.ticks(3),
        1,
        "the claim expires within a claim TTL and the user is checked once"
    );
}

#[test]
fn store_error_after_the_claim_does_not_lose_the_minute() {
    let world = World::with_a_due_check();
    // Reading the claimed minute's entries fails once.
    let flaky = FaultyKv::new(&world.kv, Fault::Once, |operation, key| {
        operation == "get_many" && is_slot_key(key)
    });
    let _ = world.tick_through(&flaky);
    assert!(flaky.tripped(), "the fault was hit");
    assert_eq!(world.ticks(3), 1, "the minute is walked again");
}

// ---------- a failed check requeues instead of dropping ----------

#[test]
fn failed_record_read_requeues_the_instance_at_a_short_backoff() {
    let world = World::with_a_due_check();
    let flaky = FaultyKv::new(&world.kv, Fault::Once, |operation, key| {
        operation == "get" && key == record_key(USER)
    });
    let report = world
        .tick_through(&flaky)
        .expect("one failed read is not a failed tick");
    assert_requeued_at_the_backoff(&world, &report);
}

#[test]
fn failed_lease_attempt_requeues_the_instance_at_a_short_backoff() {
    let world = World::with_a_due_check();
    let flaky = FaultyKv::new(&world.kv, Fault::Once, |operation, key| {
        operation == "cas" && key == record_key(USER)
    });
    let report = world.tick_through(&flaky).expect("tick");
    assert!(flaky.tripped(), "the fault was hit");
    assert_requeued_at_the_backoff(&world, &report);
}

#[test]
fn store_error_while_finishing_a_check_requeues_the_instance() {
    let world = World::with_a_due_check();
    // The check itself works; writing its next due entry fails, so the session ends with an error and
    // leaves its lease to expire.
    let flaky = FaultyKv::new(&world.kv, Fault::Once, |operation, key| {
        operation == "set" && is_slot_key(key)
    });
    let report = world.tick_through(&flaky).expect("tick");
    assert!(flaky.tripped(), "the fault was hit");
    assert_eq!((report.errors, report.requeued), (1, 1), "{report:?}");
    assert!(
        world.ticks(5) >= 1,
        "checked again once the abandoned lease has expired"
    );
}

#[test]
fn fly_error_during_a_due_check_retries_at_a_short_backoff() {
    let world = World::with_a_due_check();
    // A full check, which reads the machine from Fly whatever the fleet listing says.
    world.edit(|r| r.last_full_check_at = Some(0));
    world.fly.fail_next(FlyCall::GetMachine, server_error());
    let report = world.tick();
    assert_eq!((report.checked, report.requeued), (1, 1), "{report:?}");
    let next = world.record().next_check_at_ms.expect("scheduled");
    assert!(
        next <= world.clock.now_ms() + 3 * 60_000,
        "retried within minutes, not at the 5-minute cadence: {}",
        next - world.clock.now_ms()
    );
    let reads = world.fly.count(FlyCall::GetMachine);
    assert_eq!(world.ticks(3), 1);
    assert_eq!(world.fly.count(FlyCall::GetMachine), reads + 1);
}

// ---------- the sweep backstops the index ----------

#[test]
fn instance_missing_from_the_due_index_is_found_by_the_sweep() {
    let world = World::new();
    world.provision(); // next check in ~30 minutes
    world.wipe_due_index();
    assert!(
        world.ticks(45) >= 1,
        "the sweep finds the overdue instance and puts it back"
    );
    let record = world.record();
    assert!(
        record.next_check_at_ms.expect("next") > world.clock.now_ms(),
        "watched again"
    );
}

#[test]
fn sweep_covers_every_registered_instance_within_a_pass() {
    let world = World::new();
    let users: Vec<String> = (0..40).map(|i| format!("sweep-user-{i}")).collect();
    for user in &users {
        // A record that names no next check at all (written by an older release, say).
        world.provision_with_next_check(user, None);
    }
    world.wipe_due_index();
    let checked = world.ticks(8);
    assert_eq!(checked, 40, "every instance found and checked exactly once");
    for user in &users {
        let record = world
            .store()
            .load(user)
            .expect("load")
            .expect("record")
            .record;
        assert!(
            record
                .next_check_at_ms
                .is_some_and(|t| t > world.clock.now_ms()),
            "{user} is watched again"
        );
    }
}

#[test]
fn sweep_leaves_watched_instances_alone() {
    let world = World::new();
    for user in ["a", "b", "c"] {
        world
            .instances()
            .provision(user, &config())
            .expect("provision");
    }
    assert_eq!(world.ticks(10), 0);
    let slots = world
        .kv
        .keys()
        .into_iter()
        .filter(|k| is_slot_key(k))
        .count();
    assert_eq!(slots, 3, "one entry per instance, none added by the sweep");
}

#[test]
fn requeue_refused_by_the_store_keeps_the_minute_for_the_next_tick() {
    let world = World::with_a_due_check();
    let held = world.store().acquire(USER, "long-op").expect("lease");
    // The instance is busy and requeueing it fails: the entry must stay where it is.
    let flaky = FaultyKv::new(&world.kv, Fault::Once, |operation, key| {
        operation == "set" && is_slot_key(key)
    });
    let report = world.tick_through(&flaky).expect("tick");
    assert!(flaky.tripped(), "the fault was hit");
    assert_eq!((report.checked, report.requeued, report.minutes), (0, 0, 0));
    world.store().release(held).expect("release");
    assert_eq!(
        world.ticks(1),
        1,
        "the kept minute is walked by the next tick"
    );
}

#[test]
fn every_created_record_is_registered_for_the_sweep() {
    let world = World::new();
    world.provision();
    let batch = crate::due::DueIndex::new(&world.kv)
        .next_sweep_batch()
        .expect("sweep")
        .expect("batch");
    assert_eq!(batch.users, vec![USER.to_owned()]);
}
