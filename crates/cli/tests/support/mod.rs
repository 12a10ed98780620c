//! The harness of the cross-process proofs of issue 11 (`races.rs`: two host processes racing;
//! `crash_points.rs`: a host process killed at crash points and restarted): real `kiloclaw up`
//! processes (`--fly api --no-build`) pointed at a Fly simulator that runs in the test process, the
//! instance store in SQLite (a state directory the processes share) or in Redis (a key prefix of
//! the run's own), and readers of both for the invariants. Everything on 127.0.0.1 and bounded.

#![allow(dead_code, reason = "each test binary uses a part of the harness")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kiloclaw_core::clock::SystemClock;
use kiloclaw_core::kv::{CasOutcome, KeyValue, KeyValues, KvError};
use kiloclaw_core::record::InstanceRecord;
use kiloclaw_core::store::{RecordStore, StoreSettings};
use kiloclaw_core::testing::NativeRedis;
use kiloclaw_flysim::{Delays, RegionConfig, SimAdmin, SimHandle, Simulator};
use serde_json::{Value, json};

/// The app's secrets in every process of a run (set as `SPIN_VARIABLE_*`).
pub const NEXTAUTH_SECRET: &str = "proof-nextauth-secret-of-at-least-32-bytes";
pub const INTERNAL_KEY: &str = "proof-internal-api-key-of-at-least-32-bytes";
pub const GATEWAY_TOKEN_SECRET: &str = "proof-gateway-token-secret-of-32-bytes-or-more";

/// How long a host process may take from spawn to its ready line (components prebuilt; the
/// compilation cache may be cold on the first start).
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest answer a request may take: the lease wait (90 s) plus the operation.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(150);
/// Statuses the platform API documents (README "The HTTP API", shared original-behaviour.md §1).
pub const DOCUMENTED: [u16; 9] = [200, 201, 404, 409, 429, 500, 502, 503, 504];

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn manifest() -> PathBuf {
    workspace_root().join("spin.toml")
}

/// A number from the environment, or `default`.
pub fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(value) => parse_number(&value).with_context(|| format!("{name}={value}")),
        Err(_) => Ok(default),
    }
}

/// A decimal or `0x` hexadecimal number.
pub fn parse_number(value: &str) -> anyhow::Result<u64> {
    Ok(kiloclaw_core::testing::parse_seed(value)?)
}

/// Builds the four components once per test binary (a no-op when they are fresh), so that the host
/// processes can start with `--no-build`.
pub fn build_components() -> anyhow::Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            kiloclaw_cli::build::build_components(&workspace_root())
                .map(drop)
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The proofs' seeded generator (splitmix64): a seed replays a trial's choices.
pub use kiloclaw_core::testing::{SeededRng as Rng, fresh_seed};

/// Where the instance store lives.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Spin's `default` key-value store: `<state dir>/sqlite_key_value.db`, shared by the processes
    /// started on the same state directory.
    Sqlite,
    /// Redis at 127.0.0.1:6379 over the outbound Redis interface, every key under `prefix`.
    Redis { prefix: String },
}

impl Backend {
    /// Redis under a prefix no other run uses.
    pub fn redis(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Self::Redis {
            prefix: format!("kiloclaw-proof:{tag}:{}:{nanos}:", std::process::id()),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Redis { .. } => "redis",
        }
    }

    /// The app variables that select this store.
    pub fn variables(&self) -> Vec<(String, String)> {
        match self {
            Self::Sqlite => Vec::new(),
            Self::Redis { prefix } => kiloclaw_core::testing::local_redis_store_variables(prefix),
        }
    }

    /// Deletes the run's keys (Redis); the SQLite file goes with its temporary directory.
    pub fn clean_up(&self) {
        if let Self::Redis { prefix } = self
            && let Ok(client) = redis::Client::open(kiloclaw_core::testing::LOCAL_REDIS_URL)
            && let Ok(mut connection) = client.get_connection()
        {
            let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query(&mut connection)
                .unwrap_or_default();
            for chunk in keys.chunks(500) {
                let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query(&mut connection);
            }
        }
    }
}

