//! `fleet-bench`: the reconciler at fleet scale (issue 12, item 6). Not a test: a binary that runs for
//! minutes and writes numbers (`docs/benchmarks.md`, "Fleet reconcile at 10k/100k instances").
//!
//! # Design
//!
//! - **Replicas** (`fleet-bench replica`): each is a real [`kiloclaw_host::App`] in its own process,
//!   loading the repository's `spin.toml` components (cron off), with the instance store in one Redis over
//!   outbound Redis and the Fly variables pointed at the simulator. It prints `ready http://ADDR` once it
//!   serves and then reads commands from stdin: `offset <ms>` sets the offset of the wall clock its guests
//!   see ([`kiloclaw_host::clock::WallClockOffset`]) and answers `ok <ms>`. End of stdin (the
//!   orchestrator went away) stops it.
//! - **Orchestrator** (`fleet-bench run`): starts a private `redis-server` on a free loopback port (so
//!   `INFO commandstats` counts the replicas' commands only, and the shared test Redis at 6379 is left
//!   alone), and for every configuration (instances × replicas) a fresh in-process Fly simulator with
//!   20 ms of latency on every Machines API call and Fly's rate limits on. It seeds the simulator
//!   (`SimAdmin::seed_fleet`, the in-process form of `POST /_sim/fleet`) and writes every user's record,
//!   creation counter, sweep registration and due-index entry into Redis through the core's own store
//!   adapter (`RedisKeyValue`, `DueIndex`), pipelined ([`seed`]), so the bytes and keys are exactly the
//!   store's. By default it then follows Fly's org listing once natively (`FleetFeed::follow`, rate
//!   limits still off) so the run starts in the steady state a production fleet is in; `--feed cold`
//!   leaves the baseline pass to the replicas.
//! - **Time**: one tick is one simulated minute. Before tick `k` every replica's guests are set to
//!   `T0 + k min` (+ 2 s), then the orchestrator POSTs `/api/platform/reconcile` (`{"budgetMs": …}`) to
//!   every replica at once and waits for all answers. Within a tick the guests' clocks run in real time
//!   (the budget is real). Fly's rate limits stay in real time, so compressed minutes make them stricter.
//! - **Measured per tick**: wall time, the replicas' answers (checked, skipped, requeued, errors),
//!   Redis commands (`INFO commandstats` delta, the bench's own `INFO` excluded, and nothing else talks
//!   to this Redis during a tick), Fly calls by operation (the simulator's counters), replica CPU
//!   (`/proc/<pid>/stat`), Redis CPU, and after the tick the backlog (`DueIndex::backlog` at the simulated
//!   now) and the age of its oldest minute. After the last tick every record is read to find the most
//!   overdue instance.
//! - **Burst**: K instances, all due in one minute and all needing a full check (two Fly reads each), one
//!   tick with a short budget, once per replica count: the checks per second of 1 and 3 replicas.
//! - **Kill**: in the largest configuration with several replicas, one replica is SIGKILLed a few seconds
//!   into a tick; the shards with claim keys then are noted, the replica is restarted before the next
//!   tick, and the shards its claim blocked are followed until their backlog is gone.
//!
//! Everything talks to 127.0.0.1 only, children are killed when the orchestrator ends (also on a panic),
//! and every wait is bounded.

mod measure;
mod redis_conn;
mod replica;
mod run;
mod seed;

use clap::{Parser, Subcommand};

/// Secrets the replicas share with the orchestrator (local only, never used elsewhere).
pub const NEXTAUTH_SECRET: &str = "fleet-bench-nextauth-secret-0123456789abcdef";
/// The `x-internal-api-key` of the platform routes.
pub const INTERNAL_API_SECRET: &str = "fleet-bench-internal-api-key-0123456789abcdef";
/// HMAC key of gateway tokens.
pub const GATEWAY_TOKEN_SECRET: &str = "fleet-bench-gateway-token-secret-0123456789";
/// The Fly organisation of every seeded app.
pub const ORG: &str = "bench-org";
/// The region of every seeded volume and machine (the simulator's first).
pub const REGION: &str = "dfw";

#[derive(Debug, Parser)]
#[command(
    name = "fleet-bench",
    about = "Reconciler benchmark: host replicas on one Redis against the Fly simulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One host replica (started by `run`).
    Replica(replica::ReplicaArgs),
    /// The benchmark.
    Run(run::RunArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Replica(args) => replica::run(&args),
        Command::Run(args) => run::run(&args),
    }
}
