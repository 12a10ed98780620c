//! Crash recovery on the proxy path: the user's machine vanished behind the control plane's back.

use anyhow::ensure;
use reqwest::Method;

use super::system::System;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_machine_is_replaced_on_the_next_request() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-crash";
    sys.provision(user).await?;
    sys.start(user).await?;
    let status = sys.status(user).await?;
    let old_machine = status["flyMachineId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let volume = status["flyVolumeId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    sys.write_volume_file(user, "survivor.txt", "still here")
        .await?;

    // Fly loses the machine (host failure); the store still says running.
    sys.sim().destroy_machine_out_of_band(&old_machine).await?;

    // The next user request fails to reach it, the router restarts the instance and retries once.
    let echo = sys
        .send(sys.as_user(user, Method::GET, "/after-crash?q=1")?)
        .await?
        .expect_echo(200)?;
    ensure!(
        echo.machine_id != old_machine,
        "served by the vanished machine?"
    );
    ensure!(
        echo.path == "/after-crash" && echo.query == "q=1",
        "{echo:?}"
    );

    let status = sys.status(user).await?;
    ensure!(status["status"] == "running", "{status}");
    ensure!(
        status["flyMachineId"] == echo.machine_id.as_str(),
        "the new machine is recorded: {status}"
    );
    ensure!(
        status["flyVolumeId"] == volume.as_str(),
        "the volume is kept: {status}"
    );
    let content = sys.read_volume_file(user, "survivor.txt").await?;
    ensure!(
        content.as_deref() == Some("still here"),
        "volume data after recovery: {content:?}"
    );
    ensure!(
        sys.sim().live_machines().await?.len() == 1,
        "exactly one machine after recovery"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_stopped_behind_our_back_is_started_by_the_next_request() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-crash-stopped";
    sys.provision(user).await?;
    sys.start(user).await?;
    let machine = sys.status_field(user, "flyMachineId").await?;
    // The gateway process exits; Fly Proxy will not autostart it (autostart is off) and answers
    // 503, but the store says running, so the router restarts the instance and retries once.
    sys.sim().stop_machine_out_of_band(&machine).await?;
    let echo = sys
        .send(sys.as_user(user, Method::GET, "/wake?x=1")?)
        .await?
        .expect_echo(200)?;
    ensure!(
        echo.machine_id == machine,
        "the same machine was started again, not replaced"
    );
    ensure!(echo.path == "/wake" && echo.query == "x=1", "{echo:?}");
    let live = sys.sim().live_machines().await?;
    ensure!(
        live.len() == 1 && live[0].state == "started",
        "one started machine: {live:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_gateway_answers_502_cannot_tie_up_the_host() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-502-storm";
    sys.provision(user).await?;
    sys.start(user).await?;
    let before = machine_calls(&sys);
    // The user's own agent makes its gateway answer 502 to everything, 40 times at once.
    let started = std::time::Instant::now();
    let replies = futures_util::future::join_all((0..40).map(|_| async {
        sys.send(sys.as_user(user, Method::GET, "/_gateway/status/502")?)
            .await
    }))
    .await;
    for reply in replies {
        let reply = reply?;
        ensure!(
            reply.status == 502,
            "the machine's own answer: {} {}",
            reply.status,
            reply.text
        );
    }
    ensure!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "answered in {:?}",
        started.elapsed()
    );
    let fly_calls = machine_calls(&sys) - before;
    ensure!(
        fly_calls <= 4,
        "one recovery in the window, not one per response: {fly_calls} machine calls: {:?}",
        sys.sim()
            .requests()
            .iter()
            .rev()
            .take(6)
            .map(|r| format!("{} {} {} {}", r.seq, r.operation, r.path, r.status))
            .collect::<Vec<_>>()
    );
    // Other users are unaffected.
    sys.provision("user-bystander").await?;
    sys.start("user-bystander").await?;
    sys.send(sys.as_user("user-bystander", Method::GET, "/fine")?)
        .await?
        .expect_echo(200)?;
    Ok(())
}

/// Machines API calls that start or inspect a machine so far.
fn machine_calls(sys: &System) -> usize {
    [
        "get_machine",
        "update_machine",
        "start_machine",
        "wait_machine",
    ]
    .iter()
    .map(|operation| sys.sim().count_requests(operation))
    .sum()
}
