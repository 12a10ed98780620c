//! `fleet-bench replica`: one host replica, driven over stdin.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use kiloclaw_host::clock::WallClockOffset;
use kiloclaw_host::logging::{LogFormat, init};
use kiloclaw_host::{App, HostConfig};
use tokio::io::AsyncBufReadExt;

/// Where the replica serves and what it talks to.
#[derive(Debug, clap::Args)]
pub struct ReplicaArgs {
    /// Listen address (port 0: any free port; the address is printed with `ready`).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The `spin.toml` to load (pointed at the built components).
    #[arg(long)]
    pub manifest: PathBuf,
    /// State directory (runtime config, staged files).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The Redis holding the instance store.
    #[arg(long)]
    pub redis_url: String,
    /// Prefix of every key the store writes.
    #[arg(long)]
    pub redis_prefix: String,
    /// The Fly simulator (Machines API and proxy).
    #[arg(long)]
    pub sim_url: String,
}

/// The app variables of a replica.
pub fn variables(args: &ReplicaArgs) -> Vec<(String, String)> {
    let mut variables = vec![
        (
            "nextauth_secret".to_owned(),
            crate::NEXTAUTH_SECRET.to_owned(),
        ),
        (
            "internal_api_secret".to_owned(),
            crate::INTERNAL_API_SECRET.to_owned(),
        ),
        (
            "gateway_token_secret".to_owned(),
            crate::GATEWAY_TOKEN_SECRET.to_owned(),
        ),
    ];
    variables.extend(kiloclaw_cli::commands::fly_sim::app_variables(
        &args.sim_url,
        &args.sim_url,
    ));
    // Later entries win: the bench's own org and region.
    variables.push(("fly_org_slug".to_owned(), crate::ORG.to_owned()));
    variables.push(("fly_region".to_owned(), crate::REGION.to_owned()));
    variables.push(("store_redis_url".to_owned(), args.redis_url.clone()));
    variables.push((
        "store_redis_outbound_host".to_owned(),
        args.redis_url.clone(),
    ));
    variables.push((
        "store_redis_key_prefix".to_owned(),
        args.redis_prefix.clone(),
    ));
    variables
}

/// Serves until stdin ends.
pub fn run(args: &ReplicaArgs) -> anyhow::Result<()> {
    init(LogFormat::Json, "warn");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: &ReplicaArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.state_dir)?;
    let runtime_config = args.state_dir.join("runtime-config.toml");
    // The `default` store is unused by the reconcile path (the instance store is Redis): keep it in memory.
    std::fs::write(
        &runtime_config,
        "[key_value_store.default]\ntype = \"memory\"\n",
    )?;
    let offset = WallClockOffset::default();
    let mut config = HostConfig::new(&args.manifest);
    config.state_dir = Some(args.state_dir.clone());
    config.runtime_config_file = Some(runtime_config);
    config.listen = args.listen;
    config.cron = false;
    config.variables = variables(args);
    config.clock_offset = Some(offset.clone());
    let app = App::load(&config).await.context("loading the app")?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let server = app.serve(listener);
    say(&format!("ready http://{}", server.local_addr()))?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        match (words.next(), words.next().map(str::parse::<i64>)) {
            (Some("offset"), Some(Ok(ms))) => {
                offset.set(ms);
                say(&format!("ok {ms}"))?;
            }
            (Some("quit"), _) => break,
            _ => say(&format!("error unknown command {line:?}"))?,
        }
    }
    server.shutdown().await;
    Ok(())
}

fn say(line: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}