/// A Fly simulator in the test process with room for every machine (capacity is not what these
/// proofs are about) and short lifecycle delays.
pub async fn start_sim() -> anyhow::Result<SimHandle> {
    let mut config = kiloclaw_cli::commands::fly_sim::config("127.0.0.1:0".parse()?, None);
    config.regions = kiloclaw_flysim::default_regions()
        .into_iter()
        .map(|region| RegionConfig::new(&region.code, region.hosts, 64 * 1024 * 1024))
        .collect();
    config.delays = Delays {
        create: Duration::from_millis(5),
        boot: Duration::from_millis(30),
        stop: Duration::from_millis(20),
        replace: Duration::from_millis(20),
        destroy: Duration::from_millis(10),
        ..Delays::default()
    };
    Simulator::start(config)
        .await
        .context("starting the Fly simulator")
}

/// How to start one host process.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// `--state-dir`: the SQLite key-value file and the resolved manifest.
    pub state_dir: PathBuf,
    /// Where the process's stderr is appended.
    pub log: PathBuf,
    /// App variables (`SPIN_VARIABLE_<NAME>`).
    pub variables: Vec<(String, String)>,
}

impl HostSpec {
    /// A process on `state_dir` for `sim`, the store `backend` and the extra `variables`.
    pub fn new(
        state_dir: &Path,
        log: &Path,
        sim: &SimHandle,
        backend: &Backend,
        variables: &[(&str, &str)],
    ) -> Self {
        let mut all =
            kiloclaw_cli::commands::fly_sim::app_variables(&sim.api_url(), &sim.proxy_url());
        all.extend(backend.variables());
        for (name, value) in [
            ("nextauth_secret", NEXTAUTH_SECRET),
            ("internal_api_secret", INTERNAL_KEY),
            ("gateway_token_secret", GATEWAY_TOKEN_SECRET),
        ] {
            all.push((name.to_owned(), value.to_owned()));
        }
        all.extend(
            variables
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        Self {
            state_dir: state_dir.to_path_buf(),
            log: log.to_path_buf(),
            variables: all,
        }
    }
}

/// A running `kiloclaw up` (our own child; killed when dropped).
#[derive(Debug)]
pub struct HostProcess {
    child: Child,
    pub url: String,
}

impl HostProcess {
    /// Starts `kiloclaw up --fly api --no-build` as `spec` says and waits (bounded) for its ready
    /// line. `crash_after` arms the host's test-only crash points: `KILOCLAW_CRASH_AFTER=n`, and
    /// `KILOCLAW_CRASH_MATCH` to count only the events whose description contains it.
    pub fn start(
        spec: &HostSpec,
        crash_after: Option<(u64, Option<&str>)>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&spec.state_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .with_context(|| format!("opening {}", spec.log.display()))?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiloclaw"));
        command
            .args([
                "up",
                "--fly",
                "api",
                "--no-build",
                "--listen",
                "127.0.0.1:0",
                "--manifest",
            ])
            .arg(manifest())
            .arg("--state-dir")
            .arg(&spec.state_dir)
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SPIN_VARIABLE_") {
                command.env_remove(name);
            }
        }
        command.env_remove("KILOCLAW_CRASH_AFTER");
        command.env_remove("KILOCLAW_CRASH_MATCH");
        command.env_remove("SPIN_HTTP_LISTEN_ADDR");
        command.env_remove("RUNTIME_CONFIG_FILE");
        for (name, value) in &spec.variables {
            command.env(format!("SPIN_VARIABLE_{}", name.to_uppercase()), value);
        }
        if let Some((n, only)) = crash_after {
            command.env("KILOCLAW_CRASH_AFTER", n.to_string());
            if let Some(only) = only {
                command.env("KILOCLAW_CRASH_MATCH", only);
            }
        }
        let mut child = command.spawn().context("starting kiloclaw up")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Self {
            child,
            url: String::new(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = process.child.try_wait()? {
                bail!(
                    "kiloclaw up exited with {status} before it was ready (log: {})",
                    spec.log.display()
                );
            }
            match lines_rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("kiloclaw: ready on ") {
                        process.url = url.trim().to_owned();
                        return Ok(process);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            ensure!(
                Instant::now() < deadline,
                "no ready line from kiloclaw up within {READY_TIMEOUT:?} (log: {})",
                spec.log.display()
            );
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL if it is still there after 20 s.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        if self.wait_exit(Duration::from_secs(20)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One answer, or why there was none.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// Whether the answer is one the API documents for a valid request: a success, or a
    /// documented error status with a JSON `error` body (never a 400: the requests are valid).
    pub fn problem(&self) -> Option<String> {
        if !DOCUMENTED.contains(&self.status) {
            return Some(format!(
                "undocumented status {}: {}",
                self.status, self.body
            ));
        }
        if self.status >= 300 {
            let error = serde_json::from_str::<Value>(&self.body)
                .ok()
                .and_then(|body| body.get("error").map(Value::is_string));
            if error != Some(true) {
                return Some(format!(
                    "{} without a JSON error body: {:?}",
                    self.status, self.body
                ));
            }
        }
        None
    }

    /// The lease of the user was held by someone else for all of `lease_wait`.
    pub fn is_busy(&self) -> bool {
        self.status == 503 && self.body.contains("Another operation on this instance")
    }
}

/// The operations the proofs mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Provision,
    Start,
    Stop,
    Destroy,
    Restart,
    Patch,
    /// `POST /api/platform/reconcile {}`: one due walk and sweep batch, as a cron tick runs them
    /// (not per user; never picked at random).
    Reconcile,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::Provision,
        Op::Start,
        Op::Stop,
        Op::Destroy,
        Op::Restart,
        Op::Patch,
    ];

    /// Weighted: starts and provisions most, destroys least.
    pub fn pick(rng: &mut Rng) -> Op {
        match rng.below(20) {
            0..=3 => Op::Provision,
            4..=8 => Op::Start,
            9..=11 => Op::Stop,
            12..=13 => Op::Destroy,
            14..=15 => Op::Restart,
            _ => Op::Patch,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Provision => "provision",
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Destroy => "destroy",
            Op::Restart => "restart",
            Op::Patch => "patch",
            Op::Reconcile => "reconcile_due",
        }
    }
}

/// An HTTP client for the app's APIs.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .pool_max_idle_per_host(64)
                // The host closes a keep-alive connection idle for its header read timeout (10 s,
                // announced in `Keep-Alive: timeout=10`); a client that reuses one at that moment
                // gets a transport error, so the pool drops idle connections well before.
                .pool_idle_timeout(std::time::Duration::from_secs(5))
                .build()?,
        })
    }

    /// Runs `op` for `user` on the process at `url`. `Err`: no answer (transport error, timeout).
    pub async fn op(&self, url: &str, op: Op, user: &str, tag: u64) -> Result<Answer, String> {
        let platform = |path: &str| {
            self.http
                .post(format!("{url}/api/platform/{path}"))
                .header("x-internal-api-key", INTERNAL_KEY)
        };
        let request = match op {
            Op::Provision => platform("provision").json(&json!({
                "userId": user,
                "envVars": {"PROOF_TAG": tag.to_string()},
            })),
            Op::Start => platform("start").json(&json!({"userId": user})),
            Op::Stop => platform("stop").json(&json!({"userId": user})),
            Op::Destroy => platform("destroy").json(&json!({"userId": user})),
            Op::Restart => self
                .http
                .post(format!("{url}/api/admin/gateway/restart"))
                .bearer_auth(user_token(user).map_err(|e| e.to_string())?),
            Op::Patch => self
                .http
                .patch(format!("{url}/api/platform/kilocode-config"))
                .header("x-internal-api-key", INTERNAL_KEY)
                .json(&json!({"userId": user, "kilocodeDefaultModel": format!("kilocode/anthropic/model-{tag}")})),
            Op::Reconcile => platform("reconcile").json(&json!({})),
        };
        self.send(request).await
    }

    /// `POST /api/platform/reconcile {"userId"}` on the process at `url`.
    pub async fn reconcile(&self, url: &str, user: &str) -> Result<Answer, String> {
        self.send(
            self.http
                .post(format!("{url}/api/platform/reconcile"))
                .header("x-internal-api-key", INTERNAL_KEY)
                .json(&json!({"userId": user})),
        )
        .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, String> {
        let reply = request.send().await.map_err(|e| format!("{e:#}"))?;
        let status = reply.status().as_u16();
        let body = reply.text().await.map_err(|e| format!("body: {e:#}"))?;
        Ok(Answer { status, body })
    }
}

