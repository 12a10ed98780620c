//! `fleet-bench run`: the orchestrator (see the crate doc).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use kiloclaw_core::clock::Clock;
use kiloclaw_core::due::{DueIndex, MINUTE_MS, SHARDS, minute_of};
use kiloclaw_core::fleet::FleetFeed;
use kiloclaw_core::fly::{FlyClient, FlyClientConfig};
use kiloclaw_core::kv::KeyValue;
use kiloclaw_core::record::{InstanceRecord, InstanceState};
use kiloclaw_core::redis_store::RedisKeyValue;
use kiloclaw_core::store::record_key;
use kiloclaw_core::testing::NativeRedis;
use kiloclaw_flysim::{BlockingSim, BlockingTransport, FaultEffect, FaultRule, Simulator};
use serde_json::{Value, json};

use crate::measure;
use crate::seed::{self, Shape};

/// Whether the fleet feed starts synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FeedMode {
    /// Follow the org listing once before the first tick (the steady state).
    Warm,
    /// Leave the baseline pass to the replicas (under Fly's rate limits).
    Cold,
}

/// What to run.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Fleet sizes.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000])]
    pub instances: Vec<usize>,
    /// Replica counts.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 3])]
    pub replicas: Vec<usize>,
    /// Ticks (simulated minutes) per configuration.
    #[arg(long, default_value_t = 10)]
    pub ticks: u32,
    /// Latency the simulator adds to every Machines API call.
    #[arg(long, default_value_t = 20)]
    pub fly_latency_ms: u64,
    /// `budgetMs` of each tick's reconcile call.
    #[arg(long, default_value_t = 45_000)]
    pub budget_ms: u64,
    /// Instances of the burst comparison (0: no burst).
    #[arg(long, default_value_t = 3_000)]
    pub burst: usize,
    /// `budgetMs` of the burst tick.
    #[arg(long, default_value_t = 20_000)]
    pub burst_budget_ms: u64,
    /// Tick in which one replica is killed, in the largest configuration with several replicas (0: none).
    #[arg(long, default_value_t = 5)]
    pub kill_tick: u32,
    /// How far into that tick the kill comes.
    #[arg(long, default_value_t = 3_000)]
    pub kill_after_ms: u64,
    /// Whether the fleet feed starts synced.
    #[arg(long, value_enum, default_value = "warm")]
    pub feed: FeedMode,
    /// JSON results.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Markdown tables (also printed).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Logs of the replicas, the resolved manifest, their state directories.
    #[arg(long, default_value = "/tmp/fleet-bench")]
    pub work_dir: PathBuf,
    /// Use the components a previous build left instead of building them.
    #[arg(long)]
    pub no_build: bool,
    /// The `redis-server` binary to start privately.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: String,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A private Redis, stopped when dropped.
struct RedisServer {
    child: Child,
    url: String,
}

