//! Real Spin for the end-to-end suite: the bundled Spin 4.0.2 CLI with the cron trigger plugin,
//! running the repository's own `spin.toml` (copied byte for byte beside links to the built
//! components, so that its relative `source` paths resolve) as separate `spin up` processes.
//!
//! Spin is found, in order, at `$KILOCLAW_SPIN` (a `spin` binary whose `SPIN_DATA_DIR` already
//! holds the cron plugin), or installed once per test process from the bundle at
//! `$KILOCLAW_SPIN_BUNDLE`, `<repo>/../shared/tools/spin` or `/work/shared/tools/spin`
//! (its `install.sh`). Nothing found is a test failure, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Spin compiles four components at start (about 10 s each on a small machine, cached after).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// Which key-value store the app's instance store uses on Spin.
#[derive(Debug, Clone)]
pub enum SpinStore {
    /// Spin's default store: SQLite in the state dir (one node).
    Sqlite,
    /// The Redis at 127.0.0.1:6379 over Spin's outbound Redis interface, under `prefix`.
    Redis {
        /// Key prefix: unique per test so runs never see each other's keys.
        prefix: String,
    },
}

impl SpinStore {
    /// Redis under a fresh prefix.
    pub fn redis() -> Self {
        let unique = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        Self::Redis {
            prefix: format!("kiloclaw-e2e-{unique}:"),
        }
    }

    /// The Spin variables that select this store.
    pub fn variables(&self) -> Vec<(String, String)> {
        match self {
            Self::Sqlite => Vec::new(),
            Self::Redis { prefix } => kiloclaw_core::testing::local_redis_store_variables(prefix),
        }
    }
}

/// How to run `spin`: the binary and its plugin data dir.
#[derive(Debug)]
struct SpinInstall {
    binary: PathBuf,
    data_dir: Option<PathBuf>,
    /// Keeps a per-process installation alive.
    _dir: Option<tempfile::TempDir>,
}

fn spin() -> anyhow::Result<&'static SpinInstall> {
    static INSTALL: OnceLock<Result<SpinInstall, String>> = OnceLock::new();
    INSTALL
        .get_or_init(|| install().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|message| anyhow::anyhow!("Spin cannot run: {message}"))
}

fn bundle_dir() -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("KILOCLAW_SPIN_BUNDLE") {
        candidates.push(PathBuf::from(dir));
    }
    candidates.push(kiloclaw_e2e::workspace_root().join("../shared/tools/spin"));
    candidates.push(PathBuf::from("/work/shared/tools/spin"));
    candidates
        .iter()
        .find(|dir| dir.join("install.sh").is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no Spin bundle (install.sh) in any of {candidates:?}; set KILOCLAW_SPIN_BUNDLE \
                 or KILOCLAW_SPIN"
            )
        })
}

fn install() -> anyhow::Result<SpinInstall> {
    if let Some(binary) = std::env::var_os("KILOCLAW_SPIN") {
        return Ok(SpinInstall {
            binary: PathBuf::from(binary),
            data_dir: std::env::var_os("SPIN_DATA_DIR").map(PathBuf::from),
            _dir: None,
        });
    }
    let bundle = bundle_dir()?;
    let dir = tempfile::tempdir()?;
    let output = Command::new("bash")
        .arg(bundle.join("install.sh"))
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .context("running the Spin bundle's install.sh")?;
    if !output.status.success() {
        bail!(
            "install.sh failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let install = SpinInstall {
        binary: dir.path().join("bin/spin"),
        data_dir: Some(dir.path().join("data")),
        _dir: Some(dir),
    };
    let version = install.command().arg("--version").output()?;
    if !version.status.success() {
        bail!(
            "`spin --version` failed: {}",
            String::from_utf8_lossy(&version.stderr)
        );
    }
    Ok(install)
}

impl SpinInstall {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        if let Some(data_dir) = &self.data_dir {
            command.env("SPIN_DATA_DIR", data_dir);
        }
        // With RUST_LOG set, the cron plugin logs to stdout and confuses Spin's plugin probe.
        command.env_remove("RUST_LOG");
        command
    }
}

