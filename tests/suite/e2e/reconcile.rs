//! The reconciler repairing each drift rule of original-behaviour.md §5, driven by explicit
//! reconcile runs (never by sleeping through the cadence), with Fly disturbed out of band
//! through the simulator's admin API.

use anyhow::ensure;
use reqwest::Method;
use serde_json::json;

use super::system::{FlyFault, System};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_destroy_is_finished_by_the_reconciler() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-rc-destroy";
    sys.provision(user).await?;
    sys.start(user).await?;
    let status = sys.status(user).await?;
    let machine = status["flyMachineId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let volume = status["flyVolumeId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    sys.sim()
        .inject(FlyFault::FailMachineDelete { status: 503 })
        .await?;
    sys.destroy(user).await?;
    ensure!(
        sys.status(user).await?["status"] == "destroying",
        "destroy left pending"
    );
    // While Fly keeps failing, a reconcile changes nothing and loses nothing.
    sys.reconcile(user).await?;
    ensure!(
        sys.status(user).await?["status"] == "destroying",
        "still pending while Fly fails"
    );
    ensure!(
        sys.sim().volume(&volume).await?.is_some(),
        "no volume deleted before the machine"
    );

    sys.sim().clear_faults().await?;
    sys.settle_destroy(user).await?;
    let status = sys.status(user).await?;
    ensure!(
        status["status"].is_null() && status["userId"].is_null(),
        "destroy finished: {status}"
    );
    ensure!(
        sys.sim()
            .machine(&machine)
            .await?
            .is_none_or(|m| m.state == "destroyed"),
        "machine deleted"
    );
    ensure!(sys.sim().volume(&volume).await?.is_none(), "volume deleted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_volume_is_replaced() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-rc-volume";
    sys.provision(user).await?;
    let old_volume = sys.status_field(user, "flyVolumeId").await?;
    sys.sim().delete_volume_out_of_band(&old_volume).await?;

    sys.reconcile(user).await?;
    let status = sys.status(user).await?;
    let new_volume = status["flyVolumeId"].as_str().unwrap_or_default();
    ensure!(
        !new_volume.is_empty() && new_volume != old_volume,
        "a replacement volume: {status}"
    );
    ensure!(
        sys.sim().volume(new_volume).await?.is_some(),
        "the replacement exists in Fly"
    );
    ensure!(
        status["status"] == "provisioned",
        "status unchanged: {status}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_gone_from_fly_is_cleared() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-rc-gone";
    sys.provision(user).await?;
    sys.start(user).await?;
    let machine = sys.status_field(user, "flyMachineId").await?;
    sys.sim().destroy_machine_out_of_band(&machine).await?;

    sys.reconcile(user).await?;
    let status = sys.status(user).await?;
    ensure!(
        status["flyMachineId"].is_null(),
        "stale machine id cleared: {status}"
    );
    ensure!(status["status"] == "stopped", "marked stopped: {status}");
    ensure!(status["flyVolumeId"].is_string(), "volume kept: {status}");

    // The next start creates a fresh machine on the same volume.
    sys.start(user).await?;
    let status = sys.status(user).await?;
    ensure!(
        status["status"] == "running" && status["flyMachineId"] != machine.as_str(),
        "{status}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_fly_after_five_stopped_readings() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-rc-stopped";
    sys.provision(user).await?;
    sys.start(user).await?;
    let machine = sys.status_field(user, "flyMachineId").await?;
    sys.sim().stop_machine_out_of_band(&machine).await?;

    // The periodic check needs five sightings of "stopped" (a machine can be briefly stopped by
    // Fly). The outcome of each reconcile is read from its reply, not from a status read: a status
    // read does its own live check, which follows Fly at once.
    for reading in 1..=4 {
        let outcome = sys.reconcile(user).await?;
        ensure!(
            outcome["status"] == "running",
            "after reading {reading}: {outcome}"
        );
    }
    let outcome = sys.reconcile(user).await?;
    ensure!(
        outcome["status"] == "stopped",
        "after five readings: {outcome}"
    );
    let status = sys.status(user).await?;
    ensure!(status["status"] == "stopped", "persisted: {status}");
    ensure!(
        status["flyMachineId"] == machine.as_str(),
        "the machine is kept for the next start: {status}"
    );

    // The opposite drift: Fly says started while the store says stopped → running at once.
    sys.sim().start_machine_out_of_band(&machine).await?;
    let outcome = sys.reconcile(user).await?;
    ensure!(
        outcome["status"] == "running",
        "synced back to running: {outcome}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_mount_is_repaired() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-rc-mount";
    sys.provision(user).await?;
    sys.start(user).await?;
    let status = sys.status(user).await?;
    let machine = status["flyMachineId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let volume = status["flyVolumeId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    sys.sim()
        .set_mount_path_out_of_band(&machine, "/data")
        .await?;
    let drifted = sys
        .sim()
        .machine(&machine)
        .await?
        .ok_or_else(|| anyhow::anyhow!("machine"))?;
    ensure!(
        !drifted.mounts_volume_at_root(&volume),
        "the drift was applied"
    );

    sys.reconcile(user).await?;
    let repaired = sys
        .sim()
        .machine(&machine)
        .await?
        .ok_or_else(|| anyhow::anyhow!("machine"))?;
    ensure!(
        repaired.mounts_volume_at_root(&volume),
        "mount repaired: {:?}",
        repaired.mounts
    );
    ensure!(
        repaired.state == "started",
        "machine running again: {}",
        repaired.state
    );
    ensure!(
        sys.status(user).await?["status"] == "running",
        "status unchanged"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_state_is_recovered_from_fly_metadata() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-rc-metadata";
    sys.provision(user).await?;
    sys.start(user).await?;
    let status = sys.status(user).await?;
    let machine = status["flyMachineId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let volume = status["flyVolumeId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    sys.write_volume_file(user, "memory.md", "remember me")
        .await?;

    // The key-value store loses everything (a restore from an old backup, a wiped store); Fly
    // still runs the machine. The same simulator, a fresh host with an empty store.
    let sys = sys.restart_with_empty_store().await?;
    let status = sys.status(user).await?;
    ensure!(
        status["userId"].is_null(),
        "the store really is empty: {status}"
    );

    // Next.js provisions again (as it does on "Save"); the provision finds the machine and its
    // volume by Fly metadata and adopts both instead of creating a second volume or machine.
    sys.provision(user).await?;
    let status = sys.status(user).await?;
    ensure!(
        status["flyMachineId"] == machine.as_str(),
        "machine recovered: {status}"
    );
    ensure!(
        status["flyVolumeId"] == volume.as_str(),
        "the user's data volume is adopted, not replaced: {status}"
    );
    ensure!(status["status"] == "running", "{status}");
    // The reconciler then finds nothing to repair, and the user's data is served from the machine.
    sys.reconcile(user).await?;
    let status = sys.status(user).await?;
    ensure!(status["status"] == "running", "{status}");
    ensure!(
        sys.sim().live_machines().await?.len() == 1,
        "no duplicate machine"
    );
    let content = sys.read_volume_file(user, "memory.md").await?;
    ensure!(
        content.as_deref() == Some("remember me"),
        "data served from the original volume: {content:?}"
    );
    let on_disk = sys.sim().volume_file(&volume, "memory.md")?;
    ensure!(
        on_disk.as_deref() == Some("remember me"),
        "the file lives on the original volume: {on_disk:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_trigger_and_the_reconcile_route_run_the_reconciler() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    // Both entry points run and report success with nothing to do.
    sys.cron_tick().await?;
    let reply = sys
        .platform(Method::POST, "/api/platform/reconcile", Some(json!({})))
        .await?;
    let body = reply.expect(200)?;
    ensure!(body.is_object(), "reconcile summary: {body}");
    Ok(())
}