impl RedisServer {
    fn start(binary: &str, work_dir: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(work_dir.join("redis.log"))?;
        let child = Command::new(binary)
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .current_dir(work_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let server = Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ping = redis::Client::open(server.url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            match ping {
                Ok(_) => return Ok(server),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => bail!("the private Redis did not come up: {e}"),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One replica process, killed when dropped.
struct Replica {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    url: String,
}

impl Replica {
    fn spawn(args: &[String], log: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut child = Command::new(exe)
            .arg("replica")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let stdin = child.stdin.take().context("replica stdin")?;
        let stdout = child.stdout.take().context("replica stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut replica = Self {
            child,
            stdin,
            lines,
            url: String::new(),
        };
        let ready = replica.expect_line("ready ", Duration::from_secs(600))?;
        replica.url = ready.trim_start_matches("ready ").to_owned();
        Ok(replica)
    }

    fn expect_line(&self, prefix: &str, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Ok(line),
                Ok(_) => {}
                Err(e) => bail!("replica: no `{prefix}` line: {e}"),
            }
        }
    }

    fn set_offset(&mut self, ms: i64) -> anyhow::Result<()> {
        writeln!(self.stdin, "offset {ms}")?;
        self.stdin.flush()?;
        self.expect_line(&format!("ok {ms}"), Duration::from_secs(30))?;
        Ok(())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real clock moved by a fixed offset (the simulated time of the seeding).
struct ShiftedClock {
    offset_ms: i64,
}

impl Clock for ShiftedClock {
    fn now_ms(&self) -> i64 {
        now_ms() + self.offset_ms
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// Follows the org listing natively until a pass finished, at simulated `sim_now_ms`.
fn warm_feed(kv: &dyn KeyValue, sim_url: &str, sim_now_ms: i64) -> anyhow::Result<u32> {
    let clock = ShiftedClock {
        offset_ms: sim_now_ms - now_ms(),
    };
    let transport = BlockingTransport::new()?;
    let client = FlyClient::new(
        transport,
        &FlyClientConfig {
            base_url: sim_url.to_owned(),
            api_token: kiloclaw_cli::commands::fly_sim::SIM_API_TOKEN.to_owned(),
            user_agent: "fleet-bench".to_owned(),
        },
    );
    let feed = FleetFeed::new(kv);
    let mut pages = 0;
    for _ in 0..1_000 {
        let step = feed
            .follow(&client, crate::ORG, &clock)
            .map_err(|e| anyhow::anyhow!("following the fleet: {e}"))?;
        pages += step.pages;
        if step.synced {
            return Ok(pages);
        }
        if !step.followed {
            bail!("the fleet feed was held by someone else");
        }
    }
    bail!("the fleet feed did not finish a pass")
}

/// Entries waiting in one shard up to `last_ready`, and its oldest such minute.
fn shard_backlog(
    due: &DueIndex<'_, dyn KeyValue + '_>,
    shard: u32,
    cursor: Option<i64>,
    last_ready: i64,
) -> anyhow::Result<(i64, Option<i64>)> {
    let mut entries = 0;
    let mut oldest = None;
    for minute in cursor.unwrap_or(last_ready - 60)..=last_ready {
        if !due.has_entries(shard, minute)? {
            continue;
        }
        let pending = due.pending(shard, minute)?;
        let waiting = (pending.count - pending.done).max(0);
        if waiting > 0 {
            entries += waiting;
            oldest.get_or_insert(minute);
        }
    }
    Ok((entries, oldest))
}

/// Shards with claim keys right now.
fn claimed_shards(redis: &mut redis::Connection, prefix: &str) -> anyhow::Result<Vec<u32>> {
    let pattern = format!("{prefix}due/s*/claim/*");
    let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(redis)?;
    let mut shards: Vec<u32> = keys
        .iter()
        .filter_map(|k| {
            k.strip_prefix(prefix)?
                .strip_prefix("due/s")?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    shards.sort_unstable();
    shards.dedup();
    Ok(shards)
}

fn info(redis: &mut redis::Connection, section: &str) -> anyhow::Result<String> {
    Ok(redis::cmd("INFO").arg(section).query(redis)?)
}

/// Everything shared by the configurations.
struct Bench<'a> {
    args: &'a RunArgs,
    manifest: PathBuf,
    redis_url: String,
    redis: redis::Connection,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    ticks_per_s: f64,
    markdown: String,
}

/// One configuration in progress: its simulator, replicas and store.
struct Session {
    label: String,
    sim: BlockingSim,
    prefix: String,
    kv: RedisKeyValue<NativeRedis>,
    replicas: Vec<Replica>,
    replica_args: Vec<Vec<String>>,
    logs: Vec<PathBuf>,
    /// Simulated time of tick 0.
    t0: i64,
    offset: i64,
    /// Concurrent reconcile calls each replica gets per tick: walkers inside one host, as the SpinKube
    /// CronJob makes them.
    walkers: usize,
}

/// One tick's measurements.
struct TickResult {
    json: Value,
    checked: u64,
    fly_total: u64,
    wall_ms: f64,
}

impl Bench<'_> {
    fn start_session(
        &mut self,
        label: &str,
        instances: usize,
        replicas: usize,
        shape: Shape,
    ) -> anyhow::Result<(Session, Value)> {
        let _: () = redis::cmd("FLUSHALL").query(&mut self.redis)?;
        let mut sim_config = kiloclaw_cli::commands::fly_sim::config("127.0.0.1:0".parse()?, None);
        sim_config.rate_limits = false;
        let sim = Simulator::start_blocking(sim_config)?;
        let prefix = format!("fleet-bench:{label}:");
        let m0 = minute_of(now_ms()) + 2;
        let t0 = m0 * MINUTE_MS + 2_000;
        let seed_now = t0 - MINUTE_MS;
        let started = Instant::now();
        let seeded = seed::seed(
            sim.admin(),
            &mut self.redis,
            &prefix,
            instances,
            shape,
            m0,
            seed_now,
        )?;
        let seed_s = started.elapsed().as_secs_f64();
        let kv = RedisKeyValue::new(NativeRedis::connect_to(&self.redis_url)?, &prefix);
        let feed_pages = match self.args.feed {
            FeedMode::Warm => warm_feed(&kv, sim.api_url(), t0)?,
            FeedMode::Cold => 0,
        };
        let warm_s = started.elapsed().as_secs_f64() - seed_s;
        sim.admin().add_fault(FaultRule::new(
            "*",
            FaultEffect::Latency {
                ms: self.args.fly_latency_ms,
            },
        ));
        sim.admin().set_rate_limits(true);
        sim.admin().clear_request_stats();
        eprintln!(
            "fleet-bench: {label}: seeded {instances} ({} running, {} stopped) in {seed_s:.1} s, feed {:?} ({feed_pages} pages, {warm_s:.1} s)",
            seeded.running, seeded.stopped, self.args.feed
        );
        let mut session = Session {
            label: label.to_owned(),
            prefix: prefix.clone(),
            kv,
            replicas: Vec::new(),
            replica_args: Vec::new(),
            logs: Vec::new(),
            t0,
            offset: 0,
            sim,
            walkers: 1,
        };
        let spawn_started = Instant::now();
        for index in 0..replicas {
            let state_dir = self.args.work_dir.join(format!("{label}-replica-{index}"));
            let args = vec![
                "--manifest".to_owned(),
                self.manifest.display().to_string(),
                "--state-dir".to_owned(),
                state_dir.display().to_string(),
                "--redis-url".to_owned(),
                self.redis_url.clone(),
                "--redis-prefix".to_owned(),
                prefix.clone(),
                "--sim-url".to_owned(),
                session.sim.api_url().to_owned(),
            ];
            let log = self
                .args
                .work_dir
                .join(format!("{label}-replica-{index}.log"));
            let _ = std::fs::remove_file(&log);
            session.replicas.push(Replica::spawn(&args, &log)?);
            session.replica_args.push(args);
            session.logs.push(log);
        }
        eprintln!(
            "fleet-bench: {label}: {replicas} replica(s) ready in {:.1} s",
            spawn_started.elapsed().as_secs_f64()
        );
        let info = json!({
            "instances": instances,
            "replicas": replicas,
            "running": seeded.running,
            "stopped": seeded.stopped,
            "seedSeconds": seed_s,
            "feed": format!("{:?}", self.args.feed).to_lowercase(),
            "feedWarmPages": feed_pages,
        });
        Ok((session, info))
    }

    /// Runs tick `k` (simulated minute `t0 + k`), optionally killing replica 0 `kill_after` into it.
    fn tick(
        &mut self,
        session: &mut Session,
        k: u32,
        budget_ms: u64,
        kill_after: Option<Duration>,
    ) -> anyhow::Result<TickResult> {
        let target = session.t0 + i64::from(k) * MINUTE_MS;
        let offset = target - now_ms();
        for replica in &mut session.replicas {
            replica.set_offset(offset)?;
        }
        session.offset = offset;
        let cpu_before: Vec<Option<u64>> = session
            .replicas
            .iter()
            .map(|r| measure::process_cpu_ticks(r.pid()))
            .collect();
        let own_before = measure::process_cpu_ticks(std::process::id()).unwrap_or(0);
        let redis_before = measure::parse_commandstats(&info(&mut self.redis, "commandstats")?);
        let redis_cpu_before = measure::parse_redis_cpu_ms(&info(&mut self.redis, "cpu")?);
        let fly_before = measure::fly_counts(&session.sim.admin().request_stats());

        let body = json!({ "budgetMs": budget_ms }).to_string();
        let urls: Vec<String> = session
            .replicas
            .iter()
            .flat_map(|r| std::iter::repeat_n(r.url.clone(), session.walkers))
            .collect();
        let http = self.http.clone();
        let started = Instant::now();
        let mut killed = None;
        let redis = &mut self.redis;
        let prefix = session.prefix.clone();
        let victim = session.replicas.first_mut();
        let (answers, kill_note) = self.runtime.block_on(async {
            let posts = urls.iter().map(|url| {
                let request = http
                    .post(format!("{url}/api/platform/reconcile"))
                    .header("x-internal-api-key", crate::INTERNAL_API_SECRET)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .timeout(Duration::from_millis(budget_ms) + Duration::from_secs(120));
                async move {
                    match request.send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let text = response.text().await.unwrap_or_default();
                            let json: Value = serde_json::from_str(&text)
                                .unwrap_or_else(|_| json!({ "raw": text }));
                            json!({ "status": status, "body": json })
                        }
                        Err(e) => json!({ "error": e.to_string() }),
                    }
                }
            });
            let kill = async {
                let (Some(after), Some(victim)) = (kill_after, victim) else {
                    return None;
                };
                tokio::time::sleep(after).await;
                let cpu = measure::process_cpu_ticks(victim.pid());
                let pid = victim.pid();
                let _ = victim.child.kill();
                let _ = victim.child.wait();
                let at_ms = started.elapsed().as_millis();
                let shards = claimed_shards(redis, &prefix).unwrap_or_default();
                Some((pid, cpu, at_ms, shards))
            };
            let timed_posts = async {
                let answers = futures_util::future::join_all(posts).await;
                (answers, started.elapsed())
            };
            let ((answers, posts_took), note) = futures_util::join!(timed_posts, kill);
            (answers, (posts_took, note))
        });
        let (posts_took, kill_note) = kill_note;
        // The tick's wall time is until the last answer (a kill that comes later is not part of it).
        let wall_ms = posts_took.as_secs_f64() * 1_000.0;
        if let Some((pid, cpu, at_ms, shards)) = kill_note {
            killed = Some(json!({
                "pid": pid,
                "atMs": at_ms,
                "cpuTicksAtKill": cpu,
                "claimedShardsRightAfterKill": shards,
            }));
        }

        // CPU: a killed replica counts up to its kill (read just before it).
        let mut cpu_ticks = 0u64;
        for (index, replica) in session.replicas.iter().enumerate() {
            let before = cpu_before[index].unwrap_or(0);
            let after = match (&killed, index) {
                (Some(note), 0) => note["cpuTicksAtKill"].as_u64(),
                _ => measure::process_cpu_ticks(replica.pid()),
            };
            cpu_ticks += after.unwrap_or(before).saturating_sub(before);
        }
        let replica_cpu_ms = cpu_ticks as f64 * 1_000.0 / self.ticks_per_s;
        let own_cpu_ms = measure::process_cpu_ticks(std::process::id())
            .unwrap_or(0)
            .saturating_sub(own_before) as f64
            * 1_000.0
            / self.ticks_per_s;
        let redis_after = measure::parse_commandstats(&info(&mut self.redis, "commandstats")?);
        let redis_cpu_ms =
            measure::parse_redis_cpu_ms(&info(&mut self.redis, "cpu")?) - redis_cpu_before;
        let kv_ops = measure::delta(&redis_after, &redis_before);
        let kv_total: u64 = kv_ops.values().sum();
        let fly = measure::delta(
            &measure::fly_counts(&session.sim.admin().request_stats()),
            &fly_before,
        );
        let fly_total = measure::total_calls(&fly);

        let field = |name: &str| -> u64 {
            answers
                .iter()
                .map(|a| a["body"][name].as_u64().unwrap_or(0))
                .sum()
        };
        let checked = field("checked");
        let sim_now = now_ms() + session.offset;
        let due = DueIndex::new(&session.kv as &dyn KeyValue);
        let backlog = due.backlog(sim_now)?;
        let last_ready = minute_of(sim_now) - 1;
        let cursors = due.cursors()?;
        let mut shards = Vec::new();
        for (shard, cursor) in (0..SHARDS).zip(cursors) {
            let (entries, oldest) = shard_backlog(&due, shard, cursor, last_ready)?;
            shards.push(json!({ "shard": shard, "cursor": cursor, "backlog": entries, "oldestMinute": oldest }));
        }
        let feed = FleetFeed::new(&session.kv).state()?;
        let fresh = FleetFeed::is_fresh(&feed, sim_now);
        let claims_after = claimed_shards(&mut self.redis, &session.prefix)?;
        let oldest_lag_min = backlog.oldest_minute.map(|m| last_ready - m + 1);
        let json = json!({
            "tick": k,
            "simNowMs": sim_now,
            "wallMs": wall_ms,
            "answers": answers,
            "checked": checked,
            "skipped": field("skipped"),
            "requeued": field("requeued"),
            "errors": field("errors"),
            "minutes": field("minutes"),
            "kvOps": kv_total,
            "kvOpsByCommand": kv_ops,
            "flyCalls": fly_total,
            "flyByOperation": fly,
            "replicaCpuMs": replica_cpu_ms,
            "redisCpuMs": redis_cpu_ms,
            "benchAndSimCpuMs": own_cpu_ms,
            "backlog": backlog.entries,
            "oldestMinute": backlog.oldest_minute,
            "oldestLagMinutes": oldest_lag_min,
            "shards": shards,
            "feedFresh": fresh,
            "feedSyncedAtMs": feed.synced_at_ms(),
            "claimedShardsAfterTick": claims_after,
            "kill": killed,
        });
        eprintln!(
            "fleet-bench: {} tick {k}: {:.1} s, checked {checked}, kv {kv_total}, fly {fly_total}, cpu {:.0} ms, backlog {} (oldest lag {:?} min), feed fresh {fresh}{}",
            session.label,
            wall_ms / 1_000.0,
            replica_cpu_ms,
            backlog.entries,
            oldest_lag_min,
            if killed.is_some() {
                ", replica 0 killed"
            } else {
                ""
            }
        );
        Ok(TickResult {
            json,
            checked,
            fly_total,
            wall_ms,
        })
    }

    /// Every record's distance to its next check at the end of a run.
    fn overdue(&self, session: &Session, users: usize) -> anyhow::Result<Value> {
        let sim_now = now_ms() + session.offset;
        let mut by_status: BTreeMap<String, (u64, i64, u64)> = BTreeMap::new();
        let keys: Vec<String> = (0..users)
            .map(|i| record_key(&format!("bench-user-{i:06}")))
            .collect();
        for chunk in keys.chunks(1_000) {
            for (_, raw) in session.kv.get_many(chunk)? {
                let Some(raw) = raw else { continue };
                let (record, _) =
                    InstanceRecord::decode(&raw).map_err(|e| anyhow::anyhow!("record: {e}"))?;
                let status = record
                    .status
                    .map_or("none", InstanceState::as_str)
                    .to_owned();
                let overdue = record
                    .next_check_at_ms
                    .map_or(i64::MAX, |next| sim_now - next);
                let entry = by_status.entry(status).or_insert((0, i64::MIN, 0));
                entry.0 += 1;
                entry.1 = entry.1.max(overdue);
                if overdue > 2 * MINUTE_MS {
                    entry.2 += 1;
                }
            }
        }
        Ok(Value::Object(
            by_status
                .into_iter()
                .map(|(status, (count, max, late))| {
                    (
                        status,
                        json!({ "count": count, "maxOverdueMs": max, "overdueMoreThan2Min": late }),
                    )
                })
                .collect(),
        ))
    }

    fn run_config(
        &mut self,
        instances: usize,
        replicas: usize,
        kill: bool,
    ) -> anyhow::Result<Value> {
        let label = format!("{}k-x{replicas}", instances / 1_000);
        let (mut session, info) = self.start_session(&label, instances, replicas, Shape::Mixed)?;
        let mut ticks = Vec::new();
        let mut checked = 0;
        let mut fly_total = 0;
        let mut kill_report = None;
        for k in 1..=self.args.ticks {
            let kill_now = kill && k == self.args.kill_tick && replicas > 1;
            let result = self.tick(
                &mut session,
                k,
                self.args.budget_ms,
                kill_now.then(|| Duration::from_millis(self.args.kill_after_ms)),
            )?;
            checked += result.checked;
            fly_total += result.fly_total;
            if kill_now {
                let restart = Instant::now();
                let args = session.replica_args[0].clone();
                let log = session.logs[0].clone();
                session.replicas[0] = Replica::spawn(&args, &log)?;
                kill_report = Some(json!({
                    "tick": k,
                    "kill": result.json["kill"],
                    "shardsStillClaimedAfterTick": result.json["claimedShardsAfterTick"],
                    "restartSeconds": restart.elapsed().as_secs_f64(),
                }));
                eprintln!(
                    "fleet-bench: {label}: replica 0 killed in tick {k}, restarted in {:.1} s",
                    restart.elapsed().as_secs_f64()
                );
            }
            ticks.push(result.json);
        }
        let overdue = self.overdue(&session, instances)?;
        let minutes = f64::from(self.args.ticks);
        let fly_per_instance_5min = fly_total as f64 / instances as f64 * 5.0 / minutes;
        let summary = json!({
            "checked": checked,
            "flyCalls": fly_total,
            "flyPerInstancePer5Min": fly_per_instance_5min,
            "finalBacklog": ticks.last().map(|t| t["backlog"].clone()),
            "overdueAtEnd": overdue,
        });
        self.markdown_config(&label, &info, &ticks, &summary, kill_report.as_ref());
        Ok(
            json!({ "label": label, "setup": info, "ticks": ticks, "summary": summary, "kill": kill_report }),
        )
    }

    fn run_burst(
        &mut self,
        count: usize,
        replicas: usize,
        walkers: usize,
    ) -> anyhow::Result<Value> {
        let label = format!("burst{count}-x{replicas}-w{walkers}");
        let (mut session, info) = self.start_session(&label, count, replicas, Shape::Burst)?;
        session.walkers = walkers;
        let result = self.tick(&mut session, 1, self.args.burst_budget_ms, None)?;
        let per_s = result.checked as f64 / (result.wall_ms / 1_000.0);
        Ok(
            json!({ "label": label, "setup": info, "walkersPerReplica": walkers, "tick": result.json, "checksPerSecond": per_s }),
        )
    }

    fn markdown_config(
        &mut self,
        label: &str,
        info: &Value,
        ticks: &[Value],
        summary: &Value,
        kill: Option<&Value>,
    ) {
        let md = &mut self.markdown;
        let _ = writeln!(
            md,
            "\n#### {label}: {} instances ({} running, {} stopped), {} replica(s)\n",
            info["instances"], info["running"], info["stopped"], info["replicas"]
        );
        let _ = writeln!(
            md,
            "| tick | wall s | checked | skipped | requeued | errors | KV ops | KV ops/check | Fly calls (429) | Fly/check | replica CPU ms/check | Redis CPU ms | backlog | oldest lag (min) | feed fresh |"
        );
        let _ = writeln!(
            md,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"
        );
        for t in ticks {
            let checked = t["checked"].as_f64().unwrap_or(0.0);
            let per = |v: f64| {
                if checked > 0.0 {
                    format!("{:.1}", v / checked)
                } else {
                    "–".to_owned()
                }
            };
            let limited: u64 = t["flyByOperation"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(k, _)| k.ends_with(":429"))
                        .filter_map(|(_, v)| v.as_u64())
                        .sum()
                })
                .unwrap_or(0);
            let kill = if t["kill"].is_null() { "" } else { " (kill)" };
            let _ = writeln!(
                md,
                "| {}{kill} | {:.1} | {} | {} | {} | {} | {} | {} | {} ({limited}) | {} | {} | {:.0} | {} | {} | {} |",
                t["tick"],
                t["wallMs"].as_f64().unwrap_or(0.0) / 1_000.0,
                t["checked"],
                t["skipped"],
                t["requeued"],
                t["errors"],
                t["kvOps"],
                per(t["kvOps"].as_f64().unwrap_or(0.0)),
                t["flyCalls"],
                if checked > 0.0 {
                    format!("{:.2}", t["flyCalls"].as_f64().unwrap_or(0.0) / checked)
                } else {
                    "–".to_owned()
                },
                per(t["replicaCpuMs"].as_f64().unwrap_or(0.0)),
                t["redisCpuMs"].as_f64().unwrap_or(0.0),
                t["backlog"],
                t["oldestLagMinutes"]
                    .as_i64()
                    .map_or("–".to_owned(), |v| v.to_string()),
                if t["feedFresh"].as_bool().unwrap_or(false) {
                    "yes"
                } else {
                    "no"
                },
            );
        }
        let _ = writeln!(
            md,
            "\nChecked {} in {} ticks; Fly calls {} = {:.3} per instance per 5 min; backlog after the last tick {}; at the end: {}.",
            summary["checked"],
            ticks.len(),
            summary["flyCalls"],
            summary["flyPerInstancePer5Min"].as_f64().unwrap_or(0.0),
            summary["finalBacklog"],
            summary["overdueAtEnd"],
        );
        if let Some(kill) = kill {
            let _ = writeln!(md, "\nKill: {kill}");
        }
    }
}

/// Runs the benchmark.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.work_dir)?;
    let root = workspace_root();
    let artifacts = if args.no_build {
        kiloclaw_cli::build::prebuilt_components(&root)?
    } else {
        kiloclaw_cli::build::build_components(&root)?
    };
    let manifest = kiloclaw_cli::manifest::resolve_manifest(
        &root.join("spin.toml"),
        &artifacts,
        &args.work_dir.join("spin.toml"),
    )?;
    let redis_server = RedisServer::start(&args.redis_server, &args.work_dir)?;
    let redis = redis::Client::open(redis_server.url.as_str())?.get_connection()?;
    let mut bench = Bench {
        args,
        manifest,
        redis_url: redis_server.url.clone(),
        redis,
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        http: reqwest::Client::builder().no_proxy().build()?,
        ticks_per_s: measure::clock_ticks_per_second(),
        markdown: String::new(),
    };
    let largest = args.instances.iter().copied().max().unwrap_or(0);
    let most = args.replicas.iter().copied().max().unwrap_or(1);
    let mut configs = Vec::new();
    for &instances in &args.instances {
        for &replicas in &args.replicas {
            let kill =
                args.kill_tick > 0 && instances == largest && replicas == most && replicas > 1;
            configs.push(bench.run_config(instances, replicas, kill)?);
        }
    }
    let mut bursts = Vec::new();
    if args.burst > 0 {
        for &replicas in &args.replicas {
            bursts.push(bench.run_burst(args.burst, replicas, 1)?);
        }
        // The same concurrency inside one host: several walkers (concurrent reconcile calls) per replica.
        if most > 1 {
            bursts.push(bench.run_burst(args.burst, 1, most)?);
        }
        let _ = writeln!(
            bench.markdown,
            "\n#### Burst: {} instances due in one minute, each needing a full check (2 Fly reads), one tick of {} ms\n",
            args.burst, args.burst_budget_ms
        );
        let _ = writeln!(
            bench.markdown,
            "| replicas | walkers per replica | wall s | checked | checks/s | Fly calls | replica CPU ms/check |"
        );
        let _ = writeln!(bench.markdown, "|---:|---:|---:|---:|---:|---:|---:|");
        for burst in &bursts {
            let tick = &burst["tick"];
            let checked = tick["checked"].as_f64().unwrap_or(0.0).max(1.0);
            let _ = writeln!(
                bench.markdown,
                "| {} | {} | {:.1} | {} | {:.1} | {} | {:.1} |",
                burst["setup"]["replicas"],
                burst["walkersPerReplica"],
                tick["wallMs"].as_f64().unwrap_or(0.0) / 1_000.0,
                tick["checked"],
                burst["checksPerSecond"].as_f64().unwrap_or(0.0),
                tick["flyCalls"],
                tick["replicaCpuMs"].as_f64().unwrap_or(0.0) / checked,
            );
        }
        let rate = |burst: &Value| burst["checksPerSecond"].as_f64().unwrap_or(0.0);
        if let Some(one) = bursts.first() {
            for other in &bursts[1..] {
                let _ = writeln!(
                    bench.markdown,
                    "\n{} replica(s) × {} walker(s) vs 1 × 1: {:.2}× the checks per second.",
                    other["setup"]["replicas"],
                    other["walkersPerReplica"],
                    rate(other) / rate(one).max(1e-9)
                );
            }
        }
    }
    println!("{}", bench.markdown);
    if let Some(path) = &args.markdown {
        std::fs::write(path, &bench.markdown)?;
    }
    let results = json!({
        "settings": {
            "ticks": args.ticks,
            "budgetMs": args.budget_ms,
            "flyLatencyMs": args.fly_latency_ms,
            "rateLimits": true,
            "feed": format!("{:?}", args.feed).to_lowercase(),
            "profile": if cfg!(debug_assertions) { "dev" } else { "release" },
        },
        "configs": configs,
        "bursts": bursts,
    });
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.work_dir.join("results.json"));
    std::fs::write(&out, serde_json::to_vec_pretty(&results)?)?;
    eprintln!("fleet-bench: results in {}", out.display());
    Ok(())
}
