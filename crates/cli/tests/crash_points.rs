//! Proof 2 of issue 11, crash points: a real `kiloclaw up` process is killed with SIGKILL at a
//! random crash point — right after a key-value write (record creation's election and `set`, a
//! compare-and-swap of the record or its lease, a due-index or sweep-registry write) or right after
//! a Fly API response (the work is done on Fly, the commit that should follow is not) — while a
//! small seeded workload of mixed provision/start/stop/destroy/restart/patch calls runs, beside
//! repeated due walks (`POST /api/platform/reconcile {}`, what a cron tick runs: claims, requeues,
//! sweep batches), so a crash can also land inside a walk. The
//! process is started again on the same store, with the same Fly simulator (which lives in the test
//! process), the reconciler runs (one explicit `POST /api/platform/reconcile {"userId"}` per user
//! per pass), and then:
//!
//! - **no duplicate**: no user's app has more than one live machine or volume;
//! - **no orphan**: every live machine and volume is named by its user's record, and every id a
//!   record names exists (nothing pending is left after the passes);
//! - **no stuck lease**: a `start` for every user (the lease TTL is a few seconds here,
//!   `lease_ttl_seconds`) succeeds or answers a documented status that is neither 409 nor
//!   "another operation in progress";
//! - **no forgotten instance**: every provisioned record has `nextCheckAtMs`.
//!
//! The crash points are the host's test-only hook (`KILOCLAW_CRASH_AFTER=n`: SIGKILL at the n-th
//! event; crates/host/src/crash.rs). Each trial draws its store (SQLite or Redis), its workload and
//! `n` from its seed — in half the trials among all events, in the others among the Fly `POST`s
//! (creates, starts, stops, updates) or `DELETE`s only (`KILOCLAW_CRASH_MATCH`); a trial whose
//! workload ends before the n-th event finishes without a crash (counted). `KILOCLAW_CRASH_SEED` sets the first trial's seed (each next trial's seed is drawn
//! from the previous one, so a failing trial replays with `KILOCLAW_CRASH_SEED=<its seed>
//! KILOCLAW_CRASH_TRIALS=1`; which requests are in flight at the crash is up to the scheduler);
//! `KILOCLAW_CRASH_TRIALS` (50), `KILOCLAW_CRASH_USERS` per trial (3),
//! `KILOCLAW_CRASH_MAX_EVENT` (the largest n drawn among all events, 120),
//! `KILOCLAW_CRASH_PARALLEL` trials at once (5), `KILOCLAW_CRASH_LEASE_TTL` (seconds, 3).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use support::{
    Backend, Client, FlyView, HostProcess, HostSpec, Op, Records, Rng, Strictness, divergences,
    env_number, forgotten, fresh_seed,
};
use tokio::sync::Semaphore;

/// Reconcile passes after the restart before the store must equal Fly.
const MAX_PASSES: usize = 4;
/// Concurrent callers per user in a trial, and operations per caller.
const CALLERS: u64 = 2;
const OPS: u64 = 4;

#[derive(Debug, Clone, Copy)]
struct Params {
    trials: u64,
    users: u64,
    max_event: u64,
    parallel: u64,
    lease_ttl_s: u64,
}

/// What one trial did and found.
#[derive(Debug, Default)]
struct Outcome {
    seed: u64,
    backend: &'static str,
    crash_after: u64,
    /// Only the events whose description contains this were counted.
    only: Option<&'static str>,
    /// The host's crash line, if it crashed.
    crash: Option<String>,
    requests: u64,
    unanswered_at_crash: u64,
    passes: usize,
    problems: Vec<String>,
    elapsed: Duration,
}

