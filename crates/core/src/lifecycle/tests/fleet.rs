//! Due checks through the fleet listing (`crate::fleet`) and work sharing between walkers (issue 12): a
//! healthy instance costs no Fly request between full checks, a change shown by the listing is read from
//! Fly, a listing that is not current is not trusted, and walkers share the shards, a dead walker's shard
//! going to the others once its claim expires.

use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::due::{CLAIM_TTL_MS, DueIndex, SHARDS, shard_of};

// Three walkers need three shards to work at once.
const _: () = assert!(SHARDS > 3);
use crate::fleet::{FEED_FRESH_MS, FleetFeed, PAGE_LIMIT};
use crate::lifecycle::FULL_CHECK_INTERVAL_MS;

/// Fly requests a check of an instance can make (not the listing, which is per tick, not per instance).
const INSTANCE_READS: [FlyCall; 3] = [
    FlyCall::GetMachine,
    FlyCall::GetVolume,
    FlyCall::ListMachines,
];

fn instance_reads(world: &World) -> usize {
    INSTANCE_READS
        .iter()
        .map(|call| world.fly.count(*call))
        .sum()
}

impl World {
    fn due_tick(&self) -> DueReport {
        self.instances()
            .reconcile_due(Duration::from_secs(30), 1_000)
            .expect("tick")
    }

    /// `minutes` ticks, one a minute; the checks they made.
    fn due_ticks(&self, minutes: u32) -> u32 {
        (0..minutes)
            .map(|_| {
                self.clock.advance(Duration::from_secs(60));
                self.due_tick().checked
            })
            .sum()
    }
}

#[test]
fn a_healthy_running_instance_costs_no_fly_request_between_full_checks() {
    let world = World::new();
    world.running();
    // The first check gives the record its spread point in the full-check interval; from then on the
    // listing vouches for the machine until the interval has passed.
    world.due_ticks(7);
    assert!(
        world.record().last_full_check_at.is_some(),
        "full check done"
    );
    let after_first = instance_reads(&world);
    let checked = world.due_ticks(50);
    assert!(checked >= 7, "checked every five or six minutes: {checked}");
    assert_eq!(
        instance_reads(&world),
        after_first,
        "no Fly read for the instance between full checks"
    );
    assert_eq!(world.record().status, Some(InstanceState::Running));
    // Once the full-check interval has passed, one check reads the machine and the volume again.
    world.due_ticks(u32::try_from(FULL_CHECK_INTERVAL_MS / 60_000).expect("minutes") - 50);
    let full = instance_reads(&world) - after_first;
    assert!(
        (1..=2).contains(&full),
        "one full check per interval (machine and volume): {full}"
    );
    let listings = world.fly.count(FlyCall::ListOrgMachines);
    assert!(
        listings >= 60,
        "the listing is followed once a tick: {listings}"
    );
}

#[test]
fn a_machine_stopped_behind_our_back_is_read_from_fly_at_the_next_check() {
    let world = World::new();
    let record = world.running();
    world.due_ticks(7); // the full check
    let machine = record.fly_machine_id.expect("machine");
    world
        .fly
        .set_machine_state(APP, &machine, MachineState::Stopped);
    let reads = world.fly.count(FlyCall::GetMachine);
    world.due_ticks(6);
    assert!(
        world.fly.count(FlyCall::GetMachine) > reads,
        "the listing disagreed with the record, so the check asked Fly"
    );
    assert_eq!(
        world.record().health_check_fail_count,
        1,
        "seen stopped once, as a full check would"
    );
}

