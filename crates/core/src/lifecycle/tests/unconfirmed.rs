//! Creates that Fly performed but answered with an error (a 5xx after the work, as the simulator's
//! chaos does, or a timeout): the three leaks the chaos-convergence test found, each reproduced here
//! with `FakeFly::fail_next_after_effect`, and the settling that closes them (`lifecycle::settle`).

use crate::record::InstanceState;
use crate::testing::FlyCall;

use super::*;

/// Every live machine and volume in the user's app is named by the record.
fn assert_fly_matches_record(world: &World) {
    let record = world.record();
    for machine in world.fly.machines(APP) {
        if !machine.state.is_gone() {
            assert_eq!(
                record.fly_machine_id.as_deref(),
                Some(machine.id.as_str()),
                "{record:?}"
            );
        }
    }
    let volumes = world.fly.volumes(APP);
    assert!(volumes.len() <= 1, "{volumes:?}");
    for volume in volumes {
        assert_eq!(record.fly_volume_id.as_deref(), Some(volume.id.as_str()));
    }
}

#[test]
fn a_destroy_after_a_machine_create_that_answered_503_deletes_the_machine_and_the_volume() {
    let world = World::new();
    world.fly.set_asynchronous_destroy(true);
    world.provision();
    world
        .fly
        .fail_next_after_effect(FlyCall::CreateMachine, 503);
    world
        .instances()
        .start(USER)
        .expect_err("the create answered 503");
    assert_eq!(world.fly.machines(APP).len(), 1, "Fly made the machine");
    let record = world.record();
    assert!(record.fly_machine_id.is_none());
    assert!(
        record.unconfirmed_create_at.is_some(),
        "the intent is on record"
    );

    // Before the fix the volume stayed bound to the unrecorded machine: destroy never completed.
    let outcome = world.instances().destroy(USER).expect("destroy");
    assert!(outcome.complete, "{:?}", world.record());
    assert!(world.fly.machines(APP).is_empty());
    assert!(world.fly.volumes(APP).is_empty());
    assert_eq!(world.record().status, None);
}

#[test]
fn a_start_after_a_machine_create_that_answered_503_adopts_the_machine() {
    let world = World::new();
    world.provision();
    world
        .fly
        .fail_next_after_effect(FlyCall::CreateMachine, 503);
    world
        .instances()
        .start(USER)
        .expect_err("the create answered 503");
    world.instances().start(USER).expect("start again");
    assert_eq!(world.fly.machines(APP).len(), 1, "no second machine");
    assert_eq!(world.record().status, Some(InstanceState::Running));
    assert!(world.record().unconfirmed_create_at.is_none());
    assert_fly_matches_record(&world);
}

#[test]
fn a_fork_whose_create_answered_502_during_capacity_relocation_is_not_leaked() {
    let world = World::new();
    let before = world.running();
    world.instances().stop(USER).expect("stop");
    world.fly.set_region_full("dfw", true);
    // The fork of the user's volume is made, but its answer is lost.
    world.fly.fail_next_after_effect(FlyCall::CreateVolume, 502);
    world
        .instances()
        .start(USER)
        .expect_err("the fork answered 502");
    assert_eq!(
        world.fly.volumes(APP).len(),
        2,
        "the old volume and the fork"
    );
    assert_eq!(world.record().fly_volume_id, before.fly_volume_id);

    // The next start settles the unrecorded fork (an orphan: the record still names its volume) and
    // relocates again; the reconciler deletes what is left over.
    world.instances().start(USER).expect("start again");
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let record = world.record();
    assert_eq!(record.status, Some(InstanceState::Running));
    assert_eq!(record.fly_region.as_deref(), Some("yyz"));
    assert!(record.orphaned_volume_ids.is_empty(), "{record:?}");
    assert_fly_matches_record(&world);
}

#[test]
fn a_fresh_volume_whose_create_answered_504_during_capacity_relocation_is_adopted() {
    let world = World::new();
    world.provision();
    world.fly.set_region_full("dfw", true);
    world.fly.fail_next_after_effect(FlyCall::CreateVolume, 504);
    world
        .instances()
        .start(USER)
        .expect_err("the replacement answered 504");
    world.instances().start(USER).expect("start again");
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let record = world.record();
    assert_eq!(record.status, Some(InstanceState::Running));
    assert!(record.orphaned_volume_ids.is_empty(), "{record:?}");
    assert_fly_matches_record(&world);
}

/// A first provision whose volume create Fly performed but answered 503.
fn fail_a_first_provision_after_its_volume_was_made(world: &World) {
    world.fly.fail_next_after_effect(FlyCall::CreateVolume, 503);
    world
        .instances()
        .provision(USER, &config())
        .expect_err("the volume create answered 503");
}

