//! Callers stuck between two steps while others go on: a slow record creator, lease holders that stall
//! between a Fly call and its commit, a holder whose lease is taken over during a Fly wait. Each stalled
//! caller runs on its own thread and is held by a [`crate::testing::Stall`] until the test releases it.

use std::time::Duration;

use crate::fly::MachineState;
use crate::record::InstanceState;
use crate::store::{StoreError, record_key};
use crate::testing::{FlyCall, StallPoint};

use super::*;

/// Lets the stalled holder's lease expire, so the next operation takes it over.
fn expire_lease(world: &World) {
    world
        .clock
        .advance(world.settings.store.lease_ttl + Duration::from_secs(1));
}

fn is_lease_lost(error: &LifecycleError) -> bool {
    matches!(error, LifecycleError::Store(StoreError::LeaseLost))
}

/// Takes the lease over from a holder stalled at `call` to Fly: `stale` runs on its own thread until it
/// reaches the stall, its lease expires, `takeover` runs under the new lease, and only then is the stale
/// holder let go. Returns what `takeover` returned and the stale holder's error, checked to be a lost
/// lease: a holder that lost its lease must fail rather than commit over the new holder's work.
fn take_over_from_stalled_holder<T: Send + std::fmt::Debug, R>(
    world: &World,
    call: FlyCall,
    point: StallPoint,
    stale: impl FnOnce() -> Result<T, LifecycleError> + Send,
    takeover: impl FnOnce() -> R,
) -> (R, LifecycleError) {
    let stall = world.fly.stall_next(call, point);
    std::thread::scope(|scope| {
        let stale = scope.spawn(stale);
        stall.wait_until_reached();
        expire_lease(world);
        let taken_over = takeover();
        stall.release();
        let error = stale
            .join()
            .expect("stale thread")
            .expect_err("the stale holder fails");
        assert!(is_lease_lost(&error), "{error:?}");
        (taken_over, error)
    })
}

/// A provision stalls at its volume create (before or after Fly acts on it, per `point`) until its lease
/// has expired and a second provision has run under a new lease.
fn provision_taken_over_at_volume_create(world: &World, point: StallPoint) {
    take_over_from_stalled_holder(
        world,
        FlyCall::CreateVolume,
        point,
        || world.instances().provision(USER, &config()),
        || {
            world
                .instances()
                .provision(USER, &config())
                .expect("provision under the new lease")
        },
    );
}

#[test]
fn a_slow_record_creator_does_not_wipe_a_running_instance() {
    let world = World::new();
    // The first caller is elected to create the record and is descheduled just before writing it, for
    // longer than `creation_grace`; meanwhile the user provisions and starts.
    let stalled = world.kv.stall_next_set(&record_key(USER));
    let mut live = InstanceRecord::default();
    std::thread::scope(|scope| {
        let slow = scope.spawn(|| world.instances().provision(USER, &config()));
        stalled.wait_until_reached();
        world.running();
        world
            .instances()
            .patch_kilocode_config(&KiloCodeConfigPatch {
                user_id: USER.into(),
                kilocode_default_model: Patch::Set("kilocode/a/b".into()),
                ..KiloCodeConfigPatch::default()
            })
            .expect("patch");
        live = world.record();
        assert!(live.version >= 10, "{live:?}");
        stalled.release();
        // The slow caller's provision goes on against the live record: a re-provision.
        slow.join().expect("slow thread").expect("slow provision");
    });
    let record = world.record();
    assert!(record.version > live.version, "{record:?}");
    assert_eq!(record.status, Some(InstanceState::Running), "{record:?}");
    assert_eq!(record.fly_machine_id, live.fly_machine_id);
    assert_eq!(
        record.last_started_at, live.last_started_at,
        "the start is remembered"
    );
    assert_eq!(record.provisioned_at, live.provisioned_at);
    assert_eq!(
        record.kilocode_default_model.as_deref(),
        Some("kilocode/a/b"),
        "the user's later patch is kept"
    );
    assert_eq!(record.kilocode_api_key.as_deref(), Some("kilo-key"));
    assert_eq!(world.fly.volumes(APP).len(), 1, "no second volume");
    assert_eq!(world.fly.machines(APP).len(), 1);
    assert_eq!(world.machine_state(), MachineState::Started);
    let route = world.instances().route(USER).expect("route");
    assert_eq!(Some(&route.machine_id), record.fly_machine_id.as_ref());
    assert_eq!(
        crate::lifecycle::route_of(&world.kv, USER, None)
            .expect("lean route")
            .machine_id,
        route.machine_id.clone()
    );
}