#[test]
fn a_listing_that_is_not_current_is_not_trusted() {
    let world = World::new();
    world.running();
    world.due_ticks(7);
    // The listing fails from now on (Fly's org endpoint down): after FEED_FRESH_MS the checks read Fly.
    for _ in 0..40 {
        world.fly.fail_next(
            FlyCall::ListOrgMachines,
            FlyError::status("list", 503, r#"{"error":"unavailable"}"#),
        );
    }
    let reads = world.fly.count(FlyCall::GetMachine);
    world.due_ticks(u32::try_from(FEED_FRESH_MS / 60_000).expect("minutes") + 12);
    assert!(
        world.fly.count(FlyCall::GetMachine) >= reads + 2,
        "checks fell back to reading the machine"
    );
    let state = FleetFeed::new(&world.kv).state().expect("state");
    assert!(!FleetFeed::is_fresh(&state, world.clock.now_ms()));
}

#[test]
fn the_listing_pages_through_the_org_once_then_follows_only_changes() {
    let world = World::new();
    let org = world.settings.fly_org_slug.clone().expect("org");
    for i in 0..(PAGE_LIMIT as usize + 200) {
        world.fly.add_app(&format!("bulk-{i}"), &org);
        world
            .fly
            .create_machine(
                &format!("bulk-{i}"),
                &crate::fly::CreateMachineRequest::default(),
            )
            .expect("machine");
    }
    let feed = FleetFeed::new(&world.kv);
    let baseline = feed.follow(&world.fly, &org, &world.clock).expect("follow");
    assert_eq!((baseline.pages, baseline.synced), (2, true), "{baseline:?}");
    assert_eq!(baseline.written, PAGE_LIMIT + 200);
    // The next pass lists only what changed since (plus the overlap's few seconds).
    world.clock.advance(Duration::from_secs(60));
    let machine = world.fly.machines("bulk-7").remove(0).id;
    world
        .fly
        .set_machine_state("bulk-7", &machine, MachineState::Stopped);
    let next = feed.follow(&world.fly, &org, &world.clock).expect("follow");
    assert_eq!((next.pages, next.written), (1, 1), "{next:?}");
    assert!(next.listed <= 3, "only recent changes are listed: {next:?}");
}

#[test]
fn one_walker_follows_the_listing_at_a_time_and_a_dead_one_is_taken_over() {
    let world = World::new();
    world.running();
    let org = world.settings.fly_org_slug.clone().expect("org");
    let feed = FleetFeed::new(&world.kv);
    // A follower takes the feed and dies in the middle of its listing.
    let stall = world.fly.stall_next(
        FlyCall::ListOrgMachines,
        crate::testing::StallPoint::BeforeEffect,
    );
    let stalled = std::thread::scope(|scope| {
        let follower =
            scope.spawn(|| FleetFeed::new(&world.kv).follow(&world.fly, &org, &world.clock));
        stall.wait_until_reached();
        let second = FleetFeed::new(&world.kv)
            .follow(&world.fly, &org, &world.clock)
            .expect("follow");
        stall.release();
        let _ = follower.join();
        second
    });
    assert!(!stalled.followed, "the feed is held: {stalled:?}");
    world
        .clock
        .advance(Duration::from_millis(crate::fleet::FEED_HOLD_MS as u64 + 1));
    let taken = feed.follow(&world.fly, &org, &world.clock).expect("follow");
    assert!(taken.followed, "{taken:?}");
}

#[test]
fn walkers_share_the_shards_and_the_shard_of_a_dead_walker_goes_to_the_others() {
    let world = World::new();
    let users: Vec<String> = (0..48).map(|i| format!("shared-{i}")).collect();
    for user in &users {
        world.provision_with_next_check(user, None);
    }
    // Every instance due in the same minute.
    let now = world.clock.now_ms();
    let due = DueIndex::new(&world.kv);
    for user in &users {
        due.schedule(user, now, now).expect("schedule");
    }
    world.clock.advance(Duration::from_secs(2 * 60));
    // A walker claimed the shard of the first user and died there.
    let dead_shard = shard_of(&users[0]);
    due.claim(dead_shard, world.clock.now_ms())
        .expect("claim")
        .expect("free");
    let in_dead_shard = users.iter().filter(|u| shard_of(u) == dead_shard).count();
    // Three walkers at once take the other shards; no instance is checked twice.
    let checked = AtomicU32::new(0);
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                let report = world.due_tick();
                checked.fetch_add(report.checked, Ordering::SeqCst);
            });
        }
    });
    assert_eq!(
        checked.load(Ordering::SeqCst) as usize,
        users.len() - in_dead_shard,
        "every instance outside the dead walker's shard, once"
    );
    assert_eq!(
        due.backlog(world.clock.now_ms()).expect("backlog").entries as usize,
        in_dead_shard
    );
    // Once the claim's lifetime has passed, the next walk takes the dead walker's shard.
    world
        .clock
        .advance(Duration::from_millis(CLAIM_TTL_MS as u64));
    let report = world.due_tick();
    assert_eq!(report.checked as usize, in_dead_shard, "{report:?}");
    assert_eq!(
        due.backlog(world.clock.now_ms()).expect("backlog").entries,
        0
    );
}