/// A user JWT for `user` (the user routes: restart).
pub fn user_token(user: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    Ok(kiloclaw_core::auth::mint_token(
        NEXTAUTH_SECRET,
        &kiloclaw_core::auth::MintRequest {
            user_id: user.to_owned(),
            api_token_pepper: None,
            env: None,
            issued_at_s: now,
            ttl_s: 3600,
        },
    )?)
}

/// Spin's SQLite key-value file read directly (the `spin_key_value` table, store `default`),
/// read-only: enough for the core's record reader, which follows creation generations.
pub struct SqliteReader {
    connection: Mutex<rusqlite::Connection>,
}

impl SqliteReader {
    pub fn open(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join("sqlite_key_value.db");
        let connection = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {}", path.display()))?;
        connection.busy_timeout(Duration::from_secs(10))?;
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let connection = self
            .connection
            .lock()
            .map_err(|_| KvError::Other("poisoned".to_owned()))?;
        let mut statement = connection
            .prepare_cached("SELECT value FROM spin_key_value WHERE store = 'default' AND key = ?1")
            .map_err(|e| KvError::Other(e.to_string()))?;
        let mut rows = statement
            .query([key])
            .map_err(|e| KvError::Other(e.to_string()))?;
        match rows.next().map_err(|e| KvError::Other(e.to_string()))? {
            Some(row) => Ok(Some(
                row.get::<_, Vec<u8>>(0)
                    .map_err(|e| KvError::Other(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }
}

fn read_only() -> KvError {
    KvError::Other("the proofs' SQLite reader is read-only".to_owned())
}

impl KeyValue for SqliteReader {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.read(key)
    }

    fn set(&self, _key: &str, _value: &[u8]) -> Result<(), KvError> {
        Err(read_only())
    }

    fn delete(&self, _key: &str) -> Result<(), KvError> {
        Err(read_only())
    }

    fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.read(key)?.is_some())
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        if delta != 0 {
            return Err(read_only());
        }
        match self.read(key)? {
            None => Ok(0),
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
                .map(i64::from_le_bytes)
                .map_err(|_| KvError::Other(format!("{key} is not a counter"))),
        }
    }

    fn get_many(&self, keys: &[String]) -> Result<KeyValues, KvError> {
        keys.iter()
            .map(|key| Ok((key.clone(), self.read(key)?)))
            .collect()
    }

    fn compare_and_swap(
        &self,
        _key: &str,
        _expected: Option<&[u8]>,
        _new: &[u8],
    ) -> Result<CasOutcome, KvError> {
        Err(read_only())
    }
}

/// Reads instance records from the run's store.
pub enum Records {
    Sqlite(SqliteReader),
    Redis(kiloclaw_core::redis_store::RedisKeyValue<NativeRedis>),
}

impl Records {
    pub fn open(backend: &Backend, state_dir: &Path) -> anyhow::Result<Self> {
        Ok(match backend {
            Backend::Sqlite => Self::Sqlite(SqliteReader::open(state_dir)?),
            Backend::Redis { prefix } => Self::Redis(NativeRedis::store(prefix)?),
        })
    }

    /// The user's record (following creation generations), if it exists.
    pub fn load(&self, user: &str) -> anyhow::Result<Option<InstanceRecord>> {
        fn load_from<K: KeyValue>(kv: &K, user: &str) -> anyhow::Result<Option<InstanceRecord>> {
            let clock = SystemClock;
            let store = RecordStore::new(kv, &clock, StoreSettings::default());
            Ok(store
                .load(user)
                .with_context(|| format!("reading the record of {user}"))?
                .map(|snapshot| snapshot.record))
        }
        match self {
            Self::Sqlite(kv) => load_from(kv, user),
            Self::Redis(kv) => load_from(kv, user),
        }
    }

    pub fn load_all(&self, users: &[String]) -> anyhow::Result<BTreeMap<String, InstanceRecord>> {
        let mut records = BTreeMap::new();
        for user in users {
            if let Some(record) = self.load(user)? {
                records.insert(user.clone(), record);
            }
        }
        Ok(records)
    }
}

/// One machine or volume in the simulator.
#[derive(Debug, Clone)]
pub struct Resource {
    pub id: String,
    pub app: String,
    pub state: String,
    /// The machine's volume (machines only).
    pub volume: Option<String>,
}

/// What Fly (the simulator) holds that is alive: machines not destroying/destroyed, volumes not
/// being destroyed.
#[derive(Debug, Clone, Default)]
pub struct FlyView {
    pub machines: Vec<Resource>,
    pub volumes: Vec<Resource>,
}

impl FlyView {
    pub fn read(admin: &SimAdmin) -> Self {
        let state = admin.state();
        let list = |name: &str| {
            state[name]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|item| Resource {
                    id: item["id"].as_str().unwrap_or_default().to_owned(),
                    app: item["app"].as_str().unwrap_or_default().to_owned(),
                    state: item["state"].as_str().unwrap_or_default().to_owned(),
                    volume: item["config"]["mounts"]
                        .as_array()
                        .and_then(|mounts| mounts.first())
                        .and_then(|mount| mount["volume"].as_str())
                        .map(str::to_owned),
                })
                .collect::<Vec<_>>()
        };
        Self {
            machines: list("machines")
                .into_iter()
                .filter(|m| !matches!(m.state.as_str(), "destroying" | "destroyed"))
                .collect(),
            volumes: list("volumes")
                .into_iter()
                .filter(|v| !v.state.contains("destroy"))
                .collect(),
        }
    }

    /// Apps (one per user) with more than one live machine or volume.
    pub fn duplicates(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (what, resources) in [("machines", &self.machines), ("volumes", &self.volumes)] {
            let mut per_app: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for resource in resources {
                per_app
                    .entry(resource.app.as_str())
                    .or_default()
                    .push(resource.id.as_str());
            }
            for (app, ids) in per_app {
                if ids.len() > 1 {
                    problems.push(format!(
                        "duplicate: app {app} has {} live {what}: {ids:?}",
                        ids.len()
                    ));
                }
            }
        }
        problems
    }
}

/// How strictly the store must equal Fly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Work the record itself names as pending (a machine or volume to destroy, orphans to clean
    /// up, an unconfirmed create) accounts for what Fly still has; the reconciler finishes it.
    PendingAllowed,
    /// Nothing pending: the record names exactly what Fly has.
    Settled,
}

