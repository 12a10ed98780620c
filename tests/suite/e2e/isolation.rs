//! Tenancy: two users never reach, see or share each other's machine, volume or Fly app.

use anyhow::ensure;
use reqwest::Method;

use super::system::System;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_never_see_each_others_machine() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let (alice, bob) = ("alice@example.com", "bob@example.com");
    for user in [alice, bob] {
        sys.provision(user).await?;
        sys.start(user).await?;
    }
    let a = sys.status(alice).await?;
    let b = sys.status(bob).await?;
    for field in ["sandboxId", "flyMachineId", "flyVolumeId", "flyAppName"] {
        ensure!(
            a[field].is_string() && a[field] != b[field],
            "{field} must differ: {a} / {b}"
        );
    }
    let a_machine = a["flyMachineId"].as_str().unwrap_or_default();
    let b_machine = b["flyMachineId"].as_str().unwrap_or_default();

    // Each user's traffic lands on their own machine, many times over.
    for round in 0..5 {
        let echo = sys
            .send(sys.as_user(alice, Method::GET, &format!("/r{round}"))?)
            .await?
            .expect_echo(200)?;
        ensure!(
            echo.machine_id == a_machine,
            "alice served by {}",
            echo.machine_id
        );
        let echo = sys
            .send(sys.as_user(bob, Method::GET, &format!("/r{round}"))?)
            .await?
            .expect_echo(200)?;
        ensure!(
            echo.machine_id == b_machine,
            "bob served by {}",
            echo.machine_id
        );
    }

    // Trying to steer the proxy with Fly's own routing headers does not work: the router sets the
    // instance itself.
    let echo = sys
        .send(
            sys.as_user(alice, Method::GET, "/steer")?
                .header("fly-force-instance-id", b_machine)
                .header("fly-prefer-instance-id", b_machine),
        )
        .await?
        .expect_echo(200)?;
    ensure!(
        echo.machine_id == a_machine,
        "alice steered onto {}",
        echo.machine_id
    );

    // Files are per volume.
    sys.write_volume_file(alice, "secret.txt", "alice only")
        .await?;
    ensure!(
        sys.read_volume_file(bob, "secret.txt").await?.is_none(),
        "bob sees alice's file"
    );

    // Gateway tokens differ, and each machine accepts only its own.
    let a_token = sys.expected_gateway_token(alice);
    let b_token = sys.expected_gateway_token(bob);
    ensure!(a_token != b_token, "gateway tokens must differ");
    ensure!(
        !sys.gateway_websocket_accepts(bob, &a_token).await?,
        "bob's gateway accepts alice's token"
    );
    ensure!(
        sys.gateway_websocket_accepts(bob, &b_token).await?,
        "bob's gateway accepts bob's token"
    );

    // Destroying one leaves the other untouched.
    sys.destroy(alice).await?;
    sys.settle_destroy(alice).await?;
    let b_after = sys.status(bob).await?;
    ensure!(
        b_after["status"] == "running" && b_after["flyMachineId"] == b_machine,
        "{b_after}"
    );
    sys.send(sys.as_user(bob, Method::GET, "/still")?)
        .await?
        .expect_echo(200)?;
    Ok(())
}