#[test]
fn a_short_rate_limit_on_the_listing_is_waited_out_a_long_one_ends_the_step() {
    let world = World::new();
    world.running();
    let org = world.settings.fly_org_slug.clone().expect("org");
    let limited = |seconds: &str| {
        FlyError::from_response(
            "list",
            &crate::fly::HttpResponse {
                status: 429,
                headers: vec![("retry-after".to_owned(), seconds.to_owned())],
                body: br#"{"error":"rate limited"}"#.to_vec(),
            },
        )
    };
    world.fly.fail_next(FlyCall::ListOrgMachines, limited("1"));
    let before = world.clock.now_ms();
    let step = FleetFeed::new(&world.kv)
        .follow(&world.fly, &org, &world.clock)
        .expect("waited out");
    assert!(step.synced, "{step:?}");
    assert!(
        world.clock.now_ms() >= before + 1_000,
        "slept Fly's Retry-After"
    );
    world.clock.advance(Duration::from_secs(60));
    world.fly.fail_next(FlyCall::ListOrgMachines, limited("30"));
    let error = FleetFeed::new(&world.kv)
        .follow(&world.fly, &org, &world.clock)
        .expect_err("too long to wait in a tick");
    assert!(matches!(error, crate::fleet::FollowError::Fly(ref e) if e.is_rate_limited()));
    // The feed is not left held: the next tick follows at once.
    world.clock.advance(Duration::from_secs(60));
    assert!(
        FleetFeed::new(&world.kv)
            .follow(&world.fly, &org, &world.clock)
            .expect("follow")
            .followed
    );
}

/// Logs every call as `operation key` (keys of a batch joined by commas).
#[derive(Default)]
struct CallLog(std::sync::Mutex<Vec<String>>);

impl BeforeCall for CallLog {
    fn before(&self, operation: &str, keys: &[&str]) -> Result<(), crate::kv::KvError> {
        if let Ok(mut log) = self.0.lock() {
            log.push(format!("{operation} {}", keys.join(",")));
        }
        Ok(())
    }
}

#[test]
fn a_light_check_costs_a_few_key_value_calls() {
    let world = World::new();
    world.running();
    world.due_ticks(7); // the full check
    // Next due check: a light one, confirmed by the listing.
    world.clock.advance(Duration::from_secs(6 * 60));
    let logging = HookedKv {
        inner: &world.kv,
        hook: CallLog::default(),
    };
    let report = Instances::new(
        &logging,
        &world.fly,
        &world.clock,
        &world.random,
        &world.settings,
    )
    .reconcile_due(Duration::from_secs(30), 100)
    .expect("tick");
    assert_eq!(report.checked, 1, "{report:?}");
    let log = logging.hook.0.lock().map(|l| l.clone()).unwrap_or_default();
    // The check's own calls on the record and the observation (the tick's listing step and sweep read
    // them in batches, which are per tick, not per check).
    let per_check: Vec<&String> = log
        .iter()
        .filter(|entry| {
            entry.as_str() == format!("get {}", record_key(USER))
                || entry.as_str() == format!("cas {}", record_key(USER))
                || entry.starts_with("get fleet/m/")
        })
        .collect();
    // Read the record, take the lease, read the observation, commit and release in one swap.
    assert_eq!(per_check.len(), 4, "{per_check:#?}\nwhole tick: {log:#?}");
}

#[test]
fn an_instance_never_fully_checked_gets_a_light_check_and_a_spread_full_check_time() {
    let world = World::new();
    world.running();
    world.edit(|r| r.last_full_check_at = None);
    let reads = instance_reads(&world);
    world.due_ticks(7);
    assert_eq!(
        instance_reads(&world),
        reads,
        "an upgraded fleet is not fully checked all at once"
    );
    let last_full = world.record().last_full_check_at.expect("spread point");
    let now = world.clock.now_ms();
    assert!(
        last_full <= now && now - last_full < FULL_CHECK_INTERVAL_MS + 7 * 60_000,
        "within the interval: {}",
        now - last_full
    );
}
