//! Fault injection, rate limits, lost resources, chaos, persistence and the admin API over HTTP.

use std::time::{Duration, Instant};

use kiloclaw_core::fly::{
    FlyApi, FlyErrorKind, HttpTransport, MachineListFilter, MachineState, TransportErrorKind,
};
use kiloclaw_flysim::{ChaosProfile, FaultEffect, FaultRule, SimConfig};

use crate::support::*;

#[test]
fn injected_errors_apply_the_given_number_of_times() {
    let env = start();
    env.admin()
        .add_fault(FaultRule::error("list_machines", 503).times(2));
    for _ in 0..2 {
        let err = env
            .fly
            .list_machines(APP, &MachineListFilter::default())
            .expect_err("503");
        assert_eq!(err.http_status(), Some(503));
        assert!(err.is_transient() && !err.is_not_found());
    }
    env.fly
        .list_machines(APP, &MachineListFilter::default())
        .expect("third call succeeds");
    let log = env.admin().requests();
    assert_eq!(
        log.iter()
            .filter(|r| r.operation == "list_machines")
            .count(),
        3
    );
    assert_eq!(log.iter().filter(|r| r.fault.is_some()).count(), 2);
}

#[test]
fn an_error_after_the_effect_leaves_the_machine_created() {
    let env = start();
    env.admin().add_fault(
        FaultRule::error("create_machine", 500)
            .times(1)
            .after_effect(),
    );
    let attempt = env.fly.create_machine(
        APP,
        &kiloclaw_core::fly::CreateMachineRequest {
            config: machine_config(None, "ghost"),
            ..Default::default()
        },
    );
    assert!(attempt.expect_err("500").is_transient());
    let found = env
        .fly
        .list_machines(
            APP,
            &MachineListFilter::metadata("kiloclaw_user_id", "ghost"),
        )
        .expect("list");
    assert_eq!(
        found.len(),
        1,
        "the machine exists although the call failed"
    );
}

#[test]
fn capacity_latency_and_timeout_faults() {
    let env = start();
    let machine = started_machine(&env, None, "f");
    stop_and_wait(&env, &machine.id);
    env.admin().add_fault(
        FaultRule::new("start_machine", FaultEffect::Capacity)
            .for_machine(&machine.id)
            .times(1),
    );
    assert!(
        env.fly
            .start_machine(APP, &machine.id)
            .expect_err("capacity")
            .is_capacity()
    );

    env.admin()
        .add_fault(FaultRule::new("get_machine", FaultEffect::Latency { ms: 300 }).times(1));
    let began = Instant::now();
    env.fly
        .get_machine(APP, &machine.id)
        .expect("slow but fine");
    assert!(began.elapsed() >= Duration::from_millis(300));

    env.admin()
        .add_fault(FaultRule::new("get_machine", FaultEffect::Timeout { ms: 3_000 }).times(1));
    let mut request = env.fly.requests().get_machine(APP, &machine.id);
    request.timeout = Duration::from_millis(300);
    let err = env
        .fly
        .transport()
        .send(request)
        .expect_err("client gives up");
    assert_eq!(err.kind, TransportErrorKind::Timeout);
}

#[test]
fn rate_limits_follow_flys_documented_numbers() {
    let env = start();
    let machine = started_machine(&env, None, "rl");
    env.admin().set_rate_limits(true);
    // Actions: burst of 3 per machine, then 429.
    let results: Vec<_> = (0..4)
        .map(|_| env.fly.stop_machine(APP, &machine.id))
        .collect();
    assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
    let limited = results[3].as_ref().expect_err("4th is limited");
    assert!(limited.is_rate_limited() && limited.is_transient());
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(1)));
    // Another machine has its own bucket.
    let other = create_machine(&env, None, "rl2");
    env.fly.stop_machine(APP, &other.id).expect("own bucket");
    // Gets: burst of 10.
    let gets: Vec<_> = (0..11)
        .map(|_| env.fly.get_machine(APP, &machine.id))
        .collect();
    assert!(gets[..10].iter().all(Result::is_ok));
    assert_eq!(
        gets[10].as_ref().expect_err("11th").kind(),
        FlyErrorKind::RateLimited
    );
    // Tokens refill at the sustained rate.
    std::thread::sleep(Duration::from_millis(1100));
    env.fly.stop_machine(APP, &machine.id).expect("refilled");
    env.admin().set_rate_limits(false);
    for _ in 0..5 {
        env.fly
            .get_machine(APP, &machine.id)
            .expect("unlimited when off");
    }
}

