//! Proof 1 of issue 11, races across processes: two real `kiloclaw up` processes share one instance
//! store — one SQLite file (both on one state directory), and again one Redis over the outbound
//! Redis interface (`store_redis_url`, a key prefix of the run's own) — and serve many users' mixed
//! provision/start/stop/destroy/restart/patch calls at once, each user's callers spread over both
//! processes, against one Fly simulator in the test process.
//!
//! Checked: every request is answered (a success, or a documented status with a JSON `error` body;
//! no transport error, no hang, no 400); while the workload runs (sampled) and at the end, no user's
//! app has more than one live machine or volume; at the end every live machine and volume is named
//! by its user's record (or by work the record holds as pending), every id a record names exists in
//! Fly under the user's app, every user that was provisioned still has a record and every
//! provisioned record is scheduled (`nextCheckAtMs`); after reconcile passes nothing is pending and
//! the store equals Fly exactly; no process panicked.
//!
//! Sizes (defaults are what `cargo test` runs): `KILOCLAW_RACE_USERS` (100), `KILOCLAW_RACE_CALLERS`
//! concurrent callers per user (20), `KILOCLAW_RACE_OPS` operations per caller (3),
//! `KILOCLAW_RACE_PARALLEL_USERS` users in flight at once (8, about 80 requests per process, to keep
//! CI short; 20, about 200 per process, is what found the pool exhaustion fixed by the host's
//! admission control, see docs/reliability.md), `KILOCLAW_RACE_SEED` replays a run's choices
//! (printed at the start; the interleaving itself is up to the scheduler).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use support::{
    Backend, Client, FlyView, HostProcess, HostSpec, Op, Records, Rng, Strictness, divergences,
    env_number, forgotten, fresh_seed,
};
use tokio::sync::Semaphore;

/// One test at a time in this binary: each runs two host processes and the whole workload.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Reconcile passes allowed after the workload before the store must equal Fly.
const MAX_PASSES: usize = 3;

#[test]
fn two_processes_on_one_sqlite_file_lose_nothing_and_duplicate_nothing() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    race(Backend::Sqlite)
}

#[test]
fn two_processes_on_one_redis_lose_nothing_and_duplicate_nothing() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let backend = Backend::redis("races");
    let result = race(backend.clone());
    backend.clean_up();
    result
}

#[derive(Debug, Clone, Copy)]
struct Sizes {
    users: u64,
    callers: u64,
    ops: u64,
    parallel_users: u64,
}

impl Sizes {
    fn from_env() -> anyhow::Result<Self> {
        let sizes = Self {
            users: env_number("KILOCLAW_RACE_USERS", 100)?,
            callers: env_number("KILOCLAW_RACE_CALLERS", 20)?,
            ops: env_number("KILOCLAW_RACE_OPS", 3)?,
            parallel_users: env_number("KILOCLAW_RACE_PARALLEL_USERS", 8)?,
        };
        ensure!(
            sizes.users > 0 && sizes.callers > 0 && sizes.ops > 0 && sizes.parallel_users > 0,
            "sizes must be positive: {sizes:?}"
        );
        Ok(sizes)
    }
}

/// What the workload saw.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    /// (operation, status) → count.
    statuses: BTreeMap<(&'static str, u16), u64>,
    /// Users that got a 201 from provision at least once.
    provisioned: BTreeSet<String>,
    problems: Vec<String>,
    /// A few bodies of 5xx answers, for the report.
    server_errors: Vec<String>,
}

fn race(backend: Backend) -> anyhow::Result<()> {
    support::build_components()?;
    let sizes = Sizes::from_env()?;
    let seed = match std::env::var("KILOCLAW_RACE_SEED") {
        Ok(value) => support::parse_number(&value).context("KILOCLAW_RACE_SEED")?,
        Err(_) => fresh_seed(),
    };
    let name = backend.name();
    println!("races[{name}]: seed {seed:#x} (replay: KILOCLAW_RACE_SEED={seed:#x}), {sizes:?}");
    let dir = tempfile::Builder::new()
        .prefix(&format!("kiloclaw-races-{name}-"))
        .tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(run(&backend, sizes, seed, dir.path()));
    match outcome {
        Ok(report) => {
            println!("races[{name}]: {report}");
            Ok(())
        }
        Err(error) => {
            let kept = dir.keep();
            Err(error.context(format!(
                "races[{name}] seed {seed:#x} failed (replay: KILOCLAW_RACE_SEED={seed:#x}); \
                 logs and state kept in {}",
                kept.display()
            )))
        }
    }
}

