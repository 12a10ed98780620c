//! Machines: every endpoint, every lifecycle transition, wait semantics, metadata filters, validation.

use std::time::{Duration, Instant};

use kiloclaw_core::fly::{
    CreateMachineRequest, ExecRequest, FlyApi, FlyErrorKind, HttpMethod, MachineListFilter,
    MachineState, UpdateMachineRequest, WaitRequest, WaitState,
};
use kiloclaw_flysim::Delays;

use crate::support::*;

#[test]
fn every_transition_from_create_to_destroyed_is_observable() {
    let env = start();
    let machine = create_machine(&env, None, "u1");
    assert_eq!(
        machine.state,
        MachineState::Created,
        "create answers before booting"
    );
    assert_eq!(machine.instance_id.len(), 26, "instance_id is a ULID");
    assert_eq!(machine.id.len(), 14);
    wait_started(&env, &machine.id);
    stop_and_wait(&env, &machine.id);
    env.fly
        .destroy_machine(APP, &machine.id, false)
        .expect("stopped machines destroy without force");
    env.fly
        .wait_machine(
            APP,
            &machine.id,
            &WaitRequest::new(WaitState::Destroyed, 10),
        )
        .expect("destroyed");
    let machine = env
        .fly
        .get_machine(APP, &machine.id)
        .expect("destroyed machines stay visible for a while");
    assert_eq!(machine.state, MachineState::Destroyed);
    let mut seen: Vec<String> = machine
        .events
        .iter()
        .rev()
        .map(|e| e.status.clone())
        .collect();
    seen.dedup();
    assert_eq!(
        seen,
        [
            "created",
            "starting",
            "started",
            "stopping",
            "stopped",
            "destroying",
            "destroyed"
        ]
    );
}

#[test]
fn transitional_states_are_visible_with_slow_delays() {
    let env = start();
    env.admin().set_delays(Delays {
        create: Duration::from_millis(300),
        boot: Duration::from_millis(300),
        stop: Duration::from_millis(300),
        ..Delays::default()
    });
    let machine = create_machine(&env, None, "slow");
    assert_eq!(state_of(&env, &machine.id), MachineState::Created);
    eventually("starting", || {
        state_of(&env, &machine.id) == MachineState::Starting
    });
    eventually("started", || {
        state_of(&env, &machine.id) == MachineState::Started
    });
    env.fly.stop_machine(APP, &machine.id).expect("stop");
    assert_eq!(state_of(&env, &machine.id), MachineState::Stopping);
    eventually("stopped", || {
        state_of(&env, &machine.id) == MachineState::Stopped
    });
}

#[test]
fn skip_launch_stays_created_until_started() {
    let env = start();
    let machine = env
        .fly
        .create_machine(
            APP,
            &CreateMachineRequest {
                config: machine_config(None, "u"),
                skip_launch: Some(true),
                ..Default::default()
            },
        )
        .expect("created");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(state_of(&env, &machine.id), MachineState::Created);
    assert!(
        !machine.name.is_empty(),
        "a name is generated when none is given"
    );
    let started = env.fly.start_machine(APP, &machine.id).expect("start");
    assert_eq!(started.previous_state, Some(MachineState::Created));
    wait_started(&env, &machine.id);
    let after = env.fly.get_machine(APP, &machine.id).expect("get");
    assert_ne!(
        after.instance_id, machine.instance_id,
        "every start issues a new instance_id"
    );
}