#[test]
fn sigkill_at_random_crash_points_leaves_no_duplicate_orphan_stuck_lease_or_forgotten_instance()
-> anyhow::Result<()> {
    support::build_components()?;
    let params = Params {
        trials: env_number("KILOCLAW_CRASH_TRIALS", 50)?,
        users: env_number("KILOCLAW_CRASH_USERS", 3)?,
        max_event: env_number("KILOCLAW_CRASH_MAX_EVENT", 120)?,
        parallel: env_number("KILOCLAW_CRASH_PARALLEL", 5)?,
        lease_ttl_s: env_number("KILOCLAW_CRASH_LEASE_TTL", 3)?,
    };
    ensure!(
        params.trials > 0 && params.users > 0 && params.max_event > 0 && params.parallel > 0,
        "sizes must be positive: {params:?}"
    );
    let seed = match std::env::var("KILOCLAW_CRASH_SEED") {
        Ok(value) => support::parse_number(&value).context("KILOCLAW_CRASH_SEED")?,
        Err(_) => fresh_seed(),
    };
    println!("crash points: seed {seed:#x} (replay: KILOCLAW_CRASH_SEED={seed:#x}), {params:?}");
    let mut seeds = vec![seed];
    while (seeds.len() as u64) < params.trials {
        let last = seeds[seeds.len() - 1];
        seeds.push(Rng(last).next_u64());
    }
    let dir = tempfile::Builder::new()
        .prefix("kiloclaw-crash-points-")
        .tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let outcomes = runtime.block_on(async {
        let gate = Arc::new(Semaphore::new(params.parallel as usize));
        let mut trials = tokio::task::JoinSet::new();
        for (index, trial_seed) in seeds.iter().copied().enumerate() {
            let gate = gate.clone();
            let trial_dir = dir.path().join(format!("trial-{index}"));
            trials.spawn(async move {
                let _slot = gate.acquire_owned().await?;
                let outcome = trial(trial_seed, params, &trial_dir).await;
                anyhow::Ok((index, trial_seed, outcome))
            });
        }
        let mut outcomes = BTreeMap::new();
        while let Some(joined) = trials.join_next().await {
            let (index, trial_seed, outcome) = joined.context("trial task")??;
            let outcome = outcome.unwrap_or_else(|error| Outcome {
                seed: trial_seed,
                problems: vec![format!("the trial could not run: {error:#}")],
                ..Outcome::default()
            });
            println!(
                "trial {index:>3} seed {:#018x} {:<6} n={:<4}{} {} — {} requests, {} unanswered \
                 at the crash, {} pass(es), {:.1} s{}",
                outcome.seed,
                outcome.backend,
                outcome.crash_after,
                outcome
                    .only
                    .map(|o| format!(" of {o:?}"))
                    .unwrap_or_default(),
                outcome
                    .crash
                    .as_deref()
                    .unwrap_or("finished without crashing"),
                outcome.requests,
                outcome.unanswered_at_crash,
                outcome.passes,
                outcome.elapsed.as_secs_f64(),
                if outcome.problems.is_empty() {
                    String::new()
                } else {
                    format!(" — {} VIOLATION(S)", outcome.problems.len())
                }
            );
            outcomes.insert(index, outcome);
        }
        anyhow::Ok(outcomes)
    })?;

    // Crashes by kind.
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for outcome in outcomes.values() {
        *kinds
            .entry(crash_kind(outcome.crash.as_deref()))
            .or_default() += 1;
    }
    let failed: Vec<&Outcome> = outcomes
        .values()
        .filter(|o| !o.problems.is_empty())
        .collect();
    let summary = format!(
        "{} trials in {:.0} s ({} crashed, {} finished without crashing); crashes by kind \
         {kinds:?}; {} requests; {} trial(s) with violations",
        outcomes.len(),
        started.elapsed().as_secs_f64(),
        outcomes.values().filter(|o| o.crash.is_some()).count(),
        outcomes.values().filter(|o| o.crash.is_none()).count(),
        outcomes.values().map(|o| o.requests).sum::<u64>(),
        failed.len(),
    );
    println!("crash points: {summary}");
    if failed.is_empty() {
        return Ok(());
    }
    let kept = dir.keep();
    let details: Vec<String> = failed
        .iter()
        .map(|o| {
            format!(
                "seed {:#x} ({}, n={}, {}) — replay: KILOCLAW_CRASH_SEED={:#x} \
                 KILOCLAW_CRASH_TRIALS=1\n  {}",
                o.seed,
                o.backend,
                o.crash_after,
                o.crash.as_deref().unwrap_or("no crash"),
                o.seed,
                o.problems.join("\n  ")
            )
        })
        .collect();
    anyhow::bail!(
        "crash points: {summary}; logs kept in {}\n{}",
        kept.display(),
        details.join("\n")
    )
}