#[test]
fn a_first_provision_whose_volume_create_answered_503_leaves_nothing_unwatched() {
    let world = World::new();
    fail_a_first_provision_after_its_volume_was_made(&world);
    let record = world.record();
    assert_eq!(record.status, None, "not provisioned");
    assert!(record.needs_watch(), "but watched: {record:?}");
    assert!(record.next_check_at_ms.is_some(), "and scheduled");
    assert_eq!(world.fly.volumes(APP).len(), 1);

    // Nobody retries the provision: the reconciler settles the volume into the record, so it is
    // named (a retried provision uses it) and never leaks.
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let record = world.record();
    assert!(record.unconfirmed_create_at.is_none());
    assert_fly_matches_record(&world);

    // The retried provision adopts it rather than creating another.
    world
        .instances()
        .provision(USER, &config())
        .expect("provision again");
    assert_eq!(world.fly.volumes(APP).len(), 1);
    assert_eq!(world.record().status, Some(InstanceState::Provisioned));
    assert_fly_matches_record(&world);
}

#[test]
fn the_volume_of_a_failed_first_provision_that_fly_loses_is_forgotten_not_replaced() {
    // The chaos-convergence test found it: a failed first provision's volume, settled into a record
    // that is not provisioned, was lost out of band and the record named it forever (nothing looked).
    let world = World::new();
    fail_a_first_provision_after_its_volume_was_made(&world);
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile settles the volume");
    let record = world.record();
    let volume_id = record
        .fly_volume_id
        .clone()
        .expect("settled into the record");
    assert_eq!(record.status, None);
    assert!(record.holds_unprovisioned_volume() && !record.has_unsettled_creates());
    assert!(record.next_check_at_ms.is_some(), "still watched");
    // Once the settling check's entry has passed, the next check is on the idle cadence.
    world.clock.advance(std::time::Duration::from_secs(2 * 60));
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let now = world.clock.now_ms();
    let next = world.record().next_check_at_ms.expect("still watched");
    let idle = crate::store::duration_ms(crate::lifecycle::INTERVAL_IDLE);
    assert!(
        (now + idle..=now + idle + JITTER_MS as i64).contains(&next),
        "on the idle cadence: {next} from {now}"
    );

    world.fly.remove_volume(APP, &volume_id);
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let record = world.record();
    assert_eq!(record.fly_volume_id, None, "forgotten: {record:?}");
    assert_eq!(record.status, None, "still not provisioned");
    assert!(world.fly.volumes(APP).is_empty(), "nothing created for it");
    assert!(!record.needs_watch() && record.next_check_at_ms.is_none());

    world.provision();
    assert_eq!(world.fly.volumes(APP).len(), 1, "the provision creates one");
    assert_fly_matches_record(&world);
}

#[test]
fn a_holder_that_died_between_its_create_and_its_commit_leaves_no_orphan() {
    // A SIGKILL between the create and the commit: the same state as a create whose answer was lost.
    let world = World::new();
    world.provision();
    world
        .fly
        .fail_next_after_effect(FlyCall::CreateMachine, 500);
    world.instances().start(USER).expect_err("died");
    // Its lease is still held; it expires.
    world
        .clock
        .advance(world.settings.store.lease_ttl + std::time::Duration::from_secs(1));
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let record = world.record();
    assert!(record.unconfirmed_create_at.is_none());
    assert_eq!(
        record.status,
        Some(InstanceState::Running),
        "the machine runs"
    );
    assert_fly_matches_record(&world);
}

#[test]
fn a_create_that_fails_without_effect_costs_one_listing_and_no_orphan() {
    let world = World::new();
    world.provision();
    world.fly.fail_next(FlyCall::CreateMachine, server_error());
    world
        .instances()
        .start(USER)
        .expect_err("503 before the effect");
    world.fly.clear_calls();
    world.instances().start(USER).expect("start again");
    assert_eq!(
        world.fly.count(FlyCall::ListMachines),
        2,
        "settle, then the adoption check"
    );
    assert!(world.record().orphaned_machine_ids.is_empty());
    assert_fly_matches_record(&world);
}

#[test]
fn a_running_record_left_without_a_machine_is_marked_stopped_by_the_reconciler() {
    // Found by the chaos test (seed 6): capacity relocation retired the machine, then its create
    // failed; the record said `running` with no machine, and the reconciler left it so for good.
    let world = World::new();
    world.running();
    world.instances().stop(USER).expect("stop");
    world.instances().start(USER).expect("start");
    world.fly.set_region_full("dfw", true);
    world.fly.set_region_full("yyz", true);
    world.fly.set_region_full("cdg", true);
    world.edit(|r| r.status = Some(InstanceState::Running));
    let machine = world.record().fly_machine_id.expect("machine");
    world.fly.remove_machine(APP, &machine);
    world.edit(|r| r.fly_machine_id = None);
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let record = world.record();
    assert_eq!(record.status, Some(InstanceState::Stopped), "{record:?}");
    assert!(record.fly_machine_id.is_none());
}
