//! `kiloclaw up` from start to ready, as a user runs it: the real binary builds (or reuses) the
//! components, starts the Fly simulator and the host, prints the example and the ready line; the
//! printed example then provisions and starts a user, a `kiloclaw token` JWT reaches the user's
//! machine, a `kiloclaw access-code` signs a browser in, and SIGTERM shuts everything down
//! cleanly. With `--proxy-upstream`, the Machines API stays the simulator's while user traffic
//! reaches any other server; with `--database-url`, sign-in uses that PostgreSQL's tables. Bounded
//! by timeouts throughout.

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
    /// Everything printed on stdout up to and including the ready line.
    printed: Vec<String>,
}

/// `kiloclaw up` on free ports with the repository's manifest and `state` as its state directory.
fn up_command(state: &std::path::Path) -> Command {
    let mut command = kiloclaw();
    command
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
        .arg(state);
    command
}

/// Starts `kiloclaw up` on free ports with `state` and `extra` arguments and waits (bounded) for
/// its ready line.
fn start_up(state: &std::path::Path, extra: &[&str]) -> anyhow::Result<Up> {
    let stderr = state.join("up.stderr");
    let child = up_command(state)
        .args(extra)
        .env_remove("SPIN_VARIABLE_NEXTAUTH_SECRET")
        .env_remove("SPIN_VARIABLE_INTERNAL_API_SECRET")
        .env_remove("SPIN_VARIABLE_GATEWAY_TOKEN_SECRET")
        .env_remove("SPIN_VARIABLE_FLY_PROXY_BASE_URL")
        .env_remove("SPIN_VARIABLE_FLY_PROXY_OUTBOUND_HOST")
        .env_remove("SPIN_VARIABLE_DATABASE_URL")
        .env_remove("SPIN_VARIABLE_DATABASE_OUTBOUND_HOST")
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
    let mut printed = Vec::new();
    let url = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines_rx
            .recv_timeout(left)
            .context("no ready line from kiloclaw up in time")?;
        printed.push(line.clone());
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
        printed,
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

/// A `kiloclaw access-code` for `user` from the app at `url`.
fn access_code(state: &std::path::Path, url: &str, user: &str) -> anyhow::Result<String> {
    let output = kiloclaw()
        .args(["access-code", "--user", user, "--url", url, "--manifest"])
        .arg(manifest())
        .arg("--state-dir")
        .arg(state)
        .env_remove("SPIN_VARIABLE_INTERNAL_API_SECRET")
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "kiloclaw access-code failed: {stderr}"
    );
    ensure!(
        stderr.contains(&format!("{url}/kilo-access-gateway?userId={user}")),
        "where to use it: {stderr}"
    );
    let code = String::from_utf8(output.stdout)?.trim().to_owned();
    ensure!(code.len() == 11, "a code on stdout: {code}");
    Ok(code)
}