/// The kind of a crash line (`kiloclaw: crash point n: after … ; SIGKILL`).
fn crash_kind(line: Option<&str>) -> String {
    let Some(line) = line else {
        return "no crash".to_owned();
    };
    let event = line.split_once(": after ").map(|(_, e)| e).unwrap_or(line);
    let event = event.trim_end_matches("; SIGKILL");
    let words: Vec<&str> = event.split_whitespace().collect();
    match words.as_slice() {
        ["key-value", operation, key, ..] => {
            let family = key.split('/').next().unwrap_or(key);
            format!("kv {operation} {family}")
        }
        ["outbound", "Redis", command, rest @ ..] => {
            let family = rest
                .first()
                .map(|key| key.rsplit(':').next().unwrap_or(key))
                .map(|key| key.split('/').next().unwrap_or(key))
                .unwrap_or("");
            format!("redis {command} {family}").trim_end().to_owned()
        }
        ["outbound", "HTTP", method, url, ..] => {
            // The Machines API path without ids: /v1/apps/{app}/machines/{id}/start → machines/start.
            let path = url.split_once("/v1/").map(|(_, p)| p).unwrap_or(url);
            let parts: Vec<&str> = path.split('/').collect();
            let shape: Vec<&str> = parts
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == 0)
                .map(|(_, p)| *p)
                .collect();
            format!("fly {method} {}", shape.join("/"))
        }
        _ => event.to_owned(),
    }
}

