//! Crash recovery on the proxy path: the user's machine vanished behind the control plane's back.

use anyhow::ensure;
use reqwest::Method;

use super::system::System;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_machine_is_replaced_on_the_next_request() -> anyhow::Result<()> {
    let sys = System::start().await?;
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