#[test]
fn wait_stopped_requires_instance_id_and_times_out_with_408() {
    let env = start();
    let machine = started_machine(&env, None, "w");
    // The client refuses before sending; the server says the same thing to a raw request.
    let refused = env
        .fly
        .wait_machine(APP, &machine.id, &WaitRequest::new(WaitState::Stopped, 5))
        .expect_err("refused");
    assert_eq!(refused.kind(), FlyErrorKind::InvalidRequest);
    let mut raw = env.fly.requests().get_machine(APP, &machine.id);
    raw.url = format!("{}/wait?state=stopped&timeout=5", raw.url);
    let response =
        kiloclaw_core::fly::HttpTransport::send(env.fly.transport(), raw).expect("answer");
    assert_eq!(response.status, 400);
    assert!(
        String::from_utf8_lossy(&response.body)
            .contains("instance_id required when waiting for stopped machine")
    );

    // Out-of-range timeouts are rejected by the server.
    let mut raw = env.fly.requests().get_machine(APP, &machine.id);
    raw.url = format!("{}/wait?state=started&timeout=61", raw.url);
    let response =
        kiloclaw_core::fly::HttpTransport::send(env.fly.transport(), raw).expect("answer");
    assert_eq!(response.status, 400);
    assert!(String::from_utf8_lossy(&response.body).contains("invalid_argument"));

    // Waiting for a state the machine is not heading to answers 408 after the timeout.
    let began = Instant::now();
    let err = env
        .fly
        .wait_machine(
            APP,
            &machine.id,
            &WaitRequest::new(WaitState::Stopped, 1).with_instance_id(&machine.instance_id),
        )
        .expect_err("408");
    assert!(
        began.elapsed() >= Duration::from_millis(900),
        "waits the whole timeout"
    );
    assert_eq!(err.http_status(), Some(408));
    assert_eq!(
        err.message(),
        "machine failed to reach desired state, stopped, currently started"
    );
    assert!(err.is_transient() && !err.is_not_found());

    // A stale instance_id is refused rather than waited on.
    let stale = env
        .fly
        .wait_machine(
            APP,
            &machine.id,
            &WaitRequest::new(WaitState::Stopped, 1).with_instance_id("01HSTALESTALESTALESTALESTA"),
        )
        .expect_err("stale");
    assert_eq!(stale.http_status(), Some(400));

    // settled matches any non-transitional state; the response names it.
    let settled = env
        .fly
        .wait_machine(APP, &machine.id, &WaitRequest::new(WaitState::Settled, 5))
        .expect("settled");
    assert_eq!(settled.state, Some(MachineState::Started));
    assert!(settled.ok);
}

#[test]
fn wait_returns_as_soon_as_the_state_is_reached() {
    let env = start();
    env.admin().set_delays(Delays {
        boot: Duration::from_millis(400),
        ..env.admin().delays()
    });
    let machine = create_machine(&env, None, "fast");
    let began = Instant::now();
    let reached = env
        .fly
        .wait_machine(APP, &machine.id, &WaitRequest::new(WaitState::Started, 30))
        .expect("started");
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!(reached.state, Some(MachineState::Started));
    assert!(reached.version.is_some());
}