#[test]
fn lost_machines_and_volumes_answer_404_and_exits_stop_machines() {
    let env = start();
    let volume = create_volume(&env, "lost", "dfw");
    let machine = started_machine(&env, Some(&volume.id), "lost");
    env.admin().exit_machine(&machine.id, 1).expect("exit");
    assert_eq!(state_of(&env, &machine.id), MachineState::Stopped);
    let latest = env.fly.get_machine(APP, &machine.id).expect("get");
    assert_eq!(
        (
            latest.events[0].kind.as_str(),
            latest.events[0].source.as_str()
        ),
        ("exit", "flyd")
    );
    env.admin().lose_volume(&volume.id).expect("lose volume");
    assert!(
        env.fly
            .get_volume(APP, &volume.id)
            .expect_err("404")
            .is_not_found()
    );
    assert!(!env.admin().volume_dir(&volume.id).exists());
    env.admin().lose_machine(&machine.id).expect("lose machine");
    let err = env.fly.get_machine(APP, &machine.id).expect_err("404");
    assert!(err.is_not_found());
    assert!(
        env.fly
            .list_machines(APP, &MachineListFilter::default())
            .expect("list")
            .is_empty()
    );
}

#[test]
fn seeded_chaos_is_reproducible() {
    let run = |seed: u64| -> Vec<bool> {
        let env = start_with(SimConfig {
            chaos: Some(ChaosProfile {
                seed,
                error_rate: 0.4,
                statuses: vec![500, 503],
                after_effect_rate: 0.0,
                latency_rate: 0.0,
                max_latency_ms: 0,
            }),
            ..config()
        });
        (0..40).map(|_| env.fly.list_volumes(APP).is_ok()).collect()
    };
    let first = run(7);
    assert_eq!(first, run(7), "same seed, same faults");
    let failures = first.iter().filter(|ok| !**ok).count();
    assert!((5..=30).contains(&failures), "about 40% fail: {failures}");
    assert_ne!(first, run(8));
}

#[test]
fn admin_api_over_http_lists_everything_and_manages_faults() {
    let env = start();
    let volume = create_volume(&env, "adm", "dfw");
    let machine = create_machine(&env, Some(&volume.id), "adm");
    let state: serde_json::Value = env
        .http
        .get(env.url("/_sim/state"))
        .send()
        .expect("send")
        .json()
        .expect("json");
    assert_eq!(state["machines"][0]["id"], machine.id.as_str());
    assert_eq!(state["volumes"][0]["id"], volume.id.as_str());
    assert_eq!(state["apps"][0]["name"], APP);
    assert!(state["hosts"].as_array().is_some_and(|h| h.len() == 16));
    let added: serde_json::Value = env
        .http
        .post(env.url("/_sim/faults"))
        .json(&serde_json::json!({"operation": "get_volume", "effect": {"kind": "error", "status": 502}, "times": 1}))
        .send()
        .expect("send")
        .json()
        .expect("json");
    assert!(added["id"].as_u64().is_some());
    assert_eq!(
        env.fly
            .get_volume(APP, &volume.id)
            .expect_err("502")
            .http_status(),
        Some(502)
    );
    let response = env
        .http
        .put(env.url("/_sim/rate-limits"))
        .json(&serde_json::json!({"enabled": "yes"}))
        .send()
        .expect("send");
    assert_eq!(response.status(), 400, "bad admin input is a clear 400");
    let response = env
        .http
        .delete(env.url(&format!("/_sim/machines/{}", machine.id)))
        .send()
        .expect("send");
    assert_eq!(response.status(), 204);
    assert!(
        env.fly
            .get_machine(APP, &machine.id)
            .expect_err("lost")
            .is_not_found()
    );
    let log: serde_json::Value = env
        .http
        .get(env.url("/_sim/requests"))
        .send()
        .expect("send")
        .json()
        .expect("json");
    assert!(
        log.as_array()
            .is_some_and(|l| l.iter().any(|r| r["operation"] == "create_volume"))
    );
}

#[test]
fn state_and_volume_data_survive_a_restart_with_a_state_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SimConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..config()
    };
    let (machine_id, volume_id) = {
        let env = start_with(config.clone());
        let volume = create_volume(&env, "keep", "dfw");
        let machine = started_machine(&env, Some(&volume.id), "keep");
        std::fs::write(env.admin().volume_dir(&volume.id).join("f"), "kept").expect("write");
        env.fly.set_secret(APP, "K", "v").expect("secret");
        (machine.id, volume.id)
    };
    let env = start_with(config);
    assert_eq!(state_of(&env, &machine_id), MachineState::Started);
    assert_eq!(
        env.fly
            .get_volume(APP, &volume_id)
            .expect("volume")
            .attached_machine_id
            .as_deref(),
        Some(machine_id.as_str())
    );
    assert_eq!(
        std::fs::read_to_string(env.admin().volume_dir(&volume_id).join("f")).expect("data"),
        "kept"
    );
    assert_eq!(env.fly.list_secrets(APP).expect("secrets").len(), 1);
}