/// A directory holding the repository's `spin.toml`, unchanged, with its component `source`
/// paths (`target/wasm32-wasip2/release/*.wasm`) linked to the components the suite built.
pub fn app_dir(parent: &Path) -> anyhow::Result<PathBuf> {
    let app = parent.join("app");
    let release = app.join("target/wasm32-wasip2/release");
    std::fs::create_dir_all(&release)?;
    std::fs::copy(
        kiloclaw_e2e::workspace_root().join("spin.toml"),
        app.join("spin.toml"),
    )
    .context("copying spin.toml")?;
    for (_, built) in kiloclaw_e2e::components()?.all() {
        let name = built.file_name().context("component file name")?;
        std::os::unix::fs::symlink(built, release.join(name))
            .with_context(|| format!("linking {}", built.display()))?;
    }
    Ok(app)
}

/// How long a manifest Spin refuses may take to be refused (it fails before compiling anything).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `spin up` on the manifest at `manifest` and returns what it printed if Spin refused to
/// load the app; an error if Spin accepted it (still running after [`REFUSAL_TIMEOUT`]).
pub fn refusal(manifest: &Path) -> anyhow::Result<String> {
    let install = spin()?;
    let dir = manifest.parent().context("manifest directory")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut command = install.command();
    command
        .current_dir(dir)
        .args(["up", "--from"])
        .arg(manifest)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(dir.join(".spin"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().context("spawning `spin up`")?;
    let started = Instant::now();
    while started.elapsed() < REFUSAL_TIMEOUT {
        if let Some(status) = child.try_wait()? {
            let output = child.wait_with_output()?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            if status.success() {
                bail!("`spin up` exited successfully: {text}");
            }
            return Ok(text.replace('\0', ""));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
    bail!(
        "Spin accepted {} (still running after {REFUSAL_TIMEOUT:?})",
        manifest.display()
    )
}

/// One `spin up` process (its own process group, so its trigger children stop with it).
#[derive(Debug)]
pub struct SpinProcess {
    child: Child,
    base_url: String,
    log: PathBuf,
    state_dir: PathBuf,
}

impl SpinProcess {
    /// Starts `spin up` for the app in `app_dir` and waits until it answers `/health`.
    pub async fn start(
        app_dir: &Path,
        state_dir: &Path,
        variables: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let install = spin()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        std::fs::create_dir_all(state_dir)?;
        let log = state_dir.join(format!("spin-{port}.log"));
        let log_file = std::fs::File::create(&log)?;
        let mut command = install.command();
        command
            .current_dir(app_dir)
            .args(["up", "--from", "spin.toml", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state_dir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        for (name, value) in variables {
            command.env(
                format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()),
                value,
            );
        }
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().context("spawning `spin up`")?;
        let mut process = Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log,
            state_dir: state_dir.to_path_buf(),
        };
        process.wait_until_serving().await?;
        Ok(process)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    async fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                bail!("`spin up` exited with {status}: {}", self.log_text());
            }
            let health = client.get(format!("{}/health", self.base_url)).send().await;
            if health.is_ok_and(|reply| reply.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!(
            "`spin up` did not serve within {START_TIMEOUT:?}: {}",
            self.log_text()
        )
    }

    /// What `component` wrote to `stream` (`stdout`/`stderr`), from Spin's per-component log.
    pub fn component_log(&self, component: &str, stream: &str) -> String {
        let path = self
            .state_dir
            .join(format!("logs/{component}_{stream}.txt"));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// What Spin printed (its trigger processes included).
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', ""))
            .unwrap_or_default()
    }
}

impl Drop for SpinProcess {
    fn drop(&mut self) {
        // `spin up` runs each trigger as a child process: signal the whole group.
        let group = format!("-{}", self.child.id());
        let signal = |name: &str| {
            let _ = Command::new("kill")
                .args([name, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        signal("-KILL");
        let _ = self.child.wait();
    }
}