#[test]
fn update_replaces_config_with_a_new_instance_and_reboots_a_started_machine() {
    let env = start();
    env.admin().set_delays(Delays {
        replace: Duration::from_millis(300),
        ..env.admin().delays()
    });
    let machine = started_machine(&env, None, "up");
    let mut config = machine.config.clone().expect("config");
    config.env.insert("NEW_VAR".to_owned(), "1".to_owned());
    let updated = env
        .fly
        .update_machine(
            APP,
            &machine.id,
            &UpdateMachineRequest {
                config: config.clone(),
                ..Default::default()
            },
        )
        .expect("updated");
    assert_eq!(updated.state, MachineState::Replacing);
    assert_ne!(updated.instance_id, machine.instance_id);
    // A second update while replacing is Fly's concurrent-update conflict, not capacity.
    let conflict = env
        .fly
        .update_machine(
            APP,
            &machine.id,
            &UpdateMachineRequest {
                config: config.clone(),
                ..Default::default()
            },
        )
        .expect_err("409");
    assert_eq!(conflict.http_status(), Some(409));
    assert!(!conflict.is_capacity());
    let start_during_replace = env.fly.start_machine(APP, &machine.id).expect_err("412");
    assert_eq!(start_during_replace.http_status(), Some(412));
    assert_eq!(
        start_during_replace.message(),
        "unable to start machine from current state"
    );
    wait_started(&env, &machine.id);
    let after = env.fly.get_machine(APP, &machine.id).expect("get");
    assert_eq!(
        after
            .config
            .expect("config")
            .env
            .get("NEW_VAR")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(after.instance_id, updated.instance_id);
    // current_version guards against lost updates.
    let stale = env
        .fly
        .update_machine(
            APP,
            &machine.id,
            &UpdateMachineRequest {
                config,
                current_version: Some(machine.instance_id.clone()),
                ..Default::default()
            },
        )
        .expect_err("stale version");
    assert_eq!(stale.kind(), FlyErrorKind::Conflict);
}

#[test]
fn update_of_a_stopped_machine_leaves_it_stopped_unless_configured() {
    let env = start();
    let machine = started_machine(&env, None, "st");
    stop_and_wait(&env, &machine.id);
    let config = machine.config.clone().expect("config");
    let updated = env
        .fly
        .update_machine(
            APP,
            &machine.id,
            &UpdateMachineRequest {
                config: config.clone(),
                ..Default::default()
            },
        )
        .expect("updated");
    env.fly
        .wait_machine(
            APP,
            &machine.id,
            &WaitRequest::new(WaitState::Stopped, 10).with_instance_id(&updated.instance_id),
        )
        .expect("stays stopped (Fly 2026 behaviour)");
    env.admin().set_update_starts_stopped(true);
    env.fly
        .update_machine(
            APP,
            &machine.id,
            &UpdateMachineRequest {
                config,
                ..Default::default()
            },
        )
        .expect("updated");
    wait_started(&env, &machine.id);
}

#[test]
fn destroy_needs_force_for_a_running_machine_and_list_hides_destroyed() {
    let env = start();
    let machine = started_machine(&env, None, "d");
    let refused = env
        .fly
        .destroy_machine(APP, &machine.id, false)
        .expect_err("412");
    assert_eq!(refused.http_status(), Some(412));
    env.fly
        .destroy_machine(APP, &machine.id, true)
        .expect("forced");
    env.fly
        .wait_machine(
            APP,
            &machine.id,
            &WaitRequest::new(WaitState::Destroyed, 10),
        )
        .expect("destroyed");
    assert!(
        env.fly
            .list_machines(APP, &MachineListFilter::default())
            .expect("list")
            .is_empty()
    );
    let all = env
        .fly
        .list_machines(
            APP,
            &MachineListFilter {
                include_deleted: true,
                ..Default::default()
            },
        )
        .expect("list");
    assert_eq!(all.len(), 1);
    let again = env
        .fly
        .destroy_machine(APP, &machine.id, true)
        .expect_err("already gone");
    assert!(again.is_not_found());
    let start = env.fly.start_machine(APP, &machine.id).expect_err("gone");
    assert!(start.is_not_found());
}

#[test]
fn list_filters_by_metadata_all_pairs_must_match() {
    let env = start();
    for user in ["alice", "bob", "alice"] {
        create_machine(&env, None, user);
    }
    let mut special = machine_config(None, "carol");
    special
        .metadata
        .insert("kiloclaw_sandbox_id".to_owned(), "sb-1".to_owned());
    env.fly
        .create_machine(
            APP,
            &CreateMachineRequest {
                config: special,
                ..Default::default()
            },
        )
        .expect("created");
    let alice = env
        .fly
        .list_machines(
            APP,
            &MachineListFilter::metadata("kiloclaw_user_id", "alice"),
        )
        .expect("list");
    assert_eq!(alice.len(), 2);
    assert!(
        alice
            .iter()
            .all(|m| m.metadata_value("kiloclaw_user_id") == Some("alice"))
    );
    let mut both = MachineListFilter::metadata("kiloclaw_user_id", "carol");
    both.metadata
        .insert("kiloclaw_sandbox_id".to_owned(), "sb-1".to_owned());
    assert_eq!(env.fly.list_machines(APP, &both).expect("list").len(), 1);
    both.metadata
        .insert("kiloclaw_sandbox_id".to_owned(), "other".to_owned());
    assert!(env.fly.list_machines(APP, &both).expect("list").is_empty());
    assert!(
        env.fly
            .list_machines(
                APP,
                &MachineListFilter::metadata("kiloclaw_user_id", "nobody")
            )
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        env.fly
            .list_machines(APP, &MachineListFilter::default())
            .expect("list")
            .len(),
        4
    );
}

#[test]
fn exec_runs_on_started_machines_only_and_reports_exit_codes() {
    let env = start();
    let volume = create_volume(&env, "exec_vol", "dfw");
    let machine = started_machine(&env, Some(&volume.id), "ex");
    let echo = env
        .fly
        .exec_machine(
            APP,
            &machine.id,
            &ExecRequest {
                command: vec!["echo".into(), "hi".into()],
                timeout: Some(60),
                stdin: None,
            },
        )
        .expect("exec");
    assert_eq!((echo.stdout.as_str(), echo.exit_code), ("hi\n", 0));
    let pairing = env
        .fly
        .exec_machine(
            APP,
            &machine.id,
            &ExecRequest {
                command: [
                    "/usr/bin/env",
                    "HOME=/root",
                    "node",
                    "/usr/local/bin/openclaw-pairing-list.js",
                ]
                .map(String::from)
                .to_vec(),
                timeout: Some(60),
                stdin: None,
            },
        )
        .expect("exec");
    assert_eq!(pairing.stdout.trim(), "{\"requests\":[]}");
    std::fs::write(
        env.admin().volume_dir(&volume.id).join("note.txt"),
        "on the volume",
    )
    .expect("write");
    let cat = env
        .fly
        .exec_machine(
            APP,
            &machine.id,
            &ExecRequest {
                command: vec!["cat".into(), "/root/note.txt".into()],
                ..Default::default()
            },
        )
        .expect("exec");
    assert_eq!(cat.stdout, "on the volume");
    let missing = env
        .fly
        .exec_machine(
            APP,
            &machine.id,
            &ExecRequest {
                command: vec!["nope".into()],
                ..Default::default()
            },
        )
        .expect("200 even when the command fails");
    assert_eq!(missing.exit_code, 127);
    stop_and_wait(&env, &machine.id);
    let stopped = env
        .fly
        .exec_machine(
            APP,
            &machine.id,
            &ExecRequest {
                command: vec!["true".into()],
                ..Default::default()
            },
        )
        .expect_err("not started");
    assert_eq!(stopped.http_status(), Some(412));
}

#[test]
fn unknown_machines_and_apps_are_404_and_bad_bodies_400() {
    let env = start();
    let err = env.fly.get_machine(APP, "0000deadbeef00").expect_err("404");
    assert!(err.is_not_found());
    assert_eq!(err.message(), "machine not found");
    let err = env
        .fly
        .get_machine("no-such-app", "0000deadbeef00")
        .expect_err("404");
    assert_eq!(err.message(), "app not found");
    let machine = create_machine(&env, None, "b");
    let mut raw = env.fly.requests().stop_machine(APP, &machine.id);
    raw.body = Some(b"[]".to_vec());
    let response =
        kiloclaw_core::fly::HttpTransport::send(env.fly.transport(), raw).expect("answer");
    assert_eq!(response.status, 400);
    assert!(String::from_utf8_lossy(&response.body).contains("cannot unmarshal array"));
    let mut raw = env.fly.requests().start_machine(APP, &machine.id);
    raw.method = HttpMethod::Post;
    raw.url = format!("{}/v1/apps/{APP}/machines", env.sim.api_url());
    raw.body = Some(b"{not json".to_vec());
    let response =
        kiloclaw_core::fly::HttpTransport::send(env.fly.transport(), raw).expect("answer");
    assert_eq!(response.status, 400);
    assert!(
        response
            .header("fly-request-id")
            .is_some_and(|id| id.len() > 27)
    );
}

#[test]
fn min_secrets_version_gates_create_until_the_secret_exists() {
    let env = start();
    let request = CreateMachineRequest {
        config: machine_config(None, "s"),
        min_secrets_version: Some(1),
        ..Default::default()
    };
    let early = env.fly.create_machine(APP, &request).expect_err("412");
    assert_eq!(early.http_status(), Some(412));
    assert!(!early.is_capacity(), "a precondition, not capacity");
    let version = env
        .fly
        .set_secret(APP, "KILOCLAW_ENV_KEY", "k")
        .expect("set")
        .version;
    assert_eq!(version, 1);
    env.fly
        .create_machine(APP, &request)
        .expect("now available");
}

#[test]
fn auth_accepts_bearer_and_flyv1_and_rejects_others() {
    let env = start();
    let wrong = client_for(env.sim.api_url(), "nope");
    let err = wrong
        .list_machines(APP, &MachineListFilter::default())
        .expect_err("401");
    assert_eq!(err.http_status(), Some(401));
    assert_eq!(err.message(), "invalid token");
    let macaroon = client_for(env.sim.api_url(), &format!("FlyV1 {TOKEN}"));
    macaroon
        .list_machines(APP, &MachineListFilter::default())
        .expect("FlyV1 accepted");
    let response = env
        .http
        .get(env.url(&format!("/v1/apps/{APP}/machines")))
        .header("authorization", format!("Bearer FlyV1 {TOKEN}"))
        .send()
        .expect("send");
    assert_eq!(response.status(), 200);
    let response = env
        .http
        .get(env.url(&format!("/v1/apps/{APP}/machines")))
        .send()
        .expect("send");
    assert_eq!(response.status(), 401);
}
