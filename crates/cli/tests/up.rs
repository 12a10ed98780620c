//! `kiloclaw up` from start to ready, as a user runs it: the real binary builds (or reuses) the
//! components, starts the Fly simulator and the host, prints the example and the ready line; the
//! printed example then provisions and starts a user, a `kiloclaw token` JWT reaches the user's
//! machine, and SIGTERM shuts everything down cleanly. Bounded by timeouts throughout.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};

/// Covers a cold component build on a slow machine; a warm start takes seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(900);

fn kiloclaw() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiloclaw"))
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spin.toml")
}

/// Kills the child if the test fails midway (it is our own child, addressed by its handle).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn up_serves_and_the_printed_example_works() -> anyhow::Result<()> {
    let state = tempfile::tempdir()?;
    let child = kiloclaw()
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--sim-listen",
            "127.0.0.1:0",
            "--manifest",
        ])
        .arg(manifest())
        .arg("--state-dir")
        .arg(state.path())
        .env_remove("SPIN_VARIABLE_NEXTAUTH_SECRET")
        .env_remove("SPIN_VARIABLE_INTERNAL_API_SECRET")
        .env_remove("SPIN_VARIABLE_GATEWAY_TOKEN_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting kiloclaw up")?;
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().context("stdout")?;

    // Read stdout on a thread so the wait for the ready line is bounded.
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    let mut key = None;
    let url = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines_rx
            .recv_timeout(left)
            .context("no ready line from kiloclaw up in time")?;
        if let Some(value) = line
            .trim()
            .strip_prefix("KEY='")
            .and_then(|v| v.strip_suffix('\''))
        {
            key = Some(value.to_owned());
        }
        if let Some(url) = line.strip_prefix("kiloclaw: ready on ") {
            break url.trim().to_owned();
        }
    };
    let key = key.context("the example did not show the internal key")?;
    ensure!(url.starts_with("http://127.0.0.1:"), "ready url {url}");

    // The generated secrets are private to the user.
    let secrets = state.path().join("kiloclaw-dev-secrets.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&secrets)?.permissions());
    ensure!(mode & 0o777 == 0o600, "dev secrets mode {mode:o}");

    // A token from the CLI, for the same state directory.
    let token = kiloclaw()
        .args(["token", "--user", "user-1", "--manifest"])
        .arg(manifest())
        .arg("--state-dir")
        .arg(state.path())
        .env_remove("SPIN_VARIABLE_NEXTAUTH_SECRET")
        .output()?;
    ensure!(
        token.status.success(),
        "kiloclaw token failed: {}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout)?.trim().to_owned();
    ensure!(token.split('.').count() == 3, "a JWT on stdout: {token}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let body = serde_json::json!({"userId": "user-1"});
        let provision = client
            .post(format!("{url}/api/platform/provision"))
            .header("x-internal-api-key", &key)
            .json(&body)
            .send()
            .await?;
        ensure!(
            provision.status() == 201,
            "provision: {}",
            provision.status()
        );
        let provisioned: serde_json::Value = provision.json().await?;
        ensure!(
            provisioned == serde_json::json!({"sandboxId": "dXNlci0x"}),
            "{provisioned}"
        );
        let start = client
            .post(format!("{url}/api/platform/start"))
            .header("x-internal-api-key", &key)
            .json(&body)
            .send()
            .await?;
        ensure!(
            start.status() == 200,
            "start: {} {}",
            start.status(),
            start.text().await?
        );
        let proxied = client
            .get(format!("{url}/hello?from=readme"))
            .bearer_auth(&token)
            .send()
            .await?;
        let status = proxied.status();
        let text = proxied.text().await?;
        ensure!(status == 200, "proxied request: {status} {text}");
        ensure!(text.contains("/hello"), "the machine saw the path: {text}");
        Ok::<_, anyhow::Error>(())
    })?;

    // Clean shutdown on SIGTERM.
    let pid = guard.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status()?;
    ensure!(killed.success(), "kill -TERM failed");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = guard.0.try_wait()? {
            ensure!(status.success(), "kiloclaw up exited with {status}");
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("kiloclaw up did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn token_without_any_secret_explains_what_to_do() -> anyhow::Result<()> {
    let state = tempfile::tempdir()?;
    let output = kiloclaw()
        .args(["token", "--user", "u", "--manifest"])
        .arg(manifest())
        .arg("--state-dir")
        .arg(state.path())
        .env_remove("SPIN_VARIABLE_NEXTAUTH_SECRET")
        .output()?;
    ensure!(!output.status.success(), "token without a secret must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        stderr.contains("kiloclaw up") && stderr.contains("SPIN_VARIABLE_NEXTAUTH_SECRET"),
        "{stderr}"
    );
    ensure!(output.stdout.is_empty(), "nothing on stdout");
    Ok(())
}

#[test]
fn token_from_the_environment_secret() -> anyhow::Result<()> {
    let output = kiloclaw()
        .args(["token", "--user", "env-user", "--ttl", "5m"])
        .env(
            "SPIN_VARIABLE_NEXTAUTH_SECRET",
            "an-environment-secret-of-32-bytes-or-more",
        )
        .output()?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout)?;
    let verifier =
        kiloclaw_core::auth::JwtVerifier::new("an-environment-secret-of-32-bytes-or-more", None)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = verifier.verify(token.trim(), now)?;
    ensure!(claims.user_id == "env-user", "{claims:?}");
    ensure!(claims.expires_at_s <= now + 300, "5m ttl: {claims:?}");
    Ok(())
}
