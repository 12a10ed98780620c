//! Volumes and capacity: create/get/list/delete, validation, binding, forks, snapshots, placement
//! errors exactly as Fly words them.

use kiloclaw_core::fly::{
    CreateMachineRequest, CreateVolumeRequest, FlyApi, FlyErrorKind, GuestConfig,
    UpdateMachineRequest, VolumeState, WaitRequest, WaitState,
};

use crate::support::*;

#[test]
fn volume_lifecycle_and_binding() {
    let env = start();
    let volume = create_volume(&env, "kiloclaw_dxnlcl9hymmxmjm", "dfw");
    assert!(
        volume.id.starts_with("vol_") && volume.id.len() == 20,
        "{}",
        volume.id
    );
    assert_eq!(
        (volume.state.clone(), volume.region.as_str(), volume.size_gb),
        (VolumeState::Created, "dfw", 10)
    );
    assert_eq!(volume.attached_machine_id, None);
    assert_eq!(
        env.fly.get_volume(APP, &volume.id).expect("get").id,
        volume.id
    );
    assert_eq!(env.fly.list_volumes(APP).expect("list").len(), 1);

    let machine = create_machine(&env, Some(&volume.id), "v");
    assert_eq!(machine.region, "dfw", "a machine lands where its volume is");
    let bound = env.fly.get_volume(APP, &volume.id).expect("get");
    assert_eq!(
        bound.attached_machine_id.as_deref(),
        Some(machine.id.as_str())
    );
    // One machine per volume.
    let second = env
        .fly
        .create_machine(
            APP,
            &CreateMachineRequest {
                config: machine_config(Some(&volume.id), "v2"),
                ..Default::default()
            },
        )
        .expect_err("412");
    assert_eq!(second.http_status(), Some(412));
    // A bound volume cannot be deleted, even with the machine stopped.
    wait_started(&env, &machine.id);
    stop_and_wait(&env, &machine.id);
    let refused = env.fly.delete_volume(APP, &volume.id).expect_err("bound");
    assert_eq!(refused.http_status(), Some(412));
    assert!(
        refused
            .message()
            .contains("volume is currently bound to machine")
    );
    env.fly
        .destroy_machine(APP, &machine.id, true)
        .expect("destroy");
    env.fly
        .wait_machine(
            APP,
            &machine.id,
            &WaitRequest::new(WaitState::Destroyed, 10),
        )
        .expect("destroyed");
    eventually("binding cleared", || {
        env.fly
            .get_volume(APP, &volume.id)
            .expect("get")
            .attached_machine_id
            .is_none()
    });
    env.fly.delete_volume(APP, &volume.id).expect("deleted");
    let soft = env
        .fly
        .get_volume(APP, &volume.id)
        .expect("soft-deleted volumes remain readable");
    assert_eq!(soft.state, VolumeState::PendingDestroy);
    assert!(soft.state.is_deleted());
    // A machine cannot mount a deleted volume.
    let err = env
        .fly
        .create_machine(
            APP,
            &CreateMachineRequest {
                config: machine_config(Some(&volume.id), "v3"),
                ..Default::default()
            },
        )
        .expect_err("400");
    assert_eq!(
        (err.http_status(), err.message().as_str()),
        (Some(400), "volume not found")
    );
}

#[test]
fn volume_create_validates_name_region_and_size() {
    let env = start();
    for (name, region, size) in [
        ("bad-name", "dfw", 10),
        ("ok", "dfw,yyz", 10),
        ("ok", "us", 10),
        ("ok", "xxx", 10),
        ("ok", "dfw", 0),
    ] {
        let err = env
            .fly
            .create_volume(
                APP,
                &CreateVolumeRequest {
                    name: name.into(),
                    region: region.into(),
                    size_gb: size,
                    ..Default::default()
                },
            )
            .expect_err("invalid");
        assert_eq!(err.http_status(), Some(400), "{name} {region} {size}");
    }
    let err = env
        .fly
        .get_volume(APP, "vol_doesnotexist00")
        .expect_err("404");
    assert!(err.is_not_found());
}

