//! The app on real Spin (the bundled 4.0.2 with the cron plugin), from the repository's own
//! `spin.toml`, against the Fly simulator: the README walk-through, a tick of the cron trigger, and
//! 20 concurrent starts for one user making exactly one machine — on Spin's SQLite key-value store
//! (one process) and on Redis over Spin's outbound Redis interface (two processes sharing it); and
//! the same scenario in our host with the store over its implementation of that interface. Also
//! sign-in on Spin: the browser flow against PostgreSQL (Spin's own `spin:postgres` interface), and
//! key-value access codes issued on one Spin process and redeemed on another.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kiloclaw_core::testing::NodeEnvelopes;
use reqwest::Method;
use serde_json::{Value, json};

use super::database::TestDatabase;
use super::signin;
use super::system::{SpinStore, System};

/// The cron expression ticks every minute; allow for Spin's start-up and a slow tick.
const CRON_WAIT: Duration = Duration::from_secs(100);

/// Concurrent `start` calls for one user.
const CONCURRENT_STARTS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_spin_with_sqlite() -> anyhow::Result<()> {
    let sys = System::boot_on_spin(SpinStore::Sqlite, 1).await?;
    walk_through(&sys, "spin-sqlite-user").await?;
    concurrent_starts_make_one_machine(&sys, "spin-sqlite-racer").await?;
    cron_ticks_the_reconciler(&sys).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_spin_with_outbound_redis_and_two_processes() -> anyhow::Result<()> {
    let sys = System::boot_on_spin(SpinStore::redis(), 2).await?;
    ensure!(sys.replicas() == 2, "two Spin processes");
    walk_through(&sys, "spin-redis-user").await?;
    concurrent_starts_make_one_machine(&sys, "spin-redis-racer").await?;
    cron_ticks_the_reconciler(&sys).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_spin_sign_in_against_postgres() -> anyhow::Result<()> {
    let db = TestDatabase::create("spin").await?;
    let sys = System::boot_on_spin_with(SpinStore::Sqlite, 1, db.variables(signin::TTL_S)).await?;
    signin::browser_flow(&sys, &db, "spin-browser").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_spin_local_access_codes_are_shared_by_two_processes() -> anyhow::Result<()> {
    let sys = System::boot_on_spin(SpinStore::redis(), 2).await?;
    let user = "spin-local-browser";
    sys.provision(user).await?;
    sys.start(user).await?;
    let issued = sys
        .send(
            sys.request_via(0, Method::POST, "/api/platform/access-code")
                .header("x-internal-api-key", sys.internal_key())
                .json(&json!({"userId": user})),
        )
        .await?
        .expect(201)?;
    let code = issued["code"].as_str().context("code")?;
    let redeem = |replica: usize| {
        sys.send(
            sys.request_via(replica, Method::POST, "/kilo-access-gateway")
                .form(&[("code", code), ("userId", user)]),
        )
    };
    let accepted = redeem(1).await?;
    ensure!(
        accepted.status == 200,
        "{} {}",
        accepted.status,
        accepted.text
    );
    let cookie = signin::session_cookie(&accepted, true)?;
    ensure!(redeem(0).await?.status == 401, "used on the other process");
    sys.send(signin::with_cookie(
        &sys,
        Method::GET,
        "/from-spin",
        &cookie,
    ))
    .await?
    .expect_echo(200)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_host_with_the_store_over_outbound_redis() -> anyhow::Result<()> {
    let sys = System::boot_with_store(SpinStore::redis()).await?;
    walk_through(&sys, "host-redis-user").await?;
    concurrent_starts_make_one_machine(&sys, "host-redis-racer").await
}

/// The README's curl walk-through, step by step, with its answers checked.
async fn walk_through(sys: &System, user: &str) -> anyhow::Result<()> {
    sys.get("/health").await?.expect_json(
        200,
        json!({"status": "ok", "service": "kiloclaw", "gateway_port": 18789}),
    )?;
    // With a secret and a channel token as the Next.js app sends them (Node-made envelopes).
    let fixtures = NodeEnvelopes::load();
    let secret = fixtures.case("unicode");
    let telegram = fixtures.case("telegram");
    let sandbox = sys
        .platform(
            Method::POST,
            "/api/platform/provision",
            Some(json!({
                "userId": user,
                "encryptedSecrets": {"WALK_SECRET": secret.envelope},
                "channels": {"telegramBotToken": telegram.envelope},
            })),
        )
        .await?
        .expect(201)?["sandboxId"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    ensure!(sandbox == System::sandbox_id(user), "sandbox id {sandbox}");
    sys.start(user).await?;
    // Decrypted by the instances component, sealed for Fly, opened by the machine at boot.
    let env = sys
        .send(sys.as_user(user, Method::GET, "/_gateway/env")?)
        .await?
        .expect(200)?;
    ensure!(
        env["WALK_SECRET"] == secret.plaintext.as_str()
            && env["TELEGRAM_BOT_TOKEN"] == telegram.plaintext.as_str()
            && env["OPENCLAW_GATEWAY_TOKEN"] == sys.expected_gateway_token(user).as_str(),
        "the gateway's environment lacks the user's secrets: {:?}",
        env.as_object().map(|o| o.keys().collect::<Vec<_>>())
    );
    ensure!(
        !sys.sim().state().to_string().contains(&secret.plaintext),
        "a secret is on Fly in plain text"
    );
    let status = sys.status(user).await?;
    ensure!(status["status"] == "running", "after start: {status}");
    let machine = status["flyMachineId"]
        .as_str()
        .context("a machine after start")?
        .to_owned();

    // A user request goes to the user's own machine (the simulated Fly Proxy routes it by
    // `fly-force-instance-id` and, like Fly's, does not pass that header on), without the user's
    // credentials.
    let echo = sys
        .send(sys.as_user(user, Method::GET, "/hello?x=1")?)
        .await?
        .expect_echo(200)?;
    ensure!(
        echo.machine_id == machine,
        "proxied to {}, expected {machine}",
        echo.machine_id
    );
    ensure!(echo.path == "/hello" && echo.query == "x=1", "{echo:?}");
    ensure!(echo.header("authorization").is_none(), "token forwarded");

    let token = sys
        .platform(
            Method::GET,
            &format!("/api/platform/gateway-token?userId={user}"),
            None,
        )
        .await?
        .expect(200)?;
    ensure!(
        token["gatewayToken"] == sys.expected_gateway_token(user),
        "gateway token {token}"
    );

    sys.stop(user).await?;
    let status = sys.status(user).await?;
    ensure!(status["status"] == "stopped", "after stop: {status}");
    sys.destroy(user).await?;
    sys.settle_destroy(user).await?;
    ensure!(
        sys.sim()
            .live_machines()
            .await?
            .iter()
            .all(|m| m.id != machine),
        "the machine is gone after destroy"
    );
    Ok(())
}

/// Longer than the store's default lease wait (90 s), after which a queued start answers 503.
const QUEUED_START_TIMEOUT: Duration = Duration::from_secs(120);

/// `CONCURRENT_STARTS` starts for one provisioned user, spread over every serving process: each
/// is answered (200, or 503 busy with Retry-After), and Fly ends up with exactly one machine.
async fn concurrent_starts_make_one_machine(sys: &System, user: &str) -> anyhow::Result<()> {
    sys.provision(user).await?;
    let app = sys.status(user).await?["flyAppName"]
        .as_str()
        .context("an app after provision")?
        .to_owned();
    let starts = (0..CONCURRENT_STARTS).map(|i| {
        // The starts queue for the user's lease and a queued one may wait the whole lease wait
        // (90 s) before answering 503, so the client waits longer than that.
        let request = sys
            .request_via(i, Method::POST, "/api/platform/start")
            .header("x-internal-api-key", sys.internal_key())
            .timeout(QUEUED_START_TIMEOUT)
            .json(&json!({"userId": user}));
        sys.send(request)
    });
    let replies = futures_util::future::join_all(starts).await;
    let mut ok = 0;
    for reply in replies {
        let reply = reply?;
        match reply.status {
            200 => {
                reply.expect_json(200, json!({"ok": true}))?;
                ok += 1;
            }
            503 if reply.headers.contains_key("retry-after") => {}
            other => bail!("a concurrent start answered {other}: {}", reply.text),
        }
    }
    ensure!(ok >= 1, "at least one start succeeded");
    let machines: Vec<_> = sys
        .sim()
        .live_machines()
        .await?
        .into_iter()
        .filter(|m| m.app == app)
        .collect();
    ensure!(
        machines.len() == 1,
        "{CONCURRENT_STARTS} concurrent starts made {} machines: {machines:?}",
        machines.len()
    );
    let status = sys.status(user).await?;
    ensure!(
        status["status"] == "running" && status["flyMachineId"] == machines[0].id.as_str(),
        "the store names Fly's one machine: {status}"
    );
    Ok(())
}

/// Waits for the cron plugin to run the reconciler on every process, successfully, as two walkers in one
/// minute (spin.toml declares the trigger twice: the plugin must fire both).
async fn cron_ticks_the_reconciler(sys: &System) -> anyhow::Result<()> {
    let started = Instant::now();
    for process in sys.spin_processes() {
        loop {
            let ticks = process.component_log("reconciler", "stdout");
            let errors = process.component_log("reconciler", "stderr");
            ensure!(
                !errors.contains("reconcile_due_failed"),
                "a cron tick failed: {errors}"
            );
            let mut walks_per_minute = std::collections::BTreeMap::<u64, usize>::new();
            for tick in ticks
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|tick| tick["tag"] == "reconcile_tick" && tick["action"] == "reconcile_due")
            {
                let minute = tick["tick_timestamp"].as_u64().unwrap_or_default() / 60;
                *walks_per_minute.entry(minute).or_default() += 1;
            }
            let ok = walks_per_minute.values().any(|&walks| walks >= 2);
            if ok {
                break;
            }
            if started.elapsed() > CRON_WAIT {
                bail!(
                    "no cron tick within {CRON_WAIT:?}; reconciler stdout: {ticks:?}; spin log: {}",
                    process.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}