async fn run(
    backend: &Backend,
    sizes: Sizes,
    seed: u64,
    dir: &std::path::Path,
) -> anyhow::Result<String> {
    let sim = support::start_sim().await?;
    // SQLite: both processes on one state directory, so one key-value file. Redis: separate state
    // directories, as on two machines; the store is the shared Redis.
    let (dir_a, dir_b) = match backend {
        Backend::Sqlite => (dir.join("state"), dir.join("state")),
        Backend::Redis { .. } => (dir.join("state-a"), dir.join("state-b")),
    };
    let spec_a = HostSpec::new(&dir_a, &dir.join("a.log"), &sim, backend, &[]);
    let spec_b = HostSpec::new(&dir_b, &dir.join("b.log"), &sim, backend, &[]);
    let mut a = tokio::task::block_in_place(|| HostProcess::start(&spec_a, None))?;
    let mut b = tokio::task::block_in_place(|| HostProcess::start(&spec_b, None))?;
    let urls = [a.url.clone(), b.url.clone()];
    let client = Client::new()?;

    // Sample Fly for duplicates while the workload runs.
    let sampled: Arc<Mutex<(u64, BTreeSet<String>)>> = Arc::default();
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let admin = sim.admin().clone();
        let (sampled, sampling) = (sampled.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                let duplicates = FlyView::read(&admin).duplicates();
                if let Ok(mut sampled) = sampled.lock() {
                    sampled.0 += 1;
                    sampled.1.extend(duplicates);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let started = Instant::now();
    let users: Vec<String> = (0..sizes.users)
        .map(|i| format!("race-{seed:x}-{i}"))
        .collect();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let gate = Arc::new(Semaphore::new(sizes.parallel_users as usize));
    let mut rng = Rng(seed);
    let mut tasks = tokio::task::JoinSet::new();
    for user in &users {
        let mut user_rng = rng.fork(1);
        let permit = gate.clone().acquire_owned();
        let (client, urls, tally, user) =
            (client.clone(), urls.clone(), tally.clone(), user.clone());
        tasks.spawn(async move {
            let _permit = permit.await?;
            let mut callers = tokio::task::JoinSet::new();
            for caller in 0..sizes.callers {
                let mut caller_rng = user_rng.fork(caller);
                let (client, urls, tally, user) =
                    (client.clone(), urls.clone(), tally.clone(), user.clone());
                callers.spawn(async move {
                    for step in 0..sizes.ops {
                        let op = Op::pick(&mut caller_rng);
                        let url = &urls[((caller + step) % 2) as usize];
                        let tag = caller_rng.below(1_000_000);
                        let answer = client.op(url, op, &user, tag).await;
                        let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
                        tally.requests += 1;
                        match answer {
                            Err(error) => tally.problems.push(format!(
                                "{user}: {} on process {} was not answered: {error}",
                                op.name(),
                                (caller + step) % 2
                            )),
                            Ok(answer) => {
                                *tally
                                    .statuses
                                    .entry((op.name(), answer.status))
                                    .or_default() += 1;
                                if op == Op::Provision && answer.status == 201 {
                                    tally.provisioned.insert(user.clone());
                                }
                                if answer.status >= 500 && tally.server_errors.len() < 12 {
                                    tally.server_errors.push(format!(
                                        "{user} {}: {} {}",
                                        op.name(),
                                        answer.status,
                                        answer.body
                                    ));
                                }
                                if let Some(problem) = answer.problem() {
                                    tally
                                        .problems
                                        .push(format!("{user}: {}: {problem}", op.name()));
                                }
                            }
                        }
                    }
                });
            }
            while let Some(joined) = callers.join_next().await {
                joined.context("caller task")?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("user task")??;
    }
    let workload = started.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    sampler.await.context("sampler")?;
    let (samples, sampled_duplicates) = sampled
        .lock()
        .map(|s| (s.0, s.1.clone()))
        .unwrap_or_default();

    let mut problems: Vec<String> = Vec::new();
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    problems.extend(tally.problems.iter().cloned());
    problems.extend(
        sampled_duplicates
            .iter()
            .map(|d| format!("sampled during the run: {d}")),
    );

    // At the end, before any reconcile: the store and Fly agree up to recorded pending work.
    let records = Records::open(backend, &dir_a)?;
    let at_end = records.load_all(&users)?;
    let fly = FlyView::read(sim.admin());
    problems.extend(
        divergences(&fly, &at_end, Strictness::PendingAllowed)
            .into_iter()
            .map(|p| format!("at the end: {p}")),
    );
    problems.extend(
        forgotten(&at_end)
            .into_iter()
            .map(|p| format!("at the end: {p}")),
    );
    for user in &tally.provisioned {
        if !at_end.contains_key(user) {
            problems.push(format!("lost: {user} was provisioned but has no record"));
        }
    }
    let pending_at_end = at_end
        .values()
        .filter(|r| {
            r.pending_destroy_machine_id.is_some()
                || r.pending_destroy_volume_id.is_some()
                || !r.orphaned_machine_ids.is_empty()
                || !r.orphaned_volume_ids.is_empty()
                || r.unconfirmed_create_at.is_some()
        })
        .count();

    // Then reconcile passes (one explicit reconcile per user per pass, alternating processes) until
    // nothing is pending and the store equals Fly exactly.
    let mut passes = 0;
    let mut settled = Vec::new();
    for pass in 1..=MAX_PASSES {
        passes = pass;
        let gate = Arc::new(Semaphore::new(16));
        let mut reconciles = tokio::task::JoinSet::new();
        for (index, user) in users.iter().enumerate() {
            let (client, url, user, gate) = (
                client.clone(),
                urls[index % 2].clone(),
                user.clone(),
                gate.clone(),
            );
            reconciles.spawn(async move {
                let _slot = gate.acquire_owned().await?;
                let answer = client.reconcile(&url, &user).await;
                anyhow::Ok((user, answer))
            });
        }
        while let Some(joined) = reconciles.join_next().await {
            let (user, answer) = joined.context("reconcile task")??;
            match answer {
                Ok(answer) if answer.status == 200 => {}
                Ok(answer) => problems.push(format!(
                    "reconcile pass {pass}: {user}: {} {}",
                    answer.status, answer.body
                )),
                Err(error) => problems.push(format!(
                    "reconcile pass {pass}: {user}: not answered: {error}"
                )),
            }
        }
        let now = records.load_all(&users)?;
        settled = divergences(&FlyView::read(sim.admin()), &now, Strictness::Settled);
        settled.extend(forgotten(&now));
        if settled.is_empty() {
            break;
        }
    }
    problems.extend(
        settled
            .into_iter()
            .map(|p| format!("after {MAX_PASSES} reconcile passes: {p}")),
    );

    tokio::task::block_in_place(|| {
        a.stop();
        b.stop();
    });
    for (name, spec) in [("a", &spec_a), ("b", &spec_b)] {
        for line in support::log_lines(&spec.log, "panicked", 3) {
            problems.push(format!("process {name} panicked: {line}"));
        }
    }
    let fly = FlyView::read(sim.admin());
    sim.shutdown().await;

    let statuses: BTreeMap<u16, u64> =
        tally
            .statuses
            .iter()
            .fold(BTreeMap::new(), |mut by_status, ((_, status), count)| {
                *by_status.entry(*status).or_default() += count;
                by_status
            });
    let report = format!(
        "{} users x {} callers x {} ops = {} requests over 2 processes in {:.1} s \
         ({} users in flight); statuses {statuses:?}; per operation {:?}; {} users provisioned; \
         {samples} Fly samples during the run; at the end {} live machines, {} volumes, \
         {pending_at_end} records with pending work; store equal to Fly after {passes} reconcile \
         pass(es); 5xx samples: {:?}",
        sizes.users,
        sizes.callers,
        sizes.ops,
        tally.requests,
        workload.as_secs_f64(),
        sizes.parallel_users,
        tally.statuses,
        tally.provisioned.len(),
        fly.machines.len(),
        fly.volumes.len(),
        tally.server_errors,
    );
    ensure!(
        problems.is_empty(),
        "{} invariant violations ({report}):\n{}",
        problems.len(),
        problems
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(report)
}