/// Redeems `code` at the access gateway as a browser would; the session cookie's value.
async fn sign_in(
    client: &reqwest::Client,
    url: &str,
    user: &str,
    code: &str,
) -> anyhow::Result<String> {
    let reply = client
        .post(format!("{url}/kilo-access-gateway"))
        .form(&[("code", code), ("userId", user)])
        .send()
        .await?;
    let cookie = reply
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("kiloclaw-auth="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let status = reply.status();
    let text = reply.text().await?;
    ensure!(status == 200, "sign-in: {status} {text}");
    cookie.context("no session cookie")
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
        guard,
        url,
        key,
        printed,
        stderr,
    } = start_up(state.path(), &[])?;
    let simulator = printed_simulator(&printed)?;

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

        // The browser's way in without a database: a code kept in key-value, then the cookie.
        let code = access_code(state.path(), &url, "user-1")?;
        let cookie = sign_in(&client, &url, "user-1", &code).await?;
        let page = client
            .get(format!("{url}/control-ui"))
            .header("cookie", format!("kiloclaw-auth={cookie}"))
            .send()
            .await?;
        ensure!(page.status() == 200, "with the cookie: {}", page.status());
        ensure!(
            sign_in(&client, &url, "user-1", &code).await.is_err(),
            "a code works once"
        );
        Ok::<_, anyhow::Error>(())
    })?;
    // The printed way into the simulator: user-1's machines, with the printed token.
    runtime.block_on(async {
        let machines: serde_json::Value = reqwest::Client::new()
            .get(&simulator.machines_url)
            .bearer_auth(&simulator.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let states: Vec<&str> = machines
            .as_array()
            .context("a machine list")?
            .iter()
            .filter_map(|machine| machine["state"].as_str())
            .collect();
        ensure!(states == ["started"], "user-1's machines: {machines}");
        anyhow::Ok(())
    })?;

    // `kiloclaw status` reads the same store and asks the same simulator.
    let status = kiloclaw()
        .args([
            "status",
            "--json",
            "--sim-url",
            &simulator.url,
            "--manifest",
        ])
        .arg(manifest())
        .arg("--state-dir")
        .arg(state.path())
        .env_remove("SPIN_VARIABLE_STORE_REDIS_URL")
        .output()?;
    ensure!(
        status.status.success(),
        "status: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    ensure!(rows.as_array().map(Vec::len) == Some(1), "{rows}");
    ensure!(rows[0]["userId"] == "user-1", "{rows}");
    ensure!(rows[0]["status"] == "running", "{rows}");
    ensure!(rows[0]["flyState"] == "started", "{rows}");
    ensure!(rows[0]["app"] == simulator.user_1_app.as_str(), "{rows}");
    let table = kiloclaw()
        .args(["status", "--sim-url", &simulator.url, "--manifest"])
        .arg(manifest())
        .arg("--state-dir")
        .arg(state.path())
        .env_remove("SPIN_VARIABLE_STORE_REDIS_URL")
        .output()?;
    let table = String::from_utf8(table.stdout)?;
    ensure!(table.starts_with("USER    STATUS   APP"), "{table}");
    ensure!(
        table
            .lines()
            .nth(1)
            .is_some_and(|row| row.contains("started")),
        "{table}"
    );

    let log = std::fs::read_to_string(&stderr)?;
    ensure!(
        log.contains("kiloclaw: no database (--database-url): token revocation is off"),
        "up says once that revocation is off: {log}"
    );
    // Not a terminal, so JSON: every log line one object, guest fields merged, no secret anywhere.
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("every JSON log line parses")?;
    ensure!(
        events.iter().any(|event| event["tag"] == "lifecycle"
            && event["component"].is_string()
            && event["action"].is_string()
            && event.get("guest_fields").is_none()),
        "a lifecycle step logged by a component, its fields merged: {log}"
    );
    for secret in [
        key.as_str(),
        token.as_str(),
        dev_secret(state.path(), "nextauth_secret")?.as_str(),
        dev_secret(state.path(), "gateway_token_secret")?.as_str(),
    ] {
        ensure!(!log.contains(secret), "a secret reached the log");
    }

    // Clean shutdown on SIGTERM.
    stop(guard)
}

/// What `kiloclaw up` printed about its Fly simulator.
struct PrintedSimulator {
    url: String,
    token: String,
    machines_url: String,
    user_1_app: String,
}

fn printed_simulator(printed: &[String]) -> anyhow::Result<PrintedSimulator> {
    let header = printed
        .iter()
        .find_map(|line| line.strip_prefix("kiloclaw: Fly simulator: Machines API "))
        .context("up names the simulator's API")?;
    let (api, rest) = header.split_once(", token '").context("and its token")?;
    let token = rest.split('\'').next().context("the token")?.to_owned();
    let url = api
        .strip_suffix("/v1")
        .context("the API is under /v1")?
        .to_owned();
    let machines_url = printed
        .iter()
        .find_map(|line| {
            let rest = line.trim().strip_prefix("curl -s ")?;
            let address = rest.split(' ').next()?;
            address.ends_with("/machines").then(|| address.to_owned())
        })
        .context("an example listing user-1's machines")?;
    let user_1_app = machines_url
        .trim_end_matches("/machines")
        .rsplit('/')
        .next()
        .context("the app in the machines URL")?
        .to_owned();
    Ok(PrintedSimulator {
        url,
        token,
        machines_url,
        user_1_app,
    })
}

/// A database of the test's own on the PostgreSQL at 127.0.0.1:5432, with db/schema.sql and one
/// user whose pepper is `pepper-1`; dropped by the returned guard.
struct Database {
    name: String,
}

impl Database {
    fn psql(database: &str, sql: &str) -> anyhow::Result<()> {
        let output = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-d",
            ])
            .arg(database)
            .args(["-c", sql])
            .output()
            .context("running psql")?;
        ensure!(
            output.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    fn create() -> anyhow::Result<Self> {
        let name = format!("kiloclaw_up_{}", std::process::id());
        Self::psql(
            "test",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        Self::psql("test", &format!("CREATE DATABASE {name}"))?;
        let schema = std::fs::read_to_string(manifest().with_file_name("db/schema.sql"))?;
        Self::psql(&name, &schema)?;
        Self::psql(
            &name,
            "INSERT INTO kilocode_users (id, api_token_pepper) VALUES ('user-db', 'pepper-1')",
        )?;
        Ok(Self { name })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Self::psql(
            "test",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

#[test]
fn up_with_a_database_uses_its_tables() -> anyhow::Result<()> {
    let database = Database::create()?;
    let state = tempfile::tempdir()?;
    let database_url = format!(
        "postgres://postgres@127.0.0.1:5432/{}?sslmode=disable",
        database.name
    );
    let Up {
        guard, url, stderr, ..
    } = start_up(state.path(), &["--database-url", &database_url])?;
    let log = std::fs::read_to_string(&stderr)?;
    ensure!(
        log.contains("kiloclaw: PostgreSQL at postgres://127.0.0.1:5432: token revocation on"),
        "{log}"
    );
    ensure!(!log.contains(&database_url), "the URL is not logged: {log}");

    let code = access_code(state.path(), &url, "user-db")?;
    let unknown = kiloclaw()
        .args([
            "access-code",
            "--user",
            "nobody",
            "--url",
            &url,
            "--manifest",
        ])
        .arg(manifest())
        .arg("--state-dir")
        .arg(state.path())
        .output()?;
    ensure!(
        !unknown.status.success(),
        "no code for a user the table lacks"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let cookie = sign_in(&client, &url, "user-db", &code).await?;
        let config = client
            .get(format!("{url}/api/kiloclaw/config"))
            .header("cookie", format!("kiloclaw-auth={cookie}"))
            .send()
            .await?;
        ensure!(
            config.status() == 200,
            "the session carries the pepper: {}",
            config.status()
        );
        // A token without the user's pepper is revoked.
        let stale = kiloclaw_core::auth::mint_token(
            &dev_secret(state.path(), "nextauth_secret")?,
            &kiloclaw_core::auth::MintRequest {
                user_id: "user-db".into(),
                api_token_pepper: None,
                env: None,
                issued_at_s: now_s(),
                ttl_s: 300,
            },
        )?;
        let refused = client
            .get(format!("{url}/api/kiloclaw/config"))
            .bearer_auth(stale)
            .send()
            .await?;
        ensure!(refused.status() == 401, "revoked: {}", refused.status());
        ensure!(refused.text().await?.contains("Token revoked"));
        Ok::<_, anyhow::Error>(())
    })?;
    stop(guard)
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A secret `kiloclaw up` generated in `state`.
fn dev_secret(state: &std::path::Path, name: &str) -> anyhow::Result<String> {
    let secrets: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        state.join("kiloclaw-dev-secrets.json"),
    )?)?;
    secrets[name]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{name} in the dev secrets: {secrets}"))
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
        ..
    } = start_up(
        state.path(),
        &[
            "--proxy-upstream",
            &upstream,
            "--log-format",
            "pretty",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    )?;
    let log = std::fs::read_to_string(&stderr)?;
    let metrics_url = log
        .lines()
        .find_map(|line| line.strip_prefix("kiloclaw: metrics on "))
        .context("up names its metrics URL")?
        .to_owned();
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
        let metrics = client.get(&metrics_url).send().await?.text().await?;
        ensure!(
            metrics.contains(r#"kiloclaw_http_requests_total{route="proxy",status="200"} 1"#),
            "the proxied request is counted: {metrics}"
        );
        Ok::<_, anyhow::Error>(())
    })?;
    // `--log-format pretty`: readable lines, a component's fields unescaped in them, no JSON.
    let log = std::fs::read_to_string(&stderr)?;
    let lifecycle = log
        .lines()
        .find(|line| line.contains(" lifecycle ") && line.contains("action="))
        .with_context(|| format!("a pretty lifecycle line: {log}"))?;
    ensure!(
        lifecycle
            .split(' ')
            .nth(1)
            .is_some_and(|level| level == "INFO"),
        "time, then level: {lifecycle}"
    );
    ensure!(
        !lifecycle.contains('{') && !lifecycle.contains("\\\""),
        "{lifecycle}"
    );
    ensure!(
        !log.lines().any(|line| line.starts_with('{')),
        "no JSON lines: {log}"
    );
    ensure!(
        !log.contains(&key) && !log.contains(&token),
        "no secret in the log"
    );
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

/// A toolchain without the wasm target's standard library (a real `rustc` over an empty sysroot,
/// as after installing Rust without `rustup target add`): `up` stops before building and says the
/// one command that fixes it, instead of cargo's "can't find crate for `core`".
#[test]
fn up_without_the_wasm_target_names_the_command_that_installs_it() -> anyhow::Result<()> {
    let state = tempfile::tempdir()?;
    let sysroot = state.path().join("empty-sysroot");
    std::fs::create_dir_all(&sysroot)?;
    let rustc = state.path().join("rustc-without-wasm");
    std::fs::write(
        &rustc,
        format!(
            "#!/bin/sh\nexec rustc --sysroot '{}' \"$@\"\n",
            sysroot.display()
        ),
    )?;
    std::fs::set_permissions(&rustc, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let output = up_command(state.path())
        .env("RUSTC", &rustc)
        .stdin(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "up must fail: {stderr}");
    ensure!(
        stderr.contains("the Rust target wasm32-wasip2 is not installed"),
        "{stderr}"
    );
    ensure!(
        stderr.contains("rustup target add wasm32-wasip2"),
        "{stderr}"
    );
    ensure!(
        !stderr.contains("can't find crate"),
        "cargo never ran: {stderr}"
    );
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