#[test]
fn fork_copies_data_and_snapshots_are_listed() {
    let env = start();
    let source = create_volume(&env, "data", "yyz");
    std::fs::write(
        env.admin().volume_dir(&source.id).join("openclaw.json"),
        "{\"configured\":true}",
    )
    .expect("write");
    let fork = env
        .fly
        .create_volume(
            APP,
            &CreateVolumeRequest {
                name: "data".into(),
                region: "cdg".into(),
                size_gb: 10,
                source_volume_id: Some(source.id.clone()),
                ..Default::default()
            },
        )
        .expect("fork");
    assert_eq!(fork.region, "cdg");
    let copied = std::fs::read_to_string(env.admin().volume_dir(&fork.id).join("openclaw.json"))
        .expect("copied");
    assert_eq!(copied, "{\"configured\":true}");
    assert!(
        env.fly
            .list_volume_snapshots(APP, &source.id)
            .expect("list")
            .is_empty()
    );
    env.admin().snapshot_volume(&source.id).expect("snapshot");
    let snapshots = env
        .fly
        .list_volume_snapshots(APP, &source.id)
        .expect("list");
    assert_eq!(snapshots.len(), 1);
    assert!(snapshots[0].id.starts_with("vs_"));
}

#[test]
fn full_host_gives_the_production_412_on_create_with_a_volume() {
    let env = start();
    let volume = create_volume(&env, "stranded", "dfw");
    env.admin()
        .set_host_memory(volume.zone.as_deref().expect("zone"), 1024)
        .expect("host");
    let err = env
        .fly
        .create_machine(
            APP,
            &CreateMachineRequest {
                config: machine_config(Some(&volume.id), "c"),
                ..Default::default()
            },
        )
        .expect_err("412");
    assert_eq!(err.http_status(), Some(412));
    assert_eq!(
        err.message(),
        format!(
            "insufficient resources to create new machine with existing volume '{}'",
            volume.id
        )
    );
    assert!(err.is_capacity());
    assert_eq!(err.kind(), FlyErrorKind::Capacity);
    assert!(!err.is_not_found() && !err.is_transient());
}

#[test]
fn full_host_gives_the_production_409_on_start_and_update() {
    let env = start();
    let volume = create_volume(&env, "busy", "dfw");
    let machine = started_machine(&env, Some(&volume.id), "c");
    stop_and_wait(&env, &machine.id);
    let zone = volume.zone.clone().expect("zone");
    env.admin().set_host_memory(&zone, 2048).expect("host");
    let err = env.fly.start_machine(APP, &machine.id).expect_err("409");
    assert_eq!(err.http_status(), Some(409));
    assert_eq!(
        err.message(),
        "aborted: could not reserve resource for machine: insufficient memory available to fulfill request"
    );
    assert!(err.is_capacity());
    // Room again: start works; then an update to a bigger guest does not fit.
    env.admin().set_host_memory(&zone, 6144).expect("host");
    env.fly.start_machine(APP, &machine.id).expect("start");
    wait_started(&env, &machine.id);
    let mut config = machine.config.clone().expect("config");
    config.guest = Some(GuestConfig {
        cpu_kind: Some("shared".into()),
        cpus: 4,
        memory_mb: 8192,
        ..Default::default()
    });
    let err = env
        .fly
        .update_machine(
            APP,
            &machine.id,
            &UpdateMachineRequest {
                config,
                ..Default::default()
            },
        )
        .expect_err("409");
    assert!(err.is_capacity());
}

#[test]
fn exhausted_regions_fail_volume_create_and_machine_create_falls_back_along_the_list() {
    let env = start();
    env.admin().set_region_memory("dfw", 0).expect("region");
    let err = env
        .fly
        .create_volume(
            APP,
            &CreateVolumeRequest {
                name: "v".into(),
                region: "dfw".into(),
                size_gb: 10,
                compute: Some(GuestConfig {
                    cpu_kind: Some("shared".into()),
                    cpus: 2,
                    memory_mb: 4096,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .expect_err("full");
    assert_eq!(err.http_status(), Some(412));
    assert!(
        err.is_capacity(),
        "createVolumeWithFallback moves on to the next region on this error"
    );
    let yyz = create_volume(&env, "v", "yyz");
    assert_eq!(yyz.region, "yyz");
    let machine = env
        .fly
        .create_machine(
            APP,
            &CreateMachineRequest {
                config: machine_config(None, "r"),
                region: Some("dfw,yyz".into()),
                ..Default::default()
            },
        )
        .expect("placed in the next region");
    assert_eq!(machine.region, "yyz");
    let err = env
        .fly
        .create_machine(
            APP,
            &CreateMachineRequest {
                config: machine_config(None, "r"),
                region: Some("dfw".into()),
                ..Default::default()
            },
        )
        .expect_err("full region");
    assert!(err.is_capacity());
    assert_eq!(err.fly_status(), Some("insufficient_capacity"));
}