/// Every way in which the records and Fly disagree, one line each (empty: they agree).
pub fn divergences(
    fly: &FlyView,
    records: &BTreeMap<String, InstanceRecord>,
    strictness: Strictness,
) -> Vec<String> {
    let mut problems = fly.duplicates();
    let mut named: BTreeSet<&str> = BTreeSet::new();
    let mut pending: BTreeSet<&str> = BTreeSet::new();
    for record in records.values() {
        named.extend(record.fly_machine_id.as_deref());
        named.extend(record.fly_volume_id.as_deref());
        pending.extend(record.pending_destroy_machine_id.as_deref());
        pending.extend(record.pending_destroy_volume_id.as_deref());
        pending.extend(record.orphaned_machine_ids.iter().map(String::as_str));
        pending.extend(record.orphaned_volume_ids.iter().map(String::as_str));
    }
    let apps_with_unconfirmed_creates: BTreeSet<&str> = records
        .values()
        .filter(|r| r.unconfirmed_create_at.is_some())
        .filter_map(|r| r.fly_app_name.as_deref())
        .collect();
    for (what, resources) in [("machine", &fly.machines), ("volume", &fly.volumes)] {
        for resource in resources {
            if named.contains(resource.id.as_str()) {
                continue;
            }
            let accounted = strictness == Strictness::PendingAllowed
                && (pending.contains(resource.id.as_str())
                    || apps_with_unconfirmed_creates.contains(resource.app.as_str()));
            if !accounted {
                problems.push(format!(
                    "orphan {what} {} in app {} ({}) named by no record",
                    resource.id, resource.app, resource.state
                ));
            }
        }
    }
    let live_machines: BTreeMap<&str, &Resource> =
        fly.machines.iter().map(|m| (m.id.as_str(), m)).collect();
    let live_volumes: BTreeMap<&str, &Resource> =
        fly.volumes.iter().map(|v| (v.id.as_str(), v)).collect();
    for (user, record) in records {
        let mut wrong = |what: String| {
            problems.push(format!(
                "{user}: {what} (status {:?}, machine {:?}, volume {:?}, app {:?}, version {})",
                record.status,
                record.fly_machine_id,
                record.fly_volume_id,
                record.fly_app_name,
                record.version
            ))
        };
        if let Some(id) = record.fly_machine_id.as_deref() {
            match live_machines.get(id) {
                None => wrong(format!(
                    "names machine {id}, which Fly does not have (live)"
                )),
                Some(machine) if Some(machine.app.as_str()) != record.fly_app_name.as_deref() => {
                    wrong(format!("names machine {id} of another app {}", machine.app))
                }
                Some(_) => {}
            }
        }
        if let Some(id) = record.fly_volume_id.as_deref() {
            match live_volumes.get(id) {
                None => wrong(format!("names volume {id}, which Fly does not have")),
                Some(volume) if Some(volume.app.as_str()) != record.fly_app_name.as_deref() => {
                    wrong(format!("names volume {id} of another app {}", volume.app))
                }
                Some(_) => {}
            }
        }
        if strictness == Strictness::Settled
            && (record.pending_destroy_machine_id.is_some()
                || record.pending_destroy_volume_id.is_some()
                || !record.orphaned_machine_ids.is_empty()
                || !record.orphaned_volume_ids.is_empty()
                || record.unconfirmed_create_at.is_some())
        {
            wrong(format!(
                "work left pending: destroy {:?}/{:?}, orphans {:?}/{:?}, unconfirmed create {:?}",
                record.pending_destroy_machine_id,
                record.pending_destroy_volume_id,
                record.orphaned_machine_ids,
                record.orphaned_volume_ids,
                record.unconfirmed_create_at
            ));
        }
    }
    problems
}

/// Records the reconciler must watch (provisioned, in any status, or holding work to settle) that
/// nothing will ever check again (no `nextCheckAtMs`).
pub fn forgotten(records: &BTreeMap<String, InstanceRecord>) -> Vec<String> {
    records
        .iter()
        .filter(|(_, record)| {
            (record.status.is_some() || record.needs_watch()) && record.next_check_at_ms.is_none()
        })
        .map(|(user, record)| {
            format!(
                "{user}: forgotten: status {:?} without nextCheckAtMs (version {}, unconfirmed \
                 create {:?}, orphans {:?}/{:?})",
                record.status,
                record.version,
                record.unconfirmed_create_at,
                record.orphaned_machine_ids,
                record.orphaned_volume_ids
            )
        })
        .collect()
}

/// The last `n` lines of `path` that contain `needle` (for failure reports).
pub fn log_lines(path: &Path, needle: &str, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|line| line.contains(needle))
        .map(|line| line.chars().take(600).collect())
        .collect();
    let skip = lines.len().saturating_sub(n);
    lines.drain(..skip);
    lines
}