async fn trial(seed: u64, params: Params, dir: &Path) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut rng = Rng(seed);
    let backend = if rng.below(2) == 0 {
        Backend::Sqlite
    } else {
        Backend::redis(&format!("crash-{seed:x}"))
    };
    // Half the trials count every event; the others aim at the Fly calls that change something
    // (creates, starts, stops, updates: POST; deletes: DELETE), which are rarer among all events.
    let (only, max_event) = match rng.below(4) {
        0 | 1 => (None, params.max_event),
        2 => (Some("HTTP POST"), 16),
        _ => (Some("HTTP DELETE"), 4),
    };
    let crash_after = 1 + rng.below(max_event);
    let mut outcome = Outcome {
        seed,
        backend: backend.name(),
        crash_after,
        only,
        ..Outcome::default()
    };
    let result = run_trial(&backend, &mut rng, params, dir, &mut outcome).await;
    backend.clean_up();
    if let Err(error) = result {
        outcome.problems.push(format!("{error:#}"));
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

async fn run_trial(
    backend: &Backend,
    rng: &mut Rng,
    params: Params,
    dir: &Path,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let sim = support::start_sim().await?;
    let state = dir.join("state");
    let log = dir.join("host.log");
    let ttl = params.lease_ttl_s.to_string();
    let spec = HostSpec::new(
        &state,
        &log,
        &sim,
        backend,
        &[("lease_ttl_seconds", ttl.as_str())],
    );
    let users: Vec<String> = (0..params.users)
        .map(|i| format!("crash-{:x}-{i}", outcome.seed))
        .collect();
    let client = Client::new()?;

    // The workload, until it ends or the process dies.
    let crash_after = (outcome.crash_after, outcome.only);
    let mut host = tokio::task::block_in_place(|| HostProcess::start(&spec, Some(crash_after)))?;
    let url = host.url.clone();
    let dead = Arc::new(AtomicBool::new(false));
    let mut callers = tokio::task::JoinSet::new();
    for user in &users {
        for caller in 0..CALLERS {
            let mut caller_rng = rng.fork(caller);
            let (client, url, user, dead) =
                (client.clone(), url.clone(), user.clone(), dead.clone());
            callers.spawn(async move {
                let mut answers = Vec::new();
                for step in 0..OPS {
                    if dead.load(Ordering::SeqCst) {
                        break;
                    }
                    // Every user is provisioned first by its first caller.
                    let op = if caller == 0 && step == 0 {
                        Op::Provision
                    } else {
                        Op::pick(&mut caller_rng)
                    };
                    let tag = caller_rng.below(1_000_000);
                    let answer = client.op(&url, op, &user, tag).await;
                    if answer.is_err() {
                        dead.store(true, Ordering::SeqCst);
                    }
                    answers.push((user.clone(), op, answer));
                }
                answers
            });
        }
    }
    // Due walks beside the workload, as cron ticks would run them, so that crash points also land
    // inside a walk (claims, requeues, sweep batches) and not only in lifecycle steps.
    callers.spawn({
        let (client, url, dead) = (client.clone(), url.clone(), dead.clone());
        async move {
            let mut answers = Vec::new();
            for _ in 0..OPS {
                if dead.load(Ordering::SeqCst) {
                    break;
                }
                let answer = client.op(&url, Op::Reconcile, "", 0).await;
                if answer.is_err() {
                    dead.store(true, Ordering::SeqCst);
                }
                answers.push(("(due walk)".to_owned(), Op::Reconcile, answer));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answers
        }
    });
    let mut unanswered = Vec::new();
    while let Some(joined) = callers.join_next().await {
        for (user, op, answer) in joined.context("caller")? {
            outcome.requests += 1;
            match answer {
                Ok(answer) => {
                    if let Some(problem) = answer.problem() {
                        outcome
                            .problems
                            .push(format!("{user}: {}: {problem}", op.name()));
                    }
                }
                Err(error) => unanswered.push(format!("{user}: {}: {error}", op.name())),
            }
        }
    }
    let exited = tokio::task::block_in_place(|| host.wait_exit(Duration::from_secs(2)));
    match exited {
        Some(status) => {
            outcome.crash = support::log_lines(&log, "kiloclaw: crash point", 1)
                .pop()
                .map(|line| line.trim().to_owned());
            ensure!(
                outcome.crash.is_some(),
                "the host exited with {status} without a crash line"
            );
            outcome.unanswered_at_crash = unanswered.len() as u64;
        }
        None => {
            // No crash: every request must have been answered.
            outcome.problems.extend(
                unanswered
                    .into_iter()
                    .map(|u| format!("not answered without a crash: {u}")),
            );
            tokio::task::block_in_place(|| host.stop());
        }
    }

    // Restart on the same store and Fly; the reconciler runs.
    let mut host = tokio::task::block_in_place(|| HostProcess::start(&spec, None))?;
    let url = host.url.clone();
    let records = Records::open(backend, &state)?;
    let mut settled = Vec::new();
    for pass in 1..=MAX_PASSES {
        outcome.passes = pass;
        let mut reconciles = tokio::task::JoinSet::new();
        for user in &users {
            let (client, url, user) = (client.clone(), url.clone(), user.clone());
            reconciles.spawn(async move { (client.reconcile(&url, &user).await, user) });
        }
        let mut answers = Vec::new();
        while let Some(joined) = reconciles.join_next().await {
            let (answer, user) = joined.context("reconcile")?;
            match answer {
                Ok(answer) if answer.status == 200 => {}
                Ok(answer) => answers.push(format!(
                    "reconcile {user}: {} {}",
                    answer.status, answer.body
                )),
                Err(error) => answers.push(format!("reconcile {user}: not answered: {error}")),
            }
        }
        let now = records.load_all(&users)?;
        settled = divergences(&FlyView::read(sim.admin()), &now, Strictness::Settled);
        settled.extend(forgotten(&now));
        settled.extend(answers);
        if settled.is_empty() {
            break;
        }
    }
    outcome.problems.extend(
        settled
            .into_iter()
            .map(|p| format!("after {MAX_PASSES} reconcile passes: {p}")),
    );

    // No stuck lease: the lease TTL has passed since the crash; an operation on every user goes
    // through (or answers a documented status that is not a conflict).
    let mut starts = tokio::task::JoinSet::new();
    for user in &users {
        let (client, url, user) = (client.clone(), url.clone(), user.clone());
        starts.spawn(async move { (client.op(&url, Op::Start, &user, 0).await, user) });
    }
    while let Some(joined) = starts.join_next().await {
        let (answer, user) = joined.context("start")?;
        match answer {
            Ok(answer) if answer.status == 409 || answer.is_busy() => {
                outcome.problems.push(format!(
                    "stuck lease: start {user}: {} {}",
                    answer.status, answer.body
                ))
            }
            Ok(answer) => {
                if let Some(problem) = answer.problem() {
                    outcome
                        .problems
                        .push(format!("after the restart: start {user}: {problem}"));
                }
            }
            Err(error) => outcome.problems.push(format!(
                "after the restart: start {user}: not answered: {error}"
            )),
        }
    }
    let now = records.load_all(&users)?;
    outcome.problems.extend(
        divergences(
            &FlyView::read(sim.admin()),
            &now,
            Strictness::PendingAllowed,
        )
        .into_iter()
        .map(|p| format!("after the final starts: {p}")),
    );
    outcome.problems.extend(forgotten(&now));

    tokio::task::block_in_place(|| host.stop());
    for line in support::log_lines(&log, "panicked", 3) {
        outcome.problems.push(format!("the host panicked: {line}"));
    }
    sim.shutdown().await;
    if !outcome.problems.is_empty() {
        for user in &users {
            for line in support::log_lines(&log, user, 6) {
                outcome.problems.push(format!("log: {line}"));
            }
        }
    }
    Ok(())
}
