//! Crash recovery for the proxy is bounded per user: one recovery per window, everybody else is
//! answered at once without a Fly call or the lease.

use super::*;

#[test]
fn a_crashed_machine_is_restarted_once_per_window_and_other_callers_are_answered_at_once() {
    let world = World::new();
    let running = world.running();
    let machine = running.fly_machine_id.clone().expect("machine");
    world
        .fly
        .set_machine_state(APP, &machine, MachineState::Stopped);
    world.fly.clear_calls();
    world.clock.advance(Duration::from_secs(60));

    let first = world
        .instances()
        .recover_route(USER, &machine)
        .expect("recover");
    assert!(first.restarted, "the stopped machine was started");
    assert_eq!(world.machine_state(), MachineState::Started);
    let fly_calls = world.fly.calls().len();
    assert!(fly_calls > 0);

    // The user's agent keeps answering 502: within the window nothing more runs.
    world.clock.advance(Duration::from_secs(5));
    world
        .fly
        .set_machine_state(APP, &machine, MachineState::Stopped);
    for _ in 0..50 {
        let again = world
            .instances()
            .recover_route(USER, &machine)
            .expect("answered");
        assert!(!again.restarted);
        assert_eq!(again.route.machine_id, machine);
    }
    assert_eq!(world.fly.calls().len(), fly_calls, "no Fly call, no start");
    assert_eq!(world.record().lease, None, "the lease was never taken");

    // The next window may recover again.
    world.clock.advance(RECOVERY_WINDOW);
    assert!(
        world
            .instances()
            .recover_route(USER, &machine)
            .expect("recover")
            .restarted
    );
}

#[test]
fn recovery_is_refused_when_there_is_nothing_running_to_recover() {
    let world = World::new();
    assert!(matches!(
        world.instances().recover_route(USER, "m"),
        Err(LifecycleError::NotProvisioned)
    ));
    world.provision();
    assert!(matches!(
        world.instances().recover_route(USER, "m"),
        Err(LifecycleError::NotRunning)
    ));
}
