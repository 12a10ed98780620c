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
    let log = std::fs::read_to_string(state.path().join("up.stderr"))?;
    ensure!(
        log.contains("kiloclaw: no database (--database-url): token revocation is off"),
        "up says once that revocation is off: {log}"
    );

    // Clean shutdown on SIGTERM.
    stop(guard)
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