#[test]
fn a_volume_created_by_a_holder_that_lost_its_lease_is_adopted_not_duplicated() {
    let world = World::new();
    // The provision creates the volume, then stalls past its lease's expiry before committing the id.
    provision_taken_over_at_volume_create(&world, StallPoint::AfterEffect);
    let volumes = world.fly.volumes(APP);
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    let record = world.record();
    assert_eq!(
        record.fly_volume_id.as_deref(),
        Some(volumes[0].id.as_str())
    );
    assert_eq!(
        record.fly_region.as_deref(),
        Some(volumes[0].region.as_str())
    );
    assert!(record.orphaned_volume_ids.is_empty(), "{record:?}");
}

#[test]
fn a_volume_whose_create_lands_after_a_takeover_is_kept_as_an_orphan_and_deleted() {
    let world = World::new();
    // The provision's create request is still on its way to Fly when its lease expires; the new holder
    // finds no volume and creates one; then the old request lands.
    provision_taken_over_at_volume_create(&world, StallPoint::BeforeEffect);
    let record = world.record();
    let volumes = world.fly.volumes(APP);
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    let late = volumes
        .iter()
        .find(|v| Some(&v.id) != record.fly_volume_id.as_ref())
        .expect("the late volume");
    assert_eq!(
        record.orphaned_volume_ids,
        vec![late.id.clone()],
        "the stale holder names what it created"
    );
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    assert_eq!(world.fly.volumes(APP).len(), 1, "the orphan is deleted");
    let record = world.record();
    assert!(record.orphaned_volume_ids.is_empty());
    assert!(record.fly_volume_id.is_some());
}

#[test]
fn a_machine_created_by_a_holder_that_lost_its_lease_is_adopted_not_duplicated() {
    let world = World::new();
    world.provision();
    take_over_from_stalled_holder(
        &world,
        FlyCall::CreateMachine,
        StallPoint::AfterEffect,
        || world.instances().start(USER),
        || {
            world
                .instances()
                .start(USER)
                .expect("start under the new lease")
        },
    );
    let machines = world.fly.machines(APP);
    assert_eq!(machines.len(), 1, "{machines:?}");
    let record = world.record();
    assert_eq!(
        record.fly_machine_id.as_deref(),
        Some(machines[0].id.as_str())
    );
    assert_eq!(record.status, Some(InstanceState::Running));
    assert!(record.orphaned_machine_ids.is_empty(), "{record:?}");
}

#[test]
fn a_holder_whose_lease_renewal_fails_stops_before_its_next_fly_call() {
    let world = World::new();
    world.running();
    world.instances().stop(USER).expect("stop");
    // The user starts: start updates the stopped machine and then stalls past its lease's expiry.
    let (calls, error) = take_over_from_stalled_holder(
        &world,
        FlyCall::UpdateMachine,
        StallPoint::AfterEffect,
        || world.instances().start(USER),
        || {
            // The user stops meanwhile, under a new lease (the instance is still recorded as stopped).
            world.instances().stop(USER).expect("stop");
            world.fly.calls().len()
        },
    );
    assert_eq!(error.http_status(), 409, "busy: another operation won");
    assert!(error.is_retryable());
    assert_eq!(
        world.fly.calls()[calls..],
        [],
        "no Fly call after the renewal failed"
    );
    assert_eq!(world.machine_state(), MachineState::Stopped);
    assert_eq!(world.record().status, Some(InstanceState::Stopped));
}
