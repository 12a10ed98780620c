//! `kiloclaw up` from start to ready, as a user runs it: the real binary builds (or reuses) the
//! components, starts the Fly simulator and the host, prints the example and the ready line; the
//! printed example then provisions and starts a user, a `kiloclaw token` JWT reaches the user's
//! machine, and SIGTERM shuts everything down cleanly. With `--proxy-upstream`, the Machines API
//! stays the simulator's while user traffic reaches any other server. Bounded by timeouts
//! throughout.

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

/// A running `kiloclaw up`: the guard that stops it, its URL, the internal key it printed and the
/// file its stderr goes to.
struct Up {
    guard: Guard,
    url: String,
    key: String,
    stderr: PathBuf,
}

/// Starts `kiloclaw up` on free ports with `state` and `extra` arguments and waits (bounded) for
/// its ready line.
fn start_up(state: &std::path::Path, extra: &[&str]) -> anyhow::Result<Up> {
    let stderr = state.join("up.stderr");
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
        .arg(state)
        .args(extra)
        .env_remove("SPIN_VARIABLE_NEXTAUTH_SECRET")
        .env_remove("SPIN_VARIABLE_INTERNAL_API_SECRET")
        .env_remove("SPIN_VARIABLE_GATEWAY_TOKEN_SECRET")
        .env_remove("SPIN_VARIABLE_FLY_PROXY_BASE_URL")
        .env_remove("SPIN_VARIABLE_FLY_PROXY_OUTBOUND_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr)?)
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
    Ok(Up {
        guard,
        url,
        key,
        stderr,
    })
}

/// A `kiloclaw token` for `user` and the state directory.
fn token(state: &std::path::Path, user: &str) -> anyhow::Result<String> {
    let token = kiloclaw()
        .args(["token", "--user", user, "--manifest"])
        .arg(manifest())
        .arg("--state-dir")
        .arg(state)
        .env_remove("SPIN_VARIABLE_NEXTAUTH_SECRET")
        .output()?;
    ensure!(
        token.status.success(),
        "kiloclaw token failed: {}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout)?.trim().to_owned();
    ensure!(token.split('.').count() == 3, "a JWT on stdout: {token}");
    Ok(token)
}

/// Provisions and starts `user` through the platform API.
async fn provision_and_start(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    user: &str,
) -> anyhow::Result<serde_json::Value> {
    let body = serde_json::json!({ "userId": user });
    let provision = client
        .post(format!("{url}/api/platform/provision"))
        .header("x-internal-api-key", key)
        .json(&body)
        .send()
        .await?;
    ensure!(
        provision.status() == 201,
        "provision: {}",
        provision.status()
    );
    let provisioned: serde_json::Value = provision.json().await?;
    let start = client
        .post(format!("{url}/api/platform/start"))
        .header("x-internal-api-key", key)
        .json(&body)
        .send()
        .await?;
    ensure!(
        start.status() == 200,
        "start: {} {}",
        start.status(),
        start.text().await?
    );
    Ok(provisioned)
}

/// Stops `kiloclaw up` with SIGTERM and checks it exits cleanly within 30 s.
fn stop(mut guard: Guard) -> anyhow::Result<()> {
    let pid = guard.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status()?;
    ensure!(killed.success(), "kill -TERM failed");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = guard.0.try_wait()? {
            ensure!(status.success(), "kiloclaw up exited with {status}");
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("kiloclaw up did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn up_serves_and_the_printed_example_works() -> anyhow::Result<()> {
    let state = tempfile::tempdir()?;
    let Up {
        guard, url, key, ..
    } = start_up(state.path(), &[])?;

    // The generated secrets are private to the user.
    let secrets = state.path().join("kiloclaw-dev-secrets.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&secrets)?.permissions());
    ensure!(mode & 0o777 == 0o600, "dev secrets mode {mode:o}");

    // A token from the CLI, for the same state directory.
    let token = token(state.path(), "user-1")?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let provisioned = provision_and_start(&client, &url, &key, "user-1").await?;
        ensure!(
            provisioned == serde_json::json!({"sandboxId": "dXNlci0x"}),
            "{provisioned}"
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
    stop(guard)
}

/// A minimal HTTP/1.1 server on a free loopback port: answers every request with
/// `200 upstream-ok` and reports each request head on the returned channel.
fn fake_upstream() -> anyhow::Result<(String, mpsc::Receiver<String>)> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    let (heads_tx, heads_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let heads_tx = heads_tx.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let mut head = Vec::new();
                let mut byte = [0_u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = heads_tx.send(String::from_utf8_lossy(&head).into_owned());
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 11\r\nconnection: close\r\n\r\nupstream-ok",
                );
            });
        }
    });
    Ok((url, heads_rx))
}

#[test]
fn proxy_upstream_sends_user_traffic_to_any_server() -> anyhow::Result<()> {
    let (upstream, heads) = fake_upstream()?;
    let state = tempfile::tempdir()?;
    let Up {
        guard,
        url,
        key,
        stderr,
    } = start_up(state.path(), &["--proxy-upstream", &upstream])?;
    let log = std::fs::read_to_string(&stderr)?;
    ensure!(
        log.contains(&format!(
            "kiloclaw: user traffic goes to {upstream} (from --proxy-upstream)"
        )),
        "up names the proxy target: {log}"
    );
    let token = token(state.path(), "user-2")?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        // The Machines API is still the simulator's: provisioning and starting work.
        provision_and_start(&client, &url, &key, "user-2").await?;
        let proxied = client
            .get(format!("{url}/bench/1k?x=1"))
            .bearer_auth(&token)
            .send()
            .await?;
        let status = proxied.status();
        let text = proxied.text().await?;
        ensure!(status == 200, "proxied request: {status} {text}");
        ensure!(text == "upstream-ok", "answered by the upstream: {text}");
        Ok::<_, anyhow::Error>(())
    })?;
    let head = heads.recv_timeout(Duration::from_secs(10))?;
    ensure!(
        head.starts_with("GET /bench/1k?x=1 HTTP/1.1\r\n"),
        "the upstream saw the path: {head}"
    );
    ensure!(
        head.to_ascii_lowercase().contains("fly-force-instance-id:"),
        "pinned to the user's machine: {head}"
    );
    ensure!(
        !head.to_ascii_lowercase().contains("authorization:"),
        "the user's JWT is not forwarded: {head}"
    );
    stop(guard)
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
